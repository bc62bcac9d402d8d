"""Session 31 (api): the server's context refusals count a one-token prompt as "1 token" (the
empty prompt's start token, on completions, and a structured answer's one-token prompt said
"prompt (1 tokens)"); the completions case is in tests/test_serveaudit_start_note.py."""

from __future__ import annotations

import pytest
from server_helpers import Echo, loaded, tiny_config


def test_a_structured_answer_after_a_one_token_prompt_says_1_token():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with TestClient(create_app(loaded(Echo(tiny_config(16))), access_log=False)) as c:
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 16,
                                            "guided_regex": "a+"})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert message.startswith("prompt (1 token) + max_tokens (16)"), message
