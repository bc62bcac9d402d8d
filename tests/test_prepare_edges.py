"""``unmask prepare`` on a corpus folder that already holds a prepared dataset."""

from __future__ import annotations

import json

from unmask.cli import main


def test_a_dataset_prepared_inside_the_corpus_folder_is_not_read_as_text(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"f{i}.txt").write_text(f"document number {i} with a few words\n")
    args = ["prepare", str(corpus), "--tokenizer", "byte", "--val-fraction", "0"]
    assert main([*args, "-o", str(corpus / "prep")]) == 0
    first = json.loads((corpus / "prep" / "index.json").read_text())
    capsys.readouterr()
    # a second dataset of the same corpus (another vocabulary, say): its shards were read as
    # text ("train-00000.bin: UTF-16LE text ...") and the run refused
    assert main([*args, "-o", str(corpus / "prep2")]) == 0, capsys.readouterr().err
    second = json.loads((corpus / "prep2" / "index.json").read_text())
    assert second["splits"]["train"]["n_tokens"] == first["splits"]["train"]["n_tokens"]
    assert second["n_documents"] == 3
    # a dataset given as the input is told apart from text in one line
    assert main(["prepare", str(corpus / "prep"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "a dataset written by unmask prepare (token ids), not text" in err
    assert err.count("\n") == 1
