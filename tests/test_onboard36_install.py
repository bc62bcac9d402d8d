"""``bash install.sh`` with a ``.venv`` whose Python is gone (session 36, onboard): a pyenv
version removed, a Homebrew or distribution upgrade. ``python3 -m venv .venv`` failed on it,
and install.sh deleted the user's ``.venv`` and blamed a missing python3-venv package. Now it
names the link and the fix, and deletes nothing."""

from __future__ import annotations

import shutil

import pytest
from test_front_install import run_fresh


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_a_venv_whose_python_is_gone_is_named_and_kept(tmp_path):
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    gone = tmp_path / "pyenv" / "versions" / "3.11.4" / "bin" / "python3.11"
    (venv / "python3").symlink_to(gone)
    (venv / "python").symlink_to("python3")
    (tmp_path / ".venv" / "kept").write_text("a package the user installed")
    done, called = run_fresh(tmp_path, 'case "$1" in -c) exit 0;; esac; exit 1')
    assert done.returncode == 1, done
    assert done.stderr == (f"install.sh: .venv/bin/python is a link to {gone}, which is gone "
                           "(the Python that made .venv was removed or upgraded): remove .venv "
                           "and run again\n")
    assert (tmp_path / ".venv" / "kept").is_file()
    assert not called.exists() or "-m" not in called.read_text()  # no venv made over it


@pytest.mark.skipif(shutil.which("dash") is None, reason="no dash")
def test_run_by_sh_it_says_to_run_it_with_bash(tmp_path):
    """``sh install.sh`` (dash, Debian's and Ubuntu's sh) stopped at "set: Illegal option -o
    pipefail", a line that names no fix."""
    import subprocess

    from test_front_install import ROOT

    shutil.copy(ROOT / "install.sh", tmp_path / "install.sh")
    done = subprocess.run(["dash", str(tmp_path / "install.sh")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "install.sh: run it with bash: bash install.sh\n"
    assert not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_help_prints_the_whole_header_and_no_code_comment(tmp_path):
    """``--help`` prints a fixed range of lines: the header, to its last line."""
    from test_front_install import run_install

    done, _ = run_install(tmp_path, "--help")
    assert done.stdout.endswith("which downloads a browser from outside PyPI and Debian).\n")
    assert "dash" not in done.stdout and "#" not in done.stdout


def _fake_env_python(tmp_path, torch_version: str):
    """install.sh from a copy in ``tmp_path``, inside an active virtualenv whose ``python`` is
    a Python 3.11 with pip and torch ``torch_version`` (it records pip's arguments)."""
    import os
    import subprocess

    from test_front_install import ROOT

    shutil.copy(ROOT / "install.sh", tmp_path / "install.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "called"
    fake = bin_dir / "python"
    fake.write_text(f"""#!/bin/sh
case "$*" in
  *version_info*) exit 0 ;;
  "-m pip"*) echo "$@" >> {called}; exit 0 ;;
  *print*) echo "{torch_version}"; exit 0 ;;
  *re.match*) exec python3 -c "$2" ;;
  *"import torch"*) exit 0 ;;
esac
exit 1
""")
    (bin_dir / "torch.py").write_text(f"__version__ = {torch_version!r}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "VIRTUAL_ENV": str(tmp_path), "PYTHONPATH": str(bin_dir)}
    env.pop("CONDA_PREFIX", None)
    done = subprocess.run(["bash", str(tmp_path / "install.sh")], capture_output=True,
                          text=True, env=env, timeout=60)
    return done, called.read_text() if called.exists() else ""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("python3") is None,
                    reason="no bash or python3")
def test_a_torch_older_than_2_1_is_named_not_replaced_by_whatever_pip_finds(tmp_path):
    """install.sh "keeps a PyTorch you already have", but one older than pyproject's
    torch>=2.1 (a CUDA 2.0 image, say) was replaced by pip with the build it found (on Linux,
    PyPI's CUDA one), silently."""
    done, pip = _fake_env_python(tmp_path, "2.0.1+cu118")
    assert done.returncode == 1, done
    assert done.stderr.endswith(
        "install.sh: torch 2.0.1+cu118 is older than unmask needs (2.1): upgrade it first (pip "
        "install 'torch>=2.1' --index-url https://download.pytorch.org/whl/cu118; where that "
        "index has no torch 2.1, the index of a newer CUDA or ROCm that your driver runs: "
        "https://pytorch.org/get-started/locally), then run again\n"), done.stderr
    assert "-e" not in pip.split() and "torch" not in pip  # nothing installed over it


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("python3") is None,
                    reason="no bash or python3")
@pytest.mark.parametrize(("version", "how"), [
    ("2.0.1+cpu", "pip install 'torch>=2.1' --index-url https://download.pytorch.org/whl/cpu)"),
    ("2.0.1+rocm5.4.2", "pip install 'torch>=2.1' --index-url "
                        "https://download.pytorch.org/whl/rocm5.4.2; where that index has no "
                        "torch 2.1, the index of a newer CUDA or ROCm"),
    ("1.13.1", "pip install 'torch>=2.1', with the --index-url it was installed from, if any: "
               "https://pytorch.org/get-started/locally)"),
    ("1.13.0a0+git49444c3", "pip install 'torch>=2.1', with the --index-url it was installed "
                            "from, if any: "),
])
def test_the_upgrade_advice_names_the_index_of_the_build_installed(tmp_path, version, how):
    """The advice named the CUDA 12.1 index for every build: followed as written, it swapped
    a CPU or ROCm build for a CUDA one, the very swap the refusal is there to prevent."""
    done, pip = _fake_env_python(tmp_path, version)
    assert done.returncode == 1, done
    assert f"install.sh: torch {version} is older than unmask needs (2.1): upgrade it first " \
           f"({how}" in done.stderr, done.stderr
    assert "cu121" not in done.stderr and "torch" not in pip


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("python3") is None,
                    reason="no bash or python3")
def test_a_torch_of_2_1_or_newer_is_kept(tmp_path):
    done, pip = _fake_env_python(tmp_path, "2.5.1+cu121")
    assert "torch" not in pip and "install -q -e .[serve]" in pip, (done, pip)
