"""Requests' checks run in pool threads: a first import of ``outlines_core`` there raced
another thread's (``outlines_core.json_schema`` is a name the package's ``__init__``
registers last, so ``from outlines_core.json_schema import ...`` in a second thread found the
package half initialised: ModuleNotFoundError, a 500). The schema's import now waits for the
package, and the app imports it once when it is created, before any request thread.

A stand-in ``outlines_core`` package (its layout as 0.2's: the alias registered last) whose
``__init__`` waits on a gate makes the race deterministic: one thread is inside its
``__init__`` while another compiles a schema."""

from __future__ import annotations

import importlib
import sys
import threading
import types

import pytest

pytest.importorskip("outlines_core")

from unmask.infill.schema import schema_regex  # noqa: E402

INIT = """\
import sys

import _unmask_race_gate as gate

from . import _json_schema as json_schema

gate.started.set()
gate.release.wait(30)
sys.modules["outlines_core.json_schema"] = json_schema
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """The stand-in package first on ``sys.path``, the real one out of ``sys.modules`` (and
    back afterwards); returns the gate (``started``, ``release``)."""
    import outlines_core  # noqa: F401  (every real module in sys.modules, to be restored)

    pkg = tmp_path / "outlines_core"
    pkg.mkdir()
    (pkg / "_json_schema.py").write_text(
        "def build_regex_from_schema(text, whitespace):\n    return 'stand-in'\n")
    (pkg / "__init__.py").write_text(INIT)
    gate = types.ModuleType("_unmask_race_gate")
    gate.started, gate.release = threading.Event(), threading.Event()
    monkeypatch.setitem(sys.modules, "_unmask_race_gate", gate)
    real = {k: v for k, v in sys.modules.items()
            if k == "outlines_core" or k.startswith("outlines_core.")}
    for name in real:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield gate
    finally:
        gate.release.set()
        for name in [k for k in sys.modules
                     if k == "outlines_core" or k.startswith("outlines_core.")]:
            del sys.modules[name]
        sys.modules.update(real)


def test_a_schema_compiled_while_another_thread_imports_outlines_core_waits_for_it(stand_in):
    first = threading.Thread(target=importlib.import_module, args=("outlines_core",))
    first.start()
    assert stand_in.started.wait(30)  # the first thread is inside the package's __init__
    got: list[object] = []

    def compile_schema() -> None:
        try:
            got.append(schema_regex({"type": "boolean"}))
        except Exception as e:  # noqa: BLE001 - the failure under test
            got.append(e)

    second = threading.Thread(target=compile_schema)
    second.start()
    second.join(0.5)  # the old import failed at once; the fixed one waits for the package
    stand_in.release.set()
    first.join(30)
    second.join(30)
    assert got == ["stand-in"], got


def test_create_app_imports_outlines_core_before_any_request_thread(stand_in):
    from server_helpers import Echo, loaded, tiny_config

    from unmask.server import create_app

    stand_in.release.set()
    assert "outlines_core" not in sys.modules
    create_app(loaded(Echo(tiny_config())), access_log=False)
    assert sys.modules["outlines_core"].json_schema.build_regex_from_schema("", "") == "stand-in"
    assert "outlines_core.json_schema" in sys.modules
