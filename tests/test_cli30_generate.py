"""``unmask generate`` refuses, in one line and before a row is made, a ``--n`` (times the
prompts) whose rows cannot fit the memory: ``--n 1000000000`` was killed by the system
(status 137, no message) once it had filled the memory."""

from __future__ import annotations

import json
import re

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
FREE = 10**9


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    return str(save_checkpoint(folder, model=Transformer(cfg).eval(), tokenizer=TOK))


@pytest.fixture
def one_gb(monkeypatch):
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: FREE)


def _argv(tiny: str, *more: str) -> list[str]:
    return ["generate", "--model", tiny, "--gen-length", "8", "--device", "cpu", *more]


def test_rows_beyond_the_free_memory_are_one_line(tiny, one_gb, capsys, monkeypatch):
    made = []
    monkeypatch.setattr("unmask.api.generate", lambda *a, **k: made.append(1))
    assert main(_argv(tiny, "ab", "cd", "--n", "1000000000")) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask generate: error: --n 1000000000 × 2 prompts "
                          "(2,000,000,000 rows): needs at least "), err
    # worded as the check of the weights at load (unmask.quantize.check_fits)
    assert "GB of RAM, 1.0 GB free: more than --n " in err and "fewer prompts" in err
    assert err.endswith(" (or UNMASK_NO_FIT_CHECK=1 to try anyway)\n")
    assert err.count("\n") == 1 and not made


def test_the_count_it_names_is_the_most_whose_bound_fits(tiny, one_gb, capsys, monkeypatch):
    from unmask import api
    from unmask.api import FIT_MARGIN, rows_bytes

    assert main(_argv(tiny, "ab", "--n", "10000000")) == 2
    most = int(re.search(r"more than --n (\d+) cannot fit", capsys.readouterr().err)[1])
    loaded = api.load_for_decoding(tiny, device="cpu")
    config = api.sample_config(loaded, {"gen_length": 8}, prompt_lengths=[2])
    bound = [rows_bytes(loaded, [2], config, k) * FIT_MARGIN for k in (most, most + 1)]
    assert bound[0] <= FREE < bound[1]
    monkeypatch.setattr("unmask.api.generate", lambda *a, **k: pytest.fail("ran"))
    monkeypatch.setenv("UNMASK_NO_FIT_CHECK", "1")  # as the check of the weights at load
    with pytest.raises(BaseException, match="ran"):
        main(_argv(tiny, "ab", "--n", str(most + 1)))


def test_a_bound_a_little_over_the_free_memory_is_not_refused(tiny, monkeypatch):
    """The bound comes within a few percent of the real need of greedy runs over a large
    vocabulary (review rm30): it refuses only where FIT_MARGIN of it is over the free memory,
    so a run that fits is never refused for the bound's last percent."""
    from unmask import api
    from unmask.api import rows_bytes

    loaded = api.load_for_decoding(tiny, device="cpu")
    config = api.sample_config(loaded, {"gen_length": 8}, prompt_lengths=[2])
    n = 4 * 10**9 // rows_bytes(loaded, [2], config, 1)  # rows needing ~4 GB (the weights
    need = rows_bytes(loaded, [2], config, n)  # ask far less: their check passes)
    ran = []
    monkeypatch.setattr("unmask.api.generate", lambda *a, **k: ran.append(1) or pytest.fail(
        "ran"))
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: int(need * 0.9))
    with pytest.raises(BaseException, match="ran"):  # 10% over: let through
        main(_argv(tiny, "ab", "--n", str(n)))
    assert ran
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: int(need * 0.5))
    assert main(_argv(tiny, "ab", "--n", str(n))) == 2  # twice the free memory: refused


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_bound_counts_the_logits_of_the_whole_canvas(tiny, temperature):
    """The commit loop's forward returns logits over every canvas position (B, L, V), and
    its float64 work (the confidences' softmax; the Gumbel noise when sampling) is wider
    still: the bound counted one position's logits a row, 70 times below the demo's
    measured need, so --n 10000 passed it and was killed by the system."""
    from unmask import api
    from unmask.api import rows_bytes

    loaded = api.load_for_decoding(tiny, device="cpu")
    config = SampleConfig(gen_length=8, temperature=temperature)
    vocab, width = loaded.config.vocab_size, 2 + 8
    per_row = rows_bytes(loaded, [2], config, 2) - rows_bytes(loaded, [2], config, 1)
    # fp32 logits of the canvas, the float64 cast and softmax of the block's columns
    floor = width * vocab * 4 + 2 * 8 * vocab * 8 + (8 * vocab * 8 if temperature else 0)
    assert per_row >= floor, (per_row, floor)
    # one next position's logits for the token-by-token decoder: far less
    assert rows_bytes(loaded, [2], config, 1, "ar") < rows_bytes(loaded, [2], config, 1) / 4


def test_a_length_past_the_context_is_named_not_the_count(tiny, one_gb, capsys):
    """A --gen-length past the model's context is refused as such, before the count of rows
    (--n 1000 was blamed, and the length refused once --n had been lowered)."""
    assert main(_argv(tiny, "ab", "--n", "1000", "--gen-length", "100000",
                      "--temperature", "1")) == 2
    err = capsys.readouterr().err
    assert "max_seq_len (64)" in err and "--n" not in err and err.count("\n") == 1, err


def test_a_count_that_fits_runs(tiny, one_gb, capsys):
    assert main(_argv(tiny, "ab", "--n", "3", "--json")) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3


def test_json_equals_the_api_and_counts_what_tokens_per_s_counts(tiny, capsys):
    """``generate --json`` is ``api.generate`` with the same options and seed: the texts, ids,
    nfe and steps, and ``n_tokens`` (each row's ids up to its EOS), which ``tokens_per_s``
    counts and which the JSON did not give (its ``tokens`` hold the EOS filling too)."""
    from unmask import api

    flags = ["--temperature", "1.5", "--seed", "11", "--n", "2"]
    assert main(_argv(tiny, "ab", "xyz", "--json", *flags)) == 0
    got = json.loads(capsys.readouterr().out)
    loaded = api.load_for_decoding(tiny, device="cpu")
    config = api.sample_config(loaded, {"gen_length": 8, "temperature": 1.5, "seed": 11})
    out = api.generate(loaded, ["ab", "xyz"], config=config, n=2)
    assert [r["text"] for r in got["results"]] == out.texts
    assert [r["tokens"] for r in got["results"]] == out.ids
    assert (got["nfe"], got["steps"], got["decoder"]) == (out.nfe, out.steps, out.decoder)
    assert got["n_tokens"] == out.n_tokens


def test_a_length_no_row_can_take_is_left_to_the_librarys_own_line(tiny, one_gb, capsys):
    """One row that cannot fit is its length's fault: the decoder's check names it (the
    segmented length limit), not the count of rows."""
    assert main(_argv(tiny, "ab", "--n", "3", "--temperature", "1", "--gen-length",
                      str(10**23), "--segment-length", "16")) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask generate: error: --gen-length (") and err.count("\n") == 1
    assert "at most 1048576 tokens" in err


@pytest.mark.parametrize("segments", [{}, {"segment_length": 16}])
def test_seeded_rows_refuse_an_impossible_length_in_one_line(tiny, segments):
    """``api.run_rows`` (seeded sampled rows, one run each: in bfloat16) made its
    (rows, gen_length) view before any run checked the length: ``--n 3 --temperature 1
    --gen-length 10**12 --dtype bf16`` tried to allocate 24 TB (a RuntimeError traceback)."""
    from unmask import api
    from unmask.errors import UserError

    loaded = api.load_for_decoding(tiny, device="cpu", dtype="bf16")
    assert not api.seeds_in_one_run(loaded, {"temperature": 1.0})  # the runs of a row each
    config = {"gen_length": 10**12, "temperature": 1.0, "seed": 1, **segments}
    with pytest.raises(UserError, match="max_seq_len|at most 1048576 tokens"):
        api.generate(loaded, ["ab"], config=config, n=3)


def test_seeded_rows_without_a_callback_make_no_view(tiny, monkeypatch):
    """The (rows, gen_length) view is for a step callback to see: without one it is not
    made (8 MB a row at --gen-length 1000000)."""
    from unmask import api

    loaded = api.load_for_decoding(tiny, device="cpu", dtype="bf16")
    made, full = [], torch.full

    def spy(size, *a, **k):
        made.append(tuple(size))
        return full(size, *a, **k)

    monkeypatch.setattr(torch, "full", spy)
    config = api.sample_config(loaded, {"gen_length": 8, "temperature": 1.0, "seed": 1})
    api.generate(loaded, ["ab"], config=config, n=3)
    assert (3, 8) not in made, made


def test_rows_that_step_together_count_one_rows_float64_work(tiny, capsys, monkeypatch):
    """Seeded rows in bfloat16 run a run each, stepped with one forward (``run_rows``): the
    forward's logits are every row's, the float64 work of a step one row's at a time. A
    bound that counted it for every row would refuse a count that fits (a guard)."""
    from unmask import api
    from unmask.api import rows_bytes

    loaded = api.load_for_decoding(tiny, device="cpu", dtype="bf16")
    config = api.sample_config(loaded, {"gen_length": 8, "temperature": 1.0},
                               prompt_lengths=[2])
    assert not api.seeds_in_one_run(loaded, config)
    fits = rows_bytes(loaded, [2], config, 3, rows_at_once="together")
    assert rows_bytes(loaded, [2], config, 3) > fits  # all at once: more
    free = iter([FREE, fits, fits])  # the weights at load, the rows (CLI, then api.generate)
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: next(free))
    assert main(_argv(tiny, "ab", "--n", "3", "--dtype", "bf16", "--temperature", "1",
                      "--json")) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
