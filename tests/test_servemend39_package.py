"""Session 39 (servemend): ``unmask.server`` loads its names on first use, so that ``unmask
serve`` checks its flags against ``ServerLimits`` (``unmask.server.limits``) before torch and
FastAPI load; every name it lists still imports from it."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, sys
import unmask.server as server
light = sorted(m for m in ("torch", "fastapi", "pydantic") if m in sys.modules)
names = {}
exec("from unmask.server import *", names)
lazy = sorted(getattr(server, "_LAZY", ()))  # () where the package imports at once
print(json.dumps({"light": light, "all": sorted(server.__all__), "lazy": lazy,
                  "star": sorted(n for n in names if not n.startswith("__")),
                  "limits": names["ServerLimits"].__module__}))
"""


def test_the_server_package_imports_light_and_lists_every_name_it_loads():
    """``import unmask.server`` imported torch and FastAPI (5-7 s, before a flag was checked);
    ``__all__`` (the literal list that ruff and type checkers read) names exactly the names it
    loads on first use, each of which imports."""
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=True)
    seen = json.loads(done.stdout)
    assert seen["light"] == []
    assert seen["all"] == seen["lazy"] == seen["star"]
    assert {"Engine", "ServerLimits", "create_app", "make_engine"} <= set(seen["all"])
    assert seen["limits"] == "unmask.server.limits"
