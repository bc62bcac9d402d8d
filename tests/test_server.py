"""The HTTP API in-process (FastAPI TestClient / httpx over ASGI): shapes, streaming,
infill/edit (plain and streamed), tokenize, batching, queue limits, timeouts, errors, auth
and metrics."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import (  # noqa: E402
    Broken,
    Echo,
    Gated,
    Stepped,
    bpe_tokenizer,
    echo_text,
    loaded,
    random_transformer,
    tiny_config,
    wait_until,
)

from unmask.chat import PLAIN_CHAT_TEMPLATE  # noqa: E402
from unmask.config import SampleConfig  # noqa: E402
from unmask.errors import UserError  # noqa: E402
from unmask.sampling import generate  # noqa: E402
from unmask.server import ServerLimits, create_app, render_chat  # noqa: E402
from unmask.server.batching import Cancelled, Engine, Job  # noqa: E402
from unmask.server.schemas import ChatMessage  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def echo_client():
    app = create_app(loaded(Echo(tiny_config())), limits=ServerLimits(max_steps=64, max_n=4),
                     chat_template="plain")
    with TestClient(app) as c:
        yield c


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of every server-sent event."""
    out = []
    for block in text.strip().split("\n\n"):
        event, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
        out.append((event, data))
    return out


def test_completion_shape_text_and_usage(echo_client):
    r = echo_client.post("/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 6})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["choices"] == [
        {"index": 0, "text": echo_text(2, 6), "finish_reason": "length", "logprobs": None}
    ]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
    assert body["nfe"] == 6  # one step per token by default


def test_prompt_list_n_and_stop(echo_client):
    r = echo_client.post(
        "/v1/completions", json={"prompt": ["Hi", "Hey"], "n": 2, "max_tokens": 8, "stop": ["f"]}
    )
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    # left-padded to 3 columns: both prompts see the same columns
    assert [c["text"] for c in choices] == ["de"] * 4
    assert all(c["finish_reason"] == "stop" for c in choices)


def test_stream_matches_plain_and_ends_with_done(echo_client):
    plain = echo_client.post(
        "/v1/completions", json={"prompt": "Hello", "max_tokens": 12, "stop": "mn"}
    ).json()
    r = echo_client.post(
        "/v1/completions",
        json={
            "prompt": "Hello",
            "max_tokens": 12,
            "stop": "mn",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == plain["choices"][0]["text"] == "fghijkl"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    # the tokens generated through the stop sequence ("fghijkl" + "mn"), as through an EOS
    assert chunks[-1]["usage"]["completion_tokens"] == 9


def streamed_texts(client: TestClient, path: str, body: dict) -> tuple[list[str], list]:
    """The joined text and last finish_reason of every choice of a streamed request."""
    r = client.post(path, json={**body, "stream": True})
    texts: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    for _, data in sse_events(r.text)[:-1]:
        for c in json.loads(data)["choices"]:
            piece = c["delta"].get("content") if "delta" in c else c["text"]
            texts[c["index"]] = texts.get(c["index"], "") + (piece or "")
            reasons[c["index"]] = c["finish_reason"] or reasons.get(c["index"])
    return [texts[i] for i in sorted(texts)], [reasons[i] for i in sorted(reasons)]


def test_a_stop_that_starts_earlier_but_completes_later_is_not_streamed(echo_client):
    """Echo writes "bcdefghijk" left to right (column 0 is the empty prompt's start token):
    "de" completes first, but "cdef" starts earlier, so the text is "b"; the stream had sent
    "bc" once "de" was found."""
    body = {"prompt": "", "max_tokens": 10, "steps": 10, "block_length": 1,
            "stop": ["cdef", "de"]}
    plain = echo_client.post("/v1/completions", json=body).json()["choices"][0]
    assert (plain["text"], plain["finish_reason"]) == ("b", "stop")
    assert streamed_texts(echo_client, "/v1/completions", body) == (["b"], ["stop"])


class Shuffled(torch.nn.Module):
    """A mask predictor sure of TEXT[p % len(TEXT)] at canvas column p (byte tokenizer ids),
    each column with its own confidence (a permutation from ``seed``): the commit order is
    random but fixed, the same for a streamed request and a plain one."""

    TEXT = "ab abc  bab cab a"

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.config = tiny_config()
        rng = torch.Generator().manual_seed(seed)
        order = torch.randperm(self.config.max_seq_len, generator=rng)
        self.sure = 10.0 - 0.01 * order.float()

    def forward(self, tokens, attention_mask=None):
        B, L = tokens.shape
        logits = torch.full((B, L, self.config.vocab_size), -10.0)
        ids = torch.tensor([4 + ord(self.TEXT[p % len(self.TEXT)]) for p in range(L)])
        logits[:, torch.arange(L), ids] = self.sure[:L]
        return logits


def test_streamed_text_equals_plain_text_under_random_stops_and_commit_orders():
    """Property: for random prompts, lengths, steps, block lengths, n, completions and chat,
    and overlapping stop sequences (pieces of the model's text), the joined stream is the
    plain answer, with the same finish_reason."""
    import random

    rng = random.Random(0)
    text = Shuffled.TEXT * 3
    for seed in range(4):
        app = create_app(loaded(Shuffled(seed)), chat_template="plain", access_log=False,
                         limits=ServerLimits(max_n=4))
        with TestClient(app) as c:
            for _ in range(25):
                max_tokens = rng.choice([4, 6, 8, 12, 16])
                stops = []
                for _ in range(rng.randint(1, 4)):
                    at = rng.randrange(len(Shuffled.TEXT))
                    stops.append(text[at: at + rng.randint(1, 5)])
                block = rng.choice([max_tokens, max_tokens // 2, 2])
                steps = max_tokens // block * rng.randint(1, block)  # whole steps per block
                body = {"max_tokens": max_tokens, "stop": stops, "n": rng.randint(1, 2),
                        "steps": steps, "block_length": block}
                if rng.random() < 0.5:
                    path = "/v1/completions"
                    body["prompt"] = "x" * rng.randint(0, 6)
                else:
                    path = "/v1/chat/completions"
                    body["messages"] = [{"role": "user", "content": "y" * rng.randint(1, 4)}]
                r = c.post(path, json=body)
                assert r.status_code == 200, (body, r.text)
                choices = r.json()["choices"]
                plain = [ch["message"]["content"] if "message" in ch else ch["text"]
                         for ch in choices]
                reasons = [ch["finish_reason"] for ch in choices]
                assert streamed_texts(c, path, body) == (plain, reasons), body


def test_stream_denoising_events(echo_client):
    r = echo_client.post(
        "/v1/completions",
        json={
            "prompt": "ab",
            "max_tokens": 8,
            "steps": 4,
            "stream": True,
            "stream_denoising": True,
        },
    )
    events = sse_events(r.text)
    steps = [json.loads(d) for e, d in events if e == "denoising.step"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    masked = [s["choices"][0]["masked"] for s in steps]
    assert masked == [6, 4, 2, 0]
    assert sum(len(s["choices"][0]["committed"]) for s in steps) == 8
    assert "".join(steps[-1]["choices"][0]["tokens"]) == echo_text(2, 8)
    assert events[-1] == (None, "[DONE]")


def test_chat_plain_and_stream(echo_client):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ]
    prompt = "System: Be brief.\nUser: Hi\nAssistant:"
    r = echo_client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 5})
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": echo_text(len(prompt), 5),
    }
    r = echo_client.post(
        "/v1/chat/completions", json={"messages": msgs, "max_tokens": 5, "stream": True}
    )
    chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == echo_text(
        len(prompt), 5
    )


class StopReply(torch.nn.Module):
    """A mask predictor sure of REPLY[i] at the i-th column after the prompt's last ':' (the
    plain template's "Assistant:"), in byte tokenizer ids; its commits go left to right."""

    REPLY = "It is 17 and more"

    def __init__(self) -> None:
        super().__init__()
        self.config = tiny_config()

    def forward(self, tokens, attention_mask=None):
        B, L = tokens.shape
        logits = torch.full((B, L, self.config.vocab_size), -10.0)
        for b in range(B):
            colon = max(i for i in range(L) if int(tokens[b, i]) == 4 + ord(":"))
            for i in range(colon + 1, L):
                reply = self.REPLY[(i - colon - 1) % len(self.REPLY)]
                logits[b, i, 4 + ord(reply)] = 10.0 - 0.01 * (i - colon)  # earlier: surer
        return logits


def test_a_streamed_chat_reply_cut_by_a_stop_joins_to_the_plain_reply():
    """The space before a stop sequence was streamed while the stop was still held back, and
    the plain reply (stripped) ended before it: the chunks joined to "It is " against "It is"."""
    app = create_app(loaded(StopReply()), chat_template="plain")
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12, "stop": ["17"]}
    with TestClient(app) as c:
        plain = c.post("/v1/chat/completions", json=body).json()
        assert plain["choices"][0]["message"]["content"] == "It is"
        r = c.post("/v1/chat/completions", json={**body, "stream": True})
        chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
        joined = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks
                         if ch["choices"])
        assert joined == "It is"


def test_request_wide_checks_and_stop_lengths_are_said_plainly(echo_client):
    """A check across fields read "the request body must be a JSON object (...)", and an
    empty stop sequence "Input should be a valid string"."""
    base = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    r = echo_client.post("/v1/chat/completions", json={**base, "max_completion_tokens": 5})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("max_completion_tokens: max_tokens (4) and "
                                            "max_completion_tokens (5) differ; give one")
    for stop in ([""], "", ["x" * 65]):
        r = echo_client.post("/v1/chat/completions", json={**base, "stop": stop})
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "stop", err
        assert err["message"].startswith("stop: a stop sequence is 1 to 64 characters, got ")


def test_render_chat_default_and_template():
    msgs = [ChatMessage(role="user", content="Hi"), ChatMessage(role="assistant", content="Yo")]
    assert render_chat(msgs) == "User: Hi\nAssistant: Yo\nAssistant:"
    template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert render_chat(msgs, template) == "<user>Hi<assistant>Yo<assistant>"


def test_seed_gives_same_output(echo_client):
    # Echo is certain, so temperature changes nothing; the point is the request is accepted
    # and runs alone (seeded sampling is never batched).
    body = {"prompt": "x", "max_tokens": 4, "temperature": 1.0, "seed": 7}
    a = echo_client.post("/v1/completions", json=body).json()
    b = echo_client.post("/v1/completions", json=body).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"] and a["batch_rows"] == 1


def test_infill_and_edit(echo_client):
    r = echo_client.post("/v1/infill", json={"template": "The [MASK:3] sat."})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "infill"
    assert (
        body["text"].startswith("The ")
        and body["text"].endswith(" sat.")
        and len(body["text"]) == 12
    )
    assert body["gaps"][0]["text"] == body["text"][4:7] == echo_text(4, 3)
    r = echo_client.post("/v1/edit", json={"text": "The cat sat.", "spans": [[4, 7]]})
    body = r.json()
    assert body["text"] == "The " + echo_text(4, 3) + " sat."
    assert body["changes"] == [{"round": 1, "start": 4, "end": 7, "old": "cat",
                                "new": echo_text(4, 3)}]
    r = echo_client.post("/v1/edit", json={"text": "The cat sat.", "regex": "c.t"})
    assert r.json()["spans"] == [[4, 7]]
    r = echo_client.post("/v1/edit", json={"text": "The cat sat.", "spans": [[4, 70]]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = echo_client.post("/v1/infill", json={"template": "no gaps [MASK:0"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ('{"prompt": ', 400, None, "invalid_json"),
        ('{"prompt": "x", "bogus": 1}', 400, "bogus", "unknown_field"),
        (
            '{"messages": [{"role": "user", "content": "x", "extra": 1}]}',
            400,
            "messages.0.extra",
            "unknown_field",
        ),
        ('{"prompt": "x", "max_tokens": 0}', 400, "max_tokens", "invalid_value"),
        ('{"prompt": "x", "max_tokens": 64}', 400, "max_tokens", "context_length_exceeded"),
        ('{"prompt": "x", "temperature": 5}', 400, "temperature", "invalid_value"),
        ('{"prompt": "x", "n": 5}', 400, "n", "invalid_value"),
        ('{"prompt": "x", "steps": 65}', 400, "steps", "invalid_value"),
        ('{"prompt": "x", "max_tokens": 6, "block_length": 4}', 400, "max_tokens", "invalid_value"),
        ('{"prompt": "x", "policy": "nope"}', 400, "policy", "invalid_value"),
        ('{"prompt": "x", "cache": "nope"}', 400, "cache", "invalid_value"),
        ('{"prompt": "x", "max_tokens": "4"}', 400, "max_tokens", "invalid_value"),
        ('{"prompt": "x", "max_tokens": true}', 400, "max_tokens", "invalid_value"),
        ('{"prompt": "x", "n": "2"}', 400, "n", "invalid_value"),
        ('{"prompt": "x", "stream": "yes"}', 400, "stream", "invalid_value"),
        ('{"prompt": "x", "temperature": "0.5"}', 400, "temperature", "invalid_value"),
        ('{"prompt": "x", "top_p": 0.5}', 400, "top_p", "invalid_value"),
        ('{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', 400, "stop", "invalid_value"),
        ('{"prompt": "x", "stream_denoising": true}', 400, "stream_denoising", "invalid_value"),
        ('{"prompt": "x", "model": "gpt-4"}', 404, "model", "model_not_found"),
        ("[1, 2]", 400, None, "invalid_value"),
        ("", 400, None, "missing_field"),
    ],
)
def test_bad_requests_get_openai_errors(echo_client, body, status, param, code):
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    r = echo_client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["code"] == code
    assert "Traceback" not in err["message"]


def test_chat_takes_max_completion_tokens(echo_client):
    msgs = [{"role": "user", "content": "Hi"}]
    a = echo_client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 5})
    b = echo_client.post("/v1/chat/completions",
                         json={"messages": msgs, "max_completion_tokens": 5})
    assert b.status_code == 200, b.text
    assert a.json()["choices"] == b.json()["choices"]
    assert len(b.json()["choices"][0]["message"]["content"]) == 5
    r = echo_client.post("/v1/chat/completions",
                         json={"messages": msgs, "max_tokens": 4, "max_completion_tokens": 5})
    assert r.status_code == 400 and "differ" in r.json()["error"]["message"]


def test_a_chat_request_without_max_tokens_gets_a_whole_reply_as_unmask_chat_writes():
    """OpenAI's chat has no max_tokens default of 16 (that is its completions'), and chat
    clients often send none: the reply is as long as ``unmask chat`` writes without
    --gen-length (the library's 64 here), cut to the room the messages leave in the context."""
    msgs = [{"role": "user", "content": "Hi"}]
    for context in (256, 64):
        app = create_app(loaded(Echo(tiny_config(context))), limits=ServerLimits(max_steps=64),
                         chat_template="plain")
        with TestClient(app) as c:
            r = c.post("/v1/chat/completions", json={"messages": msgs})
            completions = c.post("/v1/completions", json={"prompt": "Hi"})
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        room = context - usage["prompt_tokens"]
        assert usage["completion_tokens"] == min(SampleConfig().gen_length, room) == (
            64 if context == 256 else room)
        assert r.json()["choices"][0]["finish_reason"] == "length"
        assert completions.json()["usage"]["completion_tokens"] == 16  # OpenAI's, unchanged


@pytest.mark.parametrize(("body", "headers", "message", "code"), [
    (b'{"prompt": "x"}', {}, "Content-Type: application/json", "invalid_value"),
    (b"", {"content-type": "application/json"}, "the request body is empty", "missing_field"),
    (b'{"prompt": "\xff"}', {"content-type": "application/json"}, "not valid JSON",
     "invalid_json"),
    (b"[" * 5000 + b"]" * 5000, {"content-type": "application/json"}, "not valid JSON",
     "invalid_json"),
    (b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}", {"content-type": "application/json"},
     "not valid JSON", "invalid_json"),
])
def test_bodies_that_are_not_json_objects_say_what_is_wrong(echo_client, body, headers, message,
                                                           code):
    r = echo_client.post("/v1/completions", content=body, headers=headers)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["code"] == code and err["param"] is None


def test_null_options_take_their_defaults(echo_client):
    body = {"prompt": "x", "max_tokens": None, "n": None, "stream": None, "temperature": None,
            "stop": None, "seed": None, "policy": None}
    r = echo_client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"] == echo_client.post(
        "/v1/completions", json={"prompt": "x"}).json()["choices"]
    assert len(r.json()["choices"]) == 1 and len(r.json()["choices"][0]["text"]) == 16


def test_oversize_body_wrong_method_unknown_path(echo_client):
    r = echo_client.post(
        "/v1/completions", content=b"x" * (2 << 20), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert echo_client.get("/v1/completions").status_code == 405
    r = echo_client.get("/etc/passwd")
    assert r.status_code == 404 and "error" in r.json()
    assert echo_client.get("/healthz").json()["status"] == "ok"
    assert echo_client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    assert "<html" in echo_client.get("/").text.lower()


def test_metrics_text(echo_client):
    echo_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 4})
    text = echo_client.get("/metrics").text
    assert 'unmask_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert "unmask_queue_depth 0" in text
    assert 'unmask_request_latency_seconds_bucket{endpoint="/v1/completions",le="+Inf"}' in text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and line[0] != "#"
    }
    assert values["unmask_nfe_total"] >= 4 and values["unmask_completion_tokens_total"] >= 4


@pytest.mark.parametrize("key", ["clé-secrète", " padded ", "tab\tkey", "new\n"])
def test_an_api_key_no_client_can_send_is_refused_at_startup(key):
    """A non-ASCII key or one with spaces at its ends started, then answered every request
    401: Starlette reads the header as latin-1, the key was compared as UTF-8, unstripped."""
    with pytest.raises(UserError, match="API key must be printable ASCII") as e:
        create_app(loaded(Echo(tiny_config())), api_key=key)
    assert "\n" not in str(e.value) and key.strip() not in str(e.value)  # not echoed


def test_an_api_key_is_compared_as_the_header_bytes():
    """Inner spaces are fine; a header's non-ASCII bytes (latin-1) never match, and are a
    401, not an error."""
    with TestClient(create_app(loaded(Echo(tiny_config())), api_key="two words")) as c:
        ok = c.get("/v1/models", headers={"Authorization": "Bearer two words "})
        assert ok.status_code == 200
        for raw in ("Bearer two wordsé".encode(), "Bearer two wordsé".encode("latin-1")):
            assert c.get("/v1/models", headers=[(b"authorization", raw)]).status_code == 401


def test_api_key():
    app = create_app(loaded(Echo(tiny_config())), api_key="s3cret")
    with TestClient(app) as c:
        body = {"prompt": "x", "max_tokens": 2}
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert (
            c.post(
                "/v1/completions", json=body, headers={"Authorization": "Bearer wrong"}
            ).status_code
            == 401
        )
        assert c.get("/metrics").status_code == 401
        assert (
            c.post(
                "/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"}
            ).status_code
            == 200
        )
        assert c.get("/healthz").status_code == 200


def test_model_error_is_a_500_and_the_server_lives_on():
    app = create_app(loaded(Broken(tiny_config())))
    with TestClient(app, raise_server_exceptions=False) as c:
        for _ in range(2):
            r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
            assert r.status_code == 500
            assert r.json()["error"]["code"] == "model_error" and "secret" not in r.text
        assert c.get("/healthz").status_code == 200


async def _until(cond, timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out waiting"
        await asyncio.sleep(0.005)


def test_concurrent_requests_join_the_running_batch_and_match_alone():
    """Three requests sent while another runs join its batch at the next step (four rows
    share each forward from then on); at temperature 0 each gets exactly what it gets alone."""
    inner = random_transformer()
    gated = Gated(inner)
    app = create_app(loaded(gated), limits=ServerLimits(max_batch=8, batch_wait_s=0.0))
    engine = app.state.engine
    prompts = ["x", "hello", "abc"]

    async def main() -> list[dict]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            first = asyncio.create_task(
                c.post("/v1/completions", json={"prompt": "zz", "max_tokens": 4})
            )
            await _until(lambda: engine.in_flight == 1)
            rest = [
                asyncio.create_task(c.post("/v1/completions", json={"prompt": p, "max_tokens": 8}))
                for p in prompts
            ]
            await _until(lambda: engine.queue_depth == 3)
            gated.gate.set()
            out = await asyncio.gather(first, *rest)
            return [r.json() for r in out]

    try:
        results = asyncio.run(main())
    finally:
        gated.gate.set()
        engine.close()
    assert [r["batch_rows"] for r in results] == [4, 4, 4, 4]
    assert app.state.metrics.get("joined") == 3
    assert [r["nfe"] for r in results] == [4, 8, 8, 8]  # each request's own steps
    # the first alone for one step, then three forwards of all four, then five of the three
    assert gated.calls == 1 + 3 + 5
    tok = byte_tokenizer()
    cfg = inner.config
    for p, r in zip(prompts, results[1:], strict=True):
        alone = generate(
            inner,
            tok.encode(p),
            SampleConfig(gen_length=8, steps=8),
            mask_id=cfg.mask_id,
            pad_id=cfg.pad_id,
            eos_id=cfg.eos_id,
        )
        assert r["choices"][0]["text"] == alone.texts(tok)[0]


def test_full_queue_answers_429_and_timeout_504():
    gated = Gated(Echo(tiny_config()))
    app = create_app(loaded(gated), limits=ServerLimits(max_batch=1, max_queue=1, batch_wait_s=0.0))
    engine = app.state.engine

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            body = {"prompt": "x", "max_tokens": 2}
            a = asyncio.create_task(c.post("/v1/completions", json=body))
            await _until(lambda: engine.in_flight == 1)
            b = asyncio.create_task(c.post("/v1/completions", json=body))
            await _until(lambda: engine.queue_depth == 1)
            rejected = await c.post("/v1/completions", json=body)
            gated.gate.set()
            return [rejected, *(await asyncio.gather(a, b))]

    try:
        rejected, a, b = asyncio.run(main())
    finally:
        gated.gate.set()
        engine.close()
    assert rejected.status_code == 429
    assert rejected.json()["error"]["type"] == "rate_limit_error"
    assert a.status_code == b.status_code == 200
    assert app.state.metrics.get("rejected") == 1

    gated = Gated(Echo(tiny_config()))
    app = create_app(loaded(gated), limits=ServerLimits(request_timeout_s=0.1))
    try:
        with TestClient(app) as c:
            r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
            gated.gate.set()
            assert (
                c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
            )
    finally:
        gated.gate.set()


def test_engine_cancel_drops_queued_job_and_stops_batch():
    seen: list[list[list[int]]] = []
    from unmask.sampling import DecoderRun

    class Endless(DecoderRun):  # a run alone that would take 999 steps
        done = False

        def advance(self):
            time.sleep(0.001)  # the engine stops it once every job is cancelled

    def start_run(rows, config, *, step_callback=None):
        seen.append(rows)
        return Endless()

    engine = Engine(start_run, max_batch=1, max_queue=4, batch_wait_s=0.0)
    try:
        running = Job(rows=[[1]], config=SampleConfig())
        queued = Job(rows=[[2]], config=SampleConfig())
        engine.submit(running)
        t0 = time.monotonic()
        while engine.in_flight == 0 and time.monotonic() - t0 < 5:
            time.sleep(0.001)
        engine.submit(queued)
        engine.cancel(queued)
        with pytest.raises(Cancelled):
            queued.future.result(timeout=5)
        engine.cancel(running)
        with pytest.raises(Cancelled):
            running.future.result(timeout=5)
        assert seen == [[[1]]]  # the queued job never ran
    finally:
        engine.close()


def test_openapi_and_penalty_ranges(echo_client):
    assert "/v1/completions" in echo_client.get("/openapi.json").json()["paths"]
    ok = {"prompt": "x", "max_tokens": 2, "presence_penalty": 0, "frequency_penalty": None}
    assert echo_client.post("/v1/completions", json=ok).status_code == 200
    assert echo_client.post("/v1/completions", json={**ok, "presence_penalty": 0.5,
                                                     "repetition_penalty": 1.2}).status_code == 200
    for field, bad in (("presence_penalty", 2.5), ("frequency_penalty", -3),
                       ("repetition_penalty", 0)):
        r = echo_client.post("/v1/completions", json={**ok, field: bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_serve_command_user_errors(capsys):
    from unmask.cli import main

    assert main(["serve", "--model", "/no/such/run"]) == 2
    assert main(["serve", "--model", "/no/such/run", "--port", "0"]) == 2
    assert "error" in capsys.readouterr().err


def test_causal_checkpoint_decodes_token_by_token():
    import torch

    from unmask.config import model_preset
    from unmask.model import Transformer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(
        model_preset(
            "tiny",
            vocab_size=tok.vocab_size,
            max_seq_len=32,
            attention="causal",
            **tok.special_ids(),
        )
    ).eval()
    with TestClient(create_app(loaded(model))) as c:
        body = {"prompt": ["hi", ""], "max_tokens": 5, "top_p": 0.9, "temperature": 1.0, "seed": 3}
        a, b = (c.post("/v1/completions", json=body).json() for _ in range(2))
        assert len(a["choices"]) == 2 and a["choices"] == b["choices"]  # seeded: reproducible
        r = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4, "stream": True})
        assert sse_events(r.text)[-1] == (None, "[DONE]")
        r = c.post("/v1/infill", json={"template": "a [MASK:2] b"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported"
        # an option of the denoising loop is a 400 naming it, streamed or not (a streamed
        # request got 200 and an error event: the refusal came when the job started)
        for stream in (False, True):
            for option in ({"block_length": 4}, {"steps": 5}, {"policy": "threshold"},
                           {"threshold": 0.5}):  # fmt: skip
                r = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 8,
                                                    "stream": stream, **option})  # fmt: skip
                assert r.status_code == 400, (option, r.text)
                assert r.json()["error"]["param"] == next(iter(option)), r.text


def test_chat_template_special_tokens_are_encoded_as_their_ids():
    """A template's special tokens (here ``eos_token``) reach the model as one id each, as
    transformers encodes them, not as the characters of their text; a failing template is a 400
    with its one-line reason."""
    import dataclasses

    template = "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
    model = Echo(dataclasses.replace(tiny_config(), chat_template=template))
    with TestClient(create_app(loaded(model))) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        )
        body = r.json()
        assert body["usage"]["prompt_tokens"] == len("Hi") + 1
        assert body["choices"][0]["message"]["content"] == echo_text(len("Hi") + 1, 4)
    bad = Echo(
        dataclasses.replace(tiny_config(), chat_template="{{ raise_exception('no system turns') }}")
    )
    with TestClient(create_app(loaded(bad))) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        )
        assert r.status_code == 400
        assert "no system turns" in r.json()["error"]["message"]


def test_special_token_text_in_a_chat_message_is_plain_text():
    """A client's ``[EOS]`` / ``[BOS]`` in a message is text (it reached the model as the
    tokens: a forged end of turn); the template's own ``eos_token`` is one id."""
    import dataclasses

    tok = byte_tokenizer()
    template = "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
    model = Echo(dataclasses.replace(tiny_config(), chat_template=template))
    typed = "Hi [EOS] [BOS] [MASK]"
    with TestClient(create_app(loaded(model))) as c:
        r = c.post("/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": typed}], "max_tokens": 4})
        assert r.status_code == 200, r.text
        n = len(tok.encode(typed)) + 1
        assert r.json()["usage"]["prompt_tokens"] == n == len(typed) + 1
        assert r.json()["choices"][0]["message"]["content"] == echo_text(n, 4)


def test_chat_message_fields_openai_clients_send():
    """``content: null`` is said plainly (it read "Field required"), ``tool_choice: "none"``
    is accepted (no tools), and a ``name`` reaches a template that renders it, or is a 400
    from one that does not (it was dropped silently)."""
    import dataclasses

    hi = {"role": "user", "content": "Hi"}
    with TestClient(create_app(loaded(Echo(tiny_config())), chat_template="plain")) as c:
        def post(**body):
            return c.post("/v1/chat/completions", json={"max_tokens": 2, **body})

        r = post(messages=[hi, {"role": "assistant", "content": None}])
        err = r.json()["error"]
        assert r.status_code == 400 and "content is null" in err["message"], r.text
        assert "tool_calls" in err["message"] and "\n" not in err["message"]
        assert post(messages=[hi], tool_choice="none").status_code == 200
        r = post(messages=[hi], tool_choice="auto")
        assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
        r = post(messages=[{**hi, "name": "ann"}])
        assert r.status_code == 400 and "does not render message names" in r.text
    named = "{% for m in messages %}{{ m.name or m.role }}: {{ m.content }}{% endfor %}"
    model = Echo(dataclasses.replace(tiny_config(), chat_template=named))
    with TestClient(create_app(loaded(model))) as c:
        r = c.post("/v1/chat/completions",
                   json={"messages": [{**hi, "name": "ann"}], "max_tokens": 2})
        assert r.json()["usage"]["prompt_tokens"] == len("ann: Hi")


def test_a_chat_stop_is_found_in_the_reply_not_in_the_space_before_it():
    """The plain template leaves the space after ``Assistant:`` to the model; the reply drops
    it, so ``stop: [" "]`` cuts at the reply's first space (it gave an empty reply), streamed
    or not."""
    import dataclasses

    tok = byte_tokenizer()
    config = dataclasses.replace(tiny_config(), chat_template=PLAIN_CHAT_TEMPLATE)
    start = len("User: Hi\nAssistant:")
    script = tok.encode(" Hi there more")
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": len(script),
            "stop": [" "]}
    with TestClient(create_app(loaded(Scripted(config, script, start)))) as c:
        r = c.post("/v1/chat/completions", json=body).json()
        assert r["choices"][0]["message"]["content"] == "Hi"
        assert r["choices"][0]["finish_reason"] == "stop"
        assert r["usage"]["completion_tokens"] == len(" Hi ")  # through the stop sequence
        r = c.post("/v1/chat/completions", json={**body, "stream": True})
        chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
        assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks
                       if ch["choices"]) == "Hi"


def test_tokenize_counts_a_prompt_as_completions_do():
    """A ``[MASK]`` is one blank token (it counted as the 6 characters' tokens), the count is
    the completion's ``prompt_tokens``, and ``[MASK:3]``, a 400 in a prompt, is one here."""
    tok = bpe_tokenizer()
    with TestClient(create_app(loaded(random_transformer(tokenizer=tok), tok))) as c:
        text = "The [MASK] sat on the mat."
        body = c.post("/v1/tokenize", json={"text": text}).json()
        done = c.post("/v1/completions", json={"prompt": text, "max_tokens": 2}).json()
        assert body["count"] == done["usage"]["prompt_tokens"] == len(
            tok.encode("The")) + 1 + len(tok.encode(" sat on the mat."))
        assert tok.mask_id in body["tokens"]
        for path, field in (("/v1/tokenize", "text"), ("/v1/completions", "prompt")):
            r = c.post(path, json={field: "a [MASK:3] b", "max_tokens": 2}
                       if field == "prompt" else {field: "a [MASK:3] b"})
            assert r.status_code == 400 and "gap of the infill syntax" in r.text, r.text
            assert "use POST /v1/infill" in r.text and "api.infill" not in r.text  # not the CLI
            assert r.json()["error"]["param"] in (field, None)


def test_tokenize_matches_the_tokenizer():
    tok = bpe_tokenizer()
    app = create_app(
        loaded(random_transformer(tokenizer=tok), tok), limits=ServerLimits(max_prompt_chars=100)
    )
    with TestClient(app) as c:
        text = "The cat sat on the mat. Xylophones?"
        r = c.post("/v1/tokenize", json={"model": "tiny", "text": text})
        assert r.status_code == 200
        body = r.json()
        assert body["tokens"] == tok.encode(text) and body["count"] == len(body["tokens"]) < len(
            text
        )
        assert (
            body["pieces"] == [tok.decode([i]) for i in body["tokens"]]
            and "".join(body["pieces"]) == text
        )
        assert " cat" in body["pieces"]  # merged with its space, as BPE does
        assert c.post("/v1/tokenize", json={"text": ""}).json()["count"] == 0
        long = "xyzw " * 19  # 95 characters, more tokens than the context of 64
        assert c.post("/v1/tokenize", json={"text": long}).json()["count"] == len(
            tok.encode(long)) > 64  # counted, context or not (docs/serving.md)
        for bad, status, code, param in [
            ({"text": "x", "bogus": 1}, 400, "unknown_field", "bogus"),
            ({}, 400, "missing_field", "text"),
            ({"text": 5}, 400, "invalid_value", "text"),
            ({"text": "x" * 101}, 400, "too_long", "text"),
            ({"text": "x", "model": "gpt-4"}, 404, "model_not_found", "model"),
        ]:
            r = c.post("/v1/tokenize", json=bad)
            assert r.status_code == status, (bad, r.text)
            assert r.json()["error"]["code"] == code and r.json()["error"]["param"] == param
        assert 'endpoint="/v1/tokenize",status="200"' in c.get("/metrics").text
    with TestClient(create_app(loaded(Echo(tiny_config())), api_key="k")) as c:
        assert c.post("/v1/tokenize", json={"text": "hi"}).status_code == 401
        r = c.post("/v1/tokenize", json={"text": "hé"}, headers={"Authorization": "Bearer k"})
        assert r.json()["tokens"] == [
            4 + b for b in "hé".encode()
        ]  # the byte tokenizer: 4 specials, then bytes


def infill_stream(client: TestClient, body: dict) -> tuple[list[dict], dict]:
    """(denoising.step events, the final body) of a streamed infill; checks the framing."""
    r = client.post("/v1/infill", json={**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]")
    steps = [json.loads(d) for e, d in events[:-2]]
    assert [e for e, _ in events[:-2]] == ["denoising.step"] * len(steps)
    final = events[-2]
    assert final[0] is None
    return steps, json.loads(final[1])


def test_streamed_infill_sends_each_step_then_the_plain_result():
    with TestClient(create_app(loaded(random_transformer()))) as c:
        # fixed lengths: one sampling run over the whole canvas, one event per step
        body = {"template": "The [MASK:3] sat on [MASK:2].", "temperature": 0}
        plain = c.post("/v1/infill", json=body).json()
        steps, final = infill_stream(c, body)
        assert final == plain
        assert [s["step"] for s in steps] == [1, 2, 3, 4, 5] and plain["nfe"] == 5
        rows = [s["choices"][0] for s in steps]
        assert all(s["object"] == "denoising.step" and len(s["choices"]) == 1 for s in steps)
        assert [r["masked"] for r in rows] == [4, 3, 2, 1, 0]
        assert [len(r["committed"]) for r in rows[1:]] == [
            1,
            1,
            1,
            1,
        ]  # one commit per step after the first
        assert [r["tokens"][:4] for r in rows] == [
            ["T", "h", "e", " "]
        ] * 5  # the template text is on the canvas
        assert "".join(rows[-1]["tokens"]) == plain["text"]  # the last step is the filled template
        # variable lengths (several canvas rows, one per candidate length) and seeded sampling
        for extra in ({"temperature": 0}, {"temperature": 1.0, "seed": 3}):
            body = {"template": "a [MASK:1-3] b [MASK:2]", "steps": 2, **extra}
            plain = c.post("/v1/infill", json=body).json()
            steps, final = infill_stream(c, body)
            assert final == plain
            assert len(steps[0]["choices"]) == 3 and steps[-1]["choices"][0]["masked"] == 0
        # a template the worker rejects is a plain 400 before any event; so is an unknown field
        r = c.post("/v1/infill", json={"template": "a [MASK:0] b", "stream": True})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value"
        r = c.post("/v1/infill", json={"template": "a [MASK:2] b", "stream": "yes please"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_streamed_infill_stops_when_the_client_goes():
    from test_server_openai import live_server

    stepped = Stepped(random_transformer())
    app = create_app(loaded(stepped))
    engine, metrics = app.state.engine, app.state.metrics
    body = {"template": "x [MASK:30] y", "stream": True}
    with live_server(app) as port:
        url = f"http://127.0.0.1:{port}/v1/infill"
        # gone mid-stream: after the first event
        stepped.allow(1)
        with httpx.stream("POST", url, json=body, timeout=10) as r:
            assert r.status_code == 200
            first = next(line for line in r.iter_lines() if line.startswith("data: "))
            assert json.loads(first[len("data: ") :])["step"] == 1
        # the response's disconnect listener drops the job with no step to send: permits
        # only once it has (given while it had not, a loaded machine ran every step first)
        wait_until(lambda: metrics.get("cancelled") == 1)
        stepped.allow(2)
        wait_until(lambda: engine.in_flight == 0 and metrics.get("cancelled") == 1)
        assert len(stepped.sizes) < 30, stepped.sizes
        # gone before the first step (the response starts with it): the handler notices too
        while stepped.permits.acquire(blocking=False):  # permits left over from above
            pass
        entered = stepped.entered
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url, json=body, timeout=0.3)
        wait_until(lambda: metrics.get("cancelled") == 2)
        stepped.allow(3)
        wait_until(lambda: engine.in_flight == 0)
        assert stepped.entered - entered <= 1  # the step under way (if begun) ends the work


def test_chat_without_a_chat_template_is_refused_as_the_cli_refuses():
    """A base model (no ``chat_template``) gets a 400 in OpenAI's shape, plain and streamed,
    as ``unmask chat`` refuses it; choosing a template for the server (``plain``) serves it."""
    msgs = [{"role": "user", "content": "Hi"}]
    with TestClient(create_app(loaded(Echo(tiny_config())))) as c:
        for stream in (False, True):
            r = c.post("/v1/chat/completions", json={"messages": msgs, "stream": stream})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == "unsupported" and err["type"] == "invalid_request_error"
            assert "has no chat template" in err["message"] and "\n" not in err["message"]
            assert "--chat-template" in err["message"]
        assert c.get("/v1/models").json()["data"][0]["chat"] is False
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
        r = c.post("/v1/chat/completions", json={"messages": msgs, "model": "gpt-4"})
        assert r.status_code == 404  # the model check comes first, as for every endpoint
    with TestClient(create_app(loaded(Echo(tiny_config())), chat_template="plain")) as c:
        r = c.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 3})
        assert r.json()["choices"][0]["message"]["content"] == echo_text(
            len("User: Hi\nAssistant:"), 3
        )
        assert c.get("/v1/models").json()["data"][0]["chat"] is True
    with pytest.raises(UserError, match="no such file"):
        create_app(loaded(Echo(tiny_config())), chat_template="/no/such/template.jinja")


class Scripted(torch.nn.Module):
    """Sure of ``script[p - start]`` at canvas column p >= start (byte tokenizer ids)."""

    def __init__(self, config, script: list[int], start: int) -> None:
        super().__init__()
        self.config, self.script, self.start = config, script, start

    def forward(self, tokens, attention_mask=None):
        B, L = tokens.shape
        logits = torch.full((B, L, self.config.vocab_size), -10.0)
        for p in range(self.start, min(L, self.start + len(self.script))):
            logits[:, p, self.script[p - self.start]] = 10.0
        return logits


def test_chat_replies_end_and_strip_as_the_library_does():
    """A chat answer ends at the template's end-of-turn token (here BOS, which the template
    writes) and is stripped, as ``ChatTemplate.reply`` (``unmask chat``, ``generate --chat``)
    makes it; streamed chunks join to the same text."""
    import dataclasses

    from unmask.chat import ChatTemplate

    tok = byte_tokenizer()
    template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
    config = dataclasses.replace(tiny_config(), chat_template=template)
    start = 1 + len("Hi")  # BOS, then the message
    script = tok.encode("  Hi there ") + [config.bos_id] + tok.encode(" more")
    with TestClient(create_app(loaded(Scripted(config, script, start)))) as c:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": len(script)}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        content = r.json()["choices"][0]["message"]["content"]
        expected = ChatTemplate.with_tokens(template, tok, bos_id=config.bos_id,
                                            eos_id=config.eos_id).reply(tok, script, config.eos_id)
        assert content == expected == "Hi there"
        assert r.json()["choices"][0]["finish_reason"] == "stop"
        r = c.post("/v1/chat/completions", json={**body, "stream": True})
        chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
        assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks) == content
        # completions are not chat: the text is left as written, up to EOS only
        r = c.post("/v1/completions", json={"prompt": "\x00Hi", "max_tokens": len(script)})
        assert r.json()["choices"][0]["text"].startswith("  Hi there ")


def test_completion_tokens_count_the_token_that_ended_the_text():
    """``usage.completion_tokens`` counts the generated tokens through the one that ended the
    text: the EOS (it was left out, while ``unmask generate`` counts it and OpenAI and vLLM
    count the token that ends a completion), a chat template's end-of-turn token (and the
    whitespace the reply drops: generated all the same), or the stop sequence; every token
    when the text ran to ``max_tokens``. Streamed ``usage``, the metrics and the access log
    count the same."""
    import dataclasses

    from unmask import api

    tok = byte_tokenizer()
    template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
    config = dataclasses.replace(tiny_config(), chat_template=template)
    start = 1 + len("Hi")  # BOS, then the message (and the prompt "\x00Hi" of completions)
    script = tok.encode(" Hi there") + [config.eos_id] + tok.encode(" more")
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": len(script)}
    text = {"prompt": "\x00Hi", "max_tokens": len(script)}
    model = Scripted(config, script, start)
    with TestClient(create_app(loaded(model))) as c:
        cases = [(chat, {}, len(" Hi there") + 1), (text, {}, len(" Hi there") + 1),
                 (text, {"stop": "er"}, len(" Hi ther")), (chat, {"stop": ["e", "th"]},
                                                          len(" Hi th")),
                 (text, {"max_tokens": 4}, 4)]
        for url, body, extra, n in [("/v1/chat/completions" if b is chat else
                                     "/v1/completions", b, e, n) for b, e, n in cases]:
            r = c.post(url, json={**body, **extra})
            assert r.json()["usage"]["completion_tokens"] == n, (extra, r.json())
            r = c.post(url, json={**body, **extra, "stream": True,
                                  "stream_options": {"include_usage": True}})
            last = json.loads(sse_events(r.text)[-2][1])
            assert last["usage"]["completion_tokens"] == n, (extra, last)
        metrics = c.get("/metrics").text
    assert "unmask_completion_tokens_total 76" in metrics  # 2 × (10 + 10 + 8 + 6 + 4)
    # as the command line counts the same generation
    cfg = SampleConfig(gen_length=len(script), temperature=0.0)
    assert api.generate(loaded(model), ["\x00Hi"], config=cfg).n_tokens == len(" Hi there") + 1


def test_openai_fields_are_accepted_at_their_neutral_values_only(echo_client):
    """Some clients always send ``logprobs: false`` and the like: those were 400
    ``unknown_field``; a value that asks for something unmask does not do stays a 400.
    Completions' ``logprobs`` is a count at OpenAI (0 to 5): its 0 asks for nothing too
    (it was refused); chat's is a boolean, where 0 stays a 400."""
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    text = {"prompt": "x", "max_tokens": 2}
    neutral = [{"logprobs": False}, {"logprobs": None}, {"logit_bias": {}},
               {"logit_bias": None}]
    for extra in [*neutral, {"echo": False}, {"best_of": 1}, {"best_of": None},
                  {"logprobs": 0}]:
        r = echo_client.post("/v1/completions", json={**text, **extra})
        assert r.status_code == 200, (extra, r.text)
    for extra in neutral:
        r = echo_client.post("/v1/chat/completions", json={**chat, **extra})
        assert r.status_code == 200, (extra, r.text)
    for extra in [{"logprobs": True}, {"logprobs": 1}, {"logprobs": 5}, {"echo": True},
                  {"best_of": 2}, {"best_of": True}, {"logit_bias": {"50": 10}}]:
        r = echo_client.post("/v1/completions", json={**text, **extra})
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == next(iter(extra)), (extra, err)
        assert "unsupported" in err["message"], err
    r = echo_client.post("/v1/chat/completions", json={**chat, "logprobs": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs", r.text


CHAT_NEUTRAL = [
    {"tools": None}, {"tools": []}, {"tool_choice": "none"}, {"tool_choice": None},
    {"parallel_tool_calls": True}, {"parallel_tool_calls": False},
    {"parallel_tool_calls": None}, {"functions": []}, {"function_call": "none"},
    {"top_logprobs": None}, {"top_logprobs": 0}, {"store": False}, {"store": None},
    {"metadata": None}, {"metadata": {}}, {"service_tier": "auto"}, {"service_tier": None},
    {"service_tier": "default"}, {"modalities": ["text"]}, {"modalities": None},
    {"audio": None}, {"prediction": None}, {"reasoning_effort": None}, {"verbosity": "medium"},
    {"web_search_options": None}, {"user": "u-1"}, {"safety_identifier": "h"},
    {"prompt_cache_key": "k"}, {"prompt_cache_retention": "in_memory"},
    {"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}},
]
CHAT_UNSUPPORTED = [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "no tool calls"),
    ({"tool_choice": "auto"}, "no tool calls"), ({"tool_choice": "required"}, "no tool calls"),
    ({"functions": [{"name": "f"}]}, "no function calls"),
    ({"parallel_tool_calls": 1}, "no tool calls"), ({"top_logprobs": 3}, "no logprobs"),
    ({"store": True}, "stores no completions"), ({"metadata": {"a": "b"}}, "stores no"),
    ({"service_tier": "flex"}, "one tier"), ({"modalities": ["text", "audio"]}, "text only"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "text only"),
    ({"prediction": {"type": "content", "content": "x"}}, "predicted outputs"),
    ({"reasoning_effort": "low"}, "reasoning effort"), ({"verbosity": "low"}, "verbosity"),
    ({"web_search_options": {}}, "search the web"),
]


def test_neutral_values_of_openai_chat_fields_are_accepted(echo_client):
    """OpenAI clients send ``tools: null``, ``store: false``, ``service_tier: "auto"``, ...:
    each was 400 ``unknown field``. Now accepted (they ask for nothing), on completions too
    where OpenAI has them (``user``, ``suffix: ""``)."""
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    for extra in CHAT_NEUTRAL:
        r = echo_client.post("/v1/chat/completions", json={**chat, **extra})
        assert r.status_code == 200, (extra, r.text)
    for extra in [{"suffix": None}, {"suffix": ""}, {"user": "u"}, {"safety_identifier": "h"}]:
        r = echo_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, **extra})
        assert r.status_code == 200, (extra, r.text)


@pytest.mark.parametrize("extra,why", CHAT_UNSUPPORTED)
def test_openai_chat_fields_that_ask_for_something_are_unsupported(echo_client, extra, why):
    """A real tool (docs: "a 400 that says it is unsupported") said "unknown field 'tools'"."""
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    r = echo_client.post("/v1/chat/completions", json={**chat, **extra})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "unsupported", (extra, err)
    assert err["param"] == next(iter(extra)), err
    assert err["message"].startswith(f"{next(iter(extra))}: unsupported"), err
    assert why in err["message"], err


def test_completion_suffix_points_to_infill(echo_client):
    r = echo_client.post("/v1/completions", json={"prompt": "a", "suffix": "b"})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "unsupported", err
    assert err["param"] == "suffix" and "/v1/infill" in err["message"], err


def test_an_unknown_stream_options_key_is_named(echo_client):
    """``stream_options: {"foo": 1}`` said "stream_options.foo: Input should be
    'include_usage'"."""
    r = echo_client.post("/v1/completions", json={"prompt": "x", "stream": True,
                                                   "stream_options": {"foo": 1}})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "unknown_field", err
    assert err["message"] == "unknown field 'stream_options.foo'", err
    assert err["param"] == "stream_options.foo", err
    r = echo_client.post("/v1/completions", json={"prompt": "x", "stream": True,
                                                   "stream_options": {"include_usage": 1}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "stream_options.include_usage", r.text


@pytest.mark.parametrize("path,body,param,message", [
    ("/v1/completions", {"prompt": []}, "prompt", "at least 1 item"),
    ("/v1/chat/completions",
     {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages.0.content.0.type", "Input should be 'text'"),
    ("/v1/completions", {"prompt": 5}, "prompt", "a prompt is a string"),
])
def test_a_union_field_reports_the_member_its_type_matched(echo_client, path, body, param,
                                                          message):
    """An empty prompt list said "Input should be a valid string" (the string member's
    error, pydantic's first)."""
    r = echo_client.post(path, json=body)
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == param and message in err["message"], err


def test_a_bd3lm_chat_with_less_than_a_block_of_room_blames_the_messages():
    """Less room than one block after the messages: no max_tokens can fit (a bd3lm canvas is
    whole blocks), so the 400 names the messages and says to shorten them; it advised
    "max_tokens <= 3", itself refused as no multiple of the block size 4."""
    import dataclasses

    from unmask.model import Transformer

    config = dataclasses.replace(tiny_config(), attention="block-causal", block_size=4,
                                 objective="bd3lm")
    torch.manual_seed(0)
    app = create_app(loaded(Transformer(config).eval()), chat_template="plain")
    with TestClient(app) as c:
        for n, fits in ((40, True), (44, False)):
            r = c.post("/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "x" * n}]})
            if fits:  # sent no max_tokens: what fits, whole blocks
                assert r.status_code == 200, r.text
                assert r.json()["usage"]["completion_tokens"] % 4 == 0
                continue
            err = r.json()["error"]
            assert r.status_code == 400 and err["param"] == "messages", err
            assert "shorten the prompt" in err["message"] and "<=" not in err["message"], err
            sent = c.post("/v1/completions", json={"prompt": "x" * 59, "max_tokens": 8})
            err = sent.json()["error"]  # 59 + 8 > 64: room 5, one block of 4
            assert err["param"] == "max_tokens" and "use max_tokens <= 4," in err["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_llada2_block_layout_refusals_come_before_a_stream(stream):
    """A checkpoint whose blocks count from the first prompt token (LLaDA 2.x,
    ``block_align: absolute``) refuses steps that do not split over the blocks its tokens
    span: the server asks the decoder's own check (``blocks.plan_blocks``) first, so streamed
    they are 400s too (they were a 200 and an error event; plain, the steps line named a
    gen_length 12 for max_tokens 7). Prompts of unequal lengths modulo its block size run in
    groups (tests/test_llada2server33_groups.py): served, streamed or not."""
    import dataclasses

    from unmask.model import Transformer

    config = dataclasses.replace(tiny_config(), attention="block-causal", block_size=4,
                                 objective="bd3lm", block_align="absolute")
    torch.manual_seed(0)
    with TestClient(create_app(loaded(Transformer(config).eval()))) as c:
        r = c.post("/v1/completions", json={"prompt": ["ab", "abc"], "max_tokens": 8,
                                            "stream": stream})
        assert r.status_code == 200, r.text
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 7, "steps": 7,
                                            "stream": stream})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"].startswith(
            "steps (7) must be a multiple of the number of blocks the 7 new tokens span (3:")
        # steps not sent (one per token) are rounded to the blocks, not refused (unsent)
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 7, "stream": stream})
        assert r.status_code == 200, r.text
        ok = c.post("/v1/completions", json={"prompt": ["ab", "abcdef"], "max_tokens": 6,
                                             "steps": 6, "stream": stream})
        assert ok.status_code == 200, ok.text


def test_a_message_key_that_is_null_or_empty_counts_as_absent(echo_client):
    """A Hugging Face export carries ``"tool_calls": null`` on every message: absent, as
    ``unmask chat`` and SFT read it (``unmask.chat.present_keys``); a real tool call is still
    a 400 naming the field."""
    for extra in ({"tool_calls": None}, {"tool_calls": []}, {"refusal": ""}):
        msg = {"role": "user", "content": "hi", **extra}
        r = echo_client.post("/v1/chat/completions", json={"messages": [msg], "max_tokens": 4})
        assert r.status_code == 200, (extra, r.text)
    msg = {"role": "user", "content": "hi", "tool_calls": [{"id": "x"}]}
    r = echo_client.post("/v1/chat/completions", json={"messages": [msg], "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.tool_calls"
