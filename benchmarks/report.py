"""Collect the benchmarks' JSON results into one Markdown page with plots.

    python benchmarks/report.py [--results benchmarks/results] [--out docs/report.md]

Reads every ``*.json`` under ``--results`` and writes ``--out`` (default docs/report.md) and
its PNGs (``docs/report/*.png``; matplotlib, skipped with a note when it is missing). Each
section below has its own known files and names the script that measures them (a section with
none says which command makes them); a JSON file no section knows still gets a generic table,
named with the script that wrote it (``SOURCES``), so nothing measured is lost or unsourced; a
file not in the shape its section reads is shown whole, with a note, rather than stopping the
page. The numbers are what the files say (machine, date and settings are in them): these
machines are shared, so compare the ratios within one file rather than seconds across files.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Rows = list[dict[str, Any]]


@dataclass
class Section:
    """A part of the report: which result files it reads and how it shows them."""

    title: str
    claim: str
    """What the section measures, in one sentence."""
    patterns: tuple[str, ...]
    """File name globs under the results folder."""
    command: str
    """How to produce the results when there are none."""
    rows: Callable[[dict[str, Any]], Rows]
    """The table rows of one file."""
    columns: tuple[str, ...] = ()
    """Columns to show (default: every scalar column)."""
    plot: Callable[[list[tuple[str, dict[str, Any]]], Path], str | None] | None = None
    """Draws the section's PNG from all its files; returns a note when it cannot."""
    shown: tuple[str, ...] = ("rows",)
    """The top-level keys ``rows`` shows; the file's other numbers follow as generic tables."""


def _top_rows(d: dict[str, Any]) -> Rows:
    return [r for r in d.get("rows", []) if isinstance(r, dict)]


def _section_rows(d: dict[str, Any]) -> Rows:
    out: Rows = []
    for s in d.get("sections", []):
        out += [{"table": s.get("name", ""), **r} for r in s.get("rows", []) if isinstance(r, dict)]
    return out


def _serve_rows(d: dict[str, Any]) -> Rows:
    return [{"concurrency": k, "speedup": v} for k, v in d.get("speedup", {}).items()]


def _planning_rows(d: dict[str, Any]) -> Rows:
    """planning.py's rows, each with the 95% Wilson interval of its solve rate (``low``,
    ``high``; ``unmask.tasks.score.wilson_interval``) computed from ``solved`` / ``total`` where
    the file has none (written before 2026-12-07): two models' rates are compared with it."""
    out = []
    for r in _top_rows(d):
        interval = None if "low" in r else _interval(r.get("solved"), r.get("total"))
        if interval is not None:
            r = {**r, "low": round(interval[0], 4), "high": round(interval[1], 4)}
        out.append(r)
    return out


def _interval(solved: Any, total: Any) -> tuple[float, float] | None:
    """The 95% Wilson interval of ``solved`` of ``total``, None where they are no rate
    (``wilson_interval``'s ``ValueError``: not whole numbers, 0 <= solved <= total, total at
    least 1)."""
    from unmask.tasks.score import wilson_interval

    try:
        return wilson_interval(solved, total)
    except ValueError:
        return None


def _distill_rows(d: dict[str, Any]) -> Rows:
    """decoding.py's tables of a distillation run, then its teacher-vs-student summary."""
    tvs = d.get("teacher_vs_student", [])
    return _section_rows(d) + [
        {"table": "teacher vs student", **r} for r in tvs if isinstance(r, dict)
    ]


def _infill_rows(d: dict[str, Any]) -> Rows:
    """infill.py's fixed-length and variable-length tables, one row per method and span."""
    return [
        {"length": kind, **r}
        for kind in ("fixed", "variable")
        for r in d.get(kind, [])
        if isinstance(r, dict)
    ]


_META = frozenset({"args", "meta", "settings", "machine"})
"""Top-level dicts that record how a file was made, not what it measured."""


def _scalar(v: Any) -> bool:
    return not isinstance(v, (list, dict))


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if _scalar(v)}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def generic_tables(d: Any, path: str = "", skip: Sequence[str] = ()) -> list[tuple[str, Rows]]:
    """Every table a JSON value holds, as ``(where, rows)``: a list of objects is a table, an
    object's scalars are a row, and an object's sub-objects are a table with a ``key`` column.
    Top-level keys in ``skip`` (and run metadata such as ``args``) are left out."""
    out: list[tuple[str, Rows]] = []
    if isinstance(d, list):
        rows = [r for r in d if isinstance(r, dict)]
        rows += [  # short tuples (a setting and its values); long ones are token ids or texts
            {str(i): x for i, x in enumerate(r)}
            for r in d
            if isinstance(r, list) and 0 < len(r) <= 8 and all(_scalar(x) for x in r)
        ]
        if any(_scalars(r) for r in rows):
            out.append((path, rows))
        for i, r in enumerate(r for r in d if isinstance(r, dict)):
            out += _children(r, f"{path}[{i}]")
    elif isinstance(d, dict):
        if not path:
            d = {
                k: v
                for k, v in d.items()
                if k not in skip and not (k in _META and isinstance(v, dict))
            }
        if _scalars(d):
            out.append((path, [_scalars(d)]))
        out += _children(d, path)
    return out


def _children(d: dict[str, Any], path: str) -> list[tuple[str, Rows]]:
    """The tables under an object's containers (its scalars are left to the caller)."""
    out: list[tuple[str, Rows]] = []
    subs = {k: v for k, v in d.items() if isinstance(v, dict)}
    keyed = [{"key": k, **_scalars(v)} for k, v in subs.items() if _scalars(v)]
    if keyed:
        out.append((path, keyed))
    for k, v in d.items():
        if isinstance(v, dict):
            out += _children(v, _join(path, k))
        elif isinstance(v, list):
            out += generic_tables(v, _join(path, k))
    return out


def _fmt(v: Any) -> str:
    if v is None:  # recorded as not applicable (a family without a bound), not missing
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return ""
    # a line break ended the row mid-cell: a sample text's "\n" left the rest of the row,
    # and every row after it, outside the table (guidance_*.json's samples)
    text = str(v).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("|", "\\|").replace("\n", "<br>")


def markdown_table(rows: Rows, columns: Sequence[str] = ()) -> list[str]:
    """Rows as a Markdown table: the given ``columns``, or every column holding scalars."""
    if not rows:
        return ["(no rows)"]
    cols = list(columns) or [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if any(not isinstance(r.get(k), (list, dict)) for r in rows if k in r)
    ]
    cols = [c for c in cols if any(c in r for r in rows)]
    out = ["| " + " | ".join(_fmt(str(c)) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    import io

    from unmask.files import atomic_write_bytes

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())  # a temp file of its own: two builds do not race


def _bar_plot(key: str, value: str, ylabel: str) -> Callable[..., str | None]:
    def plot(files: list[tuple[str, dict[str, Any]]], path: Path) -> str | None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
        labels, values = [], []
        for name, d in files:
            for r in _top_rows(d):
                if isinstance(r.get(value), (int, float)):
                    labels.append(f"{r.get(key)}" + (f" ({name})" if len(files) > 1 else ""))
                    values.append(r[value])
        if not values:
            plt.close(fig)
            return "no numeric rows to plot"
        ax.barh(labels, values)
        ax.set_xlabel(ylabel)
        ax.grid(alpha=0.3, axis="x")
        _save(fig, path)
        plt.close(fig)
        return None

    return plot


def _elbo_plot(files: list[tuple[str, dict[str, Any]]], path: Path) -> str | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for _, d in files:
        rows = _top_rows(d)
        for length in sorted({r["target_tokens"] for r in rows}):
            sub = [r for r in rows if r["target_tokens"] == length]
            ax.loglog(
                [r["n"] for r in sub],
                [r["actual_stderr"] for r in sub],
                "o-",
                label=f"{length} tokens: actual",
            )
            rep = [r for r in sub if r.get("reported_stderr")]
            ax.loglog(
                [r["n"] for r in rep],
                [r["reported_stderr"] for r in rep],
                "x--",
                label=f"{length} tokens: reported",
            )
            n0, e0 = sub[0]["n"], sub[0]["actual_stderr"]  # the 1/sqrt(n) law through the first
            ns = [r["n"] for r in sub]
            ax.loglog(ns, [e0 * (n0 / n) ** 0.5 for n in ns], ":", color="grey", label="1/√n")
    try:
        from unmask.evaluate import DEFAULT_MC_SAMPLES

        ax.axvline(DEFAULT_MC_SAMPLES, color="black", lw=0.8, alpha=0.5, label="default")
    except ImportError:  # the report is drawn without the library too
        pass
    ax.set_xlabel("Monte Carlo samples")
    ax.set_ylabel("standard error (nats)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)
    plt.close(fig)
    return None


def _planning_plot(files: list[tuple[str, dict[str, Any]]], path: Path) -> str | None:
    """A bar per row, its 95% interval as an error bar; a row without a numeric rate (or
    counts to take one from) is left out: it was drawn as 0% solved, or a rate that was text
    left the whole section without its plot. A label two rows share (the same task, model
    and steps in two files: a rerun) names each row's file: matplotlib drew them on one
    line, the later bar over the earlier one."""
    plt = _pyplot()
    labels, values, errors, names = [], [], [], []
    for name, d in files:
        for r in _planning_rows(d):
            rate = r.get("rate")
            if not isinstance(rate, int | float) or isinstance(rate, bool) or math.isnan(rate):
                if _interval(r.get("solved"), r.get("total")) is None:
                    continue
                rate = r["solved"] / r["total"]
            step = f" · step {r['steps']}" if r.get("steps") is not None else ""
            labels.append(f"{r.get('group')} · {r.get('model')}{step}")
            names.append(name)
            values.append(100 * rate)
            low, high = r.get("low"), r.get("high")
            bounded = all(isinstance(v, int | float) for v in (low, high))
            errors.append((100 * max(rate - low, 0.0), 100 * max(high - rate, 0.0))
                          if bounded else (0.0, 0.0))
    if not values:
        return "no rows to plot"
    shared = {label for label in labels if labels.count(label) > 1}
    labels = [f"{label} ({name})" if label in shared else label
              for label, name in zip(labels, names, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(values)), dpi=100)
    ax.barh(labels, values, xerr=list(zip(*errors, strict=True)), capsize=2)
    ax.set_xlim(0, 100)
    ax.set_xlabel("solved (%)")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
    plt.close(fig)
    return None


SECTIONS = [
    Section(
        "Training speed",
        "tokens per second of a training step, unmask vs plain PyTorch",
        ("train_throughput*.json",),
        "python benchmarks/train_throughput.py --json benchmarks/results/train_throughput.json",
        _top_rows,
        plot=_bar_plot("side", "tokens_per_s", "tokens / s"),
    ),
    Section(
        "Objectives",
        "equal-size models trained the same steps with each objective",
        ("objectives*.json",),
        "python benchmarks/objectives.py --json benchmarks/results/objectives.json",
        _top_rows,
        (
            "name",
            "objective",
            "params",
            "val_bpb",
            "val_ppl_bound",
            "gen_ppl",
            "gen_entropy",
            "gen_broken",
            "x_floor",
            "infill_exact_match",
            "infill_token_acc",
            "train_tokens_per_s",
        ),
        plot=_bar_plot("name", "val_bpb", "validation bits / byte"),
    ),
    Section(
        "Decoding frontier",
        "speed-up against sample quality for each policy and cache",
        ("decoding*.json",),
        "python benchmarks/decoding.py --json benchmarks/results/decoding.json",
        _section_rows,
        (
            "table",
            "policy",
            "cache",
            "gen_length",
            "nfe",
            "seconds",
            "tokens_per_s",
            "speedup",
            "gen_ppl",
            "entropy",
            "distinct_2",
            "agreement",
        ),
        shown=("sections",),
    ),
    Section(
        "Distillation",
        "a distilled student against its teacher (and the AR model) at fewer steps, "
        "with the teacher-vs-student summary last",
        ("distill_*.json",),
        "bash benchmarks/distill_scale.sh (decoding.py --student; docs/training.md)",
        _distill_rows,
        (
            "table",
            "which",
            "policy",
            "cache",
            "gen_length",
            "nfe",
            "tokens_per_s",
            "speedup",
            "x_teacher_1step",
            "x_ar",
            "tokens_per_forward",
            "keeps_quality",
            "gen_ppl",
            "entropy",
            "distinct_2",
            "agreement",
        ),
        shown=("sections", "teacher_vs_student"),
    ),
    Section(
        "Sampling defaults",
        "the settings measured to read best for the demo model",
        ("defaults*.json",),
        "python benchmarks/defaults.py --json benchmarks/results/defaults.json",
        _top_rows,
    ),
    Section(
        "Infilling",
        "gap filling: diffusion vs the AR model's fill-in-the-middle",
        ("infill*.json",),
        "python benchmarks/infill.py --json benchmarks/results/infill.json",
        _infill_rows,
        shown=("fixed", "variable"),
    ),
    Section(
        "Planning and reversal",
        "solve rate of equal-size diffusion (mdlm, or sft: the prompt never masked) and ar "
        "models on the same data and steps (Sudoku, Countdown, reversed facts), with its 95% "
        "Wilson interval (low to high); a file written since 2026-12-07 also pairs each two "
        "models on the items they share (`paired`: only_a and only_b, the items one of them "
        "alone solved; p_value, the exact McNemar test that both solve as often)",
        ("planning*.json",),
        "python benchmarks/planning.py --run mdlm=RUN --run ar=RUN --task-file DIR --json "
        "benchmarks/results/planning_TASK.json (recipes: docs/evaluation.md)",
        _planning_rows,
        ("group", "model", "objective", "solved", "total", "rate", "low", "high", "steps",
         "params", "seconds"),
        plot=_planning_plot,
    ),
    Section(
        "lm-eval on the demo models",
        "lm-evaluation-harness tasks through the model `unmask`, with model seconds per item",
        ("lm_eval_demo*.json",),
        "python benchmarks/lm_eval_demo.py --json benchmarks/results/lm_eval_demo.json",
        _top_rows,
        ("model", "task", "metric", "value", "items", "seconds_per_item"),
    ),
    Section(
        "ELBO standard error",
        "the Monte Carlo log-likelihood's error against its samples",
        ("elbo_stderr*.json",),
        "python benchmarks/elbo_stderr.py --json benchmarks/results/elbo_stderr.json",
        _top_rows,
        plot=_elbo_plot,
    ),
    Section(
        "Serving",
        "batched vs sequential HTTP throughput",
        ("serve_load*.json",),
        "python benchmarks/serve_load.py --json benchmarks/results/serve_load.json",
        _serve_rows,
        shown=("speedup",),
    ),
    Section(
        "Startup",
        "seconds until a command answers",
        ("startup*.json",),
        "python benchmarks/startup.py --json benchmarks/results/startup.json",
        _top_rows,
        ("case", "median_s", "min_s", "vs_torch"),
    ),
]
"""The report's sections, in order."""

SOURCES: list[tuple[tuple[str, ...], str]] = [
    (("blocks_*", "ngram_*", "ng3_21_*", "pen21_*", "penalties*", "twin_fimfix_*", "val22_*",
      "val23_demo_*", "val23_twin_w*"), "python benchmarks/defaults.py (or bash "
     "benchmarks/demo_defaults.sh SET: val22, pen21, ng3_21)"),
    (("val2*_distinct_matched*", "distinct_matched*"), "python benchmarks/distinct_matched.py"),
    (("block_cache*",), "python benchmarks/block_cache.py"),
    (("eos_stop*",), "python benchmarks/eos_stop.py"),
    (("stop_early*",), "python benchmarks/stop_early.py"),
    (("eval_rows*",), "python benchmarks/eval_rows.py"),
    (("latent_denoise*",), "python benchmarks/latent_denoise.py"),
    (("penalty_cost*",), "python benchmarks/penalty_cost.py"),
    (("val23_twin_eval*",), "unmask eval RUN --json > FILE"),
    (("compile_decode*",), "python benchmarks/compile_decode.py"),
    (("constraints*",), "python benchmarks/constraints.py"),
    (("data_constrained*",), "python benchmarks/data_constrained.py"),
    (("gqa_attention*",), "python benchmarks/gqa_attention.py"),
    (("guidance*",), "python benchmarks/guidance.py"),
    (("hybrid*",), "python benchmarks/hybrid.py"),
    (("large_shape*",), "python benchmarks/large_shape.py"),
    (("llada2*",), "python benchmarks/llada2.py"),
    (("precision*",), "python benchmarks/precision.py"),
    (("rounding*",), "python benchmarks/rounding.py"),
    (("sampling_baseline*",), "python benchmarks/sampling_baseline.py"),
    (("segments*",), "python benchmarks/segments.py"),
    (("speculative_batch*",), "python benchmarks/speculative_batch.py"),
    (("speculative_accept*",), "python benchmarks/speculative_accept.py"),
    (("speculative*",), "python benchmarks/speculative.py"),
    (("threads*",), "python benchmarks/threads.py"),
    (("train_*",), "python benchmarks/train_throughput.py --compare ..."),
    (("gpu_check*",), "bash benchmarks/gpu_check.sh"),
]
"""The command that writes each kind of result file the sections do not read (first match;
its settings are in the file): a number in the report names what measured it. Every script
with a ``--json`` (or ``--out``) file is here or in a section, by its default file name
(block_cache, eos_stop, eval_rows, latent_denoise, penalty_cost and distinct_matched's own
name were "no known script" until 2026-12-07, speculative_accept's "speculative.py")."""


def source_of(name: str) -> str | None:
    """The command that writes result file ``name`` (None: unknown)."""
    for patterns, command in SOURCES:
        if any(Path(name).match(p) for p in patterns):
            return command
    return None


def _section_source(sec: Section) -> str:
    """The section's command without the output path its ``Not measured yet`` line names."""
    return sec.command.split(" --json ")[0].split(" (")[0]


def _safe_rows(
    sec: Section, name: str, d: Any, notes: list[str]
) -> tuple[Rows | None, list[str]]:
    """The section's table of file ``name`` and the tables of its other numbers; a file not
    in the shape the section reads (hand-edited, torn, another script's) is shown whole as
    generic tables, with a note, instead of stopping the report (its rows None: the
    section's plot leaves it out)."""
    try:
        if not isinstance(d, dict):
            raise TypeError(f"a JSON {type(d).__name__}, not an object")
        return sec.rows(d), _extra_tables(name, d, sec.shown)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        notes.append(f"{name}: not the shape {sec.title} reads ({e}); shown whole")
        tables = generic_tables(d)
        lines: list[str] = []
        for where, rows in tables:
            label = f" `{where}`" if where else ""
            lines += [f"`{name}`{label}:", "", *markdown_table(rows), ""]
        return None, lines or [f"`{name}`:", "", "(no rows)", ""]


def build(results: Path, out: Path) -> list[str]:
    """Write the report (``out`` and its PNGs beside it); returns the notes printed."""
    files = {p.name: p for p in sorted(results.glob("*.json"))}
    used: set[str] = set()
    png_dir = out.parent / out.stem
    lines = [
        "# Benchmark report",
        "",
        f"Generated by `python benchmarks/report.py` from the {len(files)} JSON files in "
        f"`{_rel(results)}`. Each file records its own settings and machine.",
        "",
    ]
    notes: list[str] = []
    for sec in SECTIONS:
        mine = [n for n in files if any(Path(n).match(p) for p in sec.patterns)]
        used.update(mine)
        lines += [f"## {sec.title}", "", sec.claim[0].upper() + sec.claim[1:] + ".", ""]
        if not mine:
            lines += [f"Not measured yet: `{sec.command}`.", ""]
            notes.append(f"missing: {sec.title} ({sec.command})")
            continue
        loaded = []
        for name in mine:
            d, ok = _read_result(name, files[name], lines, notes)
            if ok:
                loaded.append((name, d))
        lines += [f"Measured with `{_section_source(sec)}`; each file records its settings.", ""]
        shaped = []  # the files in the section's shape: one that is not stopped the plot
        for name, d in loaded:
            rows, extra = _safe_rows(sec, name, d, notes)
            if rows is not None:
                shaped.append((name, d))
            if rows or (rows is not None and not extra):
                lines += [f"`{name}`:", "", *markdown_table(rows, sec.columns), ""]
            lines += extra
        if sec.plot is not None and loaded:
            png = png_dir / f"{Path(sec.patterns[0]).stem.rstrip('*')}.png"
            try:
                png_dir.mkdir(parents=True, exist_ok=True)
                why = sec.plot(shaped, png) if shaped else "no file in the shape it reads"
            except ImportError:
                why = "matplotlib is not installed"
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                why = f"a file's rows are not the ones it draws ({type(e).__name__}: {e})"
            if why is None:
                lines += [f"![{sec.title}]({_rel(png, out.parent)})", ""]
            else:
                notes.append(f"{sec.title}: no plot ({why})")
    rest = [n for n in files if n not in used]
    if rest:
        lines += ["## Other results", ""]
        for name in rest:
            d, ok = _read_result(name, files[name], lines, notes)
            if not ok:  # said, as in a section: nothing is lost unseen
                continue
            tables = generic_tables(d)
            source = source_of(name)
            made = f" (from `{source}`)" if source else " (no known script wrote it)"
            if not tables:
                lines += [f"`{name}`{made}:", "", "(no rows)", ""]
            for i, (where, rows) in enumerate(tables):
                label = (f" `{where}`" if where else "") + ("" if i else made)
                lines += [f"`{name}`{label}:", "", *markdown_table(rows), ""]
    from unmask.files import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)  # UTF-8 whatever the locale: it has "–", "·"
    atomic_write_text(out, "\n".join(lines).rstrip() + "\n")
    return notes


def _read_result(name: str, path: Path, lines: list[str], notes: list[str]) -> tuple[Any, bool]:
    """The JSON value of result file ``path`` (shown as ``name``) and True; or None and False
    when it cannot be read, said in ``lines`` and ``notes`` (not JSON, not UTF-8 text: a
    binary or UTF-16 file stopped the whole page with a traceback; not readable: a folder
    named ``*.json``, a file without read permission stopped it with one line and no page)."""
    from unmask.files import BadJSON, parse_json

    try:
        return parse_json(path.read_text(encoding="utf-8"), name), True
    except BadJSON as e:  # nested too deep, a 4,300-digit integer: stopped the whole page
        why = f"not valid JSON ({e.why})"
    except UnicodeDecodeError as e:
        why = f"not UTF-8 text (byte {e.start})"
    except OSError as e:
        why = f"not readable ({e.strerror or e})"
    lines += [f"`{name}`: {why}, skipped.", ""]
    notes.append(f"{name}: {why.split(' (')[0]}, skipped")
    return None, False


def _extra_tables(name: str, d: Any, shown: Sequence[str]) -> list[str]:
    """The numbers of a section's file that its table does not show."""
    if not isinstance(d, dict):
        return []
    lines: list[str] = []
    for where, rows in generic_tables(d, skip=shown):
        label = f" `{where}`" if where else " (other fields)"
        lines += [f"`{name}`{label}:", "", *markdown_table(rows), ""]
    return lines


def _rel(path: Path, start: Path = ROOT) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(ROOT / "benchmarks/results"), metavar="DIR")
    p.add_argument("--out", default=str(ROOT / "docs/report.md"), metavar="FILE")
    args = p.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        from unmask.errors import UserError

        # a file read "no such folder"
        what = "a file, not a folder of *.json results" if results.exists() else "no such folder"
        raise UserError(f"--results {results}: {what}")
    if Path(args.out).is_dir():  # was "Is a directory" naming a temp file beside it
        from unmask.errors import UserError

        raise UserError(f"--out {args.out}: a folder; give the page's file name "
                        f"({Path(args.out) / 'report.md'}, say)")
    notes = build(results, Path(args.out))
    print(f"wrote {args.out}")
    for n in notes:
        print(f"  {n}")
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
