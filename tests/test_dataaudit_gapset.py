"""Gap sets hold any text: a line ends at ``\\n`` only (session 29 audit)."""

from __future__ import annotations

import pytest

from unmask.gapset import GapSample, read_gap_set, write_gap_set
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\r\n", "\r"])
def test_a_gap_set_with_unicode_line_separators_in_its_text_reads_back(tmp_path, sep):
    """write_gap_set (json.dumps with ensure_ascii=False) leaves U+2028, U+2029 and U+0085 raw
    inside the strings; read_gap_set split lines there too (str.splitlines) and refused its own
    file: "g.jsonl:1: not a JSON object of strings"."""
    ids = TOK.encode(f"one{sep}two{sep}three")
    gaps = [GapSample(ids, 2, 6, 4, 8), GapSample(ids, 1, 3, 3, 3)]
    p = write_gap_set(tmp_path / "g.jsonl", gaps, TOK)
    back = read_gap_set(p, TOK)
    assert [(x.window, x.start, x.length, x.lo, x.hi) for x in back] == \
        [(x.window, x.start, x.length, x.lo, x.hi) for x in gaps]


@pytest.mark.parametrize("end", ["\r\n", "\r"])
def test_a_hand_written_gap_set_with_windows_or_old_mac_line_ends_reads(tmp_path, end):
    p = tmp_path / "g.jsonl"
    lines = ['{"prefix": "In the ", "middle": "beginning", "suffix": " God"}',
             '{"prefix": "and the ", "middle": "earth", "suffix": "."}']
    p.write_bytes(end.join(lines).encode() + end.encode())
    assert [TOK.decode(x.truth) for x in read_gap_set(p, TOK)] == ["beginning", "earth"]
