"""The command line's front door (session 32): the steps note of ``demo`` and ``generate``
(one rule), the shipped model found from a zipped install, ``generate --stop``."""

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.files import asset_path
from unmask.model import Transformer
from unmask.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny model with the shipped demo tokenizer."""
    shipped = asset_path("demo") / "tokenizer.json"
    if not shipped.is_file():
        pytest.skip("demo checkpoint not bundled")
    tok = load_tokenizer(shipped)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ck")
    save_checkpoint(out, model=Transformer(cfg), tokenizer=tok)
    return out


NOTE = "8 steps for 4 masked tokens: a step past the last one commits nothing"


def test_demo_notes_steps_past_the_tokens_as_generate_does(tiny, capsys):
    """``unmask demo --steps 1000`` ran 1,000 forwards for 48 tokens without the note that
    ``unmask generate`` gives; the demo has no --skip-empty-steps, so it names the steps
    that waste none."""
    demo = ["demo", "--model", str(tiny), "--gen-length", "4", "--no-live", "--device", "cpu"]
    assert main([*demo, "--steps", "8"]) == 0
    err = capsys.readouterr().err
    assert f"unmask demo: note: {NOTE}" in err and "--steps 4 or fewer" in err
    assert main([*demo, "--steps", "4"]) == 0
    assert "note:" not in capsys.readouterr().err
    gen = ["generate", "x", "--model", str(tiny), "--gen-length", "4", "--no-live",
           "--device", "cpu"]
    assert main([*gen, "--steps", "8"]) == 0
    err = capsys.readouterr().err
    assert f"unmask generate: note: {NOTE}" in err and "--skip-empty-steps" in err
    assert main([*gen, "--steps", "8", "--skip-empty-steps"]) == 0
    assert "note:" not in capsys.readouterr().err
