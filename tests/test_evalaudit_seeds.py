"""Task scoring of decoders that draw random numbers: each item's output is the one it gets
decoded alone, whatever the batch size and the items beside it (one generator for a batch
changed every output of a SEDD model between batches of 32 and of 1)."""

import pytest
import torch

from unmask.tasks import Item
from unmask.tasks.score import score_items

ITEMS = [Item("countdown3", f"{a},{b},{c}>{a + b + c}:", f"{a}+{b}={a + b},{a + b}+{c}={a + b + c}",
              {"numbers": [a, b, c], "target": a + b + c})
         for a, b, c in ((2, 3, 4), (12, 7, 30), (5, 61, 9), (40, 8, 1))]  # fmt: skip


def _loaded(tmp_path, objective, train=None, **model):
    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import TrainConfig, model_preset
    from unmask.model import Transformer
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, **model)
    if objective is not None:
        cfg = objective_spec(objective).configure(cfg, train or TrainConfig())
    save_checkpoint(tmp_path, model=Transformer(cfg), tokenizer=tok)
    return load(tmp_path)


@pytest.mark.parametrize(
    ("family", "given"),
    [("sedd", {}), ("embed-diffusion", {}), ("ar", {"temperature": 1.0}),
     ("mdlm", {"temperature": 1.0})],
)  # fmt: skip
def test_each_item_decodes_as_alone(tmp_path, family, given):
    from unmask.config import TrainConfig

    if family == "sedd":
        loaded = _loaded(tmp_path, "sedd")
    elif family == "embed-diffusion":
        loaded = _loaded(tmp_path, "embed-diffusion", TrainConfig(seq_len=16))
    elif family == "ar":
        loaded = _loaded(tmp_path, None, attention="causal")
    else:
        loaded = _loaded(tmp_path, None)
    from unmask.tasks.score import task_config

    config = task_config(loaded, ITEMS, given)  # one room for the subset too
    together = score_items(loaded, ITEMS, config=config, batch_size=4, keep_examples=4)
    apart = score_items(loaded, ITEMS, config=config, batch_size=1, keep_examples=4)
    first = score_items(loaded, ITEMS[2:], config=config, batch_size=4, keep_examples=4)
    outputs = [e["output"] for e in together.examples]
    assert outputs == [e["output"] for e in apart.examples]
    assert outputs[2:] == [e["output"] for e in first.examples]
    # an item repeated in the file is a draw of its own (seed + 1), as alone
    twice = score_items(loaded, [ITEMS[0], ITEMS[0]], config=config, batch_size=2,
                        keep_examples=2)
    import dataclasses

    other = score_items(loaded, [ITEMS[0]], config=dataclasses.replace(config, seed=1),
                        keep_examples=1)
    assert [e["output"] for e in twice.examples] == [outputs[0], other.examples[0]["output"]]
