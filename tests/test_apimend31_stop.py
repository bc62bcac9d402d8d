"""``stop=`` of ``api.generate`` and ``api.chat`` ends a text where the server ends it, for
the same request: one rule (``unmask.chat.text_end``). A chat reply is searched as decoded,
after its leading whitespace, so a stop sequence that reaches into the trailing whitespace
the reply is stripped of, or past the template's turn marker, ends it on both sides (the
API used to strip and cut at the turn marker first, and missed those)."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, tiny_config  # noqa: E402
from test_server import sse_events  # noqa: E402
from torch import nn  # noqa: E402

from unmask import api  # noqa: E402
from unmask.chat import ChatTemplate  # noqa: E402
from unmask.server import create_app  # noqa: E402
from unmask.server.routes.completions import Reply, finish  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402

SCRIPT = " Hi there.\n\nUser: ok x.\n"
"""What the model writes after the prompt: leading and trailing whitespace, a turn marker
of the ``plain`` template and text past it."""


class Script(nn.Module):
    """A mask predictor sure of ``SCRIPT`` from canvas column ``start`` on (byte ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = tiny_config()
        self.ids = byte_tokenizer().encode(SCRIPT)
        self.start = 0

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        B, L = tokens.shape
        logits = torch.full((B, L, self.config.vocab_size), -10.0)  # (B, L, V)
        ids = [self.ids[min(max(p - self.start, 0), len(self.ids) - 1)] for p in range(L)]
        logits[:, torch.arange(L), torch.tensor(ids)] = 10.0
        return logits


def streamed(client: TestClient, path: str, body: dict) -> list[str]:
    """The joined text of every choice of a streamed request."""
    r = client.post(path, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    texts: dict[int, str] = {}
    for _, data in sse_events(r.text)[:-1]:
        for c in json.loads(data)["choices"]:
            piece = c["delta"].get("content") if "delta" in c else c["text"]
            texts[c["index"]] = texts.get(c["index"], "") + (piece or "")
    return [texts[i] for i in sorted(texts)]


CHAT_STOPS = {  # stop -> the reply both sides give
    ".\n": "Hi there",  # into the trailing whitespace the reply is stripped of
    "e.\n\nUser": "Hi ther",  # across the turn marker
    ("\nUser", "."): "Hi there",  # the stop starts first, the marker is the shorter match
    "ok": "Hi there.",  # past the turn marker: the marker ends the reply first
    " ": "Hi",  # the leading space is not searched
    (" Hi", "\n\n"): "Hi there.",
}


COMPLETION_STOPS = {  # no template: no whitespace skipped, none stripped, no turn marker
    ".\n": " Hi there",
    "\n\nUser": " Hi there.",
    " ": "",
    ("x.\n", "\n"): " Hi there.",
    "ok x.\n": " Hi there.\n\nUser: ",
    "\x00never": SCRIPT,
}


def test_api_stop_ends_texts_as_the_server_on_the_same_request():
    model = Script()
    m = loaded(model)
    n = len(SCRIPT)
    messages = [{"role": "user", "content": "Hi"}]
    chat_prompt = api.prompt_ids(m, "Hi", template="plain")[0]
    plain_prompt = api.prompt_ids(m, "Hi")[0]
    with TestClient(create_app(m, chat_template="plain")) as client:
        for stop, want in CHAT_STOPS.items():
            stop = list(stop) if isinstance(stop, tuple) else stop
            model.start = len(chat_prompt)
            body = {"messages": messages, "max_tokens": n, "stop": stop}
            r = client.post("/v1/chat/completions", json=body)
            server = r.json()["choices"][0]["message"]["content"]
            assert server == want, stop  # the server's rule, as before
            assert streamed(client, "/v1/chat/completions", body) == [want], stop
            config = {"gen_length": n}
            assert api.chat(m, messages, config=config, template="plain", stop=stop).text == want
            out = api.generate(m, "Hi", config=config, template="plain", stop=stop)
            assert out.texts == [want], stop
        model.start = len(plain_prompt)
        for stop, want in COMPLETION_STOPS.items():
            stop = list(stop) if isinstance(stop, tuple) else stop
            body = {"prompt": "Hi", "max_tokens": n, "stop": stop, "n": 2, "temperature": 1.0,
                    "seed": 3}
            server = [c["text"] for c in client.post("/v1/completions", json=body).json()[
                "choices"]]
            assert server == [want] * 2, stop
            assert streamed(client, "/v1/completions", body) == server, stop
            config = {"gen_length": n, "temperature": 1.0, "seed": 3}
            assert api.generate(m, "Hi", config=config, n=2, stop=stop).texts == server, stop


def test_the_server_and_the_api_cut_random_texts_alike():
    """The reviewer's fuzz: random generated ids (EOS or not) and stops, the server's
    ``finish`` against the API's cut (``ChatTemplate.reply`` with stops, ``cut_text``)."""
    from unmask.chat import cut_text, text_end

    tok = byte_tokenizer()
    eos = tok.special_ids()["eos_id"]
    template = ChatTemplate.with_tokens(api.chat_template(loaded(Script()), "plain").source,
                                        tok, bos_id=None, eos_id=eos)

    class State:
        pass

    state = State()
    state.tok = tok
    rng = random.Random(0)
    pieces = ["a", "b", ".", " ", "\n", "User:", "\nUser:", "x\n", "Hi", "ab.", "\n\n"]
    pool = ["a", ".", "\n", ".\n", "b ", " ", "x\nUser", "\nUs", "ab", "b.\n", "a b", "bb"]
    for _ in range(1500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        ids = tok.encode(text)
        if rng.random() < 0.5:
            ids = ids + [eos] + tok.encode(rng.choice(pieces))
        stops = rng.sample(pool, rng.randint(1, 3))
        raw = tok.decode(ids[: ids.index(eos)] if eos in ids else ids)
        server = finish(state, ids, stops, Reply("r", 0, False, [], frozenset({eos})))[0]
        assert server == cut_text(raw, stops), (text, stops)
        chat = Reply("r", 0, True, [], template.ends(tok, eos), template)
        server = finish(state, ids, stops, chat)[0]
        assert server == template.reply(tok, ids, eos, stops), (text, stops)
    plain = template
    assert text_end(" ab.\nUser: User:", [".\n"], plain) == (3, 5)
    assert plain.reply(tok, tok.encode("ab.\nUser: User:"), eos, [".\n"]) == "ab"
    assert plain.reply(tok, tok.encode("aab.\n\n"), eos, ["b.\n", "."]) == "aa"
