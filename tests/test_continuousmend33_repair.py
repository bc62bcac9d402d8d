"""The in-order re-rounding of an ``embed-diffusion`` infill's broken gaps: each broken gap is
completed on its own by its automaton (``TokenAutomaton.complete`` with the last step's
scores), in one walk. It was re-rounded one canvas column at a time, each column asking every
gap's automaton again for every open position (quadratic in the gap length: 3.9 s of a 4.3 s
infill of two 120-token gaps), and it compared the float64 Gumbel scores rounded to float32."""

from __future__ import annotations

import numpy as np
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.infill import Gap
from unmask.infill.automaton import GapConstraint, TokenAutomaton
from unmask.infill.template import gap_automaton
from unmask.model import Transformer
from unmask.objectives import objective_spec
from unmask.sampling.continuous import EmbedRun
from unmask.tokenizer import byte_tokenizer


def _model(vocab: int) -> Transformer:
    cfg = model_preset("tiny", vocab_size=vocab, max_seq_len=64)
    cfg = objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=32))
    torch.manual_seed(1)
    return Transformer(cfg).eval()


def _ids(tok, text: str) -> list[int]:
    return list(tok.encode(text))


def test_complete_picks_the_best_allowed_score_left_to_right():
    tok = byte_tokenizer()
    a = gap_automaton(Gap(), tok)
    V = a.vocab_size
    scores = np.full((2, V), -5.0)
    lead, cont = 0xC3 + 4, 0xA9 + 4  # "é" is C3 A9 (byte ids are offset by 4)
    scores[0, lead] = 3.0  # first position: a lead byte is best
    scores[0, _ids(tok, "x")[0]] = 2.0
    scores[1, _ids(tok, "y")[0]] = 9.0  # second: "y" is best but breaks the character
    scores[1, cont] = 1.0
    assert a.complete([None, None], scores=scores) == [lead, cont]  # "é"
    assert a.complete([None, None], prefer=[lead, _ids(tok, "y")[0]]) != [lead, cont]
    # a committed token is kept and constrains the positions after it
    assert a.complete([lead, None], scores=scores) == [lead, cont]
    # float64 scores: a difference float32 would round away still decides
    x, z = _ids(tok, "x")[0], _ids(tok, "z")[0]
    near = np.full((1, V), -5.0)
    near[0, x], near[0, z] = 1.0, 1.0 + 1e-12
    assert np.float32(near[0, x]) == np.float32(near[0, z])
    assert a.complete([None], scores=near) == [z]


def _embed_run(tok, model, text: tuple[str, int, str]) -> EmbedRun:
    left, n, right = text
    tokens = torch.tensor([_ids(tok, left) + [tok.mask_id] * n + _ids(tok, right)])
    s = len(_ids(tok, left))
    gap = GapConstraint(gap_automaton(Gap(), tok), [(0, s, s + n)], mask_id=tok.mask_id)
    canvas = Canvas.from_tokens(tokens, mask_id=tok.mask_id, constraints=[gap])
    return EmbedRun(model, canvas, SampleConfig(steps=1, seed=0))


def test_the_repair_compares_the_float64_scores():
    tok = byte_tokenizer()
    run = _embed_run(tok, _model(tok.vocab_size), ("ab", 2, "c"))
    lead = 0xC3 + 4
    run.ids = torch.tensor([_ids(tok, "ab") + [lead, lead] + _ids(tok, "c")])  # broken
    assert run.canvas.violations(run.ids)
    scores = torch.full((1, 5, tok.vocab_size), -5.0, dtype=torch.float64)
    x, z = _ids(tok, "x")[0], _ids(tok, "z")[0]
    scores[0, 2, x], scores[0, 2, z] = 1.0, 1.0 + 1e-12  # equal in float32
    scores[0, 3, _ids(tok, "q")[0]] = 1.0
    run.scores = scores
    run._round_in_order()
    assert tok.decode(run.ids[0].tolist()) == "abzqc"  # before: "abxqc" (the float32 tie)


def test_a_repair_walks_each_broken_gap_once_and_keeps_the_valid_gaps(monkeypatch):
    """One automaton pass per broken gap (before: one per column per gap), the gaps the fast
    rounding left valid keep its tokens, and the given text is kept."""
    from unmask.infill.continuous import infill_template

    tok = byte_tokenizer()
    model = _model(tok.vocab_size)
    real_passes, real_finish = TokenAutomaton._passes, EmbedRun._finish
    passes: list[int] = []
    seen: list[tuple[torch.Tensor, list, torch.Tensor, int, list]] = []

    def counting(self, cls_seq):
        passes.append(1)
        return real_passes(self, cls_seq)

    def finish(self, x0_hat):
        before, broken = self.ids.clone(), self.canvas.violations(self.ids)
        passes.clear()
        monkeypatch.setattr(TokenAutomaton, "_passes", counting)
        real_finish(self, x0_hat)
        monkeypatch.setattr(TokenAutomaton, "_passes", real_passes)
        spans = [sp for c in self.canvas.constraints for sp in getattr(c, "spans", [])]
        seen.append((before, broken, self.canvas.tokens.clone(), len(passes), spans))

    monkeypatch.setattr(EmbedRun, "_finish", finish)
    template = "é [MASK:1] ü [MASK:9] x [MASK:1] end"
    valid_kept = repaired = 0
    for seed in range(8):
        res = infill_template(model, tok, template, SampleConfig(steps=2, seed=seed,
                                                                 temperature=1.0))
        assert "\ufffd" not in res.text
        assert res.text.startswith("é ") and " ü " in res.text and res.text.endswith(" end")
        before, broken, after, n_passes, spans = seen[-1]
        assert n_passes == len(broken)  # before: one per broken column per open gap
        repaired += bool(broken)
        for r, s, e in spans:
            if (r, s, e) not in broken:
                assert after[r, s:e].tolist() == before[r, s:e].tolist()
                valid_kept += bool(broken)
    assert repaired and valid_kept  # both cases were seen
