"""``POST /v1/infill``, ``/v1/edit`` and ``/v1/forms``: fill gaps, rewrite spans, fill forms.

Each request runs alone on the worker (``plumbing.alone``) through the library's entry for
its task (``unmask.infill.infill``, ``edit``, ``fill_form``), with the template language and
gap constraints of the CLI (``unmask.infill.options``), so the server and ``unmask infill``
/ ``unmask fill-form`` fill the same template the same way. Infill and forms stream their
denoising on request (``stream: true``: ``denoising.step`` events over the whole canvas,
then the response body, ``streaming.DenoisingEvents``). A request's checks (parsing its
template, tokenizing its text, compiling a structured answer's automata) run off the event
loop (``Plan``), so other clients are answered meanwhile.

Inside: ``infill_body``, ``form_body`` and ``router``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from unmask.config import InfillOptions, SampleConfig
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.infill.template import GapError
from unmask.sampling.loop import StepCallback
from unmask.sampling.penalties import given_penalties
from unmask.server.http import APIError, JSONResponse
from unmask.server.plumbing import (
    SAMPLE_OPTIONS,
    TakesSeconds,
    alone,
    blaming,
    check_model,
    check_names,
    check_steps,
    check_text,
    checked,
    diffusion_only,
    left_to_right,
    note,
    refuse_editing,
    refuse_repeated_keys,
    repair_calls,
    run_alone,
    sample_config,
    secured,
    sent_option,
    spoken,
    template_steps,
    user_error,
    with_default_steps,
)
from unmask.server.schemas import DiffusionOptions, EditRequest, FormRequest, InfillRequest
from unmask.server.state import ServerState
from unmask.server.streaming import DenoisingEvents, refuse_if_gone, stream_job

Plan = tuple[Callable[[StepCallback], Any], Callable[[ServerState, Any], dict[str, Any]],
             str | None]
"""A checked template request: its work on the worker, its response body and the field a
refusal found there names (``_run``); made off the event loop (``plumbing.checked``: the
checks parse templates and tokenize texts; those that compile a structured answer's
automata or check a schema's patterns, for seconds, on a slow-check thread)."""

GUIDED_WIDTH = 32
"""n of a bare ``[MASK]`` in a guided infill (each value's bound, as ``max_tokens``)."""

INFILL_FIELDS = ("length_mode", "length_score", "max_candidates", "elbo_samples")
"""``InfillRequest`` fields that are ``InfillOptions`` fields (unset: the library's default)."""


def infill_body(state: ServerState, res: Any) -> dict[str, Any]:
    """The response to ``/v1/infill`` for an ``InfillResult``: with the length candidates that
    were scored, as ``unmask infill --json`` lists them."""
    gaps = [{"name": g.name, "text": g.text, "start": g.start, "end": g.end} for g in res.gaps]
    candidates = [{k: c[k] for k in ("lengths", "text", "elbo", "nll", "context")}
                  for c in res.as_dict()["candidates"]]  # an unscored bound is None there
    return {"object": "infill", "model": state.name, "text": res.text, "gaps": gaps,
            "nfe": res.nfe, "repaired": res.repaired,
            "length_mode": res.length_mode, "candidates": candidates}


def form_body(state: ServerState, res: Any) -> dict[str, Any]:
    """The response to ``/v1/forms`` for a ``FormResult`` (the fields of ``unmask fill-form
    --json``)."""
    holes = [{"path": h.path, "spec": h.spec, "kind": h.kind, "width": h.width, "text": h.text,
              "value": h.value} for h in res.holes]
    return {"object": "form", "model": state.name, "value": res.value, "text": res.text,
            "holes": holes, "nfe": res.nfe, "repaired": res.repaired}


def edit_body(state: ServerState, res: Any) -> dict[str, Any]:
    """The response to ``/v1/edit`` for an ``EditResult`` (the fields of ``unmask edit
    --json``)."""
    changes = [{"round": c.round, "start": c.start, "end": c.end, "old": c.old,
                "new": c.new} for c in res.changes]
    return {"object": "edit", "model": state.name, "text": res.text, "changes": changes,
            "spans": [list(s) for s in res.spans], "rounds": res.rounds,
            "stopped": res.stopped, "nfe": res.nfe}


def seeded(body: Callable[[ServerState, Any], dict[str, Any]], seed: int | None
           ) -> Callable[[ServerState, Any], dict[str, Any]]:
    """``body`` with the ``seed`` the request ran with (one drawn where a sampled request
    sent none, ``api.with_seed``; null where it draws nothing), as ``unmask infill --json``
    reports it and completions do: sending it back repeats the result (it was not reported,
    so a sampled infill, form or edit could not be repeated)."""
    return lambda state, res: {**body(state, res), "seed": seed}


def _has_regex_hole(form: Any) -> bool:
    """Whether a value of the parsed ``form``, at any depth, is a ``<regex:...>`` hole
    (iterative: a form nested 500 deep overflowed the stack, a 500 under ``--no-regex``)."""
    stack = [form]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and node.startswith("<regex:"):
            return True
    return False


async def _run(state: ServerState, request: Request, opts: DiffusionOptions, stream: bool,
               prefix: str, fn: Callable[[StepCallback], Any],
               body: Callable[[ServerState, Any], dict[str, Any]],
               blame: str | None = None) -> Response:
    """Run ``fn`` alone on the worker; answer ``body(result)``, or stream its steps first. A
    refusal found there names the field its message starts with, else ``blame``
    (``plumbing.blaming``)."""
    work = context_code(blaming(fn, opts, blame, most=state.limits.max_steps))

    def answer(res: Any) -> dict[str, Any]:
        note(request, nfe=res.nfe)
        return body(state, res)

    if stream:
        events = DenoisingEvents(state, prefix + uuid.uuid4().hex[:24], answer)
        return await stream_job(state, request, alone(work), events, first_step=True)
    await refuse_if_gone(state, request)  # left while its checks ran: not run
    return JSONResponse(answer(await run_alone(state, request, work)))




def context_code(fn: Callable[[StepCallback], Any]) -> Callable[[StepCallback], Any]:
    """``fn`` (``blaming`` work), its 400 for a template, form or schema that cannot fit the
    model's context coded ``context_length_exceeded`` as a too-long prompt or edit text is
    (it was ``invalid_value``, like a syntax error: a client could not tell "shorten it" from
    "fix it"); a template whose text alone overflows says how to count its tokens."""

    def run(on_step: StepCallback) -> Any:
        try:
            return fn(on_step)
        except APIError as e:
            if e.status != 400 or CONTEXT_WORDS not in e.message:
                raise
            message = e.message
            if message.startswith("template needs at least"):
                message += ": shorten the template's text or gaps (/v1/tokenize counts tokens)"
            raise APIError(400, message, param=e.param,
                           code="context_length_exceeded") from None

    return run


def gap_param(req: InfillRequest, parsed: list[Any], e: GapError) -> str:
    """The field a refusal about a gap of the template (``GapError``, found on the worker)
    names: about gap ``e.gap``'s constraint (no text of the gap's lengths satisfies it, or
    the model takes none), the constraint the request sent for that gap (``choices.city``,
    ``regex.1``, ``charset.2`` as the request keyed it; the first in that order), else
    ``ban``; about the template itself (a gap's maximum past the context, a length range the
    model cannot size) ``template``. Such refusals had no ``param``."""
    from unmask.infill import Gap
    from unmask.infill.options import GAP_OPTIONS
    from unmask.infill.template import find_gap

    if e.gap is None:
        return "template"
    at = [k for k, s in enumerate(parsed) if isinstance(s, Gap)][e.gap - 1]
    for option in GAP_OPTIONS:  # choices, regex, charset: the order they are applied in
        # (every key names a gap here: constrain_gaps found them all)
        key = next((k for k in getattr(req, option) or {} if find_gap(parsed, k) == at), None)
        if key is not None:
            return f"{option}.{key}"
    return "ban" if req.ban else "template"


def user_call(fn: Callable[[], Any], param: str) -> Any:
    """``fn()``, its ``UserError`` as a 400 naming ``param``."""
    from unmask.errors import UserError

    try:
        return fn()
    except UserError as e:
        raise APIError(400, spoken(str(e)), param=param, code="invalid_value") from None


def router(state: ServerState) -> APIRouter:
    r = APIRouter(dependencies=secured(state))
    model, tok = state.model, state.tok

    def check(opts: DiffusionOptions, what: str, causal_ok: bool = False) -> None:
        """The checks every request here passes first: model, steps, a diffusion model
        (``causal_ok``: a causal one fills it left to right, ``unmask.infill.ordered``)."""
        check_model(state, opts.model)
        check_steps(state, opts)
        if not causal_ok:
            diffusion_only(state, what)

    def causal_fill(opts: DiffusionOptions, width: Callable[[], int]) -> None:
        """On a causal checkpoint, which fills a gap or a form left to right: the denoising
        loop's options are a 400 (``left_to_right``), ``steps`` and ``block_length`` at
        ``width()``, the tokens it writes (one step per token, one block, as a causal
        completion's at ``max_tokens``) pass. ``width()`` is worked out only where one of the
        two is sent (a form's compiles its automata: ``TakesSeconds``). Every sent ``steps`` was
        refused (``[MASK:4]`` with ``steps`` 4 too), where a causal completion takes
        ``max_tokens``."""
        if not state.causal:
            return
        configure(opts)  # an unknown policy or cache named first, as elsewhere (the decoder's
        # refusal below named no field for it)
        sized = opts.steps is not None or opts.block_length is not None
        left_to_right(state, opts, width() if sized else 1)  # not sized: any length

    def configure(opts: DiffusionOptions) -> SampleConfig:
        """The request's ``SampleConfig`` (``steps`` capped at the masks by the library), an
        unknown ``policy`` or ``cache`` a 400 naming it as in completions (it was found on
        the worker and blamed on the template, form or edit field, or on nothing).

        ``steps`` not sent: the library's, as ``unmask infill`` runs it (``template_steps``:
        one per masked token up to 64, within the server's ``--max-steps``; a sent one above
        it is a 400, ``check_steps``); past it a step commits several tokens. Not a 400 as in
        completions: the masks are counted on the worker (a variable gap's length search, a
        form's hole widths), and a client could not know what to send. A sent
        ``block_length`` of more blocks with a gap than that runs a step per masked token
        (``with_default_steps``). A sampled request that sends no ``seed`` gets one drawn
        (``api.with_seed`` of the commit loop, which these tasks run; an embed-diffusion
        infill draws its own), as ``unmask infill`` / ``fill-form`` / ``edit`` draw one, and
        its answer reports it (``seeded``)."""
        from unmask import api

        config = sample_config(opts, 1, template_steps(state))
        check_names(config)
        # max_post_steps 0 is off, as in a plain completion (the library's)
        return api.with_seed(config)

    def no_regex(param: str) -> APIError:
        return APIError(400, f"regex constraints are turned off on this server ({param})",
                        param=param, code="unsupported")

    @r.post("/v1/infill")
    async def infill_(req: InfillRequest, request: Request) -> Response:
        # the body (for refuse_repeated_keys) and a guided template's parse, for its slow retry
        memo: dict[str, Any] = {"body": await request.body()}
        fn, body, blame = await checked(state, request,
                                        lambda slow: plan_infill(req, slow, memo),
                                        on=state.compiles)
        return await _run(state, request, req, req.stream, "infill-", fn, body, blame)

    def plan_infill(req: InfillRequest, slow: bool, memo: dict[str, Any]) -> Plan:
        """The checks of an infill request, and its work (thread-safe: off the loop;
        ``TakesSeconds`` where a structured answer compiles, unless ``slow``; ``memo``: what
        the first call worked out, for the second: ``plumbing.checked``)."""
        from unmask import api
        from unmask.infill import Gap, SearchLimitError, parse_template
        from unmask.infill.template import GapRoomError
        from unmask.infill.template import check_names as check_gap_names
        from unmask.server.routes.guided import guidance

        guided = guidance(req)
        fim = getattr(model.config, "fim_prefix_id", None) is not None  # AR-FIM: one gap
        check(req, "infill", causal_ok=guided is not None or fim)
        check_text(state, req.template, "template")
        # keys given twice in the body's objects, at its first call, after the size checks
        # (a body over them costs one parse): a schema's is checked by ``build_form``
        repeats = None if slow else lambda: refuse_repeated_keys(memo["body"], req)
        if guided is not None:
            if "text" not in memo:  # parsed and encoded once (a 64K template: some 70 ms)
                memo["text"] = guided_text(req, guided["source"])
            gap = memo["text"][0]
            causal_fill(req, lambda: gap.length or GUIDED_WIDTH)  # n plays max_tokens
            return plan_guided_infill(req, guided, slow, repeats, *memo["text"])
        if repeats is not None:
            repeats()
        if req.regex and not state.limits.allow_regex:
            raise no_regex("regex")
        if req.regex:  # the gaps' patterns together, before any compiles (on the worker)
            from unmask.infill.automaton import check_total

            user_call(lambda: check_total(((f"gap {k}", v) for k, v in req.regex.items()),
                                          "regex"), "regex")
        parsed = user_call(lambda: parse_template(req.template), "template")  # named here
        # a gap name used twice is the template's, whatever constraint names a gap
        # (constrain_gaps' find_gap refused it in that entry's name, on the worker)
        user_call(lambda: check_gap_names(parsed), "template")
        if fim and sum(isinstance(s, Gap) for s in parsed) == 1:  # filled left to right
            # (a template of several gaps: the worker refuses it, naming why)
            causal_fill(req, lambda: fim_width(req, parsed))
        facts = api.facts_of(state.loaded)
        decoder = api.infill_decoder(state.loaded)  # the checkpoint's own, or None
        own = decoder is not None  # embed-diffusion, sedd
        config: SampleConfig | dict[str, Any]
        if own:
            # the options sent (a dict, as `unmask infill`): api.infill puts the checkpoint's
            # recommendation (its rounding temperature) under them; a SampleConfig rounded by
            # argmax, and its steps (sedd: as given, not at most the masks). steps not sent:
            # the library's, within --max-steps. These decoders run no commit policy and
            # refuse its options themselves, sent at their defaults not (threshold 0.9, as
            # /v1/completions and the CLI on them): the policy's own check was a 400 there
            check_names(SampleConfig(policy=req.policy, cache=req.cache))
            config = {k: v for k in SAMPLE_OPTIONS
                      if k in req.model_fields_set and (v := getattr(req, k)) is not None}
            steps = facts.sample_defaults.get("steps", SampleConfig.steps)
            if "steps" not in facts.sample_defaults and decoder == "sedd":
                # the library's default, at most one a mask (a count sent runs as given)
                steps = min(steps, sum(g.length or 1 for g in parsed if isinstance(g, Gap)))
            if "steps" not in config and steps > state.limits.max_steps:
                config["steps"] = state.limits.max_steps
            if "seed" not in config:  # its decoder draws at any temperature: a seed drawn
                config["seed"] = api.with_seed(SampleConfig(), decoder).seed
        else:
            config = configure(req)  # infill caps steps at masks
        if (req.length_mode == "empty" and getattr(model.config, "empty_id", None) is None
                and not own and not fim):
            # the library's refusal names its CLI flags ("use --length-mode elbo") and came
            # without a param: said in the request's words, where the length search runs (an
            # AR-FIM or embed-diffusion checkpoint refuses every length option itself: this
            # told them to use 'elbo' or 'auto', each a 400 there too)
            raise APIError(400, "length_mode 'empty' needs a model trained with --empty-rate "
                           "(its config.json has no empty_id); use length_mode 'elbo' or "
                           "'auto'", param="length_mode", code="invalid_value")
        options = infill_options(req)

        def run(on_step: StepCallback) -> Any:  # worker thread: regexes compile here
            segments = constrained(req, parsed)
            # the checkpoint's own way, as `unmask infill`: masked, embed-diffusion, AR-FIM
            def fill(cfg: Any) -> Any:
                return api.infill(state.loaded, segments, config=cfg, options=options,
                                  step_callback=on_step,
                                  max_repair_calls=repair_calls(state, cfg)).detail

            try:  # embed-diffusion, sedd: the options as sent (a dict)
                if isinstance(config, dict):
                    return fill(config)
                return with_default_steps(state, req, config, fill)
            except SearchLimitError as e:  # the operator sets the limit, not the client
                raise UserError(e.message(raise_hint=False, spell=lambda f: (
                    "the server's --max-search-calls" if f == "max_search_calls" else f))) from None
            except GapError as e:  # a GapRoomError's clients have no default_max_len to lower
                said = e.message(default_hint=False) if isinstance(e, GapRoomError) else str(e)
                raise user_error(UserError(said), gap_param(req, parsed, e)) from None

        seed = config["seed"] if isinstance(config, dict) else config.seed
        return run, seeded(infill_body, seed), None

    def infill_options(req: InfillRequest) -> InfillOptions:
        """The request's ``InfillOptions`` (a field not sent: the library's default)."""
        return InfillOptions(max_search_calls=state.limits.max_search_calls,
                             **{k: v for k in INFILL_FIELDS if (v := getattr(req, k)) is not None})

    def constrained(req: InfillRequest, parsed: list[Any]) -> list[Any]:
        """``parsed`` with the request's gap constraints set (copies: ``parsed`` stays)."""
        from unmask.infill.options import constrain_gaps

        return constrain_gaps(parsed, choices=list((req.choices or {}).items()),
                              regex=list((req.regex or {}).items()),
                              charset=list((req.charset or {}).items()), ban=req.ban or ())

    def fim_width(req: InfillRequest, parsed: list[Any]) -> int:
        """The most tokens a fill-in-the-middle infill writes in the one gap of ``parsed``, as
        declared (no compile: on the request path): ``[MASK:n]`` n, a range's maximum, a bare
        ``[MASK]`` 1, or ``default_max_len`` where a regex or choices bound it (the bounds
        ``plan_template`` starts from); the template refused first where that width and its
        text overflow the context, as on the worker (it was a 400 naming ``steps``). It was
        the longest length the constraint allows ([MASK:1-8] with choices yes/no took
        ``steps`` 3, not 8), compiled on a slow-check thread for every sized request."""
        from unmask.infill import Gap
        from unmask.infill.fim import check_declared_room
        from unmask.infill.ordered import declared_width

        k = next(k for k, s in enumerate(parsed) if isinstance(s, Gap))
        gap = parsed[k]
        if not (req.choices or req.regex or req.charset or req.ban):  # else checked later
            before = "".join(s for s in parsed[:k] if isinstance(s, str))
            after = "".join(s for s in parsed[k + 1 :] if isinstance(s, str))
            try:
                check_declared_room(model, tok, gap, before, after)
            except UserError as e:  # (it named no field)
                raise user_error(e, "template") from None
        return declared_width(gap, constrained=bool(req.choices or req.regex))

    def guided_text(req: InfillRequest, source: str) -> tuple[Any, ...]:
        """A guided infill's template: (its one gap, the text before and after it, whether a
        causal model reads them as fill-in-the-middle, the BOS, the ids before and after);
        a 400 for a template without exactly one ``[MASK:n]``, or without room for it."""
        from unmask import api
        from unmask.infill import Gap, parse_template
        from unmask.infill.ordered import form_span
        from unmask.infill.template import segment_ids

        user_call(lambda: api.refuse_continuous(state.loaded, "guided infill"), "model")
        segments = user_call(lambda: parse_template(req.template), "template")
        gaps = [k for k, s in enumerate(segments) if isinstance(s, Gap)]
        gap = segments[gaps[0]] if len(gaps) == 1 else None
        if not isinstance(gap, Gap) or req.choices or req.regex or req.charset or req.ban:
            raise APIError(400, "with response_format or guided_*, the template has one gap "
                           "and no other gap constraints", param="template", code="invalid_value")
        try:  # the length search's options (ignored): at their defaults they pass, as on
            # an AR-FIM or embed-diffusion checkpoint (any one sent was a 400)
            api._refuse_length_options(infill_options(req), f"with {source} the constraint "
                                       "sets the gap's length")
        except UserError as e:
            raise user_error(e, sent_option(req, e)) from None
        if gap.length is None and (gap.min_len is not None or gap.max_len is not None):
            raise APIError(400, "with response_format or guided_*, the gap is [MASK:n] (at most "
                           "n tokens; the constraint sets the length), not a range",
                           param="template", code="invalid_value")
        k = gaps[0]
        before = "".join(s for s in segments[:k] if isinstance(s, str))
        after = "".join(s for s in segments[k + 1 :] if isinstance(s, str))
        fim = state.causal and bool(after)  # a causal model reads the text after it first
        # a published model's BOS leads, as in a plain infill and /v1/forms (an AR-FIM
        # prompt is laid out by its sentinels, as a plain causal infill's): as fill_form's
        # start_ids, hidden from the steps streamed (they showed it as the canvas's first
        # token), and with nothing before the gap the answer then starts a text, as the
        # tokenizer encodes one after its BOS (it was laid as a continuation: "<s>{", not
        # "<s>▁{", on a Llama-style tokenizer)
        prefix = tok.encode(before)
        start = [] if fim else api.facts_of(state.loaded).prompt_ids(prefix)
        start = start[: len(start) - len(prefix)]  # the BOS prompt_ids adds, if any
        # the text after the gap continues the text (``segment_ids``): encoded on its own, a
        # SentencePiece tokenizer gave it a word start, a space the model read ("▁dog")
        suffix = segment_ids(tok, after, first=False)
        n_text = len(start) + len(prefix) + len(suffix)
        least = form_span(n_text, 1, causal=state.causal, fim=fim)
        if least > state.max_seq_len:  # the text and at least one token of the gap
            raise APIError(400, f"template needs at least {least} tokens ({n_text} of "
                           f"text), more than {CONTEXT_WORDS} {state.max_seq_len}): shorten "
                           "the template's text (/v1/tokenize counts tokens)", param="template",
                           code="context_length_exceeded")
        return gap, before, after, fim, start, prefix, suffix

    def plan_guided_infill(req: InfillRequest, guided: dict[str, Any], slow: bool,
                           repeats: Callable[[], None] | None, gap: Any, before: str,
                           after: str, fim: bool, start: list[int], prefix: list[int],
                           suffix: list[int]) -> Plan:
        """One gap ``[MASK:n]`` filled under ``response_format`` / ``guided_*``: the text
        around it (``guided_text``) is locked context; the gap gets at most n tokens.
        ``repeats``: the check of keys given twice (``build_form``'s ``then``)."""
        from unmask.infill import fill_form, parse_form
        from unmask.infill.ordered import form_span
        from unmask.server.routes.guided import build_form, piece_widths, room_check

        n_text = len(start) + len(prefix) + len(suffix)
        width = gap.length or GUIDED_WIDTH
        config = configure(req)
        # filled as a form, without token editing: refused as in structured output (they
        # were accepted and ignored), before its automata compile
        refuse_editing(req, config, "structured output")
        form, parse = build_form(state, guided, width, slow=slow, then=repeats)
        items, holes, automata = user_call(
            lambda: parse_form(form, tok, source=guided["source"]), guided["source"])
        answer = sum(piece_widths(tok, items, holes, after_text=bool(prefix)))  # at its widest
        need = form_span(n_text, answer, causal=state.causal, fim=fim)
        if need > state.max_seq_len:  # fill_form said "use fewer or shorter holes"
            source, where = guided["source"], gap.source or "[MASK]"
            extra = " and 3 fill-in-the-middle sentinels" * fim
            raise APIError(400, f"{source}: its answer in {where} takes up to {answer} tokens "
                           f"(each value at most {width}), {need} with the template's text"
                           f"{extra}, more than {CONTEXT_WORDS} {state.max_seq_len}): give a "
                           f"smaller n in [MASK:n] or a smaller {source}",
                           param=source, code="context_length_exceeded")
        # n bounds each value as max_tokens does (the skeleton on top)
        room_check(holes, automata, guided["source"], width,
                   f"the gap [MASK:{width}]", guided["source"])

        def run(on_step: StepCallback) -> Any:
            return with_default_steps(state, req, config, lambda cfg: fill_form(
                model, tok, form, cfg, step_callback=on_step, source=guided["source"],
                start_ids=start, prefix_ids=prefix, suffix_ids=suffix, parse=parse,
                max_repair_calls=repair_calls(state, cfg)))

        def body(state: ServerState, res: Any) -> dict[str, Any]:
            from unmask.infill.template import _named
            from unmask.server.routes.guided import answer_text

            text = answer_text(res, parse)
            name = _named(gap, 1)  # as a plain infill labels its gaps: "gap 1 [MASK:8]"
            start = len(before)
            return {"object": "infill", "model": state.name, "text": before + text + after,
                    "gaps": [{"name": name, "text": text, "start": start,
                              "end": start + len(text), "value": res.value}],
                    "nfe": res.nfe, "repaired": res.repaired,
                    "length_mode": None, "candidates": []}  # the constraint sets the length

        return run, seeded(body, config.seed), guided["source"]

    @r.post("/v1/forms")
    async def forms(req: FormRequest, request: Request) -> Response:
        raw = await request.body()
        fn, body, blame = await checked(state, request, lambda slow: plan_form(req, slow, raw),
                                        on=state.compiles)
        return await _run(state, request, req, req.stream, "form-", fn, body, blame)

    def plan_form(req: FormRequest, slow: bool, raw: bytes) -> Plan:
        """The checks of a forms request (its body ``raw``), and its work (thread-safe: off
        the loop; ``TakesSeconds`` before a schema's checks, unless ``slow``)."""
        from unmask import api
        from unmask.errors import UserError
        from unmask.infill.forms import load_json
        from unmask.server.routes.guided import schema_text

        check(req, "form filling", causal_ok=True)
        user_call(lambda: api.refuse_continuous(state.loaded, "form filling"), "model")
        if (req.form is None) == (req.schema_ is None):
            raise APIError(400, "give a form or a schema (exactly one)", param="form",
                           code="invalid_value")
        if req.schema_ is not None:
            if not slow:  # its patterns are checked for seconds (a plain /v1/tokenize
                # waited 20 s behind six schemas on the default threads): its size and keys
                # given twice first (an oversized body costs one parse)
                check_text(state, schema_text(req.schema_), "schema")
                refuse_repeated_keys(raw, req)
                raise TakesSeconds
            return plan_schema_form(req)
        # an object as compact JSON text keeping its characters, as a schema is counted (each
        # non-ASCII character of a form sent as an object counted 6, an escape: a form
        # within --max-prompt-chars as text was "longer than" it as an object)
        text = schema_text(req.form)
        check_text(state, text, "form")
        if not slow:  # (its first call) after the size check: an oversized body, one parse
            refuse_repeated_keys(raw, req)
        if not state.limits.allow_regex and "<regex:" in text:
            try:
                form = load_json(text, "form")
            except UserError:
                form = None  # the worker says where the JSON is broken
            if _has_regex_hole(form):
                raise no_regex("form")
        causal_fill(req, lambda: form_width(text, "form", slow))
        config = configure(req)

        def run(on_step: StepCallback) -> Any:  # the API entry, as `unmask fill-form`
            return with_default_steps(state, req, config, lambda cfg: api.fill_form(
                state.loaded, text, config=cfg, step_callback=on_step, source="form",
                max_repair_calls=repair_calls(state, cfg)).detail)

        return run, seeded(form_body, config.seed), "form"

    def form_width(form: Any, source: str, slow: bool) -> int:
        """The masked positions of a form (``source`` "form") or a schema's (``"schema"``):
        its holes at their widest, one step each by default (``fill_form``'s layout); its
        automata compile (cached for the fill). Kept in ``state.forms``: a form's width is
        its tokenizer's, so one sized before is answered on the request path (each sized
        request waited in the slow-check pool, and re-parsed its form or schema there)."""
        from unmask.infill.schema import form_width as widest

        key = json.dumps(["width", source, form], ensure_ascii=False)
        kept = state.forms.get(key)
        if kept is not None:
            return int(kept)
        if not slow:
            raise TakesSeconds
        try:  # its refusals as on the worker (one too wide for the context coded so)
            width = widest(form, tok, source=source, max_seq_len=state.max_seq_len,
                           schema=source == "schema")
        except UserError as e:
            raise user_error(e, source) from None
        state.forms.put(key, width)
        return width

    def plan_schema_form(req: FormRequest) -> Plan:
        """A schema's form (``plan_form`` checked its size and keys)."""
        from unmask import api
        from unmask.infill.schema import check_schema, load_schema

        schema = req.schema_
        # Unenforceable keywords here; the automata compile on the worker.
        user_call(lambda: check_schema(load_schema(schema, "schema")), "schema")
        causal_fill(req, lambda: form_width(schema, "schema", True))
        config = configure(req)

        def run(on_step: StepCallback) -> Any:  # the API entry, as `unmask fill-form`
            return with_default_steps(state, req, config, lambda cfg: api.fill_form(
                state.loaded, schema=schema, config=cfg, step_callback=on_step,
                source="schema", max_repair_calls=repair_calls(state, cfg)).detail)

        return run, seeded(form_body, config.seed), "schema"

    @r.post("/v1/edit")
    async def edit_(req: EditRequest, request: Request) -> Response:
        # a regex search holds a thread for up to REGEX_SECONDS: a slow check
        run, blame, body = await checked(state, request, lambda slow: plan_edit(req, slow),
                                         on=state.searches)
        await refuse_if_gone(state, request)  # left while its checks ran: not run
        res = await run_alone(state, request,
                              blaming(run, req, blame, most=state.limits.max_steps))
        note(request, nfe=res.nfe)
        return JSONResponse(body(state, res))

    def plan_edit(req: EditRequest, slow: bool
                  ) -> tuple[Callable[[StepCallback], Any], str | None,
                             Callable[[ServerState, Any], dict[str, Any]]]:
        """The checks of an edit request (the text tokenized), its work, the field its
        refusals name and its response body (thread-safe: off the loop; ``TakesSeconds``
        before a regex search, unless ``slow``)."""
        from unmask import api
        from unmask.infill.edit import CallLimitError, edit_spans

        check(req, "edit")
        user_call(lambda: api.edit_checks(state.loaded), "model")
        check_text(state, req.text, "text")
        if req.regex is not None and not state.limits.allow_regex:
            raise APIError(400, "regex edits are turned off on this server", param="regex",
                           code="unsupported")
        n_tokens = len(tok.encode(req.text))
        if n_tokens > state.max_seq_len:
            raise APIError(400, f"text has {n_tokens} tokens; the model's context is "
                           f"{state.max_seq_len}", param="text", code="context_length_exceeded")
        if req.rounds > 1 and req.lowest is None:  # as `unmask edit --rounds` refuses it
            raise APIError(400, "rounds needs lowest (spans and regex matches are rewritten "
                           "once)", param="rounds", code="invalid_value")
        config = configure(req)
        unused = given_penalties(config)
        if unused:  # the library's edit refills without them: they were silently ignored
            raise APIError(400, f"{unused[0]} does not apply to /v1/edit (an edit's refill "
                           "applies no repetition penalty)", param=unused[0],
                           code="invalid_value")
        given = [k for k in ("spans", "regex", "lowest") if getattr(req, k) is not None]
        blame = given[0] if len(given) == 1 else None  # "span 5:3 is empty ...": spans
        if req.lowest is not None and len(given) > 1:  # "choose spans/regex or lowest, not
            blame = "lowest"  # both": it named no field
        spans = [tuple(s) for s in req.spans or ()]
        regex = req.regex
        if regex is not None and req.lowest is None:
            if not slow:
                raise TakesSeconds
            # the matches found here, off the loop, in a child process (at most
            # REGEX_SECONDS): on the worker, a slow regex held every request for 5 s
            try:
                spans, regex = edit_spans(req.text, spans, regex), None
            except UserError as e:
                raise user_error(e, sent_option(req, e) or blame) from None

        def run(on_step: StepCallback) -> Any:  # the API entry, as `unmask edit`
            # every forward of the edit (scoring, steps, refills, all rounds) within
            # --max-steps: it ran steps and refills per round on top of the scoring (lowest 10,
            # rounds 4 at --max-steps 8: 36 forwards)
            # k lowest tokens fill at least k / block_length blocks: where that is more than the
            # default steps, they are not tried (the fill would refuse them after the scoring)
            bl, k = config.block_length, req.lowest
            least = -(-k // bl) if isinstance(k, int) and bl is not None and bl > 0 else 0
            try:
                return with_default_steps(state, req, config, lambda cfg: api.edit(
                    state.loaded, req.text, spans=spans, regex=regex, lowest=req.lowest,
                    rounds=req.rounds, config=cfg, confidence_mode=req.confidence_mode,
                    step_callback=on_step, max_calls=state.limits.max_steps).detail,
                    least_blocks=least)
            except CallLimitError as e:  # the operator sets the limit, not the client
                raise UserError(e.message(limit="the server's --max-steps")) from None

        return run, blame, seeded(edit_body, config.seed)

    return r
