"""``--template FOLDER`` (a model's folder, where its template lives) said "no such file, not a
built-in template and not a Jinja string" of a folder that exists; it now says it is a folder
and names the file in it that holds a template, if any."""

from __future__ import annotations

import json

import pytest

from unmask.chat import DEFAULT_CHAT_TEMPLATE, template_arg
from unmask.errors import UserError


def test_a_folder_names_the_file_that_holds_its_template(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 8}))  # no chat_template
    with pytest.raises(UserError, match=r"is a folder, not a chat template file; it holds "
                                        r"none of chat_template.jinja, "):
        template_arg(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": DEFAULT_CHAT_TEMPLATE}))
    with pytest.raises(UserError) as refused:
        template_arg(str(tmp_path))
    assert str(refused.value) == (f"--template {str(tmp_path)!r} is a folder, not a chat "
                                  f"template file; give {tmp_path / 'tokenizer_config.json'}, "
                                  "or leave out --template to use the model's own chat template")
    named = template_arg(str(tmp_path / "tokenizer_config.json"))  # as the hint says
    assert named.source == DEFAULT_CHAT_TEMPLATE


def test_a_template_file_of_broken_json_says_at_once(tmp_path):
    """A ``--template`` JSON file with an unterminated string said "starting at at line 1"."""
    path = tmp_path / "tokenizer_config.json"
    path.write_text('{"chat_template": "{{ x }}')
    with pytest.raises(UserError, match="not valid JSON") as got:
        template_arg(str(path))
    assert "at at" not in str(got.value) and "at line 1" in str(got.value)
