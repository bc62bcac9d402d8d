"""``unmask.files.atomic_write_text`` (config JSON, gap sets, reports, metrics rewrites)
wrote in the locale's encoding while every reader reads UTF-8: under an ASCII locale
(``LC_ALL=C`` without UTF-8 mode) a non-ASCII text was a ``UnicodeEncodeError``, under
Latin-1 bytes no reader decoded. It writes UTF-8 whatever the locale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import unmask

CODE = """
import locale, sys
from pathlib import Path
from unmask.files import atomic_write_text
print(locale.getpreferredencoding(False))
atomic_write_text(Path(sys.argv[1]), "caf\\u00e9 \\u20ac \\U0001f600\\n")
"""


EXPORT = """
import locale, sys
import torch
from unmask.checkpoint import save_checkpoint
from unmask.config import model_preset
from unmask.convert.write import export
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer
print(locale.getpreferredencoding(False))
tok = byte_tokenizer()
cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
run = save_checkpoint(sys.argv[1] + "/run", model=Transformer(cfg), tokenizer=tok)
export(run, sys.argv[1] + "/hf", family="transformers")
"""


def _ascii_locale(code: str, arg: str) -> subprocess.CompletedProcess:
    """``code`` run with ``arg`` under the C locale without UTF-8 mode (ASCII); skipped where
    the platform keeps UTF-8 there."""
    src = str(Path(unmask.__file__).resolve().parents[1])
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0",
           "PYTHONUTF8": "0", "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code, arg], env=env,
                         capture_output=True, text=True, encoding="utf-8", timeout=300)
    encoding = run.stdout.split("\n", 1)[0].strip().lower().replace("-", "")
    if encoding in ("utf8", ""):
        pytest.skip(f"this platform keeps UTF-8 under LC_ALL=C ({run.stderr.strip()[-200:]})")
    assert run.returncode == 0, run.stderr
    return run


def test_atomic_write_text_writes_utf8_under_an_ascii_locale(tmp_path):
    out = tmp_path / "t.txt"
    _ascii_locale(CODE, str(out))
    assert out.read_bytes() == "caf\u00e9 \u20ac \U0001f600\n".encode()
    assert not list(tmp_path.glob(".t.txt.*"))  # no temporary file left


def test_export_writes_its_modeling_code_as_utf8_under_an_ascii_locale(tmp_path):
    """``export(family="transformers")`` wrote its modeling code (non-ASCII comments) in the
    locale's encoding: a ``UnicodeEncodeError`` under ASCII, after the weights were written."""
    from unmask.convert.hf_export import template_text

    _ascii_locale(EXPORT, str(tmp_path))
    code = (tmp_path / "hf" / "modeling_unmask.py").read_text(encoding="utf-8")
    assert code == template_text("modeling_unmask.py") and not code.isascii()
