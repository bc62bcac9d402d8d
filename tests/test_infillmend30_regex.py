"""``edit --regex`` after review (session 30): the regex search's child process.

- A child that died without a word (the OOM killer, ``SIGKILL``) made the search run again in
  the parent with no time limit: the hang the child exists to prevent. Only a child that
  cannot be started runs the search here.
- ``/v1/edit`` searched on the one model worker: every other request waited up to 5 s
  behind a slow regex. The matches are now found before the edit is queued.
- A text far over the model's context was searched before the context check: a 2M-character
  text with a harmless pattern ran out of time and the message blamed backtracking.
- The child wrote its spans as JSON a piece at a time (11,000 matches took 70 ms more than
  the start, 1M took 4 s): now packed 64-bit ints, 16 bytes a match.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import threading

import pytest
import torch

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill import edit
from unmask.infill.edit import regex_spans
from unmask.tokenizer import byte_tokenizer

edit_module = importlib.import_module("unmask.infill.edit")  # the package's ``edit``: a function

TOK = byte_tokenizer()


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell script stands in")
def test_a_child_killed_without_a_word_is_a_user_error_not_a_search_here(tmp_path, monkeypatch):
    dying = tmp_path / "python"
    dying.write_text("#!/bin/sh\nkill -9 $$\n")
    dying.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(dying))
    searched_here = []
    monkeypatch.setattr(edit_module.re, "finditer",
                        lambda *a: searched_here.append(a) or iter(()))
    with pytest.raises(UserError, match=r"^regex 'a' failed on the text: its process was "
                                        r"killed \(SIGKILL\)$"):
        regex_spans("a", "banana")
    assert not searched_here


def test_a_child_that_cannot_start_searches_here(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    assert regex_spans("an", "banana") == [(1, 3), (3, 5)]


def test_a_child_that_a_loaded_machine_cannot_start_is_a_user_error_not_a_search_here(
        monkeypatch):
    """No file descriptors or processes left (EMFILE, EAGAIN) is not "no interpreter": the
    search ran here, without its limit, and on a server froze every thread with it."""
    import errno

    def refused(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(edit_module.subprocess, "run", refused)
    monkeypatch.setattr(edit_module.re, "finditer",
                        lambda *a: pytest.fail("searched here, unbounded"))
    with pytest.raises(UserError, match=r"^regex 'a': could not start its search process "
                                        r"\(Too many open files\); try again$"):
        regex_spans("a", "banana")


def test_the_childs_answer_is_sixteen_bytes_a_match(monkeypatch):
    answers = []
    run = subprocess.run

    def spy(*args, **kwargs):
        answers.append(done := run(*args, **kwargs))
        return done

    monkeypatch.setattr(edit_module.subprocess, "run", spy)
    text = "x" * 20_000 + "ab" * 1000
    assert regex_spans("b|", text) == [m.span() for m in re.finditer("b|", text)]
    assert len(answers[0].stdout) == 16 * len(re.findall("b|", text))


@pytest.mark.parametrize(("pattern", "text"), [
    ("", ""), ("", "ab"), ("(?i)straße", "STRASSE straße"), ("\x00", "a\x00b"),
    ("\ud83d", "\ud83d\ude00 \ud83d"), (r"[\U0001F600-\U0001F64F]", "hi 😀 x😃"),
])
def test_the_packed_answer_reads_as_pythons_matches(pattern, text):
    assert regex_spans(pattern, text) == [m.span() for m in re.finditer(pattern, text)]


def test_a_text_over_the_context_is_refused_before_its_regex_is_searched(monkeypatch):
    from unmask.config import model_preset
    from unmask.model import Transformer

    def slow(regex, text, **kw):
        raise UserError(f"regex {regex!r} searched the text for over 5 s and was stopped")

    monkeypatch.setattr(edit_module, "regex_spans", slow)
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32,
                                     **TOK.special_ids())).eval()
    with pytest.raises(UserError, match="more than the model's context"):
        edit(model, TOK, "x" * 100, regex="x", config=SampleConfig(steps=1))


def test_the_server_searches_a_regex_off_the_model_worker(monkeypatch):
    """On the worker, a slow regex held every other request for up to 5 s."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from server_helpers import loaded, tiny_config

    from unmask.model import Transformer
    from unmask.server import create_app

    threads = []
    search = edit_module.regex_spans

    def spy(regex, text, **kw):
        threads.append(threading.current_thread().name)
        return search(regex, text, **kw)

    monkeypatch.setattr(edit_module, "regex_spans", spy)
    torch.manual_seed(0)
    text = "The cat sat on the mat."
    with TestClient(create_app(loaded(Transformer(tiny_config()).eval()))) as client:
        r = client.post("/v1/edit", json={"text": text, "regex": "cat|mat", "steps": 2})
        assert r.status_code == 200, r.text
        assert r.json()["spans"] == [[4, 7], [19, 22]]
        for regex, want in (("dog", "matches nothing"), ("(", "bad regex")):
            r = client.post("/v1/edit", json={"text": text, "regex": regex})
            assert r.status_code == 400, r.text
            assert want in r.json()["error"]["message"]
            assert r.json()["error"]["param"] == "regex"
    assert len(threads) == 3 and "unmask-engine" not in threads, threads
