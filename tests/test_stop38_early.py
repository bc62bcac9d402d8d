"""A stop sequence ends the work, not only the text: a left-to-right decoder finishes a row
once its committed text is sure to be cut at one (``unmask.sampling.stops.StopRows``) and
stops once every row has ended, as after EOS. Before, ``--stop`` cut the text after all
``gen_length`` forwards had run. The text (and the tokens counted) is the same as the run to
the end gives."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask import api
from unmask.chat import cut_text
from unmask.config import SampleConfig
from unmask.model import Transformer
from unmask.sampling.loop import Denoiser
from unmask.sampling.stops import StopRows, TextEnd, tokens_ended
from unmask.tokenizer import byte_tokenizer

PROMPTS = ["ab", "hello", "xyz"]


def _causal() -> api.Loaded:
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(), attention="causal", objective="ar")
    return loaded(Transformer(cfg).eval())


@pytest.mark.parametrize("options", [{}, {"temperature": 1.0, "seed": 3}])
def test_ar_stops_once_every_row_met_a_stop_with_the_same_text(options):
    m = _causal()
    config = {"decoder": "ar", "gen_length": 40, **options}
    full = api.generate(m, PROMPTS, config=config, n=2)
    stops = [t[5:8] for t in full.texts]  # each row meets one early
    early = api.generate(m, PROMPTS, config=config, n=2, stop=stops)
    assert early.texts == [cut_text(t, stops) for t in full.texts]
    assert full.nfe == 40 and early.nfe < 12  # the old code ran all 40 forwards
    eos = m.tokenizer.special_ids()["eos_id"]
    rule = TextEnd(tuple(stops), frozenset({eos}))
    assert early.n_tokens == sum(tokens_ended(m.tokenizer, r, rule) for r in full.ids)


def test_a_row_that_stopped_stays_stopped_while_the_others_go_on():
    m = _causal()
    config = {"decoder": "ar", "gen_length": 40}
    full = api.generate(m, PROMPTS, config=config)
    stop = full.texts[0][2:4]
    assert all(stop not in t for t in full.texts[1:])
    early = api.generate(m, PROMPTS, config=config, stop=stop)
    assert early.texts == [cut_text(t, [stop]) for t in full.texts]
    assert early.texts[1:] == full.texts[1:] and early.nfe == full.nfe == 40
    assert early.ids[0][4:] == [m.tokenizer.special_ids()["pad_id"]] * 36  # finished: fill


class RowModel:
    """A mask predictor sure of ``text`` (byte ids) from generated position 0 on, surer at
    earlier positions (the commit loop writes it left to right)."""

    def __init__(self, text: str, prompt_len: int) -> None:
        self.ids, self.prompt_len, self.calls = byte_tokenizer().encode(text), prompt_len, 0
        self.config = tiny_config()

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.calls += 1
        B, L = tokens.shape
        logits = torch.zeros(B, L, self.config.vocab_size, dtype=torch.float64)
        for i, t in enumerate(self.ids[: L - self.prompt_len]):
            logits[:, self.prompt_len + i, t] = 10.0 - 0.1 * i
        return logits


def test_the_commit_loop_stops_at_the_block_boundary_after_a_stop():
    tok = byte_tokenizer()
    ids = tok.special_ids()
    text = "hello world, and more"
    config = SampleConfig(gen_length=16, steps=16, block_length=4)
    prompt = [tok.encode("ab")]

    def run(stop):
        model = RowModel(text, 2)
        r = Denoiser.for_prompts(model, prompt, config, mask_id=ids["mask_id"],
                                 pad_id=ids["pad_id"], eos_id=ids["eos_id"])
        if stop:
            r.stop = StopRows(tok.decode, [TextEnd(tuple(stop), frozenset({ids["eos_id"]}))],
                              r.mask_id)
        out = r.run()
        return cut_text(tok.decode([i for i in out.gen_ids[0] if i != ids["eos_id"]]),
                        stop or []), model.calls

    assert run(None) == (text[:16], 16)
    assert run(["lo"]) == ("hel", 8)  # "lo" crosses into block 2: sure at its end
    assert run(["zz"]) == (text[:16], 16)


def test_the_server_stops_the_work_at_a_stop_and_streams_no_further():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_server import sse_events

    from unmask.server import create_app

    m = _causal()
    full = api.generate(m, ["hello"], config={"decoder": "ar", "gen_length": 30})
    stop = full.texts[0][3:5]
    want = cut_text(full.texts[0], [stop])
    eos = m.tokenizer.special_ids()["eos_id"]
    n_tok = tokens_ended(m.tokenizer, full.ids[0], TextEnd((stop,), frozenset({eos})))
    with TestClient(create_app(m)) as client:
        body = {"prompt": "hello", "max_tokens": 30, "stop": stop}
        out = client.post("/v1/completions", json=body).json()
        assert out["choices"][0]["text"] == want
        assert out["choices"][0]["finish_reason"] == "stop"
        assert out["usage"]["completion_tokens"] == n_tok
        assert out["nfe"] < 10  # 30 before
        r = client.post("/v1/completions", json={**body, "stream": True})
        chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert text == want
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_a_row_is_stopped_only_where_its_whole_text_is_cut_there():
    """Fuzz: random texts grown token by token; where ``StopRows`` first says a row has
    ended, the text as it stands is cut where the whole text is (completions and chat)."""
    tok = byte_tokenizer()
    eos, mask = tok.special_ids()["eos_id"], tok.special_ids()["mask_id"]
    m = loaded(RowModel("", 0))
    template = api.chat_template(m, "plain")._knowing(tok)
    pieces = ["a", "b", ".", " ", "\n", "User:", "\nUser:", "x\n", "Hi", "ab.", "\n\n", "é"]
    pool = ["a", ".", "\n", ".\n", "b ", " ", "x\nUser", "\nUs", "ab", "b.\n", "a b", "bb"]
    rng = random.Random(0)
    for _ in range(600):
        ids = tok.encode("".join(rng.choice(pieces) for _ in range(rng.randint(0, 10))))
        stops = tuple(rng.sample(pool, rng.randint(1, 3)))
        chat = rng.random() < 0.5
        rule = TextEnd(stops, template.ends(tok, eos) if chat else frozenset({eos}),
                       template if chat else None)
        check = StopRows(tok.decode, [rule], mask)
        whole = (template.reply(tok, ids, eos, stops) if chat
                 else cut_text(tok.decode(ids), stops))
        for n in range(1, len(ids) + 1):
            view = torch.tensor([ids[:n] + [mask] * (len(ids) - n)])
            if bool(check(view)[0]):
                part = ids[:n]
                cut = (template.reply(tok, part, eos, stops) if chat
                       else cut_text(tok.decode(part), stops))
                assert cut == whole, (tok.decode(ids), stops, n)
                break


@pytest.mark.parametrize("options", [{}, {"temperature": 0.9, "seed": 11}])
def test_speculative_stops_at_a_stop_with_the_same_text(options):
    from test_rows_speculative import _loaded, transformer

    verifier = _loaded(transformer("causal", 5))
    drafter = _loaded(transformer("bidirectional", 3))
    config = {"gen_length": 32, "draft_length": 4, **options}
    full = api.generate(verifier, PROMPTS, config=config, draft=drafter)
    stops = [t[3:6] for t in full.texts]
    early = api.generate(verifier, PROMPTS, config=config, draft=drafter, stop=stops)
    assert early.decoder == "speculative"
    assert early.texts == [cut_text(t, stops) for t in full.texts]
    assert early.result.verifier_nfe < full.result.verifier_nfe


def _stopped_by(run, stops: list[str], tok) -> tuple[str, int]:
    """(text cut at ``stops``, forwards) of ``run`` given the stop rule (none: ``[]``)."""
    eos = tok.special_ids()["eos_id"]
    if stops:
        run.stop = StopRows(tok.decode, [TextEnd(tuple(stops), frozenset({eos}))], run.mask_id)
    out = run.run()
    ids = [i for i in out.gen_ids[0] if i not in (eos, tok.special_ids()["pad_id"])]
    return cut_text(tok.decode(ids), stops), out.nfe


def test_bd3lm_stops_after_the_block_that_meets_a_stop():
    from unmask.sampling.blocks import BlockRun

    tok = byte_tokenizer()
    ids = tok.special_ids()
    config = SampleConfig(gen_length=16, steps=16, block_length=4)

    def run(stops):
        r = BlockRun(RowModel("hello world, and more", 4), [tok.encode("abcd")], config,
                     mask_id=ids["mask_id"], pad_id=ids["pad_id"], eos_id=ids["eos_id"],
                     block_size=4)
        return _stopped_by(r, stops, tok)

    assert run([]) == ("hello world, and", 16)
    assert run(["lo"]) == ("hel", 8)


def test_hybrid_stops_at_a_stop_with_the_same_text():
    from unmask.config import model_preset
    from unmask.sampling.hybrid import HybridRun

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, attention="causal",
                       init_std=0.3, draft_block=3, **tok.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()

    def run(stops):
        r = HybridRun(model, [tok.encode("ab"), tok.encode("hello")], max_new_tokens=40,
                      eos_id=tok.special_ids()["eos_id"])
        if stops:
            r.stop = StopRows(tok.decode, [TextEnd(tuple(stops))] * 2, r.mask_id)
        out = r.run()
        return [tok.decode(g) for g in out.gen_ids], out.nfe

    full, nfe = run([])
    stops = [t[3:5] for t in full]
    early, nfe_early = run(stops)
    assert [cut_text(t, stops) for t in early] == [cut_text(t, stops) for t in full]
    assert nfe_early < nfe


def test_the_continuous_batch_stops_a_request_at_its_stop_beside_one_without():
    """The commit loop without a cache shares forwards (``step_together``): a request whose
    stop is met stops at the block boundary after it while another goes on to its end."""
    pytest.importorskip("fastapi")
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient
    from server_helpers import Echo

    from unmask.server import ServerLimits, create_app

    m = loaded(Echo(tiny_config()))
    body = {"prompt": "ab", "max_tokens": 16, "steps": 16, "block_length": 4}
    with TestClient(create_app(m, limits=ServerLimits(batch_wait_s=0.5))) as client:
        full = client.post("/v1/completions", json=body).json()
        text = full["choices"][0]["text"]
        stop = text[4:6]
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda extra: client.post("/v1/completions",
                                                      json={**body, **extra}).json(),
                            [{"stop": stop}, {}])
    assert a["choices"][0]["text"] == text[:4] and a["choices"][0]["finish_reason"] == "stop"
    assert b["choices"][0]["text"] == text and b["nfe"] == full["nfe"] == 16
    assert a["nfe"] == 8  # blocks 1 and 2: the stop ends in block 2
