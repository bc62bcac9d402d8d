"""``unmask.cli.main``: exit codes (2, 130, 143) and ``--threads``, in one place for every
command."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import unmask.commands as commands_mod
import unmask.commands.generate as generate_cmd
import unmask.commands.prepare as prepare_cmd
from unmask.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, main
from unmask.commands import _most_threads, default_threads, physical_cores
from unmask.errors import UserError


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    def run(args):
        raise UserError("data/x: no such folder")

    monkeypatch.setattr(prepare_cmd, "run", run)
    assert main(["prepare", "-", "--out", "o"]) == 2
    assert capsys.readouterr().err == "unmask prepare: error: data/x: no such folder\n"


def test_a_misspelt_flag_is_named_by_its_command(monkeypatch, capsys):
    """argparse reports unknown flags from the top parser ("unmask: error: ... (see: unmask
    --help)"); the line names the command and its help page, as its other errors do."""
    monkeypatch.setattr(generate_cmd, "run", lambda args: pytest.fail("ran"))
    assert main(["generate", "--model", "m", "--gen-lenght", "10", "x"]) == 2
    assert capsys.readouterr().err == (
        "unmask generate: error: unrecognized arguments: --gen-lenght; did you mean "
        "--gen-length? (see: unmask generate --help)\n")
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err.startswith("unmask: error: unrecognized arguments: --bogus")


def test_a_refusal_names_an_abbreviated_flag_in_full(capsys, tmp_path):
    """argparse takes an unambiguous prefix for its flag (``--draft-len 0`` is
    ``--draft-length 0``): the refusal names that flag, spelled in full, as it does a flag typed
    whole (it kept the field name, ``draft_length must be >= 1``). A value after a bare ``--``
    and a flag of another command are not flags typed."""
    from unmask.cli import as_typed, build_parser, typed_flags

    gen = ["generate", "x", "--model", str(tmp_path / "none"), "--device", "cpu"]
    assert main([*gen, "--draft-len", "0"]) == 2
    assert capsys.readouterr().err == (
        "unmask generate: error: --draft-length must be >= 1, got 0\n")
    assert main([*gen, "--temperat=-1"]) == 2
    assert capsys.readouterr().err.startswith("unmask generate: error: --temperature must be")
    parser = build_parser(["generate"])
    argv = ["generate", "--top-k", "3", "--top-p=0.5", "--draft-len", "2", "--", "--seed"]
    assert typed_flags(argv, parser) == {"--top-k", "--top-p", "--draft-length"}
    said = "seed must be >= 0; draft_length must be >= 1"
    assert as_typed(said, argv, parser) == "seed must be >= 0; --draft-length must be >= 1"
    assert as_typed(said, argv) == said  # without the parser: flags typed whole only
    assert typed_flags(["bogus", "--draft-len"], parser) == {"--draft-len"}


def test_a_refusal_of_an_unused_option_names_its_flag():
    """A decoder's refusal of an option it has no use for (``registry.refuse_unused``: "steps
    does not apply to decoder 'ar'") names the flag typed, as the other refusals do."""
    from unmask.cli import as_typed, build_parser

    said = "steps does not apply to decoder 'ar' (it commits one token per model call)"
    argv = ["generate", "x", "--steps", "4"]
    assert as_typed(said, argv, build_parser(["generate"])) == "--" + said
    assert as_typed(said, ["generate", "x"], build_parser(["generate"])) == said
    several = "steps, threshold, block_length do not apply to decoder 'ar' (...)"
    argv = ["generate", "x", "--steps", "4", "--thresh", "0.5", "--block-length", "4"]
    assert as_typed(several, argv, build_parser(["generate"])) == (
        "--steps, --threshold, --block-length do not apply to decoder 'ar' (...)")


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def run(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_cmd, "run", run)
    assert main(["generate", "--model", "demo", "x"]) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "unmask generate: interrupted\n"


def test_sigterm_exits_143_and_restores_the_handler(monkeypatch, capsys):
    before = signal.getsignal(signal.SIGTERM)

    def run(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises before this ends
        return 0

    monkeypatch.setattr(prepare_cmd, "run", run)
    t0 = time.perf_counter()
    assert main(["prepare", "-", "--out", "o"]) == EXIT_TERMINATED == 143
    assert time.perf_counter() - t0 < 5
    assert capsys.readouterr().err == "unmask prepare: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before


SLEEPER = (
    "import sys, time\n"
    "import unmask.commands.{module} as m\n"
    "from unmask.cli import main\n"
    "def run(args):\n"
    "    print('ready', flush=True)\n"
    "    time.sleep(30)\n"
    "    return 0\n"
    "m.run = run\n"
    "sys.exit(main({argv!r}))\n"
)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("module, argv", [("prepare", ["prepare", "-", "--out", "o"])])
def test_signal_exit_code_in_a_real_process(sig, code, module, argv):
    """A real signal while a command runs: the status a shell expects, one line, no traceback.

    One command stands for all: main's handling does not depend on it (a ``serve`` case, its
    ``run`` replaced too, ran this same path; the real server under both signals is
    test_serve_exits_like_every_command_after_uvicorn_shuts_down)."""
    src = SLEEPER.format(module=module, argv=argv)
    # started as from a terminal: a shell starts a background job (``pytest ... &``) with SIGINT
    # ignored, which its children inherit and Python then keeps ignoring, as it should
    proc = subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert proc.returncode == code
    assert err == f"unmask {argv[0]}: {word}\n"


def test_threads_apply_for_the_command_and_come_back(monkeypatch):
    seen = []
    monkeypatch.setattr(generate_cmd, "run", lambda args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    assert main(["generate", "--model", "demo", "x", "--threads", "3"]) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert main(["generate", "--model", "demo", "x"]) == 0
    assert seen == [3, 2]
    assert torch.get_num_threads() == before


def test_default_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # capped at 4 per CPU on a 1-CPU machine
    assert default_threads() == min(5, _most_threads()[0])
    monkeypatch.delenv("OMP_NUM_THREADS")
    cpus = os.sched_getaffinity(0)  # the physical cores among them (hyperthreads count once)
    assert default_threads() == (physical_cores(cpus) or len(cpus))


def test_decoding_a_small_model_defaults_to_one_thread(monkeypatch, tmp_path):
    """generate, chat, demo and the infill family (edit here) decode a small model (weights under
    SMALL_WEIGHTS_BYTES, e.g. the shipped demo) on one thread unless told; a large one, a
    training command and ``unmask demo --train`` keep the physical cores; the user's
    --threads or OMP_NUM_THREADS wins."""
    from unmask.cli import build_parser
    from unmask.commands import SMALL_WEIGHTS_BYTES, command_threads, weights_bytes

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(commands_mod, "default_threads", lambda: 7)
    big = tmp_path / "big" / "checkpoint"
    big.mkdir(parents=True)
    with open(big / "model.safetensors", "wb") as f:
        f.truncate(SMALL_WEIGHTS_BYTES + 1)  # sparse: no disk used
    small = tmp_path / "small"
    small.mkdir()
    (small / "model.safetensors").write_bytes(b"0" * 1000)
    assert weights_bytes(str(tmp_path / "big")) == SMALL_WEIGHTS_BYTES + 1
    assert weights_bytes(None) == weights_bytes("demo") < SMALL_WEIGHTS_BYTES
    assert weights_bytes(str(tmp_path / "nowhere")) is None

    def threads(*argv: str) -> int:
        args = build_parser([argv[0]]).parse_args(list(argv))
        return command_threads(args)

    for cmd in (["generate", "x"], ["chat"], ["edit", "--text", "a b", "--lowest", "1"]):
        assert threads(cmd[0], "--model", str(small), *cmd[1:]) == 1, cmd
        assert threads(cmd[0], "--model", str(tmp_path / "big"), *cmd[1:]) == 7, cmd
    assert threads("demo") == 1 and threads("demo", "--train") == 7
    assert threads("generate", "--model", str(small), "x", "--threads", "2") == 2
    assert threads("generate", "--model", str(tmp_path / "nowhere"), "x") == 7
    assert threads("eval", str(small)) == 7  # not a decoding command
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads("generate", "--model", str(small), "x") == 3


def test_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", "m", "x", "--threads", "0"])
    assert e.value.code == 2
    assert "--threads: must be at least 1, got 0" in capsys.readouterr().err


def test_wait_policy_and_thread_count_reach_torch_in_a_fresh_process():
    """Before torch loads, OMP_WAIT_POLICY defaults to PASSIVE (a user's value wins:
    test_a_users_wait_policy_wins) and --threads sizes the pool."""
    src = (
        "import os, sys\n"
        "import unmask.commands.generate as g\n"
        "from unmask.cli import main\n"
        "def run(args):\n"
        "    import torch\n"
        "    print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())\n"
        "g.run = run\n"
        "sys.exit(main(['generate', '--model', 'demo', 'x', '--threads', '1']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", src], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out == "PASSIVE 1\n"


def test_a_users_wait_policy_wins(monkeypatch):
    """main keeps the user's OMP_WAIT_POLICY (it only sets a default): checked in this process,
    as a second fresh process (~4 s) only repeated the torch start of the test above."""
    seen = []
    monkeypatch.setattr(generate_cmd, "run",
                        lambda args: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["generate", "--model", "demo", "x", "--threads", "1"]) == 0
    assert seen == ["ACTIVE"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_serve_exits_like_every_command_after_uvicorn_shuts_down(tmp_path, sig, code):
    """uvicorn catches the signal, shuts down gracefully and (for Ctrl-C) swallows it; the
    status must still say how the server ended."""
    pytest.importorskip("uvicorn")
    import urllib.request

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32,
                                     **tok.special_ids()))
    save_checkpoint(tmp_path / "run", model=model, tokenizer=tok)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "unmask.cli", "serve", "--model", str(tmp_path / "run"),
         "--port", str(port), "--device", "cpu", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == code
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert err.splitlines()[-1] == f"unmask serve: {word}"
    assert "Traceback" not in err


def test_plural():
    from unmask.messages import plural

    assert [plural(n, "hole") for n in (0, 1, 2)] == ["0 holes", "1 hole", "2 holes"]
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(3, "entry", "entries") == "3 entries"


def test_messages_agree_with_their_counts():
    from unmask.scoring import ReferenceScorer

    def uniform(ids, mask):
        return torch.zeros(*ids.shape, 4)  # (B, T, V)

    scorer = ReferenceScorer(uniform, lambda t: [1], start_id=0)
    with pytest.raises(UserError, match=r"^2 prompts for 1 text; give one prompt per text$"):
        scorer.score(["a"], prompts=["x", "y"])


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_command_that_saves_on_the_signal_re_raises_it(monkeypatch, capsys, sig, code):
    """The protocol for a command that must finish something on a signal (train saves its
    checkpoint): own handler while working, then restore the old one and re-raise."""
    saved = []

    def run(args):
        stop = []
        old = signal.signal(sig, lambda s, f: stop.append(s))
        try:
            os.kill(os.getpid(), sig)
            while not stop:
                time.sleep(0.01)
            saved.append(True)  # e.g. the checkpoint
        finally:
            signal.signal(sig, old)
        signal.raise_signal(sig)
        return 0

    monkeypatch.setattr(prepare_cmd, "run", run)
    assert main(["prepare", "-", "--out", "o"]) == code
    assert saved == [True]
    assert capsys.readouterr().err.count("\n") == 1


def test_closed_stdout_pipe_is_not_a_traceback():
    """`unmask ... | head` closes the pipe early: the CLI stops quietly with 141 (SIGPIPE's
    status), not a BrokenPipeError traceback or an "Exception ignored" at exit."""
    from pathlib import Path

    import unmask

    demo = Path(unmask.__file__).parent / "assets" / "demo"
    cmd = [sys.executable, "-m", "unmask.cli", "generate", "--model", str(demo), "--threads",
           "1", "--gen-length", "4", "--steps", "4", "--json", "In the beginning"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the child writes: its output meets a closed pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err and "Exception" not in err, err


def test_python_dash_m_unmask_is_the_command():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "unmask", "generate", "--model", "nope", "x"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stderr == "unmask generate: error: nope: no such folder\n"


def test_as_typed_keeps_the_python_spelling_a_message_gives(tmp_path, capsys):
    """``prepare``'s refusal says the flag and, in brackets, the Python argument; typing
    --val-fraction made that ``(--val-fraction=0 in Python)``."""
    from unmask.cli import as_typed, main

    said = "add text or pass --val-fraction 0 (val_fraction=0 in Python); val_fraction must"
    assert as_typed(said, ["prepare", "--val-fraction", "0.5"]) == (
        "add text or pass --val-fraction 0 (val_fraction=0 in Python); --val-fraction must")
    (tmp_path / "a.txt").write_text("a few words\n")
    assert main(["prepare", str(tmp_path / "a.txt"), "-o", str(tmp_path / "d"),
                 "--val-fraction", "0.5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "(val_fraction=0 in Python)" in err and err.count("\n") == 1


def test_generate_prompt_file_without_prompts_says_so(tmp_path, capsys):
    """A prompt file of blank lines is named as the problem (it said "no prompt: give one or
    more prompts (or --prompt TEXT), or --prompt-file FILE", to a user who had)."""
    from unmask.cli import main

    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    assert main(["generate", "--model", "demo", "--prompt-file", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err == (f"unmask generate: error: --prompt-file {empty}: no prompt in it (one prompt "
                   "per line; blank lines are skipped)\n")


def test_as_typed_names_advice_and_a_bracketed_opening_as_flags():
    """What a refusal advises to type is a flag on the command line (``try gen_length 42``
    read as Python), and ``steps (7) must ...`` names --steps when it was typed."""
    from unmask.cli import as_typed, build_parser

    parser = build_parser(["generate"])
    said = ("gen_length (48) must be a multiple of block_length (7); try block_length 6 or 8 "
            "or gen_length 42 or 49")
    argv = ["generate", "x", "--block-length", "7"]
    assert as_typed(said, argv, parser) == (
        "gen_length (48) must be a multiple of --block-length (7); try --block-length 6 or 8 "
        "or --gen-length 42 or 49")
    said = "use gen_length <= 255, a shorter prompt, or segment_length (e.g. 128) to write it"
    assert as_typed(said, ["generate", "x"], parser) == (
        "use --gen-length <= 255, a shorter prompt, or --segment-length (e.g. 128) to write it")
    said = "steps (7) must be a multiple of the number of blocks; try 12"
    assert as_typed(said, ["generate", "x", "--steps", "7"], parser).startswith("--steps (7)")
    assert as_typed(said, ["generate", "x"], parser) == said  # not typed: the field's name
    # a field the command has no flag for keeps its name (the model's block_size)
    said = "gen_length (10) must be a multiple of the model's block_size (4); try gen_length 8"
    assert as_typed(said, ["generate", "x"], parser).endswith("block_size (4); try --gen-length 8")
    assert as_typed("try block_length 6", ["generate"]) == "try block_length 6"  # no parser
