"""A streamed completion says the text of the response, also under token editing
(``edit_threshold``: the block decoder rewrites committed tokens of its current block, so
the committed prefix is not final until its block is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import tiny_config  # noqa: E402
from torch import nn  # noqa: E402

from unmask.checkpoint import Loaded  # noqa: E402
from unmask.server import create_app  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402


class Restless(nn.Module):
    """A block-causal mask predictor whose logits at a column are a fixed random row picked by
    the whole canvas and the column: every commit changes them, so committed tokens stop being
    the argmax and edits happen (``tests/test_block_edits.py``'s ``Restless``)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = tiny_config()
        self.config.attention, self.config.objective, self.config.block_size = \
            "block-causal", "bd3lm", 4  # fmt: skip
        self.table = 4 * torch.randn(97, self.config.vocab_size,
                                     generator=torch.Generator().manual_seed(0))
        self.table[:, :4] = -1e4  # (B, L, V): no special token, so no row ends early

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: object) -> torch.Tensor:
        key = x.sum(dim=1, keepdim=True) * 7 + torch.arange(x.shape[1])  # (B, L)
        return self.table[key % self.table.shape[0]]


def _streamed(c: TestClient, body: dict) -> tuple[str, int]:
    """The text a streamed completion's chunks add up to, and how many chunks carried text."""
    r = c.post("/v1/completions", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    chunks = [json.loads(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: {")]
    texts = [ch["choices"][0]["text"] for ch in chunks if ch["choices"]]
    return "".join(texts), sum(bool(t) for t in texts)


@pytest.mark.parametrize("sampled", [{}, {"temperature": 0.8, "seed": 3}])
def test_a_streamed_completion_under_token_editing_says_the_edited_text(sampled):
    model = Restless()
    app = create_app(Loaded(model=model, tokenizer=byte_tokenizer(), config=model.config,
                            path=Path("runs/bd/checkpoint")), access_log=False)
    body = {"prompt": "abcd", "max_tokens": 12, "edit_threshold": 0.0, "max_post_steps": 4,
            **sampled}
    with TestClient(app) as c:
        text = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
        unedited = c.post("/v1/completions", json={**body, "edit_threshold": None,
                                                   "max_post_steps": 0})
        streamed, pieces = _streamed(c, body)
    assert text != unedited.json()["choices"][0]["text"]  # the edits changed the text
    assert streamed == text
    assert pieces >= 2  # finished blocks still stream before the end
