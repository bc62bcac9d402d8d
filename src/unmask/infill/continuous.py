"""Template infill by a checkpoint's own decoder, where the masked commit loop cannot run: an
``embed-diffusion`` checkpoint (continuous diffusion on token embeddings, the ``EmbedRun`` of
``unmask.sampling.continuous``) and a time-conditioned SEDD checkpoint whose forward needs its
noise level (``sigma_input: given``; SEDD's reverse process, ``unmask.sampling.sedd``). The
template language and result are those of ``unmask.infill.infill``.

Inside: ``infill_template``, ``OWN_DECODERS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill.fill import InfillResult, _after_context, _render, complete_broken
from unmask.infill.template import GapError, layouts_canvas, plan_template
from unmask.sampling.continuous import EmbedRun, check_options
from unmask.sampling.protocol import StepCallback, make_generator, model_device

OWN_DECODERS = {
    "embed-diffusion": "an embed-diffusion model",
    "sedd": "a time-conditioned SEDD model (its forward reads the noise level)",
}
"""The decoders ``infill_template`` fills with, and how its refusals name their models."""


def infill_template(
    model: Any,
    tokenizer: Any,
    template: str | Sequence[Any],
    config: SampleConfig | None = None,
    *,
    step_callback: StepCallback | None = None,
    decoder: str = "embed-diffusion",
    cap_steps: bool = False,
) -> InfillResult:
    """Fill the fixed-length gaps of a template (``"The [MASK:6] sat on the [MASK]."``, or
    segments and ``unmask.infill.Gap`` s) with the checkpoint's own ``decoder`` (a key of
    ``OWN_DECODERS``).

    ``sedd``: SEDD's reverse process over the whole template (``sedd_sampler``, the
    checkpoint's noise schedule; given text never changes, as in ``unmask generate``'s
    prompt), ``config.steps`` time steps as given (more: fewer positions drawn together), at
    most the masked tokens under ``cap_steps`` (the default steps, not a count asked for); a
    gap whose simultaneous draws broke its plain-text promise is completed from its automaton
    (``complete_broken``); a gap's ``banned`` tokens are ruled out of every draw; a
    ``block_length`` other than the template's (one block) is refused (one pass over it).

    ``embed-diffusion``: one ``EmbedRun``
    over the whole template, whose known positions are re-noised from their own embeddings
    at every step, so they come out verbatim (Diffusion-LM's infilling by fixing the known
    embeddings). The template language, the space a gap takes in and the result are those of
    ``unmask.infill.infill``, so the CLI, the API and the result shape are the same, and so
    is the promise on a plain gap's text: well-formed UTF-8, no special token (``EmbedRun``
    rounds a gap its last step broke again, left to right under the gap's automaton).

    Refused in one line: a gap of variable length (``[MASK:2-12]``: the masked models pick
    one by their ELBO, which neither family has: one has no likelihood, the other's forward
    needs a noise level the ELBO's copies do not give) and a constrained gap (regex, choices,
    charset, and on ``embed-diffusion`` banned words: the clamping rounds every position at
    once each step, so the
    trajectory never follows the gap's automaton; it would act only in the last step's left
    to right repair, forcing a pattern onto a fill nothing steered towards it; SEDD's steps
    draw several positions at once too, with no refill to mend a broken gap), and what the
    decoder has no use for (``block_length``, the commit loop's options, the penalties, a
    decoder other than ``auto`` or its own: they were silently ignored). ``config.steps`` is
    the number of denoising steps (``gen_length`` is ignored);
    ``step_callback(step, canvas)`` sees the canvas (B, L) after each step, rounded
    (``embed-diffusion``) or as drawn (``sedd``), from the end of the hidden line break
    before a gap at offset 0."""
    config = config or SampleConfig()
    who = OWN_DECODERS[decoder]
    if config.decoder not in ("auto", decoder):
        raise UserError(
            f"decoder {config.decoder!r} cannot sample a checkpoint of objective "
            f"{decoder}; infill fills its gaps with decoder {decoder!r} (auto)"
        )
    max_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    plan = plan_template(template, tokenizer, max_seq_len=max_len)
    for n, h in enumerate(plan.holes, 1):
        gap = h.gap
        # a ban rules tokens out one by one, which SEDD's draws honour exactly (-inf on the
        # log-score: no unmasking move goes to them); the rest constrain a sequence
        if gap is not None and (gap.shapes_text or (gap.banned and decoder != "sedd")):
            what, only = (("regex, choices, charset", "plain or banned-word") if decoder == "sedd"
                          else ("regex, choices, charset, ban", "plain"))
            raise GapError(
                f"{h.label}: constrained gaps ({what}) need the masked commit loop; {who} "
                f"fills {only} [MASK] / [MASK:n] gaps only",
                n,  # its constraint's
            )
        if len(h.candidates) != 1:
            raise GapError(
                f"{h.label} has a variable length; {who} fills fixed-length gaps only: write "
                "[MASK:n]"
            )
    layout = plan.layout([h.candidates[0] for h in plan.holes])
    canvas, spans = layouts_canvas(
        [layout], [h.automaton for h in plan.holes], [h.label for h in plan.holes],
        mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id,
    )  # fmt: skip
    canvas = canvas.to(model_device(model) or canvas.device)
    start, end = canvas.region
    config = replace(config, gen_length=end - start)
    if decoder == "sedd":
        return _sedd_fill(model, canvas, config, plan, layout, spans, tokenizer,
                          _after_context(plan, step_callback), cap_steps=cap_steps)
    check_options("embed-diffusion", config)  # block_length as given: refused, not ignored
    run: EmbedRun | None = None
    report = _after_context(plan, step_callback)  # not the hidden line break at offset 0

    def on_view(step: int, view: Tensor) -> None:
        if report is not None and run is not None:
            report(step, run.ids)  # (B, L): the rounded canvas

    run = EmbedRun(model, canvas, config, eos_id=getattr(tokenizer, "eos_id", None),
                   on_view=None if report is None else on_view)  # fmt: skip
    res = run.run()
    text, gaps, tokens = _render(plan, layout, res.tokens[0].tolist(), spans, 0, tokenizer)
    return InfillResult(text=text, gaps=gaps, tokens=tokens, nfe=res.nfe)


def _sedd_fill(model: Any, canvas: Any, config: SampleConfig, plan: Any, layout: Any,
               spans: Any, tokenizer: Any, report: StepCallback | None, *,
               cap_steps: bool) -> InfillResult:
    """``infill_template``'s ``sedd`` run (its docstring)."""
    from unmask.sampling.sedd import start_model

    if config.block_length not in (None, config.gen_length):  # one block: none, as embed's
        raise UserError("block_length: a time-conditioned SEDD model fills a template in one "
                        "pass of SEDD's reverse process over all its gaps (leave it unset)")
    # a step is a slice of the time grid, not a commit: more steps, fewer positions drawn
    # together; only the default steps (cap_steps) are capped at the masks
    config = replace(config, block_length=None, steps=min(config.steps, int(
        canvas.masked.sum())) if cap_steps else config.steps)
    device = model_device(model) or canvas.device
    run = start_model(model, canvas, config, eos_id=getattr(tokenizer, "eos_id", None),
                      generator=make_generator(config.seed, device), step_callback=report)
    res = run.run()
    tokens = res.tokens.clone()  # (1, L)
    complete_broken(canvas, tokens)
    text, gaps, ids = _render(plan, layout, tokens[0].tolist(), spans, 0, tokenizer)
    return InfillResult(text=text, gaps=gaps, tokens=ids, nfe=res.nfe)


__all__ = ["OWN_DECODERS", "infill_template"]
