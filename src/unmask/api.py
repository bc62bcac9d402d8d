"""The Python API: one entry per task, over a loaded checkpoint.

- ``start(loaded, prompt_ids, config, step_callback=...)``: the decoder run for one batch
  of prompts (``unmask.sampling.DecoderRun``): the checkpoint's facts are read
  (``unmask.facts.ModelFacts``), ``unmask.sampling.choose_decoder`` picks the decoder (or
  refuses the combination in one line) and starts it. The server's engine steps these runs.
  ``prompt_ids(loaded, prompts)``: the ids ``generate`` decodes text prompts from (a
  published model's BOS first), for ``start``.
- ``decoding_model``: the model every run calls: the loaded one, or with
  ``SampleConfig.compile`` its twin compiled for decoding once per loaded model.
- ``sample_config``: the options of a command-line run: the user's, else the checkpoint's
  recommended ones (``ModelConfig.sample_defaults``).
- ``load_for_decoding``: a checkpoint loaded as the decoding commands load ``--model``, in the
  dtype of ``--dtype`` (``decode_dtype``: ``auto`` is bf16 for masked diffusion on a CPU with
  AMX); ``weights_dtype`` names the dtype a loaded model runs in.
- ``generate``: text continuations (``start`` run to the end), ``n`` per prompt;
  ``Generation`` holds texts, ids, the prompts as they ended (a ``[MASK]`` written in a prompt
  is filled), NFE, steps, seconds. ``draws_noise``, ``with_seed`` and ``row_seeds``: the one
  seed rule of the CLI, the API and the server (which runs draw, the seed a sampled run
  draws and reports, the seed of every row). ``stop_at`` (``unmask.chat.text_end``): where
  a text ends at its stop sequences (``generate``'s and ``chat``'s ``stop``, the server's).
- ``chat``: one assistant reply to a conversation through a chat template; ``chat_template``
  picks the template (the model's, or a ``--template`` value).
- ``infill``, ``edit``, ``fill_form``: the tasks of ``unmask.infill`` (templates with gaps,
  re-masked spans, JSON forms), with the same ``Filled`` result shape.

The CLI, ``unmask chat``, the demo, the server and the benchmarks call these and nothing
below them, so they decode a checkpoint the same way.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from unmask.chat import cut_text, stop_at
from unmask.config import SampleConfig, dtype_choice, dtype_name, torch_dtype
from unmask.errors import UserError
from unmask.facts import CAUSAL_DECODERS, ModelFacts
from unmask.messages import plural

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from unmask.chat import ChatTemplate
    from unmask.checkpoint import Loaded
    from unmask.infill import Gap, InfillOptions
    from unmask.sampling import DecoderRun, GenerateResult, ViewCallback
    from unmask.sampling.protocol import RowRuns, StepCallback
    from unmask.sampling.stops import TextEnd


def refuse_continuous(loaded: Loaded, task: str) -> None:
    """The template tasks run the masked-diffusion commit loop; a continuous-diffusion
    checkpoint (``unmask.sampling.continuous``) is refused in one line instead (the server
    asks before it queues a request)."""
    from unmask.sampling.continuous import refuse_commit_loop

    refuse_commit_loop(facts_of(loaded), task)


def facts_of(loaded: Loaded) -> ModelFacts:
    """The facts of a loaded checkpoint (its config, and whether its model has a KV cache);
    what is not one (a path) is refused in one line (``check_loaded``)."""
    check_loaded(loaded)
    facts = ModelFacts.of(loaded.config)
    has_cache = bool(getattr(loaded.model, "supports_kv_cache", False))
    return dataclasses.replace(facts, has_kv_cache=has_cache)


def cpu_has_bf16_matmul() -> bool:
    """Whether bf16 beats fp32 at decoding on this CPU: Intel AMX with oneDNN's bf16 kernels
    (``unmask.parallel.cpu_bf16`` is ``"amx"``). There a bfloat16 product of 256 rows cost
    about what one of 1 row does (benchmarks/precision.py). Other CPUs with oneDNN's bf16
    kernels (AVX-512, Arm bf16) are not counted: not measured at decoding."""
    from unmask.parallel import cpu_bf16

    return cpu_bf16() == "amx"


def decode_dtype(
    dtype: str | torch.dtype, device: str | torch.device, config: Any
) -> torch.dtype | None:
    """The torch dtype that ``--dtype dtype`` (a name of ``unmask.config.DECODE_DTYPES`` or an
    alias) gives the weights of ``config``'s checkpoint decoding on ``device``; None = the load's
    default (float32 for unmask's own checkpoints, whatever they are stored in: the demo's fp16
    too; ``torch_dtype`` for a publisher's folder).

    ``auto`` is bfloat16 on a CPU with hardware bfloat16 matrix products (``cpu_has_bf16_matmul``)
    for a checkpoint decoded by the masked-diffusion loop (``llada``: ``mdlm``, ``sft``), whose
    every step runs the model over a whole block or canvas: measured 1.8x faster there at the
    same quality (docs/sampling.md, "Precision"). Everything else stays as stored under
    ``auto``: a decoder of a few positions per forward (``ar``, ``hybrid``, ``bd3lm``'s blocks,
    a drafter) ran slower in bfloat16, and on CUDA nothing was measured yet.

    ``device`` as ``unmask.load`` takes it: one it cannot use (``gpu``, ``cuda`` without CUDA)
    is a one-line ``UserError`` (``unmask.config.resolve_device``)."""
    import torch

    from unmask.config import resolve_device

    name = dtype_choice(dtype)
    kind = resolve_device(str(device)).type  # "cuda" without CUDA: not "this GPU has no bf16"
    if name == "auto":
        wide = config is not None and ModelFacts.of(config).default_decoder == "llada"
        return torch.bfloat16 if kind == "cpu" and wide and cpu_has_bf16_matmul() else None
    if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("dtype bf16: this GPU has no bfloat16; use fp16")
    return torch_dtype(name)


def load_for_decoding(
    path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "auto",
    quantize: str | None = None,
) -> Loaded:
    """``unmask.load`` as the decoding commands load ``--model``: on ``device`` (``auto``,
    ``cpu``, ``cuda[:i]``), in ``dtype`` (``auto``, ``fp32``, ``bf16``, ``fp16``, an alias or a
    ``torch.dtype``: ``decode_dtype``). A named dtype is read straight into (a publisher's
    folder too), and so is bfloat16 where ``auto`` means it for an unmask checkpoint
    (``decode_dtype``; it was loaded in float32 and cast: twice the memory for a moment);
    under ``auto`` a publisher's folder and a quantised model load as stored."""
    from unmask.checkpoint import check_model_path, load
    from unmask.config import resolve_device

    check_model_path(path)
    device = str(resolve_device(device))  # auto, and no CUDA: one line before the dtype's
    if dtype_choice(dtype) != "auto":
        return load(path, device=device, dtype=decode_dtype(dtype, device, None),
                    quantize=quantize)
    return load(path, device=device, dtype=_auto_dtype(path, device, quantize), quantize=quantize)


def _auto_dtype(path: Any, device: str, quantize: str | None) -> torch.dtype | None:
    """What ``--dtype auto`` loads the checkpoint at ``path`` in: ``decode_dtype``'s rule for a
    native checkpoint (its config.json read first), None (as stored) for a publisher's folder,
    a quantised load, or a checkpoint ``load`` will refuse anyway."""
    if quantize is not None or not device.startswith("cpu") or not cpu_has_bf16_matmul():
        return None  # decode_dtype gives None there: no need to read the config
    from unmask.checkpoint import native_config

    config = native_config(path)
    return None if config is None else decode_dtype("auto", device, config)


def weights_dtype(loaded: Loaded) -> str | None:
    """The dtype the model's weights decode in, as ``--dtype`` spells it (``fp32``, ``bf16``,
    ``fp16``; another dtype by torch's name), with ``+ quantized`` when torchao quantised its
    linear layers (``--quantize``: they compute in that dtype); None for a model without
    parameters."""
    from unmask.quantize import quantized_layer

    check_loaded(loaded)
    params = getattr(loaded.model, "parameters", None)
    weights = list(params()) if callable(params) else []
    if not weights:
        return None
    name = dtype_name(weights[0].dtype)
    modules = callable(getattr(loaded.model, "named_modules", None))  # a module, not a stand-in
    quantized = modules and quantized_layer(loaded.model) is not None
    return f"{name} + quantized" if quantized else name


def _batch_exact(loaded: Loaded) -> bool:
    """Whether a row of a batched run writes what it writes in another batch (beside other
    rows, left-padded otherwise, alone): the weights decode in float32 or float64 (a model
    without parameters, a stand-in, too). In bfloat16 or float16 (or quantised) a row rounds
    otherwise in another batch, and near ties then pick other tokens. The one rule of
    ``seeds_in_one_run`` (seeded rows share a run) and of a segmented run's stops (a row
    leaves the later segments at its stop: ``start``)."""
    return weights_dtype(loaded) in (None, "fp32", "float64")


def start(
    loaded: Loaded,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    config: SampleConfig | Mapping[str, Any] | None,
    *,
    step_callback: ViewCallback | None = None,
    draft: Loaded | str | Path | None = None,
    seeds: Sequence[int] | None = None,
    stop: Sequence[TextEnd | None] | None = None,
) -> DecoderRun:
    """The decoder run for ``prompt_ids`` (one batch) under ``config``, not yet stepped:
    ``while not run.done: run.advance()``, or ``run.run()``; stepping it once ``done`` is a
    one-line ``UserError`` (``DecoderRun``).

    The decoder is ``choose_decoder(facts, config)``; the run's config records its name.
    ``step_callback(step, view)`` gets the (B, gen_length) generation region after every
    step (``mask_id`` where nothing is committed yet). Raises ``UserError`` for options the
    checkpoint cannot do, before any model call.

    ``config.compile``: the decoder gets the model compiled for decoding
    (``unmask.parallel.compile_for_decoding``), made on the first such run and reused by the
    next ones; a mode the model cannot run is refused before any model call.

    ``draft``: a diffusion checkpoint of the same tokenizer (loaded, or its path) that drafts
    for this causal one (decoder ``speculative``, which ``auto`` then means);
    ``Target.aux["drafter"]``.

    ``config`` may be a mapping of the options to set: ``sample_config(loaded, config,
    prompt_lengths=...)``, the checkpoint's recommendation for the rest and ``steps`` not given
    fitted to the blocks the prompts leave (``fit_block_steps``), as ``generate`` and ``chat``
    fit them (a ``SampleConfig`` is taken as it is; None is the recommendation alone).

    ``seeds``: one seed per row, in place of ``config.seed``: row i draws from a generator of
    its own seeded ``seeds[i]``, so it writes what it writes alone under ``seed=seeds[i]``, in
    one batched run (in segments: one run per segment, row i's segments seeded as alone). Only
    where the decoder takes them (``Decoder.takes_seeds``: every built-in decoder, the commit
    loop under its built-in policies and scores); elsewhere a ``UserError`` (run a run per
    row).

    ``stop``: how each row's text ends besides EOS (``unmask.sampling.stops.TextEnd``: its
    stop sequences; None: none), one a row: a decoder that stops after EOS (``ar``,
    ``speculative``, ``hybrid``; the commit loop and ``bd3lm`` at a block boundary) finishes a
    row once its text is sure to be cut at one (``DecoderRun.stop``), and stops once every
    row has ended: the same text, fewer forwards; in segments (``segment_length``) too, where
    the rows stop only all together unless the weights decode in float32 or float64 and the
    rows draw from a generator each (``seeds``) or draw nothing (``SegmentedRun``).
    """
    from unmask.canvas import as_rows
    from unmask.sampling import Target, choose_decoder
    from unmask.sampling.continuous import CONTINUOUS_DECODERS
    from unmask.sampling.segments import SegmentedRun

    check_loaded(loaded)
    _check_callback(step_callback)
    _check_ids(prompt_ids, loaded)
    if stop is not None:
        _check_stop_rules(stop, len(as_rows(prompt_ids)))
    lengths = None
    if config is None or isinstance(config, Mapping):  # steps one per token: whole blocks
        lengths = [len(row) for row in as_rows(prompt_ids)]
    config = _as_config(loaded, config, prompt_lengths=lengths, draft=draft)
    draft = _as_draft(loaded, draft)
    facts = facts_of(loaded)
    config = _with_draft(config, draft)
    decoder = choose_decoder(facts, config)
    _check_choice(facts, config, decoder.name)
    aux = draft_aux(loaded, draft)
    if config.guide_words is not None:  # the continuous decoders tokenize the guide words
        aux["tokenizer"] = loaded.tokenizer
    config = dataclasses.replace(config, decoder=decoder.name)
    if seeds is not None:
        seeds = _seed_list(seeds)
        if not decoder.takes_seeds(config):
            under = " under these options" if decoder.row_seeds else ""
            raise UserError(f"decoder {decoder.name!r} draws from one generator per run{under}: "
                            "seeds of its rows need a run per row")
        if len(as_rows(prompt_ids)) > 1 and not decoder.takes_seeds(config, prompt_ids,
                                                                     facts.mask_id):
            from unmask.sampling.loop import rows_apart

            why = rows_apart(prompt_ids, facts.mask_id, cache=config.cache)
            raise UserError(f"decoder {decoder.name!r} cannot run seeded rows as one batch "
                            f"beside {why} (the batch would not be what each row writes "
                            "alone): run a run per row")
        if len(seeds) != len(as_rows(prompt_ids)):
            raise UserError(f"{plural(len(seeds), 'seed')} for "
                            f"{plural(len(as_rows(prompt_ids)), 'row')}")
        for seed in seeds:  # as SampleConfig.seed
            dataclasses.replace(config, seed=_check_seed(seed))
    target = Target(decoding_model(loaded, config), facts, aux)
    limit, who = _context(facts, aux)
    if config.segment_length is None:
        _check_fits(prompt_ids, config, limit, who,
                    block_model=loaded.model if decoder.name == "bd3lm" else None,
                    segments=decoder.name not in CONTINUOUS_DECODERS,
                    facts=facts, decoder=decoder.name)
        if seeds is None:
            run = decoder.start(target, prompt_ids, config, on_view=step_callback)
        else:  # a generator per row (``Decoder.row_seeds``)
            run = decoder.start(target, prompt_ids, config, on_view=step_callback,
                                seeds=list(seeds))
    else:
        if limit is None:
            raise UserError("segment_length needs a model with a known context (max_seq_len)")

        def segment(rows: list[list[int]], cfg: SampleConfig, view: ViewCallback | None,
                    row_seeds: list[int] | None = None) -> DecoderRun:
            if row_seeds is None:
                return decoder.start(target, rows, cfg, on_view=view)
            return decoder.start(target, rows, cfg, on_view=view, seeds=row_seeds)

        run = SegmentedRun(
            segment, prompt_ids, config,
            limit=limit, align=facts.block_size or 1, uses_steps=decoder.uses_steps(config),
            mask_id=facts.mask_id,
            eos_id=facts.eos_id, pad_id=facts.pad_id, on_view=step_callback,
            seeds=None if seeds is None else list(seeds),
            # a row leaves the later segments at its stop only where that moves no other row:
            # the batch is exact, and the rows draw from a generator each or draw nothing
            stop_apart=_batch_exact(loaded) and (
                seeds is not None or not draws_noise(decoder.name, config)),
        )
    run.decoder = decoder.name
    if stop is not None:
        from unmask.sampling.stops import StopRows

        rule = StopRows(loaded.tokenizer.decode, stop, run.mask_id, eos_id=facts.eos_id)
        run.stop = rule if rule else None
    return run


def _check_stop_rules(stop: Any, n_rows: int) -> None:
    """``api.start``'s ``stop``: a list of one ``TextEnd`` (or None) a row, whose stop
    sequences are texts as ``generate``'s (``_stops``), else a one-line ``UserError`` (before
    the run is built)."""
    from unmask.sampling.stops import TextEnd

    if isinstance(stop, (str, bytes)) or not isinstance(stop, Sequence) or not all(
            r is None or isinstance(r, TextEnd) for r in stop):
        got = type(stop).__name__
        if isinstance(stop, Sequence) and not isinstance(stop, (str, bytes)):
            got += f" of {', '.join(sorted({type(r).__name__ for r in stop}))}"
        raise UserError("stop= of start takes a list of one unmask.sampling.stops.TextEnd (or "
                        f"None) a row, such as [rule], got {got} (stop texts: generate's stop=)")
    if len(stop) != n_rows:
        raise UserError(f"{plural(len(stop), 'stop rule')} for {plural(n_rows, 'row')}")
    for rule in stop:  # (a text's letters each a stop; "" stopped at the first token)
        if rule is None:
            continue
        if isinstance(rule.stops, str):
            raise UserError(f"TextEnd.stops must be a tuple of texts, got {rule.stops!r}")
        _stops(rule.stops)
        if rule.template is not None and not hasattr(rule.template, "turn_starts"):
            raise UserError("TextEnd.template must be a ChatTemplate (unmask.chat), got "
                            f"{type(rule.template).__name__}")
        if isinstance(rule.ends, (str, bytes)) or not isinstance(rule.ends, Iterable) or any(
                isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in rule.ends):
            raise UserError(f"TextEnd.ends must be a set of token ids, got {rule.ends!r}")


def context_limit(loaded: Loaded, draft: Loaded | None = None) -> tuple[int | None, str]:
    """The longest canvas (prompt + generation) a run of ``loaded`` may use, with ``draft``
    drafting for it: the smaller ``max_seq_len`` of the two (None: unknown), and whose it is
    ("model", or "drafter" when the drafter's is shorter)."""
    facts = facts_of(loaded)
    if draft is not None:
        check_loaded(draft, "draft")
    aux = {} if draft is None else {"drafter_facts": facts_of(draft)}
    return _context(facts, aux)


def _context(facts: ModelFacts, aux: Mapping[str, Any]) -> tuple[int | None, str]:
    """The longest canvas a run may use, the smaller known ``max_seq_len`` of the model and
    its drafter (None: neither known), and whose it is: "model", or "drafter" when its is
    shorter."""
    drafter = aux.get("drafter_facts")
    mine = facts.max_seq_len or None
    theirs = drafter.max_seq_len or None if drafter is not None else None
    if theirs is not None and (mine is None or theirs < mine):
        return theirs, "drafter"
    return mine, "model"


def check_loaded(loaded: Any, name: str = "loaded") -> None:
    """Refuse in one line, naming the argument, what is not a loaded checkpoint (a path, None):
    it failed as an ``AttributeError`` deep inside the task. Anything with the ``model`` and
    ``config`` of ``unmask.loaded.Loaded`` passes."""
    if hasattr(loaded, "model") and hasattr(loaded, "config"):
        return
    if isinstance(loaded, (str, Path)):
        raise UserError(f"{name} must be a checkpoint loaded by unmask.load({str(loaded)!r}), "
                        f"not the path itself")
    raise UserError(f"{name} must be a checkpoint loaded by unmask.load, not "
                    f"{type(loaded).__name__}")


def _check_callback(step_callback: Any) -> None:
    """``step_callback`` None or callable, else one line (it failed after the first step)."""
    if step_callback is not None and not callable(step_callback):
        raise UserError(f"step_callback must be callable (step, view) or None, not "
                        f"{type(step_callback).__name__}")


def _check_repair_calls(max_repair_calls: Any) -> None:
    """``max_repair_calls`` None or a whole number of at least 0 (0: no refill), else one line:
    a text failed as a ``TypeError`` inside the fill, and a fraction or a negative number ran
    as if it were another limit."""
    value = max_repair_calls
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise UserError(f"max_repair_calls must be a whole number >= 0 (0: no refill) or None, "
                        f"got {value!r}")


def _prompt_texts(prompts: Any) -> list[str]:
    """``generate``'s ``prompts`` as a list of texts; anything else is refused in one line
    (token ids are ``start``'s: ``generate(m, [1, 2])`` failed inside the tokenizer)."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (bytes, Mapping)) or not isinstance(prompts, Iterable):
        raise UserError(f"prompts must be a text or a list of texts, not "
                        f"{type(prompts).__name__}")
    texts = list(prompts)
    for p in texts:
        if not isinstance(p, str):
            ids = " (token ids go to api.start)" if isinstance(p, int) else ""
            raise UserError(f"prompts must be texts, got {type(p).__name__}{ids}")
    return texts


def _as_config(loaded: Loaded, config: SampleConfig | Mapping[str, Any] | None, *,
               prompt_lengths: Sequence[int] | None = None, draft: object = None
               ) -> SampleConfig:
    """``config`` of ``start``, ``generate`` and ``chat`` as a ``SampleConfig``: a mapping is
    the options it sets over the checkpoint's recommendation (``sample_config``), None the
    recommendation alone (as ``{}``, and as the CLI and the server with no option given);
    ``draft`` (the run's drafter, or None) as ``sample_config``'s ``drafter``."""
    if config is None or isinstance(config, Mapping):
        return sample_config(loaded, config or {}, prompt_lengths=prompt_lengths,
                             drafter=draft is not None)
    return cast(SampleConfig, _task_config(config))  # not None here: a config, or refused


def _task_config(config: SampleConfig | Mapping[str, Any] | None) -> SampleConfig | None:
    """``config`` of ``infill``, ``edit`` and ``fill_form``: a mapping is the options it
    sets over the dataclass's defaults, as those commands take their flags (no checkpoint
    recommendation: it was measured on free text)."""
    if config is None or isinstance(config, SampleConfig):
        return config
    if not isinstance(config, Mapping):
        raise UserError(
            f"config must be a SampleConfig or a mapping of its options, not "
            f"{type(config).__name__}"
        )
    check_option_names(config)
    # a policy's option set away from its default under another policy: refused as the server
    # refuses it (at its default it is what a config --json reported, sent back: kept)
    moved = [k for k, v in _POLICY_DEFAULTS.items() if config.get(k, v) != v]
    check_policy_options(config.get("policy", SampleConfig.policy), moved)
    return SampleConfig(**config)


_ARGUMENTS = {"stop": "generate and chat", "n": "generate"}
"""What a config is likeliest to be given that is no sampling option but a keyword argument
of the functions (``generate(..., stop=["\\n"], n=3)``), and the functions that take it."""


def check_option_names(given: Iterable[str]) -> None:
    """A ``UserError`` naming the first of ``given`` that is not a ``SampleConfig`` field (a
    sampling option's name misspelt), with the field it is closest to (``gen_lenght``:
    ``gen_length``, as the command line names a misspelt flag; ``max_tokens``, the server's
    and other libraries' name, ``MAX_TOKEN_KEYS``: ``gen_length``), or, for ``stop`` and
    ``n``, the function that takes it as an argument, before anything loads or runs."""
    from unmask.config import MAX_TOKEN_KEYS
    from unmask.names import closest

    names = [f.name for f in dataclasses.fields(SampleConfig)]
    unknown = sorted(set(given) - set(names), key=str)  # (a key of another type: said too)
    if not unknown:
        return
    word = unknown[0]
    plain = word.casefold().replace("-", "_") if isinstance(word, str) else None
    if plain in _ARGUMENTS:
        hint = f"; {plain}= is an argument of {_ARGUMENTS[plain]}, not a config option"
    else:
        near = None if plain is None else (
            "gen_length" if plain in MAX_TOKEN_KEYS else closest(word, names))
        hint = f"; did you mean {near}?" if near else ""
    raise UserError(f"unknown sampling option {word!r}{hint} (the fields of SampleConfig)")


def load_drafter(path: str | Path, *, device: str, dtype: str = "auto") -> Loaded:
    """A drafter checkpoint (``--draft``) on ``device``, in eval mode. ``dtype`` ``auto``
    keeps it as stored: a drafter runs a draft's few positions per forward, where 16 bits
    did not pay (``decode_dtype``); another dtype applies to it."""
    from unmask.checkpoint import load

    out = load(path, device=device, dtype=decode_dtype(dtype, device, None))
    out.model.eval()
    return out


def _as_draft(loaded: Loaded, draft: Loaded | str | Path | None) -> Loaded | None:
    """A drafter given by its path, loaded on the model's device (``load_drafter``); a
    loaded one as it is."""
    if draft is None or not isinstance(draft, (str, Path)):
        if draft is not None:
            check_loaded(draft, "draft")
        return draft
    return load_drafter(draft, device=str(_device(loaded)))


def _as_template(loaded: Loaded, template: ChatTemplate | str | None) -> ChatTemplate | None:
    """A chat template given by name, file or Jinja text (``chat_template``) or as it is."""
    if template is None:
        return None
    from unmask.chat import ChatTemplate  # jinja2: only for a run with a template

    if isinstance(template, ChatTemplate):
        return template
    if not isinstance(template, str):
        raise UserError(f"template must be a ChatTemplate, a built-in name, a file or Jinja "
                        f"text, not {type(template).__name__}")
    try:
        return chat_template(loaded, template)
    except UserError as e:  # the message names the CLI's flag; here it is an argument
        raise UserError(str(e).replace("--template", "template=")) from None


def _check_ids(prompt_ids: Any, loaded: Loaded) -> None:
    """Refuse in one line prompt ids the model has no embedding for (an id from another
    tokenizer, a negative one): they failed inside the embedding."""
    from unmask.canvas import as_rows

    vocab = getattr(loaded.config, "vocab_size", None)
    if not isinstance(vocab, int):
        return
    rows = as_rows(prompt_ids)
    if not rows:
        raise UserError("no prompts given")
    for row in rows:
        bad = [int(i) for i in row if not 0 <= int(i) < vocab]
        if bad:
            raise UserError(
                f"prompt id {bad[0]} is outside the model's vocabulary (0..{vocab - 1})")


def _check_fits(
    prompt_ids: Any, config: SampleConfig, limit: int | None, who: str = "model",
    block_model: Any = None, segments: bool = True, facts: ModelFacts | None = None,
    decoder: str | None = None, names: Sequence[str] | None = None,
) -> None:
    """Refuse, in one line that names ``segment_length``, a prompt + ``gen_length`` longer
    than the context of ``who`` (the model, or its drafter; the decoders refuse it too,
    without the way out). With ``block_model`` (a block-diffusion model run by its block
    decoder), the room is counted in whole blocks as that decoder lays out its canvas
    (``unmask.sampling.blocks.room_after_prompt``), so the length offered is one it takes;
    ``segments`` False (a continuous decoder: one fixed canvas) offers no segments.
    ``facts`` and ``decoder`` (the checkpoint's and the run's decoder): a prompt takes
    ``facts.prompt_columns`` columns, so an empty one counts 1 where the decoder gives it a
    start token (``ModelFacts.starts_empty_prompts``: the causal decoders, the commit loop and
    bd3lm, ``unmask.sampling.loop.start_empty_prompts``), and the refusal says why
    (``START_TOKEN_NOTE``, one note for every decoder). The refusal speaks of the longest
    prompt; with ``names`` (one a row: "prompt 2 of 3"), of the first that does not fit, and
    of how many others do not; its ``gen_length`` offered is the whole batch's either way."""
    from unmask.canvas import as_rows
    from unmask.sampling.blocks import absolute_blocks, room_after_prompt
    from unmask.sampling.loop import START_TOKEN_NOTE

    rows = as_rows(prompt_ids)
    text = max(len(r) for r in rows)
    if limit is None:
        return
    columns = [len(r) for r in rows]
    if facts is not None and decoder is not None:
        columns = [facts.prompt_columns(len(r), decoder) for r in rows]
    longest = max(columns)
    started = longest > text  # every prompt empty: the start token is the longest
    block = getattr(getattr(block_model, "config", None), "block_size", None)

    def room_after(length: int) -> int:
        room = room_after_prompt(length, limit, block_size=block,
                                 absolute=block_model is not None and absolute_blocks(block_model))
        assert room is not None  # limit is known
        return room

    room = room_after(longest)  # the batch's: the longest prompt's
    if config.gen_length <= room:
        return
    blocks = f" in whole blocks of {block}" if block else ""
    if started:
        blocks += f" ({START_TOKEN_NOTE})"
    named, more = f"prompt ({plural(longest, 'token')})", ""
    if names is not None:
        over = [k for k, c in enumerate(columns) if room_after(c) < config.gen_length]
        named = f"{names[over[0]]} ({plural(columns[over[0]], 'token')})"
        if len(over) > 1:
            top = max(over, key=lambda k: columns[k])  # the first of the longest
            more = (f", as {'do' if len(over) > 2 else 'does'} "
                    f"{plural(len(over) - 1, 'other prompt')}")
            if top != over[0]:
                more += f" (the longest: {names[top]}, {plural(columns[top], 'token')})"
    ways = [f"gen_length <= {room}"] if room > 0 else []
    if longest and not started:
        ways.append("shorter prompts" if more else "a shorter prompt")
    if segments:
        ways.append(f"segment_length (e.g. {limit // 2}) to write it in segments that each see "
                    "the latest text")
    way_out = ways[-1] if len(ways) == 1 else (
        f"{', '.join(ways[:-1])}{',' if len(ways) > 2 else ''} or {ways[-1]}")
    raise UserError(
        f"{named} + gen_length ({config.gen_length}) exceeds the {who}'s max_seq_len "
        f"({limit}){blocks}{more}; use {way_out}"
    )


def check_prompts_fit(loaded: Loaded, prompt_ids: list[list[int]], config: SampleConfig,
                      decoder: str, draft: Loaded | None = None,
                      names: Sequence[str] | None = None) -> None:
    """``generate``'s prompts checked against the context as ``start`` checks a run's rows
    (``_check_fits``), but naming the first prompt that does not fit, ``names[k]`` for
    prompt k (default "prompt k+1 of N"; ``unmask generate`` names a prompt file's line),
    and how many others do not, where there are several prompts (a batch's refusal named
    only the longest's length, which does not say which line of a prompt file to shorten);
    the ``gen_length`` it offers fits them all. One prompt, or ``segment_length`` (segments
    take any length): nothing to check here (``start`` checks it)."""
    from unmask.sampling.continuous import CONTINUOUS_DECODERS

    if config.segment_length is not None or len(prompt_ids) < 2:
        return
    if names is None:
        names = [f"prompt {k + 1} of {len(prompt_ids)}" for k in range(len(prompt_ids))]
    limit, who = context_limit(loaded, draft)
    _check_fits(prompt_ids, config, limit, who,
                block_model=loaded.model if decoder == "bd3lm" else None,
                segments=decoder not in CONTINUOUS_DECODERS, facts=facts_of(loaded),
                decoder=decoder, names=names)


def decoding_model(loaded: Loaded, config: SampleConfig | None) -> Any:
    """The model a run under ``config`` calls: ``loaded.model``, or with ``config.compile``
    its twin compiled for decoding (``unmask.parallel.compile_for_decoding``), made by the
    first such run and kept on the model, so later runs and server requests reuse it. A mode
    the model cannot run is refused in one line, before any model call."""
    if config is None or config.compile == "off":
        return loaded.model
    from unmask.parallel import compile_for_decoding

    return compile_for_decoding(loaded.model, config.compile)


def choose(
    loaded: Loaded,
    config: SampleConfig | Mapping[str, Any] | None,
    *,
    draft: Loaded | None = None,
) -> str:
    """The name of the decoder ``start`` runs for ``config`` on ``loaded`` (with ``draft``:
    ``speculative``); raises ``UserError`` for a combination the checkpoint cannot do
    (``choose_decoder``). ``config`` as ``start`` takes it: a mapping is the options it sets
    over the checkpoint's recommendation."""
    from unmask.sampling import choose_decoder

    check_loaded(loaded)
    config = _as_config(loaded, config, draft=draft)
    if draft is not None:
        check_loaded(draft, "draft")
    facts = facts_of(loaded)
    name = choose_decoder(facts, _with_draft(config, draft)).name
    _check_choice(facts, config, name)
    draft_aux(loaded, draft)  # a drafter that cannot draft for this checkpoint fails now
    return name


def _check_choice(facts: ModelFacts, config: SampleConfig, name: str) -> None:
    """What ``choose_decoder`` lets through but no run can use, refused in one line: a
    token decoder on a continuous-diffusion checkpoint (its model wants a noise level; the
    llada loop would fail in the model, or sample a latent autoencoder as if it were a mask
    predictor), ``guide_words`` off the continuous decoders and ``predraft`` off ``hybrid``,
    the only decoders that read them, ``draft_length`` and ``draft_threshold`` off
    ``speculative`` and ``hybrid``, ``draft_steps`` and ``draft_cache`` off ``speculative``
    (its drafter's), ``sedd_sampler`` off ``sedd``, and
    repetition penalties off the decoders that have no logits to penalise
    (``unmask.sampling.penalties``)."""
    from unmask.sampling.continuous import CONTINUOUS_DECODERS
    from unmask.sampling.registry import check_penalty_decoder
    from unmask.sampling.segments import check_segments

    check_segments(name, config)
    own = facts.default_decoder
    if own in CONTINUOUS_DECODERS and name != own:
        raise UserError(
            f"decoder {name!r} cannot sample a checkpoint of objective {facts.objective} "
            f"(continuous diffusion); use decoder {own!r}"
        )
    if config.guide_words is not None and name not in CONTINUOUS_DECODERS:
        raise UserError(
            f"guide_words steer the continuous decoders ({', '.join(CONTINUOUS_DECODERS)}), "
            f"not decoder {name!r}"
        )
    check_penalty_decoder(name, config)
    if name != "sedd" and config.sedd_sampler != SampleConfig.sedd_sampler:
        raise UserError(f"sedd_sampler applies to decoder 'sedd', not to decoder {name!r}")
    given = [f for f in ("draft_length", "draft_threshold")
             if getattr(config, f) != getattr(SampleConfig, f)]  # fmt: skip
    if given and name not in ("speculative", "hybrid"):
        raise UserError(
            f"{given[0]} applies to decoder 'speculative' (with a drafter) and to a "
            f"checkpoint trained with objective hybrid, not to decoder {name!r}"
        )
    given = [f for f in ("draft_steps", "draft_cache")
             if getattr(config, f) != getattr(SampleConfig, f)]  # fmt: skip
    if given and name != "speculative":
        raise UserError(
            f"{given[0]} applies to the drafter of decoder 'speculative' (a causal model "
            f"given a drafter), not to decoder {name!r}"
        )
    if config.predraft != SampleConfig.predraft and name != "hybrid":
        raise UserError(
            f"predraft applies to a checkpoint trained with objective hybrid (decoder "
            f"'hybrid'), not to decoder {name!r}"
        )


def _with_draft(config: SampleConfig, draft: Loaded | Literal[True] | None) -> SampleConfig:
    """``config`` for a run with a drafter (True: one to load): decoder ``speculative``
    (``auto`` means it), any other decoder refused in one line; unchanged without one."""
    if draft is None:
        return config
    if config.decoder not in ("auto", "speculative"):
        raise UserError(f"a drafter applies to decoder 'speculative', not {config.decoder!r}")
    return dataclasses.replace(config, decoder="speculative")


def draft_aux(loaded: Loaded, draft: Loaded | None) -> dict[str, Any]:
    """``Target.aux`` for a run with ``draft``: the drafter, its facts and the ids the two
    tokenizers share (``shared_vocabulary``: one tokenizer, up to appended special tokens
    such as FIM's); refuses in one line a drafter that cannot draft for ``loaded``
    (``check_drafter``). Empty without a drafter."""
    if draft is None:
        return {}
    from unmask.sampling.continuous import CONTINUOUS_DECODERS
    from unmask.sampling.speculative import check_drafter, shared_vocabulary

    if facts_of(draft).default_decoder in CONTINUOUS_DECODERS:
        raise UserError(
            f"the drafter's objective is {facts_of(draft).objective} (continuous diffusion); "
            "speculative decoding drafts with a masked-diffusion model (mdlm, sft, bd3lm)"
        )
    shared = None
    if loaded.tokenizer is not None and draft.tokenizer is not None:
        shared = shared_vocabulary(loaded.tokenizer, draft.tokenizer)
    facts = check_drafter(loaded.model, draft.model, facts_of(draft), shared)
    return {"drafter": draft.model, "drafter_facts": facts, "shared_vocab": shared}


def sample_config(loaded: Loaded, given: Mapping[str, Any] | None = None, *,
                  prompt_lengths: Sequence[int] | None = None,
                  drafter: bool = False) -> SampleConfig:
    """The sampling options of a command-line run: what the user ``given`` explicitly, and
    for every other option the checkpoint's recommendation (``ModelConfig.sample_defaults``,
    measured per objective: ``benchmarks/defaults.py``), else the ``SampleConfig`` default.

    ``steps`` not given (nor recommended) is one step per generated token (``gen_length``):
    the setting the recommendations were measured at, which ``unmask demo``, the server and
    ``distill`` use too. The dataclass's fixed 64 would spend 4 steps per token at
    ``--gen-length 16`` and commit 3 tokens per step at 200, where the demo model repeats
    itself. A latent model's ``gen_length`` not given is its window (``latent_window``).

    A recommended ``block_length`` that does not divide the run (``gen_length`` and each
    segment of ``segment_length``; ``steps`` into whole blocks for the scheduled policy, and
    for a dynamic one at least a step a block, as it takes) becomes the largest block length
    below it that does, or one block; a ``block_length``
    the user gave is never changed. The recommended penalties are left out for a decoder
    that applies none (``Decoder.penalties``: a new decoder, SEDD, the continuous ones), and
    the recommended ``confidence`` measure where the user's ``remasking`` is not
    ``low_confidence`` (another remasking replaces the measure; the pair is refused only
    when the user gave both). ``given`` None is ``{}``: the recommendation alone.

    A recommended option the run's decoder has no use for (``_inapplicable``: ``block_length``
    or ``steps`` on a causal model, ``top_k`` on a diffusion one) is left out, as the user
    never sent it: the decoder refused every run that did not override it ("leave it out").

    ``prompt_lengths`` (the prompts' token counts, as encoded) matters to a checkpoint whose
    blocks start at the first prompt token (LLaDA 2.x, ``block_align='absolute'``): there the
    blocks a run spans depend on the prompt, and ``steps`` not given nor recommended (one per
    token) become the most at or below that which split over them (at least a step a block),
    as the scheduled ``llada`` policy needs, rather than a refusal of steps the user never
    chose (``fit_block_steps``).

    ``drafter``: the run has a drafter (decoder ``speculative``), for the decoder that a
    refusal here names.
    """
    check_loaded(loaded)
    given = {} if given is None else given
    if not isinstance(given, Mapping):
        raise UserError(f"given must be a mapping of SampleConfig options (a dict), not "
                        f"{type(given).__name__}")
    check_option_names(given)
    facts = facts_of(loaded)
    recommended = {k: v for k, v in facts.sample_defaults.items() if k not in given}
    decoder = facts.decoder_for(given.get("decoder"))
    for name in _inapplicable(decoder, recommended):  # recommended for another decoder
        recommended.pop(name)
    if given.get("remasking", "low_confidence") != "low_confidence":
        recommended.pop("confidence", None)  # the measure ranks under low_confidence only
    window = getattr(loaded.config, "latent_window", None)  # a latent model writes whole windows
    if window is not None and "gen_length" not in given:
        recommended["gen_length"] = window
    per_token = "steps" not in given and "steps" not in recommended
    if per_token:
        length = given.get("gen_length", recommended.get("gen_length", SampleConfig.gen_length))
        recommended["steps"] = length
    config = SampleConfig(**{**recommended, **given})
    from unmask.sampling import DECODERS, choose_decoder
    from unmask.sampling.registry import option_given

    if decoder in DECODERS and any(option_given(config, n, given) != option_given(config, n)
                                   for n in ("steps", "block_length")):
        # steps typed at the dataclass's 64 are as typed as any other count: refused in
        # ``choose_decoder``'s order (a decoder the checkpoint cannot run named first)
        choose_decoder(facts, _with_draft(config, True if drafter else None), given)
    if per_token and prompt_lengths is not None:
        config = fit_block_steps(loaded, config, prompt_lengths)
    block = recommended.get("block_length")
    if block is not None:
        dynamic = config.policy != "llada"
        from unmask.sampling.segments import segment_lengths

        n, G = config.segment_length, config.gen_length
        lengths = {G} if n is None else set(segment_lengths(G, n))
        fits = [b for b in range(min(block, *lengths), 0, -1)
                if all(length % b == 0 for length in lengths)
                and (config.steps >= max(length // b for length in lengths) if dynamic
                     else config.steps % (config.gen_length // b) == 0)]
        config = dataclasses.replace(config, block_length=fits[0] if fits else None)
    runs = facts.decoder_for(config.decoder)
    if runs in ("llada", "bd3lm"):  # the others refuse them all (Decoder.unused)
        check_policy_options(config.policy, given, runs)
    return config


def fit_block_steps(loaded: Loaded, config: SampleConfig,
                    prompt_lengths: Sequence[int]) -> SampleConfig:
    """``config`` with its ``steps`` rounded down to a multiple of the blocks its run spans
    (at least one a block) where the checkpoint's blocks start at the first prompt token
    (``absolute_blocks``), its decoder is ``bd3lm`` and its policy the scheduled ``llada``
    (a dynamic one spreads any steps); else as it is. Prompts that the decoder refuses
    together (unequal lengths modulo the block size), or none: as it is, for its refusal."""
    from unmask.sampling.blocks import absolute_blocks

    facts = facts_of(loaded)
    runs = facts.decoder_for(config.decoder)
    bs = facts.block_size
    if (runs != "bd3lm" or not bs or not absolute_blocks(loaded.config)
            or config.policy != "llada" or not prompt_lengths):
        return config
    tails = {facts.prompt_columns(n, runs) % bs for n in prompt_lengths}
    if len(tails) > 1 or config.gen_length <= 0:
        return config
    first_new = bs - tails.pop()  # as ``blocks.plan_blocks`` counts them
    blocks = 1 + -(-max(config.gen_length - first_new, 0) // bs)
    steps = max(blocks, config.steps - config.steps % blocks)
    return dataclasses.replace(config, steps=steps)


def block_tail(loaded: Loaded, prompt_len: int, decoder: str) -> int | None:
    """How far into its last block a prompt of ``prompt_len`` tokens ends under ``decoder``
    (its columns, ``ModelFacts.prompt_columns``, modulo the block size) where the
    checkpoint's blocks start at the first prompt token (``absolute_blocks``, LLaDA 2.x):
    the prompts of one run must share it (``block_groups``; the server's whole-batch runs,
    ``Job.block_tail``). None where blocks start after the prompt (any lengths batch)."""
    from unmask.sampling.blocks import absolute_blocks

    facts = facts_of(loaded)
    if not facts.block_size or not absolute_blocks(loaded.config):
        return None
    return facts.prompt_columns(prompt_len, decoder) % facts.block_size


def block_groups(
    loaded: Loaded, prompts: Sequence[Sequence[int]], config: SampleConfig, decoder: str, *,
    fit_steps: bool,
) -> list[tuple[list[int], SampleConfig]]:
    """The prompts' (token ids) indices in the batches a run of ``decoder`` (``choose``) under
    ``config`` takes, each with its config: one batch of ``config``, but where the
    checkpoint's blocks start at the first prompt token (``absolute_blocks``, LLaDA 2.x),
    whose decoder refuses a batch of unequal lengths modulo the block size, one per prompt
    length modulo it, ``steps`` fitted to its blocks where ``fit_steps`` (the user chose
    none: ``fit_block_steps``, as each prompt alone fits them), else the caller's ``steps``
    checked against every group's blocks before any group decodes (``_check_group_steps``).
    ``generate`` and ``unmask.tasks.score.decode_each`` (``unmask eval``, lm-eval) decode
    by it."""
    facts = facts_of(loaded)
    tails = [block_tail(loaded, len(p), decoder) for p in prompts]
    if not prompts or tails[0] is None:  # blocks after the prompt: any lengths batch
        return [(list(range(len(prompts))), config)]
    groups: dict[int | None, list[int]] = {}
    for i, tail in enumerate(tails):
        groups.setdefault(tail, []).append(i)
    if not fit_steps and len(groups) > 1:
        _check_group_steps(config, facts.decoder_for(decoder), cast(int, facts.block_size),
                           cast(list[int], sorted(groups)))
    return [(idx, fit_block_steps(loaded, config, [len(prompts[idx[0]])]) if fit_steps
             else config) for idx in groups.values()]


def _check_group_steps(config: SampleConfig, decoder: str, block: int, tails: list[int]) -> None:
    """Refuse, once and before any group decodes, the caller's ``steps`` where a group of
    prompts ending ``tails`` tokens into a block of ``block`` would refuse them: the scheduled
    ``llada`` policy needs a multiple of each group's blocks (the answer names multiples of
    their lcm, which fit every group), a dynamic one at least the most blocks. Each group
    alone named only the steps that fit it, and a later one refused after earlier ones ran."""
    from unmask.messages import nearest_multiples
    from unmask.sampling.policies import make_policy

    if decoder != "bd3lm" or config.gen_length <= 0 or config.steps <= 0:
        return  # no blocks, or a refusal every group makes alike
    counts = sorted({1 + -(-max(config.gen_length - (block - t), 0) // block) for t in tails})
    if len(counts) < 2:
        return
    span = (f"the {config.gen_length} new tokens span after prompts of each length modulo "
            f"{block} ({' or '.join(map(str, counts))}: this model's blocks start at the "
            f"first prompt token)")
    if make_policy(config).dynamic:
        if config.steps < counts[-1]:
            raise UserError(f"steps ({config.steps}) must be at least the number of blocks "
                            f"{span}: each block takes a step; try steps {counts[-1]}")
        return
    if any(config.steps % c for c in counts):
        raise UserError(f"steps ({config.steps}) must be a multiple of the number of blocks "
                        f"{span}; try {nearest_multiples(config.steps, math.lcm(*counts))}")


def prompt_lengths(loaded: Loaded, prompts: str | Sequence[str], *,
                   template: ChatTemplate | str | None = None,
                   system: str | None = None) -> list[int]:
    """The token counts of ``prompts`` as ``generate`` encodes them (through ``template``,
    after ``system``): what ``sample_config``'s ``prompt_lengths`` takes, so that a command
    line run fits its steps to the blocks as ``generate`` given a mapping does."""
    return [len(i) for i in prompt_ids(loaded, prompts, template=template, system=system)]


def prompt_ids(loaded: Loaded, prompts: str | Sequence[str], *,
               template: ChatTemplate | str | None = None,
               system: str | None = None) -> list[list[int]]:
    """The ids ``generate`` decodes ``prompts`` from (through ``template``, after ``system``),
    one list per prompt: a raw prompt after the checkpoint's BOS where it records one
    (``ModelFacts.prompt_ids``), ``[MASK]`` a blank. What ``start`` takes to decode a text
    prompt as ``generate`` does: ``api.start(m, api.prompt_ids(m, "Hi"), ...)``."""
    check_loaded(loaded)
    return _encode_prompts(loaded, _prompt_texts(prompts), _as_template(loaded, template),
                           system)


def _encode_prompts(loaded: Loaded, texts: Sequence[str], template: ChatTemplate | None,
                    system: str | None) -> list[list[int]]:
    """The ids of ``texts``, each one user message after ``system`` through ``template``
    where given, else the text encoded (``encode_prompt``)."""
    tok = loaded.tokenizer
    if system is not None and not isinstance(system, str):  # was blamed on messages[0]
        raise UserError(f"system must be a str (the system message) or None, not "
                        f"{type(system).__name__}")
    if template is not None:
        head = [{"role": "system", "content": system}] if system is not None else []
        return [template.prompt(tok, [*head, {"role": "user", "content": p}])[1] for p in texts]
    if system is not None:
        if getattr(loaded.config, "chat_template", None):
            way = "template=api.chat_template(m) for the model's own, or a name (plain, default)"
        else:  # api.chat_template(m) would refuse it, in the CLI's words
            way = (f'template="plain" (a User:/Assistant: transcript; {loaded.shown} has no '
                   'chat template of its own), template="default"')
        raise UserError(f"system needs a chat template (without one each prompt is raw text): "
                        f"pass {way}, a file or Jinja text")
    facts = facts_of(loaded)
    return [encode_prompt(tok, p, facts=facts) for p in texts]


def recommended_options(loaded: Loaded, decoder: str | None = None) -> dict[str, Any]:
    """The checkpoint's recommended sampling options (``ModelConfig.sample_defaults``) that
    decoder ``decoder`` takes (``auto``: the checkpoint's own; None: the one a run that names
    none runs, ``ModelFacts.decoder_for``, the recommended one where there is one), as
    ``sample_config`` applies them: those it has no use for left out (``_inapplicable``).
    What a listing of the recommendation (the server's ``GET /v1/models``) can show."""
    facts = facts_of(loaded)
    name = facts.decoder_for(decoder)
    dropped = set(_inapplicable(name, facts.sample_defaults))
    return {k: v for k, v in facts.sample_defaults.items() if k not in dropped}


def _inapplicable(decoder: str, recommended: Mapping[str, Any]) -> list[str]:
    """The options of ``recommended`` (a checkpoint's ``sample_defaults``) that decoder
    ``decoder`` refuses as options it has no use for, which ``sample_config`` leaves out: its
    ``Decoder.unused`` (a causal model's ``steps``, ``block_length`` and commit-loop options;
    SEDD's ``temperature``), the penalties for a decoder that applies none
    (``Decoder.penalties``), ``top_k`` and ``top_p`` for one that samples no single token's
    distribution (``refuse_top_k``: not a causal decoder) and ``cfg_scale`` for a causal one
    (``check_causal``). An unknown decoder: none (``choose_decoder`` reports it)."""
    from unmask.sampling.penalties import PENALTY_FIELDS
    from unmask.sampling.registry import DECODERS

    known = DECODERS.get(decoder)
    if known is None:
        return []
    causal = decoder in CAUSAL_DECODERS
    out = {*known.unused, *(() if known.penalties else PENALTY_FIELDS),
           *(("cfg_scale",) if causal else ("top_k", "top_p"))}
    return [name for name in recommended if name in out]


def check_policy_options(policy: str, given: Iterable[str], decoder: str | None = None) -> None:
    """A ``UserError`` for an option ``given`` that only another commit policy than
    ``policy`` reads: it would do nothing (``decoder``, when known, is named)."""
    run = "this run's policy is" if decoder is None else f"decoder {decoder!r} runs policy"
    for option, owner in _POLICY_OPTIONS.items():
        if option in given and policy != owner:
            raise UserError(f"{option} is an option of policy {owner!r}; {run} {policy!r}")


_POLICY_OPTIONS = {"threshold": "threshold", "factor": "factor", "entropy_bound": "entropy"}
"""Options that only one commit policy reads: given with another, they would do nothing."""
_POLICY_DEFAULTS = {k: getattr(SampleConfig, k) for k in _POLICY_OPTIONS}


@dataclass
class Generation:
    """What ``generate`` returns: one entry per row in each list (prompt k's choice j is
    row ``k * n + j``)."""

    texts: list[str]
    """The continuation (a reply, with a chat template), cut at EOS."""
    ids: list[list[int]]
    """Generated ids (the generation region, EOS and after included)."""
    prompts: list[str]
    """Each prompt as it ended: a ``[MASK]`` written in it shows what it became."""
    prompt_ids: list[list[int]]
    nfe: int
    steps: int
    seconds: float
    decoder: str
    """The decoder that ran (``choose_decoder``)."""
    result: GenerateResult | None = field(default=None, repr=False)
    """The decoder's own result (canvas, region, history)."""
    ends: frozenset[int] = frozenset()
    """The ids that end a row: EOS, and with a chat template its end-of-turn markers
    (``ChatTemplate.ends``); empty: the result's EOS."""
    config: SampleConfig | None = field(default=None, repr=False)
    """The options that ran, ``decoder`` named: a mapping's with the checkpoint's
    recommendation filled in, as ``unmask generate --json`` reports them (None: built by
    hand). But for the seed: a sampled run given no ``seed`` drew from torch's global
    generator and its ``seed`` stays None (``--json`` reports the seed the command drew,
    ``with_seed``); give ``config`` a ``seed`` to log a run that can be repeated. Prompts
    decoded in groups (``block_groups``: LLaDA 2.x) whose steps were fitted to each group's
    blocks: the options of the group that took the most steps; ``configs`` has each row's."""
    configs: list[SampleConfig] | None = field(default=None, repr=False)
    """Each row's options as it ran (``config``'s, but for prompts decoded in groups whose
    steps were fitted to each group's own blocks, ``block_groups``); None: built by hand."""
    row_tokens: list[int] | None = field(default=None, repr=False)
    """With ``stop`` or a template: each row's ids through the one that ended its text."""
    copies: frozenset[int] = frozenset()
    """The rows that took an identical row's text without being decoded (a run that draws
    nothing decodes identical rows once: ``row_runs``; ``--n 8`` of a greedy run)."""

    @property
    def n_tokens(self) -> int:
        """The ids returned: each row's up to and including the first id that ends it (EOS,
        or a chat template's end of turn; all of a row without one), for every decoder
        alike, so the padding a causal decoder writes after EOS, or the EOS a diffusion
        decoder fills the rest of the canvas with, is not counted. With ``stop`` or a chat
        template, a row cut at a stop sequence or a turn marker counts through its last
        token (``row_tokens``, the server's count), the same whether or not the run stopped
        there. Every row counts, a copy too (``copies``): the server's ``completion_tokens``
        for the same request. What the run decoded is ``decoded_tokens``."""
        return sum(self._row_counts())

    @property
    def decoded_tokens(self) -> int:
        """``n_tokens`` less the rows that took an identical row's text without being
        decoded (``copies``): the work the model did, which ``tokens_per_s`` counts (``--n 3``
        of a greedy run decodes one row)."""
        return sum(c for k, c in enumerate(self._row_counts()) if k not in self.copies)

    def _row_counts(self) -> list[int]:
        """Each row's count of ``n_tokens``."""
        if self.row_tokens is not None:
            return list(self.row_tokens)
        eos = getattr(self.result, "eos_id", None)
        ends = self.ends or frozenset({eos} if eos is not None else ())
        return [next((k + 1 for k, i in enumerate(r) if i in ends), len(r)) for r in self.ids]

    @property
    def tokens_per_s(self) -> float:
        """``decoded_tokens`` over ``seconds``."""
        n = self.decoded_tokens
        return n / self.seconds if self.seconds > 0 else float("inf")


def run_to_end(run: DecoderRun, *, device: str | None = None) -> tuple[GenerateResult, float]:
    """``run.run()`` and its wall time (CUDA synchronised, so the time is the device's)."""
    import torch

    t0 = time.perf_counter()
    result = run.run()
    if device is not None and device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - t0


DETERMINISTIC_AT_ZERO = ("llada", "bd3lm", "ar", "speculative", "hybrid")
"""Decoders that draw no random number at temperature 0 with ``low_confidence`` remasking
(greedy speculative and hybrid runs accept by argmax): their text then depends on no
generator. The others (SEDD's reverse steps, the continuous decoders' Gaussian start, a
decoder registered later) draw at any temperature."""


def draws_noise(decoder: str | None, config: SampleConfig) -> bool:
    """Whether a run of ``decoder`` under ``config`` draws random numbers, so that its text
    depends on a seed: a ``temperature`` above 0, ``remasking`` random (a checkpoint may
    recommend it), or a decoder not in ``DETERMINISTIC_AT_ZERO``. ``decoder`` None is the
    commit loop (the infill tasks). The one rule of the CLI (``with_seed``), ``generate``
    (``row_seeds``) and the server."""
    return (config.temperature > 0 or config.remasking == "random"
            or (decoder is not None and decoder not in DETERMINISTIC_AT_ZERO))


def with_seed(config: SampleConfig, decoder: str | None = None) -> SampleConfig:
    """``config`` with a drawn ``seed`` (below 2**31) where none is set and the run draws
    random numbers (``draws_noise``), so that the seed that reproduces the run can be
    reported (``--json``'s ``config.seed``, the server's ``seed``); a run that draws nothing
    keeps None (it needs none)."""
    import secrets

    if config.seed is not None or not draws_noise(decoder, config):
        return config
    return dataclasses.replace(config, seed=secrets.randbelow(2**31))


def row_seeds(seed: int | None, prompts: int, n: int) -> list[int] | None:
    """The seed of every row of ``prompts`` prompts with ``n`` choices each, prompt-major
    (prompt k's choice j is row ``k * n + j``); None without a seed. Choice j of every prompt
    gets ``seed + j`` (as vLLM seeds the choices of ``n``; wrapping past ``MAX_SEED``), so a
    prompt's choices are the same alone or in a list of prompts, and choice 0 is what ``n`` 1
    writes. ``generate``, ``unmask generate`` and the server seed their rows by this."""
    from unmask.config import MAX_SEED

    if seed is None:
        return None
    return [(seed + j) % (MAX_SEED + 1) for _ in range(prompts) for j in range(n)]


def _check_n(n: Any) -> int:
    """``generate``'s ``n``: a whole number of at least 1 (a bool is refused), else one line."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise UserError(f"n must be a whole number of choices per prompt, not {n!r}")
    if n < 1:
        raise UserError(f"n must be at least 1, got {n}")
    return n


def generate(
    loaded: Loaded,
    prompts: str | Sequence[str],
    *,
    config: SampleConfig | Mapping[str, Any] | None = None,
    n: int = 1,
    template: ChatTemplate | str | None = None,
    system: str | None = None,
    step_callback: ViewCallback | None = None,
    draft: Loaded | str | Path | None = None,
    stop: str | Sequence[str] | None = None,
) -> Generation:
    """Continue each prompt with ``config.gen_length`` tokens (fewer when a decoder stops at
    EOS) by the checkpoint's decoder (``start``), ``n`` times: the rows of the result are
    prompt-major (prompt k's choice j is row ``k * n + j``), as the server's choices.

    With a ``config.seed`` and a run that draws random numbers (``draws_noise``) and more
    than one row, every row is a run of its own seeded ``row_seeds`` (choice j of a prompt:
    ``seed + j``), so a prompt writes the same text alone or beside others, and the same as
    the server for the same request; the runs share each forward pass where the decoder
    can (``step_together``), else run one after another; a decoder with a generator per row
    (every built-in one in float32, in segments too: ``seeds_in_one_run``) runs them as
    one batch, each row drawing from its own. Otherwise the rows are one batch of one run
    (a greedy run's text depends on no generator), but for a row the decoder keeps apart (a
    prompt of [MASK]s alone, a [MASK] in a prompt under a KV cache: ``Decoder.rows_apart``),
    which runs alone, so that every row writes what it writes alone (identical such rows
    of a greedy run once: ``row_runs``; the server groups rows by the same rule).
    On a checkpoint whose blocks start at the first prompt token (LLaDA 2.x), where one
    run needs prompts of equal lengths modulo the block size, the prompts are decoded in
    groups of equal ones, one after another (``block_groups``, as ``unmask eval`` decodes
    them): each still writes what it writes alone, ``steps`` not chosen (a mapping or None
    without them) fitted to its own group's blocks (``fit_block_steps``); a
    ``SampleConfig``'s steps that a group's blocks cannot take are refused before any runs.

    With ``template`` each prompt is one user message (after ``system``, if given) rendered
    through the chat template, and ``texts`` are the replies (cut at EOS or end of turn).
    ``draft``: a diffusion drafter for a causal checkpoint (``start``). ``config``: a
    ``SampleConfig``, or a mapping of options over the checkpoint's recommendation
    (``start``; None: the recommendation alone, as ``unmask generate`` with no flags);
    ``template``: a ``ChatTemplate`` or a name, file or Jinja text (``chat_template``).
    ``stop``: a text or a list of texts; each row's text ends before the earliest-starting
    one found in it, as after EOS (with a template, in the reply as decoded, before it is
    stripped: ``chat``); the server's ``stop`` rule (``unmask.chat.text_end``). A stop ends the
    decoding too, once the text is sure to be cut there (``start``'s ``stop``): ``ids`` hold
    what was decoded (after the stop, the fill a row ended by EOS holds) and ``n_tokens``
    counts through the stop's last token, as the server's usage.

    Prompts × ``n`` rows whose memory cannot fit what the device has free are a one-line
    ``UserError`` before any row is made (``check_rows_fit``; ``UNMASK_NO_FIT_CHECK=1``
    skips it), not a process the system kills.
    """
    check_loaded(loaded)
    texts_in = _prompt_texts(prompts)
    n = _check_n(n)
    stops = _stops(stop)
    options = config  # a mapping (or None) is fitted to the prompts below
    config, template = _as_config(loaded, config, draft=draft), _as_template(loaded, template)
    if not texts_in:
        raise UserError("no prompts given")
    draft = _as_draft(loaded, draft)  # a path loads once, not once per row
    tok = loaded.tokenizer
    prompt_ids = _encode_prompts(loaded, texts_in, template, system)
    if options is None or isinstance(options, Mapping):  # steps one per token: whole blocks
        config = _as_config(loaded, options, prompt_lengths=[len(i) for i in prompt_ids])
    from unmask.sampling import choose_decoder
    from unmask.sampling.penalties import exempting

    # the decoder's name decides the seeding (``start`` checks the combination, per run)
    facts = facts_of(loaded)
    chosen = choose_decoder(facts, _with_draft(config, draft))
    decoder = chosen.name
    _check_choice(facts, _with_draft(config, draft), decoder)  # before the rows' memory
    check_prompts_fit(loaded, prompt_ids, config, decoder, draft)  # naming the prompt
    check_rows_fit(loaded, [len(i) for i in prompt_ids], config, n, str(_device(loaded)),
                   decoder, draft, row_runs(loaded, prompt_ids, config, seeded=False,
                                            draft=draft).apart)  # before a row is made
    # the user chose no steps: each group's fitted to its blocks, as each prompt alone
    fit_steps = (options is None or isinstance(options, Mapping)) and not any(
        "steps" in m for m in (options or {}, facts.sample_defaults))
    groups = block_groups(loaded, prompt_ids, config, decoder, fit_steps=fit_steps)
    rows = [ids for ids in prompt_ids for _ in range(n)]
    texts_in = [p for p in texts_in for _ in range(n)]
    seeds = None
    if len(rows) > 1 and draws_noise(decoder, config):
        seeds = row_seeds(config.seed, len(prompt_ids), n)
    same = row_runs(loaded, rows, config, seeded=seeds is not None, draft=draft).same
    ends = template.ends(tok, facts.eos_id) if template is not None else frozenset()
    # a stop sequence ends the work too, not only the text (``start``'s ``stop``), and so
    # does a chat template's turn marker (with or without stops: as ``chat`` and the server)
    text_ends = None if not stops and template is None else (
        [_text_end(tok, stops, ends, template, facts.eos_id)] * len(rows))
    # the options each group ran, as reported (one group runs ``config``)
    ran = [dataclasses.replace(cfg if len(groups) > 1 else config, decoder=decoder)
           for _, cfg in groups]  # fmt: skip
    group_of = {k: g for g, (idx, _) in enumerate(groups) for k in idx}  # prompt: its group
    configs = [ran[group_of[k]] for k in range(len(prompt_ids)) for _ in range(n)]
    if len(groups) == 1:  # a turn's end is never penalised (``exempting``)
        result, seconds = run_rows(loaded, rows, exempting(config, ends, facts.eos_id), seeds,
                                   step_callback, draft, text_ends)
    else:  # prompt k's choices are rows k * n to k * n + n - 1
        groups = [([k * n + j for k in idx for j in range(n)],
                   exempting(cfg, ends, facts.eos_id)) for idx, cfg in groups]
        result, seconds = _run_groups(loaded, rows, groups, seeds, step_callback, draft,
                                      text_ends)
    if template is not None:
        texts = [template.reply(tok, ids, facts.eos_id, stops) for ids in result.gen_ids]
    else:
        texts = [cut_text(t, stops) for t in result.texts(tok)]
    row_tokens = None
    if text_ends is not None:
        from unmask.sampling.stops import tokens_ended

        row_tokens = [tokens_ended(tok, ids, e) for ids, e in zip(result.gen_ids, text_ends,
                                                                 strict=True)]
    ended = _ended_prompts(rows, result, facts.mask_id)
    shown = [
        tok.decode(ids) if ids != given else text
        for ids, given, text in zip(ended, rows, texts_in, strict=True)
    ]
    return Generation(
        texts=texts,
        ids=result.gen_ids,
        prompts=shown,
        prompt_ids=ended,
        nfe=result.nfe,
        steps=result.steps,
        seconds=seconds,
        decoder=decoder,
        result=result,
        ends=ends,
        config=max(ran, key=lambda c: c.steps),  # the first of the most steps
        configs=configs,
        row_tokens=row_tokens,
        copies=frozenset(i for i, j in enumerate(same) if i != j),  # decoded once (run_rows)
    )


def _run_groups(
    loaded: Loaded, rows: list[list[int]], groups: list[tuple[list[int], SampleConfig]],
    seeds: list[int] | None, step_callback: ViewCallback | None, draft: Loaded | None,
    stop: Sequence[TextEnd | None] | None = None,
) -> tuple[GenerateResult, float]:
    """``rows`` (prompt ids) decoded in ``groups`` (``block_groups``: row indices, each with
    its config), one ``run_rows`` after another, row i seeded ``seeds[i]``, joined as one
    result in the rows' order (``_joined``), and the wall time. ``step_callback`` sees all
    rows, (B, gen_length): those of a group yet to run are still ``[MASK]``."""
    import torch

    facts = facts_of(loaded)
    view = None if step_callback is None else torch.full(
        (len(rows), groups[0][1].gen_length), facts.mask_id)  # (B, G)

    def group_view(idx: list[int]) -> ViewCallback | None:
        if step_callback is None:
            return None

        def seen(step: int, part: Tensor) -> None:
            view[idx] = part.to(view.device)
            step_callback(step, view.clone())

        return seen

    results, seconds = [], 0.0
    for idx, cfg in groups:
        part = None if seeds is None else [seeds[i] for i in idx]
        result, took = run_rows(loaded, [rows[i] for i in idx], cfg, part, group_view(idx),
                                draft, None if stop is None else [stop[i] for i in idx])
        results.append(result)
        seconds += took
    joined = _joined(results, sum(r.nfe for r in results), max(r.steps for r in results),
                     pad_id=facts.pad_id, eos_id=facts.eos_id)
    at = {i: k for k, i in enumerate(i for idx, _ in groups for i in idx)}  # row: joined row
    index = torch.tensor([at[i] for i in range(len(rows))])  # (B,)
    mask = joined.attention_mask
    return dataclasses.replace(joined, tokens=joined.tokens[index],
                               attention_mask=None if mask is None else mask[index]), seconds


def _stops(stop: Any) -> list[str]:
    """``stop`` of ``generate`` and ``chat`` as a list: None (none), a text, or a list of
    texts, none empty; else one line."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if isinstance(stops, (bytes, Mapping)) or not isinstance(stops, Iterable):
        raise UserError(f"stop must be a text or a list of texts, not {type(stop).__name__}")
    stops = list(stops)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise UserError(f"stop sequences must be texts of at least one character, got {s!r}")
    return stops


def _text_end(tokenizer: Any, stops: Sequence[str], ends: frozenset[int],
                template: ChatTemplate | None, eos_id: int | None) -> TextEnd:
    """The ``TextEnd`` of a row of ``generate`` or ``chat`` (``start``'s ``stop``): its stop
    sequences, and with a chat template the ids that end a reply and the template as
    ``ChatTemplate.reply`` cuts it, so a run stops where the text is sure to be cut."""
    from unmask.sampling.stops import TextEnd

    knowing = None if template is None else template._knowing(tokenizer)
    return TextEnd(tuple(stops), frozenset(ends) | ({eos_id} - {None}), knowing)


def _check_seed(seed: Any) -> int:
    """A seed of ``start(..., seeds=)``: a whole number (not a bool), else one line; its
    range is ``SampleConfig.seed``'s."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"seeds must be whole numbers, not {seed!r}")
    return seed


def _seed_list(seeds: Any) -> list[int]:
    """``seeds`` of ``start`` and ``run_rows`` as a list: a sequence of seeds, one a row, else
    one line (a lone ``seeds=1`` failed as a ``TypeError`` inside, at ``len(seeds)``)."""
    if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Iterable):
        one = f" (one row: seeds=[{seeds}])" if type(seeds) is int else ""
        raise UserError(f"seeds must be a list of whole numbers, one a row, not "
                        f"{type(seeds).__name__}{one}")
    return list(seeds)


def seeds_in_one_run(
    loaded: Loaded, config: SampleConfig | Mapping[str, Any] | None,
    draft: Loaded | str | Path | None = None, *, rows: Sequence[Sequence[int]] | None = None,
) -> bool:
    """Whether rows seeded one seed each run as one batched run (``start(..., seeds=)``): the
    decoder ``config`` chooses gives each row a generator of its own under ``config``
    (``Decoder.takes_seeds``: every built-in decoder, but the commit loop under a registered
    policy or score; in segments too: each segment one batched run, row i's segments seeded
    as alone), and the weights decode in float32 or float64: in bfloat16 or float16 (or
    quantised) a prompt left-padded beside longer ones rounds otherwise than alone, and near
    ties then sample other tokens, so each seeded row stays a run of its own there.
    With ``rows`` (their prompt ids), whether those rows may share a run, with each other and
    with other rows of ``config`` (the server's seeded jobs share runs): not where the commit
    loop has a prompt of [MASK]s alone, or a [MASK] in a prompt under a KV cache
    (``unmask.sampling.loop.rows_apart``: there a batch is not what each row writes alone).
    Otherwise each seeded row is a run of its own (``generate``, the server). False for a
    combination ``start`` refuses (it says why when run)."""
    from unmask.sampling import choose_decoder

    try:
        config = _with_draft(_as_config(loaded, config, draft=draft), _as_draft(loaded, draft))
        decoder = choose_decoder(facts_of(loaded), config)
    except UserError:
        return False
    exact = _batch_exact(loaded)
    if rows is not None:
        return exact and decoder.takes_seeds(config, rows, facts_of(loaded).mask_id)
    return decoder.takes_seeds(config) and exact


def run_rows(
    loaded: Loaded,
    rows: list[list[int]],
    config: SampleConfig,
    seeds: list[int] | None,
    step_callback: ViewCallback | None = None,
    draft: Loaded | None = None,
    stop: Sequence[TextEnd | None] | None = None,
) -> tuple[GenerateResult, float]:
    """``rows`` (prompt ids) under ``config``, row i seeded ``seeds[i]``, and the wall time
    (``generate``; ``unmask.tasks.score.decode_each``): one batched run with a generator per
    row where the decoder has one (``seeds_in_one_run``), else several runs joined as one
    result (``_runs_apart``: a row the decoder keeps apart, a prompt of [MASK]s alone or a
    [MASK] in a prompt under a KV cache, runs alone and the others still share one run; in
    half precision or under a registered commit policy, a run per row). ``step_callback``
    sees all rows, (B, gen_length). Each row writes what it writes alone under its seed,
    whichever way: ``config.seed`` is not used, ``seeds`` (one a row) replace it. ``seeds``
    None: one batch of one run (``config.seed``; a greedy run's text depends on no
    generator), but for the rows the decoder keeps apart, which run alone (``row_runs``:
    greedy, identical ones once), so that every greedy row writes what it writes alone. No
    rows, or a count of ``seeds`` other than of ``rows``: a ``UserError``. ``stop``: each
    row's ``TextEnd`` (``start``)."""
    if not rows:
        raise UserError("no prompts given")
    if seeds is None:
        plan = row_runs(loaded, rows, config, seeded=False, draft=draft)
        if len(rows) > 1 and (any(plan.apart) or plan.same != list(range(len(rows)))):
            # such a row, or the rows beside it, wrote otherwise than alone in one batch; an
            # identical row of a greedy run is decoded once (``row_runs``)
            return _runs_apart(loaded, rows, config, None, step_callback, draft, plan, stop)
        run = start(loaded, rows, config, step_callback=step_callback, draft=draft, stop=stop)
        return run_to_end(run, device=str(_device(loaded)))
    seeds = _seed_list(seeds)
    if len(seeds) != len(rows):
        raise UserError(f"{plural(len(seeds), 'seed')} for {plural(len(rows), 'row')}")

    if seeds_in_one_run(loaded, config, draft, rows=rows):
        run = start(loaded, rows, config, step_callback=step_callback, draft=draft, seeds=seeds,
                    stop=stop)
        return run_to_end(run, device=str(_device(loaded)))
    return _runs_apart(loaded, rows, config, seeds, step_callback, draft, stop=stop)


def _runs_apart(
    loaded: Loaded,
    rows: list[list[int]],
    config: SampleConfig,
    seeds: list[int] | None,
    step_callback: ViewCallback | None,
    draft: Loaded | None,
    plan: RowRuns | None = None,
    stop: Sequence[TextEnd | None] | None = None,
) -> tuple[GenerateResult, float]:
    """``rows`` in several runs, joined as one result (``_joined``), and the wall time, as
    ``row_runs`` groups them (``plan``, where the caller has it already): each row the
    decoder keeps apart (``Decoder.rows_apart``) a run of its own (once for all its
    identical rows where the run draws nothing); the others one run (``seeds`` None:
    ``generate``'s greedy rows; seeded: where they may share one, ``seeds_in_one_run`` of
    them, with a generator each), else a run each (seeded ``seeds[i]``). Runs of a row each
    that share forward passes (``llada`` without a KV cache) and are not kept apart step
    together, one forward per step for all of them (as the server's continuous batching
    steps them); the others run one after another. ``step_callback`` sees all rows, (B,
    gen_length)."""
    import torch

    from unmask.sampling.protocol import step_together

    facts = facts_of(loaded)
    groups, apart, same = plan or row_runs(loaded, rows, config, seeded=seeds is not None,
                                           draft=draft)
    together: set[int] = set()  # the groups that step together (a callback once a step)
    copies = [i for i, j in enumerate(same) if i != j]

    def group_view(k: int, idx: list[int]) -> ViewCallback | None:
        if step_callback is None:
            return None

        def seen(step: int, part: Tensor) -> None:
            view[idx] = part.to(view.device)
            if copies:
                view[copies] = view[[same[i] for i in copies]]
            if k not in together:  # its run's own step (a count over runs one after
                step_callback(step, view.clone())  # another passed the steps); else below

        return seen

    def run_of(k: int, idx: list[int]) -> DecoderRun:
        part, where = [rows[i] for i in idx], group_view(k, idx)
        ends = None if stop is None else [stop[i] for i in idx]
        if seeds is None:
            return start(loaded, part, config, step_callback=where, draft=draft, stop=ends)
        if len(idx) > 1:
            return start(loaded, part, config, step_callback=where, draft=draft,
                         seeds=[seeds[i] for i in idx], stop=ends)
        return start(loaded, part, dataclasses.replace(config, seed=seeds[idx[0]]),
                     step_callback=where, draft=draft, stop=ends)

    runs = [run_of(k, idx) for k, idx in enumerate(groups)]
    # after ``start`` checked the lengths: a gen_length no run can take was a traceback here;
    # and only for a callback to see (8 MB a row at gen_length 10**6 otherwise)
    view = None if step_callback is None else torch.full(
        (len(rows), config.gen_length), facts.mask_id)  # (B, G)
    # a row kept apart (its exact ties round otherwise in a shared forward) runs alone
    together.update(k for k, (r, idx) in enumerate(zip(runs, groups, strict=True))
                    if r.shares_forward and not apart[idx[0]])
    if len(together) < 2:
        together.clear()
    device = str(_device(loaded))
    t0 = time.perf_counter()
    results: dict[int, GenerateResult] = {}
    forwards = 0
    for k, r in enumerate(runs):
        if k not in together:
            results[k] = r.run()
            forwards += results[k].nfe
    stepped = 0  # the steps of the runs that step together
    while not all(runs[k].done for k in together):
        forwards += step_together([runs[k] for k in sorted(together)]) > 0
        stepped += 1
        if step_callback is not None:
            step_callback(stepped, view.clone())
    results.update((k, runs[k].result()) for k in together)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    ordered = [results[k] for k in range(len(runs))]
    steps = max(r.steps for r in ordered)  # the server's count, whether or not together
    joined = _joined(ordered, forwards, steps, pad_id=facts.pad_id, eos_id=facts.eos_id)
    at = {i: n for n, i in enumerate(i for idx in groups for i in idx)}  # row: joined row
    back = [at[j] for j in same]
    if back == list(range(len(back))):
        return joined, seconds
    index = torch.tensor(back)  # (B,): a copy's row repeats the row it copies
    mask = joined.attention_mask
    return dataclasses.replace(joined, tokens=joined.tokens[index],
                               attention_mask=None if mask is None else mask[index]), seconds


def row_runs(
    loaded: Loaded, rows: Sequence[Sequence[int]], config: SampleConfig, *, seeded: bool,
    draft: Loaded | None = None,
) -> RowRuns:
    """How ``rows`` (prompt ids) of one request run under ``config`` (``RowRuns``): each
    row the decoder keeps apart (``Decoder.rows_apart``: a prompt of [MASK]s alone, a
    [MASK] in a prompt under a KV cache) a run of its own, the others one run where they
    may share one (``seeded``, a seed a row: ``seeds_in_one_run`` of them; else always),
    else a run each. Where the run draws nothing (``draws_noise``, not ``seeded``), identical
    rows run once, their copies taking its text: the same text (a greedy run is
    deterministic, and a row of a batch writes what it writes alone) at one row's cost
    (``--n 8`` of a greedy run: one row decoded, not eight; of a prompt of [MASK]s: one
    run). The one rule of ``generate``, ``run_rows``, the server's ``Engine`` (which
    decodes the copies of a request without a row kept apart all the same) and
    ``unmask.tasks.score``."""
    from unmask.sampling import choose_decoder
    from unmask.sampling.protocol import RowRuns

    facts = facts_of(loaded)
    chosen = choose_decoder(facts, _with_draft(config, draft))
    apart = chosen.rows_apart(config, rows, facts.mask_id)
    same = list(range(len(rows)))
    if not seeded and not draws_noise(chosen.name, config):
        first: dict[tuple[int, ...], int] = {}
        for i, row in enumerate(rows):
            same[i] = first.setdefault(tuple(row), i)
    rest = [i for i, a in enumerate(apart) if not a and same[i] == i]
    shared = len(rest) > 1 and (not seeded or seeds_in_one_run(
        loaded, config, draft, rows=[rows[i] for i in rest]))
    alone = [[i] for i, a in enumerate(apart) if a and same[i] == i]
    return RowRuns(([rest] if shared else [[i] for i in rest]) + alone, apart, same)


_WHOLE_CANVAS = ("llada", "bd3lm", "sedd", "embed-diffusion", "latent-diffusion")
"""The decoders whose forward runs over the whole canvas (a segment of it, with
``segment_length``) and returns its logits, (B, L, V): ``bd3lm``'s last block sees the prompt
and every block before it, and its cache keeps logits as wide (``sampling.cache``)."""


def rows_bytes(loaded: Any, lengths: list[int], config: SampleConfig, n: int,
               decoder: str = "llada", *, rows_at_once: str = "batch") -> int:
    """A lower bound of the memory that ``n`` texts of each prompt (``lengths``: the prompts'
    token counts) take under ``decoder``: every row's canvas (int64 ids, and the result's
    list of them), and, per row of one forward, the larger of

    - one layer's activations over the positions the forward runs on (its input and output,
      keys and values, the MLP's two hidden projections; the prompt, for the decoders that
      read fewer columns than the canvas), and
    - the logits over the positions the decoder reads, in the weights' dtype (2 bytes a
      value below float32; SEDD's scores in float32): the whole canvas, or its segment, for
      ``llada``, ``bd3lm``, ``sedd`` and the continuous decoders, the next position for
      ``ar``, the draft columns for ``speculative`` and ``hybrid``; and the commit loop's
      float64 work on the block's columns (``llada``, ``bd3lm``): the Gumbel-perturbed
      logits when sampling and the cast and softmax of ``low_confidence``, or, when
      sampling, the noise it draws over every logit (``add_gumbel_noise``), the larger.

    ``rows_at_once``: ``"batch"``, every row in one forward and one step; ``"together"``,
    one forward over every row and each row's step (its float64 work) in turn (seeded rows
    in half precision, ``llada`` without a cache: ``unmask.api.run_rows``); ``"each"``, one
    row's forward at a time (other seeded rows there).

    Measured on the demo model (V 4096, 65 positions; --n 200 and 400, fp32 greedy and
    sampling, bf16 sampling) it is 54-98% of the peak memory the rows add; 96-99% for greedy
    runs over a 50k vocabulary; far less for ``"each"`` and ``ar`` (review rm30)."""
    cfg = loaded.config
    width = max(lengths) + config.gen_length  # a row's canvas, left-padded to the longest
    rows = len(lengths) * n
    dtype = (weights_dtype(loaded) or "").split(" + ")[0]  # None: a stand-in, no parameters
    value = 4 if dtype in ("fp32", "float64") else 2
    vocab = getattr(cfg, "vocab_size", 0)  # a stand-in model's config may lack sizes
    seen = min(width, config.segment_length or width)  # the positions a forward runs on
    heads = getattr(cfg, "n_kv_heads", None) or getattr(cfg, "n_heads", 0)
    ffn = getattr(cfg, "ffn_hidden", 0) if not getattr(cfg, "n_experts", 0) else 0
    hidden = 2 * getattr(cfg, "d_model", 0) + 2 * heads * getattr(cfg, "head_dim", 0) + 2 * ffn
    sampling = config.temperature > 0
    if decoder in _WHOLE_CANVAS:
        read = seen
    elif decoder in ("speculative", "hybrid"):
        read = config.draft_length or getattr(cfg, "draft_block", None) or 1
    else:  # ar, or a registered decoder: the next position
        read = 1
    # the others' first forward runs on the prompt, later ones on the columns they read
    layer = (seen if decoder in _WHOLE_CANVAS else min(seen, max(max(lengths), read))
             ) * hidden * value
    if decoder == "sedd":
        value = 4  # its scores in float32 (``.float()``)
    logits = read * vocab * value
    if decoder in ("llada", "bd3lm"):  # the first block's columns
        block = config.block_length or (getattr(cfg, "block_size", None)
                                        if decoder == "bd3lm" else None) or config.gen_length
        window = min(block, config.gen_length, seen) * vocab * 8
        work = (window if sampling else 0) + (
            2 * window if config.remasking == "low_confidence" else 0)
        noise = seen * vocab * 8 + window if sampling else 0
        own = max(work, noise)  # the step's, after the forward
    else:
        own = 0
    canvases = rows * width * 16
    if rows_at_once == "each":
        return canvases + max(layer, logits + own)
    if rows_at_once == "together":
        return canvases + max(rows * layer, rows * logits + own)
    return canvases + rows * max(layer, logits + own)


FIT_MARGIN = 0.8
"""``check_rows_fit`` refuses only where this share of the rows' bound is more than the free
memory: the bound came within 1-4% of the measured need of greedy runs on a 50k vocabulary
(review rm30), so a later change that frees one of its buffers sooner must not start refusing
runs that fit."""


def check_rows_fit(loaded: Loaded, lengths: list[int], config: SampleConfig, n: int,
                   device: str, decoder: str, draft: Loaded | None = None,
                   apart: list[bool] | None = None, *, count: str = "n={}") -> None:
    """Refuse, in one line, prompts × ``n`` rows whose memory (``rows_bytes``, a lower
    bound; ``FIT_MARGIN`` of it) exceeds what ``device`` has free, before any row is made:
    ``generate(..., n=1000000000)`` and ``unmask generate --n 1000000000`` were killed by the
    system (status 137, no message) after filling the memory. ``lengths``: the prompts' token
    counts; ``decoder``: the one that runs (``choose``). ``apart``: per prompt, whether its
    rows run alone (``row_runs``: a prompt of [MASK]s, a [MASK] under a KV cache), one
    forward of one row at a time beside the others' runs (None: none). Seeded rows of a run
    that draws (``config.seed`` set, ``draws_noise``) run as ``run_rows`` runs them; without
    a seed they are one batch. A length the model's context cannot take, or where one row
    alone would not fit, is left to the library's own checks, which name the length, not the
    count (``gen_length=100000``: the model's max_seq_len; ``gen_length=10**23,
    segment_length=16``: at most 1048576 tokens). ``count``: how the message names the
    count (``"--n {}"`` on the command line).
    ``UNMASK_NO_FIT_CHECK=1`` skips it, as it skips the check of the weights at load
    (``unmask.quantize.check_fits``). ``generate`` checks it; ``unmask generate`` calls it
    first, before its notes."""
    from unmask.quantize import SKIP_ENV, free_bytes, memory_refusal

    if os.environ.get(SKIP_ENV) == "1":
        return
    limit, _ = context_limit(loaded, draft)
    if (config.segment_length is None and limit is not None
            and max(*lengths, 1) + config.gen_length > limit):  # '' starts with a token
        return  # the length is at fault: the decoder's check names it
    if (config.seed is None or not draws_noise(decoder, config)
            or seeds_in_one_run(loaded, config, draft)):
        at_once = "batch"  # one run of every row
    elif decoder == "llada" and config.cache == "none":
        at_once = "together"  # runs of a row each, stepped with one forward
    else:
        at_once = "each"  # runs of a row each, one after another
    flags = apart if apart is not None and len(lengths) * n > 1 else [False] * len(lengths)
    rest = [length for length, a in zip(lengths, flags, strict=True) if not a]
    alone = [length for length, a in zip(lengths, flags, strict=True) if a]

    def need_of(rows: int) -> int:  # the others' runs, and those alone (their canvases and
        # one row's forward: a bound above the larger of the two forwards, never below)
        return ((rows_bytes(loaded, rest, config, rows, decoder, rows_at_once=at_once)
                 if rest else 0)
                + (rows_bytes(loaded, alone, config, rows, decoder, rows_at_once="each")
                   if alone else 0))

    need = need_of(n)
    free = free_bytes(device)
    if free is None or need * FIT_MARGIN <= free:
        return
    if rows_bytes(loaded, [max(lengths)], config, 1, decoder) * FIT_MARGIN > free:
        return  # one row alone: its length is at fault, which the decoder's checks name
    one = need_of(1)
    each = need_of(2) - one  # per n
    most = int((free / FIT_MARGIN - (one - each)) // each)  # the most it lets run: more cannot
    fewer = (f"more than {count.format(most)} cannot fit" if most >= 1
             else "give fewer prompts")
    if most >= 1 and len(lengths) > 1:
        fewer += " (or give fewer prompts)"
    raise memory_refusal(
        f"{count.format(n)} × {plural(len(lengths), 'prompt')} ({len(lengths) * n:,} rows)",
        need, free, device, fewer, bound="at least")


def _joined(results: list[GenerateResult], nfe: int, steps: int, *,
            pad_id: int | None, eos_id: int | None = None) -> GenerateResult:
    """One result of the rows of ``results`` (runs of a row each, of one decoder): canvases
    left-padded to the longest prompt (padding masked out in ``attention_mask``), the
    generation regions aligned and as wide as the widest (a row that ended early, a
    ``bd3lm`` run stopped at EOS before its last block, is right-padded with ``eos_id`` as
    a batch writes its finished rows), ``nfe`` the forward passes they took (shared ones
    once), ``steps`` the steps (the most of any row's run: what the server reports, the
    depth of the batch rather than the work, which ``nfe`` counts). A decoder's own result
    class keeps its counts, summed over the runs (the drafts and acceptances of
    ``speculative`` and ``hybrid``: ``acceptance_stats``); ``runs`` keeps each run's own
    result (what each decoded, without the padding that aligns them)."""
    import torch

    from unmask.sampling.protocol import GenerateResult

    head = max(r.region[0] for r in results)
    width = max(r.region[1] - r.region[0] for r in results)
    tail = max(r.tokens.shape[1] - r.region[0] for r in results)  # >= width
    fill = 0 if pad_id is None else pad_id
    tokens, masks = [], []
    for r in results:
        left, right = head - r.region[0], tail - (r.tokens.shape[1] - r.region[0])
        row = torch.nn.functional.pad(r.tokens, (left, right), value=fill)  # (1, head + tail)
        short = head + r.region[1] - r.region[0]  # where this row's generation ended
        if short < head + width:  # ended early: EOS to the common width, as a batch pads
            row[:, short : head + width] = fill if eos_id is None else eos_id
        tokens.append(row)
        real = (torch.ones_like(r.tokens, dtype=torch.bool) if r.attention_mask is None
                else r.attention_mask.bool())
        real = torch.nn.functional.pad(real, (left, right), value=False)
        real[:, short : head + width] = True  # the EOS padding is the row's text
        masks.append(real)
    mask = torch.cat(masks)  # (B, L)
    base = {f.name for f in dataclasses.fields(GenerateResult)}
    own = {  # the counts of a subclass (SpeculativeResult): sums over the rows' runs
        f.name: sum(getattr(r, f.name) for r in results)
        for f in dataclasses.fields(results[0])
        if f.name not in base and f.type in (int, "int")
    }
    return dataclasses.replace(
        results[0], tokens=torch.cat(tokens), region=(head, head + width), nfe=nfe,
        steps=steps, history=None, segments=None, runs=results, ended_at=None,
        attention_mask=None if bool(mask.all()) else mask, **own,  # ``ended_at``: each run's
    )


def encode_prompt(
    tokenizer: Any, text: str, infill: str = "unmask infill (api.infill)", *,
    facts: ModelFacts | None = None,
) -> list[int]:
    """Ids of a generate prompt: plain text (``tokenizer.encode``), except that the mask
    token's own string (``[MASK]``) is a blank: the mask id, which the decoder fills. With a
    tokenizer whose words carry their leading space, a space right before a blank is left
    to the blank's token. A gap of the infill syntax is refused, pointing to ``infill``
    (the server names its endpoint). ``facts``: the checkpoint's (``facts_of``), whose raw
    prompts begin with its BOS where it records one (``ModelFacts.prompt_ids``); without it,
    the text alone (no BOS: not what ``generate`` decodes on a published model; ``prompt_ids``
    takes the loaded checkpoint and gives that). Every raw prompt ``generate``, the CLI, the
    server and ``unmask eval`` decode is encoded here."""
    ids = _encode_text(tokenizer, text, infill)
    return ids if facts is None else facts.prompt_ids(ids)


def _encode_text(tokenizer: Any, text: str, infill: str) -> list[int]:
    """``encode_prompt`` without the checkpoint's BOS."""
    if not isinstance(text, str):  # the regex below failed with a TypeError
        raise UserError(f"a prompt must be a str, not {type(text).__name__}")
    hf = getattr(tokenizer, "hf", None)
    mask_id = getattr(tokenizer, "mask_id", None)
    mask = hf.id_to_token(mask_id) if hf is not None and mask_id is not None else None
    if mask and mask.endswith("]"):
        gap = re.search(re.escape(mask[:-1]) + r":[^\]]*\]", text)
        if gap is not None:  # infill's syntax would stay literal text here
            raise UserError(
                f"{gap.group(0)} is a gap of the infill syntax; a prompt fills a bare {mask} "
                f"(one token each): use {infill}, or write {mask} per token")
    if not mask or mask not in text:
        return tokenizer.encode(text)
    from unmask.infill.template import joins_spaces

    # A BPE word token carries its leading space (" High"): the space before a blank is
    # left to the blank, as infill gaps take it (docs/infill.md), or the text doubles it.
    take_space = joins_spaces(tokenizer)
    pieces = text.split(mask)
    ids: list[int] = []
    for k, piece in enumerate(pieces):
        if k:
            ids.append(mask_id)
        if take_space and k < len(pieces) - 1 and piece.endswith(" "):
            piece = piece[:-1]
        if piece:
            ids.extend(tokenizer.encode(piece))
    return ids


def _ended_prompts(given: list[list[int]], result: GenerateResult, mask_id: int) -> list[list[int]]:
    """The prompts as the run left them: its canvas where a prompt held ``[MASK]``, else the
    prompt as given (an AR run may have put a start token in front of an empty one)."""
    out = []
    for i, ids in enumerate(given):
        if mask_id in ids:
            row = result.prompt_ids[i]
            out.append(row[len(row) - len(ids) :] if ids else [])
        else:
            out.append(list(ids))
    return out


def _device(loaded: Loaded) -> Any:
    from unmask.sampling.protocol import model_device

    return model_device(loaded.model) or "cpu"


def chat_template(loaded: Loaded, template: str | None = None) -> ChatTemplate:
    """The chat template of ``loaded`` (``config.chat_template``), or ``template`` (a
    ``--template`` value: a file, a Jinja string or a built-in name, ``unmask.chat.template_arg``)
    when given, with the model's BOS/EOS strings. A model without one is a one-line
    ``UserError`` naming the ways out: silently chatting with a base model misleads."""
    from unmask.chat import ChatTemplate, template_arg, template_bos_id

    check_loaded(loaded)
    if template is not None and not isinstance(template, str):  # Path(5) failed in template_arg
        raise UserError(f"template must be a built-in name, a file or Jinja text, not "
                        f"{type(template).__name__}")
    cfg, tok = loaded.config, loaded.tokenizer
    if template is not None:
        chosen = template_arg(template)
        source, origin = chosen.source, chosen.origin
    elif getattr(cfg, "chat_template", None):
        source, origin = cfg.chat_template, f"chat template of {loaded.shown}"
    else:
        raise UserError(
            f"{loaded.shown} has no chat template (it was not fine-tuned for chat): fine-tune it "
            "with `unmask train --objective sft`, or pass --template plain (a User:/Assistant: "
            "transcript), --template default or --template FILE"
        )
    return ChatTemplate.with_tokens(
        source, tok, bos_id=template_bos_id(cfg), eos_id=cfg.eos_id, origin=origin
    )


def _own_template(loaded: Loaded) -> ChatTemplate:
    """``chat_template(loaded)``, its way out said as this API's argument (``template=``), not
    as the CLI's flag: a Python caller was told to pass ``--template plain``."""
    try:
        return chat_template(loaded)
    except UserError as e:
        words = (("--template plain", 'template="plain"'),
                 ("--template default", 'template="default"'),
                 ("--template FILE", "template=PATH"))  # fmt: skip
        message = str(e)
        for flag, argument in words:
            message = message.replace(flag, argument)
        raise UserError(message) from None


@dataclass
class Reply:
    """What ``chat`` returns."""

    text: str
    """The assistant's reply."""
    prompt: str
    """The rendered conversation the reply was sampled after."""
    prompt_ids: list[int]
    nfe: int
    steps: int
    seconds: float
    result: GenerateResult | None = field(default=None, repr=False)
    """The decoder's own result (acceptance counts of ``speculative`` / ``hybrid``)."""
    decoder: str = ""
    """The decoder that ran (``choose_decoder``), as ``Generation.decoder``."""
    config: SampleConfig | None = field(default=None, repr=False)
    """The options that ran, as ``Generation.config`` (``unmask chat --json``'s ``config``;
    its ``seed`` None for a sampled run given none, as ``Generation.config``'s)."""


def chat(
    loaded: Loaded,
    messages: Sequence[dict[str, str]],
    *,
    config: SampleConfig | Mapping[str, Any] | None = None,
    template: ChatTemplate | str | None = None,
    step_callback: ViewCallback | None = None,
    draft: Loaded | str | Path | None = None,
    stop: str | Sequence[str] | None = None,
) -> Reply:
    """The assistant's reply to ``messages`` (``role``/``content`` dicts, the last one the
    user's), rendered through ``template`` (default: ``chat_template(loaded)``; a name, file
    or Jinja text too; a content's special-token strings are plain text). ``config`` and
    ``draft`` as ``generate`` takes them (None: the checkpoint's recommendation, as ``unmask
    chat`` and the server use it). ``stop``: the reply ends before the earliest-starting of
    these texts found in it, as ``generate``'s ``stop``, where the server's chat cuts it
    (``unmask.chat.text_end``): looked for in the reply as decoded, after its leading
    whitespace (its trailing whitespace and any text past a turn marker included: ``".\n"``
    ends a reply ``"... x.\n"``), unless the turn marker starts first; the rest is stripped.

    Every message is rendered: unlike ``unmask chat``, which drops the oldest exchanges to fit
    (``unmask.commands.chat.ChatSession.prepare``), a conversation whose prompt and
    ``gen_length`` exceed the context is a one-line ``UserError`` (``segment_length`` writes
    it in segments that each see the latest text)."""
    check_loaded(loaded)
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise UserError(f"messages must be a list of {{role, content}} dicts, not "
                        f"{type(messages).__name__} (a single message goes in a list)")
    stops = _stops(stop)
    options, config = config, _as_config(loaded, config, draft=draft)
    template = _as_template(loaded, template) or _own_template(loaded)
    text, ids = template.prompt(loaded.tokenizer, list(messages))
    if options is None or isinstance(options, Mapping):  # steps one per token: whole blocks
        config = _as_config(loaded, options, prompt_lengths=[len(ids)])
    from unmask.sampling.penalties import exempting

    eos_id = facts_of(loaded).eos_id
    ends = template.ends(loaded.tokenizer, eos_id)  # a turn's end is never penalised
    run = start(loaded, [ids], exempting(config, ends, eos_id), step_callback=step_callback,
                draft=draft, stop=[_text_end(loaded.tokenizer, stops, ends, template, eos_id)])
    result, seconds = run_to_end(run, device=str(_device(loaded)))
    reply = template.reply(loaded.tokenizer, result.gen_ids[0], eos_id, stops)
    return Reply(
        text=reply,
        prompt=text,
        prompt_ids=ids,
        nfe=result.nfe,
        steps=result.steps,
        seconds=seconds,
        result=result,
        decoder=run.decoder,
        config=dataclasses.replace(config, decoder=run.decoder),
    )


@dataclass
class Filled:
    """What ``infill``, ``edit`` and ``fill_form`` return."""

    text: str
    """The filled template, the edited text, or the filled form's JSON."""
    nfe: int
    seconds: float
    detail: Any = field(repr=False)
    """The task's own result (``unmask.infill.InfillResult`` / ``EditResult`` /
    ``FormResult``): gaps, changes, holes, candidates."""


GENERATION_ONLY = (
    "draft_length", "draft_threshold", "draft_steps", "draft_cache", "predraft", "guide_words",
    "guide_scale", "segment_length", "edit_threshold", "max_post_steps", "sedd_sampler",
)  # fmt: skip
"""``SampleConfig`` fields that only the generation decoders read (drafting, the hybrid's
layout, continuous guidance, segments, LLaDA 2's editing pass, SEDD's reverse process: a
SEDD checkpoint's gaps are filled by the commit loop too): ``infill``, ``edit`` and
``fill_form`` refuse them, and a ``decoder`` other than ``auto`` or ``llada`` (they fill
the canvas with the masked-diffusion loop, or left to right on a causal checkpoint)."""


LENGTH_SET_BY = {
    "infill": "the template sets each gap's length ([MASK:n], [MASK:min-max])",
    "edit": "a span is refilled with as many tokens as it held",
    "fill_form": "the holes' types set the lengths (<text:2-8>, <digits:4>)",
}
"""What sets the length of ``infill``, ``edit`` and ``fill_form``'s output, which no
``gen_length`` does: the line that refuses one (``refuse_gen_length``; ``--gen-length`` on
the command line)."""


def refuse_gen_length(config: SampleConfig | Mapping[str, Any] | None, task: str) -> None:
    """One line for a ``gen_length`` the caller set in ``config`` (a mapping of options) on
    ``task`` (a key of ``LENGTH_SET_BY``): it was silently ignored (``{"gen_length": 200}``
    ran and wrote the template's few tokens). A ``SampleConfig`` always holds one (its
    default, or a checkpoint's recommendation), so it is not refused."""
    if isinstance(config, Mapping) and "gen_length" in config:
        raise UserError(f"gen_length does not apply to {task}: {LENGTH_SET_BY[task]}")


def refuse_generation_only(config: SampleConfig | None, task: str, *,
                           own: str | None = None) -> None:
    """One line for a ``GENERATION_ONLY`` option set away from its default on ``task``, which
    would silently ignore it (``unmask infill --draft-length 4`` did). ``own``: the decoder
    the task runs where it is the checkpoint's own (``infill_decoder``): ``sedd`` reads
    ``sedd_sampler`` and may be named as ``decoder``."""
    from unmask.sampling.registry import DEPENDENT_OPTIONS

    if config is None:
        return
    # max_post_steps at its off value without edit_threshold edits nothing, as the default:
    # taken as a plain completion takes it (`fill-form --max-post-steps 0` was refused, the
    # server's /v1/forms took it)
    off = (config.edit_threshold is None
           and config.max_post_steps == DEPENDENT_OPTIONS["max_post_steps"][2])
    for name in GENERATION_ONLY:
        if name == "sedd_sampler" and (config.decoder == "sedd" or own == "sedd"):
            continue  # policy sedd-euler sets both: the decoder line below names what was given
        if name == "max_post_steps" and off:
            continue
        if getattr(config, name) != getattr(SampleConfig, name):  # the field's default
            raise UserError(f"{name} applies to generation (generate, chat, serve), not to {task}")
    if config.decoder not in ("auto", "llada", own):
        raise UserError(f"decoder {config.decoder!r} applies to generation (generate, chat, "
                        f"serve); {task} fills the canvas with its own loop (decoder auto)")


def infill(
    loaded: Loaded,
    template: str | Sequence[str | Gap],
    *,
    config: SampleConfig | Mapping[str, Any] | None = None,
    options: InfillOptions | Mapping[str, Any] | None = None,
    step_callback: StepCallback | None = None,
    max_repair_calls: int | None = None,
) -> Filled:
    """Fill the gaps of ``template`` (text, or parsed segments with their constraints;
    ``unmask.infill.infill``; a causal checkpoint fills its one gap by fill-in-the-middle,
    ``unmask.infill.infill_causal``; an embed-diffusion or time-conditioned SEDD one its
    fixed-length gaps with its own decoder, ``infill_decoder``: a SEDD one runs the steps a
    ``SampleConfig`` holds, its default 64 too, as time steps; a dict without ``steps`` gets at
    most one a mask, as ``unmask infill``). ``options`` is an
    ``unmask.infill.InfillOptions`` (or a dict of its fields); ``step_callback(step, tokens)``
    sees the canvas. ``max_repair_calls``: the most model calls refills of gaps that broke
    their constraint may make (``unmask.infill.fill_plan``; None: no limit; the server
    gives what its ``--max-steps`` leaves)."""
    from unmask.infill import infill as _infill
    from unmask.infill import infill_causal
    from unmask.infill.ordered import fim_width, refuse_loop_options

    check_loaded(loaded)
    _check_callback(step_callback)
    _check_repair_calls(max_repair_calls)
    if not isinstance(template, (str, list, tuple)):  # list(5) failed inside the parser
        raise UserError(f"template must be a text or a list of texts and Gap items, not "
                        f"{type(template).__name__}")
    refuse_gen_length(config, "infill")
    options = _infill_options(options)
    own = infill_decoder(loaded)
    asked, config = config, infill_sample_config(loaded, config)
    t0 = time.perf_counter()
    if own is not None:  # the checkpoint's own decoder: fixed-length gaps, kept context
        from unmask.infill.continuous import OWN_DECODERS, infill_template

        _refuse_length_options(options, f"{OWN_DECODERS[own]} fills fixed-length gaps only "
                               "([MASK:n])")
        # sedd: steps asked for (or recommended) run as given; the default's at most the masks
        cap = not isinstance(asked, SampleConfig) and not any(
            "steps" in m for m in (asked or {}, facts_of(loaded).sample_defaults))
        res = infill_template(decoding_model(loaded, config), loaded.tokenizer, template, config,
                              step_callback=step_callback, decoder=own,
                              cap_steps=cap)  # fmt: skip
        return Filled(text=res.text, nfe=res.nfe, seconds=time.perf_counter() - t0, detail=res)
    refuse_continuous(loaded, "infill")
    if facts_of(loaded).attention == "causal":
        _refuse_length_options(options, "a causal (AR-FIM) model ends its one gap itself "
                               "(EOS, within the gap's bounds)")
        if asked is not None:  # filled left to right: the commit loop's options do nothing
            # (steps and block_length at the gap's width; a SampleConfig's steps: always set)
            refuse_loop_options(facts_of(loaded), asked, None if isinstance(
                asked, SampleConfig) else lambda: fim_width(template))
        res = infill_causal(decoding_model(loaded, config), loaded.tokenizer, template, config,
                            step_callback=step_callback)
    else:
        res = _infill(
            decoding_model(loaded, config),
            loaded.tokenizer,
            template,
            config,
            options=options,
            step_callback=step_callback,
            max_repair_calls=max_repair_calls,
            start_ids=facts_of(loaded).prompt_ids([]),  # a published model's BOS leads
        )
    return Filled(text=res.text, nfe=res.nfe, seconds=time.perf_counter() - t0, detail=res)


def infill_decoder(loaded: Loaded) -> str | None:
    """The decoder ``infill`` runs on ``loaded``: the checkpoint's own where the commit loop
    cannot run it (fixed-length gaps, ``unmask.infill.continuous``): ``"embed-diffusion"``,
    or ``"sedd"`` for an absorbing SEDD checkpoint whose forward needs its noise level
    (``sigma_input: given``, which the commit loop cannot give); or None: the commit loop
    of masked diffusion (another SEDD checkpoint's too) or a causal checkpoint's
    fill-in-the-middle, which draw only when sampled. The one answer for ``infill``,
    ``infill_sample_config``, the CLI's seed (``with_seed``) and the server's route."""
    facts = facts_of(loaded)
    if facts.default_decoder == "embed-diffusion":
        return "embed-diffusion"
    if facts.needs_sigma and facts.default_decoder == "sedd" and facts.sedd_graph == "absorbing":
        return "sedd"
    return None


def infill_sample_config(
    loaded: Loaded, config: SampleConfig | Mapping[str, Any] | None = None
) -> SampleConfig:
    """The sampling options ``infill`` runs for ``config``: a ``SampleConfig`` as given; a
    mapping (or None) the options it sets over the dataclass's defaults, or, where infill runs
    the checkpoint's own decoder (``infill_decoder``: embed-diffusion, a time-conditioned
    SEDD), over the checkpoint's recommendation, as ``generate`` takes it (an embed-diffusion
    one recommends its rounding ``temperature``, measured on that decoder: argmax rounding
    repeats frequent tokens, so it holds for a template's gaps too); ``steps`` not given (nor
    recommended) stays the dataclass's: the template, not ``gen_length``, sets the length (on
    ``sedd`` at most the masks; steps given or recommended run as given). A generation-only
    option is refused in one line (``sedd_sampler`` and decoder ``sedd`` apply where infill
    runs the ``sedd`` decoder). ``unmask infill --json`` reports
    what this returns."""
    own = infill_decoder(loaded)
    if own is not None and (config is None or isinstance(config, Mapping)):
        given = dict(config or {})
        check_option_names(given)
        out = sample_config(loaded, given)
        if "steps" not in given and "steps" not in facts_of(loaded).sample_defaults:
            out = dataclasses.replace(out, steps=SampleConfig.steps)
        if "block_length" not in given:  # generate's blocks: a template is one pass
            out = dataclasses.replace(out, block_length=None)
    else:
        out = _task_config(config) or SampleConfig()
    refuse_generation_only(out, "infill", own=own)
    return out


def _refuse_length_options(options: InfillOptions | None, why: str) -> None:
    """One line for an ``InfillOptions`` field set away from its default where no gap length is
    chosen (``why``): it was silently ignored. ``max_search_calls`` is a limit (the server's
    operator sets it), which a fill that searches nothing keeps."""
    from unmask.config import InfillOptions

    if options is None:
        return
    for f in dataclasses.fields(InfillOptions):
        if f.name != "max_search_calls" and getattr(options, f.name) != f.default:
            raise UserError(f"{f.name} chooses the length of a variable-length gap; {why}, "
                            "so it does not apply")


def _infill_options(options: InfillOptions | Mapping[str, Any] | None) -> InfillOptions | None:
    """``infill``'s ``options``: an ``InfillOptions``, or a mapping of its fields (as ``config``
    takes one); anything else, or an unknown field, is one line."""
    from unmask.config import InfillOptions

    if options is None or isinstance(options, InfillOptions):
        return options
    if not isinstance(options, Mapping):
        raise UserError(f"options must be an InfillOptions or a mapping of its fields, not "
                        f"{type(options).__name__}")
    names = {f.name for f in dataclasses.fields(InfillOptions)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise UserError(f"unknown infill option {unknown[0]!r} (the fields of InfillOptions)")
    return InfillOptions(**options)


def edit_checks(loaded: Loaded) -> None:
    """Refuse, in one line, a checkpoint ``edit`` cannot run on: a continuous-diffusion one,
    or a causal one (its logits at a position predict the next token, not a masked one)."""
    refuse_continuous(loaded, "edit")
    if facts_of(loaded).attention == "causal":
        fim = getattr(loaded.model.config, "has_fim", False)
        raise UserError("edit needs a masked diffusion checkpoint; this one is autoregressive "
                        "(causal): " + ("fill one gap by fill-in-the-middle with infill instead"
                                        if fim else "trained without fill-in-the-middle, it can "
                                        "only continue a prompt"))


def edit(
    loaded: Loaded,
    text: str,
    *,
    spans: Sequence[tuple[int, int]] = (),
    regex: str | None = None,
    lowest: int | None = None,
    rounds: int = 1,
    config: SampleConfig | Mapping[str, Any] | None = None,
    step_callback: StepCallback | None = None,
    confidence_mode: str = "masked",
    max_calls: int | None = None,
) -> Filled:
    """Re-mask character ``spans``, ``regex`` matches or the ``lowest`` k tokens of ``text``
    and refill them (``unmask.infill.edit``; ``rounds`` > 1 revises the least confident
    tokens again, ``unmask.infill.revise``). ``confidence_mode`` (``masked`` / ``visible``):
    how ``lowest`` scores a token. ``max_calls``: the most model calls of the whole edit,
    scoring, steps and refills of every round together (None: no limit; the server gives its
    ``--max-steps``): the steps are capped to fit, rounds share it, and rounds that cannot
    fit a scoring and a step each are a ``CallLimitError`` (``unmask.infill.revise``)."""
    from unmask.infill import edit as _edit
    from unmask.infill import revise

    check_loaded(loaded)
    _check_callback(step_callback)
    if not isinstance(text, str):
        raise UserError(f"text must be a str, not {type(text).__name__}")
    for name, value in (("rounds", rounds), ("lowest", lowest)):
        if (value is not None or name == "rounds") and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise UserError(f"{name} must be an int, not {type(value).__name__}")
    if rounds < 1:  # revise refuses it; spans and regex edited once regardless
        raise UserError(f"rounds must be at least 1, got {rounds}")
    edit_checks(loaded)
    refuse_gen_length(config, "edit")
    config = _task_config(config)
    refuse_generation_only(config, "edit")
    t0 = time.perf_counter()
    if rounds > 1 and (spans or regex is not None):  # revise re-masks the lowest, not these
        raise UserError("rounds > 1 revises the lowest-confidence tokens; spans and regex are "
                        "one round (choose spans/regex or lowest with rounds)")
    if rounds > 1 or (lowest is not None and not spans and regex is None):  # revise, 1 round
        if lowest is None:
            raise UserError("revising over rounds needs lowest (the tokens to re-mask per round)")
        res = revise(
            decoding_model(loaded, config),
            loaded.tokenizer,
            text,
            rounds=rounds,
            lowest=lowest,
            config=config,
            confidence_mode=confidence_mode,
            step_callback=step_callback,
            max_calls=max_calls,
            start_ids=facts_of(loaded).prompt_ids([]),  # a published model's BOS leads
        )
    else:
        res = _edit(
            decoding_model(loaded, config),
            loaded.tokenizer,
            text,
            spans=spans,
            regex=regex,
            lowest=lowest,
            config=config,
            confidence_mode=confidence_mode,
            step_callback=step_callback,
            max_calls=max_calls,
            start_ids=facts_of(loaded).prompt_ids([]),  # a published model's BOS leads
        )
    return Filled(text=res.text, nfe=res.nfe, seconds=time.perf_counter() - t0, detail=res)


def fill_form(
    loaded: Loaded,
    template: str | Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    schema: str | Mapping[str, Any] | None = None,
    config: SampleConfig | Mapping[str, Any] | None = None,
    step_callback: StepCallback | None = None,
    source: str | None = None,
    max_repair_calls: int | None = None,
) -> Filled:
    """Fill a JSON form template with typed holes in one pass (``unmask.infill.fill_form``;
    the result always parses), or, with ``schema``, a JSON document that validates against
    that JSON Schema (``unmask.infill.schema.fill_schema``). Exactly one of the two; the
    template is its JSON text or the parsed value (a dict of holes such as ``"<int:0..9>"``).
    ``source`` names the template or schema in error messages (a file name).
    ``max_repair_calls``: the most model calls a refill of holes that broke their
    constraint may make (``unmask.infill.fill_form``; None: no limit)."""
    from unmask.infill import fill_form as _fill_form
    from unmask.infill.schema import fill_schema

    check_loaded(loaded)
    _check_callback(step_callback)
    _check_repair_calls(max_repair_calls)
    refuse_continuous(loaded, "form filling")
    refuse_gen_length(config, "fill_form")
    asked, config = config, _task_config(config)
    refuse_generation_only(config, "fill_form")
    if (template is None) == (schema is None):
        raise UserError("give a form template or a JSON Schema (exactly one)")
    if asked is not None and facts_of(loaded).attention == "causal":  # filled left to right
        from unmask.infill.fill import _max_seq_len
        from unmask.infill.ordered import refuse_loop_options
        from unmask.infill.schema import form_width

        refuse_loop_options(facts_of(loaded), asked, None if isinstance(
            asked, SampleConfig) else lambda: form_width(  # a SampleConfig's steps: always set
                template if schema is None else schema, loaded.tokenizer,
                source=source or ("form template" if schema is None else "schema"),
                max_seq_len=_max_seq_len(loaded.model), schema=schema is not None))
    t0 = time.perf_counter()
    start = facts_of(loaded).prompt_ids([])  # a published model's BOS leads
    if schema is not None:
        res = fill_schema(decoding_model(loaded, config), loaded.tokenizer, schema, config,
                          step_callback=step_callback, source=source or "schema",
                          max_repair_calls=max_repair_calls, start_ids=start)
    else:
        assert template is not None
        res = _fill_form(decoding_model(loaded, config), loaded.tokenizer, template, config,
                         step_callback=step_callback, source=source or "form template",
                         max_repair_calls=max_repair_calls, start_ids=start)
    return Filled(text=res.text, nfe=res.nfe, seconds=time.perf_counter() - t0, detail=res)


__all__ = [
    "DETERMINISTIC_AT_ZERO",
    "GENERATION_ONLY",
    "LENGTH_SET_BY",
    "Filled",
    "Generation",
    "Reply",
    "chat",
    "chat_template",
    "check_loaded",
    "check_option_names",
    "check_policy_options",
    "check_prompts_fit",
    "check_rows_fit",
    "choose",
    "context_limit",
    "cpu_has_bf16_matmul",
    "decode_dtype",
    "decoding_model",
    "draft_aux",
    "draws_noise",
    "edit",
    "edit_checks",
    "encode_prompt",
    "facts_of",
    "fill_form",
    "block_groups",
    "block_tail",
    "fit_block_steps",
    "generate",
    "infill",
    "infill_decoder",
    "infill_sample_config",
    "load_drafter",
    "load_for_decoding",
    "prompt_ids",
    "prompt_lengths",
    "recommended_options",
    "refuse_continuous",
    "refuse_gen_length",
    "refuse_generation_only",
    "row_runs",
    "rows_bytes",
    "row_seeds",
    "run_rows",
    "run_to_end",
    "sample_config",
    "seeds_in_one_run",
    "start",
    "stop_at",
    "weights_dtype",
    "with_seed",
]
