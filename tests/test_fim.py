"""Autoregressive fill-in-the-middle: PSM rearrangement, sentinels, training wiring, decoding."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from unmask.checkpoint import load
from unmask.cli import main
from unmask.config import ModelConfig, TrainConfig, model_preset
from unmask.errors import UserError
from unmask.infill import fill_middle, fill_middle_ids, infill_causal
from unmask.objectives import FIM_EXTRA, ObjectiveOptions, ar, fim_rearrange
from unmask.schedules import LinearSchedule
from unmask.tokenizer import byte_tokenizer, with_fim_tokens
from unmask.train import train

PRE, SUF, MID, EOS = 260, 261, 262, 2
V = 263


def fim_cfg(**kw):
    return model_preset(
        "tiny",
        vocab_size=V,
        attention="causal",
        fim_prefix_id=PRE,
        fim_suffix_id=SUF,
        fim_middle_id=MID,
        **kw,
    )


def opts(rate=0.0):
    return ObjectiveOptions(schedule=LinearSchedule(1e-3), fim_rate=rate)


def rearrange(x0, seed, rate=1.0):
    return fim_rearrange(
        x0,
        torch.Generator().manual_seed(seed),
        rate=rate,
        prefix_id=PRE,
        suffix_id=SUF,
        middle_id=MID,
        eos_id=EOS,
    )


@pytest.mark.parametrize("seed", range(5))
def test_rearrangement_is_psm_permutation_plus_sentinels(seed):
    B, L = 16, 24
    x0 = torch.arange(10, 10 + L).repeat(B, 1)  # distinct tokens: positions are recoverable
    out = rearrange(x0, seed)
    n = L - FIM_EXTRA
    assert out.shape == (B, L)
    for row in out.tolist():
        # [PRE] x[:i] [SUF] x[j:n] [MID] x[i:j] [EOS]
        assert row[0] == PRE and row[-1] == EOS
        s, m = row.index(SUF), row.index(MID)
        assert 0 < s < m < L - 1
        prefix, suffix, middle = row[1:s], row[s + 1 : m], row[m + 1 : -1]
        i, j = len(prefix), len(prefix) + len(middle)
        assert prefix == list(range(10, 10 + i))
        assert middle == list(range(10 + i, 10 + j))
        assert suffix == list(range(10 + j, 10 + n))
        assert sorted(prefix + middle + suffix) == x0[0, :n].tolist()


def test_rate_selects_rows_and_is_deterministic():
    x0 = torch.randint(4, 200, (400, 16))
    out = rearrange(x0, 3, rate=0.5)
    changed = (out != x0).any(dim=1)
    assert torch.equal(changed, out[:, 0] == PRE)
    assert 0.4 < changed.float().mean() < 0.6
    assert torch.equal(out, rearrange(x0, 3, rate=0.5))
    assert not torch.equal(out, rearrange(x0, 4, rate=0.5))
    assert torch.equal(rearrange(x0, 3, rate=0.0), x0)
    with pytest.raises(UserError, match="at least 5"):
        rearrange(x0[:, :4], 0)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        rearrange(x0, 0, rate=1.5)


class Spy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, attention_mask=None):
        self.seen.append(x.clone())
        return torch.randn(
            *x.shape, V, generator=torch.Generator().manual_seed(0), requires_grad=True
        )


def test_fim_rate_zero_leaves_ar_unchanged():
    x0 = torch.randint(4, 200, (4, 12))
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    a, b = Spy(), Spy()
    pa = ar(a, fim_cfg(), x0, attention_mask=None, generator=gen, options=opts(0.0))
    pb = ar(b, fim_cfg(), x0, attention_mask=None, generator=torch.Generator(),
            options=ObjectiveOptions(schedule=LinearSchedule(1e-3)))
    assert torch.equal(a.seen[0], x0) and torch.equal(gen.get_state(), state)  # no draws at all
    assert torch.equal(pa.loss_sum, pb.loss_sum) and torch.equal(pa.n_tokens, pb.n_tokens)
    # With FIM the model sees rearranged rows and the same number of targets.
    c = Spy()
    pc = ar(
        c,
        fim_cfg(),
        x0,
        attention_mask=None,
        generator=torch.Generator().manual_seed(5),
        options=opts(1.0),
    )
    assert torch.equal(c.seen[0][:, 0], torch.full((4,), PRE)) and int(pc.n_tokens) == int(
        pa.n_tokens
    )
    with pytest.raises(UserError, match="fim_prefix_id"):
        ar(Spy(), model_preset("tiny", vocab_size=V, attention="causal"), x0, attention_mask=None,
           generator=torch.Generator(), options=opts(0.5))


def test_sentinels_appended_to_tokenizer():
    tok = byte_tokenizer()
    assert tok.fim_ids() == {}
    fim = with_fim_tokens(tok)
    assert fim.fim_ids() == {"fim_prefix_id": PRE, "fim_suffix_id": SUF, "fim_middle_id": MID}
    assert fim.vocab_size == V and fim.special_ids() == tok.special_ids()
    # Text never becomes a sentinel.
    assert fim.encode("[FIM_PREFIX]é") == tok.encode("[FIM_PREFIX]é")
    assert fim.decode([PRE, 4 + ord("a"), MID]) == "a"
    assert with_fim_tokens(fim) is fim
    with pytest.raises(UserError, match="all of"):
        ModelConfig(vocab_size=V, fim_prefix_id=PRE)


class FimOracle:
    """A causal test double that knows one document: after a well-formed PSM prompt whose
    prefix and suffix frame the document, it predicts the true middle, then EOS."""

    supports_kv_cache = True

    def __init__(self, doc, max_seq_len=64, tok=None):
        self.doc = list(doc)
        fim = (
            tok.fim_ids()
            if tok is not None
            else dict(fim_prefix_id=PRE, fim_suffix_id=SUF, fim_middle_id=MID)
        )
        self.pre, self.suf, self.mid = (
            fim["fim_prefix_id"],
            fim["fim_suffix_id"],
            fim["fim_middle_id"],
        )
        self.vocab = tok.vocab_size if tok is not None else V
        self.config = SimpleNamespace(
            attention="causal",
            max_seq_len=max_seq_len,
            mask_id=0,
            pad_id=1,
            eos_id=EOS,
            bos_id=3,
            **fim,
        )
        self.buf: list[int] = []

    def _next(self, seq):
        if seq[0] != self.pre or self.suf not in seq or self.mid not in seq:
            return 4
        s, m = seq.index(self.suf), seq.index(self.mid)
        prefix, suffix, written = seq[1:s], seq[s + 1 : m], seq[m + 1 :]
        if self.doc[: len(prefix)] != prefix or (suffix and self.doc[-len(suffix) :] != suffix):
            return 4
        middle = self.doc[len(prefix) : len(self.doc) - len(suffix)] + [EOS]
        k = len(written)
        return middle[k] if k < len(middle) else 4

    def __call__(self, tokens, attention_mask=None, *, cache=None, start=0):
        del self.buf[start:]
        self.buf.extend(tokens[0].tolist())
        logits = torch.zeros(1, tokens.shape[1], self.vocab)
        for p in range(tokens.shape[1]):
            logits[0, p, self._next(self.buf[: start + p + 1])] = 10.0
        return logits


def test_fill_middle_with_oracle_returns_true_middle():
    tok = with_fim_tokens(byte_tokenizer())
    doc = "In the beginning God created the heavens."
    model = FimOracle(tok.encode(doc))
    r = fill_middle(model, tok, "In the beginning ", " the heavens.", max_new_tokens=20)
    assert (r.middle, r.ended, r.text) == ("God created", True, doc)
    assert r.nfe == len("God created") + 1  # prompt + one position per token, the last gives EOS
    short = fill_middle(model, tok, "In the beginning ", " the heavens.", max_new_tokens=5)
    assert (short.middle, short.ended) == ("God c", False)
    # Exactly n tokens: EOS is banned before min_new_tokens.
    exact = fill_middle(
        model, tok, "In the beginning ", " the heavens.", max_new_tokens=13, min_new_tokens=13
    )
    assert len(exact.tokens) == 13 and exact.middle.startswith("God created") and not exact.ended
    ids = fill_middle_ids(model, tok.encode("In the "), tok.encode("."), max_new_tokens=40)
    assert tok.decode(ids.tokens) == "beginning God created the heavens"
    with pytest.raises(UserError, match="max_seq_len"):
        fill_middle(model, tok, "x" * 50, "y" * 10, max_new_tokens=8)
    with pytest.raises(UserError, match="min_new_tokens"):
        fill_middle(model, tok, "a", "b", max_new_tokens=2, min_new_tokens=3)
    model.config.fim_prefix_id = None
    with pytest.raises(UserError, match="fim-rate"):
        fill_middle(model, tok, "a", "b", max_new_tokens=2)


def test_infill_causal_templates():
    tok = with_fim_tokens(byte_tokenizer())
    model = FimOracle(tok.encode("The cat sat on the mat."))
    r = infill_causal(model, tok, "The [MASK:1-8] sat on the mat.")
    assert r.text == "The cat sat on the mat." and r.gaps[0].text == "cat" and r.gaps[0].start == 4
    fixed = infill_causal(model, tok, "The cat sat on the [MASK:5].").gaps[0]
    assert len(fixed.tokens) == 5 and fixed.text.startswith("mat")
    with pytest.raises(UserError, match="exactly one gap"):
        infill_causal(model, tok, "The [MASK] sat on the [MASK].")


def test_infill_causal_moves_the_space_before_the_gap_with_bpe():
    from unmask.tokenizer import train_bpe

    tok = with_fim_tokens(
        train_bpe(["cat sat. The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
    )
    model = FimOracle(tok.encode("The cat sat on the mat."), tok=tok)
    # The middle is the one token " cat".
    r = infill_causal(model, tok, "The [MASK:1-3] sat on the mat.")
    assert r.text == "The cat sat on the mat." and r.gaps[0].text == "cat" and r.gaps[0].start == 4
    assert len(r.gaps[0].tokens) == 1 and tok.decode(r.tokens) == r.text
    # "The " is not how the doc starts.
    locked = infill_causal(model, tok, r"The\ [MASK:1-3] sat on the mat.")
    assert locked.gaps[0].text != "cat" and locked.text.startswith("The ")


@pytest.fixture(scope="module")
def fim_run(tmp_path_factory):
    from unmask.data import prepare

    root = tmp_path_factory.mktemp("fim")
    (root / "a.txt").write_text("the lord said unto moses go down and speak to the people.\n" * 300)
    prepare([root / "a.txt"], root / "data", tokenizer="byte", val_fraction=0.1, progress=False)
    cfg = TrainConfig(
        data=str(root / "data"),
        out=str(root / "run"),
        preset="tiny",
        objective="ar",
        fim_rate=0.5,
        seq_len=32,
        batch_size=4,
        steps=4,
        warmup=1,
        eval_every=0,
        eval_batches=1,
        save_every=0,
        log_every=1,
        seed=3,
    )
    return cfg, train(cfg, progress=False)


def test_fim_training_saves_sentinels_and_fill_middle_runs(fim_run):
    cfg, run = fim_run
    m = load(run)
    assert m.config.attention == "causal" and m.config.vocab_size == V
    assert m.tokenizer.fim_ids() == {
        "fim_prefix_id": PRE,
        "fim_suffix_id": SUF,
        "fim_middle_id": MID,
    }
    assert (m.config.fim_prefix_id, m.config.fim_suffix_id, m.config.fim_middle_id) == (
        PRE,
        SUF,
        MID,
    )
    r = fill_middle(m.model, m.tokenizer, "the lord said ", " moses", max_new_tokens=6)
    assert len(r.tokens) <= 6 and all(t < 260 and t not in (0, 1, 3) for t in r.tokens)
    assert r.text.startswith("the lord said ") and r.text.endswith(" moses")


def test_fim_resume_equals_uninterrupted(fim_run, tmp_path):
    from dataclasses import replace

    cfg, full = fim_run
    part = replace(cfg, out=str(tmp_path / "part"), steps=2)
    train(part, progress=False)
    train(replace(part, steps=4), resume=True, progress=False)
    wa = load_file(str(full / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "checkpoint" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_init_from_a_plain_ar_model_grows_the_sentinels(fim_run, tmp_path):
    """An AR checkpoint without sentinels continues with --fim-rate: the three are appended
    after its vocabulary, and fill-in-the-middle works on the result."""
    from dataclasses import replace

    cfg, _ = fim_run
    plain = train(replace(cfg, out=str(tmp_path / "plain"), fim_rate=0.0, steps=2),
                  progress=False)
    assert load(plain).config.vocab_size == 260 and not load(plain).config.has_fim
    run = train(replace(cfg, out=str(tmp_path / "fim"), init=str(plain), steps=2), progress=False)
    m = load(run)
    assert m.config.vocab_size == V and m.tokenizer.fim_ids()["fim_middle_id"] == MID
    assert m.config.fim_middle_id == MID
    r = fill_middle(m.model, m.tokenizer, "the lord said ", " moses", max_new_tokens=4)
    assert r.text.startswith("the lord said ") and r.text.endswith(" moses")


def test_continuing_a_fim_model_without_fim_keeps_its_sentinels_through_resume(fim_run, tmp_path):
    from dataclasses import replace

    cfg, run = fim_run
    part = replace(cfg, out=str(tmp_path / "plain-ar"), init=str(run), fim_rate=0.0, steps=1)
    train(part, progress=False)
    assert load(tmp_path / "plain-ar").tokenizer.fim_ids()["fim_middle_id"] == MID
    train(replace(part, steps=2), resume=True, progress=False)
    m = load(tmp_path / "plain-ar")
    assert m.tokenizer.vocab_size == V and m.tokenizer.fim_ids()["fim_middle_id"] == MID


def test_train_rejects_fim_without_ar(fim_run, tmp_path):
    from dataclasses import replace

    cfg, _ = fim_run
    with pytest.raises(UserError, match="objective 'ar'"):
        train(replace(cfg, out=str(tmp_path / "x"), objective="mdlm"), progress=False)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        train(replace(cfg, out=str(tmp_path / "y"), fim_rate=2.0), progress=False)


def test_cli_infill_on_causal_checkpoints(fim_run, tmp_path, capsys):
    _, run = fim_run
    assert main(["infill", "--model", str(run), "--json", "the lord [MASK:4] unto moses"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        len(out["gaps"]) == 1
        and len(out["gaps"][0]["tokens"]) == 4
        and out["text"].startswith("the lord ")
    )
    assert main(["infill", "--model", str(run), "the [MASK] said [MASK]"]) == 2
    assert "exactly one gap" in capsys.readouterr().err


def test_infill_on_a_causal_checkpoint_refuses_length_options(fim_run, capsys):
    """The model ends its one gap itself, so an option of the ELBO length search does nothing
    there: one line (it was silently dropped), on the API and the CLI."""
    from unmask import api

    _, run = fim_run
    loaded = load(run)
    with pytest.raises(UserError, match=r"^length_score chooses the length of a variable-length "
                       r"gap; a causal \(AR-FIM\) model ends its one gap itself"):
        api.infill(loaded, "the lord [MASK:1-4] unto", options={"length_score": "context"})
    assert api.infill(loaded, "the lord [MASK:1-4] unto", options={}).text.startswith("the lord")
    argv = ["infill", "--model", str(run), "--max-candidates", "2", "the lord [MASK:1-4] unto"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-candidates chooses the length" in err[0]


def test_server_infill_on_causal_checkpoints_equals_cli(fim_run, capsys):
    """`/v1/infill` on an AR-FIM checkpoint fills its one gap as `unmask infill` does (same
    tokens at the same seed); several gaps are a 400 naming the limit, never a crash."""
    from fastapi.testclient import TestClient

    from unmask.server.app import create_app

    _, run = fim_run
    template = "the lord [MASK:4] unto moses"
    assert main(["infill", "--model", str(run), "--json", "--seed", "5", template]) == 0
    cli = json.loads(capsys.readouterr().out)
    with TestClient(create_app(str(run))) as c:
        r = c.post("/v1/infill", json={"template": template, "seed": 5})
        assert r.status_code == 200, r.text
        assert r.json()["text"] == cli["text"] and r.json()["gaps"][0]["text"] == cli["gaps"][0][
            "text"
        ]
        r = c.post("/v1/infill", json={"template": "the [MASK] said [MASK]"})
        assert r.status_code == 400 and "exactly one gap" in r.json()["error"]["message"]
        r = c.post("/v1/infill", json={"template": template, "stream": True})
        assert r.status_code == 200 and r.text.rstrip().endswith("[DONE]")


def test_infill_causal_follows_the_spacing_rules_of_the_diffusion_path():
    """At offset 0 the virtual space is dropped (the middle was " cat": the text began with
    a space); after a space the gap took, an unconstrained middle starts with a word, not
    closing punctuation (the middle was ",": "The cat , sat")."""
    from unmask.config import SampleConfig
    from unmask.tokenizer import train_bpe

    tok = with_fim_tokens(
        train_bpe(["cat sat. The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
    )
    model = FimOracle(tok.encode(" cat sat on the mat."), tok=tok)
    r = infill_causal(model, tok, "[MASK:1-3] sat on the mat.")
    assert r.text == "cat sat on the mat." and r.gaps[0].text == "cat"
    assert (r.gaps[0].start, r.gaps[0].end) == (0, 3) and r.gaps[0].tokens == tok.encode("cat")
    assert tok.decode(r.tokens) == r.text
    model = FimOracle(tok.encode("The cat, sat on the mat."), tok=tok)
    r = infill_causal(model, tok, "The cat [MASK:1-2] on the mat.", SampleConfig(temperature=0))
    gap = r.gaps[0].text
    assert gap and gap[0] not in " \n,.;:!?)]}'’”" and gap.endswith(" sat")
    assert r.text == f"The cat {gap} on the mat." and tok.decode(r.tokens) == r.text
    # a gap with no space before it is filled freely
    assert infill_causal(model, tok, "The cat[MASK:1-2] on the mat.").gaps[0].text == ", sat"


def test_infill_causal_takes_the_gap_lengths_of_the_diffusion_path():
    """A gap's lengths are the plan's, as on the diffusion path: ``[MASK:0-b]`` may stay empty
    (it was refused: "1 <= min_len"), and a bare ``[MASK]`` with a regex or choices takes the
    lengths its constraint allows (it was one token: "Call 9 now.")."""
    from unmask.infill import Gap

    tok = with_fim_tokens(byte_tokenizer())
    model = FimOracle(tok.encode("The cat sat on the mat."))
    r = infill_causal(model, tok, "The cat[MASK:0-3] sat on the mat.")
    assert r.text == "The cat sat on the mat." and r.gaps[0].text == "" and r.gaps[0].tokens == []
    assert r.nfe == 1  # the prompt, whose last position wrote EOS
    model = FimOracle(tok.encode("Call 911 now."))
    digits = infill_causal(model, tok, ["Call ", Gap(regex=r"\d{1,3}"), " now."])
    assert digits.text == "Call 911 now." and digits.gaps[0].text == "911"
    picked = infill_causal(model, tok, ["Call ", Gap(choices=["112", "911"]), " now."])
    assert picked.text == "Call 911 now."


def test_a_constrained_middle_over_the_context_is_refused_as_a_text_not_a_form():
    """The guided middle was refused with the form filler's words ("use fewer or shorter
    holes"); it is the text that is too long, as for an unconstrained middle."""
    from unmask.infill import Gap

    tok = with_fim_tokens(byte_tokenizer())
    model = FimOracle(tok.encode("The cat sat on the mat."), max_seq_len=40)
    for gap in (Gap(min_len=1, max_len=8), Gap(min_len=1, max_len=8, regex="a+")):
        with pytest.raises(UserError, match=r"^prefix \(30 tokens\).*the text or the middle$"):
            infill_causal(model, tok, ["x" * 30, gap, "y" * 5])
    # one token shorter fits: the check is the decoder's own bound, not a stricter one
    model = FimOracle(tok.encode("x" * 28 + "aa" + "y" * 5), max_seq_len=40)
    r = infill_causal(model, tok, ["x" * 28, Gap(min_len=1, max_len=3, regex="a+"), "y" * 5])
    assert r.gaps[0].text == "aa"


def test_a_middle_over_the_context_is_refused_before_its_gap_is_compiled(monkeypatch):
    """``[MASK:1-100000]`` compiled the gap's automaton and its feasible lengths up to 100000
    (3 s on the byte tokenizer) before the context check refused it; a constrained gap's
    longest text is its constraint's, so it is still planned first."""
    import unmask.infill.fim as fim
    from unmask.infill import Gap

    tok = with_fim_tokens(byte_tokenizer())
    model = FimOracle(tok.encode("Call 911 now."))
    planned = []
    real = fim.plan_template
    monkeypatch.setattr(fim, "plan_template", lambda *a, **k: planned.append(1) or real(*a, **k))
    for template in ("Call [MASK:1-100000] now.", "Call [MASK:100000] now.", "[MASK:1-99999]"):
        with pytest.raises(UserError, match=r"up to \d+ middle tokens exceed .* \(64\)"):
            infill_causal(model, tok, template)
    assert planned == []
    r = infill_causal(model, tok, ["Call ", Gap(max_len=1000, regex=r"\d{1,3}"), " now."])
    assert r.text == "Call 911 now." and planned == [1]
