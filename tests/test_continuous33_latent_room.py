"""A latent model's context holds its text, its latent slots (twice that self-conditioned) and
the time: a window that fits ``max_seq_len`` alone but not beside them is refused in one line
(``benchmarks/latent_denoise.py`` let it through to the model's "exceeds max_seq_len"
traceback). Also: a latent run's per-step view draws nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.model import Transformer
from unmask.objectives.latent import latent_model_config, text_room
from unmask.sampling import Target, choose_decoder


def _model(self_condition: bool) -> Transformer:
    """A latent model from before ``latent_window`` (any gen_length it can hold)."""
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=40)
    cfg = replace(cfg, objective="latent-diffusion", latent_len=4,
                  latent_self_condition=self_condition)  # fmt: skip
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def test_text_room_is_what_latent_model_config_makes_room_for():
    for sc, room in ((True, 40 - 2 * 4 - 1), (False, 40 - 4 - 1)):
        assert text_room(_model(sc).config) == room
    cfg = latent_model_config(model_preset("tiny", vocab_size=48, max_seq_len=8),
                              TrainConfig(seq_len=24, latent_len=4))  # fmt: skip
    assert text_room(cfg) == 24


@pytest.mark.parametrize("self_condition", [True, False])
def test_text_room_is_the_canvas_limit_the_sampler_enforces(self_condition):
    """``unmask.facts`` (it imports no torch) holds the one copy of the layout's size that
    ``text_room`` uses too: the two agree, and the sampler writes a window of exactly that
    many tokens."""
    from unmask import facts
    from unmask.objectives import latent

    assert latent.layout_positions is facts.layout_positions
    model = _model(self_condition)
    facts = ModelFacts.of(model)
    room = text_room(model.config)
    assert facts.max_seq_len == room
    config = SampleConfig(gen_length=room, steps=1, seed=0, decoder="latent-diffusion")
    res = choose_decoder(facts, config).start(Target(model, facts), [[]], config).run()
    assert res.tokens.shape == (1, room)


@pytest.fixture(scope="module")
def latent_run(word_corpus, tmp_path_factory):
    """(A latent-diffusion run trained one step on windows of 8 tokens, its corpus.)"""
    from unmask.train import train

    data = word_corpus("room33", "the lord said unto moses go down".split())
    out = tmp_path_factory.mktemp("room33") / "lat"
    cfg = TrainConfig(data=str(data), out=str(out), preset="tiny", seq_len=8,
                      batch_size=2, steps=1, warmup=0, eval_every=0, eval_batches=1,
                      save_every=0, seed=0, random_length_frac=0.0,
                      objective="latent-diffusion", latent_len=2)  # fmt: skip
    return train(cfg, progress=False), data


def test_latent_denoise_refuses_a_seq_len_beside_the_slots_in_one_line(
    latent_run, benchmark, capsys
):
    """``--seq-len`` up to ``max_seq_len - latent_len`` was accepted, and a window the
    self-conditioned layout could not hold failed in the model with a traceback."""
    from unmask.checkpoint import load

    run, data = latent_run
    config = load(run, device="cpu").config
    room = text_room(config)
    assert config.latent_self_condition and room == config.max_seq_len - 2 * 2 - 1
    script = benchmark("latent_denoise")
    argv = ["--model", str(run), "--data", str(data), "--windows", "2"]
    with pytest.raises(UserError, match=f"reads windows of 1..{room} tokens"):
        script.main([*argv, "--seq-len", str(room + 1)])
    assert script.main([*argv, "--seq-len", str(room)]) == 0
    assert "| 0.95 |" in capsys.readouterr().out


def test_rounding_refuses_a_gen_length_past_a_latent_models_window(
    latent_run, benchmark, tmp_path
):
    """A latent model writes windows of its ``latent_window`` (8 here): with the default
    ``--gen-length`` 56 its samples were cut to 8 tokens and compared with 56-token held-out
    text, whose entropy and distinct-n they cannot match, skewing the recommendation."""
    run, data = latent_run
    script = benchmark("rounding")
    argv = ["--model", str(run), "--data", str(data), "--no-score", "--n", "1",
            "--steps", "1", "--temperatures", "0", "--json", str(tmp_path / "r.json")]
    with pytest.raises(UserError, match="writes windows of 8 tokens; give --gen-length 8 or"):
        script.main(argv)  # the default --gen-length, 56


def test_a_latent_runs_view_draws_nothing_so_temperature_moves_only_the_final_tokens():
    """The view of a latent run (the text read off z_t) was drawn at the rounding
    temperature every step, a (B, G, V) Gumbel draw the state never reads (3x the model's
    time at V = 4096) that also shifted the state's noise stream. It is the argmax now: the
    intermediate views, hence the states, are the same at every temperature."""
    from unmask.canvas import Canvas
    from unmask.sampling.continuous import LatentRun

    model = _model(True)

    def views(temperature: float) -> tuple[list[list[list[int]]], torch.Tensor]:
        seen: list[list[list[int]]] = []
        canvas = Canvas.from_prompts([[], []], 16, mask_id=0, pad_id=1)
        config = SampleConfig(gen_length=16, steps=4, seed=0, temperature=temperature)
        run = LatentRun(model, canvas, config, on_view=lambda s, v: seen.append(v.tolist()))
        return seen, run.run().tokens

    argmax, _ = views(0.0)
    for temperature in (0.5, 1.0):
        seen, _ = views(temperature)
        assert seen[:-1] == argmax[:-1]  # every step but the final decode
    assert views(1.0)[1].tolist() == views(1.0)[1].tolist()  # seeded: the same tokens
