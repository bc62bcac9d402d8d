"""Evaluation fixes of session 34, second review: a generative-perplexity prompt never runs
across a join of the validation split's blocks nor begins in the middle of a document; a
rolling or generating task with its own ``process_results`` (``wikitext``) leaves the
is_greedy skip on; the dataset's tokenizer is loaded once for an evaluation's prompts."""

from __future__ import annotations

import pytest
import torch

WORDS = "the lord said unto moses go down and speak to the people of israel".split()
BLOCK = 4096  # unmask.data.SPLIT_BLOCK, as index.json records it


def _lines(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (k,), generator=g).tolist())
            for k in torch.randint(2, 12, (n,), generator=g).tolist()]


def _prepare(root, text: str, name: str = "d", **kw):
    from unmask.data import prepare

    (root / f"{name}.txt").write_text(text)
    prepare([root / f"{name}.txt"], root / name, tokenizer="byte", min_val_tokens=0,
            progress=False, **kw)
    return root / name


@pytest.fixture(scope="module")
def verses(tmp_path_factory):
    """One-line documents of 2 to 11 words (byte tokens), enough for a validation split of
    three blocks: (its folder, the lines)."""
    lines = _lines(1000)
    data = _prepare(tmp_path_factory.mktemp("verses"), "\n".join(lines) + "\n",
                    val_fraction=0.3, line_docs=True)
    return data, lines


def test_a_document_never_spans_two_validation_blocks(verses):
    """The split's blocks lie apart in the corpus but are joined with no separator: the run
    across each join counted as one document (on the demo corpus 5 of 927, a prompt read
    Ezra 6:14 into Isaiah 56:7), and the run at a block's start is a document's tail (the
    split's first prompt began mid-verse). Each document now starts after a separator,
    inside one block, and every prompt is the start of a line of the corpus."""
    from unmask.data import TokenDataset
    from unmask.report import validation_documents, validation_prompts

    data, lines = verses
    val = TokenDataset(data, "val")
    assert len(val) == 3 * BLOCK  # two joins
    tok = val.tokenizer()
    starts, lengths = validation_documents(data)
    assert len(starts) > 100
    assert ((starts // BLOCK) == ((starts + lengths - 1) // BLOCK)).all()
    assert all(tok.is_special(int(val.read(int(s) - 1, 1)[0])) for s in starts)
    held = int((lengths >= 8).sum())  # each the first 8 tokens of a document
    texts = [tok.decode(p) for p in validation_prompts(data, n=held, length=8)]
    assert len(texts) == held > 100
    assert all(any(line.startswith(t) for line in lines) for t in texts)


def test_a_split_inside_one_long_document_still_gives_prompts_within_blocks(tmp_path):
    """A corpus of one document (no separator in the split, as a few long files prepared
    without --line-docs give): every block is a piece of it and gives prompts, as the
    whole split did, but a prompt no longer runs across a join."""
    from unmask.report import validation_documents, validation_prompts

    text = " ".join(_lines(1500, seed=1))[: 6 * BLOCK + 100]
    data = _prepare(tmp_path, text, val_fraction=0.3)
    starts, lengths = validation_documents(data)
    assert starts.tolist() == [0, BLOCK] and lengths.tolist() == [BLOCK, BLOCK]
    assert len(validation_prompts(data, n=8, length=1000)) == 8  # 4 in each block


def test_the_dataset_tokenizer_is_loaded_once_for_an_evaluations_prompts(tmp_path,
                                                                         monkeypatch):
    """An evaluation looks for prompts up to 3 times (the prompt length, the prompts, the
    longest document for a note), and each loaded the tokenizer and looped over its
    vocabulary in Python: 1.5 s a time at 128k tokens. A dataset prepared again in place is
    read again."""
    from unmask.data import TokenDataset
    from unmask.report import validation_documents, validation_prompts

    loads = []
    real = TokenDataset.tokenizer
    monkeypatch.setattr(TokenDataset, "tokenizer", lambda self: loads.append(1) or real(self))
    data = _prepare(tmp_path, "\n".join(_lines(400)) + "\n", val_fraction=0.2, line_docs=True)
    first = validation_prompts(data, n=1, length=8)
    assert validation_prompts(data, n=8, length=8)[0] == first[0]
    longest = int(validation_documents(data)[1].max())
    assert len(loads) == 1 and first
    _prepare(tmp_path, "\n".join(_lines(400, seed=2)) + "\n", val_fraction=0.2,
             line_docs=True, overwrite=True)
    assert validation_prompts(data, n=1, length=8) != first
    assert len(loads) == 2 and longest > 8


def test_every_token_the_tokenizer_counts_special_is_a_separator(tmp_path):
    """The table of special tokens, built without a loop over the vocabulary, holds the
    appended ones too (FIM sentinels, [EMPTY]), as ``Tokenizer.is_special`` does."""
    from unmask.data import TokenDataset
    from unmask.report import _special_table
    from unmask.tokenizer import byte_tokenizer, with_empty_token, with_fim_tokens

    with_empty_token(with_fim_tokens(byte_tokenizer())).save(tmp_path / "tok")
    (tmp_path / "a.txt").write_text("\n".join(_lines(400)) + "\n")
    from unmask.data import prepare

    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=tmp_path / "tok" / "tokenizer.json",
            val_fraction=0.2, min_val_tokens=0, line_docs=True, progress=False)
    val = TokenDataset(tmp_path / "d", "val")
    tok = val.tokenizer()
    table = _special_table(val)
    assert table.tolist() == [tok.is_special(i) for i in range(val.vocab_size)]
    assert table.sum() == 8  # mask, pad, EOS, BOS, three FIM sentinels, [EMPTY]


GREEDY_PR = '''def mc(doc, results):
    lls, is_greedy = zip(*results)
    return {"acc": float(is_greedy[int(doc["label"])])}


def rolling(doc, results):
    (ll,) = results
    return {"word_perplexity": (ll, 3)}


def gen(doc, results):
    return {"exact_match": float(results[0] == doc["answer"])}
'''

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {kind}
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
doc_to_choice: "{{{{choices}}}}"
{extra}metric_list:
  - metric: {metric}
"""


def test_a_rolling_or_generating_task_with_its_own_process_results_keeps_the_skip(tmp_path):
    """A task with its own ``process_results`` counted as reading is_greedy whatever its
    output type: ``--tasks wikitext,arc_easy`` (wikitext has one, and is rolling) decoded
    every continuation of arc_easy greedily again, though a rolling or generating task is
    never sent is_greedy. A multiple-choice task with one still reads it."""
    pytest.importorskip("lm_eval")
    import json

    from lm_eval.tasks import TaskManager

    from unmask.lm_eval import reads_is_greedy

    rows = [{"question": "q is", "choices": [" ab", " cd"], "label": 0, "answer": " ab"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "utils.py").write_text(GREEDY_PR)
    tasks = {"e2_roll": ("loglikelihood_rolling", "word_perplexity", "utils.rolling"),
             "e2_gen": ("generate_until", "exact_match", "utils.gen"),
             "e2_mc": ("multiple_choice", "acc", None),
             "e2_mc_pr": ("multiple_choice", "acc", "utils.mc")}
    for name, (kind, metric, pr) in tasks.items():
        extra = f"process_results: !function {pr}\n" if pr else ""
        (tmp_path / f"{name}.yaml").write_text(TASK.format(
            name=name, data=tmp_path / "rows.jsonl", kind=kind, metric=metric, extra=extra))
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    built = manager.load(list(tasks))["tasks"]
    assert built["e2_roll"].config.process_results is not None  # as wikitext's
    assert not reads_is_greedy([built["e2_roll"], built["e2_gen"], built["e2_mc"]])
    assert reads_is_greedy([built["e2_roll"], built["e2_mc_pr"]])


def _documents_one_by_one(tokens, special, block: int, length: int):
    """The rule of ``validation_documents``, token by token: runs end at separators and at
    block joins; one that begins at a join and ends at a separator is left out."""
    out, start, from_sep = [], 0, False
    for p in range(len(tokens) + 1):
        cuts = [False] if (p and p % block == 0) or p == len(tokens) else []
        if p < len(tokens) and special[tokens[p]]:
            cuts.append(True)
        for at_sep in cuts:  # a join before a separator at the same place
            if p - start >= max(length, 1) and (from_sep or not at_sep):
                out.append((start, p - start))
            start, from_sep = p + at_sep, at_sep
    return out


@pytest.mark.parametrize("block", [50, 64, 97])
def test_documents_read_in_chunks_follow_the_rule_token_by_token(verses, tmp_path,
                                                                 monkeypatch, block):
    """Small blocks (``split_block`` in index.json) and chunks, so that joins, chunk ends
    and separators meet in every order; ``enough`` stops early on a prefix of the whole."""
    import json
    import shutil

    import unmask.report as report
    from unmask.data import TokenDataset

    data = tmp_path / "d"
    shutil.copytree(verses[0], data)
    index = json.loads((data / "index.json").read_text())
    (data / "index.json").write_text(json.dumps({**index, "split_block": block}))
    monkeypatch.setattr(report, "_CHUNK", 37)
    val = TokenDataset(data, "val")
    tokens = val.read(0, len(val))
    special = report._special_table(val)
    for length in (1, 5, 20):
        want = _documents_one_by_one(tokens, special, block, length)
        starts, lengths = report.validation_documents(data, length=length)
        assert list(zip(starts.tolist(), lengths.tolist(), strict=True)) == want
        some, _ = report.validation_documents(data, length=length, enough=7)
        assert 7 <= len(some) < len(want) and some.tolist() == starts[: len(some)].tolist()


def test_a_tokenizer_rewritten_with_its_old_modification_time_is_read_again(tmp_path):
    """The per-process cache of a dataset's special ids was keyed on modification time and
    size only: a tokenizer.json rewritten at the same size with its old time put back (cp -p,
    rsync -t, tar) kept the old special ids (review rm6); its change time says otherwise."""
    import os
    import re

    import unmask.report as report
    from unmask.data import TokenDataset, prepare
    from unmask.tokenizer import byte_tokenizer, with_fim_tokens

    with_fim_tokens(byte_tokenizer()).save(tmp_path / "tok")
    (tmp_path / "a.txt").write_text("\n".join(f"the lord said unto moses {i}"
                                              for i in range(3000)) + "\n")
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=tmp_path / "tok" / "tokenizer.json",
            val_fraction=0.2, min_val_tokens=0, line_docs=True, progress=False)
    val = TokenDataset(tmp_path / "d", "val")
    before = int(report._special_table(val).sum())
    file = tmp_path / "d" / val.index.get("tokenizer", "tokenizer.json")
    st = os.stat(file)
    old = file.read_text()
    new = re.sub(r'("content": "\[FIM_\w+\]",(?:\n.*?){4})"normalized": false,(\s*)"special": true',
                 r'\1"normalized":false,\2"special": false', old)  # same size, FIM not special
    assert new != old and len(new) == len(old)
    file.write_text(new)
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
    got = int(report._special_table(TokenDataset(tmp_path / "d", "val")).sum())
    report._special_ids.cache_clear()
    fresh = int(report._special_table(TokenDataset(tmp_path / "d", "val")).sum())
    assert got == fresh < before
