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


def test_atomic_write_text_writes_utf8_under_an_ascii_locale(tmp_path):
    src = str(Path(unmask.__file__).resolve().parents[1])
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0",
           "PYTHONUTF8": "0", "PYTHONPATH": src}
    out = tmp_path / "t.txt"
    run = subprocess.run([sys.executable, "-X", "utf8=0", "-c", CODE, str(out)], env=env,
                         capture_output=True, text=True, encoding="utf-8", timeout=120)
    encoding = run.stdout.split("\n", 1)[0].strip().lower().replace("-", "")
    if encoding in ("utf8", ""):
        pytest.skip(f"this platform keeps UTF-8 under LC_ALL=C ({run.stderr.strip()[-200:]})")
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == "caf\u00e9 \u20ac \U0001f600\n".encode()
    assert not list(tmp_path.glob(".t.txt.*"))  # no temporary file left
