"""Infilling and editing as a demanding user runs them (review of session 37)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer, with_fim_tokens


@pytest.fixture(scope="module")
def fim_checkpoint(tmp_path_factory) -> str:
    """A tiny causal checkpoint with fill-in-the-middle sentinels (untrained)."""
    from unmask.checkpoint import save_checkpoint

    tok = with_fim_tokens(byte_tokenizer())
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64)
    cfg = dataclasses.replace(cfg, attention="causal", objective="ar", **tok.fim_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    return str(save_checkpoint(tmp_path_factory.mktemp("fim") / "run", model=model,
                               tokenizer=tok))


@pytest.mark.parametrize("flags", [["--policy", "threshold"], ["--cfg-scale", "1"],
                                   ["--remasking", "random"], ["--cache", "prefix"],
                                   ["--threshold", "0.5", "--policy", "threshold"]])
def test_the_commit_loop_options_are_refused_on_a_causal_checkpoint(fim_checkpoint, capsys,
                                                                      flags):
    """A causal checkpoint fills its gap (and a form) left to right; ``unmask infill
    --policy threshold`` (``--cfg-scale``, ``--cache``, ...) ran and changed nothing, where
    ``unmask generate`` and the server refuse them on such a checkpoint."""
    from unmask.cli import main

    run = ["--model", fim_checkpoint, "--no-live", "--device", "cpu"]
    assert main(["infill", "The [MASK:2] sat", *run, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "decoder 'ar'" in err and f"{flags[0]} " in err


def test_the_api_refuses_them_too_and_sampling_options_still_apply(fim_checkpoint):
    from unmask import api
    from unmask.checkpoint import load

    loaded = load(fim_checkpoint)
    for config in ({"policy": "factor"}, {"cfg_scale": 0.5}, {"decoder": "llada"}):
        with pytest.raises(UserError, match="decoder 'ar'|leave decoder out"):
            api.infill(loaded, "The [MASK:2] sat", config=config)
        with pytest.raises(UserError, match="decoder 'ar'|leave decoder out"):
            api.fill_form(loaded, '{"a": "<int:0..9>"}', config=config)
    # what the left-to-right fill reads still runs; steps pass at the tokens it writes
    sampled = {"temperature": 1.0, "top_k": 5, "seed": 3, "steps": 2}
    first = api.infill(loaded, "The [MASK:2] sat", config=sampled)
    assert first.text == api.infill(loaded, "The [MASK:2] sat", config=sampled).text
    assert len(first.detail.gaps[0].tokens) == 2
    assert api.fill_form(loaded, '{"a": "<int:0..9>"}', config={"steps": 1}).text


@pytest.mark.parametrize("flags", [["--steps", "100000000"], ["--steps", "2"],
                                   ["--block-length", "1"],
                                   ["--steps", "3", "--block-length", "1"]])
def test_steps_other_than_the_gap_width_are_refused_on_a_causal_checkpoint(fim_checkpoint,
                                                                           capsys, flags):
    """``unmask infill --steps 100000000`` (``--block-length 1``) on an AR-FIM checkpoint ran
    and ignored it (3 forwards), where the server refuses steps and block_length other than
    the gap's width (one step per token, one block): one check, ``refuse_loop_options``."""
    from unmask.cli import main

    run = ["--model", fim_checkpoint, "--no-live", "--device", "cpu"]
    assert main(["infill", "The [MASK:3] sat", *run, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not apply to decoder 'ar'" in err
    for fine in (["--steps", "3"], ["--block-length", "3"], ["--steps", "3", "--block-length",
                                                              "3"], []):
        assert main(["infill", "The [MASK:3] sat", *run, *fine]) == 0, fine
    capsys.readouterr()


def test_fill_form_and_the_api_check_steps_at_the_width_as_the_server(fim_checkpoint, tmp_path,
                                                                      capsys):
    from fastapi.testclient import TestClient

    from unmask import api
    from unmask.checkpoint import load
    from unmask.cli import main
    from unmask.config import SampleConfig
    from unmask.infill import parse_form
    from unmask.server import create_app

    loaded = load(fim_checkpoint)
    form = '{"a": "<int:0..9>", "b": "<bool>"}'
    width = sum(h.width for h in parse_form(form, loaded.tokenizer)[1])  # a step a token
    (tmp_path / "form.json").write_text(form)
    run = ["fill-form", str(tmp_path / "form.json"), "--model", fim_checkpoint, "--no-live",
           "--device", "cpu"]
    assert main([*run, "--steps", str(width + 1)]) == 2  # it ran, ignoring it
    assert "--steps does not apply to decoder 'ar'" in capsys.readouterr().err
    assert main([*run, "--steps", str(width)]) == 0 and main(run) == 0
    for bad in ({"steps": width + 1}, {"block_length": 1}):
        with pytest.raises(UserError, match="apply to decoder 'ar'"):
            api.fill_form(loaded, form, config=bad)
        with pytest.raises(UserError, match="apply to decoder 'ar'"):
            api.infill(loaded, "The [MASK:1-4] sat", config={"steps": 5, **bad})
    api.infill(loaded, "The [MASK:1-4] sat", config={"steps": 4, "block_length": 4})
    api.fill_form(loaded, form, config={"steps": width, "block_length": width})
    # a SampleConfig's steps is always set (the server's, unmask demo's 8): not checked here
    api.infill(loaded, "The [MASK:2] sat", config=SampleConfig(steps=8))
    api.fill_form(loaded, form, config=SampleConfig(steps=8))
    # the server: the same answers, and its defaults pass
    with TestClient(create_app(loaded)) as client:
        for path, body, n in (("/v1/infill", {"template": "The [MASK:1-4] sat"}, 4),
                              ("/v1/forms", {"form": form}, width)):
            assert client.post(path, json=body).status_code == 200
            sized = {**body, "steps": n, "block_length": n}
            assert client.post(path, json=sized).status_code == 200
            r = client.post(path, json={**body, "steps": n + 1})
            assert r.status_code == 400 and r.json()["error"]["param"] == "steps"


def test_a_causal_fill_reports_its_steps_on_the_template_canvas(fim_checkpoint):
    """``api.infill``'s ``step_callback`` was never called on a causal checkpoint (so ``unmask
    infill`` showed no live view there, and a streamed ``/v1/infill`` sent no step): it sees
    the template's canvas as the left-to-right fill writes the gap, as a form's fill shows."""
    from unmask import api
    from unmask.checkpoint import load

    loaded = load(fim_checkpoint)
    tok = loaded.tokenizer
    config = {"temperature": 1.0, "seed": 1}
    for template, before, after in (("The [MASK:3] sat", "The ", " sat"),
                                    ("[MASK:1-4] sat", "", " sat")):
        seen: list[tuple[int, list[int]]] = []

        def record(step: int, canvas: torch.Tensor, seen: list = seen) -> None:
            seen.append((step, canvas[0].tolist()))

        res = api.infill(loaded, template, config=config, step_callback=record).detail
        assert res.text == api.infill(loaded, template, config=config).text  # no other draws
        gap = res.gaps[0].tokens
        assert [s for s, _ in seen] == list(range(1, len(gap) + 1))  # a step per token
        head, tail = tok.encode(before), tok.encode(after)
        for s, row in seen:
            assert row[: len(head)] == head and row[len(row) - len(tail):] == tail
            assert row[len(head) : len(head) + s] == gap[:s]  # written so far, masks after
        assert seen[-1][1] == head + gap + tail


def test_a_causal_gap_at_the_start_is_shown_without_the_hidden_line_break():
    from unmask.infill import infill_causal
    from unmask.tokenizer import train_bpe

    tok = with_fim_tokens(train_bpe(["the cat sat on the mat. The dog sat.\n"] * 20,
                                    vocab_size=300))
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, attention="causal",
                       objective="ar", **tok.fim_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    seen: list[list[int]] = []
    res = infill_causal(model, tok, "[MASK:2] sat.", step_callback=lambda s, t: seen.append(
        t[0].tolist()))
    tail = tok.encode(" sat.")
    assert len(seen) == 2 and all(len(row) == 2 + len(tail) for row in seen)  # no line break
    assert seen[-1][2:] == tail and tok.decode(seen[-1]).lstrip() == res.text


@pytest.mark.parametrize("argv", [
    ["edit", "--text", "abc", "--span", "x"],
    ["edit", "--text", "abc", "--span", "1:2", "--rounds", "0"],
    ["edit", "--text", "abc", "--lowest", "0"],
    ["edit", "--text", "abc", "--span", "1:2", "--temperature", "-1"],
    ["edit", "--text", "abc", "--span", "0:1", "--confidence-mode", "visible"],
    ["infill", "a [MASK]", "--max-candidates", "0"],
    ["infill", "a [MASK]", "--temperature", "-1"],
])
def test_a_flag_error_is_said_before_torch_loads(argv):
    """These typos were refused only after torch had loaded (seconds, where ``--help`` takes
    a fraction of one): the command's ``check_flags`` refuses them first, in one line."""
    import subprocess
    import sys

    code = ("import sys\nfrom unmask.cli import main\n"
            f"rc = main({[*argv, '--model', '/nowhere']!r})\n"
            "print(rc, 'torch' in sys.modules, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    *said, last = r.stderr.strip().splitlines()
    assert last == "2 False" and len(said) == 1 and "error: --" in said[0]


def test_a_template_that_names_a_file_says_how_to_give_the_file(tmp_path, monkeypatch, capsys):
    """``unmask infill "my story.txt"`` (as ``fill-form`` takes a file) said only "template has
    no gaps"; the template is the text itself, and the line says how to give a file."""
    from unmask.cli import main

    (tmp_path / "my story.txt").write_text("The [MASK:2] sat\n")
    monkeypatch.chdir(tmp_path)
    assert main(["infill", "my story.txt", "--model", "/nowhere"]) == 2
    err = capsys.readouterr().err
    assert "names a file" in err and "unmask infill - < 'my story.txt'" in err
    assert main(["infill", "no such.txt", "--model", "/nowhere"]) == 2  # not a file: as before
    assert "template has no gaps: mark them" in capsys.readouterr().err
    for text in ("~5 minutes to go", "~nosuchuser x"):  # no such user: a RuntimeError traceback
        assert main(["infill", text, "--model", "/nowhere"]) == 2
        assert "template has no gaps: mark them" in capsys.readouterr().err
    monkeypatch.setenv("HOME", str(tmp_path))  # "~/my story.txt": the hint's path expanded
    assert main(["infill", "~/my story.txt", "--model", "/nowhere"]) == 2
    assert f"unmask infill - < '{tmp_path}/my story.txt'" in capsys.readouterr().err


def test_confidence_mode_without_lowest_is_refused():
    """``confidence_mode`` says how ``lowest`` scores the tokens to re-mask; with spans or a
    regex nothing is scored, and ``--confidence-mode visible --span 0:1`` ran, ignoring it."""
    from unmask.infill import edit

    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)).eval()
    for how in ({"spans": [(0, 1)]}, {"regex": "b"}):
        with pytest.raises(UserError, match="confidence_mode 'visible' applies to lowest"):
            edit(model, tok, "abc def", confidence_mode="visible", **how)
        assert edit(model, tok, "abc def", **how).text.endswith("c def")  # masked: the default
    assert edit(model, tok, "abc def", lowest=1, confidence_mode="visible").changes is not None


def test_the_guidance_benchmark_writes_its_results_whole_or_not_at_all(benchmark, tmp_path,
                                                                         monkeypatch):
    """``benchmarks/guidance.py`` wrote ``--json`` in place: a write cut short (here the file
    size limit a full disk acts as) left half a JSON file where the last results were."""
    import json
    import os
    import resource
    import signal
    import sys

    from unmask.checkpoint import save_checkpoint
    from unmask.config import TrainConfig
    from unmask.objectives import objective_spec

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64)
    cfg = objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=32))
    torch.manual_seed(0)
    run = str(save_checkpoint(tmp_path / "embed", model=Transformer(cfg).eval(), tokenizer=tok))
    out = tmp_path / "res" / "guidance.json"
    out.parent.mkdir()
    out.write_text('{"old": 1}\n')
    bench = benchmark("guidance")
    monkeypatch.setattr(sys, "argv", ["guidance.py", "--model", run, "--n", "1", "--scales",
                                      "0", "--sample-steps", "2", "--gen-length", "4",
                                      "--json", str(out)])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            # its table to nowhere: pytest's capture is a file, which the limit would stop
            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (300, resource.RLIM_INFINITY))
            bench.main()
        except OSError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the write failed
    assert out.read_text() == '{"old": 1}\n'  # was the first 300 bytes of the new results
    assert [p.name for p in out.parent.iterdir()] == ["guidance.json"]  # no temporary left
    bench.main()  # no limit: written (some 800 bytes)
    assert json.loads(out.read_text())["rows"][0]["scale"] == 0.0
