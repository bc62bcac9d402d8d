"""``unmask eval`` review fixes (session 31): the demo's held-out text is prepared only once
the checks that need none of it have passed, and its temporary folder is removed on Ctrl-C;
``unmask eval --tasks`` hands every sampling option lm-eval's model takes (the penalties
included) on to it, from the one list read off ``UnmaskLM``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from test_tasks_room import LONG

from unmask.cli import main


def _not_prepared(out: object) -> Path:
    raise AssertionError("the demo's held-out text was prepared")


@pytest.mark.parametrize("flags, said", [
    (["--no-score", "--seq-len", "300"], "--seq-len 300 is longer than the model's context"),
    (["--seq-len", "300"], "--seq-len 300 is longer than the model's context"),
    (["--no-score", "--device", "cuda"], "torch sees no CUDA device"),
    (["--no-score", "--task-file", "TASKS", "--gen-length", "1"],
     "--gen-length 1 would cut the task's answers"),
])  # fmt: skip
def test_eval_demo_fails_before_its_heldout_text_is_prepared(flags, said, tmp_path, monkeypatch,
                                                             capsys):
    """``unmask eval demo`` prepared its held-out text (~5 s) first, before checks that need
    none of it: a --seq-len past the context, --device cuda without one, a task file's
    --gen-length. Now each fails in one line and nothing is prepared."""
    import unmask.report

    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    (tmp_path / "eval.jsonl").write_text(json.dumps(LONG) + "\n")
    flags = [str(tmp_path) if f == "TASKS" else f for f in flags]
    monkeypatch.setattr(unmask.report, "demo_heldout", _not_prepared)
    assert main(["eval", "demo", "--no-plot", "--json", *flags]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err


def test_eval_demo_removes_its_temporary_folder_on_ctrl_c(tmp_path, monkeypatch, capsys):
    """The held-out text is prepared into a temporary folder; Ctrl-C while the bound is
    measured ends the command (exit 130) and leaves no folder behind."""
    import unmask.report
    from unmask.data import prepare
    from unmask.files import asset_path

    text = tmp_path / "text.txt"
    text.write_text("In the beginning God created the heavens and the earth.\n" * 1000)
    made: list[Path] = []

    def small(out: Path) -> Path:  # the demo's tokenizer on a small text: quick to prepare
        made.append(Path(out))
        prepare([text], out, tokenizer=asset_path("demo") / "tokenizer.json",
                val_fraction=0.5, progress=False)
        return Path(out)

    def interrupted(*a: object, **k: object) -> object:
        assert made and made[0].is_dir()  # prepared, and there while the bound runs
        raise KeyboardInterrupt

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(unmask.report, "demo_heldout", small)
    monkeypatch.setattr(unmask.report, "heldout_bound", interrupted)
    assert main(["eval", "demo", "--no-score", "--no-plot", "--device", "cpu"]) == 130
    assert made and made[0].is_relative_to(temp) and list(temp.iterdir()) == []


def test_eval_tasks_hands_every_sampling_option_to_lm_eval(tmp_path, monkeypatch, capsys):
    """``unmask eval --tasks`` hands lm-eval's model the sampling flags it takes; the list was
    written twice (the command's and UnmaskLM's arguments) and nothing tested that the
    penalties reached the model. Now the list is read off UnmaskLM's arguments."""
    pytest.importorskip("lm_eval")
    from test_eval31_lm_eval import GEN_YAML

    import unmask.lm_eval
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.lm_eval import SAMPLING_ARGS
    from unmask.model import Transformer
    from unmask.sampling.penalties import PENALTY_FIELDS
    from unmask.tokenizer import byte_tokenizer

    assert set(PENALTY_FIELDS) <= set(SAMPLING_ARGS)
    tok = byte_tokenizer()
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", model=Transformer(model_preset(
        "tiny", vocab_size=tok.vocab_size, max_seq_len=48)), tokenizer=tok)
    (tmp_path / "gen.jsonl").write_text(json.dumps({"question": "say 1:", "answer": " 1"}) + "\n")
    (tmp_path / "gen.yaml").write_text(GEN_YAML.format(data=tmp_path / "gen.jsonl"))
    want = {"gen_length": 8, "steps": 4, "block_length": 4, "policy": "threshold",
            "cache": "prefix", "temperature": 0.5, "decoder": "llada",
            "repetition_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": 0.25,
            "no_repeat_ngram_size": 3}  # fmt: skip
    assert set(want) == set(SAMPLING_ARGS)
    seen = {}

    def run_tasks(lm: object, tasks: object, **kw: object) -> dict:
        seen.update(lm.model_args)  # type: ignore[attr-defined]
        return {"results": {}}

    monkeypatch.setattr(unmask.lm_eval, "run_tasks", run_tasks)
    flags = [x for k, v in want.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["eval", str(tmp_path / "ck"), "--tasks", "tiny_gen31", "--include-path",
                 str(tmp_path), *flags, "--no-score", "--no-plot", "--json",
                 "--device", "cpu"]) == 0
    assert {k: seen.get(k) for k in want} == want
    assert not [n for n in json.loads(capsys.readouterr().out)["notes"]
                if n.startswith("lm-eval:")]
