"""SFT data and loss, checked by hand: a line of a JSONL file cut short names the column where
it ends; the loss never masks nor counts the prompt and is, for a model of fixed logits, the
closed form of LLaDA's SFT loss."""

from __future__ import annotations

import pytest
import torch

from unmask.config import ModelConfig
from unmask.errors import UserError
from unmask.objectives.masked import sft
from unmask.objectives.spec import ObjectiveOptions
from unmask.schedules import LinearSchedule
from unmask.sft import read_sft_jsonl


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_line_cut_short_names_its_last_column(tmp_path, ending):
    line = '{"prompt": "a", "response": "b"'  # the closing brace lost
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "x", "response": "y"}\n' + line + ending)
    with pytest.raises(UserError) as e:
        read_sft_jsonl(path)
    assert str(e.value) == (f"{path}:2: not valid JSON (Expecting ',' delimiter at column "
                            f"{len(line) + 1})")


class _Fixed(torch.nn.Module):
    """Logits fixed per position (not depending on the input); records its input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.seen = x.clone()
        return self.logits.clone().requires_grad_(True)


def test_the_sft_loss_is_the_closed_form_of_llada_eq_5():
    """loss_sum = sum over rows of 1/t · (sum of -log p(x0_i) over masked answer positions)
    / answer length, the answer being every column after the prompt (EOS padding included),
    computed by hand from the positions the model saw masked; n_tokens = rows."""
    V, L = 6, 8
    cfg = ModelConfig(vocab_size=V, d_model=8, n_layers=1, n_heads=1, mask_id=V - 1)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, V - 1, (3, L), generator=g)
    prompt = torch.zeros(3, L, dtype=torch.bool)
    prompt[0, :2], prompt[1, :5], prompt[2, :7] = True, True, True  # answers of 6, 3, 1
    logits = torch.randn(3, L, V, generator=g) * 3
    t = torch.tensor([0.3, 0.6, 0.9])
    model = _Fixed(logits)
    options = ObjectiveOptions(schedule=LinearSchedule(0))
    parts = sft(model, cfg, x0, attention_mask=None, generator=torch.Generator().manual_seed(0),
                options=options, prompt_mask=prompt, t=t)
    masked = model.seen == cfg.mask_id
    assert not bool((masked & prompt).any())
    assert torch.equal(model.seen[~masked], x0[~masked])
    want = 0.0
    for b in range(3):
        answer = int((~prompt[b]).sum())
        for i in range(L):
            if masked[b, i]:
                logp = logits[b, i, x0[b, i]] - torch.logsumexp(logits[b, i], dim=0)
                want += -float(logp) / float(t[b]) / answer
    assert int(parts.n_tokens) == 3
    assert float(parts.loss_sum.detach()) == pytest.approx(want, rel=1e-5)
    assert int(masked.sum()) > 0 and want > 0  # the draw masked something: a real check
