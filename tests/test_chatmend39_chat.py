"""Chat templates from a pipe through the command line: ``unmask chat`` and ``generate --chat``
with ``--template <(...)``. The pre-torch check (``check_template_given``) leaves a pipe to
the run, which reads it once; a check that read it emptied it ("failed to render: it renders a
user message without its text"), and no test went through the command line to see it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
JINJA = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
         "{% if add_generation_prompt %}assistant:{% endif %}")


def _bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash (for ``<(...)``) with this checkout's ``unmask`` as ``$UNMASK``."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1",
           "UNMASK": f"{sys.executable} -m unmask", **env}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL)


needs_bash_pipes = pytest.mark.skipif(shutil.which("bash") is None or not os.path.isdir("/dev/fd"),
                                      reason="no bash process substitution here")


@needs_bash_pipes
def test_chat_reads_a_template_from_a_pipe_on_the_command_line():
    done = _bash('printf "hi\\n" | $UNMASK chat --model demo --gen-length 4 --show-prompt '
                 '--template <(printf %s "$J")', J=JINJA)
    assert done.returncode == 0, done.stderr
    assert "user: hi\nassistant:" in done.stdout + done.stderr


@needs_bash_pipes
def test_generate_chat_reads_a_template_from_a_pipe_on_the_command_line():
    done = _bash('$UNMASK generate --model demo --chat --gen-length 4 --json '
                 '--template <(printf %s "$J") hi', J=JINJA)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_tokens"] == 4
