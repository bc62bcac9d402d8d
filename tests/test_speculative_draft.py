"""Speculative decoding's drafter options and every place a user decodes with a drafter:
the drafter's prefix cache, adaptive draft length, denoising steps per draft, one tokenizer
up to appended special tokens, the server, ``unmask chat --draft``, the live view, and the
one-line refusals of the CLI."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling import LiveView, generate_ar
from unmask.sampling.speculative import SpeculativeRun
from unmask.tokenizer import Tokenizer, byte_tokenizer, train_bpe, with_fim_tokens

TOK = byte_tokenizer()
PROMPTS = [[10, 20, 30, 40, 50], [7, 8], [100, 101, 102, 103, 104, 105, 106, 107]]


def transformer(
    attention: str, seed: int, tok: Tokenizer = TOK, block_size: int | None = None
) -> Transformer:
    cfg = model_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        max_seq_len=64,
        attention=attention,
        block_size=block_size,
        init_std=0.3,
        **tok.special_ids(),
    )
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def loaded(model: nn.Module, tok: Tokenizer = TOK) -> Loaded:
    return Loaded(model=model, tokenizer=tok, config=model.config, path=Path("runs/x"))


class Widths(nn.Module):
    """Wraps a model, recording the width of every forward's input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.widths = inner, inner.config, []
        self.supports_kv_cache = getattr(inner, "supports_kv_cache", False)

    def forward(self, tokens, attention_mask=None, **kw):
        self.widths.append(tokens.shape[1])
        return self.inner(tokens, attention_mask, **kw)


class Recorder:
    """An ``on_view`` that also takes the drafts of every round (as ``LiveView`` does)."""

    def __init__(self) -> None:
        self.views: list[torch.Tensor] = []
        self.drafts: list[torch.Tensor] = []

    def __call__(self, step, view):
        self.views.append(view.clone())

    def draft(self, step, view, drafts):
        self.drafts.append(drafts.clone())


def spec(verifier, drafter, prompts=PROMPTS, gen=24, **options):
    rec = Recorder()
    run = SpeculativeRun(
        verifier,
        drafter,
        prompts,
        max_new_tokens=gen,
        eos_id=None,
        on_view=rec,
        **{"draft_length": 4, **options},
    )
    return run.run(), rec


# ---- the drafter's prefix cache ----------------------------------------------------------------


def test_block_causal_drafter_cache_equals_no_cache_and_runs_fewer_positions():
    """A block-causal drafter's cache keeps whole blocks only, so every draft is the uncached
    drafter's, token for token; its forwards after the first run only the new tokens and the
    draft block."""
    verifier = transformer("causal", 0)
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=24, eos_id=None)
    inner = transformer("block-causal", 1, block_size=4)
    runs = {}
    for cache in ("none", "prefix"):
        drafter = Widths(inner)
        r, rec = spec(verifier, drafter, draft_cache=cache)
        runs[cache] = (r, rec, drafter.widths)
        assert r.gen_ids == ar.gen_ids
    (r0, rec0, w0), (r1, rec1, w1) = runs["none"], runs["prefix"]
    assert (r0.drafter_cache, r1.drafter_cache) == ("none", "prefix-exact")
    assert len(rec0.drafts) == len(rec1.drafts) > 2
    for a, b in zip(rec0.drafts, rec1.drafts, strict=True):
        assert torch.equal(a, b)
    assert w1[0] == w0[0] and all(c < n for c, n in zip(w1[1:], w0[1:], strict=True))


@pytest.mark.parametrize("cache", ["none", "prefix"])
@pytest.mark.parametrize("threshold", [0.0, 0.2])
def test_a_left_padded_row_drafts_with_a_block_causal_drafter_as_it_does_alone(cache, threshold):
    """A block-causal drafter's blocks count from each row's first real token: a left-padded
    row of a batch makes the drafts it makes alone, round by round (with and without the
    prefix cache, which keeps each row's own whole blocks), so its counts are its counts
    alone; the tokens are greedy AR's."""
    verifier, drafter = transformer("causal", 5), transformer("block-causal", 7, block_size=4)
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=24, eos_id=None)
    options = {"draft_cache": cache, "draft_threshold": threshold}
    batch, rec = spec(verifier, drafter, **options)
    assert batch.gen_ids == ar.gen_ids
    mask = verifier.config.mask_id

    def drafts(rec: Recorder, i: int) -> list[list[int]]:  # the rounds row i drafted in
        return [d[i].tolist() for d in rec.drafts if bool((d[i] != mask).any())]

    alone = []
    for i, p in enumerate(PROMPTS):
        one, rec1 = spec(verifier, drafter, [p], **options)
        assert one.gen_ids[0] == batch.gen_ids[i]
        assert drafts(rec, i) == drafts(rec1, 0), i
        alone.append(one)
    assert batch.drafted > 4
    for f in ("drafted", "accepted", "committed", "row_rounds"):
        assert getattr(batch, f) == sum(getattr(a, f) for a in alone), f


def test_a_left_padded_row_drafts_as_alone_with_a_drafter_reading_the_canvas():
    """A block-causal drafter that reads its noise level off the canvas (``masked_fraction``:
    no cache, no explicit layouts) ran on the left-padded canvas, its blocks counted from the
    first column by its attention mode: a padded row's blocks were shifted. It is given each
    row's own blocks, so a row drafts as it does alone."""
    verifier = transformer("causal", 5)
    cfg = dataclasses.replace(transformer("block-causal", 7, block_size=4).config,
                              time_conditioning=True, sigma_input="masked_fraction")  # fmt: skip
    torch.manual_seed(7)
    drafter = Transformer(cfg).double().eval()
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: drafts that read
        for p in drafter.parameters():  # no context; random modulation reads it
            if not p.any():
                p.normal_(0, 0.3)
    batch, rec = spec(verifier, drafter)
    assert batch.drafter_cache == "none"
    assert batch.gen_ids == generate_ar(verifier, PROMPTS, max_new_tokens=24, eos_id=None).gen_ids
    mask = verifier.config.mask_id
    for i, p in enumerate(PROMPTS):
        one, rec1 = spec(verifier, drafter, [p])
        assert one.gen_ids[0] == batch.gen_ids[i]
        mine = [d[i].tolist() for d in rec.drafts if bool((d[i] != mask).any())]
        assert mine == [d[0].tolist() for d in rec1.drafts] and len(mine) > 2, i


def test_bidirectional_drafter_cache_is_approximate_and_output_stays_exact():
    """A bidirectional drafter's cache reuses keys/values computed in earlier rounds: its
    first draft is the uncached one, later drafts may differ, the output never does."""
    verifier = transformer("causal", 2)
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=24, eos_id=None)
    drafter = transformer("bidirectional", 3)
    r0, rec0 = spec(verifier, drafter, draft_cache="none")
    r1, rec1 = spec(verifier, drafter, draft_cache="prefix")
    assert r0.gen_ids == r1.gen_ids == ar.gen_ids
    assert r1.drafter_cache == "prefix-approximate"
    assert torch.equal(rec0.drafts[0], rec1.drafts[0])


@pytest.mark.parametrize("temperature", [0.0, 1.5])
@pytest.mark.parametrize("options", [{}, {"draft_cache": "none"}, {"draft_steps": 3},
                                     {"shift": True}])  # fmt: skip
def test_the_heads_run_only_on_the_columns_a_round_reads(temperature, options):
    """Both models' heads run on the columns a round reads (the verifier's last head column
    and drafts, the drafter's chunk of masks; with the logit shift, the column before each),
    not on the prompt or the committed tokens fed again: the same drafts and tokens."""
    options = dict(options)
    verifier, drafter = transformer("causal", 5), transformer("bidirectional", 6)
    if options.pop("shift", False):
        drafter.config = dataclasses.replace(drafter.config, logit_shift=True)
    rows: list[int] = []
    hooks = [m.lm_head.register_forward_hook(lambda _m, inp, _o: rows.append(
             inp[0][..., 0].numel())) for m in (verifier, drafter)]  # fmt: skip
    results = []
    try:
        for whole in (False, True):
            rows.clear()
            rec = Recorder()
            run = SpeculativeRun(verifier, drafter, PROMPTS, max_new_tokens=20, draft_length=4,
                                 eos_id=None, temperature=temperature, on_view=rec,
                                 generator=torch.Generator().manual_seed(3),
                                 **options)  # fmt: skip
            if whole:
                run._head = run._dhead = None  # each model's own head over every column
            results.append((run.run(), rec.drafts, sum(rows)))
    finally:
        for h in hooks:
            h.remove()
    (cut, d_cut, n_cut), (full, d_full, n_full) = results
    assert cut.tokens.tolist() == full.tokens.tolist()
    assert (cut.nfe, cut.accepted, cut.drafted) == (full.nfe, full.accepted, full.drafted)
    assert len(d_cut) == len(d_full) and all(map(torch.equal, d_cut, d_full))
    B, k = len(PROMPTS), 4
    assert n_cut <= cut.steps * B * (k + 1) + cut.drafter_nfe * B * k < n_full


# ---- adaptive draft length and steps per draft ----------------------------------------------


@pytest.mark.parametrize("threshold", [0.0, 0.02, 0.5, 0.99])
def test_adaptive_length_keeps_greedy_identity(threshold):
    verifier = transformer("causal", 4)
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=24, eos_id=None)
    r, rec = spec(
        verifier, transformer("bidirectional", 5), draft_length=6, draft_threshold=threshold
    )
    assert r.gen_ids == ar.gen_ids
    assert r.accepted <= r.drafted <= 6 * r.row_rounds
    if threshold >= 0.5:  # a random drafter is rarely that sure: drafts end early
        assert r.drafted < 6 * r.row_rounds // 2
    for d in rec.drafts:  # drafts shown only where nothing is committed yet
        assert d.shape == (len(PROMPTS), 24)


def test_adaptive_length_keeps_every_draft_of_a_sure_drafter():
    verifier = transformer("causal", 6)
    prompt = [10, 20, 30]
    ar = generate_ar(verifier, prompt, max_new_tokens=20, eos_id=None)
    seq = prompt + ar.gen_ids[0]

    class Oracle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = dataclasses.replace(verifier.config, attention="bidirectional")

        def forward(self, tokens, attention_mask=None):
            logits = torch.zeros(*tokens.shape, self.config.vocab_size, dtype=torch.float64)
            logits[0, torch.arange(tokens.shape[1]), torch.tensor(seq[: tokens.shape[1]])] = 30.0
            return logits

    r, _ = spec(verifier, Oracle(), [prompt], gen=20, draft_threshold=0.9)
    assert r.gen_ids == ar.gen_ids and r.steps == 4 and r.accepted == 16


@pytest.mark.parametrize("steps", [2, 4])
def test_draft_steps_keep_greedy_identity_and_cost_one_forward_each(steps):
    verifier = transformer("causal", 7)
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=21, eos_id=None)
    drafter = Widths(transformer("bidirectional", 8))
    r, rec = spec(verifier, drafter, gen=21, draft_steps=steps)
    assert r.gen_ids == ar.gen_ids
    assert r.drafter_nfe == len(drafter.widths)
    # a round that drafts k = min(4, tokens left - 1) tokens takes min(steps, k) forwards
    before = [0] + [int((v[0] != TOK.mask_id).sum()) for v in rec.views[:-1]]
    assert r.drafter_nfe == sum(min(steps, 4, 21 - c - 1) for c in before)


# ---- sampling with adaptive length and steps stays the verifier's distribution -------------

V, MASK = 5, 4
TABLE = torch.tensor(  # verifier: next-token logits given the current token (a Markov chain)
    [
        [2.0, 0.0, -1.0, 0.5, 0.0],
        [-1.0, 1.5, 0.0, 0.3, 0.0],
        [0.0, 0.0, 2.0, -2.0, 0.0],
        [1.0, -1.0, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ],
    dtype=torch.float64,
)


@dataclasses.dataclass
class Cfg:
    attention: str
    vocab_size: int = V
    mask_id: int = MASK
    pad_id: int = MASK  # never proposed either way; tokens 0..3 are all text
    eos_id: int | None = None
    max_seq_len: int = 64


class Markov(nn.Module):
    supports_kv_cache = True

    def __init__(self) -> None:
        super().__init__()
        self.config = Cfg("causal")

    def forward(
        self, tokens, attention_mask=None, *, cache=None, start=0, positions=None, attn_bias=None
    ):
        if cache is not None:
            cache.length = max(cache.length, start + tokens.shape[1])
        return TABLE[tokens]  # (B, L, V)


class PrevDrafter(nn.Module):
    """Its guess at a position depends on the token before it: sure after a known token,
    flat after a mask, so its confidence (and the adaptive length) depends on its drafts."""

    def __init__(self) -> None:
        super().__init__()
        self.config = Cfg("bidirectional")

    def forward(self, tokens, attention_mask=None):
        guess = torch.tensor(
            [
                [0.2, 1.6, 0.0, 0.0, 0.0],
                [1.8, 0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.4, 1.0, 0.0],
                [0.0, 0.5, 1.2, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
            ],
            dtype=torch.float64,
        )
        prev = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
        return guess[prev]  # (B, L, V)


def exact_marginals(last: int, n: int) -> list[torch.Tensor]:
    t = TABLE.clone()
    t[:, MASK] = float("-inf")
    P = torch.softmax(t, dim=-1)
    dist = torch.zeros(V, dtype=torch.float64)
    dist[last] = 1.0
    out = []
    for _ in range(n):
        dist = dist @ P
        out.append(dist)
    return out


def test_sampling_with_adaptive_length_and_steps_matches_the_verifier():
    runs, gen = 2000, 4
    r = SpeculativeRun(
        Markov(),
        PrevDrafter(),
        [[1, 2]] * runs,
        max_new_tokens=gen,
        draft_length=3,
        draft_steps=3,
        draft_threshold=0.45,
        temperature=1.0,
        eos_id=None,
        generator=torch.Generator().manual_seed(0),
    ).run()
    assert 0 < r.drafted < 3 * r.row_rounds  # the adaptive length did cut drafts
    ids = torch.tensor(r.gen_ids)  # (runs, gen)
    for j, exact in enumerate(exact_marginals(2, gen)):
        got = torch.bincount(ids[:, j], minlength=V).double() / runs
        assert float((got - exact).abs().sum() / 2) < 0.05, (j, got, exact)


# ---- one tokenizer up to appended special tokens ---------------------------------------------


def test_a_drafter_without_the_verifiers_fim_tokens_drafts_for_it():
    """An AR model trained with FIM has three tokens appended to the drafter's tokenizer: the
    drafter never proposes them and the output is the AR model's own."""
    fim = with_fim_tokens(TOK)
    verifier = loaded(transformer("causal", 9, tok=fim), fim)
    drafter = loaded(transformer("bidirectional", 10), TOK)
    cfg = SampleConfig(gen_length=16, draft_length=4, temperature=0.0)
    ar = api.generate(verifier, ["hello", "ab"], config=dataclasses.replace(cfg, draft_length=None))
    rec = Recorder()
    sp = api.generate(verifier, ["hello", "ab"], config=cfg, draft=drafter, step_callback=rec)
    assert sp.decoder == "speculative" and sp.ids == ar.ids
    assert rec.drafts and all(int(d.max()) < TOK.vocab_size for d in rec.drafts)


# ---- the server -------------------------------------------------------------------------------


def test_server_with_a_drafter_completes_as_the_causal_model_streaming_included():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    ar_model = loaded(transformer("causal", 11))
    drafter = loaded(transformer("bidirectional", 12))
    cfg = SampleConfig(gen_length=12, temperature=0.0)
    want = api.generate(ar_model, ["The dog", "hi"], config=cfg).texts
    app = create_app(
        ar_model, draft=drafter, draft_options={"draft_length": 3}, chat_template="plain"
    )
    assert app.state.server.draft is drafter
    with TestClient(app) as c:
        body = {"prompt": ["The dog", "hi"], "max_tokens": 12, "temperature": 0}
        got = c.post("/v1/completions", json=body).json()
        assert [ch["text"] for ch in got["choices"]] == want
        r = c.post("/v1/completions", json={**body, "prompt": "The dog", "stream": True})
        chunks = [
            json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")
        ]
        assert len(chunks) > 1
        assert "".join(ch["choices"][0]["text"] for ch in chunks) == want[0]
        msgs = [{"role": "user", "content": "Hi"}]
        reply = api.chat(ar_model, msgs, config=cfg, template=app.state.server.chat).text
        got = c.post(
            "/v1/chat/completions", json={"messages": msgs, "max_tokens": 12, "temperature": 0}
        ).json()
        assert got["choices"][0]["message"]["content"] == reply


# ---- the command line -------------------------------------------------------------------------


def save(tmp_path: Path, name: str, attention: str, seed: int, tok: Tokenizer = TOK,
         max_seq_len: int = 64) -> str:
    from unmask.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    cfg = model_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        max_seq_len=max_seq_len,
        attention=attention,
        init_std=0.3,
        **tok.special_ids(),
    )
    return str(save_checkpoint(tmp_path / name, model=Transformer(cfg).eval(), tokenizer=tok))


def test_chat_draft_replies_as_the_causal_model(tmp_path, capsys, monkeypatch):
    from unmask.cli import main

    ar, drafter = save(tmp_path, "ar", "causal", 0), save(tmp_path, "d", "bidirectional", 1)
    argv = [
        "chat",
        "--model",
        ar,
        "--template",
        "plain",
        "--gen-length",
        "10",
        "--temperature",
        "0",
        "--json",
        "--device",
        "cpu",
    ]
    replies, records = [], []
    for extra in ([], ["--draft", drafter, "--draft-length", "3"]):
        monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\nAnd now?\n"))
        assert main([*argv, *extra]) == 0
        records.append([json.loads(x) for x in capsys.readouterr().out.splitlines()])
        replies.append([r["reply"] for r in records[-1]])
    assert replies[0] == replies[1] and len(replies[0]) == 2
    assert "acceptance_rate" not in records[0][0]  # ar: what it reported before
    for r in records[1]:  # speculative: acceptance and forwards of each turn
        assert r["forwards"] == r["nfe"] == r["verifier_forwards"] + r["drafter_forwards"]
        assert 0 <= r["acceptance_rate"] <= 1 and r["tokens_per_forward"] > 0


def test_cli_refusals_are_one_line_exit_2(tmp_path, capsys):
    from unmask.cli import main

    ar, diff = save(tmp_path, "ar", "causal", 0), save(tmp_path, "d", "bidirectional", 1)
    bpe = train_bpe(["hello world the cat"] * 50, TOK.vocab_size + 10)
    other = save(tmp_path, "bpe", "bidirectional", 2, tok=bpe)
    gen = ["generate", "--gen-length", "8", "--no-live", "--device", "cpu", "hi"]
    cases = [
        (["--model", ar, "--draft", other], "tokenizer differs"),
        (["--model", diff, "--draft", diff], "needs a causal"),
        (["--model", ar, "--draft", ar], "must be a diffusion model"),
        (["--model", ar, "--draft", diff, "--draft-length", "0"], "--draft-length must be >= 1"),
        (["--model", ar, "--draft", diff, "--draft-steps", "0"], "--draft-steps must be >= 1"),
        (["--model", ar, "--draft-threshold", "0.5"], "--draft-threshold applies to decoder"),
        (["--model", ar, "--draft-steps", "2"], "--draft-steps applies with --draft"),
        # the flag, not the API's argument (api.start(..., draft=))
        (["--model", ar, "--decoder", "speculative"], "--decoder speculative needs --draft CKPT"),
    ]
    for extra, message in cases:
        assert main([*gen, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    chat = ["chat", "--template", "plain", "--device", "cpu"]
    assert main([*chat, "--model", ar, "--draft", other]) == 2
    assert "tokenizer differs" in capsys.readouterr().err
    assert main([*chat, "--model", ar, "--decoder", "speculative"]) == 2  # chat: the flag too
    assert "--decoder speculative needs --draft CKPT" in capsys.readouterr().err
    pytest.importorskip("fastapi")
    assert main(["serve", "--model", diff, "--draft", diff, "--device", "cpu"]) == 2
    assert "needs a causal" in capsys.readouterr().err


# ---- the live view ---------------------------------------------------------------------------


def test_live_view_draws_drafts_in_their_own_style():
    out = io.StringIO()
    live = LiveView(TOK, stream=out, enabled=True, color=True, width=80, height=20)
    m = TOK.mask_id
    view = torch.tensor([[TOK.encode("ab")[0], TOK.encode("ab")[1], m, m, m]])
    drafts = torch.tensor([[m, m, *TOK.encode("cd"), m]])
    live.draft(1, view, drafts)
    drawn = out.getvalue()
    assert "\x1b[2;3;36mcd" in drawn and "2 drafted" in drawn
    lines = live.render(1, view, drafts)
    styles = [st for text, st in lines[0] if "cd" in text]
    assert styles == ["draft"]
    plain = io.StringIO()
    LiveView(TOK, stream=plain, enabled=True, color=False).draft(1, view, drafts)
    assert plain.getvalue() == ""  # without colour a draft would read as accepted text
    with pytest.raises(UserError):
        SampleConfig(draft_cache="dual")


# ---- per-step CPU cost: threads default to physical cores ----------------------------------


def test_physical_cores_count_hyperthread_siblings_once(tmp_path):
    from unmask.commands import physical_cores

    siblings = {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3", 4: "4"}
    for cpu, text in siblings.items():
        d = tmp_path / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "thread_siblings_list").write_text(text + "\n")
    assert physical_cores([0, 1, 2, 3, 4], str(tmp_path)) == 3
    assert physical_cores([0, 2], str(tmp_path)) == 1
    assert physical_cores([0, 9], str(tmp_path)) is None  # topology unknown: caller falls back


def test_chat_drops_old_exchanges_to_fit_a_drafter_of_shorter_context(tmp_path, capsys,
                                                                       monkeypatch):
    """With ``--draft`` the context is the smaller of the two (as ``api.start`` checks), so
    ``unmask chat`` drops the oldest exchanges to fit the drafter's too, as it does for the
    model's (it stopped at the second turn)."""
    from unmask.cli import main

    ar = save(tmp_path, "ar", "causal", 0, max_seq_len=128)
    drafter = save(tmp_path, "d", "bidirectional", 1, max_seq_len=32)
    argv = ["chat", "--model", ar, "--draft", drafter, "--template", "plain", "--gen-length",
            "6", "--temperature", "0", "--json", "--device", "cpu"]
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\nOk\nYo\n"))
    assert main(argv) == 0
    out, err = capsys.readouterr()
    turns = [json.loads(x) for x in out.splitlines()]
    assert len(turns) == 3 and [t["dropped"] for t in turns] == [0, 1, 1], turns
    assert all(t["prompt_tokens"] + 6 <= 32 for t in turns)
    assert "dropped the 1 oldest exchange to fit the drafter's context" in err
    # a --system message that leaves no room in the drafter's context is named at startup
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main([*argv, "--system", "x" * 40]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--system" in err and "drafter's max_seq_len (32)" in err


def test_server_refuses_max_tokens_past_the_drafters_context_as_the_models():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    short = Transformer(dataclasses.replace(transformer("bidirectional", 12).config,
                                            max_seq_len=32)).double().eval()
    ar = loaded(transformer("causal", 11))
    for draft, who, ctx in ((loaded(short), "drafter", 32), (None, "model", 64)):
        with TestClient(create_app(ar, draft=draft)) as c:
            body = {"prompt": "hello", "max_tokens": ctx - 2}
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 400, r.text
            e = r.json()["error"]
            assert e["param"] == "max_tokens" and e["code"] == "context_length_exceeded", e
            assert f"max_tokens ({ctx - 2}) exceeds the {who}'s context of {ctx} tokens; use " \
                f"max_tokens <= {ctx - 5}" in e["message"] and "gen_length" not in e["message"]
            r = c.post("/v1/completions", json={**body, "max_tokens": ctx - 5})
            assert r.status_code == 200, r.text


def test_a_served_chat_without_max_tokens_fits_the_drafters_shorter_context():
    """A chat request that sends no max_tokens gets a reply that fits the context the server
    decodes in (with --draft, the drafter's where it is shorter, as `unmask chat` fits it):
    it measured the model's and was refused for a max_tokens the client never sent."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    short = Transformer(dataclasses.replace(transformer("bidirectional", 12).config,
                                            max_seq_len=32)).double().eval()
    ar = loaded(transformer("causal", 11))
    msgs = [{"role": "user", "content": "hello"}]
    with TestClient(create_app(ar, draft=loaded(short), chat_template="plain")) as c:
        r = c.post("/v1/chat/completions", json={"messages": msgs})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 32
