"""A step count that is a cap stays one: infill in blocks takes at most the steps asked for
(they were rounded up to a multiple of the blocks), and the server's ``--max-steps`` bounds
a dynamic-policy completion that sends no ``steps`` (it ran one forward per token)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from server_helpers import Echo, Recording, loaded, random_transformer, tiny_config

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill import InfillOptions, infill, parse_template
from unmask.infill import fill as fill
from unmask.infill.fill import search_calls
from unmask.infill.template import plan_template
from unmask.tokenizer import byte_tokenizer

TEMPLATE = "a [MASK:30] b"


def _echo() -> Recording:
    """Echo (ASCII letters: no gap constraint ever breaks, so no refill) counting forwards."""
    return Recording(Echo(tiny_config()))


@pytest.mark.parametrize(("steps", "forwards"), [
    (10, 10),  # 30 masks in 4 blocks of 8: was rounded up to 12
    (8, 8),  # a multiple of the blocks: as before
    (13, 13),  # was 16
    (64, 32),  # an even share of 8 a block fits in 64: one token a step, as before the cap
])
def test_infill_in_blocks_takes_at_most_the_steps_asked(steps, forwards):
    model = _echo()
    res = infill(model, byte_tokenizer(), TEMPLATE, SampleConfig(steps=steps, block_length=8))
    assert len(model.sizes) == forwards and res.nfe == forwards
    assert res.repaired == 0 and len(res.gaps[0].tokens) == 30  # every mask filled


def test_infill_with_a_dynamic_policy_keeps_the_cap():
    model = _echo()  # sure, but below 1.0 in float32: no proposal passes the bar, it binds
    res = infill(model, byte_tokenizer(), TEMPLATE,
                 SampleConfig(steps=10, block_length=8, policy="threshold", threshold=1.0))
    assert len(model.sizes) == res.nfe == 10 and res.repaired == 0  # was 12


def test_fewer_steps_than_blocks_is_one_line():
    with pytest.raises(UserError) as e:
        infill(_echo(), byte_tokenizer(), TEMPLATE, SampleConfig(steps=3, block_length=8))
    message = str(e.value)
    assert "\n" not in message
    assert "steps (3) must be at least the number of blocks (4" in message
    assert "try 4 steps or block_length 10" in message


def test_a_length_search_in_blocks_runs_within_the_steps_asked(monkeypatch):
    """Every run of a length search in blocks takes at most the steps asked for (5 over 2
    blocks were rounded up to 6), and ``search_calls`` counts them so."""
    runs: list[int] = []
    real = fill.sample

    def sample(*args, **kwargs):
        res = real(*args, **kwargs)
        runs.append(res.steps)
        return res

    monkeypatch.setattr(fill, "sample", sample)
    tok = byte_tokenizer()
    template = "ab [MASK:4-8] c [MASK:4-8] d"
    config = SampleConfig(steps=5, block_length=4)
    options = InfillOptions(max_joint=1)  # one gap at a time: runs of one gap's masks
    plan = plan_template(parse_template(template), tok, max_seq_len=64)
    need = search_calls(plan, config, options, mask_id=tok.mask_id, pad_id=tok.pad_id)
    assert need == 20  # was 23: 2 runs of 6 steps (rounded up) where 5 run
    infill(_echo(), tok, template, config, options=options)
    assert runs and max(runs) <= 5, runs


# -- the server --------------------------------------------------------------------------------


def _client(most: int, model) -> Any:
    """A test client of a server of ``model`` under ``--max-steps most``."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    return TestClient(create_app(loaded(model), limits=ServerLimits(max_steps=most),
                                 chat_template="plain"))


NO_BAR = {"policy": "threshold", "threshold": 1.0}  # a random model passes no bar: the bound


def test_max_steps_caps_a_dynamic_completion_that_sends_no_steps():
    model = Recording(random_transformer())
    with _client(16, model) as c:
        for path, body in (("/v1/completions", {"prompt": "Hi", "max_tokens": 48}),
                           ("/v1/completions", {"prompt": "Hi", "max_tokens": 48,
                                                "block_length": 8}),
                           ("/v1/completions", {"prompt": "Hi", "max_tokens": 48,
                                                "stream": True}),
                           ("/v1/chat/completions", {"max_tokens": 40, "messages": [
                               {"role": "user", "content": "Hi"}]})):
            model.sizes.clear()
            r = c.post(path, json={**body, **NO_BAR})
            assert r.status_code == 200, (body, r.text)
            assert len(model.sizes) == 16, body  # was 48 (40): one per token
            if not body.get("stream"):
                assert r.json()["nfe"] == r.json()["steps"] == 16
        model.sizes.clear()  # within the limit: as before
        r = c.post("/v1/completions", json={"prompt": "Hi", **NO_BAR, "max_tokens": 12})
        assert r.status_code == 200 and len(model.sizes) == 12, r.text


def test_prompt_masks_count_against_max_steps_under_a_dynamic_policy():
    """A dynamic policy's first block takes up to a forward per [MASK] of the prompt on top of
    its steps: the server cuts the steps by them (12 forwards at --max-steps 8 before), and
    where nothing is left the 400 names the prompt."""
    model = Recording(random_transformer())
    with _client(8, model) as c:
        for extra in ({}, {"steps": 8}, {"stream": True}):
            model.sizes.clear()
            r = c.post("/v1/completions", json={"prompt": "Hi [MASK][MASK][MASK][MASK] x",
                                                "max_tokens": 8, **NO_BAR, **extra})
            assert r.status_code == 200, (extra, r.text)
            assert len(model.sizes) <= 8, extra
        r = c.post("/v1/completions", json={"prompt": "Hi" + "[MASK]" * 8, "max_tokens": 8,
                                            **NO_BAR})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
        assert "[MASK] tokens" in r.json()["error"]["message"]


@pytest.mark.parametrize("guided", [{"guided_regex": "[a-z]{8}", "max_tokens": 8},
                                    {"guided_json": {"type": "object", "required": ["a"],
                                                     "properties": {"a": {"type": "integer"}}},
                                     "max_tokens": 20},
                                    {"guided_choice": ["abc", "de"], "max_tokens": 8}])
def test_structured_output_with_prompt_masks_stays_within_max_steps(guided):
    """Structured output's prompt is locked context (``fill_form``'s ``prefix_ids``): its
    [MASK] tokens were filled too, a dynamic policy's first block taking a forward per mask on
    top of the steps (12 forwards of a regex, 16 of a schema at --max-steps 8), the fill thrown
    away. They stay masks now, and the run takes at most --max-steps forwards."""
    model = Recording(random_transformer())
    with _client(8, model) as c:
        for extra in ({}, {"steps": 8}, {"stream": True}):
            model.sizes.clear()
            r = c.post("/v1/completions", json={"prompt": "Hi [MASK][MASK][MASK][MASK] x",
                                                **guided, **NO_BAR, **extra})
            assert r.status_code == 200, (extra, r.text)
            assert 1 <= len(model.sizes) <= 8, (extra, len(model.sizes))
            if not extra.get("stream"):
                assert r.json()["nfe"] == len(model.sizes)


def test_a_forms_locked_text_keeps_its_masks():
    """``fill_form``'s text around and between the holes is never filled: a [MASK] in the
    prompt stays one, and only the holes' masks take steps."""
    from unmask.infill import fill_form
    from unmask.tokenizer import byte_tokenizer

    tok, model = byte_tokenizer(), Recording(random_transformer())
    prompt = [*tok.encode("Hi "), *[tok.mask_id] * 3, *tok.encode(" x")]
    seen: list[list[int]] = []
    res = fill_form(model, tok, {"a": "<int:1..9>"}, SampleConfig(steps=4, **NO_BAR),
                    prefix_ids=prompt, step_callback=lambda i, t: seen.append(t[0].tolist()))
    assert res.nfe == len(model.sizes) <= 4 and isinstance(res.value["a"], int)
    assert all(row[: len(prompt)] == prompt for row in seen)  # the prompt as it was sent


def test_more_blocks_than_max_steps_is_a_400_naming_block_length():
    model = Recording(random_transformer())
    with _client(16, model) as c:
        r = c.post("/v1/completions", json={"prompt": "Hi", **NO_BAR, "max_tokens": 48,
                                            "block_length": 2})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "block_length" and "\n" not in err["message"]
        assert "24 blocks" in err["message"] and "--max-steps (16)" in err["message"]
        assert "send block_length 3, or max_tokens <= 32" in err["message"]
        assert model.sizes == []
        for fix in ({"block_length": 3}, {"max_tokens": 32}):  # what it says to send runs
            r = c.post("/v1/completions", json={"prompt": "Hi", **NO_BAR, "max_tokens": 48,
                                                "block_length": 2, **fix})
            assert r.status_code == 200, (fix, r.text)


ADVICE_CASES = [
    ("/v1/infill", {"template": TEMPLATE}),
    ("/v1/infill", {"template": TEMPLATE, "guided_regex": "[a-z]{20}"}),
    ("/v1/forms", {"form": {"a": "<text:20>", "b": "<int>"}}),
    ("/v1/forms", {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}}),
    ("/v1/edit", {"text": "hello world, this is a longer text", "spans": [[0, 30]]}),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 40, "guided_regex": "[a-z]{30}"}),
]


@pytest.mark.parametrize(("path", "body"), ADVICE_CASES)
def test_fewer_steps_than_blocks_advises_nothing_past_max_steps(path, body):
    """A client that sends ``steps`` equal to ``--max-steps`` with blocks too short for them
    was told "try 15 steps or block_length 4": 15 steps is a 400 of its own. The advice is the
    longer blocks only, and following it runs; ``steps`` the server allows are still advised."""
    with _client(8, _echo()) as c:
        r = c.post(path, json={**body, "steps": 8, "block_length": 2})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert "try" not in err["message"] and "--max-steps is 8" in err["message"], err
        assert err["param"] == "block_length"
        fix = re.search(r"send block_length (\d+)$", err["message"])
        assert fix, err["message"]
        r = c.post(path, json={**body, "steps": 8, "block_length": int(fix[1])})
        assert r.status_code == 200, r.text
        assert r.json()["nfe"] <= 8
    with _client(64, _echo()) as c:  # within --max-steps: the library's advice, as it was
        r = c.post(path, json={**body, "steps": 8, "block_length": 2})
        assert r.status_code == 400, r.text
        assert re.search(r"; try \d+ steps or block_length", r.json()["error"]["message"])
        assert r.json()["error"]["param"] == "steps"


def test_playground_options_report_the_capped_steps():
    with _client(16, Echo(tiny_config())) as c:
        r = c.get("/playground/options", params={"max_tokens": 48, "policy": "threshold"})
        assert r.status_code == 200, r.text
        assert r.json()["complete"]["steps"] == 16 and r.json()["refused"] is None  # was 48
        r = c.get("/playground/options", params={"max_tokens": 12, "policy": "threshold"})
        assert r.json()["complete"]["steps"] == 12


def test_infill_in_blocks_stays_within_max_steps():
    """The server's infill sends steps = --max-steps; in blocks they were rounded up to a
    multiple of the blocks: 30 masks in 15 blocks of 2 under --max-steps 16 ran 30."""
    model = _echo()
    with _client(16, model) as c:
        for block_length in (2, 8):
            model.sizes.clear()
            r = c.post("/v1/infill", json={"template": TEMPLATE, "block_length": block_length})
            assert r.status_code == 200, r.text
            assert r.json()["nfe"] == len(model.sizes) == 16, block_length


@pytest.mark.parametrize(("align", "fits"), [("pad", 24), ("absolute", 22)])
def test_a_bd3lm_dynamic_completion_is_capped_or_names_max_tokens(align, fits):
    """bd3lm's blocks are the model's: 32 tokens in blocks of 4 under --max-steps 6 are too
    many blocks, a 400 naming max_tokens with the most that fits (after "ab", LLaDA 2.x's
    absolute blocks first complete the prompt's block: 2 + 5 x 4 = 22); 16 tokens (4 or 5
    blocks) run in 6 forwards, not 16."""
    import dataclasses

    import torch

    from unmask.model import Transformer

    config = dataclasses.replace(tiny_config(), attention="block-causal", block_size=4,
                                 objective="bd3lm", block_align=align)
    torch.manual_seed(0)
    model = Recording(Transformer(config).eval())
    with _client(6, model) as c:
        r = c.post("/v1/completions", json={"prompt": "ab", **NO_BAR, "max_tokens": 32})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "max_tokens" and f"send max_tokens <= {fits}" in err["message"]
        assert model.sizes == []
        r = c.post("/v1/completions", json={"prompt": "ab", **NO_BAR, "max_tokens": fits})
        assert r.status_code == 200 and r.json()["nfe"] <= 6, r.text
        model.sizes.clear()
        r = c.post("/v1/completions", json={"prompt": "ab", **NO_BAR, "max_tokens": 16})
        assert r.status_code == 200, r.text
        assert r.json()["nfe"] == len(model.sizes) == 6  # was 16


def test_infill_with_more_blocks_than_max_steps_names_block_length():
    """At --max-steps 3, 30 masks in 4 blocks of 8 ran 4 steps (rounded up past the limit);
    now a 400 in the server's words: the client sent no steps and cannot raise the limit,
    so it is offered longer blocks; that runs within the limit."""
    model = _echo()
    with _client(3, model) as c:
        for path, body in (("/v1/infill", {"template": TEMPLATE}),
                           ("/v1/forms", {"form": {"a": "<text:20>"}})):
            r = c.post(path, json={**body, "block_length": 8 if "template" in body else 4})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == "block_length", err
            assert err["message"].startswith("steps (3: the server's --max-steps, none sent) "
                                             "must be at least the number of blocks"), err
            assert "try" not in err["message"] and "; send block_length " in err["message"]
        assert model.sizes == []
        r = c.post("/v1/infill", json={"template": TEMPLATE, "block_length": 10})
        assert r.status_code == 200 and len(model.sizes) == r.json()["nfe"] == 3, r.text
        r = c.post("/v1/infill", json={"template": TEMPLATE, "block_length": 8, "steps": 3})
        assert r.status_code == 400, r.text  # sent: 4 steps would pass --max-steps 3 too
        assert r.json()["error"]["message"].endswith(
            "and the server's --max-steps is 3: send block_length 10"), r.text


def test_a_continuous_completion_that_sends_no_steps_is_capped():
    """An embed-diffusion checkpoint's denoising steps (one per token when none are sent) ran
    whatever their number under --max-steps: 16 tokens at --max-steps 8 ran 16 forwards.
    Now at most 8, the length kept (the steps are not per token there: nothing to refuse)."""
    import dataclasses

    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(), objective="embed-diffusion")).eval()
    forwards: list[int] = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    with _client(8, model) as c:
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 16})
        assert r.status_code == 200, r.text
        assert r.json()["steps"] == 8 and len(forwards) == r.json()["nfe"] == 8  # was 16
        assert r.json()["usage"]["completion_tokens"] <= 16
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 16, "steps": 4})
        assert r.status_code == 200 and r.json()["steps"] == 4, r.text  # sent: as sent
