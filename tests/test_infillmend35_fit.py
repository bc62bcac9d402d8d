"""Gaps that each fit the model's context alone but not all at their longest together
(review of session 35, finding 1): the length search tries only the lengths that fit
together, and a template none of whose combinations fits is one line naming it. They failed
with the sampler's generation wording ("prompt + gen_length ... use --gen-length"), a flag
``unmask infill`` refuses; the server's 400 named gen_length, no field of its own."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from server_helpers import Echo, loaded, tiny_config

from unmask.config import InfillOptions, SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill import infill
from unmask.infill.fill import fill_plan, search_calls
from unmask.infill.template import plan_template
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer, with_empty_token

TOK = byte_tokenizer()
SIX = "[MASK:1-8]" * 6  # middle lengths 5 (30 tokens), one gap at 8 beside them: 33
TWO = "[MASK:1-20][MASK:1-20]"  # --max-candidates 2: both at 20 is 40


class Fixed:
    """Logits that ignore the canvas (column i always scores row i of a fixed table; only
    letters win), with a context of ``max_seq_len`` tokens, counting its calls."""

    def __init__(self, max_seq_len: int = 32, tokenizer=TOK, empty_id: int | None = None):
        V = tokenizer.vocab_size
        self.table = 2 * torch.randn(256, V, generator=torch.Generator().manual_seed(0))
        self.table[:, :97] = self.table[:, 123:] = -30.0  # only a..z
        self.config = SimpleNamespace(max_seq_len=max_seq_len, attention="bidirectional",
                                      empty_id=empty_id)
        self.calls = 0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.calls += 1
        B, L = tokens.shape
        return self.table[:L].expand(B, L, -1).clone()


def _lengths(result) -> list[int]:
    return [len(g.tokens) for g in result.gaps]


def test_the_coordinate_search_tries_only_lengths_that_fit_together():
    plan = plan_template(SIX, TOK, max_seq_len=32)
    first = search_calls(plan, SampleConfig(steps=8), InfillOptions(elbo_samples=1),
                         mask_id=TOK.mask_id, pad_id=TOK.pad_id, max_seq_len=32)
    model = Fixed()  # a limit of the first sweep's calls: counted on the runs it makes
    options = InfillOptions(elbo_samples=1, max_search_calls=first)
    got = infill(model, TOK, SIX, SampleConfig(steps=8), options=options)
    assert all(1 <= n <= 8 for n in _lengths(got)) and sum(_lengths(got)) <= 32
    assert got.candidates and all(sum(c.lengths) <= 32 for c in got.candidates)
    assert got.nfe == model.calls <= first


def test_the_joint_search_leaves_out_the_combinations_over_the_context():
    model = Fixed()
    options = InfillOptions(max_candidates=2, elbo_samples=1)
    got = infill(model, TOK, TWO, SampleConfig(steps=8), options=options)
    assert sorted(c.lengths for c in got.candidates) == [(1, 1), (1, 20), (20, 1)]
    plan = plan_template(TWO, TOK, max_seq_len=32, max_candidates=2)
    need = search_calls(plan, SampleConfig(steps=8), options, mask_id=TOK.mask_id,
                        pad_id=TOK.pad_id, max_seq_len=32)
    assert got.nfe == model.calls == need  # exact: the run made is the one counted


def test_one_pass_with_empty_lowers_the_longest_gaps_until_they_fit():
    tok = with_empty_token(byte_tokenizer())
    e = tok.empty_ids()["empty_id"]
    model = Fixed(tokenizer=tok, empty_id=e)
    got = infill(model, tok, SIX, SampleConfig(steps=8))
    assert got.length_mode == "empty" and e not in got.tokens
    assert all(1 <= n <= 8 for n in _lengths(got)) and len(got.tokens) <= 32


def test_a_template_whose_gaps_fit_in_no_combination_is_one_line_naming_it():
    plan = plan_template("ab[MASK:2-4]c[MASK:3-6]", TOK)  # made for no model: unchecked
    with pytest.raises(UserError) as err:
        fill_plan(Fixed(max_seq_len=7), TOK, plan, SampleConfig(steps=4),
                  options=InfillOptions(), name="template 'x'")
    msg = str(err.value)
    assert msg.startswith("template 'x' needs at least 8 tokens with its gaps at their "
                          "shortest (3 of text)") and "max_seq_len 7" in msg, msg
    assert "gen_length" not in msg and "\n" not in msg


@pytest.fixture(scope="module")
def run32(tmp_path_factory) -> str:
    from unmask.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32)).eval()
    out = tmp_path_factory.mktemp("fit") / "run"
    return str(save_checkpoint(out, model=model, tokenizer=TOK))


def test_api_infill_fills_gaps_that_fit_only_together_below_their_longest(run32):
    from unmask import api
    from unmask.checkpoint import load

    loaded = load(run32)
    for template, options in ((SIX, {}), (TWO, {"max_candidates": 2})):
        got = api.infill(loaded, template, options={**options, "elbo_samples": 1},
                         config={"steps": 4})
        lengths = [len(g.tokens) for g in got.detail.gaps]
        assert sum(lengths) <= 32 and min(lengths) >= 1, (template, lengths)


def test_the_command_line_fills_them_without_a_word_of_gen_length(run32, capsys):
    from unmask.cli import main

    flags = ["--model", run32, "--no-live", "--device", "cpu", "--steps", "4", "--json",
             "--elbo-samples", "1"]
    assert main(["infill", TWO, "--max-candidates", "2", *flags]) == 0
    out, err = capsys.readouterr()
    gaps = json.loads(out)["gaps"]
    assert len(gaps) == 2 and sum(len(g["tokens"]) for g in gaps) <= 32
    assert "gen_length" not in err and "gen-length" not in err


def test_the_server_fills_them_too():
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with TestClient(create_app(loaded(Echo(tiny_config(max_seq_len=32))))) as client:
        r = client.post("/v1/infill", json={"template": TWO, "max_candidates": 2})
    assert r.status_code == 200, r.text
    assert sorted(tuple(c["lengths"]) for c in r.json()["candidates"]) == [(1, 1), (1, 20),
                                                                         (20, 1)]
