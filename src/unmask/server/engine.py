"""The model engine of the server, built in one place.

Inside: ``make_engine(loaded, limits, metrics, draft=...)``: the ``Engine`` (worker thread,
queue, continuous batching) around one checkpoint (and its drafter, for speculative
decoding), and ``check_servable`` (a checkpoint the decoder it is served with refuses,
``served_decoder``, is refused at launch). Nothing else in the server knows how a
checkpoint is decoded: routes submit ``Job`` s and read ``GenOutput`` s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from unmask.checkpoint import Loaded
from unmask.config import SampleConfig
from unmask.facts import ModelFacts
from unmask.server.batching import Engine, ForwardCount
from unmask.server.limits import ServerLimits
from unmask.server.metrics import Metrics


def make_engine(
    loaded: Loaded,
    limits: ServerLimits,
    metrics: Metrics,
    *,
    draft: Loaded | None = None,
    draft_options: Mapping[str, Any] | None = None,
) -> Engine:
    """The engine that runs ``loaded`` for every request, with the queue and batch bounds of
    ``limits``, counting forward passes into ``metrics`` (those of runs alone, infill and the
    like, by a hook on the model: ``ForwardCount``). Every request becomes the decoder
    run that ``unmask.api.start`` gives for it (the checkpoint's own decoder, as the CLI
    uses); runs that can share a forward pass are batched continuously. Its worker thread
    starts with the first job; ``Engine.close`` stops it. A checkpoint the decoder it is
    served with refuses (``check_servable``) is a ``UserError`` here.

    ``draft``: a diffusion checkpoint that drafts for the causal ``loaded`` (``unmask serve
    --draft``): every request is decoded by speculative decoding (its greedy output is the
    causal model's own), as whole-batch runs (two models, two KV caches: no request joins
    a running batch); ``draft_options`` (``SampleConfig`` fields such as
    ``draft_length``) replace those of every request."""
    from unmask import api
    from unmask.errors import UserError

    extra = dict(draft_options or {})
    unknown = set(extra) - {f.name for f in dataclasses.fields(SampleConfig)}
    if unknown:
        raise ValueError(f"draft_options: not SampleConfig fields: {sorted(unknown)}")

    if draft is not None or extra:  # a drafter or option the checkpoint cannot use fails now
        api.choose(loaded, SampleConfig(**extra), draft=draft)
    else:
        check_servable(loaded)

    def own(config: SampleConfig) -> SampleConfig:
        """``config`` with the server's decoding options (``draft_options``)."""
        return dataclasses.replace(config, **extra) if extra else config

    def start(
        rows: Sequence[Sequence[int]], config: SampleConfig, *, step_callback: Any = None,
        seeds: Sequence[int] | None = None, stop: Sequence[Any] | None = None,
    ) -> Any:
        return api.start(loaded, rows, own(config), step_callback=step_callback, draft=draft,
                         seeds=seeds, stop=stop)

    def seeds_in_one_run(config: SampleConfig, *,
                         rows: Sequence[Sequence[int]] | None = None) -> bool:
        return api.seeds_in_one_run(loaded, own(config), draft, rows=rows)

    def row_runs(config: SampleConfig, rows: Sequence[Sequence[int]], *, seeded: bool) -> Any:
        try:
            return api.row_runs(loaded, rows, own(config), seeded=seeded, draft=draft)
        except UserError:  # settings the decoder refuses: the run says so when started
            return None

    return Engine(
        start,
        max_batch=limits.max_batch,
        max_queue=limits.max_queue,
        batch_wait_s=limits.batch_wait_s,
        metrics=metrics,
        seeds_in_one_run=seeds_in_one_run,
        row_runs=row_runs,
        forwards=ForwardCount.on(loaded.model),
    )


def served_decoder(facts: ModelFacts) -> str:
    """The name of the decoder a completions or chat request runs (the request names none):
    ``ModelFacts.decoder_for(None)``, the rule ``api.sample_config`` applies to a run that
    names none: the one the checkpoint recommends (``sample_defaults``), else its own
    (``ModelFacts.default_decoder``); with ``--draft`` the engine runs ``speculative``, which
    lays out a prompt as ``ar`` does. What ``prepare``'s context check counts a prompt's
    columns under (``ModelFacts.prompt_columns``), before the decoder is chosen, and what
    ``check_servable`` checks at launch."""
    return facts.decoder_for(None)


def check_servable(loaded: Loaded) -> None:
    """A one-line ``UserError`` when the decoder every request runs (``served_decoder``: the
    one ``sample_defaults`` names, else the objective's) refuses the checkpoint under the
    default options (``api.choose``; the other recommended options are not checked: one it
    refuses is the request's to override): a config that contradicts itself, objective
    ``mdlm`` with causal attention or ``ar`` with bidirectional attention, and no
    ``sample_defaults`` decoder that runs it. Every completions and chat request was a 400 no
    client could act on (requests name no decoder), so the server refuses to start, with the
    way out the refusal names."""
    from unmask import api
    from unmask.errors import UserError

    try:
        api.choose(loaded, SampleConfig(decoder=served_decoder(api.facts_of(loaded))))
    except UserError as e:
        raise UserError(f"cannot serve {loaded.shown}: {e} (the server runs the decoder that "
                        "its config.json's sample_defaults name, else its objective's)") from None


__all__ = ["check_servable", "make_engine", "served_decoder"]
