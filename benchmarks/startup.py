"""How long ``unmask`` takes before it does anything: ``--help`` and argument errors.

Each case runs once untimed, then ``--repeats`` times, in a fresh ``python -m unmask.cli``
subprocess (what a user's shell does, minus the console-script shim); the table shows the
median and the fastest wall time and the ratio to ``import torch`` measured in the same run, since
these machines are shared and absolute times drift. The target is under 0.5 s for every
``--help`` and argument error (issue 16, item 11): none of them may import torch. That holds
too for the mistakes a command's ``check_flags`` refuses before torch loads (``--port 99999``,
``--block-length 5``, a template, prompt file or ``--model`` that is not there: 5-7 s before
session 38, torch imported first).

    python benchmarks/startup.py [--repeats 5] [--json benchmarks/results/startup.json]
    python benchmarks/startup.py --baseline-src ../old-checkout/src   # before/after, one run

With ``--baseline-src`` every CLI case also runs with that ``src`` first on PYTHONPATH
(another checkout, e.g. the commit before a change), side by side with this one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import output_file, positive_int, write_results

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from unmask.commands import COMMANDS  # noqa: E402  (light: no torch)

TARGET_S = 0.5


def cases() -> list[tuple[str, list[str]]]:
    """(label, python argv) of every case: two references, then the CLI."""
    cli = [sys.executable, "-m", "unmask.cli"]
    out = [
        ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
        ("unmask --help", [*cli, "--help"]),
        ("unmask (no command)", cli),
    ]
    for name in COMMANDS:
        word = name.replace("_", "-")
        out.append((f"unmask {word} --help", [*cli, word, "--help"]))
    out.append(("unmask generate (missing --model)", [*cli, "generate", "x"]))
    out.append(("unmask train --steps many", [*cli, "train", "--steps", "many"]))
    # refused by the command's own check (check_flags), not by argparse: torch loaded first
    # before session 36
    out.append(("unmask demo --temperature -1", [*cli, "demo", "--temperature", "-1"]))
    out.append(("unmask nope (unknown command)", [*cli, "nope"]))
    # refused by a command's check_flags before torch loads since session 38 (5-7 s before)
    gone = "/nonexistent-unmask-startup"
    out.append(("unmask serve --port 99999", [*cli, "serve", "--model", "demo", "--port",
                                              "99999"]))
    out.append(("unmask generate --block-length 5", [*cli, "generate", "--model", "demo",
                                                     "--block-length", "5", "hi"]))
    out.append(("unmask fill-form (no such template)", [*cli, "fill-form", "--model", "demo",
                                                        f"{gone}/form.json"]))
    out.append(("unmask generate (no such --prompt-file)", [*cli, "generate", "--model", "demo",
                                                            "--prompt-file", f"{gone}/p.txt"]))
    out.append(("unmask chat (no such --model)", [*cli, "chat", "--model", f"{gone}/run"]))
    out.append(("unmask infill --gen-length 4", [*cli, "infill", "--model", "demo", "a [MASK]",
                                                 "--gen-length", "4"]))
    return out


def time_once(argv: list[str], src: Path) -> tuple[float, int]:
    """Wall seconds and exit status of one run with ``src`` first on the path."""
    path = os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0, proc.returncode


def measure(argv: list[str], src: Path, repeats: int) -> dict[str, object]:
    """Median and fastest of ``repeats`` runs after one untimed run: the first run of a case
    (a checkout's first import compiles its ``.pyc`` files, a cold disk cache reads torch's
    libraries) took seconds, the whole median of ``--repeats 1`` and a ``--baseline-src``
    checkout's first case (its speed-up)."""
    time_once(argv, src)
    times, codes = [], set()
    for _ in range(repeats):
        seconds, code = time_once(argv, src)
        times.append(seconds)
        codes.add(code)
    return {"median_s": statistics.median(times), "min_s": min(times), "exit": sorted(codes)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=positive_int, default=5, metavar="N",
                    help="runs per case (default: 5)")
    ap.add_argument("--json", type=output_file, metavar="FILE", help="also write the rows as JSON")
    ap.add_argument("--baseline-src", metavar="DIR",
                    help="another checkout's src/ to time side by side (before/after)")
    args = ap.parse_args()

    base = Path(args.baseline_src).resolve() if args.baseline_src else None
    if base is not None and not (base / "unmask" / "__init__.py").is_file():
        # else `python -m unmask.cli` finds the installed unmask, and the "baseline" times it
        from unmask.errors import UserError

        raise UserError(f"--baseline-src {args.baseline_src}: no unmask package in it (give "
                        "another checkout's src/ folder)")  # fmt: skip
    rows = []
    for label, argv in cases():
        row: dict[str, object] = {"case": label, "argv": argv[1:]}
        row.update(measure(argv, SRC, args.repeats))
        if base is not None and label.startswith("unmask"):
            before = measure(argv, base, args.repeats)
            row["baseline_median_s"] = before["median_s"]
            row["speedup"] = before["median_s"] / row["median_s"]  # type: ignore[operator]
        rows.append(row)
    torch_s = rows[1]["median_s"]
    width = max(len(str(r["case"])) for r in rows)
    head = f"{'case':<{width}}  median s   min s  ÷ torch  exit  <{TARGET_S}s"
    print(head + ("  baseline s  speed-up" if base else ""))
    for r in rows:
        r["vs_torch"] = r["median_s"] / torch_s  # type: ignore[operator]
        cli = str(r["case"]).startswith("unmask")
        ok = ("yes" if r["median_s"] < TARGET_S else "NO") if cli else ""  # type: ignore[operator]
        exits = ",".join(map(str, r["exit"]))  # type: ignore[call-overload]
        line = (f"{r['case']:<{width}}  {r['median_s']:8.3f}  {r['min_s']:6.3f}  "
                f"{r['vs_torch']:7.2f}  {exits:>4}  {ok:>5}")
        if "baseline_median_s" in r:
            line += f"  {r['baseline_median_s']:10.3f}  {r['speedup']:7.1f}x"
        print(line)
    if args.json:
        write_results(args.json, {"repeats": args.repeats, "target_s": TARGET_S,
                                  "baseline_src": args.baseline_src, "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
