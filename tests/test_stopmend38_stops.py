"""Stop sequences that end decoding, mended: a row found sure to be cut stays so (the commit
loop under one shared generator asks again at every block boundary), a stop of multi-byte
characters on byte-level tokens is found (the window counts the stop's UTF-8 bytes, not its
characters), ``api.start``'s ``stop=`` is checked up front, and a run without a stop does no
stop work per step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask import api
from unmask.chat import cut_text
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling.protocol import DecoderRun
from unmask.sampling.stops import StopRows, TextEnd
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
SPECIAL = TOK.special_ids()
TWO_ROWS = ["ab.defghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "abcdefghijklmnopqrstu.wxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]


class Rows:
    """A mask predictor sure of ``TWO_ROWS[b]`` for row b after a prompt of ``P`` tokens,
    surer at earlier positions."""

    def __init__(self, P: int) -> None:
        self.P, self.calls, self.config = P, 0, tiny_config()

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.calls += 1
        B, L = tokens.shape
        logits = torch.zeros(B, L, self.config.vocab_size)
        for b in range(B):
            for i, t in enumerate(TOK.encode(TWO_ROWS[b])[: L - self.P]):
                logits[b, self.P + i, t] = 60.0 - 0.5 * i
        return logits


@pytest.mark.parametrize("seeds", [None, [1, 2]])
def test_a_row_stopped_at_one_boundary_still_counts_at_the_next_under_a_shared_generator(
        seeds):
    """Row 0 meets "." in block 1, row 1 in block 2. Under one generator shared by the batch
    with a dynamic policy and T > 0 row 0 is not filled at block 1; it was forgotten at block 2
    (its window no longer held the stop) and the run went on to its end (nfe 3, no end)."""
    config = {"decoder": "llada", "gen_length": 48, "steps": 48, "block_length": 16,
              "policy": "threshold", "temperature": 1.0, "seed": 1}
    stop = [TextEnd((".",), frozenset({SPECIAL["eos_id"]}))] * 2
    run = api.start(loaded(Rows(2)), [TOK.encode("xy")] * 2, config, stop=stop, seeds=seeds)
    out = run.run()
    assert [cut_text(TOK.decode(g), ["."]) for g in out.gen_ids] == ["ab", TWO_ROWS[1][:21]]
    assert out.nfe == 2 and out.ended_at == 34


def test_a_row_found_cut_stays_cut_on_later_calls():
    rule = StopRows(TOK.decode, [TextEnd((".",))], SPECIAL["mask_id"])
    ids = TOK.encode("ab.cdefghijklmnopqrstuvwxyz")
    assert rule(torch.tensor([ids[:3]]))[0] and rule(torch.tensor([ids[:20]]))[0]
    assert rule(torch.tensor([ids]))[0]  # the stop is long out of the window now


MULTI = ["\u00e9" * 10, "\u4e2d\u6587\u5b57\u7b26\u4e32", "\U0001F600" * 4, "\u20ac" * 3]


@pytest.mark.parametrize("stop", MULTI)
def test_a_multi_byte_stop_is_found_one_byte_token_a_step(stop):
    """Before: a window of len(stop) + 8 tokens never held a stop of more bytes than that."""
    ids = TOK.encode("hi " + stop + " and then a long tail" * 3)
    rule = StopRows(TOK.decode, [TextEnd((stop,))], SPECIAL["mask_id"])
    mask = SPECIAL["mask_id"]
    hits = [n for n in range(1, len(ids) + 1)
            if rule(torch.tensor([ids[:n] + [mask] * (len(ids) - n)]))[0]]
    assert hits and hits[0] == 3 + len(stop.encode("utf-8"))


def _bigram(chain: dict[int, int], **extra) -> Transformer:
    """A causal Transformer that, greedy, writes ``chain[x]`` after token x (attention and
    MLP switched off: the head reads the last token's one-hot embedding)."""
    cfg = dataclasses.replace(tiny_config(), attention="causal", objective="ar",
                              tie_embeddings=False, **extra)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")) or name in (
                    "embed.weight", "lm_head.weight"):
                p.zero_()
        for slot, (x, y) in enumerate(chain.items()):
            model.embed.weight[x, slot] = 1.0
            model.lm_head.weight[y, slot] = 20.0
    return model


def _ees(**extra) -> Transformer:
    """After the prompt "ab": "éééé…" (bytes C3 A9 C3 A9 …), 2 tokens a character."""
    b, c3, a9 = TOK.encode("bé")
    return _bigram({b: c3, c3: a9, a9: c3}, **extra)


STOP = "\u00e9" * 10  # 20 bytes, 20 tokens: more than the old window of 10 + 8


@pytest.mark.parametrize("decoder", ["ar", "speculative"])
def test_ar_and_speculative_stop_at_a_multi_byte_stop(decoder):
    m = loaded(_ees())
    kw = {}
    if decoder == "speculative":
        from test_rows_speculative import _loaded, transformer

        kw = {"draft": _loaded(transformer("bidirectional", 3))}
    config = {"gen_length": 40, **({"decoder": "ar"} if decoder == "ar" else
                                   {"draft_length": 4})}
    full = api.generate(m, ["ab"], config=config, **kw)
    early = api.generate(m, ["ab"], config=config, stop=STOP, **kw)
    assert early.decoder == decoder and full.texts == ["\u00e9" * 20] and early.texts == [""]
    nfe = (lambda g: g.result.verifier_nfe) if decoder == "speculative" else (lambda g: g.nfe)
    assert nfe(full) == 40 and nfe(early) == 20  # before: 40


def test_hybrid_stops_at_a_multi_byte_stop():
    from unmask.sampling.hybrid import HybridRun

    def run(stops):
        r = HybridRun(_ees(draft_block=3), [TOK.encode("ab")], max_new_tokens=40,
                      eos_id=SPECIAL["eos_id"])
        if stops:
            r.stop = StopRows(TOK.decode, [TextEnd(stops)], r.mask_id)
        out = r.run()
        return cut_text(TOK.decode(out.gen_ids[0]), list(stops)), out.nfe

    assert run(()) == ("\u00e9" * 20, 40)
    assert run((STOP,)) == ("", 20)  # before: 40


@pytest.mark.parametrize("stop, says", [
    (["x"], "TextEnd"), ("x", "TextEnd"), ([None, None], "2 stop rules for 1 row"),
    ([TextEnd(("x",)), "y"], "TextEnd"), (TextEnd(("x",)), r"such as \[rule\]"),
    ([TextEnd("xy")], "a tuple of texts"), ([TextEnd(("",))], "at least one character"),
    ([TextEnd((1,))], "at least one character"),
    ([TextEnd((".",), template="plain")], "must be a ChatTemplate"),
    ([TextEnd((".",), ends=5)], "must be a set of token ids")])
def test_start_names_a_wrong_stop_in_one_line_before_building_the_run(stop, says,
                                                                     monkeypatch):
    from unmask.sampling import Target

    def no_run(*a, **k):
        raise AssertionError("the run was built")

    monkeypatch.setattr(Target, "__init__", no_run)
    with pytest.raises(UserError, match=says) as e:
        api.start(loaded(_ees()), [TOK.encode("ab")], {"decoder": "ar", "gen_length": 4},
                  stop=stop)
    assert "\n" not in str(e.value)


def test_a_run_without_a_stop_does_no_stop_work_per_step(monkeypatch):
    """ar, speculative and hybrid: no ``stopped_rows`` call (tensor ops) each step."""
    from test_rows_speculative import _loaded, transformer

    from unmask.sampling.hybrid import HybridRun

    def called(self, active):
        raise AssertionError("stopped_rows called without a stop")

    monkeypatch.setattr(DecoderRun, "stopped_rows", called)
    m = loaded(_ees())
    api.generate(m, ["ab"], config={"decoder": "ar", "gen_length": 6})
    api.generate(m, ["ab"], config={"gen_length": 6, "draft_length": 2},
                 draft=_loaded(transformer("bidirectional", 3)))
    HybridRun(_ees(draft_block=3), [TOK.encode("ab")], max_new_tokens=6,
              eos_id=SPECIAL["eos_id"]).run()


def test_start_takes_a_rule_without_stop_sequences_and_numpy_ids():
    """``TextEnd(None)`` ran (no stop: nothing looked for) and still does; token ids may be
    numpy integers (refused as "not token ids" by the first check)."""
    import numpy as np

    for rule in (TextEnd(None), TextEnd(("x",), ends={np.int64(2)})):
        api.start(loaded(_ees()), [TOK.encode("ab")], {"decoder": "ar", "gen_length": 4},
                  stop=[rule]).run()


def test_a_chat_reply_ends_the_run_at_its_turn_marker_with_or_without_a_stop():
    """With a chat template the reply is cut where it starts another turn (``\\nUser:`` for
    ``plain``): the run ended there only when some stop sequence was given, so an unrelated
    ``--stop`` changed ``n_tokens`` (35 -> 14 here) and the forwards (40 -> 16)."""
    from test_stop38_early import RowModel

    text = "Hi there\nUser: more words here ok."
    width = len(api.prompt_ids(loaded(RowModel(text, 0)), ["q"], template="plain")[0])
    model = loaded(RowModel(text, width))
    cfg = {"gen_length": 40, "steps": 40, "block_length": 8}
    runs = [api.generate(model, ["q"], config=cfg, template="plain", stop=stop)
            for stop in (None, "ZZZ")]
    assert [r.texts for r in runs] == [["Hi there"]] * 2
    assert [r.n_tokens for r in runs] == [14, 14] and [r.nfe for r in runs] == [16, 16]
    message = [{"role": "user", "content": "q"}]
    replies = [api.chat(model, message, config=cfg, template="plain", stop=stop)
               for stop in (None, "ZZZ")]
    assert [(r.text, r.nfe) for r in replies] == [("Hi there", 16)] * 2


def test_the_servers_chat_ends_the_run_at_the_turn_marker_with_or_without_a_stop():
    """``/v1/chat/completions`` cut a reply at its template's turn marker but decoded on to
    ``max_tokens`` unless the request sent a stop sequence (the library's ``chat`` too)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_stop38_early import RowModel

    from unmask.server import create_app

    class Rows(torch.nn.Module):  # the server counts forwards through a module's hooks
        def __init__(self, text: str, prompt_len: int) -> None:
            super().__init__()
            self.rows = RowModel(text, prompt_len)
            self.config = self.rows.config

        def forward(self, tokens, attention_mask=None):  # noqa: ANN001, ANN201
            return self.rows(tokens, attention_mask)

    text = "Hi there\nUser: more words here ok."
    with TestClient(create_app(loaded(Rows(text, 0)), chat_template="plain")) as client:
        width = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "q"}], "max_tokens": 8, "steps": 8,
            "block_length": 8}).json()["usage"]["prompt_tokens"]
    outs = []
    with TestClient(create_app(loaded(Rows(text, width)), chat_template="plain")) as client:
        for stop in ({}, {"stop": "ZZZ"}):
            outs.append(client.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "q"}], "max_tokens": 40,
                "steps": 40, "block_length": 8, **stop}).json())
    got = [(o["choices"][0]["message"]["content"], o["choices"][0]["finish_reason"],
            o["usage"]["completion_tokens"], o["nfe"]) for o in outs]
    assert got[0] == got[1] and got[0][0] == "Hi there" and got[0][3] < 40, got
