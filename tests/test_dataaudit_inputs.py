"""Inputs ``unmask.data.prepare`` must refuse rather than read as text (session 29 audit)."""

from __future__ import annotations

import gzip
import json
import os
import struct

import pytest

from unmask import data
from unmask.errors import UserError


def _checkpoint(folder):
    """A folder that looks like a checkpoint: ``config.json`` and a ``model.safetensors`` whose
    JSON header passes for text (so only the folder tells it is a model)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dim": 8}), encoding="utf-8")
    header = json.dumps({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    weights = struct.pack("<Q", len(header)) + header + bytes([0x3c, 0xa1, 0xfe, 0xb7] * 2)
    (folder / "model.safetensors").write_bytes(weights)
    return folder


@pytest.mark.parametrize("where", ["ckpt", "run/checkpoint"])
def test_the_library_refuses_a_checkpoint_folder_given_as_input(tmp_path, where):
    _checkpoint(tmp_path / where)
    given = tmp_path / where.split("/")[0]
    # a run folder holding nothing but its checkpoint/ is a model, as --model reads it
    said = f"{given}: a checkpoint folder \\(a model\\), not text"
    with pytest.raises(UserError, match=f"^{said}"):
        data.prepare([given], tmp_path / "out", tokenizer="byte", val_fraction=0,
                     errors="replace", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_folder_inside_a_corpus_folder_is_refused_naming_it(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text to prepare\n", encoding="utf-8")
    _checkpoint(corpus / "run" / "checkpoint")
    with pytest.raises(UserError, match=f"^{corpus / 'run' / 'checkpoint'}: a checkpoint folder "
                       f"\\(a model\\) inside the input folder {corpus}, not text"):
        data.prepare([corpus], tmp_path / "out", tokenizer="byte", val_fraction=0,
                     errors="replace", progress=False)


@pytest.mark.parametrize("compress", [False, True])
def test_a_safetensors_file_is_refused_even_with_errors_replace(tmp_path, compress):
    """Its JSON header passes for text: with errors='replace' the weights were read as a
    document of noise."""
    weights = (_checkpoint(tmp_path / "ckpt") / "model.safetensors").read_bytes()
    p = tmp_path / ("w.safetensors.gz" if compress else "w.safetensors")
    p.write_bytes(gzip.compress(weights) if compress else weights)
    packed = r" \(gzip-compressed\)" if compress else ""
    with pytest.raises(UserError, match=f"^{p}: a safetensors file \\(model weights\\){packed}, "
                       "not text$"):
        data.prepare([p], tmp_path / "out", tokenizer="byte", val_fraction=0, errors="replace",
                     progress=False)


def test_text_that_starts_with_a_brace_after_8_characters_is_text(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("abcdefgh{not a header} and more text\n", encoding="utf-8")
    info = data.prepare([p], tmp_path / "out", tokenizer="byte", val_fraction=0, progress=False)
    assert info.n_documents == 1


@pytest.mark.parametrize(("value", "said"), [
    ("null", "null"), ("true", "true \\(a boolean\\)"), ("1.5", "a number \\(1.5\\)"),
    ("[\"a\"]", "an array"), ("{\"a\": 1}", "an object"),
])
def test_a_text_field_that_is_no_string_is_named_in_json_words(tmp_path, value, said):
    """Exported datasets hold ``"text": null`` for missing rows: it said "is NoneType"."""
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "fine"}\n{"text": ' + value + '}\n', encoding="utf-8")
    with pytest.raises(UserError, match=f"^{p}:2: field 'text' is {said}, not a string$"):
        data.prepare([p], tmp_path / "out", tokenizer="byte", val_fraction=0, progress=False)


def test_a_git_lfs_pointer_is_refused_not_read_as_a_document(tmp_path):
    """A dataset repository cloned without git lfs holds pointers: each was a short document."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("real text\n", encoding="utf-8")
    (corpus / "b.txt").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"^{corpus / 'b.txt'}: a Git LFS pointer, not the "
                       "file's content .*git lfs pull` in its repository, or download it with "
                       "`hf download`$"):
        data.prepare([corpus], tmp_path / "out", tokenizer="byte", val_fraction=0,
                     progress=False)


def test_a_link_to_a_missing_file_inside_a_corpus_folder_is_refused(tmp_path):
    """git-annex keeps files as links into its store; without their content every one was
    skipped in silence (a corpus of such links: 'empty corpus', or part of it missing)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("real text\n", encoding="utf-8")
    target = tmp_path / ".git" / "annex" / "objects" / "Xx" / "Yy" / "SHA256E-s5--0" / "b"
    (corpus / "b.txt").symlink_to(target)
    with pytest.raises(UserError, match=f"^{corpus / 'b.txt'}: a git-annex link whose content "
                       f"is not here \\({target}\\)"):
        data.prepare([corpus], tmp_path / "out", tokenizer="byte", val_fraction=0,
                     progress=False)


def test_a_folder_with_nothing_to_read_says_so_and_why(tmp_path):
    """It said "the inputs hold no text (empty corpus)", as for a file of whitespace."""
    corpus = tmp_path / "corpus"
    (corpus / ".git").mkdir(parents=True)
    (corpus / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (corpus / ".notes.txt").write_text("hidden text\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"^{corpus}: no files to read below it \\(hidden files "
                       "and folders, named \\.\\*, are skipped"):
        data.prepare([corpus], tmp_path / "out", tokenizer="byte", val_fraction=0,
                     progress=False)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_output_where_no_folder_can_be_made_is_refused_before_any_work(tmp_path, monkeypatch):
    """It failed after the tokenizer was trained, with an OSError naming the staging folder."""
    p = tmp_path / "a.txt"
    p.write_text("text " * 100, encoding="utf-8")

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the tokenizer was made before the output was checked")

    monkeypatch.setattr(data, "_make_tokenizer", no_tokenizer)
    with pytest.raises(UserError, match="^/proc/unmask-dataaudit: cannot be written \\("):
        data.prepare([p], "/proc/unmask-dataaudit", val_fraction=0, progress=False)
