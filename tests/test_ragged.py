"""``unmask.sampling.ragged.commit_rows`` against a plain per-row reference: tokens written, the
cut at gen_length and after the first EOS, finished rows left alone."""

from __future__ import annotations

import torch

from unmask.sampling.ragged import commit_rows


def _reference(gen, committed, out, n, active, eos_id):  # type: ignore[no-untyped-def]
    gen = gen.clone()
    counts, ended = [], []
    for i in range(gen.shape[0]):
        c, e = 0, False
        if active[i]:
            for j in range(int(n[i]) + 1):
                pos = int(committed[i]) + j
                if pos >= gen.shape[1]:
                    break
                gen[i, pos] = out[i, j]
                c += 1
                if eos_id is not None and int(out[i, j]) == eos_id:
                    e = True
                    break
        counts.append(c)
        ended.append(e)
    return gen, torch.tensor(counts), torch.tensor(ended)


def test_commit_rows_matches_a_per_row_reference() -> None:
    g = torch.Generator().manual_seed(0)
    cases = 0
    for trial in range(300):
        B, G, W = 1 + trial % 4, 1 + trial % 9, 1 + trial % 5
        gen = torch.randint(5, 9, (B, G), generator=g)
        committed = torch.randint(0, G + 1, (B,), generator=g)
        out = torch.randint(2, 6, (B, W), generator=g)  # 2 = EOS, now and then
        n = torch.randint(0, W, (B,), generator=g)
        active = torch.rand(B, generator=g) < 0.8
        eos_id = 2 if trial % 3 else None
        want_gen, want_count, want_ended = _reference(gen, committed, out, n, active, eos_id)
        got = gen.clone()
        count, ended = commit_rows(got, committed, out, n, active, eos_id)
        assert torch.equal(got, want_gen), trial
        assert torch.equal(count, want_count), trial
        assert torch.equal(ended, want_ended), trial
        cases += int(want_ended.any())
    assert cases > 20  # EOS cuts were exercised
