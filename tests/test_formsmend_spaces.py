"""Forms on a Llama-style SentencePiece tokenizer, and the server's advice for a gap too long
for the context (review of session 29).

A Llama-style tokenizer (a ``Prepend("▁")`` normalizer) marks the start of every text it
encodes with a word start, and spells ``" "`` alone as two: a form's skeleton after a hole was
encoded with a space the template does not have (``'{"a": "cat" }'``), and the space a value
did not take, put back, was two. ``FormResult.tokens`` must decode to ``FormResult.text``.
"""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers

from unmask.config import SampleConfig
from unmask.infill.forms import fill_form
from unmask.tokenizer import SPECIAL_TOKENS, Tokenizer


def _llama() -> Tokenizer:
    pieces = [*SPECIAL_TOKENS, "<unk>", *[f"<0x{b:02X}>" for b in range(256)], "▁", *"catdog",
              "▁c", "▁ca", "▁cat", "▁d", "▁do", "▁dog"]
    merges = [("▁", "c"), ("▁c", "a"), ("▁ca", "t"), ("▁", "d"), ("▁d", "o"), ("▁do", "g")]
    hf = HFTokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges,
                                unk_token="<unk>", byte_fallback=True))
    hf.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                          normalizers.Replace(" ", "▁")])
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens([*SPECIAL_TOKENS, "<unk>"])
    return Tokenizer(hf, mask_id=0, pad_id=1, eos_id=2, bos_id=3)


LLAMA = _llama()


class Prefers:
    """Every position favours the token ``best``."""

    def __init__(self, best: str) -> None:
        self.bias = torch.zeros(LLAMA.vocab_size)
        self.bias[LLAMA.token_to_id(best)] = 10.0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.bias.expand(*tokens.shape, len(self.bias)).clone()  # (B, L, V)


def test_a_forms_tokens_spell_its_text_on_a_llama_style_tokenizer():
    assert [LLAMA.id_to_token(i) for i in LLAMA.encode(" ")] == ["▁", "▁"]
    for best, want in (("d", '{"a": "dog"}'), ("c", '{"a": "cat"}')):
        r = fill_form(Prefers(best), LLAMA, '{"a": "<choice:cat|dog>"}',
                      config=SampleConfig(steps=4))
        assert r.text == want and r.value == {"a": want[7:10]}
        assert LLAMA.decode(r.tokens) == r.text  # was '{"a": "dog" }'
        assert LLAMA.id_to_token(r.tokens[-1]) == "<0x7D>"  # "}" glued, no word start of its own


def test_the_server_does_not_advise_a_field_its_clients_cannot_send():
    from server_helpers import Echo, loaded, tiny_config

    from unmask.server import create_app

    app = create_app(loaded(Echo(tiny_config(max_seq_len=32))), access_log=False)
    with TestClient(app) as c:
        r = c.post("/v1/infill", json={"template": "x" * 20 + "[MASK:n]y", "regex": {"n": "b+"}})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert "default_max_len" not in msg and msg.endswith("give it a maximum ([MASK:1-n])")
