"""User mistakes found by the bad-input audit: each class gets one line (CLI: exit status 2,
no traceback; server: a 400 in OpenAI's error shape, and the server keeps serving), and a
failed run leaves nothing half-written. Tiny checkpoints trained for one step on a byte
corpus; commands run in-process through ``unmask.cli.main`` (a traceback there is an
exception out of ``main``, which these tests would raise)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest
from corpus_helpers import word_corpus

from unmask import api, cli
from unmask.checkpoint import load
from unmask.config import SampleConfig, TrainConfig
from unmask.errors import UserError

WORDS = "the cat sat on a mat and ran far away under big red tree".split()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One-step runs of the families the audit touched, on one prepared byte corpus."""
    from unmask.train import train

    root = tmp_path_factory.mktemp("audit")
    data = word_corpus(root, WORDS, 400, 0, end="")
    base = TrainConfig(
        data=str(data),
        preset="tiny",
        seq_len=24,
        batch_size=2,
        steps=1,
        warmup=1,
        eval_every=0,
        eval_batches=1,
        save_every=0,
        device="cpu",
    )
    out = {"data": data}
    for name, kw in [
        ("mdlm", {}),
        ("ar", {"fim_rate": 0.5}),
        ("hybrid", {"draft_block": 4}),
        ("embed-diffusion", {}),
        ("latent-ae", {"latent_len": 8}),
        ("latent-diffusion", {"init": str(root / "latent-ae"), "latent_len": 8}),
    ]:
        cfg = dataclasses.replace(base, objective=name, out=str(root / name), **kw)
        out[name] = train(cfg, progress=False)
    return out


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    """Run ``unmask ARGV``: exit status 2 and one error line naming ``words`` (a flag
    argparse refuses too: no usage block); returns that line."""
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse
        status = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2, err
    assert err and err[-1].startswith(("unmask ", "unmask:")) and "error:" in err[-1], err
    assert len(err) == 1, err
    for w in words:
        assert w in err[-1], err[-1]
    return err[-1]


TRAIN = ["--preset", "tiny", "--seq-len", "24", "--batch-size", "2", "--steps", "1",
         "--warmup", "1", "--eval-every", "0", "--device", "cpu", "--no-progress"]  # fmt: skip


def test_train_numbers_and_settings_are_refused_in_one_line(runs, tmp_path, capsys):
    data = str(runs["data"])
    out = str(tmp_path / "run")
    cases = [
        (["--lr", "nan"], "expected a finite number"),
        (["--lr", "-1"], "lr=-1.0 must be in [0, inf)"),
        (["--beta2", "1"], "beta2=1.0 must be in [0, 1)"),
        (["--warmup", "-2"], "warmup=-2 must be >= 0"),
        (["--model-set", "d_model=abc"], "d_model='abc' should be int"),
        (["--objective", "embed-diffusion", "--init", str(runs["mdlm"])],
         "its weights do not fit a model of objective 'embed-diffusion'"),
        (["--objective", "mdlm", "--init", str(runs["embed-diffusion"])],
         "continues only as embed-diffusion, not as 'mdlm'"),
    ]  # fmt: skip
    for extra, words in cases:
        fails(capsys, ["train", "--data", data, "--out", out, *TRAIN, *extra], words)
        assert not Path(out).exists(), extra  # no empty run folder left behind
    fails(capsys, ["train", "--objective", "sft", "--data", data, "--out", out, *TRAIN],
          "is a folder; objective sft reads a JSONL file")  # fmt: skip
    (tmp_path / "file").write_text("x")
    fails(
        capsys,
        ["train", "--data", data, "--out", str(tmp_path / "file"), *TRAIN],
        "a file is there",
    )


def test_a_new_run_that_fails_before_its_checkpoint_leaves_no_folder(runs, tmp_path, capsys):
    """SFT writes train_config.json before it reads its pairs; a prompt too long for seq_len
    fails after that. Nothing stays (nested new folders too), so the same --out works next."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "the cat " * 12, "response": "sat"}) + "\n")
    out = tmp_path / "new" / "run"
    argv = ["train", "--objective", "sft", "--data", str(pairs), "--init", str(runs["mdlm"]),
            "--out", str(out), *TRAIN, "--seq-len", "64"]  # fmt: skip
    fails(capsys, argv, "leaves no room for the response")
    assert not (tmp_path / "new").exists()
    pairs.write_text(json.dumps({"prompt": "the cat", "response": "sat"}) + "\n")
    assert cli.main(argv) == 0  # the same --out, now a fine run
    assert (out / "checkpoint" / "model.safetensors").is_file()


def test_every_sft_example_is_checked_before_the_first_step(runs, tmp_path, capsys):
    """One over-long example among many is refused before training, not when a batch first
    draws it (a short run never did; a long one died mid-run, and so did every resume)."""
    pairs = tmp_path / "pairs.jsonl"
    good = [json.dumps({"prompt": "the cat", "response": "sat"})] * 40
    pairs.write_text("\n".join([*good, json.dumps({"prompt": "the cat " * 12,
                                                    "response": "sat"})]) + "\n")
    out = tmp_path / "run"
    argv = ["train", "--objective", "sft", "--data", str(pairs), "--init", str(runs["mdlm"]),
            "--out", str(out), *TRAIN, "--seq-len", "64"]  # fmt: skip
    assert "pairs.jsonl:41" in fails(capsys, argv, "leaves no room for the response")
    assert not out.exists()


def test_a_refused_resume_leaves_the_run_as_it_was(runs, tmp_path, capsys):
    """Changed settings a resume refuses (too long for the model, not divisible) are not
    saved into the run's plan: the next plain --resume continues as before."""
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(runs["data"]), "--out", str(out), *TRAIN]) == 0
    plan = (out / "train_config.json").read_bytes()
    for extra, words in [(["--steps", "4", "--seq-len", "40000"], "exceeds the model's"),
                         (["--steps", "4", "--batch-size", "3", "--grad-accum", "2"],
                          "not divisible"),
                         (["--steps", "4", "--grad-accum", "0"],
                          "--grad-accum=0 must be positive")]:
        assert cli.main(["train", "--resume", "--out", str(out), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()  # "resuming at ...", the error
        assert err[-1].startswith("unmask train: error:") and words in err[-1], err
        assert (out / "train_config.json").read_bytes() == plan, extra
    assert cli.main(["train", "--resume", "--out", str(out), "--steps", "2",
                     "--no-progress"]) == 0
    assert json.loads((out / "train_config.json").read_text())["steps"] == 2


def test_the_library_train_refuses_as_the_cli_does_and_leaves_no_folder(runs, tmp_path):
    """``unmask.train.train`` itself checks the numbers and the --init family, and a new run
    it refuses after making the run folder leaves no folder behind."""
    from unmask.train import train

    base = TrainConfig(data=str(runs["data"]), preset="tiny", seq_len=24, batch_size=2,
                       steps=1, warmup=1, eval_every=0, device="cpu")  # fmt: skip
    out = tmp_path / "new" / "run"
    cases = [
        ({"lr": -1.0}, "lr=-1.0 must be in [0, inf)"),
        ({"init": str(runs["embed-diffusion"])}, "continues only as embed-diffusion"),
        ({"grad_accum": 3}, "grad_accum=3"),  # refused after the run folder was made
    ]
    for change, words in cases:
        with pytest.raises(UserError, match=re.escape(words)):
            train(dataclasses.replace(base, out=str(out), **change), progress=False)
        assert not (tmp_path / "new").exists(), change
    assert (train(dataclasses.replace(base, out=str(out)), progress=False) / "checkpoint").is_dir()


def test_distill_refuses_a_corpus_of_another_tokenizer(runs, tmp_path, capsys):
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("the cat sat on the mat\n" * 300)
    other = tmp_path / "bpe"
    prepare([tmp_path / "a.txt"], other, tokenizer="bpe", vocab_size=300, val_fraction=0,
            progress=False)  # fmt: skip
    out = tmp_path / "student"
    fails(capsys, ["distill", "--teacher", str(runs["mdlm"]), "--data", str(other), "--out",
                   str(out), "--trajectories", "2", "--prompt-length", "4", "--gen-length", "8",
                   "--device", "cpu", "--no-progress"], "its tokenizer", "the teacher")  # fmt: skip
    assert not out.exists()


def test_decoders_a_checkpoint_cannot_use_are_refused_by_api_cli_and_server(runs, capsys):
    """A token decoder on a continuous checkpoint, a continuous drafter, guide_words or
    predraft on a decoder that ignores them: one line from ``api.choose`` (and so the CLI),
    and a serve refused at start."""
    from unmask.server.engine import make_engine
    from unmask.server.metrics import Metrics
    from unmask.server.state import ServerLimits

    latent, ar = load(runs["latent-diffusion"]), load(runs["ar"])
    with pytest.raises(UserError, match="cannot sample a checkpoint of objective latent-diff"):
        api.choose(latent, SampleConfig(decoder="llada"))
    with pytest.raises(UserError, match="the drafter's objective is embed-diffusion"):
        api.choose(ar, SampleConfig(), draft=load(runs["embed-diffusion"]))
    with pytest.raises(UserError, match="predraft applies to a checkpoint trained with"):
        api.choose(ar, SampleConfig(predraft="ends"))
    with pytest.raises(UserError, match="guide_words steer the continuous decoders"):
        api.choose(ar, SampleConfig(guide_words="cat"))
    assert api.choose(load(runs["hybrid"]), SampleConfig(predraft="ends")) == "hybrid"
    gen = ["--device", "cpu", "--no-live", "--gen-length", "4", "--steps", "4"]
    fails(capsys, ["generate", "x", "--model", str(runs["embed-diffusion"]), "--decoder",
                   "llada", *gen], "use decoder 'embed-diffusion'")  # fmt: skip
    fails(
        capsys,
        ["generate", "x", "--model", str(runs["mdlm"]), "--predraft", "ends", *gen],
        "not to decoder 'llada'",
    )
    with pytest.raises(UserError, match="predraft"):
        make_engine(
            load(runs["mdlm"]), ServerLimits(), Metrics(), draft_options={"predraft": "ends"}
        )


def test_template_tasks_go_through_the_api_on_cli_and_server(runs, capsys):
    """fill-form, edit and eval --gaps refuse what the API refuses (a latent model; edit on a
    causal one), as the server does, instead of running the commit loop on the wrong model
    or failing with the model's "pass sigma"."""
    run = ["--device", "cpu", "--no-live"]
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}'
    fails(capsys, ["fill-form", "--schema", schema, "--model", str(runs["latent-diffusion"]),
                   *run], "form filling runs the masked-diffusion commit loop")  # fmt: skip
    fails(capsys, ["fill-form", "--schema", schema, "--model", str(runs["embed-diffusion"]),
                   *run], "objective embed-diffusion has no use for")  # fmt: skip
    fails(capsys, ["edit", "--text", "the cat", "--span", "4:7", "--model", str(runs["ar"]),
                   *run], "edit needs a masked diffusion checkpoint")  # fmt: skip
    fails(capsys, ["infill", "the [MASK:2] sat", "--model", str(runs["latent-diffusion"]),
                   *run], "infill runs the masked-diffusion commit loop")  # fmt: skip
    gaps = runs["data"].parent / "gaps.jsonl"
    gaps.write_text(json.dumps({"prefix": "the", "middle": " cat", "suffix": " sat"}) + "\n")
    fails(
        capsys,
        [
            "eval",
            str(runs["embed-diffusion"]),
            "--gaps",
            str(gaps),
            "--no-score",
            "--no-plot",
            "--device",
            "cpu",
        ],
        "eval --gaps runs the masked-diffusion",
    )


def test_generation_only_options_are_refused_by_the_template_tasks(runs, capsys):
    """Drafting, the hybrid's layout and continuous guidance do nothing for infill, edit and
    forms: one line instead of a silent no-op (``unmask infill --draft-length 4`` ran)."""
    run = ["--device", "cpu", "--no-live", "--model", str(runs["mdlm"])]
    for flag, value in (("--draft-length", "4"), ("--predraft", "ends"),
                        ("--guide-words", "cat"), ("--segment-length", "8"),
                        ("--edit-threshold", "0.5"), ("--max-post-steps", "4")):  # fmt: skip
        fails(capsys, ["infill", "the [MASK:2] sat", flag, value, *run],
              f"error: {flag} applies to generation", "not to infill")  # fmt: skip
    fails(capsys, ["edit", "--text", "the cat", "--span", "4:7", "--draft-steps", "2", *run],
          "error: --draft-steps applies to generation", "not to edit")  # fmt: skip
    fails(capsys, ["fill-form", '{"a": "<int:0..9>"}', "--draft-cache", "none", *run],
          "error: --draft-cache applies to generation", "not to fill_form")  # fmt: skip
    fails(capsys, ["infill", "the [MASK:2] sat", "--decoder", "bd3lm", *run],
          "decoder 'bd3lm' applies to generation", "infill fills the canvas")  # fmt: skip
    ld = load(runs["mdlm"])
    with pytest.raises(UserError, match="guide_scale applies to generation"):
        api.infill(ld, "the [MASK:2] sat", config=SampleConfig(guide_scale=0.5))
    assert api.infill(ld, "the [MASK:2] sat", config=SampleConfig(temperature=0.5)).text


def test_server_answers_400_for_what_it_found_late_and_keeps_serving(runs):
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    def shape(r):  # OpenAI's error body
        body = r.json()
        assert r.status_code == 400 and set(body["error"]) >= {"message", "type", "code"}, body
        return body["error"]["message"]

    ar = create_app(load(runs["ar"]), access_log=False)
    with TestClient(ar, raise_server_exceptions=False) as c:
        # an impossible regex found while the streamed answer's form is built (was a 500)
        r = c.post("/v1/completions", json={"prompt": "the", "max_tokens": 2, "stream": True,
                                            "guided_regex": "[0-9]{50}"})  # fmt: skip
        assert "no sequence of 2 tokens satisfies it" in shape(r)
        for field in ({"policy": "bogus"}, {"cache": "bogus"}):  # a causal model checks names
            assert "unknown" in shape(
                c.post("/v1/completions", json={"prompt": "the", "max_tokens": 2, **field})
            )
        r = c.post("/v1/edit", json={"text": "the cat", "spans": [[4, 7]]})
        assert "masked diffusion" in shape(r)
        r = c.post("/v1/completions", json={"prompt": "the cat " * 20, "max_tokens": 4})
        assert "shorten the prompt" in shape(r)
        r = c.post("/v1/completions", json={"prompt": "the", "max_tokens": 2})
        assert r.status_code == 200
    latent = create_app(load(runs["latent-diffusion"]), access_log=False)
    with TestClient(latent, raise_server_exceptions=False) as c:
        # the decoder refuses a prompt at its start: a plain 400 (streamed: the error event)
        r = c.post("/v1/completions", json={"prompt": "the", "max_tokens": 24})
        assert "takes no prompt" in shape(r)
        r = c.post("/v1/completions", json={"prompt": "the", "max_tokens": 24, "stream": True})
        assert r.status_code == 200 and "takes no prompt" in r.text
        r = c.post("/v1/forms", json={"schema": {"type": "integer"}})
        assert "commit loop" in shape(r)
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 8, "steps": 2})
        assert "writes windows of 24 tokens" in shape(r)  # its autoencoder's --seq-len
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 24, "steps": 2})
        assert r.status_code == 200


def test_unbounded_numbers_get_a_default_width_a_schema_can_widen(runs):
    """A JSON Schema integer with no maximum: at most INT_DIGITS digits, so causal greedy
    filling stops (it ran to the hole's width, 33 digits); the schema's own range widens it."""
    from unmask.infill.schema import INT_DIGITS, fill_schema, schema_form

    loaded = load(runs["ar"])
    tok = loaded.tokenizer
    assert schema_form({"type": "integer"}, tok).width == INT_DIGITS + 1  # a sign and digits
    wide = {"type": "integer", "minimum": 0, "maximum": 10 ** (INT_DIGITS + 2) - 1}
    assert schema_form(wide, tok).width == INT_DIGITS + 2
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    res = fill_schema(loaded.model, tok, schema, SampleConfig(temperature=0.0))
    assert isinstance(res.value["n"], int) and abs(res.value["n"]) < 10**INT_DIGITS


def test_runtime_flags_out_of_range_are_one_line(runs, capsys):
    """Seeds beyond torch's 64 bits, thread counts far past the CPUs (100,000 crashed torch),
    devices torch knows but unmask does not run on, a bad number: one line, exit 2, before
    any model work."""
    gen = ["generate", "x", "--model", str(runs["mdlm"]), "--gen-length", "4", "--no-live"]
    fails(capsys, [*gen, "--seed", "99999999999999999999999"], "--seed", "2**63 - 1")
    fails(capsys, [*gen, "--seed", "-1"], "--seed")
    fails(capsys, [*gen, "--threads", "100000"], "--threads", "4 per CPU")
    fails(capsys, [*gen, "--device", "meta"], "device 'meta' is not supported")
    fails(capsys, [*gen, "--gen-length", "abc"], "--gen-length", "--help")
    # an option only another commit policy reads would do nothing
    fails(capsys, [*gen, "--threshold", "0.5"], "threshold is an option of policy 'threshold'")
    fails(capsys, [*gen, "--factor", "2", "--policy", "threshold"], "policy 'factor'")
    assert cli.main([*gen, "--threshold", "0.5", "--policy", "threshold"]) == 0
    with pytest.raises(UserError, match="seed must be from 0"):
        api.generate(load(runs["mdlm"]), "x",
                     config=SampleConfig(gen_length=4, steps=4, seed=2**70))


def test_eval_refuses_what_it_cannot_report_and_writes_strict_json(runs, tmp_path, capsys):
    """A dataset of another tokenizer (its ids mean other tokens to the model: the bound would
    be garbage), a plot path that cannot be written or is not a PNG (metrics.jsonl was
    overwritten), and --json never writes NaN (not JSON) for a run without a bound."""
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("the cat sat on the mat and ran far away\n" * 3000)
    other = tmp_path / "bpe"
    prepare([tmp_path / "a.txt"], other, tokenizer="bpe", vocab_size=300, val_fraction=0.2,
            progress=False)  # fmt: skip
    run = str(runs["mdlm"])
    base = ["eval", run, "--no-score", "--no-plot", "--device", "cpu"]
    fails(capsys, [*base, "--data", str(other)], "another tokenizer")
    metrics = Path(run) / "metrics.jsonl"
    before = metrics.read_bytes()
    fails(capsys, ["eval", run, "--no-score", "--plot", str(metrics)], "PNG")
    fails(capsys, ["eval", run, "--no-score", "--plot", str(tmp_path / "no" / "x.png")],
          "no folder")
    assert metrics.read_bytes() == before
    assert cli.main(["eval", str(runs["embed-diffusion"]), "--no-score", "--no-plot",
                     "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))


def test_input_that_is_not_utf8_and_paths_that_cannot_be_made_are_one_line(
    runs, tmp_path, capsys, monkeypatch
):
    """Bytes the locale could not decode (argv holds them as surrogate escapes; stdin), and an
    output path under a file: one line, exit 2, never the tokenizer's or the OS's traceback."""
    import io

    model = str(runs["mdlm"])
    fails(capsys, ["generate", "--model", model, "--no-live", "--gen-length", "4",
                   b"caf\xe9".decode("utf-8", "surrogateescape")], "is not UTF-8 text")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9 ole\n"),
                                                       encoding="utf-8",
                                                       errors="surrogateescape"))
    fails(capsys, ["edit", "--model", model, "--no-live", "--text", "-", "--lowest", "1"],
          "input is not UTF-8 text")
    (tmp_path / "file").write_text("x")
    fails(capsys, ["convert", model, str(tmp_path / "file" / "sub")], str(tmp_path / "file"))
    fails(capsys, ["prepare", str(tmp_path / "file"), "-o", str(tmp_path / "file" / "d"),
                   "--tokenizer", "byte", "--no-progress"], str(tmp_path / "file"))


def test_step_counts_and_overlong_edits_are_refused_on_every_command(runs, capsys):
    """``--steps 0`` or negative is refused by infill, edit and fill-form as by generate (it
    filled in one forward, silently); ``edit --lowest`` on a text longer than the context is
    one line, as ``--span`` on it is."""
    model = ["--model", str(runs["mdlm"]), "--no-live"]
    fails(capsys, ["infill", *model, "a [MASK:2] b", "--steps", "-3"], "--steps")
    fails(capsys, ["edit", *model, "--text", "the cat", "--span", "0:3", "--steps", "0"],
          "--steps")
    fails(capsys, ["fill-form", *model, '{"a": "<int:0..9>"}', "--steps", "0"], "--steps")
    fails(capsys, ["edit", *model, "--text", "word " * 400, "--lowest", "2"],
          "more than the model's context")


@pytest.mark.parametrize(("meta", "task", "words"), [
    ({}, "sudoku4", "needs 'puzzle'"),
    ({"puzzle": "zz"}, "sudoku4", "needs 'puzzle'"),  # no cells: was scored as solved
    ({"puzzle": "1" * 81}, "sudoku4", "4x4 grid"),
    ({}, "countdown3", "needs 'numbers'"),
    ({"numbers": [1, 2], "target": "7"}, "countdown3", "'target' (an integer)"),
])
def test_task_items_with_a_bad_meta_are_refused_when_read(tmp_path, meta, task, words):
    from unmask.tasks import read_items

    f = tmp_path / "eval.jsonl"
    f.write_text(json.dumps({"task": task, "prompt": "abc", "answer": "cba", "meta": meta}))
    with pytest.raises(UserError, match=re.escape(words)):
        read_items(f)


@pytest.mark.parametrize(("setting", "words"), [
    ("n_heads=0", "n_heads=0 must be a whole number of at least 1"),
    ("d_model=0", "d_model=0 must be"),
    ("init_std=-1", "init_std=-1"),
    ("norm_eps=-1", "norm_eps=-1"),
    ("vocab_size=10", "smaller than the tokenizer's"),
])
def test_model_settings_that_cannot_train_are_refused(runs, tmp_path, capsys, setting, words):
    """--model-set values that crashed (n_heads 0), trained a model of no parameters
    (d_model 0) or of NaN losses (norm_eps -1), or could not read the data (vocab 10)."""
    out = tmp_path / "run"
    fails(capsys, ["train", "--data", str(runs["data"]), "--out", str(out), *TRAIN,
                   "--model-set", setting], words)
    assert not out.exists()


def test_a_token_id_beyond_the_vocabulary_is_a_one_line_error(runs, tmp_path, capsys):
    """A shard changed since prepare (an id past the vocabulary) is named, not an
    IndexError deep in the embedding."""
    import shutil

    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(runs["data"], data)
    shard = sorted(data.glob("train-*.bin"))[0]
    index = json.loads((data / "index.json").read_text())
    a = np.fromfile(shard, dtype=index.get("dtype", "uint16"))
    a[:] = 250 + 40  # every window holds it
    a.tofile(shard)
    fails(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "run"), *TRAIN],
          "is not below the vocabulary size")


def test_library_inputs_that_failed_deep_inside_are_user_errors(runs):
    """Prompt ids outside the vocabulary, gaps too long for any context, a string where a
    list of choices goes, config values of the wrong type, a seed torch cannot take: each a
    one-line UserError from the library, not an IndexError, a ValueError from numpy, five
    one-letter choices or a string counted as true."""
    from unmask.infill import Gap

    m = load(runs["mdlm"])
    cfg = SampleConfig(gen_length=4, steps=4)
    for ids, words in (([[999999]], "outside the model's vocabulary"), ([[-5]], "prompt id -5")):
        with pytest.raises(UserError, match=re.escape(words)):
            api.start(m, ids, cfg)
    with pytest.raises(UserError, match="longer than any model's context"):
        api.infill(m, "a [MASK:99999999999999999999] b", config=cfg)
    with pytest.raises(UserError, match="choices is a list of strings"):
        Gap(choices="Paris")
    for kwargs, words in ((dict(gen_length="16"), "gen_length must be int"),
                          (dict(temperature="0.5"), "temperature must be float"),
                          (dict(forbid_eos="no"), "forbid_eos must be bool"),
                          (dict(steps=0), "steps must be positive"),
                          (dict(seed=-1), "seed must be from 0")):
        with pytest.raises(UserError, match=re.escape(words)):
            SampleConfig(**kwargs)


def test_server_limits_and_an_empty_api_key_are_refused(runs):
    """Limits no request can meet (a timeout of -1 answered every request 504, max_n 0 refused
    every one) and an empty key (it turned authentication off) are refused at start-up."""
    from unmask.server import create_app
    from unmask.server.state import ServerLimits

    for kwargs in (dict(request_timeout_s=-1), dict(max_n=0), dict(max_batch=0),
                   dict(batch_wait_s=float("nan")), dict(max_steps="8")):
        with pytest.raises(UserError, match="server limit|must be int"):
            ServerLimits(**kwargs)
    with pytest.raises(UserError, match="the API key is blank"):
        create_app(load(runs["mdlm"]), api_key="")


def test_a_chat_template_that_drops_the_messages_is_refused(runs, tmp_path, capsys):
    """An empty template file, or one of fixed text, rendered every conversation to the same
    prompt: the user's message never reached the model."""
    for name, text in (("empty.jinja", ""), ("static.jinja", "static text")):
        (tmp_path / name).write_text(text)
        fails(capsys, ["chat", "--model", str(runs["mdlm"]), "--no-live", "--template",
                       str(tmp_path / name)], "renders a user message without its text")


def test_infill_gap_syntax_in_a_generate_prompt_is_refused(capsys):
    """``[MASK:4]`` in a prompt stayed literal text (only a bare ``[MASK]`` is a blank):
    refused with the way to a gap of four tokens."""
    from unmask.tokenizer import train_bpe

    tok = train_bpe(["the cat sat on the mat"] * 20, 270)
    with pytest.raises(UserError, match=re.escape("[MASK:4] is a gap of the infill syntax")):
        api.encode_prompt(tok, "The [MASK:4] sat.")
    assert api.encode_prompt(tok, "The [MASK] sat.").count(tok.mask_id) == 1


def test_eval_of_a_causal_run_reports_its_likelihood_not_a_bound(runs, capsys):
    assert cli.main(["eval", str(runs["ar"]), "--no-score", "--no-plot", "--device", "cpu",
                     "--batches", "0"]) == 0
    held = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("held-out"))
    assert " NLL " in held and "<=" not in held and "bound" not in held
    assert cli.main(["eval", str(runs["mdlm"]), "--no-score", "--no-plot", "--device", "cpu",
                     "--batches", "0"]) == 0
    held = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("held-out"))
    assert " bound " in held and "<=" in held


def test_more_steps_than_tokens_gets_a_note(runs, capsys):
    """2,000 steps for 16 tokens ran 2,000 forwards without a word; now a note says so."""
    gen = ["generate", "x", "--model", str(runs["mdlm"]), "--gen-length", "4", "--no-live"]
    assert cli.main([*gen, "--steps", "8"]) == 0
    assert "8 steps for 4 masked tokens: a step past the last one commits nothing" in (
        capsys.readouterr().err)
    assert cli.main([*gen, "--steps", "4"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_a_refusal_of_a_setting_names_the_flag_the_user_typed(runs, capsys):
    """The library's checks name ``SampleConfig`` fields (``draft_length must be >= 1``); on
    the command line they are the flags typed (``--draft-length``, also as ``--flag=value``),
    for every command. A field no flag set keeps its name."""
    from unmask.cli import as_typed

    gen = ["generate", "x", "--model", str(runs["mdlm"]), "--device", "cpu", "--no-live"]
    assert fails(capsys, [*gen, "--temperature", "-1"]).startswith(
        "unmask generate: error: --temperature must be a finite number >= 0")
    assert fails(capsys, [*gen, "--block-length=0"]).startswith(
        "unmask generate: error: --block-length must be positive")
    assert "error: --draft-length must be >= 1" in fails(
        capsys, ["chat", "--model", str(runs["ar"]), "--draft-length", "0"])
    said = "temperature must be a finite number >= 0, got -1.0"
    assert as_typed(said, ["generate", "x", "--model", "m"]) == said
    assert as_typed(said, ["generate", "--temperature", "-1"]) == "--" + said
    assert as_typed("model m is not a checkpoint", ["generate", "--model", "m"]).startswith("m")
    said = "top_k and top_p apply to causal models only (see runs/top_k/x, my_top_k)"
    assert as_typed(said, ["generate", "--top-k", "3", "--top-p=0.5"]) == (
        "--top-k and --top-p apply to causal models only (see runs/top_k/x, my_top_k)")
    assert as_typed("threshold is an option of policy 'threshold'",
                    ["generate", "--threshold", "0.5"]) == (
        "--threshold is an option of policy 'threshold'")


def test_a_refusal_that_names_a_setting_with_its_value_names_the_flag(runs, capsys):
    """``compile='cuda-graphs' needs a CUDA GPU``, ``dtype 'x': choose ...`` and the hybrid
    decoder's ``draft_length 9: this hybrid checkpoint ...`` open with the field and its value:
    ``unmask serve`` named the flag in them before ``as_typed`` replaced its rewrite, which
    knew only ``must`` and ``applies``."""
    from unmask.cli import as_typed

    gen = ["generate", "x", "--model", str(runs["mdlm"]), "--device", "cpu", "--no-live"]
    assert fails(capsys, [*gen, "--compile", "cuda-graphs"]).startswith(
        "unmask generate: error: --compile='cuda-graphs' needs a CUDA GPU")
    said = "draft_length 9: this hybrid checkpoint drafts blocks of 4 tokens; use 1 .. 4"
    assert as_typed(said, ["serve", "--draft-length", "9"]) == "--" + said.replace("_", "-", 1)
    assert as_typed(said, ["serve", "--model", "m"]) == said
    said = "block_size=3 must divide seq_len=128"
    assert as_typed(said, ["train", "--block-size=3"]) == "--block-size=3 must divide seq_len=128"
    said = "device 'cuda:3': torch sees 1 CUDA device"
    assert as_typed(said, ["generate", "--device", "cuda:3"]) == "--" + said
    assert as_typed("model m is not a checkpoint: no config", ["x", "--model", "m"])[0] == "m"


def test_edit_on_a_causal_model_points_at_infill_only_where_it_can_fill(runs):
    """edit refuses a causal checkpoint; its advice (fill-in-the-middle with infill) holds only
    for one trained with FIM: without it, infill refuses too, so the line says so instead."""
    from unmask import api

    loaded = load(str(runs["ar"]), device="cpu")
    with pytest.raises(UserError, match="fill-in-the-middle with infill instead"):
        api.edit_checks(loaded)
    loaded.model.config.fim_prefix_id = None
    with pytest.raises(UserError, match="without fill-in-the-middle, it can only continue"):
        api.edit_checks(loaded)
