"""Session 31 (samplingmend): one grouping of a request's rows, on every path.

- The server's ``/v1/completions`` put every greedy row of a request in one run, while
  ``api.generate`` (``unmask generate``) runs a row the decoder keeps apart (a prompt of
  [MASK]s alone, a [MASK] in a prompt under a KV cache) alone: the two wrote different text
  for the same request. Both now group rows by ``api.row_runs``.
- A seeded server job holding such a row ran every row as a run of its own; now the row
  kept apart runs alone and the others share one run (as ``api.run_rows``).
- Greedy rows kept apart ran one run each, identical ones included (``--n 8`` of a prompt of
  [MASK]s: 8 runs); identical rows now run once, the copies taking its text.
"""

from __future__ import annotations

import pytest

from unmask import api


@pytest.fixture(scope="module")
def mdlm(tmp_path_factory):
    from test_seeds_rows import _checkpoint

    return api.load_for_decoding(_checkpoint(tmp_path_factory.mktemp("mdlm")), device="cpu",
                                 dtype="fp32")


@pytest.fixture(scope="module")
def client(mdlm):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    with TestClient(create_app(mdlm, limits=ServerLimits(max_batch=16))) as c:
        yield c


def _served(client, body):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    return [c["text"] for c in sorted(out["choices"], key=lambda c: c["index"])], out["nfe"]


CASES = [
    (["a[MASK]b", "In the", "xyz"], "dual"),
    (["a[MASK]b", "In the", "xyz"], "prefix"),
    (["The cat sat on", "[MASK][MASK]", "ab"], "none"),
]


@pytest.mark.parametrize(("prompts", "cache"), CASES)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_server_writes_what_generate_writes_beside_a_row_kept_apart(
        client, mdlm, prompts, cache, temperature):
    """The same request (greedy, or seeded with two choices a prompt) gives the same text
    per row from the server and from ``api.generate``."""
    options = {"steps": 16, "block_length": 8, "temperature": temperature, "cache": cache}
    n = 1 if temperature == 0 else 2
    body = {"prompt": prompts, "max_tokens": 16, "n": n, **options}
    if temperature:
        body["seed"] = 7
    texts, _ = _served(client, body)
    config = {"gen_length": 16, **options, **({"seed": 7} if temperature else {})}
    assert texts == api.generate(mdlm, prompts, config=config, n=n).texts


def test_a_seeded_server_job_runs_only_the_row_kept_apart_alone(client, mdlm):
    """Four seeded rows, one kept apart (a [MASK] under the dual cache): two runs (the
    row alone, the other three in one run of a generator each), not four."""
    body = {"prompt": ["In the", "a[MASK]b", "xyz", "q"], "max_tokens": 16, "steps": 16,
            "block_length": 8, "temperature": 1.0, "cache": "dual", "seed": 3}
    texts, nfe = _served(client, body)
    generation = api.generate(mdlm, body["prompt"], config={
        "gen_length": 16, "steps": 16, "block_length": 8, "temperature": 1.0,
        "cache": "dual", "seed": 3})
    assert texts == generation.texts
    assert nfe == generation.nfe == 2 * 16


def test_identical_greedy_rows_kept_apart_run_once(mdlm):
    """``n=4`` of a prompt of [MASK]s, greedy, beside a plain prompt: the [MASK] prompt
    runs once (its copies the same text as alone), the other prompt's rows one batch."""
    config = {"gen_length": 16, "steps": 16, "block_length": 8, "temperature": 0.0}
    seen = []
    out = api.generate(mdlm, ["[MASK][MASK]", "In the"], config=config, n=4,
                       step_callback=lambda step, view: seen.append(view))
    assert out.nfe == 2 * 16  # two runs: old code ran five
    alone = api.generate(mdlm, ["[MASK][MASK]"], config=config)
    assert out.texts[:4] == alone.texts * 4 and out.ids[:4] == alone.ids * 4
    assert out.prompt_ids[:4] == alone.prompt_ids * 4
    assert out.texts[4:] == api.generate(mdlm, ["In the"], config=config).texts * 4
    assert seen[-1].tolist() == out.ids  # the live view shows the copies too


def test_identical_greedy_rows_kept_apart_run_once_on_the_server(client, mdlm):
    """The server does the same: ``n=4`` of a prompt of [MASK]s is one run, and every
    choice (and every streamed row) is the prompt's text alone."""
    body = {"prompt": "[MASK][MASK]", "max_tokens": 16, "steps": 16, "block_length": 8,
            "temperature": 0.0, "n": 4}
    texts, nfe = _served(client, body)
    alone = api.generate(mdlm, ["[MASK][MASK]"], config={
        "gen_length": 16, "steps": 16, "block_length": 8, "temperature": 0.0})
    assert texts == alone.texts * 4
    assert nfe == 16
    from test_server_rows import _streamed

    assert _streamed(client, body) == texts
    mixed = {**body, "prompt": ["In the", "[MASK][MASK]"], "n": 2, "cache": "dual"}
    assert _streamed(client, mixed) == _served(client, mixed)[0]


def test_sampling_without_a_seed_does_not_copy_rows(mdlm):
    """Rows that draw random numbers are never copies of each other (only a run that
    draws nothing writes the same text twice)."""
    M = mdlm.tokenizer.mask_id
    config = api.sample_config(mdlm, {"gen_length": 8, "steps": 8, "temperature": 1.0})
    runs = api.row_runs(mdlm, [[M, M]] * 3, config, seeded=False)
    assert runs.same == [0, 1, 2] and runs.groups == [[0], [1], [2]]
    greedy = api.sample_config(mdlm, {"gen_length": 8, "steps": 8, "temperature": 0.0})
    runs = api.row_runs(mdlm, [[M, M], [5, 6], [M, M]], greedy, seeded=False)
    assert runs.same == [0, 1, 0] and runs.groups == [[1], [0]]


def test_the_task_scorer_decodes_greedy_rows_as_generate(mdlm):
    """``tasks.score.decode_each`` (``unmask eval``, lm-eval's ``generate_until``) ran a
    greedy batch holding a row kept apart as one batch: now ``generate``'s grouping."""
    from unmask.tasks.score import decode_each

    prompts = ["a[MASK]b", "In the", "xyz"]
    options = {"gen_length": 16, "steps": 16, "block_length": 8, "temperature": 0.0,
               "cache": "dual"}
    config = api.sample_config(mdlm, options)
    out = decode_each(mdlm, api.prompt_ids(mdlm, prompts), config, "llada")
    ids = [result.gen_ids[k] for result, k in out]
    assert ids == api.generate(mdlm, prompts, config=options).ids
