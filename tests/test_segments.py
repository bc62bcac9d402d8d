"""Generation longer than the context (``segment_length``): segments of the checkpoint's own
decoder over a sliding window, through the API, the CLI and the server."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from server_helpers import loaded
from torch import nn

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling import step_together
from unmask.sampling.penalties import banned_ids
from unmask.sampling.segments import check_segments, segment_configs, segment_seed
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
CONTEXT = 32


def model(attention: str = "bidirectional", seed: int = 0, **extra) -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=CONTEXT,
                       attention=attention, init_std=0.3, **TOK.special_ids(), **extra)
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


PROMPTS = [[10, 20, 30, 40, 50], [7, 8]]


def chained(ld: Loaded, prompts, config: SampleConfig, *, align: int = 1) -> list[list[int]]:
    """The reference: each segment a plain run on the latest ``CONTEXT - length`` tokens
    (block models: at most that many, cut by whole blocks of ``align``)."""
    rows = [list(p) for p in prompts]
    out: list[list[int]] = [[] for _ in rows]
    n, G = config.segment_length, config.gen_length
    lengths = [n] * (G // n) + ([G % n] if G % n else [])
    for k, length in enumerate(lengths):
        window = (CONTEXT - length) // align * align
        ctx = []
        for r, o in zip(rows, out, strict=True):
            row = r + o
            while len(row) > window:
                row = row[align:]
            ctx.append(row)
        cfg = dataclasses.replace(config, gen_length=length, segment_length=None,
                                  steps=config.steps * length // G,
                                  seed=segment_seed(config.seed, k))
        res = api.start(ld, ctx, cfg).run()
        for o, ids in zip(out, res.gen_ids, strict=True):
            o.extend(ids)
    return out


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_llada_segments_equal_plain_runs_on_the_moving_window(temperature):
    ld = loaded(model())
    config = SampleConfig(gen_length=60, steps=60, block_length=4, segment_length=20,
                          temperature=temperature, seed=3)
    res = api.start(ld, PROMPTS, config).run()
    assert res.segments is not None and len(res.segments) == 3
    assert res.gen_ids == chained(ld, PROMPTS, config)
    assert res.nfe == 60 and res.steps == 60
    assert res.prompt_ids == PROMPTS  # the whole prompt, not the window
    assert res.tokens.shape == (2, 5 + 60)


def test_one_segment_is_the_plain_run():
    ld = loaded(model())
    plain = SampleConfig(gen_length=16, steps=16, temperature=0.7, seed=5)
    a = api.start(ld, PROMPTS, plain).run()
    b = api.start(ld, PROMPTS, dataclasses.replace(plain, segment_length=16)).run()
    assert b.tokens.tolist() == a.tokens.tolist() and b.nfe == a.nfe
    c = api.start(ld, PROMPTS, dataclasses.replace(plain, segment_length=30)).run()
    assert c.tokens.tolist() == a.tokens.tolist()


def test_ar_greedy_segments_equal_an_argmax_loop_without_a_cache():
    m = model("causal", seed=5)
    ld = loaded(m)
    config = SampleConfig(gen_length=50, segment_length=12)  # 4 x 12 + 2
    res = api.start(ld, PROMPTS, config).run()
    assert len(res.segments) == 5
    for prompt, got in zip(PROMPTS, res.gen_ids, strict=True):
        seq, out = list(prompt), []
        for length in [12, 12, 12, 12, 2]:
            ctx = seq[-(CONTEXT - length):]
            for _ in range(length):
                with torch.no_grad():
                    logits = m(torch.tensor([ctx]))[0, -1]
                logits[[TOK.mask_id, *banned_ids(m.config)]] = float("-inf")
                nxt = int(logits.argmax())
                ctx.append(nxt)
                seq.append(nxt)
                out.append(nxt)
        if TOK.eos_id in out:  # the row ends there: pad after
            j = out.index(TOK.eos_id) + 1
            out = out[:j] + [TOK.pad_id] * (len(out) - j)
        assert got == out
    assert TOK.eos_id in res.gen_ids[0]  # (this seed ends a row early)


def test_speculative_segments_keep_token_identity_with_ar():
    # random models agree on a draft now and then (seeds where they do on a real token)
    verifier, drafter = loaded(model("causal", seed=1)), loaded(model(seed=5))
    config = SampleConfig(gen_length=40, segment_length=16, draft_length=3)
    spec = api.generate(verifier, ["abc", "hello there"], config=config, draft=drafter)
    ar = api.generate(verifier, ["abc", "hello there"],
                      config=dataclasses.replace(config, draft_length=None))
    assert spec.decoder == "speculative" and ar.decoder == "ar"
    assert spec.ids == ar.ids
    res, parts = spec.result, spec.result.segments
    assert len(parts) == 3 and type(res) is type(parts[0])  # a SpeculativeResult
    for name in ("drafted", "accepted", "row_rounds", "committed", "verifier_nfe", "nfe"):
        assert getattr(res, name) == sum(getattr(p, name) for p in parts) > 0
    assert res.acceptance_stats()["drafted"] == res.drafted


def test_block_diffusion_windows_are_whole_blocks():
    ld = loaded(model("block-causal", seed=4, block_size=4))
    config = SampleConfig(gen_length=40, steps=40, segment_length=8)
    res = api.start(ld, [[5, 6, 7]], config).run()
    assert len(res.segments) == 5
    for part in res.segments[1:]:
        start = part.region[0]
        assert start % 4 == 0 and start + 8 <= CONTEXT  # the window: (32 - 8) // 4 * 4 = 24
    assert res.gen_ids == chained(ld, [[5, 6, 7]], config, align=4)


def test_rows_keep_their_length_modulo_the_block():
    """A model whose blocks start at the first prompt token (``block_align="absolute"``) needs
    a batch's rows equal modulo the block; rows cut at different segments stay so."""
    ld = loaded(model("block-causal", seed=4, block_size=4, block_align="absolute"))
    prompts = [[5, 6, 7], [9] * 19]  # both 3 modulo 4; the second outgrows the window first
    config = SampleConfig(gen_length=32, policy="threshold", segment_length=8)
    res = api.start(ld, prompts, config).run()  # (an earlier cut to 24 tokens: 19 vs 0 mod 4)
    assert len(res.segments) == 4
    for part in res.segments:  # each segment's prompts: 3 modulo 4, and within the window
        lengths = [int(r.sum()) for r in part.attention_mask[:, : part.region[0]]] if (
            part.attention_mask is not None) else [part.region[0]] * 2
        assert all(n % 4 == 3 and n <= 24 for n in lengths), lengths


class EOSRow(nn.Module):
    """A mask predictor sure of EOS everywhere in rows that hold id 99, of 'x' elsewhere."""

    def __init__(self, **config) -> None:
        super().__init__()
        self.config = model(**config).config
        self.calls: list[int] = []

    def forward(self, tokens, attention_mask=None):
        B, L = tokens.shape
        self.calls.append(B)
        logits = torch.full((B, L, TOK.vocab_size), -10.0)
        eos = (tokens == 99).any(dim=1)
        logits[..., 4 + ord("x")] = torch.where(eos, -10.0, 10.0)[:, None]
        logits[..., TOK.eos_id] = torch.where(eos, 10.0, -10.0)[:, None]
        return logits


def test_a_row_that_ends_leaves_the_later_segments():
    m = EOSRow()
    config = SampleConfig(gen_length=24, steps=24, segment_length=8)
    res = api.start(loaded(m), [[99, 1], [1, 2]], config).run()
    assert [p.tokens.shape[0] for p in res.segments] == [2, 1, 1]
    assert res.gen_ids[0][:8] == [TOK.eos_id] * 8 and res.gen_ids[0][8:] == [TOK.pad_id] * 16
    assert res.gen_ids[1] == [4 + ord("x")] * 24
    assert m.calls == [2] * 8 + [1] * 16  # the ended row costs nothing after its segment


def test_a_decoder_that_stops_early_ends_the_run():
    """bd3lm stops after the block in which every row wrote EOS: a segment's region is then
    shorter than the segment, and the run ends there with pads after."""
    m = EOSRow(attention="block-causal", block_size=4)
    config = SampleConfig(gen_length=24, steps=24, segment_length=8)
    run = api.start(loaded(m), [[99, 1], [99, 2]], config)
    res = run.run()
    assert run.decoder == "bd3lm" and len(res.segments) == 1
    assert res.segments[0].region[1] - res.segments[0].region[0] == 4  # one block of 8 ran
    assert res.gen_ids == [[TOK.eos_id] * 4 + [TOK.pad_id] * 20] * 2
    assert run.view().tolist() == res.gen_ids and res.nfe == len(m.calls)


def test_segmented_runs_share_forward_passes_and_report_the_whole_view():
    ld = loaded(model())
    a_cfg = SampleConfig(gen_length=30, steps=30, segment_length=10, temperature=0.8, seed=1)
    b_cfg = dataclasses.replace(a_cfg, seed=2, gen_length=20, steps=20)
    alone = [api.start(ld, [p], c).run() for p, c in ((PROMPTS[0], a_cfg), (PROMPTS[1], b_cfg))]
    views: list[torch.Tensor] = []
    runs = [api.start(ld, [PROMPTS[0]], a_cfg, step_callback=lambda s, v: views.append(v)),
            api.start(ld, [PROMPTS[1]], b_cfg)]
    assert all(r.shares_forward for r in runs)
    while not all(r.done for r in runs):
        step_together(runs)
    for r, ref in zip(runs, alone, strict=True):
        assert r.result().tokens.tolist() == ref.tokens.tolist()
    assert len(views) == 30 and all(v.shape == (1, 30) for v in views)
    masked = [int((v == TOK.mask_id).sum()) for v in views]
    assert masked == list(range(29, -1, -1))  # one token committed per step, all segments


def test_bad_segment_options_are_one_line_errors():
    ld = loaded(model())
    with pytest.raises(UserError, match="segment_length"):  # the way out is named
        api.start(ld, PROMPTS, SampleConfig(gen_length=40, steps=40))
    with pytest.raises(UserError, match="no room for context.*at most 31"):
        api.start(ld, PROMPTS, SampleConfig(gen_length=40, steps=40, segment_length=32))
    with pytest.raises(UserError, match=r"steps \(30\) do not split evenly over segments of "
                                         r"2 x 15 \+ 10 tokens.*multiple of 8"):
        segment_configs(SampleConfig(gen_length=40, steps=30, segment_length=15))
    # every segment full: "3 x 32" (it read "2 x 32 + 32")
    with pytest.raises(UserError, match=r"over segments of 3 x 32 tokens \(gen_length 96\)"):
        segment_configs(SampleConfig(gen_length=96, steps=10, segment_length=32))
    assert [c.steps for c in segment_configs(SampleConfig(gen_length=40, steps=32,
                                                          segment_length=15))] == [12, 12, 8]
    with pytest.raises(UserError, match="whole blocks of 4"):
        api.start(ld, PROMPTS, SampleConfig(gen_length=40, steps=40, block_length=4,
                                            segment_length=10))
    with pytest.raises(UserError, match="MASK"):
        api.start(ld, [[1, TOK.mask_id, 3]], SampleConfig(gen_length=40, segment_length=20,
                                                         steps=40))
    with pytest.raises(UserError, match="segment_length must be >= 1"):
        SampleConfig(segment_length=0)
    for name in ("embed-diffusion", "latent-diffusion"):  # a fixed canvas: nothing to continue
        with pytest.raises(UserError, match=f"not '{name}'"):
            check_segments(name, SampleConfig(segment_length=8))
    check_segments("embed-diffusion", SampleConfig())


def test_cli_and_server_write_what_the_api_writes(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.server import create_app

    ld = loaded(model())
    save_checkpoint(tmp_path / "run", model=ld.model, tokenizer=ld.tokenizer)
    ck = str(tmp_path / "run" / "checkpoint")
    config = SampleConfig(gen_length=48, steps=48, segment_length=16, seed=0)
    want = api.generate(ld, "hello", config=config).texts[0]

    rc = main(["generate", "--model", ck, "--prompt", "hello",
               "--gen-length", "48", "--segment-length", "16", "--seed", "0", "--json",
               "--no-live", "--dtype", "fp32"])  # as saved: auto may run it in bf16
    assert rc in (0, None)
    assert json.loads(capsys.readouterr().out)["results"][0]["text"] == want
    rc = main(["generate", "--model", ck, "--prompt", "hello",
               "--gen-length", "48"])
    err = capsys.readouterr().err
    assert rc == 2 and "--segment-length" in err and err.count("\n") == 1

    with TestClient(create_app(ld)) as c:
        body = {"prompt": "hello", "max_tokens": 48, "seed": 0, "segment_length": 16}
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == want
        r = c.post("/v1/completions", json={**body, "stream": True})  # streamed as it grows
        data = [ln[len("data: "):] for ln in r.text.splitlines() if ln.startswith("data: ")]
        assert data[-1] == "[DONE]" and len(data) > 2
        chunks = [json.loads(d) for d in data[:-1]]
        assert "".join(ch["choices"][0]["text"] for ch in chunks if ch["choices"]) == want
        r = c.post("/v1/completions", json={**body, "segment_length": None})
        assert r.status_code == 400 and "segment_length" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={**body, "segment_length": 40})
        assert r.status_code == 400 and "no room for context" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={**body, "max_tokens": 2000})  # --max-steps 1024
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        r = c.post("/v1/infill", json={"template": "a [MASK:2] b", "segment_length": 8})
        assert r.status_code == 400 and r.json()["error"]["param"] == "segment_length"


def test_hybrid_segments_equal_ar_segments_in_greedy_mode():
    special = dict(mask_id=0, pad_id=1, eos_id=2, bos_id=3)
    cfg = model_preset("tiny", vocab_size=64, max_seq_len=CONTEXT, attention="causal",
                       init_std=0.3, draft_block=3, objective="hybrid", **special)
    torch.manual_seed(7)
    ld = loaded(Transformer(cfg).double().eval())
    config = SampleConfig(gen_length=45, segment_length=15)
    hybrid = api.start(ld, [[4, 5, 6], [7]], config)
    ar = api.start(ld, [[4, 5, 6], [7]], dataclasses.replace(config, decoder="ar"))
    assert hybrid.decoder == "hybrid" and ar.decoder == "ar"
    h, a = hybrid.run(), ar.run()
    assert len(h.segments) == 3 and h.gen_ids == a.gen_ids


def test_sedd_segments_equal_plain_runs_on_the_moving_window():
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=CONTEXT, objective="sedd",
                       sedd_graph="absorbing", **TOK.special_ids())
    torch.manual_seed(0)
    ld = loaded(Transformer(cfg).double().eval())
    config = SampleConfig(gen_length=40, steps=40, segment_length=16, seed=1)  # 16 + 16 + 8
    run = api.start(ld, [[5, 6, 7], [8]], config)
    res = run.run()
    assert run.decoder == "sedd" and len(res.segments) == 3 and res.steps == 40
    assert res.gen_ids == chained(ld, [[5, 6, 7], [8]], config)
    with pytest.raises(UserError, match=r"steps \(32\) do not split evenly"):  # sedd uses steps
        api.start(ld, [[5]], dataclasses.replace(config, steps=32))


class DraftRecorder:
    """An ``on_view`` that also takes each round's drafts (as ``LiveView`` does)."""

    def __init__(self) -> None:
        self.views: list[torch.Tensor] = []
        self.drafts: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def __call__(self, step: int, view: torch.Tensor) -> None:
        self.views.append(view.clone())

    def draft(self, step: int, view: torch.Tensor, drafts: torch.Tensor) -> None:
        self.drafts.append((step, view.clone(), drafts.clone()))


@pytest.mark.parametrize("kind", ["speculative", "hybrid"])
def test_segmented_runs_show_each_segments_drafts_in_the_whole_region(kind):
    config = SampleConfig(gen_length=40, segment_length=16, draft_length=3)
    if kind == "speculative":
        verifier, draft = loaded(model("causal", seed=1)), loaded(model(seed=2))
    else:
        verifier = loaded(model("causal", seed=1, draft_block=3, objective="hybrid"))
        draft = None
    rec = DraftRecorder()
    prompts = [TOK.encode("abc"), TOK.encode("hello there")]
    run = api.start(verifier, prompts, config, step_callback=rec, draft=draft)
    assert run.decoder == kind
    res = run.run()
    assert len(res.segments) == 3 and len(rec.views) == res.steps
    assert rec.drafts and all(d.shape == v.shape == (2, 40) for _, v, d in rec.drafts)
    steps = [s for s, _, _ in rec.drafts]
    assert steps == sorted(steps) and steps[-1] < res.steps  # the run's steps, not a segment's
    cols = {int(c) for _, _, d in rec.drafts for c in (d != TOK.mask_id).nonzero()[:, 1]}
    assert min(cols) < 16 and max(cols) >= 32  # drafts of the first and the last segment
    for _, view, drafts in rec.drafts:  # drafted where nothing is committed yet
        shown = drafts != TOK.mask_id
        assert bool((view[shown] == TOK.mask_id).all())
    # the run's own views only: every one the whole region
    assert all(v.shape == (2, 40) for v in rec.views)


def test_impossible_segmented_lengths_are_refused_before_anything_is_allocated(
    tmp_path, capsys, monkeypatch
):
    import io

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    ld = loaded(model("causal"))
    for huge in (10**12, 10**23):  # a MemoryError and an OverflowError before
        with pytest.raises(UserError, match=r"at most 1048576 tokens"):
            api.generate(ld, "a", config=dict(gen_length=huge, segment_length=16))
    with pytest.raises(UserError, match=r"131072 segments, more than 65536.*at least 16"):
        api.generate(ld, "a", config=dict(gen_length=1 << 20, segment_length=8))
    save_checkpoint(tmp_path / "run", model=ld.model, tokenizer=ld.tokenizer)
    ck = str(tmp_path / "run" / "checkpoint")
    for cmd in (["generate", "--no-live", "--prompt", "a"], ["chat", "--template", "plain"]):
        monkeypatch.setattr("sys.stdin", io.StringIO("a\n"))  # chat's one message
        rc = main([*cmd, "--model", ck, "--device", "cpu",
                   "--gen-length", str(10**23), "--segment-length", "16"])
        err = capsys.readouterr().err
        assert rc == 2 and "at most 1048576 tokens" in err and err.count("\n") == 1, err
