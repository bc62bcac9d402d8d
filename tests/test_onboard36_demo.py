"""``unmask demo`` as a newcomer meets it (session 36, onboard).

- Every hint ``unmask demo --train`` prints (Ctrl-C: how to resume; the time limit: how to
  finish; a second run: how to show the first) names the program as it can be typed again:
  after the README's ``bash install.sh && .venv/bin/unmask demo`` the environment is not
  active, and the ``unmask train --resume ...`` it printed was "command not found" (its
  closing "Train on your own text" line already said ``.venv/bin/unmask``). A run folder with
  a space is quoted, so the line can be pasted.
"""

from __future__ import annotations

import json
import shlex
import signal
from dataclasses import replace

from test_demo import small_demo  # noqa: F401 (a fixture)

from unmask.cli import main


def _program_off_path(tmp_path, monkeypatch) -> str:
    """``sys.argv[0]`` a ``.venv/bin/unmask`` that ``PATH`` does not find."""
    program = tmp_path / ".venv" / "bin" / "unmask"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setattr("sys.argv", [str(program), "demo"])
    return str(program)


def test_demo_train_hints_name_the_program_as_it_was_run(small_demo, tmp_path,  # noqa: F811
                                                         monkeypatch, capsys):
    import unmask.train as train_mod
    from unmask.train_guards import TrainingStopped

    program = _program_off_path(tmp_path, monkeypatch)
    real_train = train_mod.train

    def stopped(cfg, **kw):
        run = real_train(replace(cfg, steps=1), **kw)  # a checkpoint at step 1 of 3
        plan = json.loads((run / "train_config.json").read_text())
        (run / "train_config.json").write_text(json.dumps({**plan, "steps": 3}))
        raise TrainingStopped(signal.SIGINT, 1, run)

    run = tmp_path / "my runs" / "stopped"
    q = shlex.quote(str(run))
    small_demo()
    monkeypatch.setattr(train_mod, "train", stopped)
    assert main(["demo", "--train", "--out", str(run), "--no-live"]) == 130
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.endswith(f"; resume with: {program} train --resume --out {q}, then: {program} "
                        f"demo --model {q}"), err

    assert main(["demo", "--train", "--out", str(run), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert f"(a run: show it with {program} demo --model {q}, or train it on with {program} " \
           f"train --resume --out {q})" in err, err

    monkeypatch.setattr(train_mod, "train", real_train)
    small_demo(time_limit=1e-9)  # stops before its first step
    run = tmp_path / "my runs" / "capped"
    q = shlex.quote(str(run))
    assert main(["demo", "--train", "--out", str(run), "--no-live", "--gen-length", "4"]) == 0
    err = capsys.readouterr().err
    assert f"finish it with: {program} train --resume --out {q} --time-limit 0, then: " \
           f"{program} demo --model {q}\n" in err, err


def test_demo_refuses_a_wrong_flag_before_torch_loads():
    """An argument error of ``unmask demo`` imported torch and loaded the model first (4-8 s
    on a shared 2-core machine, against 0.3 s for ``--help``): each is refused with torch not
    imported, as ``unmask --help`` is (benchmarks/startup.py)."""
    import subprocess
    import sys

    cases = ((["--out", "x"], "--out is where --train puts its run; give --train too"),
             (["--train", "--model", "demo"], "--train shows the model it trains"),
             (["--temperature", "-1"], "--temperature must be a finite number >= 0, got -1.0"),
             (["--repetition-penalty", "0"], "--repetition-penalty must be a finite number > 0"),
             (["--gen-length", "0"], "--gen-length must be positive, got 0\n"),
             (["--block-length", "0"], "--block-length must be positive, got 0\n"),
             (["--no-repeat-ngram-size", "-1"], "--no-repeat-ngram-size must be a whole number "
                                                ">= 0 (0 = off), got -1\n"))
    for argv, said in cases:
        code = ("import sys\nfrom unmask.cli import main\n"
                f"rc = main(['demo', *{argv!r}])\n"  # returns: the command's own words
                "print(rc, 'torch' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        assert done.stdout == "2 False\n", (argv, done.stdout, done.stderr)
        assert done.stderr.startswith(f"unmask demo: error: {said}"), (argv, done.stderr)
        assert done.stderr.count("\n") == 1, (argv, done.stderr)
