"""Latent diffusion's self-conditioned denoiser (LD4LG): new runs read their previous z0
estimate in K more slots; checkpoints written before ``ModelConfig.latent_self_condition``
keep the old layout when they are sampled, resumed or continued."""

from __future__ import annotations

from dataclasses import replace

import torch

from unmask.canvas import Canvas
from unmask.config import ModelConfig, SampleConfig, TrainConfig, model_preset
from unmask.model import Transformer
from unmask.objectives.latent import denoise, latent_model_config
from unmask.sampling.continuous import LatentRun


def _config(**kw: object) -> ModelConfig:
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=40)
    return replace(cfg, **kw)  # type: ignore[arg-type]


def test_new_runs_self_condition_and_old_checkpoints_keep_their_layout():
    """A fresh run or one continuing a stage-1 autoencoder gets the K extra slots (and room
    for them); a stage-2 checkpoint without the field stays as it was trained."""
    train_cfg = TrainConfig(seq_len=24, latent_len=4)
    fresh = latent_model_config(_config(), train_cfg)
    assert fresh.latent_self_condition and fresh.max_seq_len >= 24 + 2 * 4 + 1
    ae = latent_model_config(_config(objective="latent-ae", latent_len=4), train_cfg)
    assert ae.latent_self_condition
    old = latent_model_config(_config(objective="latent-diffusion", latent_len=4), train_cfg)
    assert not old.latent_self_condition
    assert ModelConfig().latent_self_condition is False  # what an old config.json loads as


def _latent_model(self_condition: bool) -> Transformer:
    cfg = _config(objective="latent-diffusion", latent_len=4, latent_self_condition=self_condition)
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def test_the_denoiser_reads_its_previous_estimate_only_when_self_conditioned():
    sc = _latent_model(True)
    g = torch.Generator().manual_seed(0)
    zt = torch.randn(2, 4, sc.config.d_model, generator=g)
    other = torch.randn(2, 4, sc.config.d_model, generator=g)
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        first, _ = denoise(sc, sc.config, zt, t, 16)
        zeros, _ = denoise(sc, sc.config, zt, t, 16, torch.zeros_like(zt))
        refined, _ = denoise(sc, sc.config, zt, t, 16, other)
        old = _latent_model(False)
        a, _ = denoise(old, old.config, zt, t, 16)
        b, _ = denoise(old, old.config, zt, t, 16, other)
    torch.testing.assert_close(first, zeros)  # no estimate yet = zeros
    assert float((refined - first).abs().mean()) > 1e-5  # read (faintly at init)
    torch.testing.assert_close(a, b)  # an old checkpoint ignores it: its layout is unchanged


def test_the_sampler_feeds_each_step_the_previous_estimate():
    """With self-conditioning the run differs from one that never passes its estimate on;
    the NFE stays one call per step plus the final decode."""
    model = _latent_model(True)
    config = SampleConfig(gen_length=16, steps=4, seed=0)

    def sample(feed: bool) -> tuple[torch.Tensor, int]:
        canvas = Canvas.from_prompts([[], []], 16, mask_id=0, pad_id=1)
        run = LatentRun(model, canvas, config)
        while not run.done:
            if not feed:
                run.previous = None
            run.advance()
        assert run.previous is not None
        return run.previous, run.result().nfe  # the last z0 estimate (B, K, D)

    fed, nfe = sample(True)
    unfed, _ = sample(False)
    assert nfe == 4 + 1
    assert float((fed - unfed).abs().mean()) > 1e-5


def test_a_jointly_trained_latent_model_records_its_window_and_samples_only_that():
    """A stage-2 run without ``--init`` (both losses on a fresh network) recorded no
    ``latent_window``, so its sampler wrote any ``--gen-length`` (64 tokens by default) from
    slots trained on chunks of ``seq_len`` tokens. It records ``seq_len`` now, as an
    autoencoder does; a stage-2 run keeps its autoencoder's window."""
    import pytest

    from unmask.errors import UserError
    from unmask.facts import ModelFacts
    from unmask.objectives import objective_spec
    from unmask.sampling import Target, choose_decoder

    train_cfg = TrainConfig(objective="latent-diffusion", seq_len=24, latent_len=4)
    fresh = objective_spec("latent-diffusion").configure(_config(), train_cfg)
    assert fresh.latent_window == 24
    ae = _config(objective="latent-ae", latent_len=4, latent_window=16)
    stage2 = objective_spec("latent-diffusion").configure(ae, replace(train_cfg, seq_len=16))
    assert stage2.latent_window == 16
    model = Transformer(fresh).eval()
    facts = ModelFacts.of(model)
    config = SampleConfig(gen_length=16, steps=2, seed=0, decoder="latent-diffusion")
    with pytest.raises(UserError, match="windows of 24 tokens"):
        choose_decoder(facts, config).start(Target(model, facts), [[]], config)
    config = replace(config, gen_length=24)
    res = choose_decoder(facts, config).start(Target(model, facts), [[]], config).run()
    assert res.tokens.shape == (1, 24)
