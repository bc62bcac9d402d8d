"""Gap filling, span rewriting, form filling and constrained generation.

Everything here builds a ``Canvas`` (given text locked, masks where text is wanted,
constraints per gap) and fills it with the one sampler loop, ``unmask.sampling.sample``.

- ``template``: ``Gap``, ``parse_template`` (``"The [MASK:6] sat on the [MASK:city]."``),
  ``find_gap``, ``split_choices``, ``template_canvas``, gap constraints (``gap_automaton``),
  the BPE spacing rule (``takes_space``).
- ``fill``: ``infill`` (templates; variable-length gaps chosen by their ELBO bound, or in one
  pass with ``[EMPTY]`` fillers), ``fill_canvas`` (sample + constraint repair),
  ``InfillOptions``, ``InfillResult``, ``SearchLimitError``, ``FewerStepsThanBlocks`` (fewer
  steps than blocks with a gap), ``LENGTH_MODES``, ``LENGTH_SCORES``.
- ``edit``: ``edit`` (re-mask character spans, regex matches or the least confident
  tokens and refill), ``revise`` (repeat on the least confident tokens), ``token_confidence``.
- ``fim``: the autoregressive baseline: ``fill_middle`` (PSM fill-in-the-middle with a causal
  model trained with ``fim_rate`` > 0), ``infill_causal`` (a one-gap template).
- ``forms``: ``fill_form`` (a JSON template with typed holes, filled in one pass; the
  result always parses), ``parse_form``.
- ``automaton``: token automata (outlines-core compiles regexes over the tokenizer's bytes)
  and the bidirectional feasibility layer over them.
- ``schema``: JSON Schema → a form (``schema_form``, ``fill_schema``).
- ``ordered``: the same constraints left to right for causal (``ar``) models
  (``fill_left_to_right``; ``fill_form`` and ``infill_causal`` use it by themselves).
- ``options``: gap constraints given beside a template (``constrain_gaps``: the CLI's
  ``--choices``/``--regex``/``--charset``/``--ban`` and the server's fields).
- ``continuous``: templates filled by an ``embed-diffusion`` checkpoint (``infill_template``).

See docs/infill.md.
"""

from __future__ import annotations

from unmask.infill.automaton import GapConstraint, TokenAutomaton, Vocab, vocab_of
from unmask.infill.edit import Change, EditResult, edit, revise, token_confidence
from unmask.infill.fill import (
    LENGTH_MODES,
    LENGTH_SCORES,
    Candidate,
    FewerStepsThanBlocks,
    Filled,
    FilledGap,
    InfillOptions,
    InfillResult,
    SearchLimitError,
    fill_canvas,
    infill,
    infill_config,
)
from unmask.infill.fim import FimResult, fill_middle, fill_middle_ids, infill_causal
from unmask.infill.forms import FormHole, FormResult, ValueHole, fill_form, parse_form
from unmask.infill.schema import constraint_form, fill_schema, schema_form
from unmask.infill.template import (
    Gap,
    find_gap,
    gap_automaton,
    parse_template,
    plan_template,
    split_choices,
    takes_space,
    template_canvas,
)

__all__ = [
    "LENGTH_MODES",
    "LENGTH_SCORES",
    "Candidate",
    "Change",
    "EditResult",
    "FewerStepsThanBlocks",
    "Filled",
    "FilledGap",
    "FimResult",
    "FormHole",
    "FormResult",
    "Gap",
    "GapConstraint",
    "InfillOptions",
    "InfillResult",
    "SearchLimitError",
    "TokenAutomaton",
    "ValueHole",
    "Vocab",
    "constraint_form",
    "edit",
    "fill_canvas",
    "fill_form",
    "fill_middle",
    "fill_schema",
    "fill_middle_ids",
    "find_gap",
    "gap_automaton",
    "infill",
    "infill_causal",
    "infill_config",
    "parse_form",
    "parse_template",
    "plan_template",
    "revise",
    "schema_form",
    "split_choices",
    "takes_space",
    "template_canvas",
    "token_confidence",
    "vocab_of",
]
