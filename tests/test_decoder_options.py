"""What each decoder does with the options it is given: options a decoder would ignore are
refused in one line, ``forbid_eos`` holds on every decoder, and the commands' early checks
refuse only runs that cannot happen."""

from __future__ import annotations

import math

import pytest
import torch
from server_helpers import loaded
from torch import nn

from unmask import api
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling import generate_ar
from unmask.sampling.hybrid import HybridRun
from unmask.sampling.speculative import SpeculativeRun
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def transformer(attention: str, seed: int, **extra) -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, attention=attention,
                       init_std=0.3, **TOK.special_ids(), **extra)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


class EosLover(nn.Module):
    """A causal model whose every position puts its mass on EOS."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.supports_kv_cache = inner, inner.config, True

    def forward(self, tokens, attention_mask=None, **kw):
        logits = self.inner(tokens, attention_mask, **kw).clone()
        logits[..., self.config.eos_id] += 50.0
        return logits


PROMPTS = [[10, 20, 30, 40, 50], [7, 8]]


def test_forbid_eos_holds_on_the_causal_decoders():
    eos = TOK.eos_id
    for inner in (transformer("causal", 0), transformer("causal", 1, draft_block=3)):
        m = EosLover(inner)
        assert generate_ar(m, PROMPTS, max_new_tokens=6, eos_id=eos).gen_ids[0][0] == eos
        runs = {
            "ar": lambda forbid, m=m: api.start(
                loaded(m), PROMPTS, SampleConfig(decoder="ar", gen_length=6, forbid_eos=forbid)
            ),
            "speculative": lambda forbid, m=m: SpeculativeRun(
                m, transformer("bidirectional", 2), PROMPTS, max_new_tokens=6, draft_length=3,
                eos_id=eos, forbid_eos=forbid),
        }  # fmt: skip
        if inner.config.draft_block:
            runs["hybrid"] = lambda forbid, m=m: HybridRun(
                m, PROMPTS, max_new_tokens=6, eos_id=eos, forbid_eos=forbid)  # fmt: skip
        for name, start in runs.items():
            with torch.no_grad():
                free, forbidden = start(False).run(), start(True).run()
            assert free.gen_ids[0][0] == eos, name  # the model wants EOS at once
            assert all(eos not in row for row in forbidden.gen_ids), name
            assert all(len(row) == 6 for row in forbidden.gen_ids), name


@pytest.mark.parametrize("option", [
    {"policy": "threshold"}, {"cache": "prefix"}, {"remasking": "random"},
    {"confidence": "margin"}, {"prompt_masks": "reference"}, {"skip_empty_steps": True},
    {"block_length": 4}, {"steps": 4}, {"edit_threshold": 0.5}, {"max_post_steps": 3},
])  # fmt: skip
def test_causal_decoders_refuse_the_options_of_the_denoising_loop(option):
    ar = loaded(transformer("causal", 0))
    drafter = loaded(transformer("bidirectional", 1))
    name = next(iter(option))
    config = SampleConfig(gen_length=8, **option)
    for draft in (None, drafter):
        with pytest.raises(UserError, match=f"^{name} does not apply to decoder '(ar|specul)"):
            api.start(ar, [[5, 6]], config, draft=draft)
    # what a command fills in (one step per token, one block) is no option given
    api.start(ar, [[5, 6]], SampleConfig(gen_length=8, steps=8, block_length=8))


def test_sedd_sampler_applies_to_decoder_sedd_only():
    diffusion = loaded(transformer("bidirectional", 1))
    with pytest.raises(UserError, match="sedd_sampler applies to decoder 'sedd'"):
        api.start(diffusion, [[5, 6]], SampleConfig(gen_length=8, sedd_sampler="euler"))


def test_a_uniform_graph_sedd_model_cannot_draft():
    ar = loaded(transformer("causal", 0))
    uniform = loaded(transformer("bidirectional", 1, objective="sedd", sedd_graph="uniform"))
    with pytest.raises(UserError, match="uniform-graph SEDD model"):
        api.start(ar, [[5, 6]], SampleConfig(gen_length=8), draft=uniform)


def test_the_context_error_names_the_drafter_when_its_context_is_the_limit():
    ar = loaded(transformer("causal", 0))
    small = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=16, init_std=0.3,
                         **TOK.special_ids())  # fmt: skip
    drafter = loaded(Transformer(small).double().eval())
    with pytest.raises(UserError, match=r"exceeds the drafter's max_seq_len \(16\)"):
        api.start(ar, [[5, 6, 7]], SampleConfig(gen_length=20), draft=drafter)
    with pytest.raises(UserError, match=r"exceeds the model's max_seq_len \(64\)"):
        api.start(ar, [[5, 6, 7]], SampleConfig(gen_length=62))


def test_block_diffusion_names_its_block_size_when_the_length_does_not_divide():
    bd = loaded(transformer("block-causal", 0, block_size=4, objective="bd3lm"))
    with pytest.raises(UserError) as e:
        api.start(bd, [[5, 6]], SampleConfig(gen_length=10, steps=10))
    assert "multiple of the model's block_size (4); try gen_length 8 or 12" in str(e.value)


def test_the_api_takes_options_by_name_and_paths_and_refuses_what_is_not_ids(tmp_path):
    ar, drafter = loaded(transformer("causal", 0)), transformer("bidirectional", 1)
    path = save_checkpoint(tmp_path / "drafter", model=drafter.float(), tokenizer=TOK)
    given = {"gen_length": 6, "temperature": 0.0}
    plain = api.generate(ar, "hello", config=SampleConfig(decoder="ar", **given))
    spec = api.generate(ar, "hello", config=given, draft=str(path))
    assert spec.decoder == "speculative" and spec.ids == plain.ids
    mdlm = loaded(transformer("bidirectional", 3))
    by_name = api.generate(mdlm, "hi", config={"gen_length": 4}, template="plain")
    by_object = api.generate(mdlm, "hi", config=api.sample_config(mdlm, {"gen_length": 4}),
                             template=api.chat_template(mdlm, "plain"))  # fmt: skip
    assert by_name.ids == by_object.ids
    with pytest.raises(UserError, match="unknown sampling option 'nope'"):
        api.sample_config(mdlm, {"nope": 1})
    with pytest.raises(UserError, match="config must be a SampleConfig"):
        api.generate(mdlm, "hi", config=3)
    for bad in ("hi", [[5.5, 6]], torch.tensor([[1.0, 2.0]]), [[5, None]]):
        with pytest.raises(UserError, match="prompt ids must be whole numbers"):
            api.start(mdlm, bad, SampleConfig(gen_length=4, steps=4))
    import numpy as np

    ids = api.start(mdlm, [np.int64(5), torch.tensor(6)], SampleConfig(gen_length=4, steps=4))
    assert ids.run().tokens.shape == (1, 6)


@pytest.fixture(scope="module")
def mdlm_ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, init_std=0.3,
                       **TOK.special_ids())  # fmt: skip
    root = tmp_path_factory.mktemp("mdlm")
    return str(save_checkpoint(root / "ck", model=Transformer(cfg).eval(), tokenizer=TOK))


def test_cli_block_length_without_steps_runs_one_step_per_token(mdlm_ckpt, capsys):
    import json

    argv = ["generate", "--model", mdlm_ckpt, "--gen-length", "12", "--block-length", "4",
            "--no-live", "--json", "hi"]  # fmt: skip
    assert main(argv) == 0  # was: steps (64) must be a multiple of the number of blocks (3)
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 12
    assert main([*argv, "--steps", "7"]) == 2  # a given steps is still checked before loading
    assert "steps (7) must be a multiple of the number of blocks (3 =" in capsys.readouterr().err


def test_cli_notes_empty_steps_counting_the_prompt_blanks(mdlm_ckpt, capsys):
    base = ["generate", "--model", mdlm_ckpt, "--no-live", "--gen-length", "4",
            "[MASK][MASK] x"]  # fmt: skip
    assert main([*base, "--steps", "6"]) == 0  # 6 masks, 6 steps: none empty
    assert "note:" not in capsys.readouterr().err
    assert main([*base, "--steps", "8"]) == 0
    assert "note: 8 steps for 6 masked tokens" in capsys.readouterr().err


def test_cli_prompt_file_that_is_a_folder_says_so(mdlm_ckpt, tmp_path, capsys):
    assert main(["generate", "--model", mdlm_ckpt, "--prompt-file", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: a folder, not a prompt file" in err and err.count("\n") == 1



def test_cli_summary_names_the_policy_and_notes_one_token_a_step(mdlm_ckpt, capsys):
    base = ["generate", "--model", mdlm_ckpt, "--no-live", "--gen-length", "8", "hi"]
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "decoder llada, 1.00 tokens/step" in err and "note:" not in err
    # a random tiny model is never 99.99% sure: the threshold policy falls back to one a step
    assert main([*base, "--policy", "threshold", "--threshold", "0.9999", "--cache", "dual"]) == 0
    err = capsys.readouterr().err
    assert "decoder llada, policy threshold, cache dual, 1.00 tokens/step" in err
    assert "note: policy threshold committed 1.00 tokens a step" in err


def test_a_missing_local_model_is_not_sent_to_the_hub(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", "runs/demo", "hi"]) == 2
    err = capsys.readouterr().err
    assert "the shipped model is --model demo" in err and "hf download" not in err
    (tmp_path / "runs").mkdir()
    assert main(["generate", "--model", "runs/mine", "hi"]) == 2
    assert "runs/mine: no such folder\n" in capsys.readouterr().err
    assert main(["generate", "--model", "org/model", "hi"]) == 2
    assert "hf download org/model" in capsys.readouterr().err


def test_the_task_entries_take_options_by_name_too():
    mdlm = loaded(transformer("bidirectional", 3))
    by_name = api.infill(mdlm, "a [MASK:3] b", config={"steps": 3})
    by_object = api.infill(mdlm, "a [MASK:3] b", config=SampleConfig(steps=3))
    assert by_name.text == by_object.text
    assert api.edit(mdlm, "the cat sat", spans=[(4, 7)], config={"steps": 2}).text
    with pytest.raises(UserError, match="unknown sampling option 'stepz'"):
        api.fill_form(mdlm, '{"a": "<int>"}', config={"stepz": 2})


def test_threshold_on_a_causal_model_is_one_refusal_naming_it():
    ar = loaded(transformer("causal", 0))
    for given in ({"threshold": 0.5}, {"threshold": 0.5, "policy": "threshold"}):
        config = api.sample_config(ar, {"gen_length": 8, **given})  # no "use policy threshold"
        with pytest.raises(UserError, match="^(policy, )?threshold do(es)? not apply to decod"):
            api.start(ar, [[5, 6]], config)


def test_prompt_ids_from_a_generator_and_template_errors_name_the_argument():
    mdlm = loaded(transformer("bidirectional", 3))
    from unmask.canvas import as_rows

    assert as_rows([(i for i in [1, 2, 3])]) == [[1, 2, 3]]
    with pytest.raises(UserError, match="got float 2.5"):
        as_rows([(i for i in [1, 2.5, 3])])
    with pytest.raises(UserError) as e:
        api.chat(mdlm, [{"role": "user", "content": "hi"}], template="nope-nope")
    assert "template= 'nope-nope'" in str(e.value) and "--template" not in str(e.value)


def test_edit_refuses_spans_with_rounds():
    mdlm = loaded(transformer("bidirectional", 3))
    with pytest.raises(UserError, match="rounds > 1 revises the lowest-confidence tokens"):
        api.edit(mdlm, "the cat sat", spans=[(4, 7)], lowest=1, rounds=2)


class EosLate(nn.Module):
    """A model that puts its mass on EOS from canvas position ``at`` on (``start`` counts the
    positions a cached call skips)."""

    def __init__(self, inner: nn.Module, at: int) -> None:
        super().__init__()
        self.inner, self.config, self.at = inner, inner.config, at
        self.supports_kv_cache = getattr(inner, "supports_kv_cache", True)

    def forward(self, tokens, attention_mask=None, **kw):
        logits = self.inner(tokens, attention_mask, **kw).clone()
        pos = kw.get("start", 0) + torch.arange(tokens.shape[1])
        logits[:, pos >= self.at, self.config.eos_id] += 50.0
        return logits


def test_token_counts_stop_at_eos_on_every_decoder():
    """``Generation.n_tokens`` (the summary line's count and ``tokens_per_s``): each row's ids
    up to and including its first EOS, not the padding a causal decoder writes after it (nor
    the EOS a diffusion decoder fills the rest with)."""
    eos, G = TOK.eos_id, 12
    causal = EosLate(transformer("causal", 0), 8)
    cases = {
        "ar": (causal, None),
        "speculative": (causal, EosLate(transformer("bidirectional", 2), 8)),
        "hybrid": (EosLate(transformer("causal", 1, draft_block=3, objective="hybrid"), 8),
                   None),
        "llada": (EosLate(transformer("bidirectional", 3), 8), None),
    }
    for name, (m, d) in cases.items():
        config = SampleConfig(gen_length=G, steps=G, seed=0)
        out = api.generate(loaded(m), ["abcde", "xy"], config=config,
                           draft=None if d is None else loaded(d))
        assert out.decoder == name
        ends = [r.index(eos) + 1 for r in out.ids]  # every row writes EOS before G
        assert max(ends) < G and out.n_tokens == sum(ends), (name, out.ids)
        assert out.tokens_per_s == pytest.approx(sum(ends) / out.seconds)
    with_pad = api.Generation(texts=["", ""], ids=[[5, eos, 0, 0], [6, 7, 8, 9]], prompts=[],
                              prompt_ids=[], nfe=1, steps=1, seconds=2.0, decoder="ar")
    assert with_pad.n_tokens == 8  # no result: no EOS known, every id counts
    with_pad.result = api.start(loaded(causal), [[5]], SampleConfig(gen_length=1)).run()
    assert with_pad.n_tokens == 2 + 4 and with_pad.tokens_per_s == 3.0
    with_pad.ends = frozenset({eos, 7})  # a chat template's end of turn ends a row too
    assert with_pad.n_tokens == 2 + 2


def test_a_chat_reply_counts_its_tokens_to_the_end_of_turn():
    """With a chat template, ``n_tokens`` stops at the template's end-of-turn marker (a
    special token it writes), where the reply ends and the server stops counting."""
    from unmask.chat import template_arg

    template = template_arg("{% for m in messages %}{{ m.content }}[BOS]{% endfor %}")
    ends = template.ends(TOK, TOK.eos_id)
    assert ends == {TOK.eos_id, TOK.bos_id}
    out = api.generate(loaded(EosLate(transformer("causal", 0), 8)), ["hi"],
                       config=SampleConfig(gen_length=12, seed=0), template=template)
    assert out.ends == ends
    row = out.ids[0]
    assert out.n_tokens == next((k + 1 for k, i in enumerate(row) if i in ends), len(row))


def test_cli_summary_and_json_count_the_ids_up_to_eos(tmp_path, capsys):
    import json

    m = transformer("causal", 0, head_bias=True)
    with torch.no_grad():
        m.lm_head.bias[TOK.eos_id] = 50.0  # EOS first: one token a row, then padding
    save_checkpoint(tmp_path / "run", model=m, tokenizer=TOK)
    base = ["generate", "--model", str(tmp_path / "run" / "checkpoint"), "--device", "cpu",
            "--gen-length", "16", "--no-live", "a", "bc"]
    assert main(base) == 0
    err = capsys.readouterr().err
    assert err.startswith("2 tokens, 1 step,"), err
    assert main([*base, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [len(r["tokens"]) for r in data["results"]] == [16, 16]  # the ids, padding kept
    # both rounded in the JSON (seconds to 0.1 ms): 2 tokens over the unrounded seconds
    lo, hi = data["seconds"] - 5e-5, data["seconds"] + 5e-5
    assert 2 / hi - 0.01 <= data["tokens_per_s"] <= (2 / lo + 0.01 if lo > 0 else math.inf)


def test_acceptance_counts_only_the_drafts_committed():
    """A round whose accepted drafts hold an EOS commits up to it; the drafts after it are not
    committed, so ``accepted`` (and ``acceptance_rate``) leave them out. Here every row's
    drafts from canvas position 7 on are EOS and the verifier agrees: per row, one of the
    accepted drafts (the EOS) is committed and the 3 after it are not."""
    eos = TOK.eos_id
    spec = SpeculativeRun(EosLate(transformer("causal", 0), 7),
                          EosLate(transformer("bidirectional", 2), 7), PROMPTS,
                          max_new_tokens=12, draft_length=4, eos_id=eos)
    hyb = HybridRun(EosLate(transformer("causal", 1, draft_block=4), 7), PROMPTS,
                    max_new_tokens=12, eos_id=eos)
    for run in (spec, hyb):
        with torch.no_grad():
            res = run.run()
        assert [r.index(eos) for r in res.gen_ids] == [3, 3]  # EOS at canvas position 8
        assert res.accepted == 2 and res.accepted <= res.committed
        assert res.acceptance_rate == pytest.approx(2 / res.drafted)
        assert res.acceptance_stats()["accepted"] == 2
