"""Task scoring and lm-eval generation decode without the checkpoint's prose penalties.

An ``ar`` (or ``mdlm``) checkpoint recommends a repetition penalty and a 4-gram ban for
prose (``sample_defaults``). A task answer repeats what its prompt holds: with the ban, a
sudoku whose solution repeats a run of four clues has no answer even a perfect model could
write (32 of 200 ``sudoku4`` items, byte tokenizer), a countdown reference answer that
repeats four tokens cannot be written (10 of 200 ``countdown3``), nor can an lm-eval
few-shot prompt's format line. The penalties applied there, and lm-eval's could not be turned off.
"""

import pytest
import torch

from unmask.config import model_preset
from unmask.model import Transformer
from unmask.objectives.autoregressive import CAUSAL_SAMPLE_DEFAULTS
from unmask.tasks import Item

ITEM = Item("countdown3", "12,7,3>22:", "12+7=19,19+3=22", {"numbers": [12, 7, 3], "target": 22})


@pytest.fixture(scope="module")
def ar_checkpoint(tmp_path_factory):
    from unmask.checkpoint import load, save_checkpoint
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, attention="causal",
                       objective="ar", sample_defaults=dict(CAUSAL_SAMPLE_DEFAULTS),
                       **tok.special_ids())
    root = tmp_path_factory.mktemp("ar31")
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return load(root)


def test_the_recommendation_holds_the_prose_penalties(ar_checkpoint):
    from unmask.api import sample_config

    config = sample_config(ar_checkpoint, {})  # what `unmask generate` decodes with
    assert config.no_repeat_ngram_size == 4 and config.repetition_penalty == 1.15


def test_task_items_decode_without_the_recommended_penalties(ar_checkpoint):
    from unmask.tasks.score import score_items, task_config

    config = task_config(ar_checkpoint, [ITEM], {})
    assert config.no_repeat_ngram_size == 0 and config.repetition_penalty == 1.0
    given = task_config(ar_checkpoint, [ITEM], {"no_repeat_ngram_size": 3})
    assert given.no_repeat_ngram_size == 3 and given.repetition_penalty == 1.0  # as asked
    sampling = score_items(ar_checkpoint, [ITEM]).sampling  # the report's "decoded with"
    assert "no_repeat_ngram_size" not in sampling and "repetition_penalty" not in sampling


def test_lm_eval_generation_decodes_without_them_unless_given(ar_checkpoint):
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import UnmaskLM

    config = UnmaskLM(loaded=ar_checkpoint).generation_config({"max_gen_toks": 8})
    assert config.no_repeat_ngram_size == 0 and config.repetition_penalty == 1.0
    lm = UnmaskLM(loaded=ar_checkpoint, repetition_penalty=1.2, no_repeat_ngram_size=5)
    config = lm.generation_config({"max_gen_toks": 8})
    assert config.no_repeat_ngram_size == 5 and config.repetition_penalty == 1.2
    assert lm.model_args["no_repeat_ngram_size"] == 5  # recorded with the results
