"""The RoPE tables (session 32): built for the positions a forward reaches, grown as longer
inputs come, not for all of ``max_seq_len`` at once (Dream's 131072 positions cost 128 MiB
and over a second before the first forward of a short prompt), and the same numbers: with a
KV cache across the first table's rows, with rows at their own positions, from threads
sharing the model, and from the compiled twin (given every position before it compiles)."""

from __future__ import annotations

import copy
import threading

import torch

import unmask.model
from unmask.config import ModelConfig
from unmask.model import ROPE_ROWS, KVCache, Transformer, rope_cache
from unmask.parallel import compile_for_decoding


def tiny(max_seq_len: int = 3 * ROPE_ROWS, **kw: object) -> tuple[Transformer, Transformer]:
    """A tiny model, and its copy given the table of every position at once."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2,
                      ffn_hidden=32, max_seq_len=max_seq_len, **kw)  # type: ignore[arg-type]
    model = Transformer(cfg).eval()
    full = copy.deepcopy(model)
    full._rope = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta, torch.device("cpu"))
    return model, full


def test_rope_tables_grow_with_the_positions_and_give_the_same_logits() -> None:
    model, full = tiny()
    cfg = model.config
    tokens = torch.randint(4, 32, (1, 8))
    far = torch.arange(cfg.max_seq_len - 8, cfg.max_seq_len)
    with torch.no_grad():
        short = model(tokens)
        assert model._rope is not None and model._rope[0].shape[0] == ROPE_ROWS
        torch.testing.assert_close(short, full(tokens), rtol=0, atol=0)
        late = model(tokens, positions=far)  # the table grows to cover them
        assert model._rope[0].shape[0] == cfg.max_seq_len
        torch.testing.assert_close(late, full(tokens, positions=far), rtol=0, atol=0)


def test_kv_cache_decoding_across_the_first_table_gives_the_same_logits() -> None:
    model, full = tiny(attention="causal")
    tokens = torch.randint(4, 32, (1, ROPE_ROWS + 4))
    first = ROPE_ROWS - 2
    with torch.no_grad():
        kv, kv_full = KVCache(), KVCache()
        prefill = model(tokens[:, :first], cache=kv, start=0)
        assert model._rope is not None and model._rope[0].shape[0] == ROPE_ROWS
        torch.testing.assert_close(
            prefill, full(tokens[:, :first], cache=kv_full, start=0), rtol=0, atol=0
        )
        for s in range(first, tokens.shape[1]):  # one token a step, over position 4096
            step = model(tokens[:, s : s + 1], cache=kv, start=s)
            want = full(tokens[:, s : s + 1], cache=kv_full, start=s)
            torch.testing.assert_close(step, want, rtol=0, atol=0)
    assert model._rope[0].shape[0] == 2 * ROPE_ROWS


def test_rows_of_a_batch_at_positions_past_the_first_table_give_the_same_logits() -> None:
    model, full = tiny()
    B, L = 2, 6
    tokens = torch.randint(4, 32, (1, L)).expand(B, L)
    positions = torch.stack([torch.arange(0, L), torch.arange(9000, 9000 + L)])  # each row
    bias = torch.ones(B, 1, L, L, dtype=torch.bool)
    with torch.no_grad():
        model(tokens[:1])  # a first table of ROPE_ROWS rows
        got = model(tokens, positions=positions, attn_bias=bias)
        want = full(tokens, positions=positions, attn_bias=bias)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert model._rope is not None and model._rope[0].shape[0] == 9000 + L


def test_a_thread_never_reads_the_shorter_table_another_thread_stored(monkeypatch) -> None:
    """Thread A needs 10004 rows and builds them; thread B needs 5004 and builds 8192; B stores
    its table after A stored its own and before A slices it. A must slice its own table (the
    code read ``self._rope`` back: IndexError, position 10000 of 8192), and the stored table
    must not shrink to B's. The order is forced with events, not left to timing."""
    model, full = tiny()
    tokens = torch.randint(4, 32, (1, 4))
    with torch.no_grad():
        model(tokens)  # a first table of ROPE_ROWS rows, which both threads outgrow
    both_building = threading.Barrier(2, timeout=30)
    a_stored, b_done = threading.Event(), threading.Event()
    build = unmask.model.rope_cache

    def rope_cache(n: int, *args: object, **kw: object) -> tuple[torch.Tensor, torch.Tensor]:
        both_building.wait()  # both threads saw the first table and build a larger one
        if n < 10004:
            a_stored.wait(30)  # B's table comes back once A's is stored
        return build(n, *args, **kw)  # type: ignore[arg-type]

    store = Transformer.__setattr__

    def setattr_(self: Transformer, name: str, value: object) -> None:
        store(self, name, value)
        if name == "_rope" and value is not None and value[0].shape[0] >= 10004:  # type: ignore[index]
            a_stored.set()
            b_done.wait(30)  # A goes on once B has stored its table (if it does) and returned

    monkeypatch.setattr(unmask.model, "rope_cache", rope_cache)
    monkeypatch.setattr(Transformer, "__setattr__", setattr_)
    out: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def run(start: int, done: threading.Event | None) -> None:
        try:
            with torch.no_grad():
                out[start] = model(tokens, positions=torch.arange(start, start + 4))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)
        finally:
            if done is not None:
                done.set()

    threads = [threading.Thread(target=run, args=(10000, None)),
               threading.Thread(target=run, args=(5000, b_done))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert not errors, errors
    assert model._rope is not None and model._rope[0].shape[0] == 10004
    with torch.no_grad():
        for start, logits in out.items():
            want = full(tokens, positions=torch.arange(start, start + 4))
            torch.testing.assert_close(logits, want, rtol=0, atol=0)


def test_compiled_decoding_never_builds_or_regrows_the_table(monkeypatch) -> None:
    """An eager forward first leaves a partial table; ``compile_for_decoding`` then gives the
    twin every position, so decoding past the partial table's rows neither recompiles (a
    guard on them; twice before, the table built inside the graph) nor builds a table in a
    graph. ROPE_ROWS is made 8 here to keep the positions few; the prefill of 6 makes the KV
    cache grow at positions 6 and 12, away from the table's 8 rows."""
    monkeypatch.setattr(unmask.model, "ROPE_ROWS", 8)
    torch._dynamo.reset()
    model, full = tiny(max_seq_len=32, attention="causal")
    tokens = torch.randint(4, 32, (1, 11))
    frames = torch._dynamo.utils.counters["frames"]
    with torch.no_grad():
        model(tokens[:, :4])  # eager: a table of 8 rows
        assert model._rope is not None and model._rope[0].shape[0] == 8
        twin = compile_for_decoding(model, "aot_eager")
        assert model._rope[0].shape[0] == 32  # every position, built before any graph
        kv, kv_full = KVCache(), KVCache()
        twin(tokens[:, :6], cache=kv, start=0)
        full(tokens[:, :6], cache=kv_full, start=0)
        before = 0
        for s in range(6, tokens.shape[1]):
            if s == 8:  # past the eager table's rows from here
                before = frames["total"]
            step = twin(tokens[:, s : s + 1], cache=kv, start=s)
            want = full(tokens[:, s : s + 1], cache=kv_full, start=s)
            torch.testing.assert_close(step, want, rtol=0, atol=0)
    assert frames["total"] == before  # no recompile once past them
    torch._dynamo.reset()
