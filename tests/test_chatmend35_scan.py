"""The scan for control tokens typed in a message takes, at each position, the longest one
starting there, and reports spans inside the text."""

from __future__ import annotations

import random

from tokenizers import AddedToken

from unmask.chat import ChatTemplate, _Scan
from unmask.tokenizer import byte_tokenizer


def brute(controls: set[str], text: str) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < len(text):
        n = max((len(c) for c in controls if text.startswith(c, i)), default=0)
        if n:
            out.append((i, i + n))
        i += n or 1
    return out


def test_a_control_token_that_is_a_prefix_of_another_gives_way_to_it():
    tok = byte_tokenizer()
    tok.hf.add_special_tokens([AddedToken(s, special=True) for s in ("<|a|>", "<|a|>b")])
    t = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}")
    _, plain = t._shield(t._scan(tok), [{"role": "user", "content": "x<|a|>by"}])
    assert sorted(plain.values()) == ["<|a|>b"]  # one stand-in, the longest token


def test_spans_end_inside_the_text_and_match_a_leftmost_longest_scan():
    assert _Scan({}, {"b": 1, "b|>a": 2}).spans("xb") == [(1, 2)]
    rng = random.Random(0)
    for _ in range(300):
        controls = {"".join(rng.choice("ab|") for _ in range(rng.randint(1, 4)))
                    for _ in range(rng.randint(1, 5))}
        text = "".join(rng.choice("ab|x") for _ in range(rng.randint(0, 12)))
        scan = _Scan({}, dict.fromkeys(controls, 0))
        assert scan.spans(text) == brute(controls, text), (controls, text)
