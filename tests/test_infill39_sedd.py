"""``unmask infill`` on a time-conditioned SEDD checkpoint (``sigma_input: given``, the
``--model-set time_conditioning=true`` SEDD run): its forward needs the noise level, which the
masked commit loop cannot give, so every template was refused ("sample it with decoder
'sedd' (a [MASK] in a generate prompt is filled too)") although that decoder fills a
template's masks with its given text kept. It now fills fixed-length plain gaps with the
checkpoint's own decoder, as an embed-diffusion checkpoint's (CLI = API = server)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import unmask
from unmask import api
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.model import Transformer
from unmask.objectives.score_entropy import sedd_model_config
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
TEMPLATE = "the cat [MASK:3] on the [MASK]."


@pytest.fixture(scope="module")
def sedd_time(tmp_path_factory) -> str:
    base = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, init_std=0.3,
                        objective="sedd", time_conditioning=True, sigma_input="given",
                        **TOK.special_ids())  # fmt: skip
    cfg = sedd_model_config(base, TrainConfig(objective="sedd"))  # what `unmask train` writes
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sedd-time")
    return str(save_checkpoint(folder, model=Transformer(cfg).eval(), tokenizer=TOK))


def _infill(capsys, ckpt: str, *flags: str) -> tuple[int, dict | None, str]:
    rc = main(["infill", "--model", ckpt, TEMPLATE, "--json", "--no-live", *flags])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


def test_a_time_conditioned_sedd_checkpoint_fills_a_template(sedd_time, capsys):
    rc, out, err = _infill(capsys, sedd_time, "--seed", "3")
    assert rc == 0, err
    assert [len(g["tokens"]) for g in out["gaps"]] == [3, 1]
    text, (g1, g2) = out["text"], out["gaps"]
    # the given text is kept, each gap sits where the template put it
    assert text == f"the cat {g1['text']} on the {g2['text']}."
    assert out["nfe"] <= 4 and out["config"]["seed"] == 3  # steps capped at the 4 masks
    again = _infill(capsys, sedd_time, "--seed", "3")[1]
    assert again["text"] == text
    drawn = _infill(capsys, sedd_time)[1]  # SEDD's reverse process draws: a seed is reported
    assert isinstance(drawn["config"]["seed"], int)
    assert _infill(capsys, sedd_time, "--seed", str(drawn["config"]["seed"]))[1]["text"] == (
        drawn["text"])


def test_the_model_is_given_the_noise_levels_of_its_own_schedule(sedd_time):
    loaded = unmask.load(sedd_time)
    seen: list[torch.Tensor | None] = []
    forward = loaded.model.forward

    def recording(*a, **kw):
        seen.append(kw.get("sigma"))
        return forward(*a, **kw)

    loaded.model.forward = recording  # type: ignore[method-assign]
    res = api.infill(loaded, "ab[MASK:2]cd", config=SampleConfig(steps=2, seed=0))
    assert res.text.startswith("ab") and res.text.endswith("cd") and res.nfe == 2
    # the log-linear noise (eps 1e-3): sigma(1) = -log(1e-3), then sigma(1/2)
    assert [float(s[0]) for s in seen] == pytest.approx([6.90776, 0.69215], abs=1e-5)


@pytest.mark.parametrize("template, flags, said", [
    ("the [MASK:1-3] cat", [], "has a variable length"),
    (TEMPLATE, ["--regex", "1=abc"], "constrained gaps"),
    (TEMPLATE, ["--block-length", "2"], "--block-length"),
    (TEMPLATE, ["--temperature", "1"], "--temperature does not apply to decoder 'sedd'"),
    (TEMPLATE, ["--length-mode", "elbo"], "fills fixed-length gaps only"),
])  # fmt: skip
def test_what_it_cannot_do_is_one_line(sedd_time, capsys, template, flags, said):
    rc = main(["infill", "--model", sedd_time, template, "--no-live", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and said in err and len(err.strip().splitlines()) == 1, err


def test_sedd_sampler_is_read_there(sedd_time, capsys, monkeypatch):
    """``--sedd-sampler`` is refused by infill where the commit loop fills the gaps (it
    changed nothing there); here SEDD's reverse process steps with the one asked for."""
    from unmask.sampling import sedd

    calls: list[str] = []
    for name, step in list(sedd.STEPPERS.items()):
        monkeypatch.setitem(sedd.STEPPERS, name,
                            lambda *a, _s=step, _n=name: calls.append(_n) or _s(*a))
    for sampler in ("euler", "analytic"):
        calls.clear()
        rc, out, err = _infill(capsys, sedd_time, "--seed", "0", "--sedd-sampler", sampler,
                               "--steps", "3")
        assert rc == 0, err
        assert calls and set(calls) == {sampler} and out["nfe"] == 3, calls


def test_the_server_fills_it_as_the_library(sedd_time):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    loaded = unmask.load(sedd_time)
    want = api.infill(loaded, TEMPLATE, config={"seed": 7}).text
    with TestClient(create_app(loaded)) as c:
        r = c.post("/v1/infill", json={"template": TEMPLATE, "seed": 7})
        drawn = c.post("/v1/infill", json={"template": TEMPLATE}).json()  # temperature 0
        again = c.post("/v1/infill", json={"template": TEMPLATE, "seed": drawn["seed"]})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == want
    # SEDD's reverse process draws at any temperature: a seed is drawn and reported, as
    # `unmask infill --json` reports it, and sending it back repeats the text
    assert isinstance(drawn["seed"], int) and again.json()["text"] == drawn["text"]


PENALTIES = [("repetition_penalty", 1.3), ("presence_penalty", 0.5), ("frequency_penalty", 0.5),
             ("no_repeat_ngram_size", 2)]  # fmt: skip


@pytest.mark.parametrize("name, value", PENALTIES)
def test_infill_refuses_penalties_a_checkpoints_own_decoder_cannot_apply(sedd_time, name,
                                                                        value, capsys):
    """The penalties act on logits: ``unmask generate`` refuses them on an embed-diffusion
    checkpoint (and on decoder 'sedd'), but ``unmask infill`` there ran and ignored them
    (the same text with ``--repetition-penalty 1.3``). Now one line, on both own decoders,
    CLI and API alike."""
    from server_helpers import loaded

    from unmask.errors import UserError
    from unmask.objectives import objective_spec

    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    cfg = objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=32))
    torch.manual_seed(0)
    embed = loaded(Transformer(cfg).eval())
    assert api.infill(embed, TEMPLATE, config={"seed": 0}).text  # runs without it
    with pytest.raises(UserError, match=f"{name} applies to the decoders that sample from "
                                        "logits .*not to decoder 'embed-diffusion'"):
        api.infill(embed, TEMPLATE, config={"seed": 0, name: value})
    flag = "--" + name.replace("_", "-")
    assert main(["infill", "--model", sedd_time, TEMPLATE, "--no-live", flag, str(value)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} applies to the decoders" in err and "decoder 'sedd'" in err, err
    assert len(err.strip().splitlines()) == 1


class _NoMask:
    """A canvas constraint that rules out only [MASK] (never a token of a gap: the stay of a
    masked position is its own entry, which the step sets), as ``restrict_logits`` does for
    infill's gap automata: the best allowed value shifted to 0 (softmax-invariant)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        from unmask.infill.automaton import restrict_logits

        flat = logits.reshape(-1, logits.shape[-1])
        allowed = torch.ones_like(flat, dtype=torch.bool)
        allowed[:, TOK.mask_id] = False
        return restrict_logits(flat, allowed).view_as(logits)


def test_sedd_steps_keep_the_scale_of_the_log_score_under_a_constraint(sedd_time):
    """The SEDD decoder applied a canvas's constraints to the model's log-score, and infill's
    gap automata also shift a position's values (the best allowed to 0): harmless to a
    softmax, but a log-score's scale is the rate of unmasking, so every mask of a template
    was drawn at the first step whatever --steps. A constraint that rules out nothing the
    run draws now leaves it as it is."""
    from unmask.canvas import Canvas
    from unmask.sampling.sedd import start_model

    loaded = unmask.load(sedd_time)
    canvas = Canvas.from_prompts([[5, 6, 7]], 10, mask_id=TOK.mask_id, pad_id=TOK.pad_id)
    runs = []
    for constrained in (False, True):
        c = canvas.clone()
        if constrained:
            c.constraints.append(_NoMask())
        left: list[int] = []
        run = start_model(loaded.model, c, SampleConfig(steps=10, gen_length=10),
                          generator=torch.Generator().manual_seed(0),
                          step_callback=lambda s, x, _l=left: _l.append(
                              int((x == TOK.mask_id).sum())))  # fmt: skip
        runs.append((run.run().tokens.tolist(), left))
    assert runs[0] == runs[1]
    assert runs[0][1][0] > 0  # not every mask at the first step


def test_infill_unmasks_a_time_conditioned_sedd_template_over_its_steps(sedd_time):
    loaded = unmask.load(sedd_time)
    left: list[int] = []
    res = api.infill(loaded, "ab [MASK:10] cd", config={"steps": 10, "seed": 0},
                     step_callback=lambda s, x: left.append(int((x == TOK.mask_id).sum())))
    assert res.nfe == 10 and len(left) == 10 and left[-1] == 0
    assert left[0] > 0 and left == sorted(left, reverse=True)  # every one at step 1 before


class _PerfectScore(torch.nn.Module):
    """The exact absorbing log-score of a data law that is one text, ``truth``: at a masked
    position the true token's ratio is 1 / (e^sigma - 1), every other token's none; a given
    token's own entry is 0 (what a ``sedd_log_score`` checkpoint's forward returns)."""

    def __init__(self, config, truth: list[int]) -> None:
        super().__init__()
        self.config, self.truth = config, torch.tensor(truth)

    def forward(self, tokens, attention_mask=None, sigma=None):
        assert sigma is not None and tokens.shape[1] == len(self.truth)
        out = torch.full((*tokens.shape, self.config.vocab_size), -1e4)
        masked = tokens == self.config.mask_id  # (B, L)
        rate = -torch.log(torch.expm1(sigma.float()))[:, None].expand_as(masked)  # (B, L)
        out.scatter_(-1, self.truth.expand_as(tokens)[..., None],
                     torch.where(masked, rate, torch.zeros_like(rate))[..., None])
        out[masked, self.config.mask_id] = 0.0  # the current token's (the mask's) own entry
        return out


def test_a_perfect_score_refills_the_text_it_knows(sedd_time):
    """An exact score of a law with one text puts that text back in every gap, whatever the
    steps and seed (the template's layout, the noise levels and the rendering, end to end)."""
    from server_helpers import loaded

    text = "the cat sat on the mat"
    cfg = unmask.load(sedd_time).config
    model = loaded(_PerfectScore(cfg, TOK.encode(text)).eval(), TOK)
    for steps, seed in ((1, 0), (3, 1), (7, 2)):
        left: list[int] = []
        res = api.infill(model, "the [MASK:3] sat on [MASK:3] mat",
                         config={"steps": steps, "seed": seed},
                         step_callback=lambda s, x, _l=left: _l.append(int((x == TOK.mask_id)
                                                                           .sum())))
        assert res.text == text and [g.text for g in res.detail.gaps] == ["cat", "the"]
        assert res.nfe == steps and left[-1] == 0  # as asked (were capped at the 6 masks)


def test_a_gap_broken_by_simultaneous_draws_is_completed_well_formed(sedd_time):
    """A model that favours a UTF-8 lead byte draws, in one step, lead bytes side by side
    (each allowed alone, the gap's automaton seeing only masks after it): such a gap is
    completed left to right from its automaton, so its text is well-formed UTF-8 with no
    special token, the promise of every infill."""
    loaded = unmask.load(sedd_time)
    lead, a = TOK.encode("é")[0], TOK.encode("a")[0]
    forward = loaded.model.forward

    def favouring(*args, **kw):
        out = forward(*args, **kw).clone()
        out[..., [lead, a]] += 12.0
        return out

    loaded.model.forward = favouring  # type: ignore[method-assign]
    specials = {TOK.mask_id, TOK.pad_id, TOK.eos_id}
    leads = 0
    for seed in range(6):
        res = api.infill(loaded, "ab [MASK:7] cd", config={"seed": seed, "steps": 1})
        (gap,) = res.detail.gaps
        assert "\ufffd" not in res.text and not specials & set(gap.tokens), res.text
        assert res.text == f"ab {gap.text} cd" and TOK.decode(gap.tokens) == gap.text
        leads += gap.tokens.count(lead)
    assert leads  # the lead byte was drawn, and followed by a continuation byte


class _TwoTextLaw(torch.nn.Module):
    """The exact absorbing log-score of a law on a 2-token gap: "ab" or "ba", 1/2 each. A
    masked position's ratio for a token is P(token | the other position) / (e^sigma - 1)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.a, self.b = TOK.encode("a")[0], TOK.encode("b")[0]

    def forward(self, tokens, attention_mask=None, sigma=None):
        m = self.config.mask_id
        out = torch.full((*tokens.shape, self.config.vocab_size), -1e4)
        out.scatter_(-1, tokens[..., None], 0.0)
        rate = -torch.log(torch.expm1(sigma.float()))  # (B,)
        for r in range(tokens.shape[0]):
            for p, q in ((1, 2), (2, 1)):  # "x[MASK:2]y": the gap's two positions
                if tokens[r, p] != m:
                    continue
                other = int(tokens[r, q])
                if other == m:
                    out[r, p, [self.a, self.b]] = float(rate[r]) + math.log(0.5)
                else:
                    out[r, p, self.b if other == self.a else self.a] = float(rate[r])
        return out


def test_sedd_infill_takes_the_steps_asked_for(sedd_time):
    """A SEDD step is a slice of the time grid, not a commit: more steps, fewer positions
    drawn together, so fewer fills that break the law's dependence ("aa", "bb"). infill
    capped --steps at the masks (2 here: a quarter of the fills were "aa" or "bb", whatever
    --steps), where generate --decoder sedd takes them as given; now as given, within
    MAX_STEPS, and the default (no --steps) is still at most one step a masked token."""
    from server_helpers import loaded

    model = loaded(_TwoTextLaw(unmask.load(sedd_time).config).eval(), TOK)
    fills: list[str] = []
    for seed in range(120):
        res = api.infill(model, "x[MASK:2]y", config={"steps": 64, "seed": seed})
        assert res.nfe == 64
        fills.append(res.detail.gaps[0].text)
    assert set(fills) <= {"ab", "ba", "aa", "bb"} and {"ab", "ba"} <= set(fills)
    assert sum(f in ("aa", "bb") for f in fills) <= 3, fills  # 0.3 % expected; ~25 % capped
    assert api.infill(model, "x[MASK:2]y", config={"seed": 0}).nfe == 2  # default: the masks


def test_a_ban_is_honoured_on_the_sedd_path(sedd_time, capsys):
    """``--ban`` rules tokens out one by one, which SEDD's draws honour exactly (-inf on the
    score, as the run's own special ids): it was refused as a constrained gap. Regex, choices
    and charset (a sequence's constraint) still are."""
    loaded = unmask.load(sedd_time)
    e, a = TOK.encode("e")[0], TOK.encode("a")[0]
    forward = loaded.model.forward

    def favouring(*args, **kw):  # the banned tokens are the likeliest draws
        out = forward(*args, **kw).clone()
        out[..., [e, a]] += 8.0
        return out

    loaded.model.forward = favouring  # type: ignore[method-assign]
    from unmask.infill import parse_template
    from unmask.infill.options import constrain_gaps

    seen = {"free": "", "banned": ""}
    for seed in range(4):
        for how, ban in (("free", ()), ("banned", ("e", "a"))):
            segs = constrain_gaps(parse_template("x [MASK:8] y"), ban=ban)
            res = api.infill(loaded, segs, config={"seed": seed, "steps": 4})
            seen[how] += res.detail.gaps[0].text
    assert "e" in seen["free"] and "a" in seen["free"]  # what the ban has to rule out
    assert "e" not in seen["banned"] and "a" not in seen["banned"], seen
    rc = main(["infill", "--model", sedd_time, TEMPLATE, "--no-live", "--seed", "1",
               "--ban", "e"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.startswith("the cat "), err
    rc = main(["infill", "--model", sedd_time, TEMPLATE, "--no-live", "--charset",
               "1=digits"])
    err = capsys.readouterr().err
    assert rc == 2 and "constrained gaps (regex, choices, charset)" in err, err


def test_the_checkpoints_recommendation_and_one_block_apply(sedd_time, tmp_path):
    """The checkpoint's ``sample_defaults`` apply to infill on its own sedd decoder, as to
    ``generate`` (they applied on embed-diffusion only), and a ``block_length`` of the whole
    template (one block) is accepted as on embed-diffusion (it was refused)."""
    loaded = unmask.load(sedd_time)
    cfg = dataclasses.replace(loaded.config, sample_defaults={"steps": 5})
    ckpt = save_checkpoint(tmp_path, model=Transformer(cfg).eval(), tokenizer=TOK)
    rec = unmask.load(str(ckpt))
    assert api.infill(rec, "ab[MASK:2]cd", config={"seed": 0}).nfe == 5  # was 2
    assert api.infill(rec, "ab[MASK:2]cd", config={"seed": 0, "steps": 3}).nfe == 3
    one = api.infill(loaded, "ab[MASK:2]cd", config={"seed": 0, "block_length": 2})
    assert one.text == api.infill(loaded, "ab[MASK:2]cd", config={"seed": 0}).text


def test_the_server_takes_what_the_cli_takes_there(sedd_time):
    """/v1/infill on the sedd path: ``threshold`` at its schema default (0.9, which a client
    that sends every default sends) was a 400 "this run's policy is 'llada'", where
    ``unmask infill --threshold 0.9`` and /v1/completions ran; ``steps`` as given; ``ban``."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    loaded = unmask.load(sedd_time)
    with TestClient(create_app(loaded)) as c:
        def post(**body):
            return c.post("/v1/infill", json={"template": "the cat [MASK:3] on", "seed": 7,
                                              **body})

        plain = post()
        assert plain.status_code == 200 and plain.json()["nfe"] == 3, plain.text
        r = post(threshold=0.9)
        assert r.status_code == 200 and r.json()["text"] == plain.json()["text"], r.text
        r = post(threshold=0.5)
        assert r.status_code == 400 and r.json()["error"]["param"] == "threshold", r.text
        r = post(steps=9)
        assert r.status_code == 200 and r.json()["nfe"] == 9, r.text
        assert post(ban=["e"]).status_code == 200
        assert post(block_length=3).status_code == 200


def test_a_recommended_block_length_is_not_the_users_and_a_low_max_steps_raises_nothing(
        sedd_time, tmp_path):
    """A SEDD checkpoint that recommends a ``block_length`` (generate's blocks) fills a plain
    template: the recommendation is no block length the user gave (every infill was refused
    "leave it unset"); and a server started with ``--max-steps`` below the default 64 runs a
    template's at most one step a mask as without it (``[MASK:3]``: 3 forwards, not 32)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app
    from unmask.server.limits import ServerLimits

    loaded = unmask.load(sedd_time)
    cfg = dataclasses.replace(loaded.config, sample_defaults={"block_length": 8})
    rec = unmask.load(str(save_checkpoint(tmp_path, model=Transformer(cfg).eval(),
                                          tokenizer=TOK)))
    assert api.infill(rec, "ab[MASK:2]cd", config={"seed": 0}).nfe == 2
    with TestClient(create_app(loaded, limits=ServerLimits(max_steps=32))) as c:
        r = c.post("/v1/infill", json={"template": "the cat [MASK:3] on", "seed": 7})
    assert r.status_code == 200 and r.json()["nfe"] == 3, r.text


def test_infill_refuses_a_policys_option_under_another_policy_as_the_server(tmp_path, capsys):
    """``unmask infill --threshold 0.5`` under the default ``llada`` policy ran and ignored it,
    where ``/v1/infill`` and ``unmask generate`` refuse it naming the policy it belongs to."""
    base = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64,
                        **TOK.special_ids())  # fmt: skip
    torch.manual_seed(0)
    ckpt = str(save_checkpoint(tmp_path, model=Transformer(base).eval(), tokenizer=TOK))
    rc = main(["infill", "--model", ckpt, "the cat [MASK:3] on", "--no-live", "--threshold",
               "0.5"])
    assert rc == 2
    assert "--threshold is an option of policy 'threshold'" in capsys.readouterr().err
    assert main(["infill", "--model", ckpt, "the cat [MASK:3] on", "--no-live", "--policy",
                 "threshold", "--threshold", "0.5"]) == 0


def test_the_config_that_infill_json_reports_runs_again(tmp_path, capsys):
    """The ``config`` that ``unmask infill --json`` prints, handed back to ``api.infill``,
    runs again with the same text: it holds every policy's option at its default, which is no
    option set under another policy (only one moved from its default is refused)."""
    base = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64,
                        **TOK.special_ids())  # fmt: skip
    torch.manual_seed(0)
    ckpt = str(save_checkpoint(tmp_path, model=Transformer(base).eval(), tokenizer=TOK))
    rc, out, err = _infill(capsys, ckpt, "--seed", "2")
    assert rc == 0, err
    loaded = unmask.load(ckpt)
    config = {k: v for k, v in out["config"].items() if k != "gen_length"}  # the template's
    assert api.infill(loaded, TEMPLATE, config=config).text == out["text"]
    with pytest.raises(unmask.UserError, match="threshold is an option of policy"):
        api.infill(loaded, TEMPLATE, config={**config, "threshold": 0.5})
