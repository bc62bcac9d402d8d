"""One seed rule for every row, on the command line, in the Python API and on the server.

The server seeded choice j of every prompt ``seed + j`` (a run per row) where the run draws
random numbers, while ``unmask generate`` and ``api.generate`` ran the prompts as one batch on
one generator and had no ``n``: the same seeded request wrote other text through each. Now
``api.generate(..., n=)`` / ``unmask generate --n`` seed their rows by ``api.row_seeds`` too,
and a server response reports the seed it ran with (one drawn where none was sent), so that
sending it back repeats the text."""

from __future__ import annotations

import json

import pytest
import torch

from unmask import api
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
PROMPTS = ["ab", "The cat", ""]


def _checkpoint(folder, **extra) -> str:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, init_std=0.3,
                       **TOK.special_ids(), **extra)  # fmt: skip
    torch.manual_seed(0)
    return str(save_checkpoint(folder, model=Transformer(cfg).eval(), tokenizer=TOK))


@pytest.fixture(scope="module", params=["mdlm", "ar"])
def ckpt(request, tmp_path_factory):
    extra = {"objective": "ar", "attention": "causal"} if request.param == "ar" else {}
    return _checkpoint(tmp_path_factory.mktemp(request.param), **extra)


def _loaded(path: str):
    return api.load_for_decoding(path, device="cpu", dtype="fp32")


def _client(loaded):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    return TestClient(create_app(loaded, limits=ServerLimits(max_batch=16)))


def _served(client, body: dict) -> tuple[list[str], dict]:
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    return [c["text"] for c in sorted(out["choices"], key=lambda c: c["index"])], out


def _cli(capsys, path: str, prompts: list[str], *flags: str) -> dict:
    assert main(["generate", "--model", path, *prompts, "--dtype", "fp32", "--json",
                 *flags]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_a_seeded_request_writes_the_same_texts_on_the_cli_the_api_and_the_server(
        ckpt, capsys, n, temperature):
    """Prompts ``PROMPTS``, ``n`` choices, seed 3: the same texts in the same row order
    (prompt k's choice j at ``k * n + j``) from ``api.generate``, ``unmask generate --json``
    and ``POST /v1/completions``, sampled (a run per row) and greedy (one run)."""
    loaded = _loaded(ckpt)
    config = {"gen_length": 8, "temperature": temperature, "seed": 3}
    out = api.generate(loaded, PROMPTS, config=config, n=n)
    assert len(out.texts) == len(PROMPTS) * n
    flags = ["--gen-length", "8", "--temperature", str(temperature), "--seed", "3",
             "--n", str(n)]
    cli = _cli(capsys, ckpt, PROMPTS, *flags)
    assert [r["text"] for r in cli["results"]] == out.texts
    assert [(r["prompt"], r["choice"]) for r in cli["results"]] == [
        (p, j) for p in PROMPTS for j in range(n)]
    with _client(loaded) as c:
        served, body = _served(c, {"prompt": PROMPTS, "max_tokens": 8, "n": n,
                                   "temperature": temperature, "seed": 3})
        assert served == out.texts
        assert body["seed"] == 3
        if temperature > 0:  # a prompt writes the same texts alone, in each of the three
            alone = api.generate(loaded, PROMPTS[1], config=config, n=n).texts
            assert alone == out.texts[n : 2 * n]
            assert _served(c, {"prompt": PROMPTS[1], "max_tokens": 8, "n": n,
                               "temperature": temperature, "seed": 3})[0] == alone
    if temperature > 0:
        assert len(set(out.texts)) > 1  # the rows differ: the seeds do something


def test_api_rows_are_seeded_seed_plus_choice():
    """Choice j of a prompt under seed s is the text of that prompt alone under seed s + j,
    and a prompt's text does not depend on the prompts beside it."""
    from server_helpers import loaded, random_transformer

    m = loaded(random_transformer())
    config = {"gen_length": 6, "steps": 6, "temperature": 1.0, "seed": 10}
    both = api.generate(m, ["x", "In the"], config=config, n=3).texts
    for j in range(3):
        one = {**config, "seed": 10 + j}
        assert api.generate(m, "In the", config=one).texts == [both[3 + j]]
        assert api.generate(m, "x", config=one).texts == [both[j]]


@pytest.mark.parametrize("n", [0, -1, True, 1.5, "2"])
def test_a_bad_n_is_one_line(n):
    from server_helpers import loaded, random_transformer

    from unmask.errors import UserError

    with pytest.raises(UserError, match="^n must be"):
        api.generate(loaded(random_transformer()), "x", config={"gen_length": 4}, n=n)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_cli_n_is_exit_2(tmp_path, capsys, value):
    path = _checkpoint(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", path, "ab", "--n", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--n" in err and "Traceback" not in err


def test_the_server_reports_the_seed_that_repeats_a_sampled_response():
    """A sampled request without a seed got text no one could repeat (the process's
    generator, nothing reported). Now it runs with a drawn seed, reported as ``seed`` in the
    response and in every streamed chunk; sent back, it gives the same texts. A greedy
    request reports null (it needs none)."""
    from server_helpers import loaded, random_transformer

    m = loaded(random_transformer())
    body = {"prompt": ["In the", "x"], "max_tokens": 6, "temperature": 1.0, "n": 2}
    with _client(m) as c:
        texts, out = _served(c, body)
        seed = out["seed"]
        assert isinstance(seed, int) and not isinstance(seed, bool), out
        assert _served(c, {**body, "seed": seed})[0] == texts
        other = _served(c, body)[1]["seed"]
        assert isinstance(other, int)
        # the API and the CLI's rule: the same texts for that seed
        config = {"gen_length": 6, "temperature": 1.0, "seed": seed}
        assert api.generate(m, ["In the", "x"], config=config, n=2).texts == texts
        r = c.post("/v1/completions", json={**body, "stream": True})
        chunks = [json.loads(b.split("data: ", 1)[1]) for b in r.text.strip().split("\n\n")
                  if "[DONE]" not in b]
        seeds = {ch["seed"] for ch in chunks}
        assert len(seeds) == 1 and isinstance(seeds.pop(), int)
        greedy = _served(c, {**body, "temperature": 0})[1]
        assert greedy["seed"] is None
        assert _served(c, {**body, "seed": 5})[1]["seed"] == 5  # a sent seed, as sent


def test_a_whole_batch_request_without_a_seed_reports_the_seed_it_drew():
    """A sampled request of a run that cannot share forward passes (here a KV cache) and
    sends no seed: its seeded rows share one whole-batch run with queued requests of its
    settings all the same, a generator per row (``llada``'s ``row_seeds``), so a seed is
    drawn (free) and reported, which repeats the text when sent."""
    from server_helpers import loaded, random_transformer

    with _client(loaded(random_transformer())) as c:
        body = {"prompt": "In the", "max_tokens": 4, "temperature": 1.0, "cache": "prefix"}
        texts, out = _served(c, body)
        assert isinstance(out["seed"], int)
        assert _served(c, {**body, "seed": out["seed"]})[0] == texts


def test_seeded_speculative_rows_keep_their_acceptance_counts(tmp_path):
    """Seeded sampled rows of a causal model with a drafter (once run one after another, the
    joined result lost ``acceptance_stats``: ``unmask generate --json`` dropped its
    acceptance fields) keep them: one batched run with a generator per row, whose drafts and
    acceptances are the sums of the rows' own runs and whose forwards are the batch's."""
    ar = _loaded(_checkpoint(tmp_path / "ar", objective="ar", attention="causal"))
    drafter = _loaded(_checkpoint(tmp_path / "mdlm"))
    config = {"gen_length": 8, "temperature": 1.0, "seed": 3}
    out = api.generate(ar, ["ab", "The cat"], config=config, draft=drafter)
    assert out.decoder == "speculative"
    alone = [api.generate(ar, p, config=config, draft=drafter) for p in ["ab", "The cat"]]
    assert out.ids == [a.ids[0] for a in alone]
    stats = out.result.acceptance_stats()
    for name in ("drafted", "accepted"):
        assert stats[name] == sum(a.result.acceptance_stats()[name] for a in alone), name
    assert stats["verifier_forwards"] == max(a.result.verifier_nfe for a in alone)  # one batch
    assert out.nfe == stats["forwards"] < sum(a.nfe for a in alone)
    assert out.steps == max(a.steps for a in alone)  # as the server counts them


@pytest.mark.parametrize("extra", [{"cache": "prefix"}, {"segment_length": 8},
                                   {"block_length": 4}])
def test_seeded_rows_match_with_caches_segments_and_blocks(extra):
    """The same texts from the API and the server for seeded sampled rows whatever runs
    them: one after another (a KV cache), in segments, or in blocks."""
    from server_helpers import loaded, random_transformer

    m = loaded(random_transformer())
    prompts = ["In the", "x", "And God said,"]
    with _client(m) as c:
        served, out = _served(c, {"prompt": prompts, "max_tokens": 16, "temperature": 1.0,
                                  "seed": 7, "n": 2, **extra})
    config = {"gen_length": 16, "temperature": 1.0, "seed": 7, **extra}
    assert api.generate(m, prompts, config=config, n=2).texts == served


class _EndsAtA(torch.nn.Module):
    """A ``bd3lm`` model sure of EOS in a row whose canvas holds ``A`` and of ``z``
    elsewhere: the row of prompt ``"A"`` ends after its first block, the other runs on."""

    def __init__(self) -> None:
        super().__init__()
        self.config = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64,
                                   attention="block-causal", block_size=4, objective="bd3lm",
                                   **TOK.special_ids())  # fmt: skip
        self.eos, self.a, self.z = TOK.special_ids()["eos_id"], TOK.encode("A")[-1], \
            TOK.encode("z")[-1]

    def forward(self, tokens: torch.Tensor, attention_mask=None) -> torch.Tensor:
        logits = torch.full((*tokens.shape, self.config.vocab_size), -1e4)  # (B, L, V)
        ended = (tokens == self.a).any(dim=1)  # (B,)
        logits[ended, :, self.eos] = 1e4
        logits[~ended, :, self.z] = 1e4
        return logits


def test_seeded_block_rows_that_end_early_keep_the_other_rows_whole():
    """Seeded ``bd3lm`` rows run one after another; a row that ends at EOS after its first
    block has a shorter canvas, and the joined rows were cut to the first row's width: the
    other prompt's 16 tokens became 4. Now every row is as wide as the widest, the early one
    right-padded with EOS as a batch writes it, and the texts are the server's."""
    from server_helpers import loaded

    m = loaded(_EndsAtA())
    config = {"gen_length": 16, "steps": 16, "temperature": 1.0}
    for prompts in (["A", "bb"], ["bb", "A"]):
        seeded = api.generate(m, prompts, config={**config, "seed": 3})
        assert seeded.decoder == "bd3lm"
        long = prompts.index("bb")
        assert seeded.texts[long] == "z" * 16 and seeded.texts[1 - long] == ""
        assert [len(i) for i in seeded.ids] == [16, 16]
        assert seeded.texts == api.generate(m, prompts, config=config).texts  # unseeded
        with _client(m) as c:
            served = _served(c, {"prompt": prompts, "max_tokens": 16, "steps": 16,
                                 "temperature": 1.0, "seed": 3})[0]
        assert served == seeded.texts


def test_seeded_rows_report_the_steps_the_server_reports(tmp_path, capsys):
    """Seeded rows under a KV cache (once run one after another) reported the sum of their
    steps through the API and the CLI (``32 steps`` and ``0.50 tokens/step`` for two
    16-step rows) and the most of them through the server. Now all three say the most, the
    steps a row took; they run as one batch (a generator per row), one run's forwards."""
    from server_helpers import loaded, random_transformer

    m = loaded(random_transformer())
    prompts, config = ["In the", "x"], {"gen_length": 8, "steps": 8, "temperature": 1.0,
                                        "seed": 7, "cache": "prefix"}
    out = api.generate(m, prompts, config=config)
    alone = [api.generate(m, p, config=config) for p in prompts]
    assert out.steps == max(a.steps for a in alone) == 8
    assert out.nfe == max(a.nfe for a in alone) == 8
    with _client(m) as c:
        body = _served(c, {"prompt": prompts, "max_tokens": 8, "steps": 8,
                           "temperature": 1.0, "seed": 7, "cache": "prefix"})[1]
    assert body["steps"] == out.steps
    path = _checkpoint(tmp_path)
    main(["generate", "--model", path, *prompts, "--gen-length", "8", "--steps", "8",
          "--temperature", "1", "--seed", "7", "--cache", "prefix", "--dtype", "fp32",
          "--no-live", "--block-length", "8"])
    err = capsys.readouterr().err
    assert ", 8 steps," in err and "1.00 tokens/step" in err, err


def test_a_chat_reply_repeats_from_its_reported_seed():
    """Chat completions report the seed drawn for a sampled request; ``api.generate`` with
    the chat template, that seed and the same ``n`` writes the same replies."""
    from server_helpers import loaded, random_transformer

    m = loaded(random_transformer())
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with TestClient(create_app(m, chat_template="plain")) as c:
        r = c.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
            "temperature": 1.0, "n": 3})
        assert r.status_code == 200, r.text
        body = r.json()
    seed = body["seed"]
    assert isinstance(seed, int)
    config = {"gen_length": 8, "temperature": 1.0, "seed": seed}
    replies = api.generate(m, "hi", config=config, n=3, template="plain").texts
    assert [ch["message"]["content"] for ch in body["choices"]] == replies


def test_cli_n_of_a_greedy_run_says_every_choice_is_the_same(tmp_path, capsys):
    """``--n 2`` at temperature 0 writes the same text twice: a note says so (and how to get
    different ones); a sampled run has no note."""
    path = _checkpoint(tmp_path)
    out = _cli(capsys, path, ["ab"], "--gen-length", "4", "--n", "2", "--temperature", "0")
    texts = [r["text"] for r in out["results"]]
    assert len(texts) == 2 and texts[0] == texts[1]
    main(["generate", "--model", path, "ab", "--gen-length", "4", "--n", "2", "--dtype", "fp32",
          "--temperature", "0", "--no-live"])
    assert "every choice is the same" in capsys.readouterr().err
    main(["generate", "--model", path, "ab", "--gen-length", "4", "--n", "2", "--dtype", "fp32",
          "--temperature", "1", "--no-live"])
    assert "every choice is the same" not in capsys.readouterr().err


def test_a_sampled_cli_run_without_a_seed_seeds_each_row_and_its_help_says_so(
        tmp_path, capsys, monkeypatch):
    """The help said rows were seeded on their own "with --seed and sampling"; a run that
    samples draws a seed where none is given, so every sampled run seeds its rows: each
    prompt's text is its text alone under the reported seed (choice j: seed + j)."""
    path = _checkpoint(tmp_path)
    out = _cli(capsys, path, ["ab", "The cat"], "--gen-length", "6", "--temperature", "1",
               "--n", "2")
    seed = out["config"]["seed"]
    assert isinstance(seed, int)
    m = _loaded(path)
    config = {"gen_length": 6, "temperature": 1.0}
    for k, prompt in enumerate(["ab", "The cat"]):
        for j in range(2):
            alone = api.generate(m, prompt, config={**config, "seed": seed + j}).texts
            assert [out["results"][2 * k + j]["text"]] == alone
    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps the help to the terminal's width
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "seeds each row on its own" in text and "with --seed and sampling" not in text
    assert "SEED drawn unless --seed is given" in text
