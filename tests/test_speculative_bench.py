"""``benchmarks/speculative.py`` end to end on tiny checkpoints: every row runs, the
speculative rows are AR's text, and the hybrid's draft-length rows are the same text."""

import json

import torch

from unmask.checkpoint import save_checkpoint
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def test_quick_run_with_hybrid_draft_lengths(tmp_path, benchmark, capsys):
    spec = benchmark("speculative")
    tok = byte_tokenizer()
    paths = {}
    for name, kw in (("ar", dict(attention="causal")), ("mdlm", dict(attention="bidirectional")),
                     ("hybrid", dict(attention="causal", draft_block=4, objective="hybrid"))):
        cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=96, init_std=0.3,
                           **tok.special_ids(), **kw)  # fmt: skip
        torch.manual_seed(len(paths))
        save_checkpoint(tmp_path / name, model=Transformer(cfg), tokenizer=tok)
        paths[name] = str(tmp_path / name)
    out = tmp_path / "r.json"
    spec.main(["--quick", "--ar-model", paths["ar"], "--model", paths["mdlm"],
               "--hybrid", paths["hybrid"], "--predraft", "all", "--hybrid-draft-lengths", "1",
               "4", "--batches", "1", "--threads", "1", "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    by = {r["label"]: r for r in rows}
    assert {"ar", "spec k=4", "hybrid all n=1", "hybrid all n=4"} <= set(by)
    assert by["spec k=4"]["identity"] == 1.0  # greedy speculative = the verifier's greedy
    one, four = by["hybrid all n=1"], by["hybrid all n=4"]
    assert one["decoder"] == four["decoder"] == "hybrid"
    assert one["ids"] == four["ids"]  # both are the hybrid's own greedy text
    assert one["drafted"] <= one["row_rounds"] < four["drafted"] <= 4 * four["row_rounds"]
    assert "hybrid all n=4" in capsys.readouterr().out
