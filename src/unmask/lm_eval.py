"""lm-evaluation-harness on unmask checkpoints: the model class ``unmask`` and ``run_tasks``.

Importing this module registers ``UnmaskLM`` with lm-eval under the name ``unmask``, so

    import unmask.lm_eval, lm_eval
    lm_eval.simple_evaluate(model="unmask", model_args="pretrained=RUN,mc_samples=64", tasks=[...])

works as for any lm-eval model, and ``unmask eval RUN --tasks ...`` calls ``run_tasks``,
which hands task selection, few-shot, limits, include paths and output paths to lm-eval's
own evaluation, with the Hugging Face Hub and ``datasets`` offline (``offline_hub``: a task's
data is local or cached, never downloaded). The three request types:

- ``loglikelihood``: for a causal (``ar``) checkpoint the exact log-likelihood
  (``unmask.evaluate.ar_loglikelihood``); for a diffusion checkpoint LLaDA's Monte Carlo
  estimate of the ELBO with stratified mask counts (``elbo_loglikelihood``; a block-diffusion
  model's block by block, ``block_elbo_loglikelihood``), the same
  seed for every candidate of a question (common random numbers between candidates of one
  length in tokens), its standard error kept
  in ``estimates``; ``is_greedy`` by greedy decoding through ``unmask.api`` (optional:
  ``greedy_check``; ``run_tasks`` skips it where no task reads it, ``reads_is_greedy``).
- ``loglikelihood_rolling``: lm-eval's rolling windows over the model's context, each
  window scored as above.
- ``generate_until``: ``unmask.api.start`` (the one decoding path: any decoder, policy and
  cache), cut at the first stop sequence, which ends the decoding too (``start``'s ``stop``).

lm-eval is an optional dependency (``pip install lm-eval``; the ``lm-eval`` extra); this
module imports it at the top, so only import it when lm-eval is wanted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own names stay resolvable next to ours)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from unmask.config import MAX_TOKEN_KEYS, SampleConfig
from unmask.errors import UserError
from unmask.evaluate import (
    DEFAULT_MC_SAMPLES,
    LogLikelihood,
    ar_loglikelihood,
    block_elbo_loglikelihood,
    elbo_loglikelihood,
    untimed_bound,
)
from unmask.files import not_a_folder
from unmask.flag_checks import check_limit, check_mc_samples_count
from unmask.scoring import offline_hub

LM_EVAL_INSTALL = 'pip install lm-eval (or, in a source checkout, pip install -e ".[lm-eval]")'
"""How to get lm-eval."""


def _at_least(name: str, value: Any, least: int) -> int:
    """``value`` (a model_arg, maybe the string lm-eval parsed) as a whole number of at least
    ``least``, else a one-line ``UserError`` (a bare ``int()`` gave a ``ValueError``)."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise UserError(f"{name} must be a whole number, got {value!r}") from None
    if n < least:
        raise UserError(f"{name} must be at least {least}, got {n}")
    return n


def check_mc_samples(n: Any) -> int:
    """``mc_samples`` (``--mc-samples``) as a whole number from 1 to
    ``unmask.flag_checks.MAX_MC_SAMPLES``, else a one-line ``UserError`` (10**11 was torch's
    allocation traceback at the first log-likelihood, after the rest of the report ran)."""
    return check_mc_samples_count(_at_least("mc_samples", n, 1))


def gen_options(gen_kwargs: dict[str, Any]) -> tuple[int, float]:
    """(tokens to generate, temperature) of a ``generate_until`` request's arguments, read as
    lm-eval's own models read them (``lm_eval.models.utils.normalize_gen_kwargs``, 0.4.13):
    the budget under the first of ``MAX_TOKEN_KEYS`` given (256 when none is), and the
    task's temperature where it samples: ``do_sample`` true, or not given with a temperature
    above 0; else 0 (greedy). Only ``max_gen_toks`` and a ``do_sample: true`` were read: a
    task of ``max_new_tokens: 32`` decoded 256 tokens (another answer on a diffusion
    canvas), and one of ``temperature: 0.7`` alone was decoded greedily."""
    budget = next((gen_kwargs[k] for k in MAX_TOKEN_KEYS if gen_kwargs.get(k) is not None), 256)
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    do_sample = gen_kwargs.get("do_sample")
    sampled = temperature > 0 if do_sample is None else bool(do_sample)
    return int(budget), temperature if sampled else 0.0


def _flag(name: str, value: Any) -> bool:
    """``value`` (a model_arg: lm-eval parses ``true``/``false`` and numbers, and passes any
    other word as a string) as a bool, else a one-line ``UserError``: ``bool("no")`` was
    True, so ``greedy_check=no`` left the check on without a word."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    said = words.get(str(value).strip().lower())
    if said is None:
        raise UserError(f"{name} must be true or false, got {value!r}")
    return said


def refuse_unprompted(facts: Any, task: str) -> None:
    """One-line ``UserError`` for a checkpoint no lm-eval task can run on: a latent model
    (``takes_no_prompt``) has no log-likelihood to score and takes no prompt to continue.
    Other models without a masked ELBO still run ``generate_until`` tasks (their
    log-likelihood requests are refused, ``refuse_mask_elbo``)."""
    from unmask.sampling.continuous import takes_no_prompt

    if takes_no_prompt(facts):
        raise UserError(
            f"{task}: a checkpoint of objective {facts.objective} has no likelihood to score "
            "and takes no prompt to continue (it samples whole windows from noise)"
        )


LOGLIKELIHOOD_TYPES = frozenset({"loglikelihood", "loglikelihood_rolling", "multiple_choice"})
"""lm-eval's output types whose requests are log-likelihoods (the others generate)."""


def loglikelihood_refusal(loaded: Any, facts: Any) -> str | None:
    """Why lm-eval's log-likelihood requests are refused on the checkpoint ``loaded`` (its
    ``facts``: ``unmask.sampling.facts_of``), or ``None``: no masked-diffusion ELBO
    (``refuse_mask_elbo``), or a block-diffusion model trained with time conditioning before
    ``bd3lm`` refused it, which has no bound (``unmask.evaluate.untimed_bound``). Its
    ``generate_until`` tasks still run."""
    from unmask.sampling.continuous import refuse_mask_elbo

    try:
        refuse_mask_elbo(facts, "lm-eval log-likelihoods (multiple-choice, perplexity)")
        if facts.block_size and facts.attention != "causal":  # block_elbo_loglikelihood's
            untimed_bound(getattr(loaded.model, "config", None), "bd3lm")
    except UserError as e:
        return str(e)
    return None


def scoring_tasks(manager: Any, tasks: Sequence[str]) -> list[str]:
    """The names of ``tasks`` (as ``find_tasks`` checked them, with its ``manager``) that
    score log-likelihoods: a task of an output type in ``LOGLIKELIHOOD_TYPES``, or a group or
    tag with one among its tasks. Builds the tasks (their data is read, offline)."""
    return [name for name, built in _built(manager, tasks)
            if any(t.OUTPUT_TYPE in LOGLIKELIHOOD_TYPES for t in built)]


def reads_is_greedy(tasks: Iterable[Any]) -> bool:
    """Whether any of the lm-eval task objects ``tasks`` reads lm-eval's ``is_greedy``. A
    ``ConfigurableTask`` that builds its requests as lm-eval does (no ``construct_requests``
    of its own) of output type ``loglikelihood_rolling`` or ``generate_until`` is never sent
    it, whatever its ``process_results`` (``wikitext`` has one); only ``loglikelihood``
    requests return it. Of the other output types, only a plain ``ConfigurableTask`` (no
    ``process_results`` of its own, in its class or its config) is known not to read it: one
    of output type ``multiple_choice`` without an ``exact_match`` metric (``acc``,
    ``acc_norm`` and the rest never read it; ``ConfigurableTask.process_results``). Any other
    task (a ``loglikelihood`` one, whose ``acc`` is it; a ``process_results`` function, which
    may read it under any metric name; another ``Task`` class; metrics that cannot be read)
    counts as one that reads it."""
    from lm_eval.api.task import ConfigurableTask

    def reads(t: Any) -> bool:
        if not isinstance(t, ConfigurableTask):
            return True
        if (type(t).construct_requests is ConfigurableTask.construct_requests
                and t.OUTPUT_TYPE in ("loglikelihood_rolling", "generate_until")):
            return False  # it sends no loglikelihood request
        if (type(t).process_results is not ConfigurableTask.process_results
                or getattr(getattr(t, "config", None), "process_results", None) is not None):
            return True
        metrics = getattr(t, "_metric_fn_list", None)
        if t.OUTPUT_TYPE == "multiple_choice":
            return not isinstance(metrics, dict) or "exact_match" in metrics
        return True  # loglikelihood (its acc is is_greedy), or a type not known here

    return any(reads(t) for t in tasks)


@contextlib.contextmanager
def _greedy_where_read(
    model: UnmaskLM, manager: Any, model_args: dict[str, Any]
) -> Iterator[list[bool]]:
    """Within: ``model`` (a diffusion one, with ``greedy_check``) decodes no ``is_greedy``
    where none of the tasks ``manager`` builds reads it (``reads_is_greedy``), judged on the
    task objects lm-eval's ``simple_evaluate`` builds itself through ``manager.load`` (not
    built a second time); ``model_args`` (those recorded in the results) then say
    ``greedy_check: False``. Yields ``[True]`` once the check is skipped (``[]`` before). A
    ``manager`` lm-eval does not load through leaves the check on."""
    skipped: list[bool] = []
    if not model.greedy_check or model.causal:  # a causal model's is_greedy costs nothing
        yield skipped
        return
    load = manager.load
    own = "load" in vars(manager)

    def watched(task_list: Any) -> Any:
        loaded = load(task_list)
        skipped[:] = [not reads_is_greedy(loaded["tasks"].values())]
        model.greedy_check = model_args["greedy_check"] = not skipped[0]
        return loaded

    manager.load = watched
    try:
        yield skipped
    finally:
        if own:
            manager.load = load
        else:
            del manager.load
        model.greedy_check = True


def _not_decoded(samples: dict[str, list[dict[str, Any]]]) -> None:
    """The logged ``samples`` (lm-eval's, by task) with each log-likelihood answer's
    ``is_greedy`` (in ``resps`` and ``filtered_resps``) None: not decoded, where a False
    would read as measured (``run_tasks`` skipped the check: no task reads it)."""

    def unread(x: Any) -> Any:
        if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], bool):
            return (x[0], None)
        return [unread(y) for y in x] if isinstance(x, list) else x

    for rows in samples.values():
        for row in rows:
            for key in ("resps", "filtered_resps"):
                if key in row:
                    row[key] = unread(row[key])


def _built(manager: Any, tasks: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """Each name of ``tasks`` with the lm-eval task objects it builds (a group: its tasks)."""
    with _task_errors(tasks), offline_hub():
        return [(name, list(manager.load([name])["tasks"].values())) for name in tasks]


@register_model("unmask")
class UnmaskLM(LM):
    """An unmask checkpoint as an lm-eval model (see the module docstring).

    ``model_args`` of lm-eval are this constructor's arguments: ``pretrained`` (a run or
    checkpoint folder), ``mc_samples`` (Monte Carlo samples per diffusion log-likelihood),
    ``seed``, ``greedy_check``, ``max_length`` (default: the model's context; two blocks at
    least on a block model) and the sampling options of ``generate_until`` (``gen_length``
    caps a task's ``max_gen_toks``; the others are ``SampleConfig`` fields; options not
    given take the checkpoint's recommendation, as ``unmask generate`` does, but for the
    repetition penalties: off unless given). ``loaded`` passes a checkpoint already in
    memory instead of ``pretrained``.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        device: str | None = None,
        batch_size: int | str | None = 16,
        max_batch_size: int | None = None,
        mc_samples: int = DEFAULT_MC_SAMPLES,
        seed: int = 0,
        greedy_check: bool = True,
        max_length: int | None = None,
        gen_length: int | None = None,
        steps: int | None = None,
        block_length: int | None = None,
        policy: str | None = None,
        cache: str | None = None,
        temperature: float | None = None,
        decoder: str | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        loaded: Any = None,
    ) -> None:
        super().__init__()
        from unmask.api import facts_of
        from unmask.checkpoint import load
        from unmask.config import resolve_device

        if loaded is None:
            if pretrained is None:
                raise UserError("model 'unmask' needs pretrained=PATH (a run or checkpoint folder)")
            loaded = load(pretrained, device=str(resolve_device(device or "auto")))
        mc_samples = check_mc_samples(mc_samples)
        if max_length is not None:  # one token of context, one scored
            max_length = _at_least("max_length", max_length, 2)
        if gen_length is not None:  # -5 generated one token a request, "x" was a ValueError
            gen_length = _at_least("gen_length", gen_length, 1)
        if block_length is not None:
            block_length = _at_least("block_length", block_length, 1)
        # lm-eval's "auto" (or none given, as the signature allows): our default
        auto = batch_size is None or str(batch_size).startswith("auto")
        if not auto and (not str(batch_size).strip().isdigit() or int(str(batch_size)) < 1):
            raise UserError(f"batch_size must be a whole number of 1 or more, got {batch_size}")
        self.loaded = loaded
        self.pretrained = str(pretrained if pretrained is not None else loaded.path)
        """The checkpoint as the user named it (with ``loaded``: its folder, unless given)."""
        self.facts = facts_of(loaded)
        refuse_unprompted(self.facts, "lm-eval tasks")
        self.tokenizer = loaded.tokenizer
        self.batch_size = 16 if auto else int(str(batch_size))
        self.mc_samples = int(mc_samples)
        self.seed = _at_least("seed", seed, 0)  # "abc" was int()'s traceback
        self.greedy_check = _flag("greedy_check", greedy_check)
        limit = self.facts.max_seq_len or 2048
        self.max_length = min(int(max_length), limit) if max_length is not None else limit
        block = self.facts.block_size  # None but for block-causal models (ModelFacts.of)
        if block and self.max_length < 2 * block:  # _whole_blocks: one block for the prompt
            raise UserError(  # left no room for it: every prompt was cut to nothing
                f"max_length must be at least two blocks of this model ({2 * block} tokens: "
                f"the prompt's and the answer's), got {self.max_length}")
        self.gen_length = gen_length
        given = locals()  # the sampling arguments, by the names SAMPLING_ARGS reads off them
        self.sampling = {k: given[k] for k in SAMPLING_ARGS
                         if k != "gen_length" and given[k] is not None}
        if self.sampling:  # an option the checkpoint refuses (steps 0, an unknown policy, a
            # decoder of another family) fails now, not at the first generate_until request
            # after every log-likelihood task has run
            from unmask.api import choose
            from unmask.sampling.cache import check_cache_name
            from unmask.sampling.policies import make_policy

            config = self.generation_config({})
            if choose(loaded, config) in ("llada", "bd3lm"):  # the commit loop's names, which
                make_policy(config)  # it checks at its first run (the length-free checks)
                check_cache_name(config.cache)
        self.estimates: list[LogLikelihood] = []
        """Every log-likelihood computed, in request order (with its standard error)."""
        self.model_seconds = 0.0
        """Seconds spent answering requests (lm-eval's own set-up not included)."""

    @property
    def model_args(self) -> dict[str, Any]:
        """This model's lm-eval ``model_args``: what rebuilds it by name, recorded in the
        results (lm-eval names the ``output_path`` folder after ``pretrained``)."""
        args: dict[str, Any] = {
            "pretrained": self.pretrained,
            "mc_samples": self.mc_samples,
            "seed": self.seed,
            "greedy_check": self.greedy_check,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
        }
        if self.gen_length is not None:
            args["gen_length"] = self.gen_length
        return args | self.sampling

    # -- what lm-eval asks ---------------------------------------------------------------

    @property
    def causal(self) -> bool:
        """Exact log-likelihoods (a causal model) rather than ELBO estimates."""
        return self.facts.attention == "causal"

    @property
    def _start_id(self) -> int:
        """What a context begins with (``ModelFacts.start_id``): a published model's BOS,
        else the document separator (EOS), else the pad id."""
        return self.facts.start_id

    def _whole_blocks(self, n: int) -> int:
        """Tokens to decode for ``n`` wanted: a block-causal (``bd3lm``) model decodes whole
        blocks of its own size, so ``n`` rounded up to them, at most the context's whole blocks
        but one (that one holds the prompt, or the start token an empty one gets: a 256-token
        default budget on a 64-token model was 64 tokens, no room for either, and the decoder
        refused every request); ``n`` itself for any other model."""
        block = self.facts.block_size  # None but for block-causal models (ModelFacts.of)
        if not block:
            return n
        up = -(-n // block) * block
        return min(up, (self.max_length // block - 1) * block)  # >= block (the constructor)

    def _prompt_room(self, gen_length: int) -> int:
        """Prompt tokens that fit beside ``gen_length`` generated ones (a block-causal model
        pads its prompt to whole blocks)."""
        room = self.max_length - gen_length
        block = self.facts.block_size  # None but for block-causal models (ModelFacts.of)
        return max(0, room // block * block if block else room)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids, tokenised together (as lm-eval's HF model does): the
        context's trailing spaces move to the continuation, and the continuation is the tail
        of the whole text's ids, so a BPE merge across the seam is not split."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context) if context else []
        head = self.facts.prompt_ids([])  # a published model's BOS leads every context
        return head + whole[: len(ctx)], whole[len(ctx) :]

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is_greedy) per request (module docstring)."""
        t0 = time.perf_counter()
        pairs = [self._encode_pair(*req.args) for req in requests]
        results = self._loglikelihoods(pairs, greedy=self.greedy_check)
        out = []
        for req, r in zip(requests, results, strict=True):
            answer = (r.logprob, bool(r.is_greedy))
            self.cache_hook.add_partial("loglikelihood", req.args, answer)
            out.append(answer)
        self.model_seconds += time.perf_counter() - t0
        return out

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        """log p(text) per request: lm-eval's disjoint rolling windows over the model's
        context (a diffusion window keeps one slot for its context), each scored as by
        ``loglikelihood``, summed."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        t0 = time.perf_counter()
        window = self.max_length if self.causal else self.max_length - 1
        windows: list[tuple[list[int], list[int]]] = []
        ends = []  # where each request's windows end in ``windows``
        for req in requests:
            ids = self.tokenizer.encode(req.args[0])
            windows += [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=ids, prefix_token=self._start_id, max_seq_len=window, context_len=1
                )
            ]
            ends.append(len(windows))
        # every request's windows in one call: a causal model's are batched by length across
        # documents (scored a document at a time, a task of short documents ran batches of 1)
        scored = self._loglikelihoods(windows, greedy=False)
        out = []
        for req, lo, hi in zip(requests, [0, *ends], ends, strict=False):
            total = float(sum(r.logprob for r in scored[lo:hi]))  # an empty text: 0.0, not 0
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
            out.append(total)
        self.model_seconds += time.perf_counter() - t0
        return out

    def generate_until(self, requests: list[Any]) -> list[str]:
        """The continuation of each context, decoded by ``unmask.api.start`` and cut at the
        first of the request's ``until`` strings (``unmask.chat.cut_text``, ``generate``'s
        ``stop``), which end the decoding too once a row's text is sure to be cut there
        (``start``'s ``stop``: the same text, fewer forwards). Requests with equal generation
        options are decoded together, ``batch_size`` at a time, each as it decodes alone under
        the seed
        (``unmask.tasks.score.decode_each``)."""
        from unmask.api import _text_end, choose
        from unmask.chat import cut_text
        from unmask.sampling.protocol import decode_generations
        from unmask.tasks.score import decode_each, repeat_seeds

        t0 = time.perf_counter()
        # the j-th of identical requests (lm-eval's repeats) is seeded seed + j
        seeds = repeat_seeds(self.seed, [json.dumps(r.args, sort_keys=True, default=str)
                                         for r in requests])
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        for key, idx in groups.items():
            kwargs = json.loads(key)
            until = kwargs.get("until") or []
            until = [s for s in ([until] if isinstance(until, str) else until) if s]
            rule = (_text_end(self.tokenizer, until, frozenset(), None, self.facts.eos_id)
                    if until else None)
            config = self.generation_config(kwargs)
            wanted = self._wanted_tokens(kwargs)  # a bd3lm model decodes whole blocks: cut
            room = self._prompt_room(config.gen_length)
            for lo in range(0, len(idx), self.batch_size):
                chunk = idx[lo : lo + self.batch_size]
                # an empty context starts a document, as for a log-likelihood (_prefixed): a
                # Dream-style model has no logits for a canvas' first position
                prompts = [
                    (self.facts.prompt_ids(self.tokenizer.encode(requests[i].args[0]))
                     or [self._start_id])[-room:]
                    if room > 0 else []
                    for i in chunk
                ]
                # each row as alone under the seed, where the run draws random numbers: not
                # one generator for the batch, whose rows then depended on each other
                # steps not given (one per token) are fitted to the blocks each prompt
                # spans, as generate fits them on a checkpoint whose blocks start at the prompt
                rows = decode_each(self.loaded, prompts, config, choose(self.loaded, config),
                                   [seeds[i] for i in chunk],
                                   fit_steps="steps" not in self.sampling,
                                   stop=rule)
                texts = [decode_generations([r.gen_ids[k][:wanted]], self.tokenizer, r.eos_id)[0]
                         for r, k in rows]
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = cut_text(text, until)
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        self.model_seconds += time.perf_counter() - t0
        return [s or "" for s in out]

    # -- shared --------------------------------------------------------------------------

    def generation_config(self, gen_kwargs: dict[str, Any]) -> SampleConfig:
        """The ``SampleConfig`` of a ``generate_until`` request: its token budget
        (``gen_options``, capped by ``gen_length``, ``_wanted_tokens``; whole blocks for a
        bd3lm model, ``_whole_blocks``, and of a ``block_length`` given, where they leave the
        prompt a token), greedy unless the task samples, the model_args'
        sampling options, the checkpoint's recommendation for the rest but its repetition
        penalties (``without_penalties``: a few-shot prompt's format lines are what the answer
        repeats), one token per step by default. A sampled request's ``temperature``,
        ``top_k`` and ``top_p`` (lm-eval hands them to its models' samplers: ``humaneval_64``'s
        nucleus of 0.95) apply where the chosen decoder takes them, left out as
        ``sample_config`` leaves out a recommendation it has no use for (``api._inapplicable``):
        ``top_k`` / ``top_p`` apply to a causal decoder only (a diffusion decoder samples no
        single token's distribution), and SEDD's reverse process takes no temperature (it
        draws anyway; a task's temperature was its refusal, after every log-likelihood task
        had run)."""
        from unmask.api import _inapplicable, choose, sample_config
        from unmask.tasks.score import without_penalties

        length = self._whole_blocks(self._wanted_tokens(gen_kwargs))
        asked = self.sampling.get("block_length")  # given: a decoder that takes it (__init__)
        if asked and not self.facts.block_size and -(-length // asked) * asked < self.max_length:
            # whole blocks of it, as the task scorer rounds its room (tasks.score.task_config);
            # the answer is cut to the budget. A budget it did not divide was the decoder's
            # refusal at the first request, after every log-likelihood task had run
            length = -(-length // asked) * asked
        base: dict[str, Any] = {
            "gen_length": length,
            "steps": length,
            "seed": self.seed,
            "temperature": 0.0,
        }
        ours = sample_config(self.loaded, base | self.sampling)  # model_args' options win
        temperature = gen_options(gen_kwargs)[1]
        task: dict[str, Any] = {}
        if temperature > 0 and ("temperature" not in self.sampling or ours.temperature > 0):
            # the task samples, and so do we: at its temperature, with its nucleus (HF: 0 off)
            task = {"temperature": temperature} | {
                k: int(v) if k == "top_k" else float(v)
                for k, v in gen_kwargs.items() if k in ("top_k", "top_p") and v}
        for name in _inapplicable(choose(self.loaded, ours), task):
            del task[name]  # one the decoder refuses ("temperature does not apply to 'sedd'")
        given = base | task | self.sampling
        return without_penalties(sample_config(self.loaded, given), given)

    def _wanted_tokens(self, gen_kwargs: dict[str, Any]) -> int:
        """Tokens a ``generate_until`` request may get: its budget (``gen_options``, under any
        of ``MAX_TOKEN_KEYS``) capped by ``gen_length`` and by the context."""
        length = gen_options(gen_kwargs)[0]
        if self.gen_length:
            length = min(length, int(self.gen_length))
        return max(1, min(length, self.max_length - 1))

    def _loglikelihoods(
        self, pairs: Sequence[tuple[list[int], list[int]]], *, greedy: bool
    ) -> list[LogLikelihood]:
        """Scored ``(context ids, continuation ids)`` pairs, cut to the model's context."""
        # generate_until still runs on these models: only their log-likelihoods are refused
        if (refusal := loglikelihood_refusal(self.loaded, self.facts)) is not None:
            raise UserError(refusal)
        pairs = [self._prefixed(*pair) for pair in pairs]
        if self.causal:
            results = ar_loglikelihood(
                self.loaded.model,
                pairs,
                start_id=self._start_id,
                max_length=self.max_length,
                batch_size=self.batch_size,
            )
        else:
            results = []
            for pair in pairs:
                context, target = self._fit(*pair)
                gen = torch.Generator().manual_seed(self.seed)  # one length: the same masks
                # a block-diffusion model: each block's bound given the clean blocks before it
                blocks = {"block_size": self.facts.block_size} if self.facts.block_size else {}
                estimate = block_elbo_loglikelihood if blocks else elbo_loglikelihood
                r = estimate(
                    self.loaded.model,
                    context,
                    target,
                    mask_id=self.facts.mask_id,
                    n_samples=self.mc_samples,
                    batch_size=self.batch_size,
                    generator=gen,
                    **blocks,
                )
                if greedy:
                    r = dataclasses.replace(r, is_greedy=self._greedy(context, target))
                results.append(r)
        self.estimates.extend(results)
        return results

    def _prefixed(
        self, context: Sequence[int], target: Sequence[int]
    ) -> tuple[list[int], list[int]]:
        """``context`` and ``target``, an empty context given lm-eval's prefix token for every
        model: the document separator (``_start_id``), or, where the target already starts
        with it, that first target token (as lm-eval's ``loglikelihood`` does: the separator
        is not scored after itself)."""
        context, target = list(context), list(target)
        if context:
            return context, target
        start = self._start_id
        return ([start], target) if target[:1] != [start] else (target[:1], target[1:])

    def _fit(self, context: Sequence[int], target: Sequence[int]) -> tuple[list[int], list[int]]:
        """A diffusion request's context and target as they are scored, cut as lm-eval cuts a
        causal model's (and ``ar_loglikelihood`` does): a pair longer than the model's context
        keeps its last ``max_length`` tokens, at least one of them context (a target of
        ``max_length`` tokens loses its first). No target token is scored without a token
        before it: a Dream-style model (``logit_shift``) has no logits for position 0 (the cut
        left a target of ``max_length`` tokens no context, and its first token was scored with
        the logits meant for the next), and every model reads a document as the rolling
        windows read it. An empty context: ``_prefixed``."""
        context, target = self._prefixed(context, target)
        seq = (context + target)[-self.max_length :]  # max_length >= 2 (the constructor)
        n = min(len(target), len(seq) - 1)
        return seq[: len(seq) - n], seq[len(seq) - n :]

    def _greedy(self, context: list[int], target: list[int]) -> bool:
        """Whether greedy decoding after ``context`` (one token per step, the most confident
        first, no blocks: LLaDA's check) writes exactly ``target``. A block-causal (``bd3lm``)
        model decodes the whole blocks that hold ``target`` (``_whole_blocks``; the context
        cut further where they would not fit) and their first tokens are compared; where
        those blocks leave no room for the context, False (not checked), as for a target
        longer than the context (it was the decoder's refusal: "prompt (1 token) +
        gen_length (64) exceeds the model's max_seq_len"). On a checkpoint whose blocks
        start at the first prompt token (LLaDA 2.x, ``block_align: absolute``) an answer
        that starts mid-block decodes up to the end of the block that holds its last token
        (``k`` blocks, the first one partly the prompt's; later blocks cannot change it), and
        each block gets a block's steps: at most one token a step still, a multiple of the
        blocks as its scheduled policy needs (``api.fit_block_steps``; one step a token was
        refused there, "steps (8) must be a multiple of the number of blocks ...", at the
        first multiple-choice item; whole blocks of the answer's length after the prompt's
        tail ran into one more block, up to twice the forwards)."""
        from unmask.api import block_tail, run_to_end, start

        n = len(target)
        if n == 0:  # nothing to write: greedy decoding writes it
            return True
        length = self._whole_blocks(n)
        room = self._prompt_room(length)
        if length < n or not room:  # the target's blocks and the context do not fit together
            return False
        context = context[len(context) - room :]
        tail = block_tail(self.loaded, len(context), self.facts.decoder_for(None)) or 0
        if tail:  # the answer starts mid-block: to the end of the block of its last token
            block = self.facts.block_size or 1  # set: block_tail is None without blocks
            length = -(-(tail + n) // block) * block - tail  # fits: len(context) < room here
        config = SampleConfig(  # one step a column of the k blocks: k * block, a multiple of k
            gen_length=length, steps=length + tail, temperature=0.0, block_length=None,
            seed=self.seed,
        )
        result, _ = run_to_end(start(self.loaded, [context], config))
        return [int(t) for t in result.gen_ids[0][:n]] == [int(t) for t in target]

    def summary(self) -> dict[str, Any]:
        """The Monte Carlo standard errors of the log-likelihoods computed so far, and the
        seconds spent answering requests. ``exact``: the model's log-likelihoods are exact (a
        causal model; a diffusion model's are estimates, also where ``requests`` is 0, as
        after generation tasks alone). ``mc_samples``, ``mean_stderr`` and ``max_stderr``
        are None where no estimate was made (a causal model, no requests), the last two also
        where no estimate has a standard error: ``mc_samples`` 1 gives no spread to estimate
        it from."""
        est = [e for e in self.estimates if e.n_samples]
        se = [e.stderr for e in est if math.isfinite(e.stderr)]
        return {
            "exact": self.causal,
            "requests": len(self.estimates),
            "model_seconds": self.model_seconds,
            # the same keys for every model: None where exact (a causal model) or not estimable
            "mc_samples": self.mc_samples if est else None,
            "mean_stderr": sum(se) / len(se) if se else None,
            "max_stderr": max(se) if se else None,
        }


SAMPLING_ARGS: tuple[str, ...] = tuple(
    name for name in inspect.signature(UnmaskLM).parameters
    if name == "gen_length" or name in SampleConfig.__dataclass_fields__ and name != "seed"
)
"""The sampling options ``UnmaskLM`` takes as ``model_args``, read off its arguments (the one
list of them: ``unmask eval --tasks`` hands on these flags and names the others in a note):
``gen_length`` and the ``SampleConfig`` fields among them, ``seed`` aside (the run's)."""


def check_seed(seed: int) -> None:
    """One-line ``UserError`` for a seed lm-eval cannot take: it seeds numpy's global
    generator with it, which takes 0 to 2**32 - 1 (a larger one was numpy's traceback)."""
    if not 0 <= seed < 2**32:
        raise UserError(f"seed {seed}: lm-eval seeds numpy with it, which takes 0 to "
                        f"2**32 - 1; give a smaller --seed with --tasks")


def check_task_files(folder: str | Path) -> None:
    """Parse every YAML file under ``folder`` (lm-eval's own ``!function`` tags allowed) and
    raise a one-line ``UserError`` naming the first that does not parse: lm-eval itself only
    logs a warning and then reports the task as unknown."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--include-path {folder}: no such folder")
    for path in sorted(root.rglob("*.y*ml")):
        _task_file(path)


def _task_file(path: Path) -> Any:
    """The parsed YAML of a task file (lm-eval's ``!function`` tags allowed), or a one-line
    ``UserError`` naming it and where it does not parse."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a valid task file (not UTF-8 text)") from None
    except yaml.YAMLError as e:
        raise _yaml_error(str(path), e) from None


def _yaml_error(name: str, e: Exception) -> UserError:
    """``NAME:LINE: not a valid task file (PROBLEM)``: PyYAML's error in one line."""
    mark = getattr(e, "problem_mark", None)
    where = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return UserError(f"{name}{where}: not a valid task file ({problem})")


def _check_task_path(path: Path) -> None:
    """A task given as a file is one lm-eval can build: a YAML mapping with a ``task``,
    ``group`` or ``class`` field (lm-eval's ``TaskIndex._kind_of``), its own or one from the
    files it names in ``include:``. lm-eval raised a ``ValueError`` (a traceback) at the end
    of the run for any other file, a JSONL of items (``--task-file``'s) among them."""
    cfg = _task_file(path)  # a parse error names its line
    if isinstance(cfg, dict) and "include" in cfg:
        cfg = _with_includes(path)
        if cfg is None:  # an lm-eval without the loader judges the file itself
            return
    if not isinstance(cfg, dict) or not {"task", "group", "class"} & cfg.keys():
        keys = ", ".join(map(str, list(cfg)[:6])) if isinstance(cfg, dict) else "none"
        raise UserError(f"{path}: not an lm-eval task file (a YAML mapping with a task, group "
                        f"or class field, its own or an included file's; its fields: "
                        f"{keys or 'none'})")


def _with_includes(path: Path) -> dict | None:
    """The task file at ``path`` with the files its ``include:`` names merged in, read by
    lm-eval's own ``load_yaml`` as lm-eval reads a task given as a path (relative names,
    precedence, cycles as lm-eval has them); where that fails, a one-line ``UserError``.
    ``None`` for an older lm-eval without that loader."""
    import yaml

    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        return None
    try:
        return load_yaml(path, resolve_func=False)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        name = getattr(mark, "name", None) or "an included file"
        raise _yaml_error(f"{path}: include {name}", e) from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: an included file is not UTF-8 text") from None
    except OSError as e:  # a missing include
        raise UserError(f"{path}: include {e.filename}: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:  # a cycle, an included list, include: 5
        raise UserError(f"{path}: not an lm-eval task file ({e})") from None


def check_output_path(output_path: str | Path) -> Path:
    """The folder lm-eval writes its results in under ``output_path`` (a ``.json`` path's
    folder, else the path itself), created and written to once (a file made and removed);
    where that fails, a one-line ``UserError``. lm-eval only logs "Could not save results
    aggregated" and goes on: a run given a file, a folder under a file or a folder it could
    not write in ended with exit 0 and no results written."""
    import tempfile

    if not str(output_path).strip():  # Path("") is ".": the working folder
        raise UserError("--output-path: expected a folder, got an empty name")
    path = Path(output_path)
    folder = path.parent if path.suffix == ".json" else path
    blocked = not_a_folder(folder)  # a file (or a link to none) there or above it
    if blocked == folder:
        what = "a link to no folder" if folder.is_symlink() else "a file"
        raise UserError(f"--output-path {output_path}: {folder} is {what}, not a folder "
                        "lm-eval can write its results in")
    if blocked is not None:
        raise UserError(f"--output-path {output_path}: lm-eval could not write its results "
                        f"in {folder} ({blocked} is not a folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:  # no permission, a read-only file system
        raise UserError(f"--output-path {output_path}: lm-eval could not write its results "
                        f"in {folder} ({e.strerror or e})") from None
    return folder


def find_tasks(tasks: Sequence[str], include_path: str | None = None) -> Any:
    """lm-eval's ``TaskManager`` that knows every name of ``tasks`` (tasks, groups, tags or
    YAML paths; ``include_path`` a folder of extra task YAMLs), built before anything slow
    runs: a one-line ``UserError`` for an unknown task or a task file that does not parse."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        check_task_files(include_path)
    manager = None
    if include_path is not None:  # indexing lm-eval's own thousands of tasks takes seconds
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if not all(t in manager.all_tasks for t in tasks):
            manager = None
    manager = manager or TaskManager(include_path=include_path)
    unknown = []
    for t in tasks:
        if t in manager.all_tasks:
            continue
        if Path(t).is_file():
            _check_task_path(Path(t))
        else:
            unknown.append(t)
    if unknown:
        where = f" (nor in {include_path})" if include_path else ""
        raise UserError(
            f"unknown task {unknown[0]!r}: lm-eval does not know it{where}; "
            "`lm-eval ls tasks` lists the known ones, --include-path adds a folder"
        )
    return manager


@contextlib.contextmanager
def _task_errors(tasks: Sequence[str]) -> Iterator[None]:
    """lm-eval's complaints about tasks it cannot build as one-line ``UserError``s."""
    try:
        yield
    except (FileNotFoundError, KeyError) as e:  # a task whose data or fields are missing
        raise UserError(f"lm-eval could not build the tasks {', '.join(tasks)}: {e}") from None
    except ValueError as e:
        if not str(e).startswith("Sample larger than population"):
            raise
        # random.sample's refusal, a traceback at the first item: more few-shot examples than
        # the documents lm-eval draws them from (the test split's, less the item, where the
        # task has no training or validation split)
        raise UserError(
            f"lm-eval could not build the few-shot prompts of the tasks {', '.join(tasks)}: a "
            "task asks for more examples (--num-fewshot, or the count in the task's YAML) than "
            "it has documents to draw them from; give a smaller --num-fewshot"
        ) from None
    except ConnectionError as e:  # data neither local nor cached: the Hub is not asked
        raise UserError(
            f"lm-eval could not load the data of the tasks {', '.join(tasks)}: {e}; unmask "
            "does not download it: use a local dataset (dataset_path: json with data_files) "
            "or one already in the Hugging Face cache"
        ) from None


def run_tasks(
    model: UnmaskLM,
    tasks: Sequence[str],
    *,
    num_fewshot: int | None = None,
    limit: float | None = None,
    include_path: str | None = None,
    output_path: str | None = None,
    log_samples: bool = False,
    seed: int = 0,
    task_manager: Any = None,
) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` of ``model`` on ``tasks`` (names, groups or tags lm-eval
    knows, with ``include_path`` a folder of extra task YAMLs), written under
    ``output_path`` as lm-eval's CLI writes it (``EvaluationTracker``). Returns lm-eval's
    results dict plus ``unmask`` (the standard errors of the log-likelihoods) and
    ``table`` (lm-eval's Markdown table). ``task_manager``: ``find_tasks``' answer, when
    the tasks were checked already; else they are checked here (an unknown task is a
    one-line ``UserError``)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.utils import make_table

    check_seed(seed)
    limit = check_limit(limit)  # what the CLI's --limit takes (inf was a traceback)
    if output_path:
        check_output_path(output_path)
    manager = task_manager if task_manager is not None else find_tasks(tasks, include_path)
    tracker = EvaluationTracker(output_path=output_path) if output_path else None
    model_args = model.model_args  # with a model object: only recorded
    # a diffusion model's is_greedy costs a forward per continuation token, several times its
    # ELBO estimate: not decoded for tasks (multiple choice by acc) that never read it
    with (
        _greedy_where_read(model, manager, model_args) as greedy_skipped,
        _task_errors(tasks),
        offline_hub(),  # the tasks' data: local or cached, not fetched
    ):
        results = simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
            evaluation_tracker=tracker,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if results is None:
        return {}
    samples = results.pop("samples", None)
    if samples and any(greedy_skipped):
        _not_decoded(samples)
    if tracker is not None:
        tracker.save_results_aggregated(results=results, samples=samples)
        if log_samples and samples:
            for name in results.get("configs", {}):
                tracker.save_results_samples(task_name=name, samples=samples[name])
    results["unmask"] = model.summary()
    results["table"] = make_table(results)
    return results


__all__ = [
    "LM_EVAL_INSTALL",
    "LOGLIKELIHOOD_TYPES",
    "SAMPLING_ARGS",
    "UnmaskLM",
    "check_limit",
    "check_mc_samples",
    "check_output_path",
    "check_seed",
    "check_task_files",
    "find_tasks",
    "gen_options",
    "loglikelihood_refusal",
    "offline_hub",
    "reads_is_greedy",
    "refuse_unprompted",
    "run_tasks",
    "scoring_tasks",
]
