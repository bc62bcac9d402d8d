"""``unmask.lm_eval`` (session 38 of the eval audit): lm-eval's own refusals of a run's
settings as one line, not a traceback after the model loaded."""

import json

import pytest
import torch
from lm_eval_helpers import mc_task

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny diffusion checkpoint and a local multiple-choice task of 3 items."""
    from unmask.checkpoint import save_checkpoint
    from unmask.lm_eval import UnmaskLM
    from unmask.tokenizer import byte_tokenizer

    root = tmp_path_factory.mktemp("t38")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48)
    save_checkpoint(root / "ckpt", model=Transformer(cfg), tokenizer=tok)
    rows = [{"question": f"q{i} is", "choices": [" ab", " cd"], "label": i % 2} for i in range(3)]
    (root / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "tasks").mkdir()
    (root / "tasks" / "mc.yaml").write_text(mc_task("t38_mc", root / "mc.jsonl"))
    lm = UnmaskLM(str(root / "ckpt"), device="cpu", mc_samples=2, greedy_check=False)
    return lm, str(root / "tasks")


def test_more_few_shot_examples_than_documents_is_one_line(setup):
    """lm-eval draws few-shot examples with random.sample: more than the task's documents
    was its ValueError traceback ("Sample larger than population or is negative")."""
    from unmask.lm_eval import run_tasks

    lm, tasks = setup
    with pytest.raises(UserError, match="more examples .* than it has documents"):
        run_tasks(lm, ["t38_mc"], include_path=tasks, num_fewshot=5)


def test_a_limit_past_what_islice_takes_reads_every_item(setup):
    """``--limit 1e300`` (a whole number) was islice's ValueError traceback: now every item."""
    from unmask.lm_eval import run_tasks

    lm, tasks = setup
    res = run_tasks(lm, ["t38_mc"], include_path=tasks, limit=1e300)
    assert res["n-samples"]["t38_mc"]["effective"] == 3
    res = run_tasks(lm, ["t38_mc"], include_path=tasks, limit=10**400)  # (no float: isfinite's
    assert res["n-samples"]["t38_mc"]["effective"] == 3  # OverflowError)


class _Request:
    def __init__(self, *args):
        self.args = args


def test_a_given_block_length_decodes_whole_blocks_of_it(setup):
    """``block_length=3`` and a task's budget of 5 tokens: the canvas is two blocks of 3 and
    the answer is cut to 5 tokens, as the task scorer rounds its room; it was the decoder's
    refusal ("gen_length (5) must be a multiple of block_length (3)") at the first
    generate_until request, after every log-likelihood task had run."""
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=setup[0].loaded, block_length=3, greedy_check=False)
    config = lm.generation_config({"max_gen_toks": 5})
    assert (config.gen_length, config.block_length, config.steps) == (6, 3, 6)
    (text,) = lm.generate_until([_Request("abc", {"max_gen_toks": 5, "until": []})])
    assert len(text) <= 5  # byte tokenizer: a character at most per token
    assert lm.generation_config({"max_gen_toks": 6}).gen_length == 6  # a multiple: as asked


def test_a_monte_carlo_sample_count_past_the_most_is_one_line(
        setup, tmp_path, capsys, monkeypatch):
    """``mc_samples`` of 10**11 (a typo) asked torch for 800 GB of mask draws at the first
    log-likelihood, after the rest of the report had run: a traceback. The cap guards time
    (the draws are made a chunk at a time) and ``--mc-samples`` is checked before the model
    loads (it was checked after)."""
    import unmask.checkpoint
    from unmask.cli import main
    from unmask.flag_checks import MAX_MC_SAMPLES
    from unmask.lm_eval import UnmaskLM

    lm, tasks = setup
    with pytest.raises(UserError, match="mc_samples must be at most 1,048,576"):
        UnmaskLM(loaded=lm.loaded, mc_samples=10**11)
    most = UnmaskLM(loaded=lm.loaded, mc_samples=MAX_MC_SAMPLES)
    assert most.mc_samples == MAX_MC_SAMPLES == 2**20
    monkeypatch.setattr(unmask.checkpoint, "load", lambda *a, **k: pytest.fail("loaded"))
    rc = main(["eval", lm.pretrained, "--tasks", "t38_mc", "--include-path", tasks,
               "--mc-samples", str(10**11), "--no-score", "--no-plot", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--mc-samples must be at most 1,048,576" in err
    assert len(err.splitlines()) == 1


def test_the_few_shot_refusal_reads_the_same_from_the_cli(setup, capsys):
    """The CLI names the flags the user typed where a message names a field: the task's own
    ``num_fewshot`` in the refusal came out as "its own --num-fewshot"."""
    from unmask.cli import main

    lm, tasks = setup
    rc = main(["eval", lm.pretrained, "--tasks", "t38_mc", "--include-path", tasks,
               "--num-fewshot", "5", "--mc-samples", "2", "--no-score", "--no-plot",
               "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after lm-eval's progress bars
    assert rc == 2 and err.startswith("unmask eval: error: lm-eval could not build")
    assert "(--num-fewshot, or the count in the task's YAML)" in err


@pytest.mark.parametrize("limit, message", [
    (float("inf"), "limit must be a positive number, got inf"),
    (-1, "limit must be a positive number, got -1"),
    (2.5, "limit 2.5: items per task is a whole number"),
])
def test_run_tasks_refuses_a_limit_the_cli_refuses(setup, limit, message):
    """``run_tasks(limit=)`` takes what ``--limit`` takes (one check): infinity was int()'s
    OverflowError, -1 islice's ValueError, and 2.5 silently 2 items."""
    from unmask.lm_eval import run_tasks

    lm, tasks = setup
    with pytest.raises(UserError, match=message):
        run_tasks(lm, ["t38_mc"], include_path=tasks, limit=limit)
