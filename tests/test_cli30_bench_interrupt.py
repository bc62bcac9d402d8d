"""A benchmark script stopped by Ctrl-C says so in one line and exits 130, as ``unmask``
does (``benchmarks/_common.run``): it printed the traceback of wherever the run was."""

import pytest


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
    assert err == "objectives.py: interrupted; rerun the same command to resume\n"
