"""Constraint engines side by side: the hand-written regex → DFA → token automaton path
(``git show REV:src/unmask/infill/{dfa,regex,automaton}.py``, loaded from the repository's
history) vs the outlines-core-backed one, plus validity and quality of JSON Schema forms.

Tables:

1. *engine*: compile time (regex to token automaton, cold caches; split into the library's
   parts and our conversion; what a second process pays with the on-disk cache; the
   hand-written engine left out with ``--old-rev none``) and per-step constraint
   cost (``TokenAutomaton.allowed`` for a 24-position gap with every other position
   committed, the call ``GapConstraint`` makes each step) for a regex, a flat schema and a
   nested schema, on the demo tokenizer (4,096 tokens) and a synthetic byte-level
   vocabulary of 126,000 tokens (built here from a seeded generator: the 256 bytes, then
   ASCII words with and without a leading space, numbers, punctuation runs and UTF-8
   characters), with new ÷ old ratios. Each schema is compiled as one regex (the
   library's ``build_regex_from_schema``; for the old engine rewritten to its subset:
   ``(?:`` → ``(``, string characters excluding ASCII controls only). A second library
   compile of the same key is served from the per-(schema, tokenizer) cache: the
   ``cached`` column.
2. *validity*: ``--forms`` forms (default 1,000) from 20 schemas filled by a tiny random
   model (validity holds by construction, whatever the model), checked with ``jsonschema``.
3. *quality*: exact-field accuracy on ``--quality-n`` forms (default 100) built from the
   demo corpus's validation split ("X the son of Y", "X king of Y", "the children of X";
   fields as enums of the names each pattern matches, the text up to the end of that line
   as the prompt): the shipped demo model (diffusion, one pass) vs the equal-size AR twin
   (``--ar-model``, left to right under the same automata: ``fill_form`` on a causal
   model), when its checkpoint exists; the most common answer per field as a floor.

    nice -n 10 python benchmarks/constraints.py [--json benchmarks/results/constraints.json]
    python benchmarks/constraints.py --quick   # does it run?
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import output_path, positive_int, write_results

from unmask.config import SampleConfig, model_preset
from unmask.infill import automaton as new_automaton
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.infill.schema import fill_schema, schema_regex
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
OLD_REV = "bb6e470"
"""The last commit with the hand-written engine."""

REGEX = r"[A-Z][a-z]{2,8} [0-9]{1,3}:[0-9]{1,3}"
FLAT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"},
        "ok": {"type": "boolean"},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
    },
    "required": ["name", "age", "ok", "city"],
}
NESTED = {
    "type": "object",
    "properties": {
        "book": {"type": "string", "maxLength": 10},
        "ref": {
            "type": "object",
            "properties": {"chapter": {"type": "integer"}, "verse": {"type": "integer"}},
            "required": ["chapter", "verse"],
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
    },
    "required": ["book", "ref", "tags"],
}


# -- the old engine, from history --------------------------------------------------------------


def _source_at(rev: str, path: str, flag: str) -> str:
    """The text of ``path`` at commit ``rev`` of this checkout (``git show``); a
    ``UserError`` naming ``flag`` where git cannot give it (an unknown commit, a shallow
    clone, no git, no .git)."""
    from unmask.errors import UserError

    try:
        r = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
                           capture_output=True, text=True)  # fmt: skip
    except OSError as e:
        why = f"cannot run git ({e.strerror})"
        raise UserError(f"{flag} {rev}: {why} ({flag} none skips it)") from None
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise UserError(f"{flag} {rev}: {why} ({flag} none skips it)")
    return r.stdout


def old_engine(rev: str) -> Any:
    """The old ``regex``/``dfa``/``automaton`` modules as a package ``_old_infill``."""
    sources = {name: _source_at(rev, f"src/unmask/infill/{name}.py", "--old-rev")
               for name in ("dfa", "regex", "automaton")}  # fmt: skip
    tmp = Path(tempfile.mkdtemp()) / "_old_infill"
    tmp.mkdir()
    (tmp / "__init__.py").write_text("")
    for name, src in sources.items():
        (tmp / f"{name}.py").write_text(src.replace("unmask.infill.", "_old_infill."))
    sys.path.insert(0, str(tmp.parent))
    spec = importlib.util.find_spec("_old_infill")
    assert spec is not None
    import _old_infill.automaton as auto  # type: ignore[import-not-found]
    import _old_infill.regex as rx  # type: ignore[import-not-found]

    return auto, rx


def old_subset(regex: str) -> str:
    """A library schema regex in the old engine's subset (same language on ASCII text)."""
    return regex.replace("(?:", "(").replace(r"\x7F-\x9F", r"\x7F")


# -- a 126k-token byte-level vocabulary --------------------------------------------------------


class SyntheticTokenizer:
    """``vocab_size`` tokens: the 256 bytes, then seeded pieces, as byte-level BPE has."""

    def __init__(self, size: int = 126_000, seed: int = 0) -> None:
        rng = random.Random(seed)
        pieces: list[bytes] = [bytes([b]) for b in range(256)]
        seen = set(pieces)
        letters = "abcdefghijklmnopqrstuvwxyz"
        while len(pieces) < size:
            r = rng.random()
            if r < 0.7:
                w = "".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
                w = w.capitalize() if rng.random() < 0.2 else w
                p = (" " + w if rng.random() < 0.6 else w).encode()
            elif r < 0.8:
                p = str(rng.randint(0, 99999)).encode()
            elif r < 0.9:
                p = "".join(
                    rng.choice(' .,:;"{}[]-_/!?()') for _ in range(rng.randint(2, 4))
                ).encode()
            else:
                p = "".join(
                    chr(rng.randint(0xA0, 0x2FFF)) for _ in range(rng.randint(1, 2))
                ).encode()
            if p not in seen:
                seen.add(p)
                pieces.append(p)
        self.pieces = pieces
        self.vocab_size = len(pieces)

    def token_bytes(self, i: int) -> bytes:
        return self.pieces[i]

    def is_special(self, i: int) -> bool:
        return False


# -- table 1 ---------------------------------------------------------------------------------


def per_step(automaton: Any, n: int = 24, calls: int = 5) -> float:
    """Seconds per ``allowed`` call on a gap of ``n`` positions (or the shortest feasible length
    above), every other one committed
    (from a completion of the automaton's own), as a denoising step sees it."""
    lengths = np.nonzero(automaton.feasible_lengths(4 * n))[0]
    longer = lengths[lengths >= n]
    n = int(longer.min()) if len(longer) else int(lengths.max()) if len(lengths) else n
    full = automaton.complete([None] * n)
    if full is None:
        return float("nan")
    seq = [t if i % 2 else None for i, t in enumerate(full)]
    t0 = time.perf_counter()
    for _ in range(calls):
        automaton.allowed(seq)
    return (time.perf_counter() - t0) / calls


def convert_module(rev: str) -> Any:
    """``unmask.infill.automaton`` as it was at ``rev`` (its conversion of the library's
    transitions, to time against today's on the same map)."""
    src = _source_at(rev, "src/unmask/infill/automaton.py", "--convert-rev")
    path = Path(tempfile.mkdtemp()) / "_convert_then.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("_convert_then", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_convert_then"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def engine_rows(
    tokenizers: dict[str, Any], old: Any | None, then: Any | None = None
) -> list[dict[str, Any]]:
    """Table 1. ``old`` None (``--old-rev none``): the hand-written engine is left out.

    The library-backed compile is split into its parts, timed apart: ``vocab_s`` (our
    ``Vocab`` of the tokenizer, per process), ``lib_vocab_s`` (the ``outlines_core``
    vocabulary), ``index_s`` (``outlines_core.Index``: the library's own compile),
    ``transitions_s`` (``Index.get_transitions``, the library's map as Python dicts) and
    ``convert_s`` (ours: token classes, the table, minimisation). ``disk_s``: what a second
    process pays for the same automaton once the first has compiled it (the on-disk cache
    of ``unmask.infill.automaton``, in a fresh temporary folder; without that cache, a full
    compile again)."""
    import os

    os.environ[new_automaton.__dict__.get("CACHE_ENV", "UNMASK_CACHE_DIR")] = tempfile.mkdtemp()
    cases = {
        "regex": REGEX,
        "flat schema": schema_regex(FLAT),
        "nested schema": schema_regex(NESTED),
    }
    rows = []
    for tname, tok in tokenizers.items():
        for cname, regex in cases.items():
            row: dict[str, Any] = {"tokenizer": tname, "V": tok.vocab_size, "case": cname}
            if old is not None:
                old_auto, old_rx = old
                old_vocab = old_auto.vocab_of(tok)
                t0 = time.perf_counter()
                try:
                    a_old = old_auto.TokenAutomaton.from_dfa(
                        old_rx.compile_regex(old_subset(regex)), old_vocab
                    )
                    row["old_compile_s"] = time.perf_counter() - t0
                    row["old_step_s"] = per_step(a_old)
                    row["old_states"] = int(a_old.table.shape[0])
                except Exception as e:  # noqa: BLE001 - the table says why
                    row["old_error"] = str(e)[:80]
            new_automaton._VOCABS.clear()
            t0 = time.perf_counter()
            vocab = vocab_of(tok)
            row["vocab_s"] = time.perf_counter() - t0
            # The parts, timed apart (a compile of their own).
            new_automaton._OUTLINES_VOCABS.clear()
            t0 = time.perf_counter()
            new_automaton.outlines_vocabulary(vocab)
            row["lib_vocab_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            index = new_automaton._index(regex, vocab, "bench")
            row["index_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            moves = index.get_transitions()
            row["transitions_s"] = time.perf_counter() - t0
            finals = set(index.get_final_states())
            accept = [q for q, m in moves.items() if m.get(vocab.size + 1) in finals]
            t0 = time.perf_counter()
            TokenAutomaton.from_transitions(moves, index.get_initial_state(), accept, vocab.size)
            row["convert_s"] = time.perf_counter() - t0
            if then is not None:  # the same conversion as of --convert-rev, same map
                t0 = time.perf_counter()
                then.TokenAutomaton.from_transitions(
                    moves, index.get_initial_state(), accept, vocab.size
                )
                row["convert_then_s"] = time.perf_counter() - t0
            del index, moves
            # The whole compile, cold (no vocabulary, no cache entry).
            new_automaton._OUTLINES_VOCABS.clear()
            t0 = time.perf_counter()
            a_new = new_automaton.cached_automaton(
                tok, ("bench", regex), lambda r=regex, v=vocab: TokenAutomaton.from_regex(r, v)
            )
            row["new_compile_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            new_automaton.cached_automaton(tok, ("bench", regex), lambda: None)
            row["cached_s"] = time.perf_counter() - t0
            new_automaton._OUTLINES_VOCABS.clear()  # a second process
            t0 = time.perf_counter()
            TokenAutomaton.from_regex(regex, vocab)
            row["disk_s"] = time.perf_counter() - t0
            row["new_step_s"] = per_step(a_new)
            row["new_states"] = int(a_new.table.shape[0])
            if "old_compile_s" in row:
                row["compile_ratio"] = row["new_compile_s"] / row["old_compile_s"]
                row["step_ratio"] = row["new_step_s"] / row["old_step_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# -- table 2 ---------------------------------------------------------------------------------


def schemas_20() -> list[dict[str, Any]]:
    """20 schemas over every enforced keyword."""
    s: list[dict[str, Any]] = []
    for lo, hi in [(0, 9), (-50, 50), (1, 366), (1900, 2100)]:
        s.append({"type": "integer", "minimum": lo, "maximum": hi})
    s.append({"type": "number", "minimum": 0, "maximum": 1})
    s.append({"type": "number", "exclusiveMinimum": -3.5, "exclusiveMaximum": 2.5})
    s.append({"type": "string", "minLength": 2, "maxLength": 6})
    s.append({"type": "string", "pattern": "[A-Z]{2}[0-9]{2}"})
    for fmt in ("date", "time", "date-time", "email", "uuid", "uri"):
        s.append({"type": "string", "format": fmt})
    s.append({"enum": ["red", "green", 3, None]})
    s.append({"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"const": "x"}}})
    s.append(
        {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 5},
            "minItems": 1,
            "maxItems": 3,
        }
    )
    s.append(
        {
            "type": "object",
            "properties": {
                "p": {
                    "type": "object",
                    "properties": {"q": {"anyOf": [{"type": "null"}, {"type": "integer"}]}},
                },
                "r": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2},
            },
        }
    )
    s.append(FLAT)
    s.append(NESTED)
    assert len(s) == 20
    return s


def validity(n_forms: int) -> dict[str, Any]:
    import jsonschema

    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256)).eval()
    schemas = schemas_20()
    valid = parsed = 0
    t0 = time.perf_counter()
    for k in range(n_forms):
        schema = schemas[k % len(schemas)]
        r = fill_schema(
            model, tok, schema, SampleConfig(steps=2, seed=k, temperature=1.0), max_value_tokens=24
        )
        value = json.loads(r.text)
        parsed += 1
        errors = list(
            jsonschema.Draft202012Validator(
                schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            ).iter_errors(value)
        )
        valid += not errors
    return {
        "forms": n_forms,
        "schemas": len(schemas),
        "parsed": parsed,
        "valid": valid,
        "seconds": time.perf_counter() - t0,
    }


# -- table 3 ---------------------------------------------------------------------------------


KINDS = {
    "son": (r"([A-Z][a-z]+) the son of ([A-Z][a-z]+)", ("person", "father")),
    "king": (r"([A-Z][a-z]+) king of ([A-Z][a-z]+)", ("king", "land")),
    "children": (r"the children of ([A-Z][a-z]+)", ("ancestor",)),
}
"""Typed fields read from the demo corpus: a pattern and the field each of its groups fills."""


def quality_set(tok: Any, n: int, data: Path) -> list[dict[str, Any]]:
    """Up to ``n`` items from the held-out split of the demo corpus (``data``: ``unmask
    prepare``'s directory), every match of "X the son of Y", then "X king of Y", then "the
    children of X": the prompt is the text up to the end of that line (so the fields are read
    from the context), the schema an object whose fields are enums of the names that pattern
    matches anywhere in the split, the truth the names of this match."""
    val = np.memmap(data / "val-00000.bin", dtype=np.uint16, mode="r")
    text = load_tokenizer(data / "tokenizer.json").decode(val.tolist())
    items: list[dict[str, Any]] = []
    for kind, (pattern, fields) in KINDS.items():
        hits = list(re.finditer(pattern, text))
        names = {f: sorted({m.group(i + 1) for m in hits}) for i, f in enumerate(fields)}
        schema = {
            "type": "object",
            "properties": {f: {"enum": names[f]} for f in fields},
            "required": list(fields),
        }
        for m in hits:
            end = text.find("\n", m.end())
            context = text[max(0, m.start() - 200) : end if end >= 0 else m.end()]
            last = len(fields)
            before = text[max(0, m.start() - 200) : m.start(last)].rstrip(" ")
            items.append(
                {
                    "kind": kind,
                    "ids": tok.encode(context + "\n")[-96:],
                    "schema": schema,
                    "truth": {f: m.group(i + 1) for i, f in enumerate(fields)},
                    # The cloze: the text up to the last field, which is one of its names.
                    "cloze_ids": tok.encode(before)[-96:],
                    "cloze_field": fields[-1],
                    "cloze_names": names[fields[-1]],
                }
            )
    return items[:n]


def quality(
    n: int, ar_path: Path | None, data: Path, forms: tuple[str, ...] = ("json", "cloze")
) -> dict[str, Any]:
    """Exact-field accuracy: the shipped demo model (diffusion, one pass, 4 steps, greedy),
    the AR twin (left to right under the same automata, greedy: ``unmask.infill.fill_form``
    on a causal model) and the most common answer per kind and field (a floor).

    ``forms``: ``json``, the fields as a JSON object after the context line (a format
    neither model saw in training); ``cloze``, the corpus's own words: the text up to the
    last field (``... the son of``), the field a choice of its names (each after a space)."""
    from unmask.checkpoint import load
    from unmask.commands.demo import asset_path
    from unmask.infill.forms import fill_form
    from unmask.infill.schema import schema_form

    demo = load(asset_path("demo"))
    tok = demo.tokenizer
    items = quality_set(tok, n, data)
    out: dict[str, Any] = {"items": len(items), "fields": sum(len(x["truth"]) for x in items)}
    out["kinds"] = dict(Counter(x["kind"] for x in items))
    models = {"diffusion (demo, 4 steps)": demo}
    if ar_path is not None and (ar_path / "config.json").exists():
        models["ar twin (left to right)"] = load(ar_path)
        out["ar_checkpoint"] = str(ar_path)
    else:
        out["ar"] = f"no checkpoint at {ar_path} yet"
    preds: dict[str, list[dict[str, Any]]] = {}
    common = {
        (x["kind"], f): Counter(y["truth"][f] for y in items if y["kind"] == x["kind"]).most_common(
            1
        )[0][0]
        for x in items
        for f in x["truth"]
    }
    preds["most common"] = [{f: common[(x["kind"], f)] for f in x["truth"]} for x in items]
    config = SampleConfig(steps=4, temperature=0.0)
    for name, loaded in models.items():
        if "json" not in forms:
            break
        t0 = time.perf_counter()
        preds[name] = [
            fill_form(
                loaded.model,
                loaded.tokenizer,
                schema_form(x["schema"], loaded.tokenizer),
                config,
                prefix_ids=x["ids"],
            ).value
            for x in items
        ]
        out[f"{name} seconds"] = time.perf_counter() - t0
    if "json" in forms:
        out["accuracy"] = _accuracy(preds, items)
    if "cloze" in forms:
        out["cloze"] = _cloze(models, items, config)
    return out


def _cloze(models: dict[str, Any], items: list[dict[str, Any]], config: Any) -> dict[str, Any]:
    """The cloze variant of ``quality``: one field per item, in the corpus's own words."""
    from unmask.infill.forms import fill_form
    from unmask.infill.schema import constraint_form

    truth = [x["truth"][x["cloze_field"]] for x in items]
    common = {
        k: Counter(t for t, x in zip(truth, items, strict=True) if x["kind"] == k).most_common(1)
        for k in {x["kind"] for x in items}
    }
    preds = {"most common": [common[x["kind"]][0][0] for x in items]}
    out: dict[str, Any] = {"items": len(items)}
    for name, loaded in models.items():
        t0 = time.perf_counter()
        got = []
        for x in items:
            form, parse = constraint_form(
                loaded.tokenizer, choice=[" " + c for c in x["cloze_names"]], source="cloze"
            )
            res = fill_form(
                loaded.model,
                loaded.tokenizer,
                form,
                config,
                prefix_ids=x["cloze_ids"],
                parse=parse,
            )
            got.append(res.value.strip())
        preds[name] = got
        out[f"{name} seconds"] = time.perf_counter() - t0
    out["accuracy"] = {
        name: sum(p == t for p, t in zip(ps, truth, strict=True)) / max(len(truth), 1)
        for name, ps in preds.items()
    }
    return out


def _accuracy(preds: dict[str, list[Any]], items: list[dict[str, Any]]) -> dict[str, Any]:
    table = {}
    for name, ps in preds.items():
        right = [p[f] == x["truth"][f] for p, x in zip(ps, items, strict=True) for f in x["truth"]]
        whole = [p == x["truth"] for p, x in zip(ps, items, strict=True)]
        table[name] = {
            "field_accuracy": sum(right) / max(len(right), 1),
            "item_accuracy": sum(whole) / max(len(whole), 1),
        }
    return table


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=output_path, default=None)
    ap.add_argument("--forms", type=positive_int, default=1000)
    ap.add_argument("--quality-n", type=positive_int, default=100)
    ap.add_argument("--ar-model", type=Path, default=ROOT / "runs" / "ar-fim" / "checkpoint",
                    help="AR-FIM checkpoint of the quality rows (default: runs/ar-fim/checkpoint "
                    "of this checkout; left out when absent)")  # fmt: skip
    ap.add_argument(
        "--old-rev", default=OLD_REV, help="commit of the hand-written engine; 'none' skips it"
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data" / "bible",
        help="the prepared demo corpus (its validation split; default: data/bible of this "
        "checkout)",
    )
    ap.add_argument(
        "--quality-forms", nargs="+", default=["json", "cloze"], choices=["json", "cloze"]
    )
    ap.add_argument(
        "--convert-rev",
        default="9f3ba57",
        help="commit whose conversion of the library's transitions is timed beside today's "
        "('none' skips it)",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], choices=["engine", "validity", "quality"])
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from unmask.commands.demo import asset_path

    demo_tok = load_tokenizer(asset_path("demo") / "tokenizer.json")
    result: dict[str, Any] = {}
    if "engine" not in args.skip:
        toks = {"demo": demo_tok}
        if not args.quick:
            toks["synthetic 126k"] = SyntheticTokenizer()
        old = None if args.old_rev == "none" else old_engine(args.old_rev)
        then = None if args.convert_rev == "none" else convert_module(args.convert_rev)
        result["engine"] = engine_rows(toks, old, then)
    if "validity" not in args.skip:
        result["validity"] = validity(20 if args.quick else args.forms)
        print(json.dumps(result["validity"]), flush=True)
    if "quality" not in args.skip:
        result["quality"] = quality(
            4 if args.quick else args.quality_n,
            args.ar_model,
            args.data,
            tuple(args.quality_forms),
        )
        print(json.dumps(result["quality"]), flush=True)
    print_tables(result)
    if args.json:
        write_results(args.json, result, indent=2)
    return 0


def _f(x: Any, unit: str = "") -> str:
    return "-" if x is None else (f"{x:.3g}{unit}" if isinstance(x, float) else str(x))


def print_tables(result: dict[str, Any]) -> None:
    if "engine" in result:
        print(
            "\n| tokenizer | case | old compile | new compile | our Vocab | library vocabulary | "
            "library Index | get_transitions | our conversion | conversion then | "
            "in-process cache | "
            "2nd process (disk) | old step | new step | states old/new |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["engine"]:
            print(
                f"| {r['tokenizer']} | {r['case']} | {_f(r.get('old_compile_s'), ' s')} | "
                f"{_f(r['new_compile_s'], ' s')} | {_f(r.get('vocab_s'), ' s')} | "
                f"{_f(r.get('lib_vocab_s'), ' s')} | {_f(r.get('index_s'), ' s')} | "
                f"{_f(r.get('transitions_s'), ' s')} | {_f(r.get('convert_s'), ' s')} | "
                f"{_f(r.get('convert_then_s'), ' s')} | "
                f"{_f(r['cached_s'], ' s')} | {_f(r.get('disk_s'), ' s')} | "
                f"{_f(r.get('old_step_s'), ' s')} | {_f(r['new_step_s'], ' s')} | "
                f"{r.get('old_states', r.get('old_error', '-'))}/{r['new_states']} |"
            )
    if "validity" in result:
        v = result["validity"]
        print(
            f"\nvalidity: {v['valid']}/{v['forms']} valid ({v['schemas']} schemas), "
            f"{v['parsed']} parsed, {v['seconds']:.0f} s"
        )
    if "quality" in result:
        q = result["quality"]
        print(f"\nquality: {q['items']} forms, {q['fields']} fields {q['kinds']}")
        print("| answers | exact-field accuracy | exact-form accuracy | seconds |")
        print("|---|---|---|---|")
        for name, acc in q.get("accuracy", {}).items():
            print(
                f"| {name} | {acc['field_accuracy']:.3f} | {acc['item_accuracy']:.3f} | "
                f"{_f(q.get(f'{name} seconds'))} |"
            )

        if "cloze" in q:
            c = q["cloze"]
            print(f"\ncloze: {c['items']} fields in the corpus's words")
            print("| answers | exact-field accuracy | seconds |")
            print("|---|---|---|")
            for name, acc in c["accuracy"].items():
                print(f"| {name} | {acc:.3f} | {_f(c.get(f'{name} seconds'))} |")


if __name__ == "__main__":
    from _common import run

    run(main)
