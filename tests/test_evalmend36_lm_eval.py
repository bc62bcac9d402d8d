"""lm-eval requests on SEDD and block-diffusion checkpoints (review of session 36's eval
audit): a task's temperature on a decoder that takes none, the default token budget and a
context-long continuation on a bd3lm model, the greedy check's steps where blocks start at
the prompt."""

import pytest
import torch

from unmask.config import model_preset
from unmask.model import Transformer

pytest.importorskip("lm_eval")


class _Request:
    def __init__(self, *args):
        self.args = args


def _lm(root, **model):
    from unmask.checkpoint import save_checkpoint
    from unmask.lm_eval import UnmaskLM
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **model)
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return UnmaskLM(str(root), device="cpu", mc_samples=1)


def test_a_tasks_temperature_is_left_out_where_the_decoder_takes_none(tmp_path):
    """SEDD draws from its reverse process and refuses a temperature: a task of
    ``temperature: 0.7`` (and ``do_sample: true``, humaneval_64's) stopped the run at its
    first generate_until request, after every log-likelihood task had run."""
    lm = _lm(tmp_path, objective="sedd", output="sedd_log_score", time_conditioning=True,
             sigma_input="masked_fraction")
    for task in ({"temperature": 0.7}, {"do_sample": True, "temperature": 0.2, "top_p": 0.95}):
        config = lm.generation_config({**task, "max_gen_toks": 4})
        assert (config.temperature, config.top_p) == (0.0, None)
        (text,) = lm.generate_until([_Request("abc", {**task, "max_gen_toks": 4})])
        assert isinstance(text, str) and len(text) <= 4


@pytest.mark.parametrize("align", ["pad", "absolute"])
def test_a_block_model_decodes_the_default_budget_and_checks_a_context_long_answer(
        tmp_path, align):
    """A bd3lm model of a 32-token context: a task without ``max_gen_toks`` (256) decoded
    32 tokens, no room for the prompt, and a continuation of 30 tokens had its greedy check
    decode as many: both were the decoder's refusal ("prompt (1 token) + gen_length (32)
    exceeds the model's max_seq_len (32) in whole blocks of 4")."""
    lm = _lm(tmp_path, objective="bd3lm", attention="block-causal", block_size=4,
             block_align=align)
    assert lm.generation_config({}).gen_length == 28  # the context's blocks, one left over
    for context in ("", "abc", "x" * 40):
        (text,) = lm.generate_until([_Request(context, {"until": ["\n"]})])
        assert isinstance(text, str)
    (logprob, is_greedy), = lm.loglikelihood([_Request("a", "b" * 30)])
    assert logprob < 0 and is_greedy is False  # its blocks leave the context no room
    (_, is_greedy), = lm.loglikelihood([_Request("", "b" * 29)])
    assert is_greedy is False


def test_the_greedy_check_on_absolute_blocks_commits_one_token_a_step(tmp_path, monkeypatch):
    """8 tokens after a 2-token context span 3 blocks of 4 (2, 4 and 2 of them): the steps
    were rounded down to 6, two a block, so a full block committed 2 tokens a step; LLaDA's
    check is one a step. It decodes up to the end of the block of the answer's last token:
    2 tokens after 2 fill that block, and decoding whole blocks of the answer's length (4)
    after it ran into a second block, 8 steps (forwards) where 4 do."""
    import unmask.api

    lm = _lm(tmp_path, objective="bd3lm", attention="block-causal", block_size=4,
             block_align="absolute")
    seen = []
    real = unmask.api.start

    def start(loaded, prompts, config, *args, **kwargs):
        seen.append((config.gen_length, config.steps))
        return real(loaded, prompts, config, *args, **kwargs)

    monkeypatch.setattr(unmask.api, "start", start)
    forwards = []
    lm.loaded.model.register_forward_hook(lambda *_: forwards.append(1))
    lm._greedy([97, 98], [99] * 8)  # blocks 0-3 (2 new), 4-7, 8-11 (2 new)
    lm._greedy([97, 98, 99, 100], [99] * 8)  # on a block boundary: 2 blocks
    lm._greedy([97, 98], [99] * 2)  # the rest of the prompt's block: 1 block
    assert seen == [(10, 12), (8, 8), (2, 4)]
    assert len(forwards) == 12 + 8 + 4  # a forward a step


@pytest.mark.parametrize("align", ["pad", "absolute"])
def test_a_block_model_refuses_a_max_length_under_two_blocks(tmp_path, align):
    """A bd3lm model of block 4 under ``max_length`` 4 to 7 decoded one block and left the
    prompt no room: every ``generate_until`` prompt was cut to nothing (text from no
    context, no error) and no answer was greedy. Now a one-line error; two blocks run."""
    from unmask.errors import UserError
    from unmask.lm_eval import UnmaskLM

    lm = _lm(tmp_path, objective="bd3lm", attention="block-causal", block_size=4,
             block_align=align)
    for max_length in (4, 7):
        with pytest.raises(UserError, match="at least two blocks of this model \\(8 tokens"):
            UnmaskLM(loaded=lm.loaded, device="cpu", max_length=max_length)
    lm = UnmaskLM(loaded=lm.loaded, device="cpu", mc_samples=1, max_length=8)
    (text,) = lm.generate_until([_Request("abc", {"until": ["\n"], "max_gen_toks": 2})])
    assert isinstance(text, str)
