"""Structured output on causal (``ar``) checkpoints: forms, schemas and guided_* filled left to
right under the same token automata (``unmask.infill.ordered``): every output valid, the hole
budget never runs out, and the CLI, the Python API and the server give the same answer."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.infill import fill_form
from unmask.infill.automaton import NEVER, TokenAutomaton, vocab_of
from unmask.infill.schema import constraint_form, fill_schema
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

jsonschema = pytest.importorskip("jsonschema")

TOK = byte_tokenizer()
torch.manual_seed(0)
AR = Transformer(
    model_preset(
        "tiny",
        vocab_size=TOK.vocab_size,
        max_seq_len=192,
        attention="causal",
        objective="ar",
        **TOK.special_ids(),
    )
).eval()
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "ok": {"type": "boolean"},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
        "born": {"type": "string", "format": "date"},
        "tags": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 9},
            "minItems": 1,
            "maxItems": 3,
        },
        "y": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": -1, "maximum": 1}]},
    },
    "required": ["name", "age", "ok"],
}
SMALL = {
    "type": "object",
    "properties": {
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
        "y": {"oneOf": [{"type": "null"}, {"type": "boolean"}]},
    },
    "required": ["age", "city", "y"],
}
FORM = {
    "name": "<text:2-8>",
    "age": "<int:0..120>",
    "city": "<choice:Paris|London|Rome>",
    "ok": "<bool>",
    "code": "<regex:[A-Z]{2}[0-9]{3}>",
    "tags": ["<text:1-4>", "fixed"],
}


def greedy() -> SampleConfig:
    return SampleConfig(temperature=0.0, seed=0)


def test_distance_to_accept_is_the_fewest_tokens_to_acceptance():
    auto = TokenAutomaton.from_regex("ab{2,3}c?", vocab_of(TOK))  # one byte per token
    a, b, c = (TOK.encode(x)[0] for x in "abc")
    dist = auto.distance_to_accept()
    seen = [auto.start]
    for t in (a, b, b):
        seen.append(int(auto.table[seen[-1], auto.token_class[t]]))
    assert [int(dist[q]) for q in seen] == [3, 2, 1, 0]
    assert dist[auto.dead] == NEVER


@pytest.mark.parametrize("seed", range(3))
def test_causal_schema_forms_validate(seed):
    r = fill_schema(AR, TOK, SCHEMA, SampleConfig(temperature=1.0, seed=seed))
    jsonschema.validate(r.value, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert json.loads(r.text) == r.value and r.repaired == 0


def test_causal_template_forms_fill_every_hole_in_its_language():
    for temperature in (0.0, 1.5):
        r = fill_form(AR, TOK, json.dumps(FORM), SampleConfig(temperature=temperature, seed=2))
        v = r.value
        assert set(v) == set(FORM) and v["tags"][1] == "fixed"
        assert 2 <= len(v["name"]) <= 8 and 0 <= v["age"] <= 120 and isinstance(v["ok"], bool)
        assert v["city"] in ("Paris", "London", "Rome") and re.fullmatch(
            r"[A-Z]{2}[0-9]{3}", v["code"]
        )


def _random_regex(rng: random.Random, depth: int = 0) -> str:
    atoms = ["a", "b", "[a-c]", "[0-9]", "x", r"\.", "[c-z]"]
    parts = []
    for _ in range(rng.randint(1, 3)):
        if depth < 2 and rng.random() < 0.3:
            inner = "|".join(_random_regex(rng, depth + 1) for _ in range(rng.randint(1, 2)))
            atom = f"(?:{inner})"
        else:
            atom = rng.choice(atoms)
        parts.append(atom + rng.choice(["", "?", "*", "+", "{1,3}", "{2}"]))
    return "".join(parts)


@pytest.mark.parametrize("pattern", [_random_regex(random.Random(i)) for i in range(10)])
def test_every_causal_fill_of_a_random_regex_fullmatches(pattern):
    """Left to right a token is allowed only when acceptance stays within the hole's budget:
    with the smallest budget that fits (the shortest match) and with room to spare."""
    auto = TokenAutomaton.from_regex(pattern, vocab_of(TOK))
    shortest = auto.min_tokens()
    assert shortest is not None
    for width in sorted({max(shortest, 1), 8}):
        form, parse = constraint_form(TOK, regex=pattern, max_tokens=width)
        for seed in range(2):
            r = fill_form(AR, TOK, form, SampleConfig(temperature=2.0, seed=seed), parse=parse)
            assert re.fullmatch(pattern, r.text), (pattern, width, r.text)
            assert len(r.tokens) <= width


def test_causal_guided_choice_and_json_object():
    form, parse = constraint_form(TOK, choice=["yes", "no", "maybe"])
    r = fill_form(AR, TOK, form, SampleConfig(temperature=1.0, seed=1), parse=parse)
    assert r.text in ("yes", "no", "maybe")
    form, parse = constraint_form(TOK, json_object=True, max_tokens=24)
    r = fill_form(
        AR,
        TOK,
        form,
        SampleConfig(temperature=1.0, seed=1),
        parse=parse,
        prefix_ids=TOK.encode("Q: "),
    )
    assert isinstance(json.loads(r.text), dict)


def test_causal_run_is_the_model_greedy_choice_among_allowed_tokens():
    """Greedy left to right = at each hole position the model's argmax over the tokens the
    guide allows: re-scoring the output with the model gives the same tokens."""
    form, parse = constraint_form(TOK, regex="[a-z]{3,5}", max_tokens=5)
    prompt = TOK.encode("name: ")
    r = fill_form(AR, TOK, form, greedy(), parse=parse, prefix_ids=prompt)
    auto = TokenAutomaton.from_regex("(?:[a-z]{3,5}) *", vocab_of(TOK))
    ids = prompt + r.tokens
    with torch.no_grad():
        logits = AR(torch.tensor([ids]))[0]  # (L, V)
    q = auto.start
    for i, t in enumerate(r.tokens):
        left = 5 - i
        ok = auto.distance_to_accept()[auto.table[q][auto.token_class]] <= left - 1
        row = logits[len(prompt) + i - 1].numpy()
        assert t == int(np.argmax(np.where(ok, row, -np.inf)))
        q = int(auto.table[q, auto.token_class[t]])


def test_cli_api_and_server_give_the_same_causal_answer(tmp_path, capsys):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask import api
    from unmask.checkpoint import load, save_checkpoint
    from unmask.cli import main
    from unmask.server import create_app

    ckpt = save_checkpoint(tmp_path / "ar", model=AR, tokenizer=TOK)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SMALL))
    assert (
        main(
            [
                "fill-form",
                "--model",
                str(ckpt),
                "--schema",
                str(schema),
                "--json",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    cli = json.loads(capsys.readouterr().out)["value"]
    loaded = load(ckpt)
    via_api = api.fill_form(loaded, schema=SMALL, config=greedy()).detail.value
    assert cli == via_api
    jsonschema.validate(cli, SMALL, format_checker=jsonschema.FormatChecker())
    prompt = "Fill in: "
    direct = fill_schema(loaded.model, TOK, SMALL, greedy(), max_value_tokens=16)
    with TestClient(create_app(loaded)) as c:
        r = c.post("/v1/forms", json={"schema": SMALL, "temperature": 0})
        assert r.status_code == 200, r.text
        assert r.json()["value"] == via_api
        body = {"prompt": prompt, "max_tokens": 16, "temperature": 0, "guided_json": SMALL}
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["text"]
        form, _ = constraint_form(TOK, json_schema=SMALL, max_tokens=16)
        want = fill_form(loaded.model, TOK, form, greedy(), prefix_ids=TOK.encode(prompt))
        assert json.loads(text) == want.value
        assert direct.value == via_api  # the same schema form, no prompt
        events = c.post("/v1/completions", json={**body, "stream": True})
        chunks = [line[6:] for line in events.text.splitlines() if line.startswith("data: {")]
        streamed = "".join(
            json.loads(x)["choices"][0]["text"] for x in chunks if json.loads(x).get("choices")
        )
        assert streamed == text
        r = c.post(
            "/v1/completions",
            json={"prompt": "x", "max_tokens": 4, "temperature": 0, "guided_regex": "[0-9]{2,4}"},
        )
        assert re.fullmatch("[0-9]{2,4}", r.json()["choices"][0]["text"])


def test_causal_hole_after_hole_and_text_after_the_form_without_fim_are_refused():
    from unmask.errors import UserError

    with pytest.raises(UserError, match="fill-in-the-middle"):
        form, parse = constraint_form(TOK, regex="[a-z]{2}", max_tokens=4)
        fill_form(AR, TOK, form, greedy(), parse=parse, suffix_ids=TOK.encode(" end"))


def test_causal_one_of_and_all_of_validate():
    from test_constraints_schema import COMBINED

    for k, schema in enumerate(COMBINED):
        r = fill_schema(AR, TOK, schema, SampleConfig(temperature=1.0, seed=k))
        jsonschema.validate(r.value, schema)


def test_causal_infill_of_a_constrained_gap_by_fill_in_the_middle():
    """One constrained template gap on an AR-FIM model: the middle is written after
    [FIM_PREFIX] prefix [FIM_SUFFIX] suffix [FIM_MIDDLE] under the gap's automaton, between
    its length bounds (it used to be refused)."""
    from unmask.infill import infill_causal, parse_template
    from unmask.infill.options import constrain_gaps
    from unmask.tokenizer import with_fim_tokens

    tok = with_fim_tokens(byte_tokenizer())
    cfg = model_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        attention="causal",
        objective="ar",
        fim_prefix_id=tok.vocab_size - 3,
        fim_suffix_id=tok.vocab_size - 2,
        fim_middle_id=tok.vocab_size - 1,
        **tok.special_ids(),
    )
    torch.manual_seed(1)
    model = Transformer(cfg).eval()
    cases = [
        ("The [MASK:2-6] sat.", "regex", "[0-9]+"),
        ("A [MASK:1-3] day.", "choices", ["good", "bad"]),
    ]
    for template, option, value in cases:
        segments = constrain_gaps(parse_template(template), **{option: [("1", value)]})
        for seed in range(3):
            r = infill_causal(model, tok, segments, SampleConfig(temperature=1.5, seed=seed))
            gap = r.gaps[0]
            if option == "regex":
                assert re.fullmatch(value, gap.text) and 2 <= len(gap.tokens) <= 6
            else:
                assert gap.text in value
            assert r.text == template.split("[")[0] + gap.text + template.split("]")[1]


def test_ar_run_samples_only_allowed_tokens_even_from_nan_logits():
    """The ``ARRun(allowed=...)`` hook: every token is one the callback allowed, at any
    temperature, whatever the logits (NaN and +inf included)."""
    from unmask.sampling.ar import ARRun

    seen: list[int] = []

    def allowed(step: int, tokens: torch.Tensor) -> torch.Tensor:
        seen.append(step)
        assert tokens.shape[1] == 2 + step  # the prompt and the tokens so far
        ok = torch.zeros(tokens.shape[0], TOK.vocab_size, dtype=torch.bool)
        ok[:, 10 + step % 3 :: 7] = True
        return ok

    class Wild(torch.nn.Module):
        supports_kv_cache = True
        config = AR.config

        def forward(self, tokens, attention_mask=None, *, cache=None, start=0):
            out = AR(tokens, attention_mask, cache=cache, start=start)  # (B, L, V)
            out[..., 10::7] = float("nan")
            out[..., 5] = float("inf")
            return out

    for temperature in (0.0, 1.0):
        seen.clear()
        run = ARRun(
            Wild(),
            [[4, 5]],
            max_new_tokens=6,
            temperature=temperature,
            eos_id=TOK.eos_id,
            allowed=allowed,
            generator=torch.Generator().manual_seed(0),
        )
        gen = run.run().gen_ids[0]
        assert seen == list(range(6))
        assert all((t - 10 - i % 3) % 7 == 0 and t >= 10 for i, t in enumerate(gen))
