"""``unmask.lm_eval.UnmaskLM``: sampling model_args are checked when the model is built."""

import pytest
import torch

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from unmask.checkpoint import load, save_checkpoint
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("lmeval31")
    save_checkpoint(root, model=Transformer(model_preset("tiny", vocab_size=tok.vocab_size,
                                                         max_seq_len=48)), tokenizer=tok)
    return load(root)


@pytest.mark.parametrize("arg, said", [
    ({"gen_length": -5}, "gen_length must be at least 1, got -5"),
    ({"gen_length": "x"}, "gen_length must be a whole number, got 'x'"),
    ({"steps": 0}, "steps must be positive, got 0"),
    ({"temperature": -1.0}, "temperature must be a finite number >= 0, got -1.0"),
    ({"decoder": "ar"}, "decoder 'ar' needs a causal model"),
    ({"policy": "bogus"}, "unknown policy 'bogus'"),
    ({"cache": "bogus"}, "unknown cache 'bogus'"),
    ({"block_length": -3}, "block_length must be at least 1, got -3"),
])
def test_sampling_model_args_the_checkpoint_refuses_fail_when_built(loaded, arg, said):
    """lm-eval's ``--model_args`` of ``generate_until`` were read at its first request, after
    every log-likelihood task of the run had been measured (a ``gen_length`` of -5 generated
    one token a request, "x" was a ``ValueError``)."""
    from unmask.lm_eval import UnmaskLM

    with pytest.raises(UserError, match=said):
        UnmaskLM(loaded=loaded, **arg)
    assert UnmaskLM(loaded=loaded, gen_length="8", steps=4).gen_length == 8  # lm-eval's strings


GEN_YAML = """task: tiny_gen31
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
  max_gen_toks: 4
metric_list:
  - metric: exact_match
"""


def test_sampling_flags_lm_eval_does_not_take_are_named(loaded, tmp_path, capsys):
    """``unmask eval --tasks`` hands lm-eval's model only the sampling flags it takes; one
    like ``--top-k`` was dropped there without a word (it still sets the other parts)."""
    import json

    from unmask.cli import main

    (tmp_path / "gen.jsonl").write_text(json.dumps({"question": "say 1:", "answer": " 1"}) + "\n")
    (tmp_path / "gen.yaml").write_text(GEN_YAML.format(data=tmp_path / "gen.jsonl"))
    rc = main(["eval", str(loaded.path), "--tasks", "tiny_gen31", "--include-path",
               str(tmp_path), "--top-k", "5", "--steps", "4", "--no-score", "--no-plot",
               "--json", "--device", "cpu"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and "tiny_gen31" in report["lm_eval"]["results"]
    (note,) = [n for n in report["notes"] if n.startswith("lm-eval:")]
    assert note.startswith("lm-eval: --top-k not applied to its generation tasks (its model "
                           "takes --gen-length, --steps, ")
