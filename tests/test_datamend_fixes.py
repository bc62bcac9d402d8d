"""Session 29 review of the data changes (helper datamend): what a refused prepare leaves
behind, one Git LFS test, file:line for a surrogate in a gap set, the jq advice for a
compressed JSON array, checkpoint folders among the inputs, null SFT fields, broken links."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from unmask import data
from unmask.errors import UserError
from unmask.files import check_creatable
from unmask.tokenizer import byte_tokenizer

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 29528\n"
)


def _prepare(inputs, out, **kw):
    return data.prepare(inputs, out, tokenizer="byte", val_fraction=0, progress=False, **kw)


def test_a_refused_input_leaves_no_folders_of_o_behind(tmp_path):
    """The -o pre-check made np2/deep/ and kept it when the tar input was then refused."""
    (tmp_path / "x.txt").write_text("hello\n")
    with tarfile.open(tmp_path / "a.tar", "w") as t:
        t.add(tmp_path / "x.txt", arcname="x.txt")
    with pytest.raises(UserError, match="a tar archive"):
        _prepare([tmp_path / "a.tar"], tmp_path / "np2" / "deep" / "data")
    assert not (tmp_path / "np2").exists()


def test_a_failed_build_removes_the_folders_it_made(tmp_path):
    """A corpus too small to split is found after the output's folders were made."""
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(UserError, match="too small to split"):
        data.prepare([tmp_path / "x.txt"], tmp_path / "n" / "e" / "w", tokenizer="byte",
                     progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_check_creatable_probes_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    check_creatable(target)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a writable folder\\)$"):
        check_creatable(tmp_path / "f" / "out")
    if os.getuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(UserError, match=f"^{ro / 'x' / 'out'}: cannot be written"):
            check_creatable(ro / "x" / "out")


def test_prepare_uses_check_creatable(tmp_path, monkeypatch):
    """One implementation of the -o pre-check, shared with convert and distill."""
    called = []
    monkeypatch.setattr(data, "check_creatable", lambda p: called.append(p))
    (tmp_path / "x.txt").write_text("hello world\n" * 50)
    _prepare([tmp_path / "x.txt"], tmp_path / "out")
    assert called == [tmp_path / "out"]


def test_one_git_lfs_test_and_advice_for_prepare_and_convert(tmp_path):
    from unmask.convert.stream import is_lfs_pointer, lfs_error
    from unmask.sniff import LFS_ADVICE, lfs_pointer

    f = tmp_path / "b.txt"
    f.write_text(POINTER)
    assert lfs_pointer(POINTER.encode()) == LFS_ADVICE
    assert lfs_pointer(b"version https://git-lfs.github.com/spec/v1\nhello") is None
    assert is_lfs_pointer(f)
    assert str(lfs_error(f)) == f"{f}: {LFS_ADVICE}"
    with pytest.raises(UserError) as e:
        _prepare([f], tmp_path / "out")
    assert str(e.value) == str(lfs_error(f))


def test_the_safetensors_test_lives_in_sniff():
    from unmask.sniff import safetensors_file

    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    head = len(header).to_bytes(8, "little") + header
    assert "safetensors file" in safetensors_file(head, None)
    assert safetensors_file(b"plain text, nothing else", None) is None


def test_a_surrogate_in_a_gap_set_names_file_and_line(tmp_path):
    from unmask.gapset import read_gap_set

    p = tmp_path / "g.jsonl"
    p.write_text('{"prefix": "a", "middle": "b", "suffix": "c"}\n'
                 '{"prefix": "a\\ud800", "middle": "b", "suffix": "c"}\n')
    with pytest.raises(UserError, match=f"^{p}:2: 'prefix' holds an unpaired surrogate"):
        read_gap_set(p, byte_tokenizer())


@pytest.mark.parametrize("kind,unpack", [("gzip", "gzip -dc"), (None, None)])
def test_a_json_array_gets_a_jq_command_that_works(tmp_path, kind, unpack):
    """jq reads no gzip file, and the target lost the source's folder."""
    rows = json.dumps([{"text": "a"}, {"text": "b"}]).encode()
    sub = tmp_path / "in dir"
    sub.mkdir()
    if kind:
        p = sub / "rows.jsonl.gz"
        p.write_bytes(gzip.compress(rows))
        target = sub / "rows.jsonl"
    else:
        p = sub / "rows.jsonl"
        p.write_bytes(rows)
        target = sub / "rows-lines.jsonl"
    src, dst = shlex.quote(str(p)), shlex.quote(str(target))
    command = f"{unpack} {src} | jq -c '.[]' > {dst}" if unpack else f"jq -c '.[]' {src} > {dst}"
    with pytest.raises(UserError, match=re.escape(f"convert it with {command}") + "$"):
        _prepare([p], tmp_path / "out")


def _checkpoint(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 16)


def test_a_hidden_checkpoint_in_a_corpus_folder_is_skipped(tmp_path):
    corpus = tmp_path / "corpus"
    _checkpoint(corpus / ".checkpoint.old")
    (corpus / "a.txt").write_text("some text here\n")
    info = _prepare([corpus], tmp_path / "out")
    assert info.n_tokens["train"] == len("some text here\n") + 1


def test_a_checkpoint_subfolder_is_named_inside_the_input_folder(tmp_path):
    corpus = tmp_path / "corpus"
    _checkpoint(corpus / "checkpoint")
    (corpus / "a.txt").write_text("some text here\n")
    with pytest.raises(UserError, match=f"^{corpus / 'checkpoint'}: a checkpoint folder "
                       f"\\(a model\\) inside the input folder {corpus}"):
        _prepare([corpus], tmp_path / "out")
    with pytest.raises(UserError, match=f"^{corpus / 'checkpoint'}: a checkpoint folder"):
        _prepare([corpus / "checkpoint"], tmp_path / "out")


def test_a_null_prompt_is_called_null_not_missing(tmp_path):
    from unmask.sft import read_sft_jsonl

    p = tmp_path / "s.jsonl"
    p.write_text('{"prompt": null, "response": "r"}\n')
    with pytest.raises(UserError, match=f"^{p}:1: 'prompt' is null; give a string$"):
        read_sft_jsonl(p)


def test_vocab_size_with_a_bpe_folder_names_the_folder(tmp_path):
    with pytest.raises(UserError, match=r"tokenizer '\./bpe' brings its own vocabulary"):
        data.prepare([tmp_path], tmp_path / "out", tokenizer=Path("bpe"), vocab_size=300)


def test_broken_links_are_skipped_with_a_note_and_annex_links_refused(tmp_path):
    """A source tree's link to a build output not built stopped the whole prepare."""
    corpus = tmp_path / "corpus"
    (corpus / "src").mkdir(parents=True)
    (corpus / "src" / "a.txt").write_text("some text here\n")
    (corpus / "src" / "out.txt").symlink_to("../build/out.txt")
    info = _prepare([corpus], tmp_path / "out")
    assert info.n_tokens["train"] == len("some text here\n") + 1
    assert any("skipped 1 symbolic link(s) to missing files" in n
               and str(corpus / "src" / "out.txt") in n for n in info.notes), info.notes
    (corpus / "b.txt").symlink_to("../.git/annex/objects/Xx/Yy/SHA256E-s5--0/SHA256E-s5--0")
    with pytest.raises(UserError, match=f"^{corpus / 'b.txt'}: a git-annex link whose content "
                       "is not here .*git annex get"):
        _prepare([corpus], tmp_path / "out2")


def test_a_long_text_is_encoded_with_the_gil_released(monkeypatch):
    """``encode`` held the GIL for the whole call (the server's request checks run in
    threads); a long text now goes through HF's ``encode_batch``, which releases it, with the
    same ids."""
    from unmask import tokenizer as tokmod

    tok = tokmod.with_fim_tokens(tokmod.byte_tokenizer())  # HF's path: byte_tokenizer skips it
    text = ("Hello wörld, the quick brown fox. \U0001F642 " * 600)[: tokmod._GIL_FREE_CHARS + 5]
    expected = tok._hf_plain.encode(text, add_special_tokens=False).ids
    calls = []

    class Spy:
        def __init__(self, hf):
            self.hf = hf

        def encode_batch(self, texts, **kw):
            calls.append(len(texts))
            return self.hf.encode_batch(texts, **kw)

        def encode(self, text, **kw):
            return self.hf.encode(text, **kw)

    monkeypatch.setattr(tokmod, "_batch_is_fork_safe", lambda: True)
    monkeypatch.setattr(tok, "_hf_plain", Spy(tok._hf_plain))
    assert tok.encode(text) == expected
    assert calls == [1]
    assert tok.encode("short") == tok._hf_plain.hf.encode("short").ids
    assert calls == [1]


def test_a_run_folder_whose_only_checkpoint_is_the_old_one_is_a_model(tmp_path):
    run = tmp_path / "run"
    _checkpoint(run / ".checkpoint.old")  # a save cut short: the hidden copy is all there is
    (run / "train_config.json").write_text('{"lr": 0.001}\n')
    with pytest.raises(UserError, match=f"^{run}: a checkpoint folder \\(a model\\), not text"):
        _prepare([run], tmp_path / "out")
    assert not (tmp_path / "out").exists()
