"""LLaDA 2.x decoding as published: blocks of 32 counted from the first prompt token with
block-causal attention, threshold commits (LLaDA 2.0's ``generate``), and LLaDA 2.1's
token-to-token editing (SGLang's ``JointThreshold``), through the one decoding path (decoder
``bd3lm``): the output equals a re-implementation of the publisher's loop token for token, with
the exact prefix cache too; the CLI reaches the same run."""

from __future__ import annotations

import pytest
import torch
from llada2_helpers import TINY, random_tensors, write_llada2_folder

import unmask
from unmask import api
from unmask.config import SampleConfig
from unmask.errors import UserError


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("llada2d")
    tensors = random_tensors(TINY, seed=3)
    tensors["lm_head.weight"] *= 6  # peaked predictions: thresholds commit several per step
    write_llada2_folder(path, tensors=tensors)
    return unmask.load(path)


def publisher_loop(
    model,
    prompt: list[int],
    gen_length: int,
    *,
    mask_id: int,
    eos_id: int,
    threshold: float,
    edit_threshold: float | None = None,
    max_post_steps: int = 16,
    block: int = 32,
) -> list[int]:
    """LLaDA2MoeModelLM.generate (block_length=steps=32, temperature 0) with SGLang's
    JointThreshold editing when ``edit_threshold`` is given: whole forward every step, blocks
    from position 0, the prompt's last block completed by generated tokens. [MASK] is never
    proposed (as in unmask; a trained model never ranks it first)."""
    P = len(prompt)
    nb = -(-(P + gen_length) // block)
    x = torch.full((nb * block,), mask_id, dtype=torch.long)
    x[:P] = torch.tensor(prompt)
    for b in range(P // block, nb):
        start, end = b * block, (b + 1) * block
        fixed = torch.arange(start, end) < P  # the prompt inside this block
        post = 0
        while True:
            with torch.no_grad():
                logits = model(x[None, :end])[0, start:end].float()  # block-causal model
            logits[:, mask_id] = float("-inf")
            p, xh = logits.softmax(-1).max(-1)
            cur = x[start:end]
            masked = cur == mask_id
            if masked.any():
                conf = torch.where(masked, p, torch.tensor(float("-inf")))
                m2t = conf >= threshold
                if not m2t.any():
                    m2t[conf.argmax()] = True
            else:
                if edit_threshold is None:
                    break
                post += 1
                if post > max_post_steps:
                    break
                m2t = torch.zeros_like(masked)
            t2t = torch.zeros_like(masked)
            if edit_threshold is not None:
                t2t = (p > edit_threshold) & (cur != xh) & ~masked & ~fixed
            move = m2t | t2t
            if not move.any():
                break
            cur[move] = xh[move]
        if (x[P:end] == eos_id).any():
            break
    return x[P : P + gen_length].tolist()


CASES = [
    # (prompt length, gen_length, threshold, edit_threshold): a partial first block, a prompt of
    # whole blocks, LLaDA 2.0 (no editing), 2.1 Quality (0.7 / 0.5) and Speed (0.5 / 0.0) modes
    (5, 40, 0.95, None),
    (32, 32, 0.9, None),
    (7, 45, 0.7, 0.5),
    (3, 29, 0.5, 0.0),
]


@pytest.mark.parametrize(("plen", "gen", "threshold", "edit"), CASES)
@pytest.mark.parametrize("cache", ["none", "prefix"])
def test_equals_the_publisher_loop(loaded, plen, gen, threshold, edit, cache) -> None:
    cfg = loaded.config
    prompt = torch.randint(1, 41, (plen,), generator=torch.Generator().manual_seed(plen)).tolist()
    want = publisher_loop(
        loaded.model, prompt, gen, mask_id=cfg.mask_id, eos_id=cfg.eos_id,
        threshold=threshold, edit_threshold=edit,
    )  # fmt: skip
    config = SampleConfig(gen_length=gen, policy="threshold", threshold=threshold,
                          edit_threshold=edit, cache=cache)  # fmt: skip
    out = api.start(loaded, [prompt], config).run()
    start, end = out.region
    got = out.tokens[0, start:end].tolist()
    assert got == want[: len(got)]
    assert len(got) == gen or cfg.eos_id in got


def test_editing_changes_committed_tokens(loaded) -> None:
    """With Speed mode's edit threshold 0, some committed token of the random model is replaced
    (the test would pass vacuously if editing never fired); with a threshold above every
    probability nothing is edited and the output is LLaDA 2.0's."""
    prompt = [4, 9, 2]
    seen: list[torch.Tensor] = []
    config = SampleConfig(gen_length=29, policy="threshold", threshold=0.5, edit_threshold=0.0)
    run = api.start(loaded, [prompt], config, step_callback=lambda s, v: seen.append(v.clone()))
    run.run()
    m = loaded.config.mask_id
    changed = any(
        bool(((a != m) & (b != m) & (a != b)).any()) for a, b in zip(seen, seen[1:], strict=False)
    )
    assert changed
    plain = api.start(loaded, [prompt], SampleConfig(gen_length=29, policy="threshold",
                                                     threshold=0.5)).run()  # fmt: skip
    never = api.start(loaded, [prompt], SampleConfig(gen_length=29, policy="threshold",
                                                     threshold=0.5, edit_threshold=0.999999,
                                                     max_post_steps=0)).run()  # fmt: skip
    assert torch.equal(plain.tokens, never.tokens)


def test_batch_needs_equal_lengths_modulo_block(loaded) -> None:
    with pytest.raises(UserError, match="equal lengths modulo 32"):
        api.start(loaded, [[1, 2, 3], [1, 2]], SampleConfig(gen_length=8, policy="threshold"))
    # equal modulo 32: left padding by whole blocks keeps the alignment; each row equals itself
    rows = [list(range(1, 4)), list(range(1, 36))]
    config = SampleConfig(gen_length=8, policy="threshold", threshold=0.9)
    both = api.start(loaded, rows, config).run()
    for i, row in enumerate(rows):
        alone = api.start(loaded, [row], config).run()
        a0, a1 = alone.region
        b0, b1 = both.region
        assert both.tokens[i, b0:b1].tolist()[: a1 - a0] == alone.tokens[0, a0:a1].tolist()


def test_options_checked(loaded) -> None:
    with pytest.raises(UserError, match="edit_threshold must be in"):
        SampleConfig(edit_threshold=1.5)
    from unmask.config import ModelConfig
    from unmask.facts import ModelFacts
    from unmask.sampling import choose_decoder

    facts = ModelFacts.of(ModelConfig())  # a bidirectional model: decoder llada
    with pytest.raises(UserError, match="not to decoder 'llada'"):
        choose_decoder(facts, SampleConfig(edit_threshold=0.5))


def test_cli_generate_with_editing(loaded, capsys) -> None:
    import json

    from unmask.cli import main

    args = ["generate", "--model", str(loaded.path), "--gen-length", "12", "--device", "cpu",
            "--no-live", "--json", "--edit-threshold", "0.5", "--threshold", "0.7",
            "--seed", "0", "w4 w9 w2"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    prompt = loaded.tokenizer.encode("w4 w9 w2")
    want = api.generate(
        loaded,
        ["w4 w9 w2"],
        config=SampleConfig(
            gen_length=12, policy="threshold", threshold=0.7, edit_threshold=0.5, seed=0
        ),
    )
    assert prompt and out["results"][0]["tokens"] == want.ids[0]
    assert out["results"][0]["text"] == want.texts[0]


def test_chat_template_of_the_folder_is_used(tmp_path, capsys) -> None:
    """The folder's chat template (LLaDA 2.x ships one) renders a --chat prompt; the reply is
    decoded by the same block decoder, and equals api.generate with that template."""
    import json

    from unmask.cli import main

    write_llada2_folder(tmp_path, seed=3)
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}<role> w1 {{ m['content'] }} <|endoftext|>{% endfor %}"
        "{% if add_generation_prompt %}<role> w2{% endif %}"
    )
    loaded = unmask.load(tmp_path)
    assert loaded.config.chat_template is not None
    args = ["generate", "--model", str(tmp_path), "--chat", "--gen-length", "10",
            "--device", "cpu", "--no-live", "--json", "w5 w6"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decoder"] == "bd3lm"
    want = api.generate(loaded, ["w5 w6"], config=api.sample_config(loaded, {"gen_length": 10}),
                        template=api.chat_template(loaded))  # fmt: skip
    assert out["results"][0]["tokens"] == want.ids[0]
