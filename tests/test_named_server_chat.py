"""The server's chat ends a reply where ``unmask chat`` and ``api.chat`` end it: through a
built-in template (``plain``, ``default``) also where the reply starts another turn
(``\\nUser:``), streamed or not; it cut only at EOS and special tokens, so a reply that ran
on into an invented user turn was the server's answer and not the CLI's."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, tiny_config  # noqa: E402
from torch import nn  # noqa: E402

from unmask import api  # noqa: E402
from unmask.chat import template_arg  # noqa: E402
from unmask.server import create_app  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402

MESSAGES = [{"role": "user", "content": "Hi"}]
MAX_TOKENS = 20


class Scripted(nn.Module):
    """A mask predictor sure of ``script[i]`` at the i-th column after a prompt of
    ``prompt_len`` tokens (byte tokenizer ids), surer of earlier columns: with one step per
    token its commits go left to right, one a step."""

    def __init__(self, script: str, prompt_len: int) -> None:
        super().__init__()
        self.config = tiny_config()
        self.script, self.prompt_len = script, prompt_len

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        B, L = tokens.shape
        logits = torch.full((B, L, self.config.vocab_size), -10.0)  # (B, L, V)
        for i in range(self.prompt_len, L):
            k = i - self.prompt_len
            logits[:, i, 4 + ord(self.script[k % len(self.script)])] = 10.0 - 0.01 * k
        return logits


def setup(template: str, script: str) -> tuple[object, TestClient]:
    """The tiny model writing ``script`` after the prompt ``template`` renders of MESSAGES,
    and a client of a server that chats through ``template``."""
    _, ids = template_arg(template).prompt(byte_tokenizer(), MESSAGES)
    model = loaded(Scripted(script, len(ids)))
    return model, TestClient(create_app(model, chat_template=template, access_log=False))


def streamed(client: TestClient, body: dict) -> tuple[list[str], list[dict]]:
    """The content deltas of a streamed chat, and its chunks."""
    r = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    chunks = [json.loads(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    deltas = [ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"]]
    return deltas, chunks


@pytest.mark.parametrize(("template", "script", "reply"), [
    ("plain", " Fine.\nUser: I am a user now", "Fine."),
    ("plain", " Fine.\nAssistant: more of me", "Fine."),
    ("plain", "\nUser: I speak first here", ""),  # a reply that opens with another turn
    ("default", "Fine.\n<|user|>\nme again!!", "Fine."),
    ("plain", " Users: are kept.\nA: b c", "Users: are kept.\nA:"),  # no turn starts
    ("plain", " Boot:\nSystem: Boot order", "Boot:\nSystem: Boot"),  # docs/serving.md
])
def test_the_server_cuts_a_chat_reply_where_api_chat_cuts_it(template, script, reply):
    model, client = setup(template, script)
    want = api.chat(model, MESSAGES, template=template, config={"gen_length": MAX_TOKENS}).text
    assert want == reply
    body = {"messages": MESSAGES, "max_tokens": MAX_TOKENS,
            "stream_options": {"include_usage": True}}
    with client:
        r = client.post("/v1/chat/completions", json={k: v for k, v in body.items()
                                                      if k != "stream_options"})
        choice = r.json()["choices"][0]
        assert choice["message"]["content"] == want
        cut = reply != script[:MAX_TOKENS].strip()
        assert choice["finish_reason"] == ("stop" if cut else "length")
        deltas, chunks = streamed(client, body)
    # no chunk says what the cut drops: the deltas join to the reply, and each grows it
    assert "".join(deltas) == want
    assert chunks[-2]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert chunks[-1]["usage"] == r.json()["usage"]
    if cut:  # the tokens through the marker that ended it, as through a stop sequence
        marker = next(m for m in ("\nUser:", "\nAssistant:", "\n<|user|>") if m in script)
        assert r.json()["usage"]["completion_tokens"] == script.index(marker) + len(marker)


def test_a_partial_turn_marker_is_held_back_while_streaming():
    """Committed left to right, " Fine.\\nUs" may become "\\nUser:": nothing after "Fine." is
    streamed before the tokens show it does not (here: "\\nUsed" is kept)."""
    _, client = setup("plain", " Fine.\nUsed it.")
    with client:
        deltas, _ = streamed(client, {"messages": MESSAGES, "max_tokens": 15})
    joined = ""
    for d in deltas:
        joined += d
        assert "Fine.".startswith(joined) or joined.startswith("Fine.\nUsed"), deltas
    assert joined == "Fine.\nUsed it."


def test_a_stop_sequence_before_the_turn_still_cuts_first():
    _, client = setup("plain", " Fine.\nUser: I am a user now")
    body = {"messages": MESSAGES, "max_tokens": MAX_TOKENS}
    with client:
        for stop, text in ((["ne"], "Fi"), (["zz"], "Fine."), (["\n"], "Fine.")):
            r = client.post("/v1/chat/completions", json={**body, "stop": stop})
            assert r.json()["choices"][0]["message"]["content"] == text
            assert r.json()["choices"][0]["finish_reason"] == "stop"
            assert "".join(streamed(client, {**body, "stop": stop})[0]) == text


def test_a_turn_that_starts_before_a_stop_sequence_cuts_first_streamed_too():
    """The stop "se" is found in " Fine.\\nUse" while "\\nUse" may still become "\\nUser:",
    which starts first: streamed, nothing after "Fine." was final before the marker showed
    (the stream said "Fine.\\nU", the plain answer "Fine.")."""
    _, client = setup("plain", " Fine.\nUser: I am a user now")
    body = {"messages": MESSAGES, "max_tokens": MAX_TOKENS, "stop": ["se"]}
    with client:
        r = client.post("/v1/chat/completions", json=body)
        deltas, chunks = streamed(client, body)
    assert r.json()["choices"][0]["message"]["content"] == "Fine."
    assert "".join(deltas) == "Fine."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert r.json()["usage"]["completion_tokens"] == len(" Fine.\nUser:")
