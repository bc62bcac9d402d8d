"""Session 39's routes audit: the template tasks run the library's default steps (the server
writes what ``unmask infill`` / ``fill-form`` / ``api.infill`` write for the same seed), and
a form, schema or gap mapping sent as a JSON object with a key given twice is refused as the
same JSON sent as text is."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Mixer, loaded, tiny_config  # noqa: E402

from unmask import api  # noqa: E402
from unmask.config import SampleConfig  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402

TEMPLATE = "ab[MASK:100]cd"
"""More masks than the library's default steps (``SampleConfig.steps``, 64)."""


@pytest.fixture(scope="module")
def served() -> tuple[object, TestClient]:
    model = loaded(Mixer(tiny_config(max_seq_len=128)))
    with TestClient(create_app(model, access_log=False)) as client:
        yield model, client


def test_template_tasks_without_steps_write_what_the_library_writes(served):
    """``/v1/infill``, ``/v1/forms`` and ``/v1/edit`` without ``steps`` ran one step per
    masked token (100 forwards for ``[MASK:100]``) where ``unmask infill`` and
    ``api.infill`` run the library's 64: another text for the same template and seed. Now
    the same steps, the same text."""
    model, c = served
    assert SampleConfig.steps < 100
    for seed in (0, 3):
        opts = {"seed": seed, "temperature": 0.8}
        r = c.post("/v1/infill", json={"template": TEMPLATE, **opts})
        assert r.status_code == 200, r.text
        want = api.infill(model, TEMPLATE, config=opts)
        assert (r.json()["nfe"], r.json()["text"]) == (want.nfe, want.text)
    form = '{"a": "<text:50>", "b": "<text:40>"}'
    r = c.post("/v1/forms", json={"form": form, "seed": 1})
    assert r.status_code == 200, r.text
    want = api.fill_form(model, form, config={"seed": 1})
    assert (r.json()["nfe"], r.json()["text"]) == (want.nfe, want.text)
    text = "abcdefghijklmnopqrstuvwxyz" * 4
    r = c.post("/v1/edit", json={"text": text, "lowest": 90, "seed": 2, "temperature": 0.8})
    assert r.status_code == 200, r.text
    want = api.edit(model, text, lowest=90, config={"seed": 2, "temperature": 0.8})
    assert (r.json()["nfe"], r.json()["text"]) == (want.nfe, want.text)


def test_blocks_past_the_default_steps_still_run(served):
    """A sent ``block_length`` of more blocks with a gap than the default steps (100 blocks of
    1), which the library refuses at 64 steps, runs as before (a step per masked token), not
    a 400 about steps the client never sent; a sent ``steps`` stays the client's."""
    _, c = served
    r = c.post("/v1/infill", json={"template": TEMPLATE, "block_length": 1})
    assert r.status_code == 200, r.text
    assert r.json()["nfe"] == 100
    r = c.post("/v1/infill", json={"template": TEMPLATE, "block_length": 1, "steps": 64})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text


def test_the_default_steps_stay_within_max_steps():
    """Below the library's default, ``--max-steps`` still bounds a request without
    ``steps``."""
    app = create_app(loaded(Mixer(tiny_config(max_seq_len=128))), access_log=False,
                     limits=ServerLimits(max_steps=8))
    with TestClient(app) as c:
        r = c.post("/v1/infill", json={"template": TEMPLATE})
        assert r.status_code == 200 and r.json()["nfe"] == 8, r.text

