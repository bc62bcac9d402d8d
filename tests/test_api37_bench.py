"""Session 37 (api): benchmarks/defaults.py writes its results JSON whole or not at all
(``_common.write_results``), as every other script does: it wrote the file in place
(``Path.write_text``), so a full disk or a Ctrl-C while writing left a half-written file
where the previous results were."""

from __future__ import annotations

import json


def test_defaults_writes_its_results_atomically(benchmark, tmp_path, monkeypatch):
    import torch

    from unmask import files
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256, **tok.special_ids())
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m", model=Transformer(cfg), tokenizer=tok)
    written = []
    atomic = files.atomic_write_text
    monkeypatch.setattr(files, "atomic_write_text",
                        lambda path, text: (written.append(path), atomic(path, text))[1])
    out = tmp_path / "results" / "defaults.json"
    out.parent.mkdir()
    out.write_text('{"rows": "the previous results"}')
    before = torch.get_num_threads()
    try:
        defaults = benchmark("defaults")
        assert defaults.main(["--model", str(model), "--no-score", "--prompts", "1",
                              "--prompt-words", "2", "--gen-length", "4", "--temperatures", "0",
                              "--blocks", "0", "--threads", "1", "--prompt-source",
                              "corpus-tail", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    assert written == [out]  # through the temporary file and a rename
    rows = json.loads(out.read_text())["rows"]
    assert [r["setting"] for r in rows] == ["held-out text", "T=0, one block"]
