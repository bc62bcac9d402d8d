"""``unmask.files``' atomic writers replace a file as writing it in place would: its
permissions kept (a private file stayed private only until the next save), a link loop an
error rather than the link replaced by a file, and a long file name (near the 255 bytes a
name may have) written, where the temporary file's longer name was "File name too long"."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from unmask.files import atomic_write_bytes, atomic_write_text, file_mode

posix = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and links")


@posix
@pytest.mark.parametrize("mode", [0o600, 0o755, 0o444])
def test_a_replaced_file_keeps_its_permissions(tmp_path, mode):
    out = tmp_path / "a.json"
    out.write_text("old")
    out.chmod(mode)
    atomic_write_text(out, "new")
    assert out.read_text() == "new" and stat.S_IMODE(out.stat().st_mode) == mode
    new = tmp_path / "b.bin"
    atomic_write_bytes(new, b"\x00")
    assert stat.S_IMODE(new.stat().st_mode) == file_mode()


@posix
def test_a_link_targets_permissions_are_kept(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    target.chmod(0o600)
    (tmp_path / "link.json").symlink_to("real.json")
    atomic_write_text(tmp_path / "link.json", "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600


@posix
def test_a_loop_of_links_is_an_error_and_stays_as_it_was(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError) as e:
        atomic_write_text(tmp_path / "a", "x")
    assert e.value.errno == errno.ELOOP
    assert (tmp_path / "a").is_symlink() and os.readlink(tmp_path / "a") == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_long_file_name_is_written(tmp_path):
    out = tmp_path / ("r" * 240 + ".json")
    atomic_write_text(out, "1")
    atomic_write_text(out, "2")
    assert out.read_text() == "2" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_prepare_killed_while_saving_its_tokenizer_is_cleared_by_the_next(tmp_path):
    """The staging folder of a prepare killed inside ``Tokenizer.save`` holds the atomic
    write's temporary file: the pattern of prepare's own files did not match mkstemp's
    name, so the folder (the whole finished dataset) was never removed."""
    import subprocess
    import sys

    from unmask.data import prepare

    out = tmp_path / "data"
    child = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from unmask.files import staging_prefix\n"
        "from unmask.tokenizer import byte_tokenizer\n"
        "out = Path(sys.argv[1])\n"
        "tmp = out.with_name(staging_prefix(out) + 'x1y2z3w4')\n"
        "tmp.mkdir()\n"
        "(tmp / 'train-00000.bin').write_bytes(bytes(64))\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "byte_tokenizer().save(tmp)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(out)], env=os.environ)
    assert done.returncode == -9
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".data.tmp-")]
    assert any(p.name.startswith(".tokenizer.json.") for p in left.iterdir())
    (tmp_path / "a.txt").write_text("one document of text\n")
    info = prepare(tmp_path / "a.txt", out, tokenizer="byte", val_fraction=0, progress=False)
    assert f"removed {left}, left by a prepare that was killed" in info.notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "data"]


@posix
def test_a_file_system_that_keeps_no_modes_still_gets_the_write(tmp_path, monkeypatch):
    """FAT and exFAT (a USB stick) refuse a chmod to a mode they cannot hold (EPERM): the
    write of a config or a tokenizer there failed with "Operation not permitted"."""
    from unmask.files import staging_dir

    def refuse(*args):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    monkeypatch.setattr(os, "chmod", refuse)
    atomic_write_text(tmp_path / "config.json", "{}\n")
    assert (tmp_path / "config.json").read_text() == "{}\n"
    assert staging_dir(tmp_path, ".out.tmp-").is_dir()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
@pytest.mark.parametrize("name", ["/dev/fd/{}", "/proc/self/fd/{}"])
def test_a_link_to_an_open_file_of_this_process_is_written_through_it(tmp_path, name):
    """``--json /dev/stdout > log.txt``: /dev/stdout is a link to the open log file, and the
    rename replaced the log: what was printed before and after it was lost (``>>``: the
    whole log). It is written through the descriptor, in order with the rest."""
    log = tmp_path / "log.txt"
    log.write_text("old line\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"before\n")
        atomic_write_text(name.format(fd), '{"result": 1}\n')
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert log.read_text() == 'old line\nbefore\n{"result": 1}\nafter\n'
    assert [p.name for p in tmp_path.iterdir()] == ["log.txt"]


@posix
def test_a_replaced_file_keeps_its_owner_where_the_process_may(tmp_path, monkeypatch):
    """``sudo`` rewriting a user's file made it root's (and, kept private, unreadable to its
    user); root keeps the owner, as writing in place does."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    out = tmp_path / "config.json"
    out.write_text("{}")
    os.chown(out, 65534, 65534)
    out.chmod(0o600)
    atomic_write_text(out, '{"a": 1}')
    st = out.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)

    def refuse(*args):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)  # not root: the file is written all the same
    atomic_write_text(out, '{"a": 2}')
    assert out.read_text() == '{"a": 2}'


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left")])
def test_ctrl_c_or_a_full_disk_mid_write_leaves_the_old_file_whole(tmp_path, monkeypatch, stop):
    out = tmp_path / "a.json"
    out.write_text("old")

    def fail(fd):
        raise stop

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises((KeyboardInterrupt, OSError)):
        atomic_write_bytes(out, b"new" * 1000)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="a named pipe")
def test_a_binary_file_the_user_names_is_refused_from_its_first_bytes(tmp_path):
    """``--prompt-file /dev/zero`` (or a binary of GBs) was read whole before it was called
    binary: for ever, or into memory. A pipe that has sent binary data and stays open stands
    in for it: it is refused without waiting for its end."""
    import threading

    from unmask.errors import UserError
    from unmask.files import read_user_text

    pipe = tmp_path / "zeros"
    os.mkfifo(pipe)
    answered = threading.Event()
    waited: list[bool] = []

    def send() -> None:
        with open(pipe, "wb") as f:
            f.write(bytes(8192))
            f.flush()
            waited.append(not answered.wait(20))  # the pipe stays open until then

    writer = threading.Thread(target=send)
    writer.start()
    try:
        with pytest.raises(UserError, match="binary data"):
            read_user_text(pipe, "prompt file")
    finally:
        answered.set()
        writer.join()
    assert waited == [False], "read to the end of the pipe before refusing it"


@posix
def test_the_mode_is_set_while_the_file_is_still_this_processs(tmp_path, monkeypatch):
    """Root without CAP_FOWNER (a hardened container) may give a file to its old owner but
    then not chmod it (EPERM), which ``set_mode`` takes for a file system that keeps no
    modes: a shared 0644 file turned into mkstemp's 0600. Simulated: once the file is given
    away, a chmod of it is refused."""
    if not hasattr(os, "fchown"):
        pytest.skip("no fchown")
    given = set()
    chmod = os.fchmod

    def fchown(fd, uid, gid):
        given.add(fd)

    def fchmod(fd, mode):
        if fd in given:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        chmod(fd, mode)

    out = tmp_path / "c.json"
    out.write_text("{}")
    out.chmod(0o644)
    monkeypatch.setattr(os, "fchown", fchown)
    monkeypatch.setattr(os, "fchmod", fchmod)
    monkeypatch.setattr(os, "geteuid", lambda: out.stat().st_uid + 1)  # another's file
    atomic_write_text(out, '{"new": 1}')
    assert given and stat.S_IMODE(out.stat().st_mode) == 0o644


@posix
def test_a_file_planted_in_a_shared_sticky_folder_gives_away_neither_owner_nor_mode(tmp_path):
    """Another user may create the file in /tmp ahead of time, 0666: root's result became
    that user's and writable by everyone. There only a file of this user or of the folder's
    owner keeps its owner and mode (as the kernel's protected_regular trusts it)."""
    if os.geteuid() != 0:
        pytest.skip("a file of another user needs root")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted, own = shared / "results.json", shared / "mine.json"
    for f in (planted, own):
        f.write_text("planted")
        f.chmod(0o666)
    os.chown(planted, 65534, 65534)
    for f in (planted, own):
        atomic_write_text(f, '{"secret": 1}\n')
    st = planted.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), file_mode())
    assert stat.S_IMODE(own.stat().st_mode) == 0o666
    shared.chmod(0o777)  # not sticky: an ordinary folder's file keeps both
    planted.write_text("x")
    os.chown(planted, 65534, 65534)
    planted.chmod(0o640)
    atomic_write_text(planted, "y")
    st = planted.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, 0o640)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/stderr"])
def test_what_python_printed_before_comes_before_the_written_file(tmp_path, name):
    """Output to a file is block-buffered (no PYTHONUNBUFFERED): a print before the write
    still sat in ``sys.stdout``'s buffer, and the result came first in ``> log 2>&1``."""
    import subprocess
    import sys

    child = ("from unmask.files import atomic_write_text as w\n"
             f"print('before')\nw({name!r}, 'R\\n')\nprint('after')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    log = tmp_path / "log.txt"
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-c", child], stdout=out, stderr=subprocess.STDOUT,
                       env=env, check=True)
    assert log.read_text() == "before\nR\nafter\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
def test_a_descriptor_open_for_reading_names_the_file_to_write(tmp_path):
    """``--json /dev/fd/3 3< h.json``: the descriptor cannot be written ("Bad file
    descriptor"); the file it names is, as the shell's ``> /dev/fd/3`` writes it."""
    target = tmp_path / "h.json"
    target.write_text("old")
    fd = os.open(target, os.O_RDONLY)
    try:
        atomic_write_text(f"/dev/fd/{fd}", "new")
    finally:
        os.close(fd)
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["h.json"]


@posix
def test_a_link_planted_in_a_shared_sticky_folder_passes_on_nothing_of_its_target(tmp_path):
    """Another user's link in /tmp is replaced, not followed; its target's mode and group
    (a root-owned 0664 file of a group the planter is in) made root's result writable by
    that group (``_replaced`` judged the target, not the link)."""
    if os.geteuid() != 0:
        pytest.skip("a link of another user needs root")
    shared, kept = tmp_path / "shared", tmp_path / "kept"
    shared.mkdir()
    kept.mkdir()
    shared.chmod(0o1777)
    target = kept / "shared.cfg"
    target.write_text("s")
    os.chown(target, 0, 65534)
    target.chmod(0o664)
    link = shared / "out.json"
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)
    atomic_write_text(link, "{}\n")
    st = os.lstat(link)
    assert stat.S_ISREG(st.st_mode) and target.read_text() == "s"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        os.geteuid(), os.getegid(), file_mode())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
def test_a_descriptor_for_reading_that_names_no_file_is_a_bad_descriptor(tmp_path):
    """``--json /dev/stdin`` from a pipe, or a descriptor of a deleted file: "Bad file
    descriptor", where the pipe got the result (lost, or a hang past 64 KB) and a new file
    named ``... (deleted)`` was made."""
    r, w = os.pipe()
    try:
        with pytest.raises(OSError):
            atomic_write_text(f"/dev/fd/{r}", "x")  # (past 64 KB the old write hung)
    finally:
        os.close(r)
        os.close(w)
    gone = tmp_path / "del.json"
    gone.write_text("old")
    fd = os.open(gone, os.O_RDONLY)
    gone.unlink()
    try:
        with pytest.raises(OSError):
            atomic_write_text(f"/proc/self/fd/{fd}", "new")
    finally:
        os.close(fd)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_saves_on_a_file_system_that_keeps_no_modes(tmp_path, monkeypatch):
    """A checkpoint saved to FAT/exFAT (a USB stick) failed with "Operation not permitted"
    at its files' chmod, after the work was done (``files.set_mode``, as every other
    atomic write)."""
    import torch

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids()))
    monkeypatch.setattr(os, "fchmod", refuse)
    monkeypatch.setattr(os, "chmod", refuse)
    path = save_checkpoint(tmp_path / "run", model=model, tokenizer=tok)
    monkeypatch.undo()
    assert load(path).config == model.config


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
def test_a_descriptor_open_for_reading_and_writing_replaces_the_file_it_names(tmp_path):
    """``3<> out.json``: written through the descriptor, the result went where it pointed and
    the file was never cut (a shorter result left the old bytes after it: broken JSON)."""
    target = tmp_path / "out.json"
    target.write_text('{"old": "' + "x" * 60 + '"}\n')
    fd = os.open(target, os.O_RDWR)
    try:
        atomic_write_text(f"/dev/fd/{fd}", '{"new": 1}\n')
    finally:
        os.close(fd)
    assert target.read_text() == '{"new": 1}\n'


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
def test_stdout_captured_in_a_file_opened_for_reading_and_writing_gets_the_result():
    """A parent that captures stdout in a file it opened ``w+`` (a NamedTemporaryFile): the
    result is written through the descriptor, in order, not renamed over the file's name
    (which the parent no longer reads, with what was printed after it lost)."""
    import subprocess
    import sys
    import tempfile

    child = ("from unmask.files import atomic_write_text as w\n"
             "print('before', flush=True)\nw('/dev/stdout', 'R\\n')\nprint('after')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with tempfile.NamedTemporaryFile() as out:  # mode w+b: O_RDWR, a named regular file
        subprocess.run([sys.executable, "-c", child], stdout=out, env=env, check=True)
        out.seek(0)
        assert out.read() == b"before\nR\nafter\n"
