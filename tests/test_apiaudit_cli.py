"""The command line names the fields of a refusal as its flags: two fields named together
(``top_k and top_p apply to ...``), one of them typed, are both named as flags; the message
read "--top-k and top_p apply to ...", half flag and half Python field."""

from __future__ import annotations

from unmask.cli import as_typed, build_parser

SAID = ("top_k and top_p apply to autoregressive (causal) models only, not decoder 'llada'")


def test_a_pair_of_fields_one_typed_is_named_as_flags():
    for typed in (["--top-k", "5"], ["--top-p", "0.5"], ["--top-k=5"]):
        argv = ["generate", "x", "--model", "m", *typed]
        assert as_typed(SAID, argv, build_parser(["generate"])) == (
            "--top-k and --top-p apply to autoregressive (causal) models only, not decoder "
            "'llada'")


def test_a_pair_nobody_typed_keeps_its_field_names():
    argv = ["generate", "x", "--model", "m"]
    assert as_typed(SAID, argv, build_parser(["generate"])) == SAID
    said = "gen_length and block_length come from the checkpoint's recommendation"
    assert as_typed(said, argv, build_parser(["generate"])) == said
