"""``/v1/edit`` runs at most the server's ``--max-steps`` forwards, scoring, steps, refills
and every round together (it ran steps and refills per round on top of the scoring: 24, 36
and 26 forwards at ``--max-steps 8``); ``api.edit(max_calls=...)`` is that bound in the
library; rounds that cannot fit it are one line."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from server_helpers import Recording, loaded, random_transformer

from unmask import api
from unmask.errors import UserError
from unmask.server import create_app
from unmask.server.state import ServerLimits

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def model():
    return Recording(random_transformer())


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(loaded(model), limits=ServerLimits(max_steps=8))) as c:
        yield c


@pytest.mark.parametrize("body", [
    {"text": ALPHABET * 2, "lowest": 40},  # 2 scoring forwards, steps, refills: was 24
    {"text": ALPHABET, "lowest": 10, "rounds": 4},  # 4 rounds: was 36
    {"text": ALPHABET, "spans": [[2, 20]]},  # 8 steps and an 18-token refill: was 26
    {"text": ALPHABET, "spans": [[2, 20]], "steps": 8, "block_length": 6},
    {"text": ALPHABET, "lowest": 5, "rounds": 2, "steps": 8, "policy": "threshold"},
])
def test_edit_forwards_within_max_steps(client, model, body):
    model.sizes.clear()
    r = client.post("/v1/edit", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(model.sizes) == out["nfe"] <= 8
    assert out["nfe"] >= out["rounds"] * 2 if "lowest" in body else out["nfe"] >= 1
    if "spans" in body:  # text outside the span kept
        assert out["text"].startswith("ab") and out["text"].endswith(ALPHABET[20:])


def test_rounds_share_the_budget(client, model):
    model.sizes.clear()
    r = client.post("/v1/edit", json={"text": ALPHABET, "lowest": 5, "rounds": 2,
                                      "confidence_mode": "visible"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(model.sizes) == out["nfe"] <= 8
    if out["rounds"] == 2:  # each round: 1 scoring call and at least 1 step
        assert out["nfe"] >= 4


def test_rounds_that_cannot_fit_are_one_line(client, model):
    model.sizes.clear()
    # 52 tokens: 2 masked scoring calls and a step per round, 12 > 8
    r = client.post("/v1/edit", json={"text": ALPHABET * 2, "lowest": 10, "rounds": 4})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["message"] == (
        "lowest 10: scoring the text's 52 tokens takes 2 model calls and a refill at least 1, "
        "so 4 rounds take 12, more than the server's --max-steps (8); give rounds 2 or fewer "
        "(confidence_mode visible scores in 1 call)")
    assert err["param"] == "lowest"
    assert "\n" not in err["message"]
    assert model.sizes == []  # refused before any model work
    ok = client.post("/v1/edit", json={"text": ALPHABET * 2, "lowest": 10, "rounds": 2})
    assert ok.status_code == 200, ok.text
    assert ok.json()["nfe"] <= 8


def test_library_max_calls_and_its_default(model):
    from unmask.infill.edit import CallLimitError

    lo = loaded(model)
    model.sizes.clear()
    res = api.edit(lo, ALPHABET, spans=[(2, 20)], config={"steps": 64, "seed": 1},
                   max_calls=5)
    assert len(model.sizes) == res.nfe <= 5
    assert res.text.startswith("ab") and res.text.endswith(ALPHABET[20:])
    model.sizes.clear()
    free = api.edit(lo, ALPHABET, spans=[(2, 20)], config={"steps": 64, "seed": 1})
    assert free.nfe == len(model.sizes) >= 18  # no bound: a step per masked token
    with pytest.raises(CallLimitError, match=r"more than max_calls \(3\); give rounds 1 or "):
        api.edit(lo, ALPHABET, lowest=2, rounds=2, max_calls=3)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(UserError, match="max_calls must be a positive int or None"):
            api.edit(lo, ALPHABET, spans=[(2, 5)], max_calls=bad)


def test_blocks_over_the_share_name_the_limit_not_steps(client, model):
    # the fill's line said "steps (3: the server's --max-steps, none sent)" at --max-steps 8,
    # or "steps (3) ... try 4 steps" to a client that sent steps 8
    for extra in ({}, {"steps": 8}):
        # (the 4 lowest tokens lie in 4 blocks of 4; round 1's share leaves 3 steps)
        r = client.post("/v1/edit", json={"text": ALPHABET, "lowest": 4, "rounds": 2,
                                          "block_length": 4, **extra})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["param"] == "block_length"
        assert err["message"].startswith("block_length 4: the ")
        assert "the edit's share of the server's --max-steps (8) leaves after " \
               "scoring; give block_length " in err["message"]


def test_blocks_over_one_step_reads_step(model):
    from unmask.infill.edit import CallLimitError

    with pytest.raises(CallLimitError, match=r"more than the 1 step the edit's share of "
                                             r"max_calls "
                                             r"\(5\) leaves after scoring; give block_length"):
        api.edit(loaded(model), ALPHABET * 2, lowest=30, rounds=2, max_calls=5,
                 confidence_mode="visible", config={"block_length": 8})


def test_a_round_whose_text_grew_past_its_share_ends_the_revision(model, monkeypatch):
    """A round's refill may re-encode to more tokens: a later round whose scoring then takes
    more calls than its share is not run (it would pass max_calls)."""
    import importlib

    edit_mod = importlib.import_module("unmask.infill.edit")  # not the function `edit`
    real = edit_mod._edit

    def growing(*args, **kwargs):  # round 1's text comes back 8 tokens longer, changed
        res = real(*args, **kwargs)
        res.text += "a" * 8
        res.changes.append(edit_mod.Change(round=1, start=0, end=1, old="a", new="b"))
        return res

    monkeypatch.setattr(edit_mod, "_edit", growing)
    model.sizes.clear()
    # 32 tokens: 1 scoring call; each round's share is 2 (scoring and a step); after round 1
    # the text is 40 tokens, 2 scoring calls: round 2 would take 3
    res = api.edit(loaded(model), "a" * 32, lowest=4, rounds=2, max_calls=4)
    assert res.detail.rounds == 1
    assert res.nfe == len(model.sizes) == 2
    model.sizes.clear()
    free = api.edit(loaded(model), "a" * 32, lowest=4, rounds=2)  # no bound: both rounds
    assert free.detail.rounds == 2 and free.nfe == len(model.sizes)
