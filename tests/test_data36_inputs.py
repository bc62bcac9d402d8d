"""Inputs of ``unmask prepare`` and ``read_jsonl`` (SFT data, task files) that a user gets
wrong: JSON records written over many lines where JSON Lines go."""

import gzip

import pytest

from unmask.data import prepare, read_jsonl
from unmask.errors import UserError

PRETTY = ('{\n  "prompt": "Say hi",\n  "response": "hi"\n}\n'
          '{\n  "prompt": "a",\n  "response": "b"\n}\n')


def test_pretty_printed_records_are_named_with_the_command_that_converts_them(tmp_path):
    """Records pretty-printed one field a line (``json.dump(..., indent=2)``) were "line 1: not
    valid JSON (Expecting property name enclosed in double quotes at column 2)"; they are named
    as such, with the jq line that puts each on one line."""
    path = tmp_path / "chat.json"
    path.write_text(PRETTY)
    with pytest.raises(UserError, match=r"chat.json: JSON written over many lines, not JSON "
                                        r"Lines .*; convert it with jq -c \. .*chat.json > "
                                        r".*chat.jsonl$"):
        list(read_jsonl(path))
    packed = tmp_path / "notes.jsonl.gz"
    packed.write_bytes(gzip.compress(PRETTY.replace("prompt", "text").encode()))
    with pytest.raises(UserError, match=r"over many lines.*gzip -dc .*notes.jsonl.gz \| jq -c \. "
                                        r"> .*notes.jsonl$"):
        prepare([packed], tmp_path / "data", tokenizer="byte", val_fraction=0, progress=False)
    assert not (tmp_path / "data").exists()


def test_a_bad_first_line_that_does_not_open_an_object_is_still_a_json_error(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text":\n"a"}\n')
    with pytest.raises(UserError, match=r"a.jsonl:1: not valid JSON"):
        list(read_jsonl(path))
    path.write_text('{"text": "a"}\n{\n')  # the second line is not the first: a JSON error
    with pytest.raises(UserError, match=r"a.jsonl:2: not valid JSON"):
        list(read_jsonl(path))


def test_a_wildcard_pattern_is_named_as_one(tmp_path):
    """``prepare("corpus/*.txt")`` from Python, or a pattern a shell passed on because it matched
    nothing, was only "no such file or directory"."""
    (tmp_path / "corpus").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "corpus" / name).write_text("some text")
    pattern = str(tmp_path / "corpus" / "*.txt")
    with pytest.raises(UserError, match=r"\*\.txt: no such file or directory, a pattern, which 2 "
                                        r"files match: prepare does not expand one"):
        prepare(pattern, tmp_path / "data", tokenizer="byte", val_fraction=0, progress=False)
    with pytest.raises(UserError, match=r"\*\.jsonl: no such file or directory, and no file "
                                        r"matches it as a pattern"):
        prepare([str(tmp_path / "corpus" / "*.jsonl")], tmp_path / "data", tokenizer="byte",
                val_fraction=0, progress=False)
    with pytest.raises(UserError, match=r"missing.txt: no such file or directory$"):
        prepare([tmp_path / "missing.txt"], tmp_path / "data", tokenizer="byte", progress=False)


def test_an_input_that_is_a_link_to_a_missing_file_is_named_as_one(tmp_path):
    """A link given as an input whose target is gone (a git-annex file not fetched, as below a
    folder, or another) was "no such file or directory", of a name ``ls`` lists."""
    (tmp_path / ".git" / "annex" / "objects").mkdir(parents=True)
    annexed, gone = tmp_path / "a.txt", tmp_path / "b.txt"
    annexed.symlink_to(".git/annex/objects/Xx/SHA256E-s5--0a1b.txt")
    gone.symlink_to(tmp_path / "moved" / "b.txt")
    with pytest.raises(UserError, match=r"a.txt: a git-annex link whose content is not here "
                                        r"\(.git/annex/objects/.*\); fetch it \(git annex get\)"):
        prepare([annexed], tmp_path / "data", tokenizer="byte", progress=False)
    with pytest.raises(UserError, match=r"b.txt: a symbolic link to a missing file \(.*moved"):
        prepare([gone], tmp_path / "data", tokenizer="byte", progress=False)
    with pytest.raises(UserError, match=r"a.txt: a git-annex link whose content is not here"):
        prepare([tmp_path], tmp_path.with_name("data"), tokenizer="byte", progress=False)


def test_json_lines_under_a_text_name_is_read_as_text_with_a_note(tmp_path):
    """JSON Lines in ``data.txt`` (or a file with no extension) was trained on as text, JSON
    syntax and all, without a word; it still is (a text file is one document), with a note
    naming it and what to do. Text that only starts with a bracket gets no note."""
    (tmp_path / "recs.txt").write_text('{"text": "hello"}\n{"text": "world"}\n')
    (tmp_path / "recs").write_text('{"text": "again"}\n')
    (tmp_path / "song.txt").write_text("[Verse 1]\nla la la\n")
    info = prepare([tmp_path / "recs.txt", tmp_path / "recs", tmp_path / "song.txt"],
                   tmp_path / "data", tokenizer="byte", val_fraction=0, progress=False)
    assert info.n_documents == 3
    said = [n for n in info.notes if "JSON syntax and all" in n]
    assert len(said) == 1 and "recs.txt and 1 more inputs read as plain text" in said[0]
    assert "its first line is a JSON record, as in JSON Lines); name the file .jsonl" in said[0]
    plain = prepare([tmp_path / "song.txt"], tmp_path / "data2", tokenizer="byte",
                    val_fraction=0, progress=False)
    assert plain.notes == ()
