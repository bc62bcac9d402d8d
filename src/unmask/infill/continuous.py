"""Template infill with an ``embed-diffusion`` checkpoint (continuous diffusion on token
embeddings): the template language and result of ``unmask.infill.infill``, filled by the
``EmbedRun`` of ``unmask.sampling.continuous`` instead of the masked commit loop.

Inside: ``infill_template``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill.fill import InfillResult, _after_context, _render
from unmask.infill.template import GapError, layouts_canvas, plan_template
from unmask.sampling.continuous import EmbedRun, check_options
from unmask.sampling.protocol import StepCallback, model_device


def infill_template(
    model: Any,
    tokenizer: Any,
    template: str | Sequence[Any],
    config: SampleConfig | None = None,
    *,
    step_callback: StepCallback | None = None,
) -> InfillResult:
    """Fill the fixed-length gaps of a template (``"The [MASK:6] sat on the [MASK]."``, or
    segments and ``unmask.infill.Gap`` s) with an ``embed-diffusion`` model: one ``EmbedRun``
    over the whole template, whose known positions are re-noised from their own embeddings
    at every step, so they come out verbatim (Diffusion-LM's infilling by fixing the known
    embeddings). The template language, the space a gap takes in and the result are those of
    ``unmask.infill.infill``, so the CLI, the API and the result shape are the same, and so
    is the promise on a plain gap's text: well-formed UTF-8, no special token (``EmbedRun``
    rounds a gap its last step broke again, left to right under the gap's automaton).

    Refused in one line: a gap of variable length (``[MASK:2-12]``: the masked models pick
    one by their ELBO, which this family has none of) and a constrained gap (regex, choices,
    charset, banned words: the clamping rounds every position at once each step, so the
    trajectory never follows the gap's automaton; it would act only in the last step's left
    to right repair, forcing a pattern onto a fill nothing steered towards it), and what the
    decoder has no use for (``block_length``, the commit loop's options, a decoder other than
    ``auto`` / ``embed-diffusion``: they were silently ignored). ``config.steps`` is the number
    of denoising steps (``gen_length`` is ignored); ``step_callback(step, canvas)`` sees the
    rounded canvas (B, L) after each step (from the end of the hidden line break before a gap
    at offset 0)."""
    config = config or SampleConfig()
    if config.decoder not in ("auto", "embed-diffusion"):
        raise UserError(
            f"decoder {config.decoder!r} cannot sample a checkpoint of objective "
            "embed-diffusion; infill fills its gaps with decoder 'embed-diffusion' (auto)"
        )
    max_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    plan = plan_template(template, tokenizer, max_seq_len=max_len)
    for n, h in enumerate(plan.holes, 1):
        gap = h.gap
        if gap is not None and (gap.shapes_text or gap.banned):
            raise GapError(
                f"{h.label}: constrained gaps (regex, choices, charset, ban) need the masked "
                "commit loop; an embed-diffusion model fills plain [MASK] / [MASK:n] gaps only",
                n,  # its constraint's
            )
        if len(h.candidates) != 1:
            raise GapError(
                f"{h.label} has a variable length; an embed-diffusion model fills fixed-length "
                "gaps only: write [MASK:n]"
            )
    layout = plan.layout([h.candidates[0] for h in plan.holes])
    canvas, spans = layouts_canvas(
        [layout], [h.automaton for h in plan.holes], [h.label for h in plan.holes],
        mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id,
    )  # fmt: skip
    canvas = canvas.to(model_device(model) or canvas.device)
    start, end = canvas.region
    config = replace(config, gen_length=end - start)
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


__all__ = ["infill_template"]
