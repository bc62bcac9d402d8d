"""The browser playground (``GET /``) in headless Debian chromium, driven by Playwright, against
a live server with a tiny random model and a tiny BPE tokenizer: the streamed canvas, click-to-mask
infill with gap lengths counted in the server's tokens and streamed steps, gap constraints,
forms, a screenshot.

Skipped when the ``playwright`` package or a ``chromium`` executable is missing (``bash
install.sh --test`` installs both where it can, so CI runs it); with
``UNMASK_REQUIRE_BROWSER=1`` a missing one is a failure instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socketserver
import struct
import threading
import time
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:
    MISSING: str | None = "the playwright package is not installed (bash install.sh --test)"
else:
    CHROMIUM = shutil.which("chromium")
    MISSING = (
        None
        if CHROMIUM
        else "no chromium executable on PATH (bash install.sh --test, as root, installs Debian's)"
    )
REQUIRED = os.environ.get("UNMASK_REQUIRE_BROWSER") == "1"
if MISSING and not REQUIRED:
    pytest.skip(MISSING, allow_module_level=True)

import httpx  # noqa: E402
import torch  # noqa: E402
from server_helpers import bpe_tokenizer, loaded, random_transformer  # noqa: E402
from test_server_openai import live_server  # noqa: E402
from torch import nn  # noqa: E402

from unmask import api  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402

NEW_TOKEN_RGB = (0xC8, 0xF7, 0xC5)  # .new { background: #c8f7c5 }


class Paced(nn.Module):
    """A model that takes ``seconds`` per forward, so each denoising step reaches the page on
    its own (otherwise several steps can arrive in one network read and be drawn as one)."""

    def __init__(self, inner: nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner, self.config, self.seconds = inner, inner.config, seconds

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.inner(tokens, attention_mask=attention_mask)


TOK = bpe_tokenizer()


@pytest.fixture(scope="module")
def base_url():
    with live_server(
        create_app(loaded(Paced(random_transformer(tokenizer=TOK), 0.08), TOK))
    ) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser():
    if MISSING:
        pytest.fail(
            f"{MISSING}; UNMASK_REQUIRE_BROWSER=1 asks for the browser test to run", pytrace=False
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, base_url):
    """The playground, loaded; fails the test on any script error or console error that the
    test did not take out of ``page.errors``."""
    pg = browser.new_page(viewport={"width": 800, "height": 600})
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(f"page error: {e}"))
    pg.on(
        "console", lambda m: pg.errors.append(f"console: {m.text}") if m.type == "error" else None
    )
    pg.goto(base_url + "/")
    yield pg
    pg.close()
    assert not pg.errors, pg.errors


def png_rgb(data: bytes) -> np.ndarray:
    """The (pixels, 3) uint8 colours of an 8-bit, non-interlaced RGB or RGBA PNG (what
    Chromium writes), row-major."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert header is not None, "PNG without IHDR"
    w, h, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 3 if colour == 2 else 4
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = out[0] * 0
    for y in range(h):  # undo each row's filter (PNG spec, section 9)
        f, line = rows[y, 0], rows[y, 1:]
        if f == 0:
            out[y] = line
        elif f == 1:  # Sub: a running sum along each channel
            out[y] = (line.reshape(w, bpp).cumsum(axis=0, dtype=np.uint64) % 256).reshape(-1)
        elif f == 2:  # Up
            out[y] = line + prev
        else:  # Average, Paeth: sequential along the row
            r, up = bytearray(line.tobytes()), prev.tobytes()
            for i in range(len(r)):
                a, b, c = (r[i - bpp] if i >= bpp else 0), up[i], (up[i - bpp] if i >= bpp else 0)
                if f == 3:
                    r[i] = (r[i] + (a + b) // 2) & 255
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    r[i] = (r[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            out[y] = np.frombuffer(bytes(r), dtype=np.uint8)
        prev = out[y]
    return out.reshape(h * w, bpp)[:, :3]


def test_png_reader_round_trip():
    # a 3x2 RGB image written with filters None, Sub, Up, Average and Paeth on its rows
    rows = [bytes([10, 20, 30, 40, 50, 60, 250, 5, 128]), bytes([1, 2, 3, 200, 100, 0, 9, 9, 9])]

    def encode(filters: list[int]) -> bytes:
        out, prev = b"", bytes(9)
        for f, row in zip(filters, rows, strict=True):
            enc = bytearray()
            for i, x in enumerate(row):
                a, b, c = (row[i - 3] if i >= 3 else 0), prev[i], (prev[i - 3] if i >= 3 else 0)
                p = a + b - c
                paeth = (
                    a
                    if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c)
                    else b
                    if abs(p - b) <= abs(p - c)
                    else c
                )
                pred = [0, a, b, (a + b) // 2, paeth][f]
                enc.append((x - pred) & 255)
            out += bytes([f]) + enc
            prev = row

        def chunk(kind: bytes, body: bytes) -> bytes:
            return (
                struct.pack(">I", len(body))
                + kind
                + body
                + struct.pack(">I", zlib.crc32(kind + body))
            )

        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(out))
            + chunk(b"IEND", b"")
        )

    want = [list(r[i : i + 3]) for r in rows for i in range(0, 9, 3)]
    for filters in ([0, 2], [1, 3], [4, 4], [3, 1]):
        assert png_rgb(encode(filters)).tolist() == want


def assert_not_blank(page: Page) -> np.ndarray:
    """A screenshot of the 800x400 page area that ends below the canvas: many colours, no
    single one covering (nearly) everything. Returns its pixels."""
    box = page.locator("#canvas").bounding_box()
    top = max(0, box["y"] + box["height"] + 40 - 400)
    shot = page.screenshot(full_page=True, clip={"x": 0, "y": top, "width": 800, "height": 400})
    if os.environ.get("UNMASK_SCREENSHOTS"):  # a folder to keep them in, to look at
        Path(os.environ["UNMASK_SCREENSHOTS"], f"{page.evaluate('mode()')}.png").write_bytes(shot)
    pixels = png_rgb(shot)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    assert len(pixels) == 800 * 400
    assert len(colours) >= 16, f"only {len(colours)} colours: a blank page?"
    assert counts.max() < 0.98 * len(pixels)
    return pixels


def has_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 3) -> bool:
    return bool((np.abs(pixels.astype(int) - rgb) <= tol).all(axis=1).any())


def last_denoising_step(base_url: str, body: dict) -> list[str | None]:
    """The canvas tokens of the last ``denoising.step`` event the server streams for ``body``."""
    last = None
    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                ev = json.loads(line[len("data: ") :])
                if ev.get("object") == "denoising.step":
                    last = ev["choices"][0]["tokens"]
    assert last is not None
    return last


def test_generation_streams_denoising_steps_into_the_canvas(page, base_url):
    page.fill("#prompt", "Hi")
    page.fill("#max_tokens", "8")
    page.fill("#steps", "8")
    # record the canvas after every redraw (one observer call per task: one per drawn step)
    page.evaluate("""() => {
        window.snapshots = [];
        const c = document.getElementById("canvas");
        new MutationObserver(() => window.snapshots.push(c.querySelectorAll(".mask").length))
            .observe(c, {childList: true});
    }""")
    page.click("#go")
    page.wait_for_function(
        "document.getElementById('status').textContent.includes(' steps in ')", timeout=30_000
    )
    masks = page.evaluate("window.snapshots")
    assert page.text_content("#status").startswith("8 steps in ")
    # llada, 8 tokens in 8 steps: one commit per step, drawn as it arrives
    assert masks[-1] == 0 and all(a > b for a, b in zip(masks, masks[1:], strict=False)), masks
    assert len([m for m in masks if 0 < m < 8]) >= 3, (
        f"too few intermediate canvases drawn: {masks}"
    )
    # the last drawn canvas is the server's last step, after the prompt
    tokens = last_denoising_step(
        base_url,
        {
            "prompt": "Hi",
            "max_tokens": 8,
            "steps": 8,
            "stream": True,
            "stream_denoising": True,
            "policy": "llada",
            "temperature": 0,
        },
    )
    assert page.text_content("#canvas .prompt") == "Hi"
    assert page.text_content("#canvas") == "Hi" + "".join(t for t in tokens if t is not None)
    assert page.locator("#canvas .new").count() >= 1
    assert has_colour(assert_not_blank(page), NEW_TOKEN_RGB), (
        "the committed-token highlight is not drawn"
    )


class EndsAt(nn.Module):
    """``inner`` whose answer ends (EOS) at generated position ``at`` of ``gen``: EOS is the
    argmax there and nowhere else, so the canvas holds tokens after the end of the text."""

    def __init__(self, inner: nn.Module, eos: int, gen: int, at: int) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.eos, self.gen, self.at = eos, gen, at

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.inner(tokens, attention_mask=attention_mask).clone()
        logits[..., self.eos] = -1e4
        logits[:, tokens.shape[1] - self.gen + self.at, self.eos] = 1e4
        return logits


def test_generation_ends_with_the_answer_cut_at_eos(browser):
    """The canvas's last denoising step holds the positions after EOS too; once the stream
    ends, the page shows the answer a client receives (cut at EOS), not that step."""
    model = EndsAt(random_transformer(tokenizer=TOK), TOK.eos_id, gen=8, at=3)
    with live_server(create_app(loaded(model, TOK))) as port:
        url = f"http://127.0.0.1:{port}"
        body = {"prompt": "Hi", "max_tokens": 8, "steps": 8, "policy": "llada",
                "temperature": 0}  # fmt: skip
        answer = httpx.post(url + "/v1/completions", json=body, timeout=30).json()
        assert answer["choices"][0]["finish_reason"] == "stop"
        steps = last_denoising_step(url, {**body, "stream": True, "stream_denoising": True})
        shown = "".join(t for t in steps if t is not None)
        assert shown != answer["choices"][0]["text"] and shown.startswith(
            answer["choices"][0]["text"])  # tokens after the end were on the canvas
        pg = browser.new_page(viewport={"width": 800, "height": 600})
        pg.goto(url + "/")
        pg.fill("#prompt", "Hi")
        pg.fill("#max_tokens", "8")
        pg.fill("#steps", "8")
        pg.fill("#temperature", "0")
        pg.click("#go")
        pg.wait_for_function(
            "document.getElementById('status').textContent.includes(' steps in ')",
            timeout=30_000,
        )
        assert pg.text_content("#canvas") == "Hi" + answer["choices"][0]["text"]
        assert pg.text_content("#status").endswith("finish: stop")
        pg.close()


def test_a_masked_prompt_ends_shown_as_it_was_filled(browser):
    """A [MASK] in the prompt is a blank the model fills; when the stream ends the page shows
    the prompt as it was filled (the stream's ``filled_prompt``), not the "[MASK]" typed."""
    from server_helpers import Echo, tiny_config

    with live_server(create_app(loaded(Echo(tiny_config())))) as port:
        pg = browser.new_page(viewport={"width": 800, "height": 600})
        pg.goto(f"http://127.0.0.1:{port}/")
        pg.fill("#prompt", "a[MASK]c")
        pg.fill("#max_tokens", "4")
        pg.fill("#temperature", "0")
        pg.click("#go")
        pg.wait_for_function(
            "document.getElementById('status').textContent.includes(' steps in ')",
            timeout=30_000,
        )
        assert pg.text_content("#canvas") == "abcdefg"  # Echo: the letter of each column
        pg.close()


def word(page: Page, text: str):
    return page.locator("#words .word").filter(has_text=re.compile(f"^{re.escape(text)}$"))


def n_tokens(text: str) -> int:
    return len(TOK.encode(text))


def test_infill_click_to_mask(page, base_url):
    # the BPE has " cat", " sat", " mat" as single tokens: token counts differ from byte counts
    assert (n_tokens(" cat"), n_tokens(" cat sat"), n_tokens(" mat")) == (1, 2, 1)
    page.fill("#prompt", "The cat sat [here] on the [MASK:2] mat.")
    page.check("input[name=mode][value=infill]")
    assert page.is_visible("#words") and not page.is_visible("#max_tokens")
    assert page.text_content("#words") == "The cat sat [here] on the [MASK:2] mat."
    assert page.locator("#words .gap").all_text_contents() == [
        "[MASK:2]"
    ]  # typed: kept, not clickable
    template = lambda: page.text_content("#template")  # noqa: E731
    assert template() == r"The cat sat \[here] on the [MASK:2] mat."

    word(page, "cat").click()
    assert word(page, "cat").get_attribute("class") == "word masked"
    assert word(page, "cat").get_attribute("aria-pressed") == "true"
    # a blank gap length is the server's token count of " cat" (POST /v1/tokenize), not its 3 bytes
    expect(page.locator("#template")).to_have_text(r"The [MASK:1] sat \[here] on the [MASK:2] mat.")
    expect(page.locator("#count_note")).to_have_text("")
    word(page, "cat").click()  # toggles back
    assert page.locator("#words .masked").count() == 0
    assert template() == r"The cat sat \[here] on the [MASK:2] mat."
    word(page, "on").focus()  # the keyboard toggles too, and the redrawn word keeps the focus
    page.keyboard.press("Enter")
    assert word(page, "on").get_attribute("aria-pressed") == "true"
    page.keyboard.press(" ")
    assert word(page, "on").get_attribute("aria-pressed") == "false"
    for w in ("cat", "sat", "mat"):
        word(page, w).click()
    # neighbours merge into one gap; its default length is the masked text's tokens
    want = r"The [MASK:2] \[here] on the [MASK:2] [MASK:1]."
    expect(page.locator("#template")).to_have_text(want)
    assert page.locator("#words .masked").all_text_contents() == ["cat", "sat", "mat"]
    page.fill(
        "#prompt", "The cat sat [here] on the [MASK:2] mat. More"
    )  # masks survive edits after them
    assert template() == want[:-1] + ". More"  # counts already known: no wait
    page.fill("#prompt", "The cat sat [here] on the [MASK:2] mat.")
    page.fill("#gap_length", "x")
    assert "gap length must be" in template()
    page.fill("#gap_length", "2")
    assert template() == r"The [MASK:2] \[here] on the [MASK:2] [MASK:2]."
    page.fill("#gap_length", "")
    assert template() == want

    # record the canvas after every redraw: (masked positions, highlighted tokens)
    page.evaluate("""() => {
        window.snapshots = [];
        const c = document.getElementById("canvas");
        new MutationObserver(() => window.snapshots.push(
            [c.querySelectorAll(".mask").length, c.querySelectorAll(".new").length]))
            .observe(c, {childList: true});
    }""")
    with page.expect_request("**/v1/infill") as sent:
        page.click("#go")
    assert json.loads(sent.value.post_data) == {
        "template": want,
        "stream": True,
    }  # options left blank are the server's defaults
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('model evaluations')",
        timeout=30_000,
    )
    # 5 masks, llada: one commit per step, each step drawn as it arrives, then the result
    assert page.text_content("#status").startswith("3 gaps, 5 steps, ")
    snapshots = page.evaluate("window.snapshots")
    masks = [m for m, _ in snapshots]
    assert (
        masks[0] == 4
        and masks[-1] == 0
        and all(a >= b for a, b in zip(masks, masks[1:], strict=False))
    ), masks
    assert len({m for m in masks if 0 < m < 4}) >= 2, (
        f"too few intermediate canvases drawn: {snapshots}"
    )
    assert any(m > 0 and new == 1 for m, new in snapshots), (
        f"no step drawn with its new token: {snapshots}"
    )
    # the page ends with exactly what the endpoint returns for that template and these options
    res = httpx.post(
        base_url + "/v1/infill",
        timeout=30,
        json={"template": want},
    ).json()
    assert page.text_content("#canvas") == res["text"]
    assert page.locator("#canvas .new").all_text_contents() == [g["text"] for g in res["gaps"]]
    assert (
        res["text"].startswith("The ")
        and " [here] on the " in res["text"]
        and res["text"].endswith(".")
    )
    assert has_colour(assert_not_blank(page), NEW_TOKEN_RGB)


def test_infill_errors_are_shown(page):
    page.check("input[name=mode][value=infill]")
    page.fill("#prompt", "nothing masked here")
    page.click("#go")
    page.wait_for_function("document.getElementById('status').className === 'err'")
    assert "click words" in page.text_content("#status")
    page.fill("#prompt", "a [MASK:0] gap")  # a typed gap the server rejects: its message is shown
    page.click("#go")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('400: ')")
    assert "[MASK:0]" in page.text_content("#status")
    assert page.errors == [
        "console: Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]
    page.errors.clear()
    # no token count from the server: the gap keeps the byte count, and a note says so
    page.route("**/v1/tokenize", lambda route: route.abort())
    page.fill("#prompt", "The cat sat")
    word(page, "cat").click()
    expect(page.locator("#count_note")).to_contain_text("could not count tokens")
    assert page.text_content("#template") == "The [MASK:3] sat"
    assert page.errors and all("net::ERR_FAILED" in e for e in page.errors), page.errors
    page.errors.clear()


def test_infill_with_gap_constraints(page, base_url):
    page.check("input[name=mode][value=infill]")
    page.fill("#prompt", "The [MASK:thing] sat on [MASK:2].")
    page.fill("#constraints", "choices thing=cat|mat\n--charset 2=lowercase\nban x")
    with page.expect_request("**/v1/infill") as sent:
        page.click("#go")
    body = json.loads(sent.value.post_data)
    assert body == {"template": "The [MASK:thing] sat on [MASK:2].", "stream": True,
                    "choices": {"thing": ["cat", "mat"]}, "charset": {"2": "lowercase"},
                    "ban": ["x"]}
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('model evaluations')",
        timeout=30_000)
    body.pop("stream")
    res = httpx.post(base_url + "/v1/infill", json=body, timeout=30).json()
    assert res["gaps"][0]["text"] in ("cat", "mat")
    assert re.fullmatch("[a-wyz]+", res["gaps"][1]["text"].strip()), res
    assert page.text_content("#canvas") == res["text"]
    assert page.locator("#canvas .new").all_text_contents() == [g["text"] for g in res["gaps"]]
    # a line it cannot read, and a constraint the server rejects, are shown
    page.fill("#constraints", "choose thing=cat")
    page.click("#go")
    expect(page.locator("#status")).to_contain_text("constraints line 1: expected choices")
    page.fill("#constraints", "choices town=cat")
    page.click("#go")
    expect(page.locator("#status")).to_contain_text("400: choices 'town': no gap 'town'")
    assert all("status of 400" in e for e in page.errors), page.errors
    page.errors.clear()


def test_form_fills_the_holes_and_streams_its_steps(page, base_url):
    page.check("input[name=mode][value=form]")
    assert page.is_visible("#form") and not page.is_visible("#prompt")
    form = '{"n": "<int>", "ok": "<bool>", "kept": [1, 2]}'
    page.fill("#form", form)
    page.evaluate("""() => {
        window.snapshots = [];
        const c = document.getElementById("canvas");
        new MutationObserver(() => window.snapshots.push(c.querySelectorAll(".mask").length))
            .observe(c, {childList: true});
    }""")
    with page.expect_request("**/v1/forms") as sent:
        page.click("#go")
    body = json.loads(sent.value.post_data)
    assert body["form"] == form and body["stream"] is True
    page.wait_for_function("document.getElementById('status').textContent.includes('holes')",
                           timeout=30_000)
    assert page.text_content("#status").startswith("2 holes, ")
    masks = page.evaluate("window.snapshots")
    assert masks[0] > 0 and len([m for m in masks if m > 0]) >= 2, masks  # steps drawn
    body.pop("stream")
    res = httpx.post(base_url + "/v1/forms", json=body, timeout=30).json()
    assert json.loads(page.text_content("#canvas")) == res["value"]
    assert res["value"]["kept"] == [1, 2] and isinstance(res["value"]["ok"], bool)
    page.fill("#form", '{"n": "<int>"')
    page.click("#go")
    expect(page.locator("#status")).to_contain_text("400: form: invalid JSON")
    page.errors.clear()


def test_schema_box_fills_a_form_that_validates_and_streams_its_steps(page, base_url):
    page.check("input[name=mode][value=schema]")
    assert page.is_visible("#schema") and not page.is_visible("#prompt")
    schema = {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 3}, "ok": {"type": "boolean"}}}
    page.fill("#schema", json.dumps(schema))
    page.evaluate("""() => {
        window.snapshots = [];
        const c = document.getElementById("canvas");
        new MutationObserver(() => window.snapshots.push(c.querySelectorAll(".mask").length))
            .observe(c, {childList: true});
    }""")
    with page.expect_request("**/v1/forms") as sent:
        page.click("#go")
    body = json.loads(sent.value.post_data)
    assert body["schema"] == schema and body["stream"] is True
    page.wait_for_function("document.getElementById('status').textContent.includes('holes')",
                           timeout=30_000)
    masks = page.evaluate("window.snapshots")
    assert masks[0] > 0, masks  # the form was drawn masked, then filled in
    value = json.loads(page.text_content("#canvas"))
    assert value["n"] in (1, 2, 3) and isinstance(value["ok"], bool)
    page.fill("#schema", json.dumps({"type": "integer", "multipleOf": 2}))
    page.click("#go")
    expect(page.locator("#status")).to_contain_text("multipleOf")
    page.errors.clear()


MARKUP = '<img src=x onerror="window.pwned=1">'


def test_markup_from_the_model_or_the_user_is_shown_as_text_and_nothing_leaves_the_server(
        browser):
    """Model output, typed prompts, templates and error messages that hold HTML are drawn as
    text (no element is made from them, no handler runs), in every mode; and the page loads
    and runs with nothing but the server: every request it makes goes to the server (no CDN
    font, script or style)."""
    from server_helpers import tiny_config
    from test_server import Scripted

    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    start = len(MARKUP)  # the prompt, then the model's markup
    model = Scripted(tiny_config(max_seq_len=128), tok.encode(MARKUP) * 2, start)
    with live_server(create_app(loaded(model, tok))) as port:
        base = f"http://127.0.0.1:{port}"
        pg = browser.new_page()
        requests: list[str] = []
        pg.on("request", lambda r: requests.append(r.url))
        pg.goto(base + "/")
        pg.fill("#prompt", MARKUP)
        pg.fill("#max_tokens", str(len(MARKUP)))
        pg.fill("#steps", "4")
        pg.click("#go")
        expect(pg.locator("#status")).to_contain_text(" steps in ", timeout=30_000)
        assert pg.text_content("#canvas") == MARKUP + MARKUP
        pg.check("input[name=mode][value=infill]")  # the typed text, clickable words, the fill
        pg.fill("#prompt", MARKUP + " [MASK:4]")
        pg.click("#go")
        expect(pg.locator("#status")).to_contain_text("1 gap, ", timeout=30_000)
        assert pg.text_content("#words").startswith(MARKUP)
        pg.fill("#prompt", f"[MASK:0] {MARKUP}")  # the server's 400 quotes the template
        pg.click("#go")
        expect(pg.locator("#status")).to_contain_text("400: ")
        pg.check("input[name=mode][value=form]")
        pg.fill("#form", json.dumps({"a": "<text:2-8>", MARKUP: MARKUP}))
        pg.click("#go")
        expect(pg.locator("#status")).to_contain_text("1 hole, ", timeout=30_000)
        assert MARKUP in json.loads(pg.text_content("#canvas"))
        assert pg.locator("body img").count() == 0
        assert pg.evaluate("window.pwned") is None
        pg.close()
    assert requests and all(u.startswith(base + "/") for u in requests), requests


DONE_STREAM = (
    'data: {"object": "text_completion", "choices": [{"index": 0, "text": " there",'
    ' "finish_reason": "length"}]}\n\ndata: [DONE]\n\n'
)
ONE_STEP = (
    'data: {"object": "denoising.step", "step": 1, "choices": [{"index": 0,'
    ' "tokens": ["a", null], "committed": [0], "masked": 1}]}\n\n'
)


def answer(body: str, status: int = 200, content_type: str = "text/event-stream"):
    """A route handler that answers every request with ``body``."""
    return lambda route: route.fulfill(status=status, content_type=content_type, body=body)


def run_and_wait(page: Page) -> str:
    """Click Run, wait until the run has ended (Run enabled again); the status text."""
    page.click("#go")
    expect(page.locator("#go")).to_be_enabled(timeout=30_000)
    return page.text_content("#status")


def test_broken_answers_and_a_lost_server_are_errors_in_words_not_a_finished_run(page):
    """What a proxy or a stopped server sends instead of unmask's answer is shown as an error
    that says what happened, in every mode: a stream that ends before its [DONE] is not a
    finished run, and no answer of an earlier run stays on the canvas under the error."""
    setups = {
        "complete": ("completions", lambda: page.fill("#prompt", "Hi")),
        "infill": ("infill", lambda: page.fill("#prompt", "a [MASK:2] b")),
        "form": ("forms", lambda: None),
    }
    for mode, (endpoint, setup) in setups.items():
        page.check(f"input[name=mode][value={mode}]")
        setup()
        url = f"**/v1/{endpoint}"
        if mode == "complete":  # a finished run, then errors: its answer is cleared
            page.route(url, answer(DONE_STREAM))
            assert run_and_wait(page).startswith("0 steps in ")
            assert page.text_content("#canvas") == "Hi there"
            page.unroute(url)
        cases = [
            (answer("<html><body><h1>Bad Gateway</h1></body></html>", 502, "text/html"),
             "502 Bad Gateway"),
            (answer("overloaded, try later", 503, "text/plain"),
             "503 Service Unavailable: overloaded, try later"),
            (lambda route: route.abort(), "could not reach the server (Failed to fetch)"),
            (answer(""), "the stream ended before the run finished"),
            (answer(ONE_STEP), "the stream ended before the run finished"),
            (answer("<p>sign in</p>", 200, "text/html"),
             "200 OK: sign in (expected an event stream, got text/html)"),
            (answer("data: {oops\n\n"), "the server sent an event that is not JSON: {oops"),
        ]
        for handler, want in cases:
            page.route(url, handler)
            assert want in run_and_wait(page), (mode, want)
            assert page.get_attribute("#status", "class") == "err"
            if handler is not cases[4][0]:
                assert page.text_content("#canvas") == "", (mode, want)
            page.unroute(url)
    page.errors.clear()  # chromium logs every failed request


class CutOff(socketserver.StreamRequestHandler):
    """A server that stops mid-request: ``GET /`` is the playground, and every POST gets the
    head of an event stream and one denoising step, then the connection is closed without
    the end of its chunked body (what a killed ``unmask serve`` leaves)."""

    def handle(self) -> None:
        request = self.rfile.readline().decode()
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        if request.startswith("GET / "):
            page = resources.files("unmask.server").joinpath("static/playground.html")
            html = page.read_bytes()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(html) + html)
            return
        chunk = ONE_STEP.encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n"
                         + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        self.wfile.flush()


def test_a_server_that_stops_mid_request_is_reported(browser):
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), CutOff) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        pg = browser.new_page()
        pg.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        for mode in ("complete", "form"):
            pg.check(f"input[name=mode][value={mode}]")
            status = run_and_wait(pg)
            assert status.startswith("lost the connection to the server mid-run ("), status
            assert pg.get_attribute("#status", "class") == "err"
        pg.close()
        server.shutdown()


def cancelled_total(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return float(re.search(r"^unmask_cancelled_total (\S+)$", text, re.M).group(1))


def test_stop_ends_a_run_and_the_server_drops_it(page, base_url):
    """Stop (or Escape) aborts the request: the page says so and keeps the canvas drawn so
    far, Run is enabled again, and the server counts the request as cancelled (its work is
    dropped, not run to the end)."""
    assert page.is_disabled("#stop")
    page.fill("#prompt", "Hi")
    page.fill("#max_tokens", "48")
    page.fill("#steps", "48")  # about 4 s of paced forwards if it were not stopped
    for how in ("button", "Escape"):
        before = cancelled_total(base_url)
        page.click("#go")
        page.wait_for_function(  # polled at every frame: a step is drawn every 80 ms
            "Number((/^step (\\d+), /.exec(document.getElementById('status').textContent)"
            " || [0, 0])[1]) >= 2")
        assert page.is_enabled("#stop") and page.is_disabled("#go")
        if how == "button":
            page.click("#stop")
        else:
            page.keyboard.press("Escape")
        expect(page.locator("#status")).to_have_text("stopped")
        assert page.get_attribute("#status", "class") == ""
        assert page.is_enabled("#go") and page.is_disabled("#stop")
        assert page.locator("#canvas .mask").count() > 0  # the canvas at the stop, kept
        deadline = time.monotonic() + 20
        while cancelled_total(base_url) <= before:
            assert time.monotonic() < deadline, "the server did not drop the stopped request"
            time.sleep(0.05)


def test_keyboard_runs_and_the_controls_have_names(page):
    page.route("**/v1/completions", answer(DONE_STREAM))
    for field, keys in (("#prompt", "Control+Enter"), ("#steps", "Enter"),
                        ("#temperature", "Enter")):
        page.focus(field)
        with page.expect_request("**/v1/completions"):
            page.keyboard.press(keys)
        expect(page.locator("#status")).to_contain_text(" steps in ")
    page.evaluate("document.getElementById('status').textContent = ''")
    page.focus("#prompt")
    page.keyboard.press("Enter")  # a new line in the text box, not a run
    assert page.input_value("#prompt") == "\nOnce upon a time"
    assert page.text_content("#status") == ""
    expect(page.get_by_role("textbox", name="text", exact=True)).to_have_id("prompt")
    expect(page.get_by_role("radiogroup", name="mode")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    assert page.get_attribute("#status", "role") == "status"


def test_blank_fields_are_left_to_the_server_and_bad_numbers_are_refused(page):
    """A blank number field is not sent (the server's default: for completions the
    checkpoint's recommendation), not sent as 0; text that is not a number is an error before
    anything is sent."""
    page.route("**/v1/completions", answer(DONE_STREAM))
    page.fill("#prompt", "Hi")
    for field in ("#temperature", "#max_tokens", "#steps"):
        page.fill(field, "")
    with page.expect_request("**/v1/completions") as sent:
        page.click("#go")
    assert json.loads(sent.value.post_data) == {"prompt": "Hi", "stream": True,
                                                "stream_denoising": True}
    expect(page.locator("#status")).to_contain_text(" steps in ")
    sent_urls: list[str] = []  # runs (the placeholders' questions are not runs)
    page.on("request", lambda r: sent_urls.append(r.url) if "/v1/" in r.url else None)
    page.focus("#steps")
    page.keyboard.type("1e")  # a number field holding no number: its value is ""
    page.click("#go")
    expect(page.locator("#status")).to_have_text("steps: not a number")
    assert page.get_attribute("#status", "class") == "err" and not sent_urls


def test_the_page_answers_head_requests(base_url):
    r = httpx.head(base_url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


def test_untouched_fields_run_what_the_server_recommends(page, base_url):
    """The page as it loads sends no steps, policy or temperature, so it runs what ``unmask
    generate`` runs with no flags (the checkpoint's recommendation, else one token per step
    at temperature 0): 8 tokens take 8 steps, not the 32 of a fixed steps field (24 forwards
    that commit nothing); the threshold goes with its policy only."""
    page.fill("#prompt", "Hi")
    page.fill("#max_tokens", "8")
    with page.expect_request("**/v1/completions") as sent:
        page.click("#go")
    assert json.loads(sent.value.post_data) == {"prompt": "Hi", "max_tokens": 8, "stream": True,
                                                "stream_denoising": True}
    expect(page.locator("#status")).to_have_text(re.compile(r"^8 steps in "), timeout=30_000)
    page.route("**/v1/completions", answer(DONE_STREAM))
    page.select_option("#policy", "threshold")
    expect(page.locator("#threshold")).to_have_attribute("placeholder", "0.9")  # the default
    with page.expect_request("**/v1/completions") as sent:
        page.click("#go")
    assert json.loads(sent.value.post_data)["policy"] == "threshold"
    assert "threshold" not in json.loads(sent.value.post_data)  # blank: the server's runs
    page.fill("#threshold", "0.8")
    with page.expect_request("**/v1/completions") as sent:
        page.click("#go")
    assert json.loads(sent.value.post_data)["threshold"] == 0.8


CONTRAST = """(el) => {
    const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
    const lum = ([r, g, b]) => [r, g, b].map((v) => {
        v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    }).reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
    let bg = el;  // the nearest box with a background of its own; the page's is white
    while (bg && rgb(getComputedStyle(bg).backgroundColor)[3] === 0) bg = bg.parentElement;
    const [a, b] = [lum(rgb(getComputedStyle(el).color)),
                    lum(bg ? rgb(getComputedStyle(bg).backgroundColor) : [255, 255, 255])];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def test_text_on_the_page_has_wcag_contrast(page):
    """WCAG AA: 4.5:1 for text (the prompt drawn before the canvas, masked words, typed
    gaps, notes), 3:1 for the mask glyph (a graphic that says a position is masked)."""
    page.fill("#prompt", "Hi")
    page.route("**/v1/completions", answer(ONE_STEP))  # one step drawn, then cut off
    run_and_wait(page)
    page.errors.clear()
    ratio = lambda sel: page.locator(sel).first.evaluate(CONTRAST)  # noqa: E731
    assert ratio("#canvas .prompt") >= 4.5, ratio("#canvas .prompt")
    assert ratio("#canvas .mask") >= 3, ratio("#canvas .mask")
    page.check("input[name=mode][value=infill]")
    page.fill("#prompt", "a cat [MASK:2]")
    word(page, "cat").click()
    for sel in ("#words .gap", "#words .masked", "#count_note", "#status", "#template",
                "#defaults_note"):
        assert ratio(sel) >= 4.5, (sel, ratio(sel))


def test_the_threshold_field_is_live_only_with_its_policy(page):
    """threshold is sent with policy threshold only, so with any other policy its field is
    disabled rather than looking as if it did something."""
    for policy in ("", "llada", "factor", "entropy"):
        page.select_option("#policy", policy)
        expect(page.locator("#threshold")).to_be_disabled()
    page.select_option("#policy", "threshold")
    expect(page.locator("#threshold")).to_be_enabled()


def test_counts_in_the_status_line_agree_with_their_nouns(page):
    page.route("**/v1/completions", answer(ONE_STEP + DONE_STREAM))
    assert run_and_wait(page).startswith("1 step in ")
    page.check("input[name=mode][value=infill]")
    page.fill("#prompt", "a [MASK:1] b")
    result = ('data: {"object": "infill", "text": "a x b", "nfe": 1,'
              ' "gaps": [{"start": 2, "end": 3, "text": "x"}]}\n\n')
    page.route("**/v1/infill", answer(ONE_STEP + result + "data: [DONE]\n\n"))
    assert run_and_wait(page).startswith("1 gap, 1 step, 1 model evaluation in ")
    assert page.text_content("#canvas") == "a x b"


PLACEHOLDERS = ("steps", "block_length", "temperature", "threshold")


def expect_placeholders(page: Page, want: dict[str, str]) -> None:
    """The fields' placeholders (they come from the server's answer) and the policy's default."""
    for f in PLACEHOLDERS:
        if f in want:
            expect(page.locator(f"#{f}")).to_have_attribute("placeholder", want[f])
    if "policy" in want:
        expect(page.locator("#policy_default")).to_have_text(want["policy"])


@contextlib.contextmanager
def serving(page: Page, sample_defaults: dict, api_key: str | None = None):
    """The page loaded from a live server of a checkpoint that recommends ``sample_defaults``;
    yields that checkpoint."""
    model = random_transformer(tokenizer=TOK)
    model.config.sample_defaults = sample_defaults
    served = loaded(model, TOK)
    with live_server(create_app(served, api_key=api_key)) as port:
        page.goto(f"http://127.0.0.1:{port}/")
        yield served


def test_blank_fields_show_the_recommendation_that_will_run(page):
    """In complete mode a blank field's placeholder is what the server runs for it, as the
    server computes it (``GET /playground/options``: ``api.sample_config`` with the
    checkpoint's ``sample_defaults``, a recommended block length fitted to max_tokens and
    steps; the page keeps no copy of that rule), and a note lists the recommendation,
    penalties included; infill, form and schema take the server's defaults."""
    recommended = {"block_length": 4, "temperature": 0.7, "repetition_penalty": 1.3}
    with serving(page, recommended) as served:
        expect(page.locator("#defaults_note")).to_contain_text("repetition_penalty 1.3")
        for max_tokens, steps, policy in (("8", "", ""), ("6", "", ""), ("5", "", ""),
                                          ("8", "3", ""), ("8", "3", "threshold"),
                                          ("6", "2", ""), ("", "", "")):
            page.fill("#max_tokens", max_tokens)
            page.fill("#steps", steps)
            page.select_option("#policy", policy)
            given = {"gen_length": int(max_tokens or 16), **({"steps": int(steps)} if steps
                     else {}), **({"policy": policy} if policy else {})}  # fmt: skip
            runs = api.sample_config(served, given)
            block = "none" if runs.block_length is None else str(runs.block_length)
            want = {"block_length": block, "temperature": "0.7", "threshold": "0.9",
                    "policy": "default (llada)"}
            if not steps:  # a filled field shows its value, not its placeholder
                want["steps"] = str(runs.steps)
            expect_placeholders(page, want)
        page.check("input[name=mode][value=form]")
        expect_placeholders(page, {"steps": "default", "block_length": "default",
                                   "temperature": "0", "policy": "default (llada)"})
        expect(page.locator("#defaults_note")).to_contain_text("the server's defaults")


def test_a_recommended_threshold_is_what_a_blank_threshold_runs(page):
    """LLaDA 2 recommends policy threshold at 0.95: with the default policy the threshold field
    is live and shows 0.95, a blank one is not sent (the recommendation runs: the field's old
    fixed 0.9 overrode it once the policy was chosen), a typed one is; infill runs the server's
    defaults (policy llada), where the field is off again."""
    with serving(page, {"policy": "threshold", "threshold": 0.95}) as served:
        assert api.sample_config(served, {}).threshold == 0.95
        expect_placeholders(page, {"threshold": "0.95", "policy": "default (threshold)"})
        expect(page.locator("#threshold")).to_be_enabled()
        page.route("**/v1/completions", answer(DONE_STREAM))
        page.fill("#prompt", "Hi")
        for policy in ("", "threshold"):
            page.select_option("#policy", policy)
            expect_placeholders(page, {"threshold": "0.95"})
            with page.expect_request("**/v1/completions") as sent:
                page.click("#go")
            body = json.loads(sent.value.post_data)
            assert "threshold" not in body and body.get("policy") == (policy or None)
        page.select_option("#policy", "")
        page.fill("#threshold", "0.97")
        with page.expect_request("**/v1/completions") as sent:
            page.click("#go")
        assert json.loads(sent.value.post_data)["threshold"] == 0.97
        page.check("input[name=mode][value=infill]")
        expect_placeholders(page, {"threshold": "0.9", "policy": "default (llada)"})
        expect(page.locator("#threshold")).to_be_disabled()


def test_placeholders_without_a_recommendation_are_the_server_defaults(page):
    """The live server's checkpoint recommends nothing: a blank field runs the default (one
    step per token, one block, argmax, policy llada), which the placeholders say; the
    block_length placeholder never claims a recommendation there is none of."""
    page.fill("#max_tokens", "8")
    expect(page.locator("#defaults_note")).to_contain_text("recommends no sampling options")
    expect_placeholders(page, {"steps": "8", "block_length": "none", "temperature": "0",
                               "threshold": "0.9", "policy": "default (llada)"})
    page.check("input[name=mode][value=infill]")
    expect_placeholders(page, {"block_length": "default"})


def test_with_an_api_key_the_recommendation_is_read_once_the_key_is_typed(page):
    """A server with ``--api-key`` refuses ``GET /playground/options`` without the key: the
    page says *default* until the key is typed, then asks again and shows the recommendation."""
    with serving(page, {"temperature": 0.5}, api_key="k"):
        expect_placeholders(page, {"temperature": "default", "threshold": "default"})
        page.fill("#key", "k")
        page.dispatch_event("#key", "change")
        expect_placeholders(page, {"temperature": "0.5", "threshold": "0.9"})
        page.errors.clear()  # Chromium logs the 401 on the console


def test_the_steps_field_keeps_within_the_servers_max_steps(page):
    """The page offered any step count: under ``--max-steps 8`` it sent steps 50 and blank
    steps over a 16-token max_tokens for the server to refuse. Now the steps field's max is
    the limit (a step count over it is an error before anything is sent), the label says it,
    and a length whose blank steps the server would refuse is said in the note, in the
    server's words."""
    model = random_transformer(tokenizer=TOK)
    with live_server(create_app(loaded(model, TOK), limits=ServerLimits(max_steps=8))) as port:
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#steps")).to_have_attribute("max", "8")
        expect(page.locator("#steps_label")).to_have_attribute(
            "title", "at most 8 (the server's --max-steps)")
        page.fill("#max_tokens", "16")
        note = page.locator("#defaults_note")
        expect(note).to_contain_text("steps must be <= 8 (the server's --max-steps)")
        expect(note).to_have_class("err")
        page.fill("#steps", "8")
        expect(note).to_contain_text("the checkpoint recommends no sampling options")
        expect(note).not_to_have_class("err")
        sent_urls: list[str] = []
        page.on("request", lambda r: sent_urls.append(r.url) if "/v1/" in r.url else None)
        page.fill("#steps", "50")
        page.click("#go")
        expect(page.locator("#status")).to_have_text(
            "steps must be <= 8 (the server's --max-steps)")
        assert not sent_urls
        page.fill("#steps", "4")
        page.click("#go")
        expect(page.locator("#status")).to_contain_text("4 steps in ")
