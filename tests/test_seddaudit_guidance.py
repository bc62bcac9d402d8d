"""Gradient guidance of the continuous decoders: the step is a distance of the vectors it
moves. It was normalised over the whole state, prompt and padding included, and those then
stayed, so the generated positions' step depended on the prompt's length and a row's padding
(batch mates changed it)."""

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.model import Transformer
from unmask.objectives import objective_spec
from unmask.sampling.continuous import BagOfWords, EmbedRun, guide


def _model() -> Transformer:
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=40)
    torch.manual_seed(0)
    return Transformer(objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=24)))


class _Recording(EmbedRun):
    """Records each guidance move (old state, guided state) before the known rows are put back."""

    moves: list[tuple[torch.Tensor, torch.Tensor]]

    def _keep(self, old, new):
        self.moves.append((old.clone(), new.clone()))
        return super()._keep(old, new)


@pytest.mark.parametrize("scale", [0.02, 0.2])
def test_the_guided_step_of_the_generated_positions_is_guide_scale_times_the_noise(scale):
    model = _model().eval()
    cfg = model.config
    config = SampleConfig(decoder="embed-diffusion", gen_length=4, steps=3, seed=0,
                          guide_words="x", guide_scale=scale)
    canvas = Canvas.from_prompts([[5], list(range(5, 25))], 4, mask_id=cfg.mask_id,
                                 pad_id=cfg.pad_id)
    run = _Recording(model, canvas, config, constraint=BagOfWords([20, 21]))
    run.moves = []
    run.run()
    assert len(run.moves) == 3 and run.nfe == 6
    known = run.known  # a 1-token prompt (19 pads) and a 20-token one
    for k, (old, new) in enumerate(run.moves):
        t = run.grid[k]
        sd = float(1.0 - run.schedule.alpha_bar(torch.tensor(t))) ** 0.5
        delta = new - old  # (B, L, D)
        for b in range(2):
            moved = delta[b][~known[b]]  # (G, D)
            rms = float(moved.pow(2).mean().sqrt())
            assert rms == pytest.approx(scale * sd, rel=1e-4)  # before: 2.45x (sqrt(24 / 4))
            assert float(delta[b][known[b]].abs().max()) == 0.0


def test_guide_normalises_over_the_movable_vectors_only():
    state = torch.zeros(1, 3, 2)

    def logits_of(x):  # the loss reads every vector, the last one 10x more
        return (x * torch.tensor([1.0, 1.0, 10.0])[None, :, None]).sum(-1, keepdim=True)

    def loss(logits):
        return logits.sum(dim=(1, 2))

    movable = torch.tensor([[True, True, False]])
    out = guide(state, logits_of, loss, 0.5, movable)
    assert torch.equal(out[0, 2], torch.zeros(2))  # it stays
    assert float(out[0, :2].pow(2).mean().sqrt()) == pytest.approx(0.5)
    every = guide(state, logits_of, loss, 0.5)  # all move: the whole state's RMS is the step
    assert float(every.pow(2).mean().sqrt()) == pytest.approx(0.5)
