"""Options given explicitly on a causal checkpoint (session 38, causal): ``--steps 64`` (the
dataclass's default value, typed) is refused like any other count the token-by-token decoder
would ignore; ``--n N`` of a greedy run decodes each prompt once."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer, with_fim_tokens


@pytest.fixture(scope="module")
def causal_ckpt(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint

    tok = with_fim_tokens(byte_tokenizer())
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=96, attention="causal",
                       objective="ar", **tok.special_ids(), **tok.fim_ids())
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ar")
    return str(save_checkpoint(path, model=Transformer(cfg).eval(), tokenizer=tok))


@pytest.mark.parametrize("steps", ["64", "8"])
def test_infill_steps_typed_on_a_causal_checkpoint_are_refused_at_any_count(
        causal_ckpt, steps, capsys):
    """A one-gap template of 4 tokens is filled in 4 steps by fill-in-the-middle; ``--steps 8``
    was refused ("does not apply to decoder 'ar'") but ``--steps 64``, the dataclass's
    default, was taken as not given and ran, doing nothing with it."""
    from unmask.cli import main

    argv = ["infill", "--model", causal_ckpt, "--device", "cpu", "ab [MASK:4] cd"]
    assert main([*argv, "--steps", steps]) == 2
    err = capsys.readouterr().err
    assert "--steps does not apply to decoder 'ar'" in err and len(err.strip().splitlines()) == 1
    assert main([*argv, "--steps", "4"]) == 0  # one step per token: what it does
    assert main(argv) == 0


def test_generate_steps_64_typed_on_a_causal_checkpoint_is_refused(causal_ckpt, capsys):
    """``unmask generate --gen-length 8 --steps 64`` on an AR checkpoint ran (``--steps 9``
    was refused); steps at gen_length stay accepted (one step per token)."""
    from unmask.cli import main

    argv = ["generate", "--model", causal_ckpt, "--device", "cpu", "--no-live", "ab",
            "--gen-length", "8"]
    assert main([*argv, "--steps", "64"]) == 2
    assert "--steps does not apply to decoder 'ar'" in capsys.readouterr().err
    assert main([*argv, "--steps", "8"]) == 0


def test_the_library_refuses_explicit_steps_but_not_the_dataclass_default(causal_ckpt):
    """A mapping names what the caller set: steps 64 there is refused; a ``SampleConfig``
    whose steps are the dataclass's (never chosen) still runs, as it always did."""
    from unmask import api
    from unmask.checkpoint import load

    loaded = load(causal_ckpt)
    with pytest.raises(UserError, match="steps does not apply to decoder 'ar'"):
        api.sample_config(loaded, {"gen_length": 8, "steps": 64})
    with pytest.raises(UserError, match="steps does not apply to decoder 'ar'"):
        api.generate(loaded, "ab", config={"gen_length": 8, "steps": 64})
    out = api.generate(loaded, "ab", config=SampleConfig(gen_length=8))
    assert len(out.ids[0]) == 8
    assert api.sample_config(loaded, {"gen_length": 8, "steps": 8}).steps == 8


@pytest.fixture(scope="module")
def mdlm_ckpt(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("mdlm")
    return str(save_checkpoint(path, model=Transformer(cfg).eval(), tokenizer=tok))


@pytest.mark.parametrize("which", ["causal_ckpt", "mdlm_ckpt"])
def test_greedy_choices_are_decoded_once(which, request):
    """``--n 4`` of a greedy run (and a prompt given twice) wrote four identical texts from a
    batch of four identical rows: four times the forward work for one text. Each distinct
    prompt is now one row of the batch, its copies its text; the texts are those of the
    prompts alone, in their places."""
    from unmask import api
    from unmask.checkpoint import load

    loaded = load(request.getfixturevalue(which))
    rows: list[int] = []
    hook = loaded.model.register_forward_pre_hook(
        lambda _m, args, kwargs=None: rows.append(int(args[0].shape[0])))
    try:
        config = {"gen_length": 8, "temperature": 0.0}
        alone = {p: api.generate(loaded, p, config=config).texts[0] for p in ("ab", "xyz")}
        rows.clear()
        out = api.generate(loaded, ["ab", "xyz", "ab"], config=config, n=3)
    finally:
        hook.remove()
    assert max(rows) == 2  # two distinct prompts, not nine rows
    assert out.texts == [alone[p] for p in ("ab", "xyz", "ab") for _ in range(3)]
    assert len(out.ids) == 9 and len(set(map(tuple, out.ids))) <= 2


def test_greedy_rows_with_random_remasking_are_not_collapsed(mdlm_ckpt):
    """Temperature 0 with ``remasking random`` draws (the order it commits in): its rows are
    not copies of one, as a greedy run's are (``draws_noise``), and each is decoded."""
    from unmask import api
    from unmask.checkpoint import load

    loaded = load(mdlm_ckpt)
    rows: list[int] = []
    hook = loaded.model.register_forward_pre_hook(
        lambda _m, args, kwargs=None: rows.append(int(args[0].shape[0])))
    try:
        torch.manual_seed(0)  # no seed given: the run draws from torch's own generator
        out = api.generate(loaded, "ab", n=4, config={"gen_length": 12, "temperature": 0.0,
                                                      "remasking": "random"})
    finally:
        hook.remove()
    assert max(rows) == 4  # four rows decoded, not one row and its copies
    assert len(set(map(tuple, out.ids))) > 1


def test_the_server_refuses_steps_64_on_a_causal_checkpoint_like_steps_9(causal_ckpt):
    """A completion request's ``steps`` is a field the client sent: 64 (the dataclass's
    default) with ``max_tokens`` 8 on an AR checkpoint was a 200 that ignored it, 9 a 400."""
    from fastapi.testclient import TestClient

    from unmask.checkpoint import load
    from unmask.server import create_app

    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}}
    with TestClient(create_app(load(causal_ckpt))) as c:
        for steps, status in ((64, 400), (9, 400), (8, 200)):
            r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8, "steps": steps})
            assert r.status_code == status, (steps, r.text)
            if status == 400:
                assert "steps does not apply to decoder 'ar'" in r.json()["error"]["message"]
        # the requests filled left to right (their own check, ``plumbing.left_to_right``):
        # steps 64 there was a 200 too, after the fix above
        for path, body in (
            ("/v1/infill", {"template": "ab [MASK:4] cd"}),
            ("/v1/infill", {"template": "ab [MASK:4] cd", "stream": True}),
            ("/v1/forms", {"form": {"a": "<digits:1-3>"}}),
            ("/v1/completions", {"prompt": "ab", "max_tokens": 8, "response_format": schema}),
        ):
            for steps in (64, 9):
                r = c.post(path, json={**body, "steps": steps})
                assert r.status_code == 400, (path, body, steps, r.text)
                assert "steps does not apply to decoder 'ar'" in r.json()["error"]["message"]
            assert c.post(path, json=body).status_code == 200, (path, body)


@pytest.mark.parametrize("argv, says", [
    (["--decoder", "ar"], "decoder 'ar' needs a causal model"),
    (["--decoder", "hybrid"], "decoder 'hybrid' needs a checkpoint trained with objective"),
])
def test_steps_64_leaves_the_wrong_decoder_its_own_error(causal_ckpt, mdlm_ckpt, argv, says,
                                                         capsys):
    """``--steps 64`` was checked before the decoder: ``--decoder ar`` on an MDLM (and
    ``--decoder hybrid`` on an AR model) was told "--steps does not apply to decoder ...,
    leave it out", and only then, once it was left out, what was wrong (``--steps 63`` named
    it at once)."""
    from unmask.cli import main

    model = mdlm_ckpt if argv[1] == "ar" else causal_ckpt
    for steps in ("64", "63"):
        assert main(["generate", "--model", model, "--device", "cpu", "--no-live", "ab",
                     "--gen-length", "8", "--steps", steps, *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and "--steps" not in err, (steps, err)


def test_steps_64_with_a_drafter_names_decoder_speculative(causal_ckpt, mdlm_ckpt, capsys):
    """With ``--draft`` the run's decoder is ``speculative``, whose refusal names the
    drafter's own options; ``--steps 64`` named decoder 'ar' (``--steps 63`` did not)."""
    from unmask.cli import main

    for steps in ("64", "63"):
        assert main(["generate", "--model", causal_ckpt, "--draft", mdlm_ckpt, "--device",
                     "cpu", "--no-live", "ab", "--gen-length", "8", "--steps", steps]) == 2
        err = capsys.readouterr().err
        assert "does not apply to decoder 'speculative'" in err, (steps, err)


def test_eval_steps_at_the_gen_length_follow_the_length_eval_shrinks(causal_ckpt):
    """``unmask eval --steps 64`` on a causal checkpoint (the default gen length 64: one step
    a token, not given) ran; where the prompt leaves less room, eval shrinks the gen length
    itself and the same steps were refused ("does not apply"), by the prompt's length."""
    from unmask import api
    from unmask.checkpoint import load
    from unmask.commands.eval import _fit_gen_length

    loaded = load(causal_ckpt)  # a context of 96: a prompt of 60 leaves 36
    for given in ({"steps": 64}, {"block_length": 64}):
        config = api.sample_config(loaded, given, prompt_lengths=[60])
        fitted = _fit_gen_length(loaded, api.facts_of(loaded), config, given, 60)
        assert fitted.gen_length == 36 and fitted.block_length is None, given
    with pytest.raises(UserError, match="steps does not apply"):  # other steps still refused
        api.choose(loaded, {"steps": 63})


def test_eval_task_file_steps_at_the_gen_length_run_on_a_causal_checkpoint(
        causal_ckpt, tmp_path):
    """``unmask eval --task-file F --steps 64`` on a causal checkpoint ran as it runs without
    the task file (steps at the gen length checked: one step a token, not given); the task
    sizes its own gen length, and the same steps were refused there ("does not apply")."""
    import json

    from unmask.cli import main

    items = [{"task": "countdown3", "prompt": "67,34,8>41:", "answer": "67+8=75,75-34=41",
              "meta": {"numbers": [67, 34, 8], "target": 41}}]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(i) + "\n" for i in items))
    for flag in ("--steps", "--block-length"):
        assert main(["eval", causal_ckpt, "--device", "cpu", "--task-file", str(tasks),
                     "--no-score", flag, "64"]) == 0, flag
    assert main(["eval", causal_ckpt, "--device", "cpu", "--task-file", str(tasks),
                 "--no-score", "--steps", "63"]) == 2  # any other count is still refused


def test_chat_steps_64_with_a_drafter_names_decoder_speculative(causal_ckpt, mdlm_ckpt, capsys):
    """``unmask chat --draft X --steps 64`` names the decoder it runs (speculative) as
    ``--steps 63`` does, not 'ar' (generate's rule: ``api.sample_config(drafter=)``)."""
    from unmask.cli import main

    for steps in ("64", "63"):
        assert main(["chat", "--model", causal_ckpt, "--draft", mdlm_ckpt, "--device", "cpu",
                     "--template", "plain", "--gen-length", "8", "--steps", steps]) == 2
        err = capsys.readouterr().err
        assert "does not apply to decoder 'speculative'" in err, (steps, err)
