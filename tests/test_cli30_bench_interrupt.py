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
