"""The benchmark scripts answer a user's mistake with one line and exit 2, not a traceback
(``benchmarks/_common.py``)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["segments.py", "--model", "/nonexistent/x"], "/nonexistent/x: no such folder"),
        (["hybrid.py", "--model", "src/unmask/assets/demo", "--repeats", "1"],
         "not a hybrid checkpoint"),  # fmt: skip
        (["serve_load.py", "--clients", "a"], "--clients a: expected a whole number, got 'a'"),
        (["sampling_baseline.py", "--repeats", "0"],
         "argument --repeats: must be at least 1, got 0"),
        (["eval_rows.py", "--families", "sedd,foo"],
         "--families sedd,foo: expected a comma list of sedd, mdlm, embed-diffusion"),
        (["eval_rows.py", "--json", "/dev/null/x.json"], "cannot write /dev/null/x.json"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(argv, message):
    r = _run(f"benchmarks/{argv[0]}", *argv[1:])
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{argv[0]}: error: ") and message in last, r.stderr
    assert "Traceback" not in r.stderr


def test_int_list(benchmark):
    common = benchmark("_common")
    assert common.int_list("1,4, 16", "--clients") == [1, 4, 16]
    from unmask.errors import UserError

    with pytest.raises(UserError, match="--clients 1,0"):
        common.int_list("1,0", "--clients")


def test_quick_picks_defaults_but_keeps_given_flags(benchmark, tmp_path):
    decoding = benchmark("decoding")
    a = decoding.parse_args(["--quick", "--gen-lengths", "16", "--batch", "3"])
    assert a.gen_lengths == [16] and a.batch == 3 and a.block_length == 16
    assert decoding.parse_args([]).gen_lengths == [256, 512]
    segments = benchmark("segments")
    a = segments.parse_args(["--quick", "--segments", "8", "--score"])
    assert a.segments == [8] and a.gen_length == 48 and not a.no_score
    dc = benchmark("data_constrained")
    given = ["--quick", "--json", str(tmp_path / "dc.json"), "--work", str(tmp_path / "w"),
             "--plot", str(tmp_path / "dc.png"), "--epochs", "1"]  # fmt: skip
    a = dc.parse_args(given)
    assert (a.json, a.work, a.plot) == (given[2], given[4], given[6])
    assert a.epochs == 1 and a.preset == "tiny"
    a = dc.parse_args(["--quick"])
    assert a.work is None and a.json is None and a.plot is None  # a temporary folder, removed


def test_speculative_writes_under_runs_by_default(benchmark):
    """Its default ``--json`` was ``benchmarks/results/speculative.json`` (relative to the
    working folder): a documented command run again wrote into the committed results."""
    common = benchmark("_common")
    speculative = benchmark("speculative")
    a = speculative.parse_args(["--ar-model", "x"])
    assert Path(a.json) == common.default_output("speculative.json")
    assert "benchmarks/results" not in str(Path(a.json).relative_to(ROOT))


def test_every_script_answers_help():
    """``python benchmarks/X.py --help`` of every script prints its usage, exit 0 (a script
    that parses after loading a model, or imports a missing name, shows here)."""
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name[0] != "_")
    code = (
        "import runpy, sys\n"
        "bad = []\n"
        f"for name in {scripts!r}:\n"
        "    sys.argv = [name, '--help']\n"
        "    sys.path[:0] = ['benchmarks']\n"
        "    try:\n"
        "        runpy.run_path('benchmarks/' + name, run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        if e.code not in (0, None): bad.append((name, e.code))\n"
        "    except BaseException as e:\n"
        "        bad.append((name, repr(e)))\n"
        "    else:\n"
        "        bad.append((name, 'no usage printed'))\n"
        "    del sys.path[0]\n"
        "print('BAD', bad)\n"
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "BAD []" in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--limit", "0"], "argument --limit: must be at least 1, got 0"),  # was max() of []
        (["--limit", "-1"], "argument --limit: must be at least 1, got -1"),  # dropped one
        (["--run", "nolabel"], "--run nolabel: expected LABEL=PATH"),  # was ": not a ..."
        (["--json", "README.md/x.json"],
         "argument --json: cannot write README.md/x.json: Not a directory: README.md"),
        # the next three were said only after a model had loaded or decoded its whole task
        (["--run", "b=/nonexistent/run"], "/nonexistent/run: no such folder"),
        (["--sample-set", "block_length"], "--sample-set block_length: expected KEY=VALUE"),
        (["--sample-set", "bogus=1"], "--sample-set: unknown sampling option 'bogus'"),
    ],
)
def test_planning_mistakes_are_one_line(tmp_path, extra, message):
    from unmask.tasks import write_task

    write_task("reversal", tmp_path, n_train=1, n_eval=1)
    argv = ["--task-file", str(tmp_path)]
    if "--run" not in extra:
        argv += ["--run", "a=src/unmask/assets/demo"]
    r = _run("benchmarks/planning.py", *argv, *extra)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]  # argparse's usage line may come before it
    assert last.startswith("planning.py: error: ") and message in last, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""  # refused before the first model decoded (or printed its header)


def test_run_reports_an_os_error_in_one_line(benchmark, capsys, tmp_path):
    common = benchmark("_common")

    def main() -> None:
        (tmp_path / "f").write_text("")
        (tmp_path / "f" / "x.json").write_text("{}")

    with pytest.raises(SystemExit) as e:
        common.run(main)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Not a directory" in err[0] and err[0].endswith("x.json")


def test_json_text_is_strict_json(benchmark):
    """serve_load.py (a level with no answered request, no forward) and constraints.py (no
    completion to time) wrote NaN into their JSON: not JSON to jq or JavaScript."""
    import json

    common = benchmark("_common")
    text = common.json_text({"p50_s": float("nan"), "rows": [1.5, float("inf"), (2, "a")]})
    assert text.endswith("\n")

    def refuse(name: str) -> None:
        raise ValueError(name)

    assert json.loads(text, parse_constant=refuse) == {"p50_s": None, "rows": [1.5, None, [2, "a"]]}
    for script in ("serve_load", "constraints"):
        source = (ROOT / "benchmarks" / f"{script}.py").read_text()
        # json_text itself, or _common.write_results, which writes through it; a json.dumps
        # anywhere in the file only prints a progress line (stdout: one row as measured)
        assert "write_results(" in source or "json_text(" in source, script
        dumps = re.findall(r"(.{0,6})json\.dumps\(", source)
        assert all(before == "print(" for before in dumps), (script, dumps)


@pytest.mark.parametrize(
    "script, extra, message",
    [
        ("distinct_ci.py", ["RESULT", "--rows", "0", "5"],
         "--rows 5: RESULT has 2 rows"),  # was an IndexError  # fmt: skip
        ("distinct_ci.py", ["README.md"], "README.md: not a benchmarks/decoding.py --json file"),
        ("distinct_ci.py", ["EMPTY"], "EMPTY: not a benchmarks/decoding.py --json file"),
        ("distinct_ci.py", ["RESULT", "--resamples", "0"],
         "argument --resamples: must be at least 1, got 0"),  # was an IndexError  # fmt: skip
        ("gqa_attention.py", ["--repeats", "0"],
         "argument --repeats: must be at least 1, got 0"),  # was no median  # fmt: skip
        ("large_shape.py", ["--repeats", "0"],
         "argument --repeats: must be at least 1, got 0"),  # no median, after the run  # fmt: skip
        ("hybrid.py", ["--repeats", "0"],
         "argument --repeats: must be at least 1, got 0"),  # an IndexError  # fmt: skip
    ],
)
def test_more_mistakes_are_one_line(tmp_path, script, extra, message):
    import json

    result = tmp_path / "r.json"
    rows = [{"model": m, "policy": "p", "texts": ["a b c", "d e f"]} for m in ("x", "y")]
    result.write_text(json.dumps({"meta": {}, "sections": [{"rows": rows}]}))
    (tmp_path / "e.json").write_text("{}")
    names = {"RESULT": str(result), "EMPTY": str(tmp_path / "e.json")}
    argv = [names.get(a, a) for a in extra]
    message = message.replace("RESULT", str(result)).replace("EMPTY", str(tmp_path / "e.json"))
    r = _run(f"benchmarks/{script}", *argv)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: ") and message in last, r.stderr
    assert "Traceback" not in r.stderr
    good = _run("benchmarks/distinct_ci.py", str(result), "--resamples", "20")
    assert good.returncode == 0 and "2 prompts, 20 resamples" in good.stdout, good.stderr


THREADS_SCRIPTS = [  # (script, whether 0 means "torch's default" there)
    ("block_cache.py", False),
    ("data_constrained.py", False), ("decoding.py", True), ("defaults.py", False),
    ("elbo_stderr.py", False), ("eos_stop.py", False), ("gqa_attention.py", False),
    ("guidance.py", False),
    ("infill.py", True), ("latent_denoise.py", False), ("lm_eval_demo.py", False),
    ("objectives.py", True), ("planning.py", False), ("precision.py", False),
    ("rounding.py", False), ("train_throughput.py", True),
]  # fmt: skip


def test_a_bad_thread_count_is_refused_by_argparse():
    """``--threads -1`` (or ``0`` where 0 is not "torch's default") was passed on to
    ``torch.set_num_threads``: a RuntimeError traceback after the model had loaded. Every
    script is parsed in one process; a parse that succeeds stops the script there."""
    bad = [(name, "--threads", "-1") for name, _ in THREADS_SCRIPTS]
    bad += [(name, "--threads", "0") for name, zero_ok in THREADS_SCRIPTS if not zero_ok]
    for name, flag, n, status, last in _parse_only(bad):
        assert status == 2 and last, (name, flag, n, status, last)
        assert last[0].startswith(f"{name}: error: argument --threads: must be at least"), last


def _parse_only(cases: list[tuple[str, str, str]]) -> list[tuple]:
    """Each (script, flag, value) parsed in one process: (script, flag, value, exit status,
    [the last line on stderr]); a parse that succeeds stops the script there."""
    code = (
        "import argparse, contextlib, io, runpy, sys\n"
        "parse = argparse.ArgumentParser.parse_args\n"
        "def parsed(self, *a, **k):\n"
        "    parse(self, *a, **k)\n"
        "    raise RuntimeError('parsed')\n"
        "argparse.ArgumentParser.parse_args = parsed\n"
        "out = []\n"
        f"for name, flag, n in {cases!r}:\n"
        "    sys.argv = [name, flag, n]\n"
        "    sys.path[:0] = ['benchmarks']\n"
        "    err = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stderr(err):\n"
        "            runpy.run_path('benchmarks/' + name, run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        out.append((name, flag, n, e.code, err.getvalue().strip().splitlines()[-1:]))\n"
        "    except BaseException as e:\n"
        "        out.append((name, flag, n, repr(e), []))\n"
        "    del sys.path[0]\n"
        "print(repr(out))\n"
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr[-2000:]
    import ast

    got = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert len(got) == len(cases)
    return got


COUNTS = [  # (script, flag, value): a count of nothing, which ended in a traceback (a
    # ZeroDivisionError, an empty median, an empty batch) or in a table of nothing
    ("lm_eval_demo.py", "--limit", "0"), ("lm_eval_demo.py", "--mc-samples", "0"),
    ("gqa_attention.py", "--gen", "0"), ("segments.py", "--prompt-words", "0"),
    ("constraints.py", "--forms", "0"), ("constraints.py", "--quality-n", "-1"),
    ("data_constrained.py", "--tokens", "0"), ("data_constrained.py", "--warmup", "-1"),
    ("defaults.py", "--prompts", "0"), ("defaults.py", "--seeds", "0"),  # --blocks 0 is a
    # block length (one block: test_defaults_takes_the_one_block_row_its_help_offers...)
    ("elbo_stderr.py", "--repeats", "0"), ("elbo_stderr.py", "--items", "0"),
    ("guidance.py", "--n", "0"), ("infill.py", "--n", "0"), ("infill.py", "--spans", "0"),
    ("latent_denoise.py", "--windows", "0"), ("objectives.py", "--steps", "0"),
    ("objectives.py", "--gen-samples", "0"), ("objectives.py", "--warmup", "-1"),
    ("precision.py", "--repeats", "0"), ("precision.py", "--batch", "0"),
    ("rounding.py", "--n", "0"), ("train_throughput.py", "--rounds", "0"),
    ("train_throughput.py", "--warmup", "-1"),
]  # fmt: skip


def test_a_count_of_nothing_is_refused_by_argparse():
    for name, flag, n, status, last in _parse_only(COUNTS):
        assert status == 2 and last, (name, flag, n, status, last)
        least = 0 if n == "-1" and flag == "--warmup" else 1
        if (name, flag) == ("elbo_stderr.py", "--repeats"):
            least = 2  # a standard error needs two repeats
        assert last[0] == f"{name}: error: argument {flag}: must be at least {least}, got {n}"


def test_constraints_defaults_are_this_checkouts_and_a_bad_rev_is_one_line(benchmark):
    """constraints.py's --data and --ar-model defaulted to /work/main/...: another checkout
    (a device machine's copy) read the wrong corpus or none; an unknown --old-rev was a
    CalledProcessError traceback."""
    constraints = benchmark("constraints")
    a = constraints.parse_args([])
    assert a.data == ROOT / "data" / "bible"
    assert a.ar_model == ROOT / "runs" / "ar-fim" / "checkpoint"
    for flag in ("--old-rev", "--convert-rev"):
        other = "--convert-rev" if flag == "--old-rev" else "--old-rev"
        r = _run("benchmarks/constraints.py", flag, "0000000nosuchrev", other, "none",
                 "--quick", "--skip", "validity", "quality")  # fmt: skip
        assert r.returncode == 2, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"constraints.py: error: {flag} 0000000nosuchrev: "), last
        assert f"{flag} none skips it" in last and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        (["--warmup", "-1"], "argument --warmup: must be at least 0, got -1"),
        (["--budget-s", "0"], "argument --budget-s: 0 must be positive"),
    ],
)
def test_gpu_check_refuses_bad_counts(argv, message):
    """``--repeats 0`` on the GPU failed every row with a StatisticsError traceback (the
    median of no timings) and exit 1; on a CPU it was hidden by the no-CUDA message."""
    r = _run("benchmarks/gpu_check.py", *argv)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"gpu_check.py: error: {message}", r.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CPU-only check")
def test_gpu_check_without_a_gpu_says_so_in_the_scripts_format():
    r = _run("benchmarks/gpu_check.py")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "gpu_check.py: error: no CUDA device; run with --dry-run to check the script")


def test_decoding_checks_ar_model_before_decoding_anything():
    """``--ar-model`` was loaded after every diffusion row had run: a wrong path or a
    bidirectional checkpoint failed minutes (hours at full size) into the run."""
    r = _run("benchmarks/decoding.py", "--quick", "--speed-preset", "none", "--ar-model",
             "src/unmask/assets/demo")  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("decoding.py: error: --ar-model "
                                                 "src/unmask/assets/demo: attention is "
                                                 "'bidirectional', not causal")  # fmt: skip
    assert "llada 1/step" not in r.stdout  # no row was decoded first


def test_startup_refuses_a_baseline_src_without_unmask(tmp_path):
    """``--baseline-src`` of a folder with no ``unmask`` in it (a typo, the checkout root
    instead of its src/) timed whatever ``unmask`` the interpreter found instead, or a
    failing import, and printed its speed-up as a before/after."""
    r = _run("benchmarks/startup.py", "--repeats", "1", "--baseline-src", str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"startup.py: error: --baseline-src {tmp_path}: no unmask package in it (give another "
        "checkout's src/ folder)")


def test_data_constrained_refuses_no_epochs():
    """``--epochs 0`` trained one step and reported its "best epoch 0.125"; ``--eval-epochs
    0`` validated at every step."""
    got = _parse_only([("data_constrained.py", "--epochs", "0"),
                       ("data_constrained.py", "--eval-epochs", "-1")])  # fmt: skip
    assert [(status, last) for *_, status, last in got] == [
        (2, ["data_constrained.py: error: argument --epochs: 0 must be positive"]),
        (2, ["data_constrained.py: error: argument --eval-epochs: -1 must be positive"]),
    ]


def test_objectives_only_refuses_an_unknown_name(benchmark):
    """``--only foo`` (or a typo beside a good name) was dropped without a word: the run
    trained ar alone and wrote its results as if asked for."""
    objectives = benchmark("objectives")
    from unmask.errors import UserError

    assert [r[0] for r in objectives.select_runs("mdlm,sedd")] == ["ar", "mdlm", "sedd"]
    assert [r[0] for r in objectives.select_runs("mdlm", keep_ar=False)] == ["mdlm"]
    assert len(objectives.select_runs(None)) == len(objectives.RUNS)
    with pytest.raises(UserError, match=r"--only mdlm,sedd2: unknown 'sedd2'; choose from ar, "):
        objectives.select_runs("mdlm,sedd2")


DECODER_COUNTS = [  # (script, flag, value): the decoder and large-model scripts' counts, which
    # reached torch.set_num_threads (a RuntimeError after the models loaded), an empty median,
    # an empty batch or the decoders' own errors minutes into a run
    ("hybrid.py", "--threads", "-1"), ("hybrid.py", "--threads", "0"),
    ("hybrid.py", "--draft-block", "0"), ("hybrid.py", "--prefix", "0"),
    ("hybrid.py", "--prompts", "0"), ("hybrid.py", "--gen-length", "0"),
    ("hybrid.py", "--batch", "0"),
    ("speculative.py", "--threads", "-1"), ("speculative.py", "--repeats", "0"),
    ("speculative.py", "--batches", "0"), ("speculative.py", "--gen-lengths", "0"),
    ("speculative.py", "--draft-lengths", "0"), ("speculative.py", "--draft-steps", "0"),
    ("speculative.py", "--prompts", "0"), ("speculative.py", "--prompt-words", "0"),
    ("speculative.py", "--segment-length", "0"),
    ("speculative.py", "--hybrid-draft-lengths", "0"),
    ("speculative.py", "--no-repeat-ngram-size", "-1"),
    ("speculative_batch.py", "--threads", "-1"), ("speculative_batch.py", "--threads", "0"),
    ("speculative_batch.py", "--gen-length", "0"), ("speculative_batch.py", "--batch", "0"),
    ("speculative_batch.py", "--draft-length", "0"),
    ("large_shape.py", "--threads", "-1"), ("large_shape.py", "--batch", "0"),
    ("large_shape.py", "--block-length", "0"), ("large_shape.py", "--gen-lengths", "0"),
    ("large_shape.py", "--prompt-len", "-1"), ("large_shape.py", "--d-model", "0"),
    ("llada2.py", "--threads", "-1"),
    ("narrow_head.py", "--reps", "0"), ("narrow_head.py", "--threads", "0"),
]  # fmt: skip
ZERO_OK = {("speculative.py", "--threads"), ("large_shape.py", "--threads"),  # torch's default
           ("speculative.py", "--no-repeat-ngram-size")}  # off  # fmt: skip


def test_the_decoder_scripts_refuse_bad_counts_when_options_are_read():
    """``--threads -1`` of hybrid.py, speculative.py, speculative_batch.py went on to
    ``torch.set_num_threads`` (a traceback once the models had loaded; large_shape.py said
    so only after parsing); ``--batch 0``, ``--draft-length 0``, ... failed later or not at
    all. argparse now refuses each, as the other scripts do."""
    for name, flag, n, status, last in _parse_only(DECODER_COUNTS):
        assert status == 2 and last, (name, flag, n, status, last)
        least = 0 if (name, flag) in ZERO_OK else 1
        assert last[0] == f"{name}: error: argument {flag}: must be at least {least}, got {n}"


def test_the_decoder_scripts_write_strict_json():
    """hybrid.py, speculative.py, speculative_batch.py, large_shape.py and llada2.py wrote
    their results with ``json.dumps``: a NaN (a rate of nothing, the gen ppl of texts with
    no token) became ``NaN``, which jq and JavaScript refuse. They write with ``json_text``."""
    for script in ("hybrid", "speculative", "speculative_batch", "large_shape", "llada2"):
        source = (ROOT / "benchmarks" / f"{script}.py").read_text()
        # json_text itself, or _common.write_results, which writes through it
        assert "json_text(" in source or "write_results(" in source, script
        assert "json.dumps(out" not in source, script
        assert "json.dumps(result" not in source and "json.dumps({\"rows\"" not in source, script


def test_train_throughput_help_says_what_it_measures():
    """``train_throughput.py --help`` printed the options alone: no description, and
    ``--compare`` listed its four choices without what each compares."""
    r = _run("benchmarks/train_throughput.py", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "Training-step throughput and memory, side by side in one run." in text
    assert "memory: peak memory of 2-process DDP vs FSDP2" in text
    got = _parse_only([("train_throughput.py", "--layers", "-1")])
    assert got[0][3:] == (2, ["train_throughput.py: error: argument --layers: must be at least "
                              "0, got -1"])  # fmt: skip


def test_decoding_quick_keeps_a_given_thread_count(benchmark):
    """``--quick --threads 0`` ran on 1 thread (``args.threads or 1``), though the help says
    0 is torch's default and --quick says flags given still win: 1 only when none is given."""
    decoding = benchmark("decoding")
    assert decoding.parse_args(["--quick"]).threads == 1
    assert decoding.parse_args(["--quick", "--threads", "0"]).threads == 0
    assert decoding.parse_args(["--quick", "--threads", "3"]).threads == 3
    assert decoding.parse_args([]).threads == 0


@pytest.mark.parametrize("threads, env", [(0, None), (3, "3")])
def test_train_throughput_memory_sets_omp_threads_only_when_given(benchmark, monkeypatch,
                                                                  threads, env):
    """``--compare memory`` at the default ``--threads 0`` gave its workers
    OMP_NUM_THREADS=0 (libgomp: "Invalid value for environment variable OMP_NUM_THREADS"):
    0 = torch's default leaves the variable as it was."""
    import argparse
    import json

    tt = benchmark("train_throughput")
    seen: list[dict] = []

    def fake_run(cmd, **kw):
        seen.append(kw["env"])
        row = {"mode": cmd[cmd.index("--worker") + 1], "params": 1e6, "peak_bytes": 2.0**30}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(row) + "\n")

    monkeypatch.setattr(subprocess, "run", fake_run)  # what _common.child_json runs
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = argparse.Namespace(threads=threads, preset="tiny", vocab=64, batch=2, seq_len=8,
                              steps=1, d_model=0, layers=0)  # fmt: skip
    rows = tt.compare_memory(args)
    assert [r["mode"] for r in rows] == ["ddp", "fsdp"] and len(seen) == 2
    assert all(e.get("OMP_NUM_THREADS") == env for e in seen)


def test_the_scripts_count_flags_are_the_clis_at_least(benchmark, monkeypatch):
    """``_common.non_negative_int`` repeated ``unmask.commands.positive_int`` with another
    floor: both are now ``unmask.commands.at_least(n)``, one check with the same messages."""
    import argparse

    import unmask.commands as commands

    common = benchmark("_common")
    for least, script in ((0, common.non_negative_int), (1, common.positive_int)):
        check = commands.at_least(least)
        assert script("7") == check("7") == 7 and script(str(least)) == least
        for bad in ("x", "2.5", str(least - 1)):
            with pytest.raises(argparse.ArgumentTypeError) as a:
                script(bad)
            with pytest.raises(argparse.ArgumentTypeError) as b:
                check(bad)
            assert str(a.value) == str(b.value)
    assert str(b.value) == "must be at least 1, got 0"
    with pytest.raises(argparse.ArgumentTypeError, match="^expected a whole number, got 'x'$"):
        commands.at_least(3)("x")
    with pytest.raises(argparse.ArgumentTypeError, match="^must be at least 3, got 2$"):
        commands.at_least(3)("2")
    floors: list[int] = []
    real = commands.at_least
    monkeypatch.setattr(commands, "at_least", lambda n: floors.append(n) or real(n))
    common.non_negative_int("4"), common.positive_int("4")
    assert floors == [0, 1]  # the scripts' types check with the CLI's, not their own copy


def test_defaults_takes_the_one_block_row_its_help_offers_and_refuses_no_seeds():
    """``--blocks 0`` ("0 = one block", the first row of the default grid) was refused by
    argparse ("must be at least 1"), so a grid with the library default could not be asked
    for; ``--seeds 0`` went on to a ZeroDivisionError after decoding every greedy row, and
    ``--no-repeat-ngram-sizes -1`` failed only after the model loaded."""
    got = _parse_only([("defaults.py", "--blocks", "0"), ("defaults.py", "--seeds", "0"),
                       ("defaults.py", "--no-repeat-ngram-sizes", "-1")])  # fmt: skip
    assert got[0][3:] == ("RuntimeError('parsed')", [])  # parsed: 0 is a block length here
    assert got[1][3:] == (2, ["defaults.py: error: argument --seeds: must be at least 1, got 0"])
    assert got[2][3:] == (2, ["defaults.py: error: argument --no-repeat-ngram-sizes: must be "
                              "at least 0, got -1"])  # fmt: skip


JSON_FLAGS = [  # (script, its results flag): every script that writes a results file
    (name, "--out" if name == "llada2.py" else "--json")
    for name in ("block_cache.py",
                 "compile_decode.py", "constraints.py", "data_constrained.py", "decoding.py",
                 "defaults.py", "distinct_matched.py", "elbo_stderr.py", "eos_stop.py",
                 "gpu_check.py",
                 "gqa_attention.py", "guidance.py", "hybrid.py", "infill.py", "large_shape.py",
                 "latent_denoise.py", "llada2.py", "lm_eval_demo.py", "objectives.py",
                 "penalty_cost.py", "planning.py", "precision.py", "rounding.py",
                 "sampling_baseline.py", "segments.py", "serve_load.py", "speculative.py",
                 "speculative_accept.py", "startup.py", "threads.py", "train_throughput.py")
]  # fmt: skip


def test_a_results_path_that_cannot_be_written_is_refused_before_the_run():
    """``--json README.md/x.json`` (under a file) was found out when the results were written:
    after the whole measurement (compile_decode.py's minutes of compiling, objectives.py's
    training), the numbers lost. argparse now refuses it at once, as it refuses a bad count."""
    got = _parse_only([(name, flag, "README.md/x.json") for name, flag in JSON_FLAGS])
    for name, flag, _, status, last in got:
        assert status == 2 and last, (name, status, last)
        assert last[0].startswith(f"{name}: error: argument {flag}: cannot write "
                                  "README.md/x.json: "), last  # fmt: skip


def test_output_file_refuses_a_folder_and_makes_none(benchmark, tmp_path):
    import argparse

    common = benchmark("_common")
    target = tmp_path / "a" / "b" / "r.json"
    assert common.output_file(str(target)) == str(target)
    assert list(tmp_path.iterdir()) == []  # checked, nothing made (the script makes it)
    assert common.output_path(str(target)) == target
    for bad in (str(tmp_path), ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a file to write"):
            common.output_file(bad)
