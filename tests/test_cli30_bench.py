"""The benchmark scripts stop in one line: Ctrl-C is ``NAME: interrupted`` and exit 130, as
``unmask`` says it (``benchmarks/_common.run`` printed the traceback of wherever the run was),
and a bad count is one line and exit 2."""

import pytest


@pytest.fixture(autouse=True)
def signals_left_alone(monkeypatch):
    """``run`` holds SIGINT/SIGTERM as the process ends; this process goes on."""
    monkeypatch.setattr("unmask.cli.hold_signals", lambda: None)


def test_ctrl_c_is_one_line_and_exit_130(benchmark, capsys, monkeypatch):
    common = benchmark("_common")
    monkeypatch.setattr("sys.argv", ["decoding.py"])

    def main() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        common.run(main)
    assert e.value.code == 130
    assert capsys.readouterr().err == "decoding.py: interrupted\n"


def test_a_saved_training_run_keeps_its_signal_status_and_the_hint(benchmark, capsys,
                                                                   monkeypatch):
    """objectives.py's hint (how to resume) and a SIGTERM's 143 (``TrainingStopped``) stay."""
    common = benchmark("_common")
    monkeypatch.setattr("sys.argv", ["objectives.py"])

    class Stopped(KeyboardInterrupt):
        exit_code = 143

    def main() -> None:
        raise Stopped

    with pytest.raises(SystemExit) as e:
        common.run(main, interrupted="rerun the same command to resume")
    assert e.value.code == 143
    err = capsys.readouterr().err
    assert err == "objectives.py: terminated; rerun the same command to resume\n"


def test_a_second_ctrl_c_is_held_while_the_line_is_said(benchmark, capsys, monkeypatch):
    """The line is said with SIGINT/SIGTERM held (as ``unmask`` holds them when it ends): a
    second Ctrl-C there turned it into a traceback."""
    common = benchmark("_common")
    monkeypatch.setattr("sys.argv", ["decoding.py"])
    held = []
    monkeypatch.setattr("unmask.cli.hold_signals", lambda: held.append(1))

    def main() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit):
        common.run(main)
    assert held == [1]


@pytest.mark.parametrize(("extra", "message"), [
    (["--repeats", "1"], "argument --repeats: must be at least 2, got 1"),  # stdev of one value
    (["--targets", "8,x"], "--targets 8,x: expected a whole number, got 'x'"),
    (["--samples", "0,4"], "--samples 0,4: must be at least 1, got 0"),
])
def test_elbo_stderr_refuses_bad_counts_in_one_line(extra, message):
    """``elbo_stderr.py --repeats 1`` ended in a StatisticsError traceback after the whole
    run, and a bad ``--targets`` / ``--samples`` item in a ValueError one."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "benchmarks/elbo_stderr.py", *extra], cwd=root,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("elbo_stderr.py: error: ")
    assert message in r.stderr and "Traceback" not in r.stderr
