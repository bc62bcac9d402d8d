"""``/v1/infill`` with ``response_format`` / ``guided_*``: a ``[MASK:n]`` whose answer cannot fit
the context is refused naming the gap and its n (it said "the form needs ... use fewer or
shorter holes", of a form the client never sent); a constraint that bounds the answer itself
still fills under any n."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, tiny_config  # noqa: E402

from unmask.model import Transformer  # noqa: E402
from unmask.server import create_app  # noqa: E402

torch.manual_seed(0)
MODEL = Transformer(tiny_config(max_seq_len=64)).eval()


def test_a_guided_gap_too_wide_for_the_context_names_the_gap_and_its_n():
    with TestClient(create_app(loaded(MODEL))) as c:
        for source, value in (("response_format", {"type": "json_object"}),
                              ("guided_regex", "[a-z]+")):
            r = c.post("/v1/infill", json={"template": "A [MASK:200] b", source: value})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == source and err["code"] == "context_length_exceeded"
            assert err["message"].startswith(f"{source}: its answer in [MASK:200] takes up to ")
            assert err["message"].endswith(f"give a smaller n in [MASK:n] or a smaller {source}")
            assert "the form needs" not in err["message"] and "\n" not in err["message"]
        # the choice bounds the answer: n is only a cap
        r = c.post("/v1/infill", json={"template": "A [MASK:200] b", "guided_choice": ["xy"],
                                       "temperature": 0})
        assert r.status_code == 200 and r.json()["text"] == "A xy b"


def test_a_causal_models_guided_gap_fits_the_context_exactly():
    """A causal model fills the gap left to right (``unmask.infill.ordered``); the route,
    ``fill_form`` and ``fill_left_to_right`` count by one ``form_span``: [MASK:63] after "A "
    in a context of 64 is refused naming the gap (it passed the route once and got the form's
    "use fewer or shorter holes", a form the client never sent), 62 fills, as on a diffusion
    model: the end-of-text token after a full gap is forced, taken without a forward, and
    takes no room (it was counted, and 62 refused)."""
    import dataclasses

    from unmask.infill.ordered import form_span

    torch.manual_seed(0)
    causal = Transformer(dataclasses.replace(tiny_config(max_seq_len=64), attention="causal",
                                             objective="ar")).eval()  # fmt: skip
    body = {"guided_regex": "[a-z]+", "temperature": 0}
    with TestClient(create_app(loaded(causal))) as c:
        r = c.post("/v1/infill", json={"template": "A [MASK:63]", **body})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "guided_regex" and err["code"] == "context_length_exceeded"
        assert err["message"].startswith("guided_regex: its answer in [MASK:63] takes up to "
                                         "63 tokens (each value at most 63), 65 with the "
                                         "template's text, more than")
        r = c.post("/v1/infill", json={"template": "A [MASK:62]", **body})
        assert r.status_code == 200, r.text
    with TestClient(create_app(loaded(MODEL))) as c:
        assert c.post("/v1/infill", json={"template": "A [MASK:62]", **body}).status_code == 200
    assert form_span(2, 62, causal=False) == 64 and form_span(2, 62, causal=True) == 64
    assert form_span(2, 62, causal=True, fim=True) == 67
