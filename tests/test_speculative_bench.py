"""``benchmarks/speculative.py`` end to end on tiny checkpoints: every row runs, the
speculative rows are AR's text, and the hybrid's draft-length rows are the same text."""

import json

import pytest
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
               "4", "--hybrid-thresholds", "0.99", "--batches", "1", "--threads", "1",
               "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    by = {r["label"]: r for r in rows}
    assert {"ar", "spec k=4", "hybrid all n=1", "hybrid all n=4"} <= set(by)
    sure = by["hybrid all n=4 thr=0.99"]  # a random model is never that sure: no drafts
    assert sure["ids"] == by["hybrid all n=4"]["ids"] and sure["drafted"] == 0
    assert by["spec k=4"]["identity"] == 1.0  # greedy speculative = the verifier's greedy
    one, four = by["hybrid all n=1"], by["hybrid all n=4"]
    assert one["decoder"] == four["decoder"] == "hybrid"
    assert one["ids"] == four["ids"]  # both are the hybrid's own greedy text
    assert one["drafted"] <= one["row_rounds"] < four["drafted"] <= 4 * four["row_rounds"]
    assert "hybrid all n=4" in capsys.readouterr().out
    import shutil

    shutil.copytree(paths["hybrid"], tmp_path / "other")  # two hybrids: rows named by folder
    spec.main(["--quick", "--ar-model", paths["ar"], "--model", paths["mdlm"],
               "--hybrid", paths["hybrid"], str(tmp_path / "other"), "--predraft", "ends",
               "--draft-lengths", "--batches", "1", "--threads", "1", "--json", str(out)])
    by = {r["label"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"hybrid hybrid ends", "hybrid other ends"} <= set(by)
    assert by["hybrid hybrid ends"]["ids"] == by["hybrid other ends"]["ids"]


def _ar_and_mdlm(root, max_seq_len: int) -> dict[str, str]:
    """Random tiny ``ar`` and ``mdlm`` checkpoints of the byte tokenizer: {name: run folder}."""
    tok = byte_tokenizer()
    paths = {}
    for name, attention in (("ar", "causal"), ("mdlm", "bidirectional")):
        cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=max_seq_len,
                           init_std=0.3, attention=attention, **tok.special_ids())  # fmt: skip
        torch.manual_seed(len(paths))
        save_checkpoint(root / name, model=Transformer(cfg), tokenizer=tok)
        paths[name] = str(root / name)
    return paths


def test_lengths_past_the_context_run_in_segments(tmp_path, benchmark):
    """``--segment-length``: 48 tokens on 32-token models (``benchmarks/speculative.py``) and
    the segment-length table (``benchmarks/segments.py``)."""
    spec, seg = benchmark("speculative"), benchmark("segments")
    paths = {k: f"{v}/checkpoint" for k, v in _ar_and_mdlm(tmp_path, max_seq_len=32).items()}
    out = tmp_path / "s.json"
    spec.main(["--ar-model", paths["ar"], "--model", paths["mdlm"], "--gen-lengths", "48",
               "--segment-length", "16", "--batches", "1", "--draft-lengths", "4",
               "--thresholds", "--no-diffusion-row", "--no-score", "--repeats", "1",
               "--prompt-words", "2", "--threads", "1", "--json", str(out)])  # fmt: skip
    by = {r["label"]: r for r in json.loads(out.read_text())["rows"]}
    assert by["ar"]["gen_length"] == by["spec k=4"]["gen_length"] == 48
    assert by["spec k=4"]["identity"] == 1.0 and by["spec k=4"]["drafted"] > 0
    out = tmp_path / "n.json"
    rows = seg.main(["--model", paths["mdlm"], "--gen-length", "48", "--segments", "16", "24",
                     "--batch", "2", "--prompt-words", "2", "--no-score", "--json", str(out)])
    assert [r["segments"] for r in rows] == [3, 2] and [r["window"] for r in rows] == [16, 8]
    assert json.loads(out.read_text())["rows"][0]["nfe"] == 48


def test_every_row_decodes_every_prompt_in_batches(tmp_path, benchmark):
    """``--prompts 4 --batches 1 2``: each row decodes the same 4 prompts, one at a time or
    two at a time; a batch-1 row's counts are the sums of the 4 runs alone."""
    from unmask import api
    from unmask.checkpoint import load
    from unmask.config import SampleConfig

    spec = benchmark("speculative")
    tok = byte_tokenizer()
    paths = _ar_and_mdlm(tmp_path, max_seq_len=64)
    out = tmp_path / "p.json"
    spec.main(["--ar-model", paths["ar"], "--model", paths["mdlm"], "--gen-lengths", "16",
               "--prompts", "4", "--batches", "1", "2", "--draft-lengths", "4", "--thresholds",
               "--no-diffusion-row", "--no-score", "--prompt-words", "2", "--threads", "1",
               "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["label"], r["batch"], r["prompts"]) for r in rows] == [
        ("ar", 1, 4), ("spec k=4", 1, 4), ("ar", 2, 4), ("spec k=4", 2, 4)]
    one = rows[1]
    ar, drafter = load(paths["ar"]), load(paths["mdlm"])
    drafted = accepted = 0
    for i, text in enumerate(result["meta"]["prompts"]):
        cfg = SampleConfig(gen_length=16, temperature=0.0, draft_length=4)
        res = api.start(ar, [tok.encode(text)], cfg, draft=drafter).run()
        assert res.gen_ids[0] == one["ids"][i]
        drafted, accepted = drafted + res.drafted, accepted + res.accepted
    assert (one["drafted"], one["accepted"]) == (drafted, accepted) and drafted > 0
    assert one["identity"] == 1.0
    with pytest.raises(Exception, match="multiple of every batch"):
        spec.main(["--ar-model", paths["ar"], "--model", paths["mdlm"], "--prompts", "3",
                   "--batches", "2", "--no-score", "--json", str(out)])


def test_speculative_batch_refuses_a_drafter_of_another_tokenizer(tmp_path, benchmark):
    """``benchmarks/speculative_batch.py`` checks the tokenizers as ``unmask generate --draft``
    does (it took the smaller vocabulary size on trust, and decoded with another tokenizer's
    drafts), and runs with the same tokenizer."""
    from unmask.errors import UserError
    from unmask.tokenizer import train_bpe

    bench = benchmark("speculative_batch")
    paths = _ar_and_mdlm(tmp_path, max_seq_len=64)
    hyb = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=hyb.vocab_size, max_seq_len=64, init_std=0.3,
                       attention="causal", draft_block=2, objective="hybrid",
                       **hyb.special_ids())  # fmt: skip
    save_checkpoint(tmp_path / "hybrid", model=Transformer(cfg), tokenizer=hyb)
    bpe = train_bpe(["in the beginning was the word"] * 40, hyb.vocab_size + 20)
    cfg = model_preset("tiny", vocab_size=bpe.vocab_size, max_seq_len=64, init_std=0.3,
                       attention="bidirectional", **bpe.special_ids())  # fmt: skip
    save_checkpoint(tmp_path / "other", model=Transformer(cfg), tokenizer=bpe)
    args = ["--ar-model", paths["ar"], "--hybrid", str(tmp_path / "hybrid"), "--gen-length",
            "8", "--batch", "2"]  # fmt: skip
    with pytest.raises(UserError, match="tokenizer differs"):
        bench.main([*args, "--drafter", str(tmp_path / "other")])
    bench.main([*args, "--drafter", paths["mdlm"]])


def test_tokens_per_forward_counts_the_eos_a_forward_made(benchmark):
    """tok/fwd divided the text cut at EOS by the forwards, the forward that made the EOS
    among them: ``ar`` showed 0.75 for a row that ended after 3 tokens (0.89 on the twin).
    Every row now counts its EOS: ``ar`` is 1.00 at batch 1; at batch 2 a row that ended
    early lowers the batch's figure, for ``ar`` and ``speculative`` alike."""
    import dataclasses
    from pathlib import Path

    from unmask import api
    from unmask.config import SampleConfig
    from unmask.loaded import Loaded

    spec = benchmark("speculative")
    tok = byte_tokenizer()
    lds = {}
    for name, attention in (("ar", "causal"), ("mdlm", "bidirectional")):
        cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, init_std=0.3,
                           attention=attention, **tok.special_ids())  # fmt: skip
        torch.manual_seed(len(lds))
        lds[name] = Loaded(model=Transformer(cfg).eval(), tokenizer=tok, config=cfg,
                           path=Path(name))  # fmt: skip
    prompts = [tok.encode("in the"), tok.encode("and the lord")]
    free = api.start(lds["ar"], prompts[:1], SampleConfig(gen_length=12)).run().gen_ids[0]
    eos = free[3]  # the greedy text's 4th token as EOS: the row ends after 3 text tokens
    assert eos not in free[:3]
    ar = dataclasses.replace(lds["ar"], config=dataclasses.replace(lds["ar"].config, eos_id=eos))
    cfg = SampleConfig(gen_length=12, temperature=0.0)
    kw = {"ref": None, "prompts": [], "scorer": None}

    def row(case, ids: list[list[int]]) -> dict:
        run = api.start(case.loaded, ids, case.config, draft=case.draft)
        return spec.measure(case, [run], [run.run()], 1.0, batch=len(ids), **kw)

    one = row(spec.Case("ar", ar, cfg), prompts[:1])
    assert (one["tokens"], one["nfe"], one["tokens_per_forward"]) == (3, 4, 1.0)
    sc = dataclasses.replace(cfg, draft_length=4)
    fast = row(spec.Case("spec k=4", ar, sc, draft=lds["mdlm"]), prompts[:1])
    assert fast["ids"] == one["ids"]
    assert fast["tokens_per_forward"] == pytest.approx(4 / fast["nfe"])
    two = row(spec.Case("ar", ar, cfg), prompts)  # the second row goes on to 12 (or its EOS)
    n2 = spec.generated(two["ids"][1], eos)
    assert two["nfe"] == n2 > 4
    assert two["tokens_per_forward"] == pytest.approx((4 + n2) / 2 / n2)


def test_a_nan_gen_ppl_is_written_as_null(tmp_path, benchmark, monkeypatch):
    """The scorer's perplexity is NaN when no text has a token (every row ended at once):
    speculative.py wrote it as ``NaN``, which is not JSON (jq and JavaScript refuse it)."""
    spec = benchmark("speculative")

    class NoTokens:
        def perplexity(self, texts, prompts=None):
            return float("nan")

    monkeypatch.setattr(spec, "load_scorer", lambda args, device: (NoTokens(), "gen ppl: nan"))
    paths = _ar_and_mdlm(tmp_path, max_seq_len=64)
    out = tmp_path / "n.json"
    spec.main(["--ar-model", paths["ar"], "--model", paths["mdlm"], "--gen-lengths", "8",
               "--batches", "1", "--draft-lengths", "4", "--thresholds", "--no-diffusion-row",
               "--prompt-words", "2", "--threads", "1", "--json", str(out)])  # fmt: skip

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    rows = json.loads(out.read_text(), parse_constant=refuse)["rows"]
    assert [r["gen_ppl"] for r in rows] == [None, None]


def test_quick_never_overrides_a_flag_given(benchmark):
    """``--quick`` set gen lengths, batches, prompt words, draft lengths and thresholds
    whatever the user gave: ``--quick --thresholds 0.3`` ran (and labelled) thr=0.5."""
    spec = benchmark("speculative")
    args = spec.parse_args(["--ar-model", "a", "--quick", "--thresholds", "0.3",
                            "--gen-lengths", "16", "--draft-lengths", "2", "6"])  # fmt: skip
    assert args.thresholds == [0.3] and args.gen_lengths == [16]
    assert args.draft_lengths == [2, 6]
    assert args.batches == [1, 2] and args.prompt_words == 4  # the quick defaults of the rest
    full = spec.parse_args(["--ar-model", "a", "--draft-lengths"])
    assert full.draft_lengths == [] and full.gen_lengths == [256, 512]
    assert full.thresholds == [0.5] and full.batches == [1, 8]


@pytest.mark.parametrize("bad, message", [(["--predraft", "bogus"], "unknown predraft"),
                                          (["--thresholds", "1.5"], "draft_threshold"),
                                          (["--hybrid-thresholds", "2"], "draft_threshold")])
def test_a_bad_row_option_is_refused_before_anything_is_measured(tmp_path, benchmark,
                                                                 monkeypatch, bad, message):
    """A row option the decoders refuse was refused only when its rows were timed: after the
    forward costs of both models and the warm-up (minutes on a real checkpoint); then after
    loading the gen ppl scorer (SmolLM2, when installed). Now before either."""
    from unmask.errors import UserError

    spec = benchmark("speculative")
    paths = _ar_and_mdlm(tmp_path, max_seq_len=64)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, init_std=0.3,
                       attention="causal", draft_block=2, objective="hybrid",
                       **tok.special_ids())  # fmt: skip
    save_checkpoint(tmp_path / "hybrid", model=Transformer(cfg), tokenizer=tok)
    measured = []
    monkeypatch.setattr(spec, "forward_cost", lambda *a, **kw: measured.append(a) or {})
    monkeypatch.setattr(spec, "load_scorer", lambda *a: measured.append("scorer") or (None, ""))
    with pytest.raises(UserError, match=message):
        spec.main(["--quick", "--no-score", "--ar-model", paths["ar"], "--model", paths["mdlm"],
                   "--hybrid", str(tmp_path / "hybrid"), "--json", str(tmp_path / "r.json"),
                   *bad])  # fmt: skip
    assert measured == []


def test_a_checkpoint_that_is_not_hybrid_is_refused_as_the_hybrid_flag(tmp_path, benchmark):
    """A non-hybrid ``--hybrid`` read ``predraft applies to a checkpoint trained with
    objective hybrid ...``: a flag the user never gave (its default makes the hybrid rows).
    Now the line names ``--hybrid`` and its path, as ``benchmarks/hybrid.py --model`` does."""
    from unmask.errors import UserError

    spec = benchmark("speculative")
    paths = _ar_and_mdlm(tmp_path, max_seq_len=64)
    with pytest.raises(UserError) as e:
        spec.main(["--quick", "--no-score", "--ar-model", paths["ar"], "--model", paths["mdlm"],
                   "--hybrid", paths["ar"], "--json", str(tmp_path / "r.json")])  # fmt: skip
    assert str(e.value) == (f"--hybrid {paths['ar']}: not a hybrid checkpoint (its config has "
                            "no draft_block; train one with --objective hybrid)")
