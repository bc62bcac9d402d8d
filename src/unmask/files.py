"""Atomic file writes, shared by every layer that writes a result (configs, checkpoints,
converted folders): a reader never sees a half-written file or folder.

Inside: ``file_mode`` (what the umask gives a new file), ``set_mode`` (a chmod where the file
system keeps modes), ``named`` (an ``OSError`` naming the file it failed on),
``atomic_write_text`` and ``atomic_write_bytes`` (temporary file + rename, a replaced file's
permissions and owner kept; through a symlink, in place to a device: ``write_target``),
``staging_dir`` (a folder to fill before renaming it into place), ``write_safetensors``
(tensors streamed to a file),
``read_user_text`` (a file the user named, with one-line errors), ``text_lines`` (its
lines as a file holds them), ``parse_json`` (JSON text
read from a file, every parser failure a one-line ``BadJSON`` naming the file and line),
``read_json`` (a JSON object, with its one-line errors), ``file_digest`` (a file's SHA-256);
``nearest_present`` and ``not_a_folder`` (whether a folder can be made at a path, told
before the work);
``plain_name`` (a file name with no folder part, as an index lists its files);
``json_line`` (one line of a JSON Lines log, strict JSON: a non-finite number written as null)
and ``as_number`` (such a number read back, old logs' bare NaN too); ``asset_path``, a file
shipped in ``unmask/assets``.

It sits at the bottom of the import graph (the standard library and ``unmask.errors``; torch
only inside ``write_safetensors``), so ``config``, ``checkpoint`` and ``convert`` all use it
without importing each other.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from unmask.errors import UserError

if TYPE_CHECKING:
    import torch


def file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def named(error: OSError, path: str | os.PathLike[str]) -> OSError:
    """``error`` naming ``path`` when it names no file: a write to an open file that fails (a
    full disk: ENOSPC, a file-size limit: EFBIG) says only "No space left on device", and the
    command's one line then did not say which file (``unmask.cli`` prints the name)."""
    if error.filename is not None:
        return error
    return OSError(error.errno, error.strerror or str(error), str(path))


def set_mode(path: str | os.PathLike[str], mode: int, fd: int | None = None) -> None:
    """Give the file at ``path`` (open as ``fd``, when given) the permissions ``mode``, where
    its file system keeps them: FAT and exFAT (a USB stick, an SD card) and some network
    mounts refuse a mode they cannot hold (EPERM, ENOTSUP), and a write there failed with
    "Operation not permitted" after the work was done; the file then has the mode its file
    system gives it. ``os.fchmod`` is missing on Windows before Python 3.13: every atomic
    write (configs, checkpoints' JSON) failed there with an AttributeError."""
    import errno

    try:
        if fd is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:
            os.chmod(path, mode)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def _replaced(path: Path) -> os.stat_result | None:
    """The ``stat`` of the regular file ``path`` that an atomic write replaces, whose
    permissions and owner the new file keeps (``_keep``), as writing it in place does; None
    where there is none, or where it is another user's in a shared sticky folder (/tmp) and
    the kernel would not trust it (``_trusted``, as ``fs.protected_regular`` refuses opening
    it): a file planted there ahead of time (0666, another user's) made root's result that
    user's, and anyone's result writable by everyone."""
    import stat

    try:  # (not followed: a link ``write_target`` did not follow is replaced, not its target)
        found = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode) or not _trusted(found.st_uid, path.parent):
        return None
    return found


def _keep(fd: int, tmp: str, old: os.stat_result | None) -> None:
    """Give the new file ``fd`` (at ``tmp``) the read/write/execute bits of the file it
    replaces (``old``), else an ordinary new file's (``file_mode``; mkstemp's 0600 would
    outlive the rename), and ``old``'s owner and group where this process may (root, or a
    group it is in). A replacement got the umask's mode and this process's owner: a file
    made private (``chmod 600``) became readable by everyone, a script lost its ``x``, and a
    user's file that root (``sudo``) rewrote was root's. The mode is set first, while this
    process owns the file: a root without CAP_FOWNER (a hardened container) may give a file
    away but not chmod another's, and ``set_mode`` took that EPERM for a file system that
    keeps no modes, leaving mkstemp's 0600."""
    set_mode(tmp, file_mode() if old is None else old.st_mode & 0o777, fd)
    if old is not None and hasattr(os, "fchown") and (old.st_uid, old.st_gid) != (
            os.geteuid(), os.getegid()):
        try:
            os.fchown(fd, old.st_uid, old.st_gid)
        except OSError:  # not root: the owner stays this user's
            try:
                os.fchown(fd, -1, old.st_gid)
            except OSError:
                pass


def write_target(path: Path) -> tuple[Path, bool]:
    """(the file that writing ``path`` replaces, whether it is written in place): a path
    that is there but is no regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is written
    in place, since a rename would replace the device node; a symlink's target is replaced in
    its own folder, so that the link stays a link, where the kernel would follow the link
    (``_may_follow``: in a shared sticky folder such as /tmp only a link of this user or of
    the folder's owner, as ``fs.protected_symlinks``; a rename skips that check, so another
    user's planted link is replaced, not followed); a loop of links is "written in place",
    so that the write fails as ``open`` does (Too many levels of symbolic links), where the
    rename replaced the user's link with a file; a link to a file this process has open
    (``/dev/stdout`` is ``/proc/self/fd/1``: ``> log.txt``) is that open file, written in
    place through its descriptor (``_own_descriptor``), where the rename replaced ``log.txt``
    and what the command printed before and after was lost (with ``>>``, the whole log); else
    ``path`` itself."""
    given = path
    for _ in range(40):  # the kernel's limit on links in a row
        if _own_descriptor(path) is not None:
            return path, True
        if not (os.path.islink(path) and _may_follow(path)):
            break
        path = path.parent / os.readlink(path)
    else:
        return path, True  # a loop (a -> b -> a): opened, the kernel's ELOOP names it
    if os.path.exists(given) and not os.path.isfile(given):
        return given, True
    return path, False


def _own_descriptor(path: Path) -> int | None:
    """N when ``path`` is ``/proc/self/fd/N`` or ``/dev/fd/N`` of this process (what
    ``/dev/stdout``, ``/dev/stderr`` and a shell's ``<(...)``/``>(...)`` name): its open file
    descriptor, written through directly; else None. A descriptor of a named regular file
    open only for reading (``3< h.json``), or for reading and writing other than stdout and
    stderr (``3<> out.json``), is None too: the file it names is replaced, as the shell's
    ``> /dev/fd/3`` does, where writing the descriptor was "Bad file descriptor", or wrote
    where it pointed without cutting the file (a shorter result left old bytes after it).
    Stdout and stderr are always written through (a parent that captures them in a file it
    opened ``w+`` reads the result in order, not at a name it no longer reads)."""
    if not path.name.isdigit():
        return None
    if os.path.realpath(path.parent) not in (f"/proc/{os.getpid()}/fd", "/dev/fd"):
        return None
    fd = int(path.name)
    try:
        import fcntl

        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        if (mode == os.O_RDONLY or mode == os.O_RDWR and fd > 2) and _named_file(fd):
            return None
    except (ImportError, OSError):  # closed: the write names it (Bad file descriptor)
        pass
    return fd


def _named_file(fd: int) -> bool:
    """Whether the open descriptor ``fd`` is a regular file that still has a name (its
    ``/proc`` link a path to write): a pipe (``--json /dev/stdin`` from one: the result lost,
    or a hang past 64 KB), a deleted file (a new file named ``... (deleted)``) or a memfd is
    not, and its write says "Bad file descriptor"."""
    import stat

    try:
        found = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and found.st_nlink > 0


def _write_descriptor(fd: int, data: bytes) -> None:
    """``data`` written to the open descriptor ``fd`` after what Python's ``sys.stdout`` and
    ``sys.stderr`` hold, so the output stays in the order it was made: both, whichever ``fd``
    is (``--json /dev/stderr > log 2>&1``: the two descriptors are one file)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, its pipe gone, no flush
            pass
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _may_follow(link: Path) -> bool:
    """Whether the kernel's ``protected_symlinks`` lets this process follow ``link``
    (``_trusted``)."""
    try:
        own = os.lstat(link).st_uid
    except OSError:
        return False
    return _trusted(own, link.parent)


def _trusted(owner: int, folder: Path) -> bool:
    """Whether an entry of ``folder`` that belongs to ``owner`` is trusted as the kernel's
    ``protected_symlinks`` and ``protected_regular`` do: always, unless the folder is
    world-writable and sticky (/tmp) and ``owner`` is neither this user nor the folder's
    owner."""
    import stat

    try:
        found = os.stat(folder)
    except OSError:
        return False
    shared = found.st_mode & stat.S_ISVTX and found.st_mode & stat.S_IWOTH
    uid = os.geteuid() if hasattr(os, "geteuid") else owner
    return not shared or owner in (uid, found.st_uid)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8 via a temporary file in the same folder and a
    rename; a failed write (a full disk) raises ``OSError`` naming ``path``, which stays as it
    was. UTF-8 whatever the locale (every reader here reads UTF-8): under a narrower locale
    encoding a non-ASCII text was a ``UnicodeEncodeError`` (ASCII) or bytes no reader
    decoded (Latin-1). A symlink is written through (its final target replaced, the link
    kept), and a path that is there but is no regular file (``/dev/null``, ``/dev/stdout``,
    a FIFO) is written in place: a rename would replace the link, or the device node, with a
    regular file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename (a
    failed write raises ``OSError`` naming ``path``; links and special files as
    ``atomic_write_text``). A file replaced keeps its permissions and, where this process
    may, its owner (``_keep``); a new one gets the umask's mode (``file_mode``)."""
    given = Path(path)
    path, in_place = write_target(given)
    if in_place:
        try:
            fd = _own_descriptor(path)
            if fd is not None:
                _write_descriptor(fd, data)
                return
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise named(e, given) from None
        return
    old = _replaced(path)
    try:  # the temp's name holds at most 48 characters of the file's: a name near the 255
        fd, tmp = tempfile.mkstemp(  # bytes a name may have was "File name too long"
            dir=path.parent, prefix=f".{path.name[:48]}.", suffix=".tmp")
    except OSError as e:  # (a missing folder: named by the file asked for, not the temp)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            _keep(f.fileno(), tmp, old)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise named(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def staging_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder in ``parent`` to write into before a rename; unlike ``mkdtemp``'s 0700
    it gets the permissions of an ordinary ``mkdir`` (the umask's), since it becomes the result."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    umask = os.umask(0)
    os.umask(umask)
    set_mode(tmp, 0o777 & ~umask)
    return tmp


def staging_prefix(out: Path, pid: int | None = None, *, host: str | None = None,
                   space: str | None = None) -> str:
    """The name a staging folder for ``out`` starts with (``unmask convert``, ``unmask
    prepare``): hidden, and naming the machine, the process-id namespace (containers sharing a
    host name and a volume number processes apart) and the process that writes it, so a later
    write can tell a dead one's leftovers from a live one's (``stale_staging``)."""
    return f".{out.name}.tmp-{host or _host()}-{space or _pid_space()}-{pid or os.getpid()}-"


def stale_staging(out: Path) -> list[Path]:
    """The staging folders beside ``out`` (``staging_prefix``) whose process is gone: left by
    a write that was killed (SIGKILL, the out-of-memory killer: nothing ran its cleanup). A
    live process's, or one of another machine or container sharing the file system (another
    host name or PID namespace: its process ids are not ours to ask about), and anything that
    is not a real folder are not listed."""
    import glob

    here = (_host(), _pid_space())
    found = []
    for tmp in sorted(out.parent.glob(f".{glob.escape(out.name)}.tmp-*")):
        parts = tmp.name[len(f".{out.name}.tmp-"):].split("-")
        if len(parts) != 4 or tuple(parts[:2]) != here or not parts[2].isdigit():
            continue
        if tmp.is_symlink() or not tmp.is_dir() or _alive(int(parts[2])):
            continue
        found.append(tmp)
    return found


def clear_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders of writes to ``out`` whose process is gone (a convert or an
    asset copy killed by SIGKILL or the out-of-memory killer leaves one beside ``out``, as big
    as what it wrote); returns them (``stale_staging``: a live process's, another machine's or
    container's are left alone)."""
    import shutil

    removed = stale_staging(out)
    for tmp in removed:
        shutil.rmtree(tmp, ignore_errors=True)
    return removed


def _host() -> str:
    import socket

    return socket.gethostname().replace("-", "_")


def _pid_space() -> str:
    """This process's PID namespace (Linux: the inode of /proc/self/ns/pid), else ``0``."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user's counts). On Windows
    every one counts as running, so leftovers there stay for the user to delete: there
    ``os.kill(pid, 0)`` is no probe. Signal 0 is ``CTRL_C_EVENT``, which Python passes to
    ``GenerateConsoleCtrlEvent`` for the console process group ``pid``: Windows documents
    that the call then succeeds but the group does not receive the Ctrl-C, and it fails for a
    process that shares no console with this one. Either way the probe said "running", for
    a dead process too, and stopped nothing. (A real probe would be ``OpenProcess`` and
    ``GetExitCodeProcess``.)"""
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # PermissionError: another user's
        return True
    return True


NOTHING_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)
"""Why a path names nothing (``pathlib``'s ``exists`` and ``is_file`` say False for these):
ENOTDIR, it is under a file; ELOOP, a link loop."""


def nearest_present(path: Path) -> Path | None:
    """The first of ``path`` and the folders above it (``path.parents``, spelt as ``path`` is)
    that is there; ``None`` when none is. A symbolic link is there even when it leads nowhere
    or into a loop: ``Path.exists`` follows it and says no, so a check built on it went on to
    the folder above and passed a path that ``mkdir`` refused later, after the work. Another
    ``OSError`` (no permission to search a folder above) is raised."""
    for above in (path, *path.parents):
        try:
            os.lstat(above)
        except OSError as e:
            if e.errno not in NOTHING_THERE:
                raise
            continue
        return above
    return None


def not_a_folder(path: Path) -> Path | None:
    """Where ``mkdir -p path`` must fail, found before the work that would write in ``path``:
    the nearest of ``path`` and the folders above it that is there (``nearest_present``), when
    it is not a folder (a file, a fifo, a link to a file, to nowhere or into a loop); ``None``
    when it is a folder or a link to one. The one rule behind ``run_checks.check_out``,
    ``data``'s ``--out``, ``lm_eval.check_output_path``, ``tasks.write_task`` and
    ``check_creatable``; each words its own refusal."""
    above = nearest_present(path)
    return above if above is not None and not above.is_dir() else None


def check_creatable(path: Path) -> None:
    """A one-line ``UserError`` when ``path`` cannot be created, checked before the work that
    would write it: a folder is made and removed again in its nearest existing parent (what a
    permission check alone misses: ``/proc``, a read-only disk). Nothing is left behind, not
    even the missing folders above ``path`` (they are made when ``path`` is written)."""
    parent = nearest_present(path.absolute().parent)
    if parent is None or not parent.is_dir():
        raise UserError(f"{path}: cannot be written ({parent} is not a writable folder)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".unmask-probe-", dir=parent))
    except OSError as e:
        raise UserError(f"{path}: cannot be written ({parent} is not a writable folder: "
                        f"{e.strerror or e})") from None


SAFETENSORS_DTYPES = {
    "float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64",
    "int64": "I64", "int32": "I32", "bool": "BOOL", "uint8": "U8",
}  # fmt: skip
"""torch dtype name -> safetensors dtype tag."""


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of the file at ``path``, 16 hex digits: what tells a file's contents from
    another's of the same size, where its modification time changes with a copy or a
    ``touch``. Reads it whole, in 1 MiB pieces (about a second per GB); ``OSError`` as
    ``open``'s."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def write_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: Path,
    *,
    metadata: Mapping[str, str] | None = None,
    like: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write ``tensors`` to ``path`` in the safetensors format, streaming one tensor at a time.

    ``safetensors.torch.save_file`` first turns every tensor into ``bytes`` (a second full
    copy of the model in RAM); this writes each tensor's memory directly instead. The format
    (github.com/huggingface/safetensors): an 8-byte little-endian header length, a JSON header
    of ``{name: {dtype, shape, data_offsets}}`` padded with spaces to a multiple of 8, then
    the tensors' bytes back to back.

    ``like``: tensors of the same names, dtypes and shapes (on the meta device) that the header
    is made from, so that ``tensors`` may read each tensor only when it is written
    (``unmask convert``, ``unmask.convert.stream.StreamedWeights``: one in memory at a time).
    """
    import torch

    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    shapes = tensors if like is None else like
    names = sorted(shapes)
    for name in names:
        t = shapes[name]
        tag = SAFETENSORS_DTYPES.get(str(t.dtype).removeprefix("torch."))
        if tag is None:
            raise ValueError(f"cannot write {name}: dtype {t.dtype} has no safetensors tag here")
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": tag,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in names:
            t = tensors[name].detach().to("cpu").contiguous()
            if like is not None and (t.dtype, t.shape) != (like[name].dtype, like[name].shape):
                raise ValueError(f"cannot write {name}: {t.dtype} {tuple(t.shape)}, the header "
                                 f"says {like[name].dtype} {tuple(like[name].shape)}")
            t = t.reshape(-1)
            f.write(memoryview(t.view(torch.uint8).numpy()))  # the tensor's own memory, no copy
        f.flush()
        os.fsync(f.fileno())


STDIN_NAME = "<stdin>"
"""Standard input in messages (and in a prepared dataset's ``sources``)."""


def _user_text(raw: bytes, name: object) -> str:
    """``raw`` decoded as UTF-8 (without a leading byte-order mark, which JSON readers refuse
    and no prompt means; newlines as a file read as text), or a one-line ``UserError`` naming
    ``name`` and what the bytes are instead (UTF-16 with the iconv line, binary data, an
    archive: ``sniff``)."""
    _refuse_not_text(raw, name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        what = "input is" if name == STDIN_NAME else f"{name}:"
        raise UserError(f"{what} not UTF-8 text (byte 0x{raw[e.start]:02x} at {e.start}; "
                        "save it as UTF-8)") from None
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark (Notepad): a mark, not text
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as a file read as text


_SNIFF_BYTES = 4096
"""How much of a file the user named ``sniff.not_text`` looks at."""


def _refuse_not_text(raw: bytes, name: object) -> None:
    """A one-line ``UserError`` naming ``name`` when the first bytes of ``raw`` are no text
    (UTF-16 of ASCII or Cyrillic is valid UTF-8, with NULs)."""
    from unmask.sniff import not_text

    problem = not_text(raw[:_SNIFF_BYTES])
    if problem:
        raise UserError(f"{name}: {problem}")


def read_user_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of a file the user named (a prompt file, a template, a gap set); a
    one-line ``UserError`` that says why when it is missing, a folder, unreadable or not
    UTF-8 (UTF-16 and binary data named as such; ``what`` names the kind of file). Its first
    bytes are looked at before the rest is read: a binary file of GBs was read whole into
    memory first, and ``/dev/zero`` or a pipe that never ends was read for ever."""
    if path.is_dir():
        raise UserError(f"{path}: a folder, not a {what}")
    try:
        with open(path, "rb") as f:
            raw = f.read(_SNIFF_BYTES)
            _refuse_not_text(raw, path)
            raw += f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    return _user_text(raw, path)


LINE_END = re.compile(r"\r\n|\r|\n")
"""Where a line of a text file ends (``text_lines``)."""


def text_lines(text: str) -> list[str]:
    """The lines of ``text`` as a file holds them: each ends at ``\\n``, ``\\r\\n`` or
    ``\\r`` only. ``str.splitlines`` also ends one at a form feed (a page break in text taken
    from a PDF), a vertical tab, U+0085, U+2028 and U+2029 (which ``json.dumps(...,
    ensure_ascii=False)`` leaves raw inside a string): a line of a prompt file holding one
    was two prompts, and every later line's number was off. The last line need not end."""
    return LINE_END.split(text)


def user_stdin(announce: str | None = None) -> TextIO:
    """Standard input, about to be read to its end (``read_user_stdin``; ``unmask prepare -``
    copies it as bytes): closed (``<&-``, ``sys.stdin`` None) a one-line ``UserError`` rather
    than a traceback; ``announce`` (``"unmask generate: reading the prompts"``) said on stderr
    first where it is a terminal, with how to end it, else the command waited without a
    word."""
    from unmask.terminal import is_tty

    if sys.stdin is None:  # started with it closed (`<&-`): sys.stdin.read() was a traceback
        raise UserError("standard input is closed: give the text another way, or pipe it in")
    if announce is not None and is_tty(sys.stdin):
        print(f"{announce} from the terminal; end it with Ctrl-D (Ctrl-Z Enter on Windows)",
              file=sys.stderr, flush=True)
    return sys.stdin


def read_user_stdin(announce: str | None = None) -> str:
    """Standard input as UTF-8 text (a template, text or prompts given as ``-``), with
    ``read_user_text``'s one-line errors naming ``<stdin>``; ``announce``: ``user_stdin``'s."""
    user_stdin(announce)
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # replaced by a text stream (a test, an embedding program)
        return sys.stdin.read()
    return _user_text(stream.read(), STDIN_NAME)


def require_stdout(what: str) -> None:
    """A ``UserError`` where the command was started with standard output closed (``>&-``:
    Python's ``sys.stdout`` is None), called before any work: ``print`` dropped every line,
    so ``what`` (``"the generated text"``) was lost and the command exited 0."""
    if sys.stdout is None:
        raise UserError(f"standard output is closed: {what} would be lost; send it to a file "
                        "(> out.txt) or a pipe")


__all__ = ["CACHE_ENV", "SAFETENSORS_DTYPES", "STDIN_NAME", "as_number", "atomic_write_bytes",
           "atomic_write_text", "BadJSON", "cache_dir", "check_creatable", "clear_stale_staging",
           "file_mode", "finite_or_null", "json_line", "json_message", "named", "nearest_present",
           "not_a_folder", "parse_json",
           "plain_name", "read_user_stdin", "read_user_text", "require_stdout", "set_mode",
           "staging_dir", "staging_prefix", "stale_staging", "user_stdin", "write_safetensors",
           "write_target"]


CACHE_ENV = "UNMASK_CACHE_DIR"
"""Where unmask keeps files across processes (``off``: nowhere): compiled automata
(``unmask.infill.automaton``), the assets of a zipped install (``asset_path``); default
``$XDG_CACHE_HOME/unmask``, else ``~/.cache/unmask``."""


def cache_dir() -> Path | None:
    """The folder of unmask's on-disk cache (``CACHE_ENV``), or None when it is off."""
    given = os.environ.get(CACHE_ENV)
    if given is not None:
        return None if given.strip().lower() in ("", "off", "0", "none") else Path(given)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory: no disk cache
            return None
    return Path(base) / "unmask"


def asset_path(name: str) -> Path:
    """The path of ``name`` in the package's ``assets`` folder (the demo model, its corpus).
    From a zipped install (the package imported from a zip: a zipapp, a wheel on
    ``sys.path``) the asset has no path of its own, so it is copied out once into a cache
    folder that later processes reuse (``_extracted``): it was reported missing ("not in
    this install; run unmask demo --train")."""
    from importlib import resources

    assets = resources.files("unmask") / "assets"
    found = assets / name
    if isinstance(found, Path) or not (found.is_file() or found.is_dir()):
        return Path(str(found))  # on the file system, or absent (the callers say so)
    top, _, rest = name.partition("/")  # copied whole: its top entry (``demo``), not a part
    copied = _extracted(assets / top, top)
    return copied / rest if rest else copied


_EXTRACTED: dict[str, Path] = {}


def _extracted(found: Any, name: str) -> Path:
    """``found`` (an ``importlib.resources`` entry inside a zip, a file or a folder, directly
    in ``assets``) copied to ``assets/PLACE-VERSION/name`` in unmask's cache folder
    (``cache_dir``), PLACE naming the zip by its path and VERSION by the assets it holds (their
    names, CRCs and sizes in the zip's directory: a rebuilt zip with other assets gets a copy
    of its own, and the copies of the zip's older versions are removed then, 11 MB each, but
    not one this process uses). The copy is made in a staging folder and renamed into
    place, so a process killed while copying leaves no half asset (its staging folder is
    removed by the next copy, ``stale_staging``), and processes share the copy: 11 MB for the
    demo, copied per process into a temporary folder before, and left there by a SIGKILL each
    time. A copy missing a file the zip holds (one deleted by hand, or a part of it an older
    unmask copied alone) is made again. Where that cache cannot be written or is off, a
    temporary folder of this process, removed at exit."""
    if name not in _EXTRACTED:
        try:
            _EXTRACTED[name] = _cached_copy(found, name)
        except OSError:  # no writable cache folder (a read-only home)
            import atexit
            import shutil

            root = Path(tempfile.mkdtemp(prefix="unmask-assets-"))
            atexit.register(shutil.rmtree, root, ignore_errors=True)
            _copy_out(found, root / name)
            _EXTRACTED[name] = root / name
    return _EXTRACTED[name]


def _cached_copy(found: Any, name: str) -> Path:
    import contextlib
    import hashlib
    import shutil

    archive = getattr(getattr(found, "root", None), "filename", None)  # zipfile.Path's zip
    if archive is None:
        raise FileNotFoundError("no archive to key a cached copy by")
    archive = Path(archive).resolve()
    place = hashlib.sha256(str(archive).encode()).hexdigest()[:8]
    # the assets' content as the zip's directory lists it (names, CRCs, sizes; no data read):
    # a touched or re-copied zip of the same assets keeps its copy, which a live process of it
    # may be reading (keyed by modification time, the next process removed it)
    at = getattr(found, "at", "").rstrip("/")
    folder = at.rsplit("/", 1)[0] + "/" if "/" in at else ""
    listed = sorted((i.filename, i.CRC, i.file_size) for i in found.root.infolist()
                    if i.filename.startswith(folder))
    version = hashlib.sha256(repr(listed).encode())
    base = cache_dir()
    if base is None:
        raise FileNotFoundError(f"{CACHE_ENV} is off")
    out = base / "assets" / f"{place}-{version.hexdigest()[:12]}" / name
    if _whole(found, out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(out)
    staging = staging_dir(out.parent, staging_prefix(out))
    try:
        _copy_out(found, staging / out.name)
        if (out.exists() or out.is_symlink()) and not _whole(found, out):  # set aside, removed
            with contextlib.suppress(FileNotFoundError):  # (another process moved it first)
                os.replace(out, staging / "incomplete")
        try:
            os.replace(staging / out.name, out)
        except OSError:
            if not _whole(found, out):  # else another process renamed its copy first: that one
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    mine = {p.parent for p in _EXTRACTED.values()}  # copies this process still uses
    for older in out.parent.parent.glob(f"{place}-*"):  # this zip's older versions' copies
        if older != out.parent and older not in mine:
            shutil.rmtree(older, ignore_errors=True)
    return out


def _whole(entry: Any, out: Path) -> bool:
    """Whether ``out`` holds a copy of ``entry`` (``_copy_out``) with every file it has."""
    if entry.is_dir():
        return out.is_dir() and all(_whole(child, out / child.name) for child in entry.iterdir())
    return out.is_file()


def _copy_out(entry: Any, out: Path) -> None:
    if entry.is_dir():
        out.mkdir(parents=True)
        for child in entry.iterdir():
            _copy_out(child, out / child.name)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)  # a name with a folder in it
        out.write_bytes(entry.read_bytes())


def plain_name(name: object) -> bool:
    """Whether ``name`` names a file in a folder and nothing else: a string with no folder part
    (``../x``, ``/etc/passwd``, ``a/b``), not ``""``, ``.`` or ``..``, without a NUL byte. An
    index file (a prepared dataset's ``index.json``, a checkpoint's safetensors index) lists its
    files by such names, so a crafted index cannot make its reader open a file elsewhere."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and Path(name).name == name)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object in ``path`` (a config.json, an index), with one-line errors: not JSON
    (``parse_json``'s: a trailing comma named as one), not UTF-8, not an object."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    data = parse_json(text, path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


class BadJSON(UserError):
    """``parse_json``'s refusal: ``where`` (a file, or ``file:line`` of a JSON Lines file) and
    ``why`` (what is wrong, and where in the text when known); its message is ``"{where}: not
    {what} ({why})"``. A reader that does not stop at a bad file (``benchmarks/report.py``
    skips it with a note) says ``why`` its own way."""

    def __init__(self, where: str, what: str, why: str) -> None:
        super().__init__(f"{where}: not {what} ({why})")
        self.where, self.what, self.why = where, what, why

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a worker process, pickled back
        return type(self), (self.where, self.what, self.why)


def parse_json(text: str, where: str | os.PathLike[str], *, line: int | None = None,
               what: str = "valid JSON") -> Any:
    """The JSON value of ``text``, read from the file ``where`` (``line``: the line of a JSON
    Lines file it is). Every way the parser fails is a one-line ``BadJSON`` naming the file
    (and line), saying ``not {what}`` and why: Python's own error with its line (a comma after
    the last entry named as one), or with its column for a line of a JSON Lines file; arrays
    or objects nested past the parser's stack (a ``RecursionError`` traceback); an integer
    longer than Python converts (from 3.11, 4,300 digits: a plain ``ValueError``). The one
    place unmask's readers of JSON turn a parser failure into words."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        why = _json_problem(e, line is not None)
    except RecursionError:  # "[[[[..." a hundred thousand deep
        why = "nested too deep to read"
    except ValueError:  # not a JSONDecodeError: an integer past sys.get_int_max_str_digits()
        why = _long_integer(text, line is not None)
    raise BadJSON(str(where) if line is None else f"{where}:{line}", what, why) from None


def _place(text: str, pos: int, in_line: bool) -> str:
    """Where offset ``pos`` of ``text`` is: its column in one line of a JSON Lines file, else
    its line."""
    return f"column {pos + 1}" if in_line else f"line {text.count(chr(10), 0, pos) + 1}"


def _long_integer(text: str, in_line: bool) -> str:
    """Why ``json.loads(text)`` raised a plain ``ValueError``: an integer with more digits than
    ``sys.get_int_max_str_digits()`` (Python 3.11+, and 3.10.7+) converts; where, when found."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if not limit:
        return "a number too long to read"
    for token in _JSON_TOKEN.finditer(text):  # the text before the failure parsed, so its
        digits = token.group("int")            # strings are whole: digits in one are skipped
        if digits is not None and len(digits.lstrip("-")) > limit:
            return (f"an integer of more than {limit:,} digits at "
                    f"{_place(text, token.start(), in_line)}")
    return f"an integer of more than {limit:,} digits"


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(?P<int>-?\d+)(?![.\deE])|-?\d+(?:\.\d+)?'
                         r"(?:[eE][-+]?\d+)?")
"""A JSON string, an integer (``int``: what Python converts with ``int``, so what
``sys.get_int_max_str_digits()`` limits), or another number, as ``_long_integer`` scans for
the integer that failed."""


def _json_problem(e: json.JSONDecodeError, in_line: bool = False) -> str:
    """What is wrong where ``e`` stopped: an empty file, or a comma before a closing bracket, as
    editors leave after deleting the last entry, by its line (its column: ``in_line``, a line of
    a JSON Lines file); else Python's message and line (column)."""
    if not e.doc.strip():
        return "the file is empty"
    before = e.doc[: e.pos].rstrip()
    closing = e.doc[e.pos : e.pos + 1] in ("}", "]")
    if before.endswith(",") and closing:
        return f"a comma after the last entry, {_place(e.doc, len(before) - 1, in_line)}"
    return f"{json_message(e)} at " + (f"column {e.colno}" if in_line else f"line {e.lineno}")


def json_message(e: json.JSONDecodeError) -> str:
    """Python's message of ``e`` without the " at" some end in ("Unterminated string starting
    at"), for a message that names the place itself: "... at at line 1" otherwise."""
    return e.msg.removesuffix(" at")


def finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf), nested ones too, as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def json_line(record: Mapping[str, Any]) -> str:
    """``record`` as one line of a JSON Lines log (``metrics.jsonl``), newline included, in
    strict JSON: a non-finite number (a skipped step's NaN loss) is written as null, since the
    bare ``NaN`` Python's ``json`` writes by default is refused by strict parsers (``jq``,
    JavaScript's ``JSON.parse``). ``as_number`` reads such a value back."""
    return json.dumps(finite_or_null(record), allow_nan=False) + "\n"


def as_number(value: Any) -> float:
    """A number of a JSON Lines log as a float: null (how ``json_line`` writes a non-finite
    one) is NaN, as is the bare ``NaN`` of logs written before it (``json.loads`` reads it)."""
    return math.nan if value is None else float(value)
