"""Evaluation fixes of session 34, after review: the is_greedy skip of ``run_tasks`` (a task
with its own ``process_results`` reads it; the tasks are built once; a ``--log-samples`` log
says None where it was not decoded); the generative perplexity's prompts are found inside
documents of any length."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from lm_eval_helpers import mc_task

from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


READS_GREEDY = '''def pr(doc, results):
    lls, is_greedy = zip(*results)
    return {"acc": float(is_greedy[int(doc["label"])])}
'''


@pytest.fixture
def mc_setup(tmp_path, monkeypatch):
    """A tiny diffusion checkpoint, two multiple-choice items, and ``_greedy`` counted (it
    says every continuation is what greedy decoding writes)."""
    pytest.importorskip("lm_eval")
    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.lm_eval import UnmaskLM
    from unmask.model import Transformer

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", tokenizer=TOK, model=Transformer(
        model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=48)))
    rows = [{"question": f"q{i} is", "choices": [" ab", " cd"], "label": i % 2} for i in range(2)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    greedy: list[object] = []
    monkeypatch.setattr(UnmaskLM, "_greedy", lambda self, c, t: greedy.append(t) or True)
    lm = UnmaskLM(loaded=load(tmp_path / "ckpt"), mc_samples=2)
    return SimpleNamespace(root=tmp_path, tasks=tmp_path / "tasks", lm=lm, greedy=greedy)


def _task(setup, name: str, extra: str = "") -> str:
    (setup.tasks / f"{name}.yaml").write_text(
        mc_task(name, setup.root / "mc.jsonl", extra=extra))
    return name


def test_a_task_with_its_own_process_results_gets_is_greedy(mc_setup):
    """A multiple-choice task scored by its own ``process_results`` function may read
    is_greedy under any name (here ``acc``): the skip trusted the metric name, answered False
    for every choice, and the task scored 0 where the true score is 1, with no warning."""
    from unmask.lm_eval import run_tasks

    (mc_setup.tasks / "utils.py").write_text(READS_GREEDY)
    name = _task(mc_setup, "mend_mc_pr", "process_results: !function utils.pr\n")
    res = run_tasks(mc_setup.lm, [name], include_path=str(mc_setup.tasks))
    assert len(mc_setup.greedy) == 4  # 2 items x 2 choices
    assert res["results"][name]["acc,none"] == 1.0
    assert res["config"]["model_args"]["greedy_check"] is True


def test_any_task_but_a_plain_configurable_one_counts_as_reading_is_greedy():
    """A Python ``Task`` subclass (its own ``process_results``, any output type: None here)
    was judged by its OUTPUT_TYPE alone and counted as not reading is_greedy."""
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import reads_is_greedy

    assert reads_is_greedy([SimpleNamespace(OUTPUT_TYPE=None)])
    assert reads_is_greedy([SimpleNamespace(OUTPUT_TYPE="multiple_choice")])
    assert not reads_is_greedy([])


def test_a_skipped_check_is_logged_as_none_and_the_tasks_are_built_once(mc_setup):
    """With --log-samples, a skipped check logged is_greedy False for every continuation, as
    if decoded; and the skip built every task a second time before lm-eval built them."""
    from lm_eval.tasks import TaskManager

    from unmask.lm_eval import find_tasks, run_tasks

    name = _task(mc_setup, "mend_mc_acc")
    manager = find_tasks([name], str(mc_setup.tasks))
    loads = []
    real = TaskManager.load

    def counted(self, task_list):
        loads.append(task_list)
        return real(self, task_list)

    manager.load = counted.__get__(manager)
    out = mc_setup.root / "out"
    res = run_tasks(mc_setup.lm, [name], output_path=str(out), log_samples=True,
                    task_manager=manager)
    assert len(loads) == 1  # lm-eval's own build, judged as it was built
    assert mc_setup.greedy == [] and res["results"][name]["acc,none"] in (0.0, 0.5, 1.0)
    assert res["config"]["model_args"]["greedy_check"] is False
    assert mc_setup.lm.greedy_check  # the model's own setting is kept
    (log,) = out.rglob(f"samples_{name}_*.jsonl")
    samples = [json.loads(line) for line in log.read_text().splitlines()]
    answers = [pair for s in samples for pair in s["filtered_resps"]]
    # lm-eval logs every value as a string: "False" was logged, as if decoded
    assert len(answers) == 4 and all(greedy == "None" for _, greedy in answers)


WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def verses(tmp_path_factory):
    """A prepared corpus of one-line documents of 2 to 11 words (byte tokens), as the demo
    corpus's verses: (its folder, the lines)."""
    from unmask.data import prepare

    root = tmp_path_factory.mktemp("verses")
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g).tolist())
             for n in torch.randint(2, 12, (400,), generator=g).tolist()]
    (root / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([root / "a.txt"], root / "d", tokenizer="byte", val_fraction=0.2, line_docs=True,
            min_val_tokens=0, progress=False)
    return root / "d", lines


def test_prompts_are_found_inside_documents_not_in_fixed_windows(verses):
    """Prompts were the starts of fixed windows, those with a separator passed over: of
    documents of 9 to 70 tokens, 8 prompts of 50 tokens found 3 (on the demo
    corpus 5 of 8 at 64 tokens, none at 96) though enough documents are that long. Now each
    is the start of a document that long, in order."""
    from unmask.data import TokenDataset
    from unmask.report import validation_prompts

    data, lines = verses
    tok = TokenDataset(data, "val").tokenizer()
    prompts = validation_prompts(data, n=8, length=50)
    assert len(prompts) == 8 and all(len(p) == 50 for p in prompts)
    assert not any(tok.is_special(t) for p in prompts for t in p)
    texts = [tok.decode(p) for p in prompts]
    assert len(set(texts)) == 8  # eight documents, not one cut in pieces
    assert all(any(line.startswith(t) for line in lines) for t in texts)  # the first too:
    # the split's head, the tail of a document begun before it, is no document


def test_short_documents_give_their_next_tokens_and_the_count_is_deterministic(verses):
    """Where fewer documents than ``n`` hold a prompt, their next tokens are prompts too:
    all the prompts the documents hold, each inside one, the same on every call."""
    from unmask.report import validation_documents, validation_prompts

    data, _ = verses
    _, lengths = validation_documents(data, length=30)
    held = int((lengths // 30).sum())
    assert held > len(lengths)  # some documents hold two prompts of 30 tokens
    prompts = validation_prompts(data, n=held + 5, length=30)
    assert len(prompts) == held and prompts == validation_prompts(data, n=held + 5, length=30)
    assert validation_prompts(data, n=8, length=int(lengths.max()) + 1) == []
