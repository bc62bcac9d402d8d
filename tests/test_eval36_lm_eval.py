"""lm-eval's request contract as its own models read it (session 36 of the eval audit):
a ``generate_until`` request's token budget under any of its names, and its temperature
where the task samples without saying ``do_sample``."""

import pytest
import torch

from unmask.config import model_preset
from unmask.model import Transformer

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.lm_eval import UnmaskLM
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48)
    root = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return UnmaskLM(str(root), device="cpu", greedy_check=False)


class _Request:
    def __init__(self, *args):
        self.args = args


@pytest.mark.parametrize("key", ["max_gen_toks", "max_new_tokens", "max_tokens",
                                 "max_completion_tokens"])
def test_every_name_of_the_token_budget_is_read(lm, key):
    """A task of ``max_new_tokens: 5`` decoded 47 tokens (the context's room, 256 capped):
    another canvas, so another answer from a diffusion model, and a longer one where no
    stop sequence cuts it."""
    assert lm.generation_config({key: 5}).gen_length == 5
    (text,) = lm.generate_until([_Request("abc", {key: 3, "until": []})])
    assert len(text) <= 3  # byte tokenizer: a character at most per token


@pytest.mark.parametrize("kwargs, temperature", [
    ({"temperature": 0.7}, 0.7),  # no do_sample: lm-eval samples (it was greedy here)
    ({"do_sample": True, "temperature": 0.7}, 0.7),
    ({"do_sample": False, "temperature": 0.7}, 0.0),
    ({"do_sample": True}, 0.0),  # no temperature to sample at: greedy, as lm-eval warns
    ({}, 0.0),
])
def test_a_task_samples_where_lm_eval_would(lm, kwargs, temperature):
    from unmask.lm_eval import gen_options

    assert lm.generation_config(kwargs).temperature == temperature
    assert gen_options(kwargs)[1] == temperature


def test_the_budget_and_temperature_match_lm_evals_own_reading():
    utils = pytest.importorskip("lm_eval.models.utils")
    if not hasattr(utils, "normalize_gen_kwargs"):
        pytest.skip("an lm-eval before normalize_gen_kwargs")
    from unmask.lm_eval import gen_options

    cases = [{}, {"max_new_tokens": 7}, {"max_tokens": 9, "max_new_tokens": 7},
             {"max_completion_tokens": 4}, {"max_gen_toks": 3, "max_tokens": 9},
             {"temperature": 0.5}, {"temperature": 0.0}, {"do_sample": True, "temperature": 1.2},
             {"do_sample": False, "temperature": 1.2}]
    for kwargs in cases:
        theirs = utils.normalize_gen_kwargs(dict(kwargs), 256)
        want = float(theirs.get("temperature", 0.0)) if theirs["do_sample"] else 0.0
        assert gen_options(kwargs) == (theirs["max_gen_toks"], want), kwargs


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.lm_eval import UnmaskLM
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, attention="causal")
    root = tmp_path_factory.mktemp("causal")
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return UnmaskLM(str(root), device="cpu")


def test_a_sampled_tasks_nucleus_applies_to_a_causal_decoder_only(lm, causal_lm):
    """``humaneval_64`` samples at temperature 0.2 with ``top_p: 0.95``: an AR model sampled
    the whole distribution (the task's top_p was dropped), unlike lm-eval's own models."""
    task = {"do_sample": True, "temperature": 0.2, "top_p": 0.95, "top_k": 40}
    c = causal_lm.generation_config(task)
    assert (c.temperature, c.top_p, c.top_k) == (0.2, 0.95, 40)
    greedy = causal_lm.generation_config({"do_sample": False, "top_p": 0.95})
    assert (greedy.temperature, greedy.top_p) == (0.0, None)  # greedy: nothing to cut
    from unmask.lm_eval import UnmaskLM

    hot = UnmaskLM(loaded=causal_lm.loaded, temperature=0.7)  # the user samples, the task not
    assert hot.generation_config({"do_sample": False, "top_p": 0.5}).top_p is None
    d = lm.generation_config(task)  # a diffusion decoder samples no single token's
    assert (d.temperature, d.top_p, d.top_k) == (0.2, None, None)
    (text,) = causal_lm.generate_until([_Request("abc", {**task, "max_gen_toks": 3})])
    assert len(text) <= 3


def test_model_args_lm_eval_passes_as_words_are_read_or_refused(lm):
    """lm-eval passes a model_arg it cannot parse as a string: ``greedy_check=no`` was
    ``bool("no")``, True, and ``seed=abc`` int()'s ValueError traceback."""
    from unmask.errors import UserError
    from unmask.lm_eval import UnmaskLM

    for word, want in (("no", False), ("False", False), (0, False), ("yes", True), (True, True)):
        assert UnmaskLM(loaded=lm.loaded, greedy_check=word).greedy_check is want
    with pytest.raises(UserError, match="greedy_check must be true or false"):
        UnmaskLM(loaded=lm.loaded, greedy_check="maybe")
    with pytest.raises(UserError, match="seed must be a whole number"):
        UnmaskLM(loaded=lm.loaded, seed="abc")
    assert UnmaskLM(loaded=lm.loaded, seed="7").seed == 7


def test_is_greedy_on_a_checkpoint_whose_blocks_start_at_the_prompt(tmp_path):
    """LLaDA 2.x's layout (``block_align: absolute``): the greedy check decoded one step a
    token, which its scheduled policy refuses where the answer spans blocks unevenly ("steps
    (8) must be a multiple of the number of blocks ..."): the first multiple-choice item of
    a task that reads is_greedy stopped the run."""
    from unmask.api import fit_block_steps, run_to_end, start
    from unmask.checkpoint import save_checkpoint
    from unmask.config import SampleConfig
    from unmask.lm_eval import UnmaskLM
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48,
                       attention="block-causal", block_size=4, block_align="absolute",
                       objective="bd3lm")
    save_checkpoint(tmp_path, model=Transformer(cfg), tokenizer=tok)
    lm = UnmaskLM(str(tmp_path), device="cpu", mc_samples=2)
    context = tok.encode("ab")
    # 8 tokens after 2 span 3 blocks of 4: a block's steps each, one token a step at most
    config = fit_block_steps(lm.loaded, SampleConfig(gen_length=8, steps=12, temperature=0.0,
                                                     block_length=None, seed=0), [2])
    written = [int(t) for t in run_to_end(start(lm.loaded, [context], config))[0].gen_ids[0][:7]]
    other = [t + 1 if t + 1 < 256 else 97 for t in written]  # another answer of 7 bytes
    mine, theirs = lm._loglikelihoods([(context, written), (context, other)], greedy=True)
    assert mine.is_greedy is True and mine.logprob < 0
    assert theirs.is_greedy is False
    (_, is_greedy), = lm.loglikelihood([_Request("ab", "cdefghi")])  # by the text path too
    assert is_greedy is False or written == tok.encode("cdefghi")


def test_an_empty_document_has_a_rolling_log_likelihood_of_float_zero(lm):
    """lm-eval's contract is a float per request; an empty text summed no window: int 0."""
    (total,) = lm.loglikelihood_rolling([_Request("")])
    assert isinstance(total, float) and total == 0.0
