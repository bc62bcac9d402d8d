"""Inputs of ``unmask prepare`` a user gets wrong, as the review of session 36's data changes
found them: a wildcard pattern in a tree with links to itself, a missing name with brackets,
text that starts like JSON but is not, chat records in a text file, a JSONL file cut short."""

import signal

import pytest

from unmask.data import prepare, read_jsonl, resolve_inputs
from unmask.errors import UserError


class _Stuck(Exception):
    pass


def _within(seconds: float, call):
    """``call()``, stopped with ``_Stuck`` where it runs past ``seconds`` (a walk that never
    ends); the answer comes at once where nothing is walked."""
    def stop(signum, frame):
        raise _Stuck

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_a_recursive_pattern_in_a_tree_with_links_to_itself_is_answered_at_once(tmp_path):
    """Two links to ``.`` in one folder (build trees hold such) made counting a ``**`` pattern's
    matches walk 2^40 paths: the error never came. It says it is a pattern, and the glob call it
    suggests is the recursive one (without ``recursive=True``, ``**`` is ``*``)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hi")
    (corpus / "x").symlink_to(".")
    (corpus / "y").symlink_to(".")
    pattern = str(corpus / "**" / "*.md")
    with pytest.raises(UserError) as e:
        _within(10, lambda: resolve_inputs([pattern]))
    assert str(e.value).endswith(
        "*.md: no such file or directory, a pattern: prepare does not expand one; give the files "
        f"(sorted(glob.glob({pattern!r}, recursive=True)) in Python) or their folder")
    with pytest.raises(UserError, match=r"\*/\*\.md: no such file or directory, and no file "
                                        r"matches it as a pattern"):
        _within(10, lambda: resolve_inputs([str(corpus / "*" / "*.md")]))


def test_a_missing_name_with_brackets_is_a_missing_file(tmp_path):
    """``[draft] notes.txt`` missing was "... and no file matches it as a pattern (a shell passes
    on one that matches nothing as it is)", which pointed the wrong way; brackets that match
    files still make a pattern."""
    with pytest.raises(UserError, match=r"\[draft\] notes\.txt: no such file or directory$"):
        resolve_inputs([str(tmp_path / "[draft] notes.txt")])
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(UserError, match=r"\[ab\]\.txt: no such file or directory, a pattern, "
                                        r"which 1 file matches: prepare does not expand one"):
        resolve_inputs([str(tmp_path / "[ab].txt")])


def _notes(tmp_path, *inputs):
    info = prepare(list(inputs), tmp_path / "data", tokenizer="byte", val_fraction=0,
                   progress=False, overwrite=True)
    return [n for n in info.notes if "JSON syntax and all" in n]


def test_text_that_only_starts_like_json_gets_no_json_note(tmp_path):
    """Any text file that started like JSON got the note, with the jq advice for JSON arrays:
    a Markdown line, a Ruby hash, a TOML array, a brace alone. Outside ``.json`` files and
    standard input only a first line that is a JSON record (an object with a string member, or
    chat) gets it."""
    texts = {"fruits.md": '["apple", "pear"] are fruits I like.\n',
             "hash.rb": '{"a" => 1, "b" => 2}.each { |k, v| puts k }\n',
             "conf.toml": '["x"]\n', "weird.c": "{\n}\n", "one.cfg": '{"a": 1}\n'}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    assert _notes(tmp_path, *(tmp_path / n for n in texts)) == []
    (tmp_path / "c.txt").write_text('{"content": "hello"}\n')
    [said] = _notes(tmp_path, tmp_path / "c.txt", tmp_path / "conf.toml")
    assert said.endswith("c.txt read as plain text, JSON syntax and all (its first line is a "
                         "JSON object without a string field 'text'; fields: content); if it is "
                         "JSON Lines, name the file .jsonl and the field of the text with "
                         "--text-field (text_field= in Python)")


def test_chat_records_in_a_text_file_are_pointed_at_sft(tmp_path):
    """Chat records in ``chat.txt`` were told to name the file ``.jsonl``, which ``prepare``
    then refuses (chat data is fine-tuned on); the note says so at once."""
    chat = tmp_path / "chat.txt"
    chat.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    [said] = _notes(tmp_path, chat)
    assert "chat.txt read as plain text, JSON syntax and all (its first line is a chat record)" \
        in said
    assert f"fine-tune a model on the file itself (unmask train --objective sft --init RUN " \
           f"--data {chat};" in said
    assert ".jsonl" not in said


def test_a_lone_brace_cut_short_gets_no_jq_advice(tmp_path):
    """A JSONL file holding only ``{`` (cut short) was "JSON written over many lines ...; convert
    it with jq -c .", which jq fails on; it is the JSON error of its line."""
    path = tmp_path / "b.jsonl"
    path.write_text("{\n")
    with pytest.raises(UserError, match=r"b.jsonl:1: not valid JSON"):
        list(read_jsonl(path))
    path.write_text('{\n\n  "text": "a"\n}\n')  # pretty-printed: still named so
    with pytest.raises(UserError, match=r"b.jsonl: JSON written over many lines"):
        list(read_jsonl(path))
