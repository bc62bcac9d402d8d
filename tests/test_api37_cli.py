"""Session 37 (api): the command line as a demanding user meets it. ``unmask generate`` and
``unmask chat`` refuse a flag that is wrong whatever the model before torch loads (as
``unmask demo`` does: one ``check_flags`` per command, run by ``unmask.cli``)."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

WRONG = (
    (["--temperature", "-1"], "--temperature must be a finite number >= 0, got -1.0\n"),
    (["--gen-length", "0"], "--gen-length must be positive, got 0\n"),
    (["--gen-length=-3"], "--gen-length must be positive, got -3\n"),
    (["--block-length", "0"], "--block-length must be positive, got 0\n"),
    (["--top-p", "2"], "--top-p must be in (0, 1], got 2.0\n"),
    (["--draft-steps", "2"], "--draft-steps applies with --draft (speculative decoding)\n"),
)


def _refusal(argv: list[str]) -> tuple[str, str]:
    code = ("import sys\nfrom unmask.cli import main\n"
            f"rc = main({argv!r})\n"
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    return done.stdout, done.stderr


@pytest.mark.parametrize("command", ["generate", "chat"])
@pytest.mark.parametrize("flags,said", WRONG)
def test_a_wrong_flag_is_refused_before_torch_loads(command, flags, said):
    """``unmask generate --model M hi --temperature -1`` imported torch and checked the flags
    in ``run`` (5-8 s on a shared 2-core machine, against 0.3 s for ``--help``)."""
    prompt = ["hi"] if command == "generate" else []
    out, err = _refusal([command, "--model", "demo", *prompt, *flags])
    assert out == "2 False\n", (out, err)
    assert err == f"unmask {command}: error: {said}"


def test_system_without_chat_is_refused_before_torch_loads():
    out, err = _refusal(["generate", "--model", "demo", "hi", "--system", "be brief"])
    assert out == "2 False\n", (out, err)
    assert err == "unmask generate: error: --system and --template apply to --chat\n"


def test_block_length_zero_is_refused_by_the_config_itself():
    """``SampleConfig(block_length=0)`` was accepted and refused only by a decoder's check,
    which needs torch; the server and the API meet the same refusal, earlier."""
    from unmask.config import SampleConfig
    from unmask.errors import UserError

    with pytest.raises(UserError, match="block_length must be positive, got 0"):
        SampleConfig(block_length=0)


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
        tmp_path, capsys):
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
