"""Atomic file writes, shared by every layer that writes a result (configs, checkpoints,
converted folders): a reader never sees a half-written file or folder.

Inside: ``file_mode`` (what the umask gives a new file), ``atomic_write_text`` and
``atomic_write_bytes`` (temporary file + rename), ``staging_dir`` (a folder to fill
before renaming it into place); ``asset_path``, a file shipped in ``unmask/assets``.

It sits at the bottom of the import graph (standard library only), so ``config``,
``checkpoint`` and ``convert`` all use it without importing each other.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would outlive the rename
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def staging_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder in ``parent`` to write into before a rename; unlike ``mkdtemp``'s 0700
    it gets the permissions of an ordinary ``mkdir`` (the umask's), since it becomes the result."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def check_creatable(path: Path) -> None:
    """A one-line ``UserError`` when ``path`` cannot be created: its nearest existing parent is
    not a folder this process may write into (checked before the work that would write it)."""
    from unmask.errors import UserError

    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot be written ({parent} is not a writable folder)")


def read_user_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of a file the user named (a prompt file, a template, a gap set); a
    one-line ``UserError`` that says why when it is missing, a folder, unreadable or not
    UTF-8 (``what`` names the kind of file in the message)."""
    from unmask.errors import UserError

    if path.is_dir():
        raise UserError(f"{path}: a folder, not a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (save it as UTF-8)") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None


__all__ = ["atomic_write_bytes", "atomic_write_text", "check_creatable", "file_mode",
           "read_user_text", "staging_dir"]


def asset_path(name: str) -> Path:
    """The path of ``name`` in the package's ``assets`` folder (the demo model, its corpus)."""
    from importlib import resources

    return Path(str(resources.files("unmask") / "assets" / name))

