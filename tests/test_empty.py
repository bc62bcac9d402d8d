"""Trained variable-length gaps: the [EMPTY] token, its training transform and one-pass
infilling."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from unmask.config import SampleConfig, TrainConfig
from unmask.errors import UserError
from unmask.infill import Gap, InfillOptions, gap_automaton, infill
from unmask.objectives import EMPTY_MAX_RUN, insert_empty
from unmask.tokenizer import byte_tokenizer, with_empty_token, with_fim_tokens

TOK = with_empty_token(byte_tokenizer())
E = 260
V = TOK.vocab_size


def ids(text: str) -> list[int]:
    return TOK.encode(text)


# -- tokenizer ---------------------------------------------------------------------------------


def test_empty_token_is_appended_like_the_fim_sentinels():
    base = byte_tokenizer()
    assert base.empty_ids() == {} and TOK.empty_ids() == {"empty_id": E} and V == 261
    assert TOK.special_ids() == base.special_ids() and TOK.is_special(E)
    assert TOK.encode("[EMPTY]") == base.encode("[EMPTY]") and TOK.decode([E, *ids("a")]) == "a"
    assert with_empty_token(TOK) is TOK
    both = with_empty_token(with_fim_tokens(base))
    assert both.fim_ids() == {"fim_prefix_id": 260, "fim_suffix_id": 261, "fim_middle_id": 262}
    assert both.empty_ids() == {"empty_id": 263}


# -- the training transform -----------------------------------------------------------------------


def draw(x0, seed, rate=0.5, mask=None):
    return insert_empty(
        x0, torch.Generator().manual_seed(seed), rate=rate, empty_id=E, attention_mask=mask
    )


@pytest.mark.parametrize("seed", range(4))
def test_insert_empty_runs_keep_the_text_and_the_length(seed):
    x0 = torch.randint(4, 200, (16, 48), generator=torch.Generator().manual_seed(seed))
    out = draw(x0, seed)
    assert out.shape == x0.shape
    changed = 0
    for b in range(16):
        row, orig = out[b].tolist(), x0[b].tolist()
        k = row.count(E)
        if k == 0:
            assert row == orig
            continue
        changed += 1
        p = row.index(E)
        assert 1 <= k <= EMPTY_MAX_RUN and row[p : p + k] == [E] * k  # one contiguous run
        assert 1 <= p and p + k < 48  # real text on either side
        assert row[:p] + row[p + k :] == orig[: 48 - k]  # the text reads on; its end falls off
    assert 2 <= changed <= 14
    assert torch.equal(draw(x0, seed), out)  # same generator state, same rows
    assert not torch.equal(draw(x0, seed + 100), out)
    assert torch.equal(draw(x0, seed, rate=0.0), x0)


def test_insert_empty_leaves_padding_alone():
    x0 = torch.randint(4, 200, (32, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(32, 20, dtype=torch.bool)
    for b in range(32):
        mask[b, 20 - b % 7 * 3 :] = False  # right padding of 0..18 positions
        x0[b, ~mask[b]] = TOK.pad_id
    out = draw(x0, 1, rate=0.9, mask=mask)
    assert torch.equal(out[~mask], x0[~mask])
    for b in range(32):
        n = int(mask[b].sum())
        row = out[b, :n].tolist()
        k = row.count(E)
        if n < 3:
            assert k == 0
        elif k:
            p = row.index(E)
            assert 1 <= p and p + k < n and row[:p] + row[p + k :] == x0[b, : n - k].tolist()
    assert (out == E).any(dim=1).sum() > 16


def test_insert_empty_rate_bounds():
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        draw(torch.zeros(2, 8, dtype=torch.long), 0, rate=1.0)


# -- the automaton: text first, fillers after ------------------------------------------------------


def test_empty_tail_automaton():
    a = gap_automaton(Gap(), TOK).with_empty_tail(E, 2)
    x, y = ids("x")[0], ids("y")[0]
    assert a.accepts([x, y, E, E]) and a.accepts([x, y, x, x]) and a.accepts([x, y])
    assert not a.accepts([x, E, E, E])  # fewer than 2 tokens of text
    assert not a.accepts([x, y, E, x])  # text after a filler
    assert not a.accepts([x, ids("é")[0], E])  # the text part must still be well-formed UTF-8
    allowed = a.allowed([None, None, E, None])
    assert not allowed[0][E] and not allowed[1][E] and allowed[3][E] and not allowed[3][x]
    assert a.allowed([x, E, None, None]) is None
    assert a.feasible_lengths(4).tolist() == [False, False, True, True, True]
    digits = gap_automaton(Gap(regex=r"\d{2,3}"), TOK).with_empty_tail(E, 2)
    assert digits.accepts(ids("12") + [E, E]) and digits.accepts(ids("123") + [E])
    assert not digits.accepts(ids("1") + [E, E]) and not digits.accepts(ids("12a") + [E])


# -- infilling in one pass ------------------------------------------------------------------------


class Canvas:
    """Every position favours the token of ``want`` at that column (canvas-independent)."""

    def __init__(self, want: list[int], *, margin: float = 8.0, empty_id: int | None = E) -> None:
        self.want = torch.tensor(want)
        self.margin = margin
        self.config = SimpleNamespace(empty_id=empty_id, max_seq_len=64)
        self.calls = 0

    def __call__(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls += 1
        B, L = tokens.shape
        logits = torch.zeros(B, L, V)
        n = min(L, len(self.want))
        logits[:, torch.arange(n), self.want[:n]] = self.margin
        return logits


def test_one_pass_drops_the_trailing_fillers():
    model = Canvas(ids("The ") + ids("cat") + [E] * 3 + ids(" sat"))
    r = infill(model, TOK, "The [MASK:1-6] sat", SampleConfig(steps=6))
    assert r.text == "The cat sat" and r.gaps[0].tokens == ids("cat") and r.gaps[0].text == "cat"
    assert r.length_mode == "empty" and r.candidates == [] and r.tokens == ids("The cat sat")
    assert model.calls == 6 and r.nfe == 6  # one pass over 6 slots, no ELBO scoring
    # The same model, ELBO mode: every length filled and scored.
    elbo = infill(
        Canvas(ids("The ") + ids("cat") + [E] * 3 + ids(" sat")),
        TOK,
        "The [MASK:1-6] sat",
        SampleConfig(steps=6),
        options=InfillOptions(length_mode="elbo", elbo_samples=2),
    )
    assert elbo.length_mode == "elbo" and len(elbo.candidates) == 6 and E not in elbo.tokens


def test_fixed_gaps_never_hold_empty_and_auto_needs_the_token():
    model = Canvas([E] * 20)
    r = infill(model, TOK, "a[MASK:3]b", SampleConfig(steps=3))
    assert len(r.gaps[0].tokens) == 3 and E not in r.tokens and r.length_mode is None
    plain = Canvas(ids("The cat") + [TOK.pad_id] * 5 + ids(" sat"), empty_id=None)
    r2 = infill(plain, TOK, "The [MASK:1-4] sat", options=InfillOptions(elbo_samples=2))
    assert r2.length_mode == "elbo"
    with pytest.raises(UserError, match="trained with --empty-rate"):
        infill(plain, TOK, "The [MASK:1-4] sat", options=InfillOptions(length_mode="empty"))
    with pytest.raises(UserError, match="unknown length mode"):
        infill(model, TOK, "The [MASK:1-4] sat", options=InfillOptions(length_mode="guess"))


def test_free_generation_never_proposes_empty():
    from unmask.sampling import generate

    # a model that wants [EMPTY] at every generated column: generate must not write it
    model = Canvas(ids("ab") + [E] * 6, margin=20.0)
    for temperature in (0.0, 1.0):
        out = generate(model, [ids("ab")], SampleConfig(gen_length=6, steps=6,
                                                       temperature=temperature, seed=0),
                       mask_id=TOK.mask_id, pad_id=TOK.pad_id, eos_id=TOK.eos_id)
        tokens = getattr(out, "tokens", out)
        assert E not in tokens[0].tolist() and TOK.mask_id not in tokens[0].tolist()
    # the same model fills an infill gap's unused slots with it (and drops them)
    r = infill(Canvas(ids("ab") + [E] * 4 + ids("c"), margin=20.0), TOK, "ab[MASK:1-4]c",
               SampleConfig(steps=4))
    assert len(r.gaps[0].tokens) == 1 and r.text.startswith("ab") and r.text.endswith("c")


@pytest.mark.parametrize("seed", range(6))
def test_fillers_stay_trailing_and_the_minimum_holds_whatever_the_model(seed):
    g = torch.Generator().manual_seed(seed)
    want = torch.randint(4, 200, (40,), generator=g)
    want[torch.rand(40, generator=g) < 0.6] = E  # fillers everywhere, also mid-gap and in front
    template = [
        "<",
        Gap(min_len=2, max_len=7),
        "|",
        Gap(min_len=1, max_len=4, allowed="digits"),
        ">",
    ]
    canvases: list[list[int]] = []
    r = infill(Canvas(want.tolist(), margin=3.0 + seed), TOK, template,
               SampleConfig(steps=1 + seed % 3, temperature=float(seed % 2), seed=seed),
               step_callback=lambda step, tokens: canvases.append(tokens[0].tolist()))
    a, b = r.gaps
    assert 2 <= len(a.tokens) <= 7 and 1 <= len(b.tokens) <= 4 and E not in r.tokens
    assert b.text.isdigit() and r.text == f"<{a.text}|{b.text}>" and TOK.decode(r.tokens) == r.text
    final = canvases[-1]  # one pass over 7 + 4 slots: "<" a a a a a a a "|" b b b b ">"
    assert len(final) == 14
    n_a, n_b = len(a.tokens), len(b.tokens)
    assert final[1 : 8] == a.tokens + [E] * (7 - n_a) and final[9:13] == b.tokens + [E] * (4 - n_b)


# -- training and the CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_run(tmp_path_factory):
    from unmask.data import prepare
    from unmask.train import train

    root = tmp_path_factory.mktemp("empty")
    (root / "a.txt").write_text("the lord said unto moses go down and speak to the people.\n" * 200)
    prepare([root / "a.txt"], root / "data", tokenizer="byte", val_fraction=0.1, progress=False)
    cfg = TrainConfig(
        data=str(root / "data"),
        out=str(root / "run"),
        preset="tiny",
        objective="mdlm",
        empty_rate=0.5,
        seq_len=32,
        batch_size=4,
        steps=3,
        warmup=1,
        eval_every=0,
        eval_batches=1,
        save_every=0,
        log_every=1,
        seed=0,
    )
    return cfg, train(cfg, progress=False)


def test_training_stores_the_empty_token(empty_run):
    from unmask.checkpoint import load

    _, run = empty_run
    m = load(run)
    assert (
        m.config.empty_id == E
        and m.config.vocab_size == V
        and m.tokenizer.empty_ids() == {"empty_id": E}
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in records if "loss" in r)  # finite, not NaN


def test_train_validates_empty_rate(empty_run, tmp_path):
    from unmask.train import train

    cfg, _ = empty_run
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        train(replace(cfg, out=str(tmp_path / "a"), empty_rate=1.0), progress=False)
    with pytest.raises(UserError, match="objective 'mdlm'"):
        train(replace(cfg, out=str(tmp_path / "b"), objective="ar"), progress=False)


def test_init_grows_the_vocabulary_for_empty(empty_run, tmp_path):
    """--init from a model without [EMPTY] continues with --empty-rate: the token is appended,
    the embedding and head grow by one row, every other weight is the init's."""
    from unmask.checkpoint import load
    from unmask.model import Transformer
    from unmask.objectives.spec import objective_spec
    from unmask.train import _init_state, _init_vocabulary, train

    cfg, _ = empty_run
    plain = train(replace(cfg, out=str(tmp_path / "plain"), empty_rate=0.0, steps=2),
                  progress=False)
    base = load(plain)
    assert base.config.empty_id is None and base.config.vocab_size == V - 1
    grown_cfg = replace(cfg, out=str(tmp_path / "grown"), init=str(plain), steps=0)
    spec = objective_spec("mdlm")
    tok, model_cfg = _init_vocabulary(spec, base, base.tokenizer, grown_cfg)
    assert tok.empty_ids() == {"empty_id": E} and model_cfg.empty_id == E
    assert model_cfg.vocab_size == V and replace(model_cfg, vocab_size=V - 1, empty_id=None) \
        == base.config
    torch.manual_seed(0)
    model = Transformer(model_cfg)
    state = _init_state(model, base, spec, grown_cfg)
    theirs = base.model.state_dict()
    for k, v in state.items():
        if v.shape == theirs[k].shape:
            assert torch.equal(v, theirs[k]), k
        else:  # the appended row is the model's own initialisation
            fresh = model.state_dict()[k]
            assert torch.equal(v[: V - 1], theirs[k]) and torch.equal(v[V - 1:], fresh[V - 1:])
    run = train(replace(grown_cfg, steps=2), progress=False)
    m = load(run)
    assert m.config.empty_id == E and m.tokenizer.empty_ids() == {"empty_id": E}
    out = infill(m.model, m.tokenizer, "the lord [MASK:1-6] unto moses", SampleConfig(steps=6))
    assert out.length_mode == "empty" and 1 <= len(out.gaps[0].tokens) <= 6


def test_init_refuses_data_of_another_tokenizer(empty_run, tmp_path):
    from unmask.data import prepare
    from unmask.train import train

    cfg, run = empty_run
    (tmp_path / "b.txt").write_text("another corpus with another vocabulary entirely.\n" * 100)
    prepare([tmp_path / "b.txt"], tmp_path / "bpe", tokenizer="bpe", vocab_size=300,
            val_fraction=0.0, progress=False)
    with pytest.raises(UserError, match="its tokenizer differs from the dataset's"):
        train(replace(cfg, data=str(tmp_path / "bpe"), out=str(tmp_path / "o"), init=str(run)),
              progress=False)


def test_cli_length_modes(empty_run, capsys):
    from unmask.cli import main

    _, run = empty_run
    assert (
        main(
            [
                "infill",
                "--model",
                str(run),
                "--json",
                "--steps",
                "6",
                "the lord [MASK:1-6] unto moses",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (
        out["length_mode"] == "empty"
        and out["candidates"] == []
        and 1 <= len(out["gaps"][0]["tokens"]) <= 6
    )
    assert (
        E not in out["tokens"]
        and out["text"].startswith("the lord ")
        and out["text"].endswith(" unto moses")
    )
    assert (
        main(
            [
                "infill",
                "--model",
                str(run),
                "--json",
                "--length-mode",
                "elbo",
                "--elbo-samples",
                "2",
                "the lord [MASK:1-3] unto moses",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["length_mode"] == "elbo" and len(out["candidates"]) == 3
