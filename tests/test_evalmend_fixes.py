"""Session 29 eval fixes: decode_each decodes by api.run_rows (one implementation), each
result's texts decoded once, a task file split at line ends only, --output-path made only
once the tasks are known, and task runs, lm-eval generations and generative-perplexity
samples on a checkpoint whose blocks start at the first prompt token (absolute blocks)
fitted to those blocks as generate fits them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from unmask.cli import main


def _checkpoint(path, **model):
    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = dataclasses.replace(
        model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64), **model)
    save_checkpoint(path, model=Transformer(cfg), tokenizer=tok)
    return load(path)


ABSOLUTE = {"attention": "block-causal", "block_size": 4, "objective": "bd3lm",
            "block_align": "absolute", "logit_shift": True}


def _reversal(n: int = 6):
    from unmask.tasks import Item

    names = ["Ab", "Bcd", "Cdef", "Defgh", "Efghij", "Fg"]
    return [Item("reversal", f"{a}'s child is", f" {b}", meta={"direction": "forward"})
            for a, b in zip(names[:n], names[1:] + names[:1], strict=False)]


def test_decode_each_decodes_seeded_rows_by_api_run_rows(tmp_path, monkeypatch):
    """The seeded rows go through ``unmask.api.run_rows``, generate's own path (score.py had
    a copy of it); each prompt is a row of the joined result."""
    import unmask.api
    from unmask.tasks.score import decode_each

    loaded = _checkpoint(tmp_path / "c")
    calls = []
    real = unmask.api.run_rows

    def spy(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(unmask.api, "run_rows", spy)
    config = unmask.api.sample_config(loaded, {"gen_length": 4, "temperature": 1.0, "seed": 3})
    prompts = [[5, 6, 7], [8], [9, 10]]
    rows = decode_each(loaded, prompts, config, unmask.api.choose(loaded, config))
    assert calls == [3]
    assert [i for _, i in rows] == [0, 1, 2] and len({id(r) for r, _ in rows}) == 1
    alone = [decode_each(loaded, [p], config, unmask.api.choose(loaded, config), [3 + 0])
             for p in prompts[:1]]
    assert rows[0][0].gen_ids[0] == alone[0][0][0].gen_ids[0]


def test_score_items_decodes_each_result_once(tmp_path, monkeypatch):
    """One ``texts`` call per decoded batch (it decoded the whole batch once per row)."""
    from unmask.sampling.protocol import GenerateResult
    from unmask.tasks.score import score_items

    loaded = _checkpoint(tmp_path / "c")
    calls = []
    real = GenerateResult.texts

    def counted(self, tok):
        calls.append(self.gen_ids.__len__())
        return real(self, tok)

    monkeypatch.setattr(GenerateResult, "texts", counted)
    score = score_items(loaded, _reversal(5), batch_size=4)
    assert score.total == 5 and calls == [4, 1]


def test_a_task_file_splits_at_line_ends_only(tmp_path):
    """U+2028, U+2029 and U+0085 inside a JSON string (written raw, ensure_ascii=False) are
    text, not line ends: str.splitlines cut the record there ("not a JSON object")."""
    from unmask.tasks import read_items

    items = [dataclasses.replace(i, prompt=i.prompt.replace("'s", sep + "'s"))
             for i, sep in zip(_reversal(3), ("\u2028", "\u2029", "\u0085"), strict=True)]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(dataclasses.asdict(i), ensure_ascii=False) + "\r\n"
                            for i in items), encoding="utf-8")
    assert read_items(path) == items


def test_an_unknown_task_leaves_no_output_folder(tmp_path, capsys, monkeypatch):
    """--output-path is made only once the tasks are found: an unknown task left the folders
    (nested, empty) behind."""
    pytest.importorskip("lm_eval")
    import functools

    import lm_eval.tasks

    manager = functools.partial(lm_eval.tasks.TaskManager, include_defaults=False)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", manager)
    _checkpoint(tmp_path / "ckpt")
    (tmp_path / "t").mkdir()
    out = tmp_path / "out" / "deep"
    rc = main(["eval", str(tmp_path / "ckpt"), "--tasks", "tiny_typo", "--include-path",
               str(tmp_path / "t"), "--output-path", str(out), "--no-score", "--no-plot",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown task 'tiny_typo'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_task_items_on_absolute_blocks_decode_as_alone(tmp_path, temperature):
    """Prompts of lengths unequal modulo the block size, steps one a token: the batch was
    refused ("a batch needs equal lengths modulo 4"), a row alone refused the steps nobody
    gave; now each group of equal tails is a batch, its steps fitted to its blocks, and each
    item's output is the one it gets alone."""
    from unmask.tasks.score import score_items

    loaded = _checkpoint(tmp_path / "c", **ABSOLUTE)
    items = _reversal(6)
    given = {"temperature": temperature, "seed": 1}
    together = score_items(loaded, items, given=given, batch_size=6, keep_examples=6)
    alone = [score_items(loaded, [i], given={**given, "gen_length": together.sampling[
        "gen_length"]}, keep_examples=1).examples[0]["output"] for i in items]
    assert [e["output"] for e in together.examples] == alone  # distinct prompts: seed 1 each
    assert together.total == 6


def test_eval_samples_on_absolute_blocks_fit_the_steps(tmp_path, capsys, monkeypatch):
    """Generative-perplexity samples of --prompt-tokens 5 on absolute blocks: the steps one a
    token are fitted to the blocks the prompts span (refused before anything ran)."""
    import unmask.scoring
    from unmask.data import prepare

    class Scorer:  # the samples are drawn; the reference model is not needed to see that
        name = "stand-in"

        def perplexity(self, texts, prompts=None):
            assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
            return 7.0

    monkeypatch.setattr(unmask.scoring.ReferenceScorer, "from_smollm2",
                        staticmethod(lambda **kwargs: Scorer()))
    _checkpoint(tmp_path / "ckpt", **ABSOLUTE)
    (tmp_path / "a.txt").write_text("the cat sat on the mat.\n" * 400)
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer="byte", val_fraction=0.5,
            progress=False)
    rc = main(["eval", str(tmp_path / "ckpt"), "--data", str(tmp_path / "data"), "--no-plot",
               "--device", "cpu", "--batches", "1", "--prompt-tokens", "5", "--gen-length",
               "10", "--samples", "2", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    q = json.loads(out)["sample_quality"]
    assert q["gen_length"] == 10 and q["sampling"]["steps"] == 9  # 3 blocks: 9 of 10 steps
    assert q["gen_ppl"] == 7.0 and q["samples"] == 2


def test_lm_eval_generations_on_absolute_blocks(tmp_path):
    """generate_until with contexts of unequal lengths modulo the block size (refused as one
    batch) and steps one a token: each request as it decodes alone."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=_checkpoint(tmp_path / "c", **ABSOLUTE), batch_size=4,
                  greedy_check=False)
    reqs = [Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": 6}), 0)
            for p in ("a", "hello there", "xyz", "bcde")]
    together = lm.generate_until(reqs)
    assert together == [lm.generate_until([r])[0] for r in reqs]
