"""A JSON error whose Python message ends in " at" ("Unterminated string starting at",
"Invalid control character at") said "at at" where unmask names the place: a JSON Lines
file, a config.json, a train_config.json."""

from __future__ import annotations

import pytest

from unmask import data
from unmask.errors import UserError
from unmask.files import read_json
from unmask.train import load_train_config

BROKEN = {  # text -> what the one line says
    '{"prompt": "a\n': "Unterminated string starting at column 12)",
    '{"prompt": "a\tb"}\n': "Invalid control character at column 14)",
}


@pytest.mark.parametrize("text", BROKEN)
def test_a_jsonl_line_names_its_column_once(tmp_path, text):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        list(data.read_jsonl(p))
    assert str(e.value).endswith(f"not valid JSON ({BROKEN[text]}"), str(e.value)
    assert "at at" not in str(e.value)


@pytest.mark.parametrize("read", [read_json, load_train_config])
def test_a_json_file_names_its_line_once(tmp_path, read):
    p = tmp_path / "config.json"
    p.write_text('{"steps": "10')
    with pytest.raises(UserError) as e:
        read(p)
    assert str(e.value) == f"{p}: not valid JSON (Unterminated string starting at line 1)"
