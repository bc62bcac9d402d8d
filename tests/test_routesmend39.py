"""Review of session 39's routes change: an edit's later round counts its blocks as the first
does (at the default steps, ``lowest`` 40 over a long text in blocks of 1 stopped after round
1); structured output on completions and chat keeps one step per masked token, as a plain
completion; the server's retry of the default steps keys on the library's typed refusal
(``FewerStepsThanBlocks``) and scores an edit's ``lowest`` once where it can know before; a
key given twice is looked for after the size checks."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Mixer, Recording, loaded, tiny_config  # noqa: E402

from unmask import api  # noqa: E402
from unmask.config import SampleConfig  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402

LONG = "abcdefghijklmnopqrstuvwxyz" * 8
"""208 tokens (byte tokenizer): its 40 least confident lie far apart."""


@pytest.fixture(scope="module")
def served() -> tuple[Recording, object, TestClient]:
    model = Recording(Mixer(tiny_config(max_seq_len=512)))
    lo = loaded(model)
    with TestClient(create_app(lo, access_log=False, chat_template="plain")) as client:
        yield model, lo, client


def test_a_later_round_counts_the_blocks_its_tokens_are_in(served):
    """Round 1 of ``lowest`` 40 in blocks of 1 runs its 40 blocks in the default 64 steps (the
    fill counts the blocks holding a re-masked token); round 2 counted every block from its
    first token to its last (about 200, "more than the 64 steps") and the revision stopped
    after round 1, in ``api.edit`` (so ``unmask edit``) and on ``/v1/edit`` alike. Now every
    round runs, and the server writes what the library writes."""
    _, lo, c = served
    want = api.edit(lo, LONG, lowest=40, rounds=2, config={"block_length": 1}).detail
    assert want.stopped is None and want.rounds == 2, want.stopped
    assert {ch.round for ch in want.changes} == {1, 2}
    r = c.post("/v1/edit", json={"text": LONG, "lowest": 40, "rounds": 2, "block_length": 1})
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["rounds"], got["stopped"], got["nfe"], got["text"]) == (
        2, None, want.nfe, want.text)


def test_structured_output_on_completions_runs_a_step_per_masked_token(served):
    """Without ``steps``, structured output on completions and chat runs one step per masked
    token up to ``--max-steps``, as a plain completion on those endpoints does (no command
    fills a schema after a prompt to match): a 30-boolean array ran 64 steps, not its
    masks. ``/v1/infill`` keeps the library's default, as ``unmask infill``."""
    _, _, c = served
    schema = {"type": "array", "items": {"type": "boolean"}, "minItems": 30, "maxItems": 30}
    body = {"max_tokens": 200, "guided_json": schema, "seed": 1, "temperature": 0.7}
    for path, extra in (("/v1/completions", {"prompt": "x"}),
                        ("/v1/chat/completions",
                         {"messages": [{"role": "user", "content": "x"}]})):
        r = c.post(path, json={**body, **extra})
        assert r.status_code == 200, r.text
        nfe = r.json()["nfe"]
        assert nfe > SampleConfig.steps, (path, nfe)
        same = c.post(path, json={**body, **extra, "steps": nfe}).json()  # as if sent
        assert same["nfe"] == nfe and same["choices"] == r.json()["choices"]
    infill = {"template": "x [MASK:200]", "guided_json": schema}
    r = c.post("/v1/infill", json=infill)
    assert r.status_code == 200, r.text
    same = c.post("/v1/infill", json={**infill, "steps": SampleConfig.steps}).json()
    assert (r.json()["nfe"], r.json()["text"]) == (same["nfe"], same["text"])
    assert r.json()["nfe"] < nfe  # (its refill of a broken span on top of the 64)


def test_an_edit_of_lowest_over_the_default_steps_scores_its_text_once(served):
    """``lowest`` 100 in blocks of 1 cannot fit the default 64 steps (100 blocks at least):
    the server ran it at 64, the fill refused it after the scoring, and it ran again at one
    step per masked token, scoring the text twice (114 forwards for an ``nfe`` of 107). Now
    it goes to those steps at once: every forward is counted, and the answer is the one the
    retry gave, the library's at those steps."""
    model, lo, c = served
    model.sizes.clear()
    r = c.post("/v1/edit", json={"text": LONG, "lowest": 100, "block_length": 1})
    assert r.status_code == 200, r.text
    assert len(model.sizes) == r.json()["nfe"]
    want = api.edit(lo, LONG, lowest=100, config={"block_length": 1, "steps": 512})
    assert (r.json()["text"], r.json()["nfe"]) == (want.text, want.nfe)


def test_the_retry_reads_the_refusals_type_not_its_words(served, monkeypatch):
    """The server retried the default steps where the fill's message matched a pattern: the
    library's refusal is now ``FewerStepsThanBlocks``, and a rewording of its line leaves
    the retry (and the steps' 400 where ``--max-steps`` cannot cover the blocks) as they
    are."""
    from unmask.errors import UserError
    from unmask.infill import FewerStepsThanBlocks

    e = FewerStepsThanBlocks(64, 100, 100, 1)
    assert isinstance(e, UserError) and str(e) == (
        "steps (64) must be at least the number of blocks (100: the 100 tokens from the first "
        "gap to the last in blocks of 1): each block with a gap takes a step; try 100 steps or "
        "block_length 2")
    with pytest.raises(FewerStepsThanBlocks) as caught:
        api.infill(served[1], "ab[MASK:100]cd", config={"block_length": 1})
    assert (caught.value.steps, caught.value.blocks, caught.value.fitting_block_length) == (
        64, 100, 2)
    monkeypatch.setattr(FewerStepsThanBlocks, "message", lambda self: "reworded")
    _, _, c = served
    r = c.post("/v1/infill", json={"template": "ab[MASK:100]cd", "block_length": 1})
    assert r.status_code == 200 and r.json()["nfe"] == 100, r.text
    app = create_app(served[1], access_log=False, limits=ServerLimits(max_steps=50))
    with TestClient(app) as small:
        r = small.post("/v1/infill", json={"template": "ab[MASK:100]cd", "block_length": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "block_length", r.text
    assert r.json()["error"]["message"].endswith("send block_length 2"), r.text


def raw_post(c: TestClient, path: str, body: str) -> object:
    return c.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/forms", '{"form": {"a": "<bool>", "a": "<bool>", "b": "%s"}}', "form"),
    ("/v1/forms", '{"schema": {"type": "object", "properties": {"a": {"type": "integer"}, '
                  '"a": {"type": "string"}}, "description": "%s"}}', "schema"),
    ("/v1/completions", '{"prompt": "x", "max_tokens": 8, "guided_json": {"type": "object", '
                        '"type": "array", "description": "%s"}}', "guided_json"),
    ("/v1/infill", '{"template": "x [MASK:8]", "guided_json": {"type": "object", '
                   '"type": "array", "description": "%s"}}', "guided_json"),
])
def test_an_oversized_field_is_refused_for_its_size_before_its_keys_are_read(path, body,
                                                                              param):
    """A form or schema over ``--max-prompt-chars`` is a ``too_long`` 400, found without
    reading the body again for keys given twice (that parse, some 100 ms for a 1 MiB form,
    ran first, and the request was refused for its repeated key instead)."""
    app = create_app(loaded(Mixer(tiny_config(max_seq_len=128))), access_log=False,
                     chat_template="plain", limits=ServerLimits(max_prompt_chars=100))
    with TestClient(app) as c:
        r = raw_post(c, path, body % ("x" * 200))
        assert r.status_code == 400, r.text
        assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("too_long", param)
        r = raw_post(c, path, body % "x")  # within the size: the repeat is the 400
        assert r.status_code == 400 and "is given twice" in r.json()["error"]["message"]


def test_a_repeat_in_a_pretty_printed_body_is_placed_by_line_and_character_column():
    """The line and column of a key given twice in an indented, non-ASCII body are the
    line's and its characters' (an emoji counts 1), as Python's ``json`` counts them."""
    form = '{\n  "ville": "<choice:Orléans|Nîmes>",\n  "note 😀": "<bool>", "ville": "<bool>"\n}'
    body = json.dumps({"form": "FORM"}, indent=2).replace('"FORM"', form.replace("\n", "\n  "))
    app = create_app(loaded(Mixer(tiny_config(max_seq_len=128))), access_log=False)
    with TestClient(app) as c:
        r = raw_post(c, "/v1/forms", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "form", r.text
    at = body.index('"ville"', body.index('"ville"') + 1)
    line, column = body[:at].count("\n") + 1, at - body.rfind("\n", 0, at)
    assert (line, column) == (4, 25)  # in UTF-16 units 26, in UTF-8 bytes 28
    assert (f"the key 'ville' is given twice in one object, the second time at line {line} "
            f"column {column} of the request body") in r.json()["error"]["message"]
