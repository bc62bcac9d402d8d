"""Two-model speculative decoding (decoder ``speculative``): lossless against AR decoding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling import choose_decoder, generate_ar
from unmask.sampling import speculative as spec_mod
from unmask.sampling.ar import filter_logits
from unmask.sampling.speculative import SpeculativeRun
from unmask.tokenizer import byte_tokenizer, train_bpe

TOK = byte_tokenizer()


def transformer(attention: str, seed: int, vocab: int | None = None) -> Transformer:
    cfg = model_preset(
        "tiny",
        vocab_size=vocab or TOK.vocab_size,
        max_seq_len=64,
        attention=attention,
        init_std=0.3,
        **TOK.special_ids(),
    )
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def loaded(model: nn.Module) -> Loaded:
    return Loaded(model=model, tokenizer=TOK, config=model.config, path=Path("runs/x"))


class Counting(nn.Module):
    """Wraps a model, counting its forwards."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.calls = inner, inner.config, 0
        self.supports_kv_cache = getattr(inner, "supports_kv_cache", False)

    def forward(self, tokens, attention_mask=None, **kw):
        self.calls += 1
        return self.inner(tokens, attention_mask, **kw)


PROMPTS = [[10, 20, 30, 40, 50], [7, 8], [100, 101, 102, 103, 104, 105, 106, 107]]


@pytest.mark.parametrize("draft_length", [1, 3, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_equals_ar_greedy_with_a_random_drafter(draft_length, seed):
    verifier = transformer("causal", seed)
    drafter = transformer("bidirectional", seed + 10)
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=24, eos_id=None)
    for prompts in (PROMPTS, PROMPTS[:1]):
        run = SpeculativeRun(
            verifier,
            drafter,
            prompts,
            max_new_tokens=24,
            draft_length=draft_length,
            eos_id=None,
        )
        r = run.run()
        assert r.gen_ids == ar.gen_ids[: len(prompts)]
        if len(prompts) == len(PROMPTS):  # the same padded canvas
            assert r.tokens.tolist() == ar.tokens.tolist() and r.region == ar.region
        assert r.nfe == r.verifier_nfe + r.drafter_nfe


class FimLover(nn.Module):
    """A causal model trained with --fim-rate whose every position puts its mass on the
    fill-in-the-middle marker [FIM_MIDDLE] (greedy under the penalties wrote it, in plain
    generation), its vocabulary three ids larger than the drafter's."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        v = inner.config.vocab_size
        self.inner, self.supports_kv_cache = inner, True
        self.config = dataclasses.replace(inner.config, fim_prefix_id=v - 3,
                                          fim_suffix_id=v - 2, fim_middle_id=v - 1)

    def forward(self, tokens, attention_mask=None, **kw):
        logits = self.inner(tokens, attention_mask, **kw)
        return logits.index_add(-1, torch.tensor([self.config.fim_middle_id]),
                                torch.full((*logits.shape[:-1], 1), 50.0, dtype=logits.dtype))


def test_causal_decoders_never_write_fim_markers_and_the_drafter_never_sees_them():
    verifier = FimLover(transformer("causal", 3, vocab=TOK.vocab_size + 3))
    drafter = transformer("bidirectional", 13)  # the byte tokenizer's vocabulary: 3 fewer
    fim = {verifier.config.fim_prefix_id, verifier.config.fim_suffix_id,
           verifier.config.fim_middle_id}
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=16, eos_id=None)
    assert not fim & {t for row in ar.gen_ids for t in row}  # each row: its best other token
    run = SpeculativeRun(verifier, drafter, PROMPTS, max_new_tokens=16, draft_length=4,
                         eos_id=None, shared_vocab=TOK.vocab_size)
    assert run.run().gen_ids == ar.gen_ids


def test_greedy_stops_at_eos_like_ar():
    verifier = transformer("causal", 3)
    drafter = transformer("bidirectional", 4)
    free = generate_ar(verifier, PROMPTS, max_new_tokens=20, eos_id=None)
    eos = free.gen_ids[0][6]  # a token row 0 emits: treat it as EOS
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=20, eos_id=eos, pad_id=0)
    r = SpeculativeRun(
        verifier, drafter, PROMPTS, max_new_tokens=20, draft_length=4, eos_id=eos, pad_id=0
    ).run()
    assert r.gen_ids == ar.gen_ids
    assert eos in r.gen_ids[0]


def test_api_greedy_equals_ar_and_auto_picks_speculative_with_a_drafter():
    verifier = loaded(transformer("causal", 5))
    drafter = loaded(transformer("bidirectional", 6))
    cfg = SampleConfig(gen_length=16, draft_length=4)
    with pytest.raises(UserError, match="draft_length applies to decoder 'speculative'"):
        api.generate(verifier, ["hello", "ab"], config=cfg)  # without a drafter it does nothing
    ar = api.generate(verifier, ["hello", "ab"], config=dataclasses.replace(cfg, draft_length=None))
    assert ar.decoder == "ar"
    sp = api.generate(verifier, ["hello", "ab"], config=cfg, draft=drafter)
    assert sp.decoder == "speculative"
    assert sp.ids == ar.ids and sp.texts == ar.texts
    assert sp.result.nfe == sp.result.verifier_nfe + sp.result.drafter_nfe == sp.nfe


class Oracle(nn.Module):
    """A 'diffusion' drafter that is sure of ``seq[p]`` at canvas column p."""

    def __init__(self, config, seq: list[int]) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, attention="bidirectional")
        self.seq = seq

    def forward(self, tokens, attention_mask=None):
        B, L = tokens.shape
        logits = torch.zeros(B, L, self.config.vocab_size, dtype=torch.float64)
        for p in range(L):
            logits[:, p, self.seq[p]] = 10.0
        return logits


def test_nfe_counts_both_models_and_a_perfect_drafter_commits_k_plus_one():
    verifier = Counting(transformer("causal", 7))
    prompt = [10, 20, 30]
    ar = generate_ar(verifier.inner, prompt, max_new_tokens=20, eos_id=None)
    drafter = Counting(Oracle(verifier.config, prompt + ar.gen_ids[0]))
    r = SpeculativeRun(
        verifier, drafter, prompt, max_new_tokens=20, draft_length=4, eos_id=None
    ).run()
    assert r.gen_ids == ar.gen_ids
    assert r.steps == 4  # 5 tokens a round
    assert (r.verifier_nfe, r.drafter_nfe, r.nfe) == (verifier.calls, drafter.calls, 8)
    assert r.accepted == r.drafted == 16
    # a random drafter: still counted, one of each per round (the last round may skip drafting)
    verifier.calls = 0
    drafter = Counting(transformer("bidirectional", 8))
    r = SpeculativeRun(
        verifier, drafter, prompt, max_new_tokens=20, draft_length=4, eos_id=None
    ).run()
    assert r.verifier_nfe == verifier.calls == r.steps
    assert r.drafter_nfe == drafter.calls <= r.steps
    assert r.nfe == verifier.calls + drafter.calls


class RowOracle(nn.Module):
    """A cacheable 'diffusion' drafter sure of ``seqs[row][position]``: right for the rows whose
    sequence is the verifier's greedy one, wrong for the others."""

    supports_kv_cache = True

    def __init__(self, config, seqs: list[list[int]]) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, attention="bidirectional")
        self.table = torch.tensor(seqs)  # (B, P + G)

    def forward(
        self, tokens, attention_mask=None, *, cache=None, start=0, positions=None, attn_bias=None
    ):
        if cache is not None:
            cache.length = max(cache.length, start + tokens.shape[1])
        B, L = tokens.shape
        logits = torch.zeros(B, L, self.config.vocab_size, dtype=torch.float64)
        want = self.table.gather(1, positions.clamp(max=self.table.shape[1] - 1))  # (B, L)
        logits.scatter_(2, want[..., None], 10.0)
        return logits


@pytest.mark.parametrize("draft_cache", ["prefix", "none"])
def test_each_row_commits_what_it_accepted(draft_cache):
    """A padded batch whose first row's drafts are all right and the others' all wrong: the
    first row finishes in gen / (k + 1) rounds while the others take one token a round (with
    one KV-cache length for the batch it would commit one token a round too), output equal to
    AR greedy."""
    verifier = transformer("causal", 3)
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=20, eos_id=None)
    right = ar.tokens[0].tolist()
    seqs = [right] + [[5] * len(right)] * 2
    r = SpeculativeRun(verifier, RowOracle(verifier.config, seqs), PROMPTS, max_new_tokens=20,
                       draft_length=4, eos_id=None, draft_cache=draft_cache).run()  # fmt: skip
    assert r.gen_ids == ar.gen_ids and r.tokens.tolist() == ar.tokens.tolist()
    assert r.accepted >= 16  # row 0: four of four drafts a round (the wrong rows: by chance)
    assert r.committed == 3 * 20 == r.accepted + r.row_rounds
    assert r.steps == 20 and r.row_rounds <= 4 + 20 + 20 + 4  # row 0 done in about 4 rounds
    assert r.tokens_per_forward == pytest.approx(60 / r.row_rounds * r.steps / r.nfe)


def test_a_batch_counts_what_its_rows_count_alone():
    """A row ahead of the batch drafts only what it can still commit (its draft length alone),
    so drafts, acceptances and rounds are the sums of the rows decoded one by one: row 0's
    drafts are all right and it has 2 tokens left after 4 rounds of 5 (1 draft, not 4)."""
    verifier = transformer("causal", 3)
    G = 22
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=G, eos_id=None)
    P = max(map(len, PROMPTS))
    seqs = [ar.tokens[0].tolist()] + [[5] * (P + G)] * 2
    fields = ("drafted", "accepted", "row_rounds", "committed")
    for cache in ("prefix", "none"):
        batch = SpeculativeRun(verifier, RowOracle(verifier.config, seqs), PROMPTS,
                               max_new_tokens=G, draft_length=4, eos_id=None,
                               draft_cache=cache).run()  # fmt: skip
        alone = [SpeculativeRun(verifier, RowOracle(verifier.config, [s[P - len(p):]]), p,
                                max_new_tokens=G, draft_length=4, eos_id=None,
                                draft_cache=cache).run()
                 for p, s in zip(PROMPTS, seqs, strict=True)]  # fmt: skip
        assert batch.gen_ids == ar.gen_ids == [a.gen_ids[0] for a in alone]
        assert (alone[0].drafted, alone[0].accepted) == (17, 17)
        for f in fields:
            assert getattr(batch, f) == sum(getattr(a, f) for a in alone), f


class Unsure(RowOracle):
    """``RowOracle`` for the first row; flat (never sure) for the others."""

    def forward(self, tokens, attention_mask=None, **kw):
        out = super().forward(tokens, attention_mask, **kw)
        out[1:] = 0.0
        return out


def test_adaptive_chunks_stop_where_every_row_has_drafted_what_it_can_commit():
    """Draft steps with a threshold stop once no row drafts further: a row whose drafts are
    sure stops at its own end too (not at the batch's), as it does alone. Row 0 takes 4 chunks
    a round for 4 rounds and 1 in its 5th (1 token left to draft); the unsure rows 1 a round
    until the last round, which drafts nothing: 4·4 + 1 + 16 forwards (the mask columns past
    row 0's end made it run all 4 chunks in its 5th round: 36)."""
    verifier = transformer("causal", 3)
    G = 22
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=G, eos_id=None)
    seqs = [ar.tokens[0].tolist()] + [[5] * (8 + G)] * 2
    r = SpeculativeRun(verifier, Unsure(verifier.config, seqs), PROMPTS, max_new_tokens=G,
                       draft_length=4, draft_steps=4, draft_threshold=0.5,
                       eos_id=None).run()  # fmt: skip
    assert r.gen_ids == ar.gen_ids
    assert (r.steps, r.accepted, r.drafted) == (22, 17, 17)
    assert r.drafter_nfe == 4 * 4 + 1 + 16


# ---- sampling: the output distribution is the verifier's -----------------------------------

V, MASK = 5, 4  # tokens 0..3, mask 4


@dataclasses.dataclass
class Cfg:
    attention: str
    vocab_size: int = V
    mask_id: int = MASK
    pad_id: int = MASK  # never proposed either way; tokens 0..3 are all text
    eos_id: int | None = None
    bos_id: int | None = None
    max_seq_len: int = 64


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


class Markov(nn.Module):
    supports_kv_cache = True

    def __init__(self, config: Cfg | None = None) -> None:
        super().__init__()
        self.config = config or Cfg("causal")

    def forward(
        self, tokens, attention_mask=None, *, cache=None, start=0, positions=None, attn_bias=None
    ):
        if cache is not None:
            cache.length = max(cache.length, start + tokens.shape[1])
        return TABLE[tokens]  # (B, L, V)


class FixedDrafter(nn.Module):
    """Sure-ish of token 0 everywhere (far from the verifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = Cfg("bidirectional")

    def forward(self, tokens, attention_mask=None):
        row = torch.tensor([1.5, 0.2, -0.5, 0.8, 0.0], dtype=torch.float64)
        return row.expand(*tokens.shape, V).clone()


def exact_marginals(last: int, n: int, banned: tuple[int, ...] = ()) -> list[torch.Tensor]:
    """Exact distributions of the verifier's tokens 1..n after ``last`` (mask and ``banned``
    forbidden)."""
    t = TABLE.clone()
    t[:, [MASK, *banned]] = float("-inf")
    P = torch.softmax(t, dim=-1)  # (V, V) transition
    dist = torch.zeros(V, dtype=torch.float64)
    dist[last] = 1.0
    out = []
    for _ in range(n):
        dist = dist @ P
        out.append(dist)
    return out


def empirical(draw, n: int, runs: int) -> list[torch.Tensor]:
    counts = torch.zeros(n, V, dtype=torch.float64)
    for ids in draw(runs):
        for j in range(n):
            counts[j, ids[j]] += 1
    return list(counts / counts.sum(dim=1, keepdim=True))


def sampled(runs: int, *, batch: bool, gen: int = 3, k: int = 2) -> list[list[int]]:
    prompt = [1, 2]
    if batch:  # one batch: each row commits the tokens it accepted
        r = SpeculativeRun(
            Markov(),
            FixedDrafter(),
            [prompt] * runs,
            max_new_tokens=gen,
            draft_length=k,
            temperature=1.0,
            eos_id=None,
            generator=torch.Generator().manual_seed(0),
        ).run()
        return r.gen_ids
    out = []
    for s in range(runs):
        r = SpeculativeRun(
            Markov(),
            FixedDrafter(),
            prompt,
            max_new_tokens=gen,
            draft_length=k,
            temperature=1.0,
            eos_id=None,
            generator=torch.Generator().manual_seed(s),
        ).run()
        out += r.gen_ids
    return out


def tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().sum() / 2)


@pytest.mark.parametrize("batch", [False, True])
def test_sampling_matches_the_verifier_distribution(batch):
    exact = exact_marginals(2, 3)
    got = empirical(lambda n: sampled(n, batch=batch), 3, 3000 if batch else 1500)
    for e, g in zip(exact, got, strict=True):  # fixed seeds: deterministic
        assert tv(e, g) < 0.05, (e, g)


def test_a_wrong_acceptance_rule_fails_the_same_check(monkeypatch):
    def always_accept(draft, q, p, generator=None, lengths=None):
        B, k = draft.shape
        bonus = spec_mod._draw(p[:, k], generator)
        return torch.full((B,), k), torch.cat([draft, bonus[:, None]], dim=1)

    monkeypatch.setattr(spec_mod, "accept_sampled", always_accept)
    exact = exact_marginals(2, 2)
    # batched: both paths call accept_sampled, and one batch of 1000 rows costs what ~40
    # single-row runs did (the rule's bias, not the path, is what the check must see)
    got = empirical(lambda n: sampled(n, batch=True), 2, 1000)
    assert max(tv(e, g) for e, g in zip(exact, got, strict=True)) > 0.1


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 2, None), (1.3, 3, 0.8)])
def test_sampling_with_top_k_and_top_p_matches_the_filtered_verifier(temperature, top_k, top_p):
    """The drafter's proposal is unfiltered, the verifier's distribution filtered as ``ar``
    filters it (temperature, then top-k, then top-p): the committed tokens follow the latter."""
    t = TABLE.clone()
    t[:, MASK] = float("-inf")
    step = torch.softmax(filter_logits(t / temperature, top_k, top_p), dim=-1)  # (V, V)
    runs, gen = 3000, 3
    r = SpeculativeRun(Markov(), FixedDrafter(), [[1, 2]] * runs, max_new_tokens=gen,
                       draft_length=2, temperature=temperature, top_k=top_k, top_p=top_p,
                       eos_id=None, generator=torch.Generator().manual_seed(0)).run()  # fmt: skip
    ids = torch.tensor(r.gen_ids)  # (runs, gen)
    dist = torch.zeros(V, dtype=torch.float64)
    dist[2] = 1.0
    for j in range(gen):
        dist = dist @ step
        got = torch.bincount(ids[:, j], minlength=V).double() / runs
        assert tv(dist, got) < 0.04, (j, got, dist)


# ---- refusals --------------------------------------------------------------------------------


def test_refusals():
    ar_model = loaded(transformer("causal", 0))
    diff = loaded(transformer("bidirectional", 1))
    cfg = SampleConfig(gen_length=8, decoder="speculative")
    with pytest.raises(UserError, match="needs a drafter"):
        api.start(ar_model, [5, 6], cfg)
    with pytest.raises(UserError, match="needs a causal"):
        api.start(diff, [5, 6], cfg, draft=diff)
    with pytest.raises(UserError, match="must be a diffusion model"):
        api.start(ar_model, [5, 6], cfg, draft=ar_model)
    for bad, match in ((dict(top_k=0), "top_k must be"), (dict(top_p=1.5), "top_p must be"),
                       (dict(temperature=float("nan")), "temperature must be")):
        with pytest.raises(UserError, match=match):  # the Python API too: one line
            SpeculativeRun(ar_model.model, diff.model, [5, 6], max_new_tokens=4, draft_length=2,
                           eos_id=None, **{"temperature": 1.0, **bad})  # fmt: skip
    # another tokenizer (same size or not): refused by the API, which sees both tokenizers
    bpe = train_bpe(["hello world the cat"] * 50, TOK.vocab_size + 10)
    other = Loaded(
        model=transformer("bidirectional", 1, vocab=bpe.vocab_size),
        tokenizer=bpe,
        config=transformer("bidirectional", 1, vocab=bpe.vocab_size).config,
        path=Path("runs/y"),
    )
    with pytest.raises(UserError, match="tokenizer differs"):
        api.start(ar_model, [5, 6], cfg, draft=other)
    with pytest.raises(UserError, match="vocabulary"):  # models alone: the sizes must agree
        SpeculativeRun(
            ar_model.model, other.model, [5, 6], max_new_tokens=4, draft_length=2, eos_id=None
        )
    with pytest.raises(UserError, match="draft_length must be >= 1"):
        SampleConfig(draft_length=0)
    bad = SampleConfig(decoder="speculative")
    bad.draft_length = 0
    with pytest.raises(UserError, match="draft_length must be >= 1"):
        choose_decoder(ModelFacts.of(ar_model.config), bad)
    with pytest.raises(UserError, match="applies to decoder 'speculative'"):
        api.start(ar_model, [5, 6], SampleConfig(decoder="ar"), draft=diff)
    for draft in (None, ar_model, other):  # each refusal is one line
        with pytest.raises(UserError) as e:
            api.start(ar_model, [5], cfg, draft=draft)
        assert "\n" not in str(e.value)


def test_cli_draft_flag_decodes_like_the_causal_model(tmp_path, capsys):
    """``unmask generate --model AR --draft DIFFUSION``: greedy output equals the AR
    checkpoint's own greedy output, and the decoder is reported; a drafter with another
    decoder asked for is a one-line error (exit 2)."""
    import json

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    def save(attention: str, seed: int) -> str:
        torch.manual_seed(seed)
        cfg = model_preset(
            "tiny",
            vocab_size=TOK.vocab_size,
            max_seq_len=64,
            attention=attention,
            init_std=0.3,
            **TOK.special_ids(),
        )
        return str(
            save_checkpoint(tmp_path / attention, model=Transformer(cfg).eval(), tokenizer=TOK)
        )

    ar, drafter = save("causal", 0), save("bidirectional", 1)
    argv = [
        "generate",
        "--model",
        ar,
        "--gen-length",
        "12",
        "--temperature",
        "0",
        "--json",
        "--no-live",
        "--device",
        "cpu",
        "The",
        "dog",
    ]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*argv, "--draft", drafter, "--draft-length", "4"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert (plain["decoder"], spec["decoder"]) == ("ar", "speculative")
    assert [r["tokens"] for r in spec["results"]] == [r["tokens"] for r in plain["results"]]
    # auto keeps both models as stored (a drafter runs a few positions a forward)
    assert (spec["dtype"], spec["drafter_dtype"]) == ("fp32", "fp32")
    assert "drafter_dtype" not in plain
    assert main([*argv, "--draft", drafter, "--decoder", "ar"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "applies to decoder 'speculative'" in err
    assert main([*argv, "--draft-length", "4"]) == 2  # without --draft it would do nothing
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--draft-length applies to decoder 'speculative'" in err
    assert main([*argv, "--draft-steps", "2"]) == 2
    assert "--draft-steps applies with --draft" in capsys.readouterr().err
