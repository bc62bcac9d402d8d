"""Length-search options out of range are one-line errors, not tracebacks."""

from __future__ import annotations

import pytest
import torch

from unmask.cli import main
from unmask.config import InfillOptions, SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill import Gap, infill
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def uniform(tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return torch.zeros(*tokens.shape, TOK.vocab_size)  # (B, L, V)


@pytest.mark.parametrize("seed", [10**23, 2**63, -1])
def test_an_elbo_seed_out_of_range_is_a_user_error(seed):
    """``elbo_seed`` 10**23 was an OverflowError traceback from torch's ``manual_seed`` (-1
    was taken as another seed); ``--seed`` takes 0 to 2**63 - 1, and so does it."""
    with pytest.raises(UserError, match=r"elbo_seed must be from 0 to 2\*\*63 - 1"):
        infill(uniform, TOK, "a[MASK:1-2]b", SampleConfig(steps=2),
               options=InfillOptions(elbo_samples=1, elbo_seed=seed))
    r = infill(uniform, TOK, "a[MASK:1-2]b", SampleConfig(steps=2),
               options=InfillOptions(elbo_samples=1, elbo_seed=2**63 - 1))
    assert r.text.startswith("a") and r.text.endswith("b")


def test_a_default_max_len_longer_than_any_context_is_a_user_error():
    """``default_max_len`` 10**11 sized an array per gap: a 93 GiB MemoryError traceback."""
    with pytest.raises(UserError, match="default_max_len must be at most 131,072 tokens"):
        infill(uniform, TOK, ["a", Gap(regex="b+"), "c"],
               options=InfillOptions(default_max_len=10**11))


def test_a_gap_over_the_context_by_default_max_len_names_it():
    class Small:
        config = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=16)

        def __call__(self, tokens, attention_mask=None):
            return uniform(tokens)

    with pytest.raises(UserError, match=r"give it a maximum \(\[MASK:1-n\]\) or lower "
                                        "default_max_len"):
        infill(Small(), TOK, ["a", Gap(regex="b+"), "c"],
               options=InfillOptions(default_max_len=100))
    with pytest.raises(UserError, match="lower its maximum$"):
        infill(Small(), TOK, "a[MASK:1-100]c")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint

    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    return str(save_checkpoint(tmp_path_factory.mktemp("run"), model=model, tokenizer=TOK))


@pytest.mark.parametrize("flags, flag", [(["--elbo-seed", str(10**23)], "--elbo-seed"),
                                         (["--default-max-len", str(10**11)],
                                          "--default-max-len")])
def test_the_cli_names_the_flag(ckpt, capsys, flags, flag):
    assert main(["infill", "--model", ckpt, "--no-live", "a [MASK] b", "--regex", "1=x+",
                 *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err


def test_too_many_elbo_samples_is_a_user_error_before_any_model_work():
    """``elbo_samples`` 10**9 scored a candidate's copies in one call: the process was killed
    for memory."""
    calls = []

    def counting(tokens, attention_mask=None):
        calls.append(tokens.shape)
        return uniform(tokens)

    for n in (1025, 10**9):  # 1025: harmless to the old code, which took it
        with pytest.raises(UserError, match="elbo_samples must be at most 1024"):
            infill(counting, TOK, "a[MASK:1-2]b", options=InfillOptions(elbo_samples=n))
    assert calls == []
    r = infill(counting, TOK, "a[MASK:1-2]b", SampleConfig(steps=2),
               options=InfillOptions(elbo_samples=1024))
    assert len(r.candidates) == 2


def _stdin(raw: bytes):
    """A real standard input: bytes under a text stream (``sys.stdin.buffer`` is read)."""
    import io

    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_stdin_loses_the_line_end_that_ends_it_crlf_too(ckpt, capsys, monkeypatch, end):
    """A template or text read from a CRLF file kept its ``"\\r"`` (``removesuffix("\\n")``):
    the output ended with it, and spans counted it. Its line ends are read as ``"\\n"``, so
    a span counts one character for each (as the docs say)."""
    import json

    args = ["infill", "--model", ckpt, "--json", "--seed", "3"]
    assert main([*args, "a [MASK:2] b"]) == 0
    want = json.loads(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", _stdin(f"a [MASK:2] b{end}".encode()))
    assert main([*args, "-"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["text"] == want["text"] and not got["text"].endswith("\r")
    args = ["edit", "--model", ckpt, "--json", "--seed", "3", "--span", "6:9", "--text"]
    assert main([*args, "Hello\nbig world"]) == 0
    want = json.loads(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", _stdin(f"Hello{end}big world{end}".encode()))
    assert main([*args, "-"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["text"] == want["text"] and got["text"].startswith("Hello\n")
    assert got["text"].endswith(" world")


def test_a_gap_written_over_two_lines_is_named_on_one():
    """Whitespace inside the brackets may be a line break; the messages and results that name
    the gap quoted it raw, so a one-line error took two lines."""
    class Small:
        config = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=16)

        def __call__(self, tokens, attention_mask=None):
            return uniform(tokens)

    with pytest.raises(UserError) as e:
        infill(Small(), TOK, "a [MASK\n:1-300]")
    assert "\n" not in str(e.value) and "gap 1 [MASK :1-300]" in str(e.value)
    r = infill(uniform, TOK, "a [MASK:\ncity\n:2]", SampleConfig(steps=2))
    assert r.gaps[0].name == "'city' [MASK: city :2]"
