"""Evaluation fixes of session 34: ``unmask eval --gaps`` honours ``--seed`` when it samples;
the generative perplexity's held-out prompts lie inside one document."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lm_eval_helpers import mc_task

from unmask.config import SampleConfig
from unmask.gapset import GapSample, infill_exact_match
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
WORDS = "the lord said unto moses go down and speak to the people of israel".split()
TEXT = "In the beginning God created the heaven and the earth. And the earth was without form."


class Uniform:
    """Every token equally likely at every position: a sampled fill is the seed's alone."""

    config = SimpleNamespace(attention="bidirectional", max_seq_len=128)

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return torch.zeros(*tokens.shape, TOK.vocab_size)  # (B, L, V)


def _fills(seed: int | None) -> list[str]:
    ids = TOK.encode(TEXT)
    gaps = [GapSample(ids, start, 6, 6, 6) for start in (3, 20, 40)]
    config = SampleConfig(temperature=1.0, seed=seed)
    score = infill_exact_match(Uniform(), TOK, gaps, config=config)
    assert score.sampling["seed"] == (seed or 0)  # the report names the draws' seed
    return [e["fill"] for e in score.examples]


def test_gap_fills_at_a_temperature_follow_the_seed():
    """The gaps were filled with a generator seeded 0 whatever ``--seed`` said: two seeds
    gave the same fills and the same exact match."""
    assert _fills(1) == _fills(1)
    assert _fills(1) != _fills(2)
    assert _fills(None) == _fills(0)  # no seed: 0, as before


@pytest.fixture(scope="module")
def short_docs(tmp_path_factory):
    """A prepared corpus of one-line documents of 9 to 40 bytes (byte tokens)."""
    from unmask.data import prepare

    root = tmp_path_factory.mktemp("docs")
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g).tolist())
             for n in torch.randint(2, 8, (400,), generator=g).tolist()]
    (root / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([root / "a.txt"], root / "d", tokenizer="byte", val_fraction=0.2, line_docs=True,
            min_val_tokens=0, progress=False)
    return root / "d"


def test_generative_perplexity_prompts_lie_inside_one_document(short_docs):
    """A prompt that held a document separator ended one document and began another: the
    model continued a new document, the reference scorer read the prompt as one text."""
    from unmask.data import TokenDataset
    from unmask.report import validation_prompts

    tok = TokenDataset(short_docs, "val").tokenizer()
    prompts = validation_prompts(short_docs, n=8, length=12)
    assert len(prompts) == 8 and all(len(p) == 12 for p in prompts)
    assert not any(tok.is_special(t) for p in prompts for t in p[1:])


def test_prompts_longer_than_every_document_say_so(short_docs):
    """No prompt fits inside a document: the samples are unconditional, and the note says
    why (it said the split held fewer tokens than the prompt)."""
    from unmask.commands.eval import _no_prompts, _prompt_tokens
    from unmask.report import validation_prompts

    assert validation_prompts(short_docs, n=8, length=60) == []
    assert _prompt_tokens(str(short_docs), 60) == 0  # gen_length keeps the whole context
    assert "no document of the validation split holds 60 tokens" in _no_prompts(
        str(short_docs), 60)


def test_rolling_windows_of_many_documents_share_batches(tmp_path):
    """A causal model's rolling windows are batched across documents: a perplexity task of
    short documents ran one forward (a batch of 1) per document; the sums are unchanged."""
    pytest.importorskip("lm_eval")
    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.lm_eval import UnmaskLM
    from unmask.model import Transformer

    torch.manual_seed(0)
    net = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32,
                                   attention="causal"))
    save_checkpoint(tmp_path, model=net, tokenizer=TOK)
    loaded = load(tmp_path)
    calls = []
    loaded.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    lm = UnmaskLM(loaded=loaded, batch_size=8)
    docs = [SimpleNamespace(args=(text,)) for text in TEXT.split(". ")] * 3  # 6 docs, 9 windows
    alone = [lm.loglikelihood_rolling([d])[0] for d in docs]
    calls.clear()
    together = lm.loglikelihood_rolling(docs)
    assert together == pytest.approx(alone, abs=1e-4)
    assert len(calls) == 2  # its 9 windows in batches of 8 (one call a document: 6)


def test_the_documented_json_keys_are_the_reports():
    """docs/evaluation.md lists the keys of ``unmask eval --json``: its table names every
    part of ``RunReport``, every held-out number of ``EvalResult`` and every key of the
    training, sample-quality, task and infill parts, nothing else (only the first two rows
    were checked: the others could drift unnoticed)."""
    import dataclasses
    import re
    from pathlib import Path

    from unmask.evaluate import EvalResult
    from unmask.gapset import InfillScore
    from unmask.report import RunReport, SampleQuality, TrainingSummary
    from unmask.tasks.score import TaskScore

    doc = (Path(__file__).parents[1] / "docs/evaluation.md").read_text(encoding="utf-8")
    table = doc.split("The `--json` object")[1].split("\n\n")[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    top = [k for first, _ in rows for k in re.findall(r"`([^`]+)`", first)]
    assert top == [f.name for f in dataclasses.fields(RunReport)]
    heldout = next(held for first, held in rows if "`heldout`" in first)
    said = re.findall(r"`([a-z_]+)`", heldout)
    assert said == [f.name for f in dataclasses.fields(EvalResult)] + ["seq_len"]

    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    parts = {  # as unmask.commands.eval fills them in
        "training": set(TrainingSummary().as_dict()),
        "sample_quality": fields(SampleQuality) | {"sampling"},
        "tasks": fields(TaskScore),
        "infill": {"gaps"} | fields(InfillScore),
    }
    for part, keys in parts.items():
        row = next(held for first, held in rows if f"`{part}`" in first)
        assert set(re.findall(r"`([a-z_]+)`", row)) - {"--task-file", "--gaps"} == keys, part


def test_lm_eval_demo_items_are_whole_documents(benchmark, tmp_path):
    """benchmarks/lm_eval_demo.py builds its items from held-out verses: each context and
    true ending is one document. It decoded 512-token windows, whose separators decode to
    nothing, so an item ran documents together and was half a window long."""
    import json

    from unmask.data import prepare

    g = torch.Generator().manual_seed(1)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g).tolist())
             for n in torch.randint(12, 17, (900,), generator=g).tolist()]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer="byte", val_fraction=0.2,
            line_docs=True, min_val_tokens=0, progress=False)
    benchmark("lm_eval_demo").build_tasks(str(tmp_path / "d"), tmp_path, 6, seed=0)
    items = [json.loads(line) for line in (tmp_path / "mc.jsonl").read_text().splitlines()]
    assert len(items) == 6
    for item in items:
        assert item["context"] + item["choices"][item["label"]] in lines


@pytest.mark.parametrize("metric, decoded", [("acc", False), ("exact_match", True)])
def test_is_greedy_is_decoded_only_for_tasks_that_read_it(tmp_path, monkeypatch, metric,
                                                          decoded):
    """A diffusion model's is_greedy (a forward per continuation token, several times the
    ELBO's cost) was decoded for every multiple-choice item, whose acc never reads it."""
    pytest.importorskip("lm_eval")
    import json

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.lm_eval import UnmaskLM, run_tasks
    from unmask.model import Transformer

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", tokenizer=TOK, model=Transformer(
        model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=48)))
    rows = [{"question": f"q{i} is", "choices": [" ab", " cd"], "label": i % 2} for i in range(2)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.yaml").write_text(mc_task("tiny_mc34", tmp_path / "mc.jsonl", metric=metric))
    greedy = []
    monkeypatch.setattr(UnmaskLM, "_greedy", lambda self, c, t: greedy.append(t) or False)
    lm = UnmaskLM(loaded=load(tmp_path / "ckpt"), mc_samples=2)
    res = run_tasks(lm, ["tiny_mc34"], include_path=str(tmp_path))
    assert metric + ",none" in res["results"]["tiny_mc34"]
    assert bool(greedy) == decoded and lm.greedy_check  # the model's own setting is kept
