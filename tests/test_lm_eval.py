"""Log-likelihoods for lm-eval (``unmask.evaluate``) and the lm-eval model ``unmask``
(``unmask.lm_eval``) run end to end, offline, on tiny models and a local task folder."""

import json
import math
import os

import pytest
import torch

from unmask.cli import main
from unmask.config import model_preset
from unmask.evaluate import (
    ar_loglikelihood,
    block_elbo_loglikelihood,
    elbo_loglikelihood,
    exact_elbo,
    stratified_mask_counts,
)
from unmask.model import Transformer


def _model(attention="bidirectional", seed=0, vocab=48):
    torch.manual_seed(seed)
    cfg = model_preset("tiny", vocab_size=vocab, max_seq_len=32, attention=attention)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # sharper than init so that tokens differ in probability
        model.lm_head.weight.mul_(20)
    return model


def test_stratified_counts_cover_the_range():
    g = torch.Generator().manual_seed(0)
    counts = stratified_mask_counts(8, 4, g)
    assert sorted(counts.tolist()) == [1, 1, 2, 2, 3, 3, 4, 4]  # every count equally often
    draws = torch.cat([stratified_mask_counts(3, 5, g) for _ in range(2000)])
    freq = torch.bincount(draws, minlength=6)[1:].double() / len(draws)
    assert torch.allclose(freq, torch.full((5,), 0.2, dtype=torch.float64), atol=0.02)


def test_elbo_estimate_averages_to_the_exact_sum():
    """The Monte Carlo ELBO is unbiased: many samples land within 4 standard errors of the
    bound summed over all 2^L - 1 mask patterns; and it is a bound below the log-likelihood
    of the first token given all others... checked via the exact value being finite and < 0."""
    model = _model()
    context, target = [5, 9, 11], [7, 20, 31, 4]
    exact = exact_elbo(model, context, target, mask_id=0)
    assert exact < 0 and math.isfinite(exact)
    est = elbo_loglikelihood(
        model, context, target, mask_id=0, n_samples=512, generator=torch.Generator().manual_seed(1)
    )
    assert est.stderr > 0
    assert abs(est.logprob - exact) < 4 * est.stderr
    # with one target token there is one mask pattern: every sample is the exact value
    one = elbo_loglikelihood(
        model, context, [7], mask_id=0, n_samples=4, generator=torch.Generator().manual_seed(1)
    )
    assert one.logprob == pytest.approx(exact_elbo(model, context, [7], mask_id=0), abs=1e-5)
    assert one.stderr == pytest.approx(0.0, abs=1e-6)


def test_elbo_standard_error_shrinks_with_samples():
    model = _model()
    context, target = [5, 9], [7, 20, 31, 4, 12, 40]
    se = [
        elbo_loglikelihood(
            model,
            context,
            target,
            mask_id=0,
            n_samples=n,
            generator=torch.Generator().manual_seed(2),
        ).stderr
        for n in (8, 32, 128)
    ]
    assert se[0] > se[1] > se[2]
    assert se[0] / se[2] == pytest.approx(4.0, rel=0.5)  # ~ 1/sqrt(n)


def test_batch_size_below_1_is_a_value_error():
    """A batch of no rows: a ValueError that names it (range() raised "arg 3 must not be
    zero")."""
    model = _model()
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        elbo_loglikelihood(model, [1, 2], [3, 4], mask_id=0, n_samples=2, batch_size=0,
                           generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        ar_loglikelihood(_model("causal"), [([1, 2], [3])], start_id=2, batch_size=0)


def test_elbo_same_seed_same_number_and_batching_does_not_matter():
    model = _model()
    args = dict(mask_id=0, n_samples=16)
    a = elbo_loglikelihood(
        model, [3], [7, 8, 9], batch_size=16, generator=torch.Generator().manual_seed(5), **args
    )
    b = elbo_loglikelihood(
        model, [3], [7, 8, 9], batch_size=16, generator=torch.Generator().manual_seed(5), **args
    )
    assert a == b


def _block_model(block_size):
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=32, attention="block-causal",
                       block_size=block_size, objective="bd3lm")
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def test_block_elbo_is_the_sum_of_block_bounds_given_clean_blocks():
    """The bd3lm estimate averages to the sum over blocks of each block's bound given the
    clean blocks before it (every mask pattern, through bd3lm_logits); one token per block is
    exact; one block over everything is the masked-diffusion estimate, draw for draw."""
    import itertools

    from unmask.objectives.blocks import bd3lm_logits

    model = _block_model(2)
    context, target = [5], [7, 20, 31]  # blocks [5, 7] and [20, 31]
    seq = torch.tensor([context + target])

    def logp(masked):  # log p of each position with `masked` hidden, clean blocks before
        xt = seq.clone()
        xt[0, masked] = 0
        return torch.log_softmax(bd3lm_logits(model, xt, seq, block_size=2)[0].float(), -1)

    with torch.no_grad():
        exact = float(logp([1])[1, 7])  # block 1: its one target token
        for k in (1, 2):  # block 2: k ~ U{1, 2} of its 2 tokens masked, weight 2 / k
            pats = list(itertools.combinations([2, 3], k))
            exact += sum((2 / k) * sum(float(logp(list(m))[i, seq[0, i]]) for i in m)
                         for m in pats) / len(pats) / 2
    est = block_elbo_loglikelihood(model, context, target, mask_id=0, block_size=2,
                                   n_samples=512, generator=torch.Generator().manual_seed(1))
    assert est.stderr > 0 and abs(est.logprob - exact) < 4 * est.stderr

    one = _block_model(1)  # next-token prediction: every draw is the same number
    est = block_elbo_loglikelihood(one, context, target, mask_id=0, block_size=1, n_samples=4,
                                   generator=torch.Generator().manual_seed(1))
    want = 0.0
    for i in range(1, 4):
        xt = seq.clone()
        xt[0, i] = 0
        with torch.no_grad():
            lp = torch.log_softmax(bd3lm_logits(one, xt, seq, block_size=1)[0].float(), -1)
        want += float(lp[i, seq[0, i]])
    assert est.logprob == pytest.approx(want, abs=1e-5) and est.stderr == pytest.approx(0, abs=1e-6)

    whole = _block_model(32)
    args = dict(mask_id=0, n_samples=16, batch_size=5)
    a = block_elbo_loglikelihood(whole, context, target, block_size=32,
                                 generator=torch.Generator().manual_seed(2), **args)
    b = elbo_loglikelihood(whole, context, target, generator=torch.Generator().manual_seed(2),
                           **args)
    assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_empty_context_and_continuation_score_0_for_every_model():
    """log p("" | "") = 0 and greedy, for a causal model as for a diffusion one (the causal
    model had no column to forward: a RuntimeError from the reshape)."""
    (r,) = ar_loglikelihood(_model("causal"), [([], [])], start_id=2)
    assert (r.logprob, r.is_greedy) == (0.0, True)
    both = ar_loglikelihood(_model("causal"), [([], []), ([5], [7, 9])], start_id=2)
    assert both[0].logprob == 0.0 and both[1].logprob < 0
    d = elbo_loglikelihood(_model(), [], [], mask_id=0, generator=torch.Generator())
    assert d.logprob == 0.0


def test_elbo_estimates_do_not_depend_on_the_batch_size():
    """``batch_size`` is rows per forward, a memory knob: the same seed gives the same
    estimate at any batch size, also for a target over several blocks of a bd3lm model
    (its masks were drawn per batch, block by block, so another batch size drew others)."""
    context, target = [5], [7, 20, 31, 4, 12, 40, 9]  # four blocks of 2
    model = _block_model(2)

    def est(fn, batch_size, **args):
        return fn(model, context, target, mask_id=0, n_samples=12, batch_size=batch_size,
                  generator=torch.Generator().manual_seed(4), **args).logprob

    for fn, args in ((block_elbo_loglikelihood, {"block_size": 2}), (elbo_loglikelihood, {})):
        whole = est(fn, 12, **args)
        assert [est(fn, b, **args) for b in (1, 5)] == pytest.approx([whole, whole], abs=1e-9)


def test_ar_loglikelihood_is_the_sum_of_token_logprobs():
    model = _model("causal")
    requests = [([5, 9, 11], [7, 20]), ([], [4, 6, 8]), ([1, 2, 3, 4, 5], [9])]
    got = ar_loglikelihood(model, requests, start_id=2, batch_size=2)
    for (context, target), r in zip(requests, got, strict=True):
        seq = (context or [2]) + target
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq]))[0].float(), -1)
        want = sum(float(logp[len(seq) - len(target) - 1 + i, t]) for i, t in enumerate(target))
        assert r.logprob == pytest.approx(want, abs=1e-4)
        greedy = all(
            int(logp[len(seq) - len(target) - 1 + i].argmax()) == t for i, t in enumerate(target)
        )
        assert r.is_greedy == greedy and r.stderr == 0.0


# -- the lm-eval model, offline ------------------------------------------------------------

lm_eval = pytest.importorskip("lm_eval")

MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""

GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 4
metric_list:
  - metric: exact_match
"""

PPL_YAML = """task: tiny_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    mc = [
        {"question": f"q{i} is", "choices": [" ab", " cd", " ef"], "label": i % 3} for i in range(3)
    ]
    gen = [{"question": f"say {i}:", "answer": f" {i}"} for i in range(2)]
    ppl = [{"text": "the cat sat on the mat. " * 3}, {"text": "a b c"}]
    for name, rows, yaml in (("mc", mc, MC_YAML), ("gen", gen, GEN_YAML), ("ppl", ppl, PPL_YAML)):
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / f"{name}.yaml").write_text(yaml.format(data=data))
    return root


def _checkpoint(root, attention):
    from unmask.checkpoint import save_checkpoint
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    blocks = {"attention": "block-causal", "block_size": 8, "objective": "bd3lm"}
    kind = blocks if attention == "bd3lm" else {"attention": attention}
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, **kind)
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return root


@pytest.fixture(scope="module", params=["bidirectional", "causal", "bd3lm"])
def checkpoint(request, tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp(request.param), request.param)


def test_local_tasks_run_end_to_end(checkpoint, task_dir, tmp_path):
    """Multiple choice, generation and rolling perplexity through lm-eval's own evaluation,
    with the model given by name (registered as ``unmask``) and nothing downloaded."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import unmask.lm_eval  # noqa: F401  (registers the model name)

    res = simple_evaluate(
        model="unmask",
        model_args=f"pretrained={checkpoint},mc_samples=4,gen_length=4",
        tasks=["tiny_mc", "tiny_gen", "tiny_ppl"],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        device="cpu",
        bootstrap_iters=0,
    )
    r = res["results"]
    assert 0.0 <= r["tiny_mc"]["acc,none"] <= 1.0
    assert 0.0 <= r["tiny_gen"]["exact_match,none"] <= 1.0
    assert r["tiny_ppl"]["word_perplexity,none"] > 1.0
    assert len(res["samples"]["tiny_mc"]) == 3


def test_lm_eval_model_agrees_with_the_library(checkpoint):
    """The adapter's numbers are the library's: exact AR sums, or the ELBO estimate with the
    adapter's seed; and generation equals unmask.api's for the same options."""
    from lm_eval.api.instance import Instance

    from unmask import api
    from unmask.checkpoint import load
    from unmask.lm_eval import UnmaskLM

    loaded = load(checkpoint)
    lm = UnmaskLM(loaded=loaded, mc_samples=8, seed=3, greedy_check=False)
    req = Instance("loglikelihood", {}, ("hello", " world"), 0)
    ((logprob, _),) = lm.loglikelihood([req])
    ctx, cont = loaded.tokenizer.encode("hello"), loaded.tokenizer.encode(" world")
    if lm.causal:
        want = ar_loglikelihood(loaded.model, [(ctx, cont)], start_id=2)[0].logprob
    elif loaded.config.attention == "block-causal":  # each block given the clean ones before
        want = block_elbo_loglikelihood(
            loaded.model,
            ctx,
            cont,
            mask_id=0,
            block_size=loaded.config.block_size,
            n_samples=8,
            generator=torch.Generator().manual_seed(3),
        ).logprob
    else:
        want = elbo_loglikelihood(
            loaded.model,
            ctx,
            cont,
            mask_id=0,
            n_samples=8,
            generator=torch.Generator().manual_seed(3),
        ).logprob
    assert logprob == pytest.approx(want, abs=1e-5)
    assert lm.summary()["exact"] is lm.causal and lm.summary()["model_seconds"] > 0
    # one schema for every model (--json): what a causal model has not is None
    assert set(lm.summary()) == {"exact", "requests", "model_seconds", "mc_samples",
                                 "mean_stderr", "max_stderr"}
    assert (lm.summary()["mc_samples"] is None) is lm.causal

    gen = Instance("generate_until", {}, ("abc", {"until": ["zz"], "max_gen_toks": 6}), 0)
    (text,) = lm.generate_until([gen])
    config = lm.generation_config({"max_gen_toks": 6})
    ref = api.generate(loaded, "abc", config=config)
    # a bd3lm model decodes whole blocks of 8: the answer keeps the 6 tokens asked for
    assert config.gen_length == (8 if loaded.config.attention == "block-causal" else 6)
    from unmask.sampling.protocol import decode_generations

    (want,) = decode_generations([ref.ids[0][:6]], loaded.tokenizer, loaded.config.eos_id)
    assert text == want.split("zz")[0]


def test_unmask_eval_tasks_writes_lm_eval_results(checkpoint, task_dir, tmp_path, capsys):
    out = tmp_path / "results"
    rc = main(
        [
            "eval",
            str(checkpoint),
            "--tasks",
            "tiny_mc",
            "--include-path",
            str(task_dir),
            "--limit",
            "2",
            "--mc-samples",
            "4",
            "--output-path",
            str(out),
            "--json",
            "--no-score",
            "--no-plot",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lm_eval"]["results"]["tiny_mc"]["acc,none"] in (0.0, 0.5, 1.0)
    assert report["lm_eval"]["config"]["limit"] == 2
    written = list(out.rglob("results_*.json"))
    assert len(written) == 1
    saved = json.loads(written[0].read_text())
    assert saved["results"]["tiny_mc"]["acc,none"] == (
        report["lm_eval"]["results"]["tiny_mc"]["acc,none"]
    )
    # as lm-eval's CLI writes it: a folder named after the checkpoint, which is recorded
    from lm_eval.utils import sanitize_model_name

    assert written[0].parent == out / sanitize_model_name(str(checkpoint))
    args = saved["config"]["model_args"]
    assert args["pretrained"] == str(checkpoint) and args["mc_samples"] == 4
    # a causal model's log-likelihoods are exact: --mc-samples is said to draw nothing
    exact = [n for n in report["notes"] if n.startswith("lm-eval: the log-likelihoods")]
    assert exact == (["lm-eval: the log-likelihoods of a causal model are exact "
                      "(--mc-samples 4 drew no samples)"] if checkpoint.name.startswith("causal")
                     else [])


def test_one_mc_sample_reports_no_standard_error(task_dir, tmp_path, capsys):
    """``--mc-samples 1`` runs (a quick look), and says its standard error needs two or more:
    one sample has no spread to estimate it from (it printed ``nan nats (max nan)``)."""
    ckpt = _checkpoint(tmp_path / "m", "bidirectional")
    argv = ["eval", str(ckpt), "--tasks", "tiny_mc", "--include-path", str(task_dir), "--limit",
            "2", "--mc-samples", "1", "--no-score", "--no-plot", "--device", "cpu"]
    assert main(argv) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("lm-eval ")]
    assert "ELBO of 1 sample, no standard error (it needs --mc-samples 2 or more)" in line
    assert "nan" not in line
    assert main([*argv, "--json"]) == 0
    u = json.loads(capsys.readouterr().out)["lm_eval"]["unmask"]
    assert (u["mc_samples"], u["mean_stderr"], u["max_stderr"]) == (1, None, None)


@pytest.mark.parametrize("bad", ["unknown", "no_tokenizer", "bad_yaml"])
def test_eval_tasks_bad_input_is_one_line_exit_2(bad, tmp_path, capsys, monkeypatch):
    import functools

    import lm_eval.tasks

    # lm-eval's own task index takes ~20 s of CPU to build: leave it out, the path is the same
    manager = functools.partial(lm_eval.tasks.TaskManager, include_defaults=False)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", manager)
    ckpt, tasks, names = _checkpoint(tmp_path / "run", "bidirectional"), tmp_path / "t", ["tiny_x"]
    tasks.mkdir()
    if bad == "no_tokenizer":
        (ckpt / "checkpoint" / "tokenizer.json").unlink()
    if bad == "bad_yaml":
        (tasks / "broken.yaml").write_text("task: broken\n  output_type: [unclosed\n")
        names = ["broken"]
    rc = main(
        [
            "eval",
            str(ckpt),
            "--tasks",
            ",".join(names),
            "--include-path",
            str(tasks),
            "--no-score",
            "--no-plot",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "Traceback" not in err[0]
    want = {
        "unknown": "unknown task 'tiny_x'",
        "no_tokenizer": "tokenizer.json is missing",
        "bad_yaml": "broken.yaml:2: not a valid task file",
    }
    assert want[bad] in err[0]


def test_unknown_task_is_found_before_the_slow_parts(tmp_path, capsys, monkeypatch):
    """An unknown task is refused before the held-out bound and the samples are measured
    (it was found only when lm-eval ran, after them: minutes on a real model)."""
    import functools

    import lm_eval.tasks

    import unmask.report

    manager = functools.partial(lm_eval.tasks.TaskManager, include_defaults=False)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", manager)

    def too_early(*args, **kwargs):
        raise AssertionError("measured before the tasks were checked")

    monkeypatch.setattr(unmask.report, "heldout_bound", too_early)
    monkeypatch.setattr(unmask.report, "sample_quality", too_early)
    from unmask.data import prepare

    ckpt, tasks = _checkpoint(tmp_path / "run", "bidirectional"), tmp_path / "t"
    tasks.mkdir()
    (tmp_path / "a.txt").write_text("the cat sat on the mat.\n" * 400)
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer="byte", val_fraction=0.5,
            progress=False)
    rc = main(["eval", str(ckpt), "--tasks", "tiny_typo", "--include-path", str(tasks),
               "--data", str(tmp_path / "data"), "--no-plot", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown task 'tiny_typo'" in err


@pytest.mark.parametrize("flag", [["--limit", "2"], ["--no-greedy-check"], ["--mc-samples", "4"]])
def test_lm_eval_flags_without_tasks_are_refused(flag, tmp_path, capsys):
    rc = main(["eval", str(tmp_path), *flag])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "applies to lm-eval tasks: give --tasks" in err[0]


@pytest.mark.parametrize(
    ("flag", "want"),
    [
        (["--tasks", ","], "--tasks ',' names no task"),
        (["--tasks", "x", "--num-fewshot", "-1"], "--num-fewshot must be 0 or more, got -1"),
        (["--tasks", "x", "--limit", "1.5"], "--limit 1.5: items per task is a whole number"),
        (["--tasks", "x", "--limit", "nan"], "--limit must be a positive number, got nan"),
        (["--tasks", "x", "--limit", "inf"], "--limit must be a positive number, got inf"),
        (["--tasks", "x", "--limit", "-1"], "--limit must be a positive number, got -1.0"),
    ],
)
def test_odd_lm_eval_flag_values_are_refused(flag, want, tmp_path, capsys):
    rc = main(["eval", str(tmp_path), *flag])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and want in err[0]


def test_empty_continuation_is_certain_and_greedy(checkpoint):
    """An empty continuation has log-likelihood 0 and is what greedy decoding writes, for every
    kind of model; the diffusion greedy check asked the decoder for 0 tokens (a UserError)."""
    from lm_eval.api.instance import Instance

    from unmask.checkpoint import load
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=load(checkpoint), mc_samples=4, greedy_check=True)
    reqs = [Instance("loglikelihood", {}, ("hello", ""), 0)]
    assert lm.loglikelihood(reqs) == [(0.0, True)]
    # exact, so no Monte Carlo estimate: its 0.0 standard error pulled the mean one down
    assert lm.estimates[-1].n_samples == 0 and lm.summary()["mean_stderr"] is None


def test_continuous_checkpoint_log_likelihoods_are_one_line_errors(tmp_path):
    """An embed-diffusion checkpoint has no token likelihood: a UserError saying so, not the
    model's complaint about a missing noise level."""
    from lm_eval.api.instance import Instance

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import TrainConfig
    from unmask.errors import UserError
    from unmask.lm_eval import UnmaskLM
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)
    cfg = objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=16))
    save_checkpoint(tmp_path, model=Transformer(cfg), tokenizer=tok)
    lm = UnmaskLM(loaded=load(tmp_path), mc_samples=2, greedy_check=False)
    with pytest.raises(UserError, match="objective embed-diffusion has no likelihood"):
        lm.loglikelihood([Instance("loglikelihood", {}, ("a", " b"), 0)])
    with pytest.raises(UserError, match="has no likelihood"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("a b c",), 0)])


def test_generate_until_batches_and_stops_as_one_at_a_time(checkpoint):
    """Prompts of different lengths decoded together give what each gives alone, and a stop
    string that occurs cuts the answer at its first (earliest) occurrence."""
    from lm_eval.api.instance import Instance

    from unmask.checkpoint import load
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=load(checkpoint), batch_size=3, greedy_check=False)

    def req(prompt, until):
        return Instance("generate_until", {}, (prompt, {"until": until, "max_gen_toks": 8}), 0)

    prompts = ["a", "hello there, a longer one", "xyz"]
    together = lm.generate_until([req(p, []) for p in prompts])
    assert together == [lm.generate_until([req(p, [])])[0] for p in prompts]
    assert any(len(text) >= 4 for text in together)  # the cuts below are checked
    for text, prompt in zip(together, prompts, strict=True):
        if len(text) < 4:
            continue
        stop = text[2:4]
        (cut,) = lm.generate_until([req(prompt, ["never there", stop])])
        assert cut == text[: text.index(stop)]
        (cut,) = lm.generate_until([req(prompt, [text[3:], text[1:2]])])
        assert cut == text[: min(text.index(text[3:]), text.index(text[1:2]))]


@pytest.mark.parametrize(
    ("arg", "want"),
    [
        ({"max_length": 1}, "max_length must be at least 2, got 1"),
        ({"max_length": 0}, "max_length must be at least 2, got 0"),
        ({"batch_size": 0}, "batch_size must be a whole number of 1 or more, got 0"),
        ({"batch_size": "-2"}, "batch_size must be a whole number of 1 or more, got -2"),
        ({"max_length": "abc"}, "max_length must be a whole number, got 'abc'"),
        ({"mc_samples": "2.5"}, "mc_samples must be a whole number, got '2.5'"),
    ],
)
def test_odd_model_args_are_one_line_errors(arg, want, checkpoint):
    """model_args lm-eval passes through: a context of one token left lm-eval's own
    AssertionError, a batch of 0 rows a ValueError, -2 rows silently 16."""
    from unmask.checkpoint import load
    from unmask.errors import UserError
    from unmask.lm_eval import UnmaskLM

    with pytest.raises(UserError, match=want):
        UnmaskLM(loaded=load(checkpoint), **arg)
    assert UnmaskLM(loaded=load(checkpoint), batch_size="auto").batch_size == 16
    assert UnmaskLM(loaded=load(checkpoint), batch_size=None).batch_size == 16  # as typed
    assert UnmaskLM(loaded=load(checkpoint), max_length="16", mc_samples="3").max_length == 16


def test_empty_context_starts_a_document_as_the_rolling_windows_do(checkpoint):
    """A continuation with no context is scored after the document separator, as a causal
    model scores it and as the first rolling window is: for a text inside one window,
    loglikelihood("", text) equals loglikelihood_rolling(text), same noise."""
    from lm_eval.api.instance import Instance

    from unmask.checkpoint import load
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=load(checkpoint), mc_samples=8, greedy_check=False)
    ((logprob, _),) = lm.loglikelihood([Instance("loglikelihood", {}, ("", "the cat"), 0)])
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("the cat",), 0)])
    assert logprob == pytest.approx(rolling, abs=1e-5)


def test_uniform_sedd_log_likelihoods_are_one_line_errors(tmp_path):
    """A SEDD model of the uniform graph never sees [MASK]: the masked-diffusion estimate of
    its log-likelihood would read outputs it was never trained for, so it is refused."""
    from lm_eval.api.instance import Instance

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import TrainConfig
    from unmask.errors import UserError
    from unmask.lm_eval import UnmaskLM
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)
    cfg = objective_spec("sedd").configure(cfg, TrainConfig(sedd_graph="uniform"))
    assert cfg.sedd_graph == "uniform"
    save_checkpoint(tmp_path, model=Transformer(cfg), tokenizer=tok)
    lm = UnmaskLM(loaded=load(tmp_path), mc_samples=2, greedy_check=False)
    with pytest.raises(UserError, match=r"uniform-graph SEDD checkpoint never read a \[MASK\]"):
        lm.loglikelihood([Instance("loglikelihood", {}, ("a", " b"), 0)])


@pytest.mark.parametrize("family", ["embed-diffusion", "sedd-uniform"])
def test_families_without_a_mask_elbo_run_generation_tasks(family, task_dir, tmp_path, capsys):
    """An embed-diffusion or uniform-graph SEDD checkpoint has no masked-diffusion ELBO, but it
    generates from a prompt: a generate_until task runs (it was refused up front with the
    log-likelihood tasks), a multiple-choice task is one line naming why."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import TrainConfig
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)
    objective, train = (("embed-diffusion", TrainConfig(seq_len=16)) if family.startswith("embed")
                        else ("sedd", TrainConfig(sedd_graph="uniform")))  # fmt: skip
    save_checkpoint(tmp_path / "m", model=Transformer(objective_spec(objective).configure(
        cfg, train)), tokenizer=tok)  # fmt: skip
    args = ["eval", str(tmp_path / "m"), "--include-path", str(task_dir), "--limit", "1",
            "--no-score", "--no-plot", "--device", "cpu", "--json", "--tasks"]  # fmt: skip
    assert main([*args, "tiny_gen"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lm_eval"]["results"]["tiny_gen"]["exact_match,none"] in (0.0, 1.0)
    assert main([*args, "tiny_mc"]) == 2
    err = capsys.readouterr().err
    # one line after lm-eval's own progress bars
    assert "Traceback" not in err and "scored by the masked-diffusion ELBO" in err.splitlines()[-1]


def test_a_model_without_log_likelihoods_runs_the_rest_of_a_mixed_task_list(
    task_dir, tmp_path, capsys, monkeypatch
):
    """A bd3lm model trained with time conditioning before bd3lm refused it has no bound, so
    its lm-eval log-likelihoods are refused: with a generation task beside a multiple-choice
    one, the run ended on that refusal after the generation work (exit 2, the report lost,
    where the docs say such a part "gives one line, and the rest still prints"). The
    multiple-choice task is a note and the rest prints; with log-likelihood tasks only, one
    line before anything is measured."""
    from unmask.checkpoint import save_checkpoint
    from unmask.lm_eval import UnmaskLM
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64,
                       attention="block-causal", block_size=8, objective="bd3lm",
                       time_conditioning=True, sigma_input="masked_fraction")  # fmt: skip
    save_checkpoint(tmp_path / "timed", model=Transformer(cfg), tokenizer=tok)
    args = ["eval", str(tmp_path / "timed"), "--include-path", str(task_dir), "--limit", "1",
            "--mc-samples", "2", "--no-score", "--no-plot", "--device", "cpu", "--json",
            "--tasks"]  # fmt: skip
    assert main([*args, "tiny_gen,tiny_mc"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["lm_eval"]["results"]) == {"tiny_gen"}
    (note,) = [n for n in report["notes"] if n.startswith("lm-eval tiny_mc: not measured")]
    assert "time-conditioned model" in note and "no bound" in note

    generated = []
    monkeypatch.setattr(UnmaskLM, "generate_until",
                        lambda self, requests: generated.append(requests) or [])  # fmt: skip
    assert main([*args, "tiny_mc,tiny_ppl"]) == 2
    err = capsys.readouterr().err
    # one line after the datasets' progress bars
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("unmask eval: error: --tasks tiny_mc, tiny_ppl: ")
    assert not generated


def test_tasks_read_their_data_offline(checkpoint, task_dir, monkeypatch):
    """lm-eval runs with the Hugging Face Hub and datasets offline (a task's data is local or
    cached: online it was downloaded, offline the Hub was retried for a minute), as they were
    afterwards; data that is not there is a one-line error that says so."""
    import datasets
    import huggingface_hub
    import lm_eval

    from unmask.checkpoint import load
    from unmask.errors import UserError
    from unmask.lm_eval import UnmaskLM, run_tasks

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    seen = {}

    def evaluate(**kwargs):  # where lm-eval loads the tasks' datasets
        seen["offline"] = (huggingface_hub.constants.is_offline_mode(),
                           datasets.config.HF_HUB_OFFLINE,
                           os.environ.get("HF_DATASETS_OFFLINE"))
        raise ConnectionError("Couldn't reach 'someone/data' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(lm_eval, "simple_evaluate", evaluate)
    lm = UnmaskLM(loaded=load(checkpoint), mc_samples=2, greedy_check=False)
    with pytest.raises(UserError, match="someone/data.*unmask does not download it"):
        run_tasks(lm, ["tiny_mc"], include_path=str(task_dir))
    assert seen["offline"] == (True, True, "1")
    assert not huggingface_hub.constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE
    assert "HF_DATASETS_OFFLINE" not in os.environ


def test_a_dream_style_target_is_never_scored_without_context(tmp_path):
    """A shifted (Dream-style, ``logit_shift``) model has no logits for position 0: a target
    as long as ``max_length`` lost its whole context to the cut and its first token was scored
    with the logits meant for the next. As lm-eval cuts a causal model's pair: the last
    ``max_length`` tokens, at least one of them context; an empty context is the prefix token
    (the document separator), or the target's own first token where it is that token."""
    from lm_eval.api.instance import Instance

    from unmask import lm_eval as le
    from unmask.checkpoint import load, save_checkpoint
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, logit_shift=True)
    save_checkpoint(tmp_path, model=Transformer(cfg), tokenizer=tok)
    lm = le.UnmaskLM(loaded=load(tmp_path), mc_samples=4, greedy_check=False, max_length=8)
    start, ids = lm._start_id, tok.encode("the cat sat")
    assert len(ids) > 8
    assert lm._fit([], ids) == (ids[-8:-7], ids[-7:])  # the first kept token is context
    assert lm._fit([], ids[:3]) == ([start], ids[:3])
    assert lm._fit([], [start, *ids[:3]]) == ([start], ids[:3])  # lm-eval: not twice
    assert lm._fit([5, 6], ids[:7]) == ([6], ids[:7])
    assert lm._fit([5], []) == ([5], [])
    seen = []

    def spy(model, context, target, **kw):
        seen.append(list(context))
        return elbo_loglikelihood(model, context, target, **kw)

    lm_mod_fn, le.elbo_loglikelihood = le.elbo_loglikelihood, spy
    try:
        ((logprob, _),) = lm.loglikelihood([Instance("loglikelihood", {}, ("", "the cat sat"), 0)])
    finally:
        le.elbo_loglikelihood = lm_mod_fn
    assert seen == [ids[-8:-7]] and math.isfinite(logprob)


def test_elbo_of_a_dream_style_target_with_no_context_is_a_value_error():
    """The estimators refuse what they cannot score: the first token of a target with no
    context before it, on a model whose logits at i predict token i + 1."""
    model = _model()
    model.config.logit_shift = True
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="position 0"):
        elbo_loglikelihood(model, [], [7, 9], mask_id=0, n_samples=2, generator=g)
    with pytest.raises(ValueError, match="position 0"):
        exact_elbo(model, [], [7, 9], mask_id=0)
    assert elbo_loglikelihood(model, [], [], mask_id=0, generator=g).logprob == 0.0
    assert math.isfinite(elbo_loglikelihood(model, [2], [7, 9], mask_id=0, n_samples=2,
                                            generator=g).logprob)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_a_continuation_that_starts_with_the_separator_is_its_own_prefix(attention, tmp_path):
    """lm-eval's convention for an empty context, for every model: the prefix token (the
    document separator), unless the continuation starts with it, whose first token is then
    the context (the separator was scored after itself)."""
    from unmask.checkpoint import load
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=load(_checkpoint(tmp_path, attention)), mc_samples=4,
                  greedy_check=False)
    start = lm._start_id
    assert lm._prefixed([], [start, 70, 71]) == ([start], [70, 71])
    assert lm._prefixed([], [70, 71]) == ([start], [70, 71])
    assert lm._prefixed([5], [start]) == ([5], [start])
    (a,) = lm._loglikelihoods([([], [start, 70, 71])], greedy=False)
    (b,) = lm._loglikelihoods([([start], [70, 71])], greedy=False)
    assert a.logprob == pytest.approx(b.logprob, abs=1e-6)


def test_generation_tasks_alone_claim_no_log_likelihoods(task_dir, tmp_path, capsys):
    """A diffusion checkpoint that ran only ``generate_until`` tasks computed no
    log-likelihood: the report said "exact log-likelihoods" (and ``exact: true``), which only a
    causal model has."""
    ckpt = _checkpoint(tmp_path / "m", "bidirectional")
    argv = ["eval", str(ckpt), "--tasks", "tiny_gen", "--include-path", str(task_dir),
            "--limit", "1", "--no-score", "--no-plot", "--device", "cpu", "--gen-length", "4"]
    assert main(argv) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("lm-eval ")]
    assert "exact" not in line and "no log-likelihood requests" in line
    assert main([*argv, "--json"]) == 0
    u = json.loads(capsys.readouterr().out)["lm_eval"]["unmask"]
    assert (u["exact"], u["requests"], u["mc_samples"]) == (False, 0, None)


def test_generation_after_an_empty_context_starts_a_document(tmp_path, monkeypatch):
    """``generate_until`` with an empty context decodes after the document separator, as a
    log-likelihood is scored after it: a Dream-style model's canvas had no token before its
    first generated position, which no logits predict."""
    from lm_eval.api.instance import Instance

    import unmask.api
    from unmask.checkpoint import load, save_checkpoint
    from unmask.lm_eval import UnmaskLM
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, logit_shift=True)
    save_checkpoint(tmp_path, model=Transformer(cfg), tokenizer=tok)
    lm = UnmaskLM(loaded=load(tmp_path), greedy_check=False)
    seen = []
    real = unmask.api.start

    def spy(loaded, prompts, config, **options):
        seen.extend(prompts)
        return real(loaded, prompts, config, **options)

    monkeypatch.setattr(unmask.api, "start", spy)
    kwargs = {"until": ["\n"], "max_gen_toks": 3}
    lm.generate_until([Instance("generate_until", {}, ("", kwargs), 0),
                       Instance("generate_until", {}, ("ab", kwargs), 1)])
    assert seen == [[lm._start_id], tok.encode("ab")]


def test_a_seed_lm_eval_cannot_take_is_one_line(task_dir, tmp_path, capsys):
    """lm-eval seeds numpy with ``--seed``, which takes 0 to 2**32 - 1: a larger seed (which
    ``--seed`` accepts up to 2**63 - 1) was numpy's ValueError traceback after the rest of the
    report had been measured; it is one line, exit 2, before."""
    ckpt = _checkpoint(tmp_path / "m", "bidirectional")
    argv = ["eval", str(ckpt), "--tasks", "tiny_mc", "--include-path", str(task_dir), "--limit",
            "1", "--mc-samples", "2", "--no-score", "--no-plot", "--device", "cpu"]
    assert main([*argv, "--seed", str(2**32)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lm-eval seeds numpy with it, which takes 0 to 2**32 - 1" in err
    assert main([*argv, "--seed", str(2**32 - 1)]) == 0
