"""The Python the user docs show runs as written, and the signatures they print are the
code's.

* Signature blocks (a fenced ``python`` block of lines ``name(params) -> Type``, such as
  ``generate(model, prompt_ids, config, *, mask_id, ...) -> GenerateResult``) name the
  parameters the function has, in its order, with its defaults; ``...`` stands for
  parameters left out.
* The library examples of README.md, docs/sampling.md, docs/infill.md, docs/evaluation.md
  and docs/data.md, and docs/training.md's objective registration, run in a fresh folder:
  the README's block prepares a small corpus and trains a tiny model (its sizes shrunk),
  which the other blocks load in place of ``demo`` and ``runs/mine``. Each substitution
  must find its text, so an example that changes fails here with the snippet named,
  rather than silently running something else.

* Every relative link of the repository's markdown files (README.md, docs/, benchmarks/,
  the demo's TRAINING.md, ...) names a file that exists, and its ``#anchor`` a heading of
  that file (GitHub's slugs), so a renamed section or moved file breaks no link.
* Every measurement file the docs cite (``benchmarks/results/NAME.json``, brace lists and
  ``*`` expanded) is in the repository, so the numbers quoted can be checked against it,
  and so is every source file and test the docs name (``tests/test_x.py::test_name``), and
  every dotted name (``unmask.sampling.penalties.Penalties``) imports or resolves.

docs/serving.md and docs/architecture.md have their own tests (test_server_docs.py,
test_decoders.py).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import random
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
SIGNATURE = re.compile(r"^(\w+)\((.*)\)(?:\s*->\s*[\w\[\], |.]+)?$", re.S)
# Where the documented names live, searched in order.
MODULES = ("unmask.sampling", "unmask.infill", "unmask.api", "unmask.evaluate", "unmask.data")
# Parameters the code has for its own use, which the docs rightly leave out.
INTERNAL = {"Gap": {"source"}}


def blocks(doc: str, language: str = "python") -> list[str]:
    return [code for lang, code in FENCE.findall((ROOT / doc).read_text()) if lang == language]


def signatures(code: str) -> list[str] | None:
    """The signatures of a block made of nothing else (each may span lines; a class's has no
    ``-> Type``, but one of the block's must), else None."""
    items: list[str] = []
    for line in code.splitlines():
        if not line.strip():
            continue
        if line[0].isspace() and items:
            items[-1] += " " + line.strip()
        else:
            items.append(line.strip())
    if not items or not all(SIGNATURE.match(s) for s in items):
        return None
    return items if any("->" in s for s in items) else None


def documented(signature: str) -> tuple[str, list[tuple[str, object]], bool]:
    """(name, [(parameter, default or inspect.Parameter.empty)], whether ``...`` leaves some
    out) of one documented signature."""
    name, params = SIGNATURE.match(signature).groups()
    partial = bool(re.search(r"(^|,)\s*\.\.\.\s*(,|$)", params))
    params = re.sub(r"(^|,)\s*\.\.\.\s*(?=,|$)", "", params).strip(", ")
    tree = ast.parse(f"def {name}({params}): pass").body[0].args
    plain = tree.posonlyargs + tree.args
    defaults = [inspect.Parameter.empty] * (len(plain) - len(tree.defaults)) + [
        ast.literal_eval(d) for d in tree.defaults]  # fmt: skip
    out = [(a.arg, d) for a, d in zip(plain, defaults, strict=True)]
    for a, d in zip(tree.kwonlyargs, tree.kw_defaults, strict=True):
        out.append((a.arg, inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    return name, out, partial


def find(name: str):
    for module in MODULES:
        obj = getattr(importlib.import_module(module), name, None)
        if obj is not None:
            return obj
    raise AssertionError(f"{name} is documented but is in none of {', '.join(MODULES)}")


DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SIGNATURE_BLOCKS = [(doc, s) for doc in DOCS for code in blocks(doc)
                    for s in (signatures(code) or [])]  # fmt: skip


def test_signature_blocks_were_found():
    names = {documented(s)[0] for _, s in SIGNATURE_BLOCKS}
    assert {"generate", "sample", "sample_blocks", "generate_ar", "infill", "Gap",
            "fill_middle", "fill_middle_ids"} <= names  # fmt: skip


@pytest.mark.parametrize(("doc", "signature"), SIGNATURE_BLOCKS,
                         ids=[s.split("(")[0] for _, s in SIGNATURE_BLOCKS])  # fmt: skip
def test_documented_signature_is_the_code(doc, signature):
    name, params, partial = documented(signature)
    real = inspect.signature(find(name)).parameters
    have = [p for p in real if p not in INTERNAL.get(name, ())]
    names = [p for p, _ in params]
    if partial:
        it = iter(have)
        assert all(p in it for p in names), f"{doc}: {name}{tuple(names)} vs the code's {have}"
    else:
        assert names == have, f"{doc}: {name} documents {names}, the code has {have}"
    for p, default in params:
        assert real[p].default == default, (
            f"{doc}: {name}({p}=...) documents {default!r}, the code's default is "
            f"{real[p].default!r}")


def block(doc: str, needle: str) -> str:
    found = [code for code in blocks(doc) if needle in code]
    assert len(found) == 1, f"{doc}: {len(found)} python blocks hold {needle!r}"
    return found[0]


def edited(code: str, where: str, *subs: tuple[str, str]) -> str:
    for old, new in subs:
        assert old in code, f"{where}: the example no longer holds {old!r}; update this test"
        code = code.replace(old, new)
    return code


def run(code: str, where: str, **names) -> dict:
    scope = {"__name__": "docs", **names}
    exec(compile(code, where, "exec"), scope)
    return scope


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder where the README's Python block has run: data/mine prepared from my_corpus.txt
    and runs/mine trained (a tiny model, 2 steps, a 256-token context)."""
    folder = tmp_path_factory.mktemp("docs-snippets")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(3000)]  # fmt: skip
    text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(2500))
    (folder / "my_corpus.txt").write_text(text + "\n")
    (folder / "corpus").mkdir()
    (folder / "corpus" / "a.txt").write_text(text + "\n")
    code = edited(block("README.md", "unmask.train("), "README.md",
                  ('preset="demo", steps=2000',
                   'preset="tiny", steps=2, batch_size=2, seq_len=256, eval_batches=1'))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        scope = run(code, "README.md")
    assert scope["out"].nfe >= 1 and isinstance(scope["out"].texts[0], str)
    return folder


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    return workdir


def as_run(code: str) -> str:
    """The shipped model's name replaced by the tiny run (tests never load the demo)."""
    return code.replace('"demo"', '"runs/mine"')


def test_sampling_library_examples(in_workdir):
    code = block("docs/sampling.md", "api.start(")
    scope = run(as_run(code), "docs/sampling.md")
    assert scope["run"].done and scope["out"].ids is not None
    code = block("docs/sampling.md", "result = generate(loaded.model")
    scope = run(as_run(code), "docs/sampling.md")
    assert scope["result"].nfe >= 1


def test_infill_library_examples(in_workdir):
    scope = run(as_run(block("docs/infill.md", "Gap(name=")), "docs/infill.md")
    assert len(scope["r"].gaps) == 2
    import unmask

    m = unmask.load("runs/mine")
    text = "Alice met Bob in Paris on day 12."
    scope = run(block("docs/infill.md", "revise("), "docs/infill.md",
                model=m.model, tok=m.tokenizer, text=text)  # fmt: skip
    assert scope["p"].shape == (len(m.tokenizer.encode(text)),)
    scope = run(block("docs/infill.md", "fill_form(model, tok"), "docs/infill.md",
                model=m.model, tok=m.tokenizer)  # fmt: skip
    r, tok = scope["r"], m.tokenizer
    assert set(r.value) == {"name", "age"} and tok.decode(r.tokens) == r.text


def test_evaluation_library_examples(in_workdir):
    scope = run(block("docs/evaluation.md", "evaluate_loss("), "docs/evaluation.md")
    assert scope["r"].n_tokens > 0
    import unmask
    from unmask import api

    m = unmask.load("runs/mine")
    out = api.generate(m, ["Once upon a time", "The"], config={"gen_length": 8})
    code = block("docs/evaluation.md", "unigram_entropy([")
    run(code, "docs/evaluation.md", result=out.result, eos_id=m.model.config.eos_id,
        texts=out.texts)  # fmt: skip


def test_data_library_example(in_workdir, monkeypatch):
    own = in_workdir / "own"  # the example writes data/, where the README's data/mine is
    (own / "corpus").mkdir(parents=True)
    shutil.copy(in_workdir / "corpus" / "a.txt", own / "corpus" / "a.txt")
    monkeypatch.chdir(own)
    code = edited(block("docs/data.md", "TokenDataset("), "docs/data.md",
                  ("    ...", "    assert window.shape[1] == 128"))
    scope = run(code, "docs/data.md")
    assert tuple(scope["batch"].shape) == (32, 128)


FENCED = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
SKIPPED = {".git", ".venv", "node_modules", "runs"}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: links reduced to their text, lower case, punctuation
    other than ``-`` and ``_`` dropped, spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown text: its headings' slugs (a repeated one numbered -1, -2,
    as GitHub does) and explicit ``<a name=...>`` / ``<a id=...>``."""
    seen: dict[str, int] = {}
    out = set(re.findall(r'<a (?:name|id)="([^"]+)"', text))
    for heading in HEADING.findall(FENCED.sub("", text)):
        s = slug(heading)
        out.add(f"{s}-{seen[s]}" if s in seen else s)
        seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(root: Path) -> list[str]:
    """``file: link`` for every relative link under ``root`` whose file or anchor is missing
    (links inside fenced code blocks and to URLs are not checked)."""
    bad = []
    for doc in sorted(root.rglob("*.md")):
        if SKIPPED & set(doc.relative_to(root).parts):
            continue
        for url in LINK.findall(FENCED.sub("", doc.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", url):
                continue
            path, _, anchor = url.partition("#")
            target = (doc.parent / path) if path else doc
            if not target.exists():
                bad.append(f"{doc.relative_to(root)}: {url} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
                bad.append(f"{doc.relative_to(root)}: {url} (no such heading)")
    return bad


def test_link_checker_sees_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# Precision (`--dtype`)\n## Same\n## Same\n```\n[x](gone.md)\n```\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#precision---dtype) [ok](docs/a.md#same-1) [web](https://x.org/y)\n"
        "[file](docs/gone.md) [heading](docs/a.md#precision) [self](#nowhere)\n# Top\n")
    assert broken_links(tmp_path) == [
        "README.md: docs/gone.md (no such file)",
        "README.md: docs/a.md#precision (no such heading)",
        "README.md: #nowhere (no such heading)"]


def test_relative_links_and_anchors_resolve():
    assert broken_links(ROOT) == []


CITED = re.compile(r"(--json\s+)?(benchmarks/results/[\w{},.*/-]+?\.(?:jsonl|json|png|md|log))"
                   r"(`?\)?\s+has not been recorded)?")


def expand(path: str) -> list[str]:
    """A cited path's brace list expanded (``a_{x,y}.json`` -> ``a_x.json``, ``a_y.json``)."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [full for alt in m.group(1).split(",")
            for full in expand(path[:m.start()] + alt + path[m.end():])]  # fmt: skip


def missing_results(root: Path, docs: list[str]) -> list[str]:
    """``doc: path`` for each measurement file a doc cites that is not under ``root`` (a path
    given to ``--json`` in a command, or said to be not recorded yet, is no citation)."""
    bad = []
    for doc in docs:
        for json_flag, cited, unrecorded in CITED.findall((root / doc).read_text()):
            if json_flag or unrecorded:
                continue
            bad += [f"{doc}: {path}" for path in expand(cited)
                    if not any(root.glob(path))]  # fmt: skip
    return bad


def test_result_citation_checker(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("a_x.json", "a_y.json", "b.jsonl"):
        (tmp_path / "benchmarks" / "results" / name).write_text("{}")
    (tmp_path / "d.md").write_text(
        "(`benchmarks/results/a_{x,y}.json`, `benchmarks/results/b.jsonl`,\n"
        "benchmarks/results/a_*.json) --json benchmarks/results/new.json;\n"
        "`benchmarks/results/c.json` has not been recorded yet; benchmarks/results/a_{y,z}.json")
    assert missing_results(tmp_path, ["d.md"]) == ["d.md: benchmarks/results/a_z.json"]


def test_cited_result_files_exist():
    docs = [*DOCS, "src/unmask/assets/demo/TRAINING.md",
            *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("*.md"))]
    assert missing_results(ROOT, docs) == []


CODE_PATH = re.compile(r"(Save it as `)?\b((?:src/unmask|tests|benchmarks)/[\w{},/.-]+?\.(?:py|sh))"
                       r"(?:::(\w+))?")


def missing_code(root: Path, docs: list[str]) -> list[str]:
    """``doc: path`` for each source file, script or test (``path::name``: a function or
    class of it) a doc names that the repository lacks (a file the reader is told to create,
    ``Save it as `...```, excepted)."""
    bad = []
    for doc in docs:
        for to_create, cited, name in CODE_PATH.findall((root / doc).read_text()):
            for path in [] if to_create else expand(cited):
                if not (root / path).is_file():
                    bad.append(f"{doc}: {path}")
                elif name and not re.search(rf"^\s*(?:async )?(?:def|class) {name}\b",
                                            (root / path).read_text(), re.M):
                    bad.append(f"{doc}: {path}::{name}")
    return bad


def test_code_citation_checker(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_one():\n    pass\n")
    (tmp_path / "d.md").write_text(
        "`tests/test_a.py::test_one`, tests/test_a.py::test_two, tests/test_{a,b}.py;\n"
        "Save it as `src/unmask/sampling/new.py`, then src/unmask/gone.py.")
    assert missing_code(tmp_path, ["d.md"]) == [
        "d.md: tests/test_a.py::test_two", "d.md: tests/test_b.py", "d.md: src/unmask/gone.py"]


def test_cited_code_exists():
    docs = [*DOCS, "src/unmask/assets/demo/TRAINING.md"]
    assert missing_code(ROOT, docs) == []


DOTTED = re.compile(r"\bunmask(?:\.[a-z_]\w*)+")
# Dotted names that are no module or attribute: a logger's name.
NOT_CODE = {"unmask.server.access"}


def unresolved(name: str) -> bool:
    """Whether ``name`` (``unmask.a.b.C``) is neither a module nor an attribute of the longest
    module it starts with."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("unmask"):
                pytest.skip(f"{name} needs {e.name}, not installed")
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return True
            obj = getattr(obj, attr)
        return False
    return True


def test_dotted_names_in_docs_resolve():
    docs = [*DOCS, "src/unmask/assets/demo/TRAINING.md"]
    named = {(doc, n) for doc in docs for n in DOTTED.findall((ROOT / doc).read_text())}
    assert len(named) > 100
    assert unresolved("unmask.sampling.no_such_thing") and unresolved("unmask.nothing")
    bad = sorted(f"{doc}: {n}" for doc, n in named if n not in NOT_CODE and unresolved(n))
    assert bad == []


def test_training_register_objective_example(in_workdir):
    """The objective the example registers trains and decodes (its registration is undone,
    so the other tests see the built-in objectives only)."""
    import unmask
    from unmask.config import TrainConfig
    from unmask.objectives import OBJECTIVES

    code = block("docs/training.md", "register_objective(")
    name = re.search(r'name="([^"]+)"', code).group(1)
    assert name not in OBJECTIVES
    try:
        run(code, "docs/training.md")
        out = unmask.train(TrainConfig(data="data/mine", out="runs/custom", objective=name,
                                       steps=1, batch_size=2, seq_len=32, eval_batches=1))
        loaded = unmask.load(out)
        assert unmask.api.generate(loaded, "a", config={"gen_length": 4}).decoder == "llada"
    finally:
        OBJECTIVES.pop(name, None)


def test_readme_thread_speedup_is_the_recorded_one():
    """README's "At 91M parameters two threads were N× faster" is the base preset's row of
    benchmarks/results/threads_cpu.json, which docs/sampling.md tabulates (it read 1.17×
    against the file's 1.15)."""
    import json

    readme = " ".join((ROOT / "README.md").read_text().split())
    said = re.search(r"At 91M parameters two threads were ([\d.]+)× faster", readme)
    assert said, "README.md no longer quotes the 91M thread speed-up; update this test"
    rows = json.loads((ROOT / "benchmarks/results/threads_cpu.json").read_text())["rows"]
    base = next(r for r in rows if r["preset"] == "base" and r["threads"] == 2)
    assert round(base["params"] / 1e6) == 91
    assert said.group(1) == f"{base['vs_first']:.2f}"
