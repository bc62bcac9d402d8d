"""Session 37 (api): the command line as a demanding user meets it. ``unmask generate`` and
``unmask chat`` refuse a flag that is wrong whatever the model before torch loads (as
``unmask demo`` does: one ``check_flags`` per command, run by ``unmask.cli``)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest
from cli_helpers import refusal

WRONG = (
    (["--temperature", "-1"], "--temperature must be a finite number >= 0, got -1.0\n"),
    (["--gen-length", "0"], "--gen-length must be positive, got 0\n"),
    (["--gen-length=-3"], "--gen-length must be positive, got -3\n"),
    (["--block-length", "0"], "--block-length must be positive, got 0\n"),
    (["--top-p", "2"], "--top-p must be in (0, 1], got 2.0\n"),
    (["--draft-steps", "2"], "--draft-steps applies with --draft (speculative decoding)\n"),
)


@pytest.mark.parametrize("command", ["generate", "chat"])
@pytest.mark.parametrize("flags,said", WRONG)
def test_a_wrong_flag_is_refused_before_torch_loads(command, flags, said):
    """``unmask generate --model M hi --temperature -1`` imported torch and checked the flags
    in ``run`` (5-8 s on a shared 2-core machine, against 0.3 s for ``--help``)."""
    prompt = ["hi"] if command == "generate" else []
    assert refusal([command, "--model", "demo", *prompt, *flags]) == (
        f"unmask {command}: error: {said}")


def test_system_without_chat_is_refused_before_torch_loads():
    assert refusal(["generate", "--model", "demo", "hi", "--system", "be brief"]) == (
        "unmask generate: error: --system and --template apply to --chat\n")


def test_block_length_zero_is_refused_by_the_config_itself():
    """``SampleConfig(block_length=0)`` was accepted and refused only by a decoder's check,
    which needs torch; the server and the API meet the same refusal, earlier."""
    from unmask.config import SampleConfig
    from unmask.errors import UserError

    with pytest.raises(UserError, match="block_length must be positive, got 0"):
        SampleConfig(block_length=0)


def test_validate_still_refuses_a_block_length_set_after_construction():
    """Guard: ``SampleConfig`` is not frozen, so a caller may set ``block_length = 0`` after
    ``__post_init__`` checked it; ``validate`` checks it again (as it does ``gen_length`` and
    ``steps``), else ``gen_length % 0`` is a ``ZeroDivisionError`` traceback."""
    from unmask.config import SampleConfig
    from unmask.errors import UserError
    from unmask.sampling import validate

    config = SampleConfig(gen_length=8, steps=8)
    config.block_length = 0
    with pytest.raises(UserError, match="block_length must be positive, got 0"):
        validate(config)


def test_run_called_directly_still_checks():
    """A caller of ``generate.run`` (not through ``unmask.cli``) meets the same refusals."""
    from unmask.cli import build_parser
    from unmask.commands import generate
    from unmask.errors import UserError

    args = build_parser(["generate"]).parse_args(
        ["generate", "--model", "demo", "hi", "--system", "x"])
    with pytest.raises(UserError, match="--system and --template apply to --chat"):
        generate.run(args)


def test_omp_num_threads_past_the_bound_is_capped_with_a_note(monkeypatch, capsys):
    """``OMP_NUM_THREADS=5000`` (a job script's count for a whole node) was taken as it was:
    4 tokens of a tiny model took 17 s instead of 0.02 s on 2 CPUs. It is capped at
    ``--threads``' bound with a one-line note, not refused as ``--threads 5000`` is: the
    variable is often set for other programs (a container, ``taskset``, a Slurm job given a
    few CPUs), where refusing it turned a slow run into a failed one. ``--threads`` still
    wins over the variable; a count within the bound is taken silently."""
    from unmask.cli import main
    from unmask.commands import _most_threads
    from unmask.commands import generate as generate_cmd

    seen = []
    monkeypatch.setattr(generate_cmd, "run", lambda args: seen.append(args.threads))
    used = []
    monkeypatch.setattr("unmask.cli.using_threads", lambda n: (used.append(n),
                                                                contextlib.nullcontext())[1])
    most, cpus = _most_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(most + 1))
    assert main(["generate", "--model", "demo", "hi"]) == 0
    assert capsys.readouterr().err == (
        f"unmask: note: OMP_NUM_THREADS={most + 1} is more than 4 threads per CPU this process "
        f"may use ({cpus}): using {most}; pass --threads N to choose\n")
    assert main(["generate", "--model", "demo", "hi", "--threads", "1"]) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", str(most))
    assert main(["generate", "--model", "demo", "hi"]) == 0
    assert capsys.readouterr().err == ""
    assert seen == [None, 1, None] and used == [most, 1, most]


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "\uff15"])
def test_omp_num_threads_of_non_ascii_digits_is_ignored(monkeypatch, value):
    """``OMP_NUM_THREADS=²`` was a ``ValueError`` traceback: ``str.isdigit`` takes ``²``
    (and Arabic-Indic or full-width digits), ``int`` refuses ``²``. Ignored, as ``abc`` is."""
    from unmask.commands import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    expected = default_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert default_threads() == expected


def _checkpoint(folder, **options):
    import torch

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, **tok.special_ids(),
                       **options)
    torch.manual_seed(0)
    return save_checkpoint(folder, model=Transformer(cfg), tokenizer=tok)


def test_steps_a_recommended_dynamic_policy_takes_are_not_refused_before_loading(
        tmp_path, capsys, monkeypatch):
    """A checkpoint recommending a dynamic policy (a LLaDA 2.x conversion: ``threshold``)
    takes any steps at least its blocks: ``--gen-length 8 --block-length 4 --steps 3`` was
    refused before loading, by the scheduled policy's rule ("a multiple of the number of
    blocks"), while ``api.generate`` ran the same options. CLI = API; the scheduled policy,
    recommended or given, still refuses them, with the same line."""
    import json

    from unmask import api
    from unmask.cli import main

    dynamic = _checkpoint(tmp_path / "thr", sample_defaults={"policy": "threshold"})
    flags = ["hi", "--gen-length", "8", "--block-length", "4", "--steps", "3", "--no-live",
             "--device", "cpu"]
    assert main(["generate", "--model", str(dynamic), *flags, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ran = api.generate(api.load_for_decoding(dynamic, device="cpu"), "hi",
                       config={"gen_length": 8, "block_length": 4, "steps": 3})
    assert [r["text"] for r in out["results"]] == ran.texts
    assert out["config"]["policy"] == "threshold" and out["steps"] == ran.steps
    said = ("unmask generate: error: --steps (3) must be a multiple of the number of blocks "
            "(2 = --gen-length 8 / --block-length 4); try 2 or 4\n")
    assert main(["generate", "--model", str(dynamic), *flags, "--policy", "llada"]) == 2
    assert capsys.readouterr().err == said
    scheduled = _checkpoint(tmp_path / "llada")
    assert main(["generate", "--model", str(scheduled), *flags]) == 2
    assert capsys.readouterr().err == said
    # unmask chat: the same rule, refused at startup (exit 2) before any turn is read; it
    # opened the session, refused every turn in field names and exited 0
    chat = ["--template", "plain", "--gen-length", "8", "--block-length", "4", "--steps", "3",
            "--no-live", "--device", "cpu"]
    stdin = _Stdin(monkeypatch)
    assert main(["chat", "--model", str(dynamic), *chat]) == 0
    assert stdin.reads == 1  # the session opened and read to the end of its input
    capsys.readouterr()
    for model, more in ((dynamic, ["--policy", "llada"]), (scheduled, [])):
        assert main(["chat", "--model", str(model), *chat, *more]) == 2
        assert capsys.readouterr().err == said.replace("generate", "chat")
    assert stdin.reads == 1


class _Stdin(io.StringIO):
    """Standard input at its end (a chat session ends at once), counting the reads."""

    def __init__(self, monkeypatch) -> None:
        super().__init__("")
        self.reads = 0
        monkeypatch.setattr(sys, "stdin", self)

    def readline(self, *args) -> str:  # type: ignore[override]
        self.reads += 1
        return super().readline(*args)


SEGMENTS = ["hi", "--gen-length", "16", "--segment-length", "8", "--block-length", "4",
            "--steps", "6", "--no-live", "--device", "cpu"]
WHOLE_RUN = ("unmask generate: error: --steps (6) must be a multiple of the number of blocks "
             "(4 = --gen-length 16 / --block-length 4); try 4 or 8\n")


def test_segments_are_refused_for_the_whole_run_before_loading(tmp_path, capsys, monkeypatch):
    """``--gen-length 16 --segment-length 8 --block-length 4 --steps 6`` was refused per
    segment, after loading: "--steps (3) must be a multiple of the number of blocks (2 =
    --gen-length 8 / ...); try 2 or 4", values the user never typed, and ``--steps 2`` was
    then refused again. The checkpoint's policy is read from its config.json without
    loading it: the whole run's line, before the model loads."""
    from unmask import api
    from unmask.cli import main

    model = _checkpoint(tmp_path / "m")

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(api, "load_for_decoding", load)
    assert main(["generate", "--model", str(model), *SEGMENTS]) == 2
    assert capsys.readouterr().err == WHOLE_RUN


def test_lengths_are_checked_under_the_loaded_checkpoints_options(tmp_path, capsys,
                                                                   monkeypatch):
    """Where the policy cannot be read before loading (a publisher's folder, converted as it
    loads: ``recommended_options`` None), or the checkpoint recommends the steps, the run's
    resolved options are checked right after the model loads, in the flags' words: the whole
    run's line for segments, and ``unmask chat`` refuses at startup (exit 2, no turn read)
    steps its checkpoint recommends that do not split over the given blocks (it refused
    every turn, in field names, and exited 0 at the end of its input)."""
    from unmask import commands
    from unmask.cli import main

    model = _checkpoint(tmp_path / "m")
    monkeypatch.setattr(commands, "recommended_options", lambda model: None)
    assert main(["generate", "--model", str(model), *SEGMENTS]) == 2
    assert capsys.readouterr().err == WHOLE_RUN
    monkeypatch.undo()

    recommends = _checkpoint(tmp_path / "rec",
                             sample_defaults={"block_length": 4, "gen_length": 8, "steps": 8})
    stdin = _Stdin(monkeypatch)
    flags = ["--gen-length", "12", "--block-length", "4", "--no-live", "--device", "cpu"]
    said = ("error: steps (8) must be a multiple of the number of blocks (3 = --gen-length 12 "
            "/ --block-length 4); try 6 or 9\n")
    assert main(["chat", "--model", str(recommends), "--template", "plain", *flags]) == 2
    assert capsys.readouterr().err == "unmask chat: " + said
    assert stdin.reads == 0
    assert main(["generate", "--model", str(recommends), "hi", *flags]) == 2
    assert capsys.readouterr().err == "unmask generate: " + said
    assert main(["chat", "--model", str(recommends), "--template", "plain", *flags,
                 "--steps", "9"]) == 0  # the hint works
    assert stdin.reads == 1


def test_recommended_options_are_read_without_torch(tmp_path):
    """``recommended_options``: a native checkpoint's ``sample_defaults`` (a run directory or
    its checkpoint folder; ``{}``: none), the shipped demo's; None where they are not known
    before loading (no checkpoint there, a publisher's folder, a config.json that is no JSON
    object). It imports no torch."""
    import json
    import shutil

    from unmask.commands import recommended_options
    from unmask.files import asset_path

    run = _checkpoint(tmp_path / "thr", sample_defaults={"policy": "threshold"}).parent
    assert recommended_options(str(run)) == {"policy": "threshold"}
    assert recommended_options(str(run / "checkpoint")) == {"policy": "threshold"}
    plain = _checkpoint(tmp_path / "plain")
    assert recommended_options(str(plain)) == {}
    assert recommended_options(str(tmp_path / "none")) is None
    publisher = tmp_path / "publisher"
    shutil.copytree(plain, publisher)
    config = json.loads((publisher / "config.json").read_text())
    (publisher / "config.json").write_text(json.dumps({**config, "model_type": "llada"}))
    assert recommended_options(str(publisher)) is None
    (publisher / "config.json").write_text("[1, 2]")
    assert recommended_options(str(publisher)) is None
    code = ("import sys\nfrom unmask.commands import recommended_options\n"
            "print(recommended_options('demo'), recommended_options(None), "
            "'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    shipped = json.loads((asset_path("demo") / "config.json").read_text())
    assert done.stdout == f"{shipped['sample_defaults']} {shipped['sample_defaults']} False\n"
