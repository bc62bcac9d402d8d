"""Session 31 (api): ``unmask chat`` and ``api.chat`` as a script or a user meets them."""

from __future__ import annotations

import io
import json

import pytest
import torch

from unmask import api
from unmask.chat import DEFAULT_CHAT_TEMPLATE
from unmask.checkpoint import load, save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=160,
                       chat_template=DEFAULT_CHAT_TEMPLATE, **tok.special_ids())
    torch.manual_seed(0)
    return str(save_checkpoint(tmp_path_factory.mktemp("api31chat") / "m",
                               model=Transformer(cfg), tokenizer=tok))


def _chat(path, lines, monkeypatch, capsys, *flags):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{x}\n" for x in lines)))
    rc = main(["chat", "--model", path, "--device", "cpu", "--gen-length", "8", "--json",
               *flags])
    out, err = capsys.readouterr()
    return rc, [json.loads(x) for x in out.splitlines()], err


def test_the_dropped_exchanges_are_counted_in_words(chat_model, monkeypatch, capsys):
    """One exchange dropped said "dropped the 1 oldest exchange(s)"; now the word agrees with
    its count, for one and for several dropped at once."""
    rc, turns, err = _chat(chat_model, ["a", "b", "c" * 100], monkeypatch, capsys)
    assert rc == 0 and [t["dropped"] for t in turns] == [0, 0, 2], turns
    assert "(dropped the 2 oldest exchanges to fit the model's context)" in err
    rc, turns, err = _chat(chat_model, ["a" * 30, "b" * 80], monkeypatch, capsys)
    assert rc == 0 and [t["dropped"] for t in turns] == [0, 1], turns
    assert "(dropped the 1 oldest exchange to fit the model's context)" in err
    assert "(s)" not in err


def test_threads_sharing_one_loaded_checkpoint_write_what_they_write_alone(chat_model):
    """docs/sampling.md, "Threads": calls from several threads on one loaded checkpoint, greedy
    and seeded, write what the same calls write one after another."""
    import threading

    loaded = load(chat_model)
    calls = [(p, c) for p in ("ab", "cde", "f", "ghij")
             for c in ({"gen_length": 6}, {"gen_length": 6, "temperature": 1.0, "seed": 5})]
    alone = [api.generate(loaded, p, config=c).texts for p, c in calls]
    chats = [api.chat(loaded, [{"role": "user", "content": p}], config=c).text for p, c in calls]
    together: dict[int, tuple[list[str], str]] = {}

    def work(i: int) -> None:
        p, c = calls[i]
        together[i] = (api.generate(loaded, p, config=c).texts,
                       api.chat(loaded, [{"role": "user", "content": p}], config=c).text)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(calls))] == list(zip(alone, chats, strict=True))


def test_api_chat_drops_no_turn_and_says_so(chat_model):
    """docs/sampling.md: ``api.chat`` renders every message (``unmask chat`` drops the oldest
    exchanges): a conversation over the context is one line; ``segment_length`` writes it."""
    loaded = load(chat_model)
    msgs = [{"role": "user", "content": "a" * 100}, {"role": "assistant", "content": "b" * 40},
            {"role": "user", "content": "c"}]
    with pytest.raises(UserError, match=r"^prompt \(\d+ tokens\) \+ gen_length \(16\) "
                                        r"exceeds the model's max_seq_len \(160\)"):
        api.chat(loaded, msgs, config={"gen_length": 16})
    reply = api.chat(loaded, msgs, config={"gen_length": 16, "segment_length": 8})
    assert reply.prompt.count("<|user|>") == 2


def test_a_run_dropped_unfinished_is_freed_and_a_raising_callback_leaves_no_trace(chat_model):
    """docs/sampling.md, "Stopping early"."""
    import gc
    import weakref

    loaded = load(chat_model)
    config = {"gen_length": 8, "block_length": 4, "cache": "prefix"}
    run = api.start(loaded, api.prompt_ids(loaded, "ab"), config)
    run.advance()
    ref = weakref.ref(run)
    enabled = gc.isenabled()
    gc.disable()  # freed by its count of references, not by a collection
    try:
        del run
        assert ref() is None
    finally:
        if enabled:
            gc.enable()

    class Stop(Exception):
        pass

    def stop(step: int, view: torch.Tensor) -> None:
        if step == 2:
            raise Stop

    want = api.generate(loaded, ["ab", "c"], config=config).texts
    with pytest.raises(Stop):
        api.generate(loaded, ["ab", "c"], config=config, step_callback=stop)
    assert api.generate(loaded, ["ab", "c"], config=config).texts == want


def test_generate_and_chat_report_the_options_that_ran(chat_model, monkeypatch, capsys):
    """``Generation.config`` and ``Reply.config``: the options that ran, the checkpoint's
    recommendation filled in and the decoder named, as ``--json`` reports them (a script had
    no way to log them but to redo ``sample_config``); ``Reply.decoder`` as ``Generation``'s."""
    import dataclasses

    from unmask.config import SampleConfig

    loaded = load(chat_model)
    given = {"gen_length": 8, "temperature": 0.5, "seed": 3}
    want = dataclasses.replace(api.sample_config(loaded, given), decoder="llada")
    out = api.generate(loaded, ["ab", "c"], config=given)
    assert out.config == want and out.decoder == "llada"
    fixed = SampleConfig(gen_length=4, steps=4)
    assert api.generate(loaded, "ab", config=fixed).config == dataclasses.replace(
        fixed, decoder="llada")
    reply = api.chat(loaded, [{"role": "user", "content": "hello"}], config=given)
    assert reply.config == want and reply.decoder == "llada"
    rc, turns, _ = _chat(chat_model, ["hello"], monkeypatch, capsys, "--temperature", "0.5",
                         "--seed", "3")
    # as JSON writes them (a tuple such as ``exempt_ids`` reads back a list)
    assert rc == 0 and turns[0]["config"] == json.loads(json.dumps(dataclasses.asdict(want)))
    assert turns[0]["reply"] == reply.text


def test_stop_sequences_end_generate_and_chat_texts():
    """``generate(..., stop=)`` and ``chat(..., stop=)``: the text ends before the
    earliest-starting stop sequence, as the server's ``stop`` (the Python API had none). On
    the shipped demo model, whose text has words to stop at."""
    loaded = load("demo")
    config = {"gen_length": 16}
    full = api.generate(loaded, ["In the beginning", "And God said"], config=config)
    first = full.texts[0]
    k = next(k for k in range(1, len(first)) if first.find(first[k]) == k)
    word = first[k]  # first found at k
    cut = api.generate(loaded, ["In the beginning", "And God said"], config=config,
                       stop=[word, "\x00never"])
    want = [t[: t.find(word)] if word in t else t for t in full.texts]
    assert cut.texts == want and cut.texts[0] == first[:k]
    # the run stops at the stop (docs/sampling.md, "Stop sequences end decoding"): each row's
    # ids through it are the full run's, and n_tokens counts through it (the server's usage)
    from unmask.sampling.stops import TextEnd, tokens_ended

    rule = TextEnd((word, "\x00never"), frozenset({api.facts_of(loaded).eos_id}))
    through = [tokens_ended(loaded.tokenizer, ids, rule) for ids in full.ids]
    assert cut.n_tokens == sum(through) < full.n_tokens
    for c, f, n in zip(cut.ids, full.ids, through, strict=True):
        assert c[:n] == f[:n]
    assert api.generate(loaded, ["In the beginning", "And God said"], config=config,
                        stop=word).texts == want
    messages = [{"role": "user", "content": "Who was Noah?"}]
    reply = api.chat(loaded, messages, config=config, template="plain").text
    k = next(k for k in range(2, len(reply)) if reply.find(reply[k]) == k)
    stopped = api.chat(loaded, messages, config=config, template="plain", stop=reply[k]).text
    assert stopped == reply[:k].strip() and stopped
    for bad, says in ((5, "not int"), ([""], "got ''"), (["a", None], "got None")):
        with pytest.raises(UserError, match=says):
            api.generate(loaded, "ab", config=config, stop=bad)
        with pytest.raises(UserError, match=says):
            api.chat(loaded, messages, config=config, template="plain", stop=bad)


def test_ctrl_c_while_the_view_clears_keeps_what_it_says(chat_model, monkeypatch, capsys):
    """A Ctrl-C that lands after the reply was added, while the live view is cleared, said
    "the message was not added" and the exchange stayed in the history; now it is dropped."""
    from unmask.commands import chat as chat_cmd

    class View:
        closes = 0

        def __call__(self, step: int, view: torch.Tensor) -> None:
            pass

        def close(self, clear: bool = False) -> None:
            View.closes += 1
            if View.closes == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(chat_cmd, "make_live", lambda *a, **k: View())
    loaded = load(chat_model)
    template = api.chat_template(loaded)
    session = chat_cmd.ChatSession(loaded, template, api.sample_config(loaded, {"gen_length": 4}))
    lines = iter(["first message", "second"])

    def read() -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert chat_cmd.converse(session, read, interactive=True, live=True) == 0
    err = capsys.readouterr().err
    assert "(interrupted; the message was not added)" in err
    assert [t["content"] for t in session.turns if t["role"] == "user"] == ["second"]
