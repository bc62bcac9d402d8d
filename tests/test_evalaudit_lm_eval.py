"""``unmask eval --tasks --output-path``: a place lm-eval cannot write its results in is a
one-line error before anything runs (lm-eval only logged "Could not save results
aggregated", and the run ended 0 with nothing written)."""

import json

import pytest
import torch

from unmask.cli import main

pytest.importorskip("lm_eval")

GEN_YAML = """task: tiny_gen_out
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 2
metric_list:
  - metric: exact_match
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    import functools

    import lm_eval.tasks

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    # lm-eval's own task index takes ~20 s of CPU to build: leave it out, the path is the same
    manager = functools.partial(lm_eval.tasks.TaskManager, include_defaults=False)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", manager)
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)
    save_checkpoint(tmp_path / "ckpt", model=Transformer(cfg), tokenizer=tok)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "gen.jsonl"
    data.write_text(json.dumps({"question": "say 1:", "answer": " 1"}) + "\n")
    (tasks / "gen.yaml").write_text(GEN_YAML.format(data=data))
    (tmp_path / "afile").write_text("")
    return ["eval", str(tmp_path / "ckpt"), "--tasks", "tiny_gen_out", "--include-path",
            str(tasks), "--no-score", "--no-plot", "--device", "cpu", "--json"]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "want"),
    [("afile", "afile is a file, not a folder lm-eval can write its results in"),
     ("afile/sub", "lm-eval could not write its results in"),
     ("afile/r.json", "afile is a file, not a folder"),
     ("", "--output-path: expected a folder, got an empty name")],
)  # fmt: skip
def test_an_output_path_lm_eval_cannot_write_is_one_line(setup, tmp_path, capsys, monkeypatch,
                                                         where, want):
    monkeypatch.chdir(tmp_path)
    assert main([*setup, "--output-path", where]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and want in err[-1]
    assert (tmp_path / "afile").is_file() and (tmp_path / "afile").read_text() == ""


def test_a_new_nested_output_path_gets_the_results(setup, tmp_path, capsys):
    """A folder that does not exist yet is made, and the results are in it (a .json path:
    lm-eval writes beside it, the name stamped with the time)."""
    assert main([*setup, "--output-path", str(tmp_path / "out" / "deep")]) == 0
    capsys.readouterr()
    assert list((tmp_path / "out" / "deep").rglob("results_*.json"))
    assert main([*setup, "--output-path", str(tmp_path / "res" / "r.json")]) == 0
    capsys.readouterr()
    assert list((tmp_path / "res").glob("r_*.json"))


def test_log_samples_without_an_output_path_is_one_line(tmp_path, capsys):
    """--log-samples writes into --output-path; without one it was dropped in silence (lm-eval's
    own CLI refuses it the same way). Refused before the checkpoint is read."""
    argv = ["eval", str(tmp_path / "nothing-here"), "--tasks", "x", "--log-samples",
            "--no-score", "--no-plot"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--log-samples writes every item's prompt and answers under " \
        "--output-path DIR: give it" in err[0]


@pytest.mark.parametrize(("family", "sample"), [("sedd", False), ("causal", True),
                                                ("bidirectional", True)])
def test_generate_until_rows_that_draw_noise_decode_as_alone(tmp_path, family, sample):
    """A sampled task (do_sample with a temperature) or a SEDD model at any temperature: each
    request's text is the one it gets alone (one generator for a batch of 16 made each
    depend on the others)."""
    from lm_eval.api.instance import Instance

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import TrainConfig, model_preset
    from unmask.lm_eval import UnmaskLM
    from unmask.model import Transformer
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    kind = {} if family == "sedd" else {"attention": family}
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, **kind)
    if family == "sedd":
        cfg = objective_spec("sedd").configure(cfg, TrainConfig())
    save_checkpoint(tmp_path, model=Transformer(cfg), tokenizer=tok)
    lm = UnmaskLM(loaded=load(tmp_path), batch_size=4, greedy_check=False)
    options = {"until": [], "max_gen_toks": 6}
    if sample:
        options |= {"do_sample": True, "temperature": 1.0}
    reqs = [Instance("generate_until", {}, (p, dict(options)), 0)
            for p in ("a", "hello there, a longer one", "xyz", "b")]
    together = lm.generate_until(reqs)
    assert together == [lm.generate_until([r])[0] for r in reqs]
    # a request repeated (lm-eval's repeats): the j-th copy is seeded seed + j, as alone
    again = UnmaskLM(loaded=lm.loaded, batch_size=4, greedy_check=False, seed=1)
    assert lm.generate_until([reqs[1], reqs[1]]) == [together[1],
                                                    again.generate_until([reqs[1]])[0]]
