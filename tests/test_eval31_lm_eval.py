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
])
def test_sampling_model_args_the_checkpoint_refuses_fail_when_built(loaded, arg, said):
    """lm-eval's ``--model_args`` of ``generate_until`` were read at its first request, after
    every log-likelihood task of the run had been measured (a ``gen_length`` of -5 generated
    one token a request, "x" was a ``ValueError``)."""
    from unmask.lm_eval import UnmaskLM

    with pytest.raises(UserError, match=said):
        UnmaskLM(loaded=loaded, **arg)
    assert UnmaskLM(loaded=loaded, gen_length="8", steps=4).gen_length == 8  # lm-eval's strings
