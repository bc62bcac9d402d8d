"""The command line's front door (session 33): control characters in the text a command
prints, ``--gen-length`` on the commands that ignore it, temperatures too small to divide by."""

import io
import json
import sys

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.files import asset_path
from unmask.model import Transformer
from unmask.terminal import escape_controls, json_text
from unmask.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny model with the shipped demo tokenizer (byte-level: any text encodes)."""
    shipped = asset_path("demo") / "tokenizer.json"
    if not shipped.is_file():
        pytest.skip("demo checkpoint not bundled")
    tok = load_tokenizer(shipped)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ck")
    save_checkpoint(out, model=Transformer(cfg), tokenizer=tok)
    return out


class _Terminal(io.StringIO):
    """Standard output that is a terminal."""

    def isatty(self) -> bool:
        return True


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\rX\x9b31m"
"""Set the window title, clear the screen, return to the line's start, a one-character CSI."""
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\rX\\x9b31m"


def test_escape_controls_keeps_newlines_tabs_and_text():
    assert escape_controls(f"a\tb\nc{HOSTILE}é\x7f\x00") == f"a\tb\nc{SHOWN}é\\x7f\\x00"
    text = json_text({"t": f"{HOSTILE}\x7fé"})
    assert json.loads(text) == {"t": f"{HOSTILE}\x7fé"}  # the same value
    assert not any(0x7f <= ord(c) <= 0x9f or ord(c) < 0x20 for c in text)
    assert "é" in text  # non-ASCII text stays itself


def _run(argv, monkeypatch, capsys, terminal):
    out = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(argv) == 0
    capsys.readouterr()
    return out.getvalue()


@pytest.mark.parametrize("terminal", [True, False])
def test_printed_text_escapes_controls_on_a_terminal_only(tiny, monkeypatch, capsys, terminal):
    """Text a model wrote (or a prompt echoed before it) went to the terminal byte for byte: an
    ESC sequence in it could clear the screen, set the window title or hide what came before
    (a carriage return). On a terminal they are shown escaped now; a pipe or a file keeps the
    exact text."""
    run = ["--model", str(tiny), "--no-live", "--device", "cpu"]
    want = SHOWN if terminal else HOSTILE
    gen = _run(["generate", f"hi {HOSTILE}", "--gen-length", "2", *run],
               monkeypatch, capsys, terminal)
    assert gen.startswith(f"hi {want}")
    infill = _run(["infill", f"{HOSTILE} [MASK] end", *run], monkeypatch, capsys, terminal)
    assert infill.startswith(want) and infill.rstrip("\n").endswith(" end")
    span = f"{len(HOSTILE) + 1}:{len(HOSTILE) + 3}"  # "ab"
    edit = _run(["edit", "--text", f"{HOSTILE} ab cd", "--span", span, *run],
                monkeypatch, capsys, terminal)
    assert edit.startswith(want)
    if terminal:
        assert not any(c in gen + infill + edit for c in "\x1b\x07\r\x9b")


def test_json_and_forms_hold_no_raw_control(tiny, monkeypatch, capsys):
    """``--json`` escaped C0 controls (JSON must) but wrote U+009B, a one-character CSI, and
    DEL as themselves; fill-form's JSON too. Now escaped as JSON escapes them: the same
    value."""
    run = ["--model", str(tiny), "--no-live", "--device", "cpu"]
    for terminal in (True, False):
        form = _run(["fill-form", json.dumps({"k": "\x9b2J", "n": "<digits:1>"}), *run],
                    monkeypatch, capsys, terminal)
        assert "\x9b" not in form and json.loads(form)["k"] == "\x9b2J"
        out = _run(["generate", "a\x9bb", "--gen-length", "2", "--json", *run],
                   monkeypatch, capsys, terminal)
        assert "\x9b" not in out and json.loads(out)["results"][0]["prompt"] == "a\x9bb"


@pytest.mark.parametrize("command, why", [
    (["infill", "a [MASK] b"], "the template sets each gap's length"),
    (["edit", "--text", "abc", "--span", "0:1"], "a span is refilled with as many tokens"),
    (["fill-form", '{"a": "<int>"}'], "the holes' types set the lengths"),
])
def test_gen_length_is_refused_where_the_text_sets_the_lengths(tiny, capsys, command, why):
    """``unmask infill TEMPLATE --gen-length 200`` ran and wrote the template's few tokens:
    the flag was accepted and ignored (the --help description said so). Given, it is one line
    now, saying what sets the length, before the model loads; not given, the run goes on."""
    run = [*command, "--model", str(tiny), "--no-live", "--device", "cpu"]
    assert main([*run, "--gen-length", "200"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"unmask {command[0]}: error: --gen-length does not apply: {why}")
    assert "\n" not in err
    assert main(run) == 0


@pytest.fixture(scope="module")
def tiny_ar(tmp_path_factory):
    """A random tiny causal (``ar``) model with the shipped demo tokenizer."""
    shipped = asset_path("demo") / "tokenizer.json"
    if not shipped.is_file():
        pytest.skip("demo checkpoint not bundled")
    tok = load_tokenizer(shipped)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, attention="causal",
                       objective="ar", **tok.special_ids())
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ar")
    save_checkpoint(out, model=Transformer(cfg), tokenizer=tok)
    return out


def test_a_temperature_too_small_to_divide_by_samples_the_argmax(tiny_ar, capsys):
    """``--temperature 1e-310`` (a subnormal float) on a causal checkpoint divided the logits
    into inf, the softmax into NaN, and wrote token 0 at every position, exit 0. A tiny
    temperature now samples the argmax, its limit (``sampling.ar.tempered``), on the CLI as in
    the library."""
    run = ["generate", "hello", "--model", str(tiny_ar), "--gen-length", "6", "--json",
           "--device", "cpu", "--seed", "1"]
    tokens = {}
    for t in ("0", "1e-310", "5e-324", "1e-40", "1e-6"):
        assert main([*run, "--temperature", t]) == 0
        tokens[t] = json.loads(capsys.readouterr().out)["results"][0]["tokens"]
    assert set(tokens["0"]) != {0}
    assert all(got == tokens["0"] for got in tokens.values()), tokens
def test_demo_escapes_a_models_controls_on_a_terminal(tiny, monkeypatch, capsys):
    """``unmask demo --model RUN`` printed the text a model wrote, byte for byte, as generate
    did: on a terminal its control characters are shown escaped now (the demo's own bold
    stays)."""
    import dataclasses

    from unmask import api

    real = api.generate

    def hostile(*args, **kwargs):
        out = real(*args, **kwargs)
        return dataclasses.replace(out, texts=[HOSTILE + t for t in out.texts])

    monkeypatch.setattr(api, "generate", hostile)
    monkeypatch.setenv("NO_COLOR", "1")
    out = _run(["demo", "--model", str(tiny), "--gen-length", "4", "--steps", "4", "--no-live",
                "--device", "cpu"], monkeypatch, capsys, terminal=True)
    assert SHOWN in out and not any(c in out for c in "\x1b\x07\r\x9b")


def test_stdout_that_cannot_hold_a_character_gets_an_escape_not_a_traceback(tiny, monkeypatch):
    """Standard output in an encoding without some character of the text
    (``PYTHONIOENCODING=latin-1``, a cp1252 file on Windows) ended the run, after all of its
    work, with a UnicodeEncodeError traceback (exit 1). The character is written as
    ``\\u201c`` now, as Python writes stderr; the rest of the text stays."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="latin-1", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    argv = ["infill", "\u201cé\u201d [MASK] end", "--model", str(tiny), "--no-live",
            "--device", "cpu"]
    assert main(argv) == 0
    out.flush()
    written = raw.getvalue().decode("latin-1")
    assert written.startswith("\\u201cé\\u201d ") and written.rstrip("\n").endswith(" end")


@pytest.mark.parametrize("encoding", ["ascii", "cp1252", "latin-1"])
def test_json_to_a_narrow_stdout_still_parses(tiny, monkeypatch, encoding):
    """``--json`` to a stdout whose encoding cannot hold every character wrote ``\\xe9`` and
    ``\\U0001f600`` (the stream's ``backslashreplace``), no JSON escapes: the output did not
    parse. Such a stream gets every non-ASCII character as ``\\u00e9`` now, the same value."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding, write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    prompt = "caf\u00e9 \U0001f600 \u201cq\u201d [MASK] end"
    assert main(["infill", prompt, "--model", str(tiny), "--no-live", "--device", "cpu",
                 "--json"]) == 0
    out.flush()
    got = json.loads(raw.getvalue().decode(encoding))
    assert got["text"].startswith("caf\u00e9 \U0001f600 \u201cq\u201d ")
