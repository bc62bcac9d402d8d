"""The shipped assets of a zipped install are cached whole, by their top entry (``demo``):
asking for a file inside it first no longer leaves a ``demo`` holding that file alone, which
every later process took for the whole model; a copy missing a file is made again, and a
rebuilt zip's copy replaces the old one's."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import unmask

PACKAGE = Path(unmask.__file__).parent
PROBE = (
    "import os, sys; sys.path.insert(0, sys.argv[1]); import unmask\n"
    "assert unmask.__file__.startswith(sys.argv[1]), unmask.__file__\n"
    "from unmask.files import asset_path\n"
    "for name in sys.argv[2:]:\n"
    "    print(asset_path(name))\n"
)


@pytest.fixture(scope="module")
def zipped(tmp_path_factory) -> Path:
    if not (PACKAGE / "assets" / "demo" / "model.safetensors").is_file():
        pytest.skip("demo checkpoint not bundled")
    path = tmp_path_factory.mktemp("zip") / "unmask.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(PACKAGE.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                z.write(f, f.relative_to(PACKAGE.parent).as_posix())
    return path


def _ask(zipped: Path, cache: Path, *names: str) -> list[Path]:
    """``asset_path`` of each name, in a new process importing unmask from ``zipped``."""
    env = {"PATH": "/usr/bin:/bin", "UNMASK_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(zipped), *names],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return [Path(line) for line in done.stdout.splitlines()]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_file_asked_for_first_caches_its_whole_folder(zipped, tmp_path):
    cache = tmp_path / "cache"
    [tokenizer] = _ask(zipped, cache, "demo/tokenizer.json")
    [demo] = _ask(zipped, cache, "demo")
    assert tokenizer == demo / "tokenizer.json" and tokenizer.is_file()
    assert _files(demo) == _files(PACKAGE / "assets" / "demo")  # not tokenizer.json alone


def test_a_copy_missing_a_file_is_made_again(zipped, tmp_path):
    """A part copied alone by an older unmask, or a file the user deleted from the cache."""
    cache = tmp_path / "cache"
    [demo] = _ask(zipped, cache, "demo")
    for f in demo.iterdir():
        if f.name != "tokenizer.json":
            f.unlink()
    assert _ask(zipped, cache, "demo") == [demo]
    assert _files(demo) == _files(PACKAGE / "assets" / "demo")
    assert [p.name for p in demo.parent.iterdir()] == ["demo"]  # nothing set aside left


def test_a_rebuilt_zip_replaces_the_old_copy(zipped, tmp_path):
    cache = tmp_path / "cache"
    rebuilt = tmp_path / "zip" / zipped.name  # the same path for both zips
    rebuilt.parent.mkdir()
    rebuilt.write_bytes(zipped.read_bytes())
    [old] = _ask(rebuilt, cache, "demo")
    with zipfile.ZipFile(rebuilt, "a") as z:  # other assets
        z.writestr("unmask/assets/NOTES.txt", "a new asset\n")
    [new] = _ask(rebuilt, cache, "demo")
    assert new != old and _files(new) == _files(PACKAGE / "assets" / "demo")
    assert list((cache / "assets").iterdir()) == [new.parent]  # 11 MB a rebuild, kept before


def test_a_touched_zip_keeps_its_copy(zipped, tmp_path):
    """Keyed by modification time, a touched (or re-copied) zip of the same assets got a new
    copy, and the old one, which a live process of the zip may be reading, was removed."""
    cache = tmp_path / "cache"
    touched = tmp_path / "zip" / zipped.name
    touched.parent.mkdir()
    touched.write_bytes(zipped.read_bytes())
    [old] = _ask(touched, cache, "demo")
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _ask(touched, cache, "demo") == [old] and old.is_dir()


def test_a_process_never_removes_a_copy_it_uses(zipped, tmp_path):
    """A process that asked for one asset, whose zip then changed, and asks for another: the
    new version's copy does not remove the folder of the first one it still uses."""
    cache = tmp_path / "cache"
    changing = tmp_path / "zip" / zipped.name
    changing.parent.mkdir()
    changing.write_bytes(zipped.read_bytes())
    probe = (
        "import sys, zipfile; sys.path.insert(0, sys.argv[1]); import unmask\n"
        "from unmask.files import asset_path\n"
        "demo = asset_path('demo')\n"
        "with zipfile.ZipFile(sys.argv[1], 'a') as z:\n"
        "    z.writestr('unmask/assets/NOTES.txt', 'new')\n"
        "import importlib, zipimport; zipimport._zip_directory_cache.clear()\n"
        "asset_path('web-bible.txt.gz')\n"
        "print(demo.is_dir())\n"
    )
    env = {"PATH": "/usr/bin:/bin", "UNMASK_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", probe, str(changing)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
