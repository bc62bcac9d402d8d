"""``import unmask`` as a library user does it: light (no torch, no optional dependency until
a name that needs one is used), and every public name visible to ``dir`` (tab completion)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "numpy", "safetensors", "tokenizers", "jinja2", "fastapi", "uvicorn",
         "transformers", "torchao", "lm_eval")  # fmt: skip


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout  # fmt: skip
    return eval(out.strip().splitlines()[-1])


def test_import_unmask_and_its_configs_load_no_heavy_dependency():
    code = ("import unmask, unmask.api\n"
            "unmask.TrainConfig, unmask.ModelConfig, unmask.SampleConfig, unmask.UserError\n"
            "unmask.api.sample_config, unmask.api.GENERATION_ONLY")  # fmt: skip
    assert _loaded_after(code) == []


def test_a_lazy_name_loads_its_module_on_first_use():
    assert "torch" in _loaded_after("import unmask\nunmask.load")


def test_dir_lists_every_public_name():
    import unmask

    assert set(unmask.__all__) <= set(dir(unmask))
    for name in unmask.__all__:
        assert getattr(unmask, name) is not None


def test_unmask_api_exports_every_public_function_and_class():
    """``from unmask.api import *`` missed ``sample_config``, which the README's example calls,
    and ``context_limit``."""
    import inspect

    from unmask import api

    public = {n for n, o in vars(api).items() if not n.startswith("_")
              and (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == api.__name__}
    assert public <= set(api.__all__), sorted(public - set(api.__all__))
