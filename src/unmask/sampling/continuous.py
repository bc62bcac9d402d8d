"""Decoders of the continuous families: ``embed-diffusion`` (Gaussian diffusion on token
embeddings) and ``latent-diffusion`` (Gaussian diffusion of an autoencoder's latents).

Both run DDPM's ancestral sampler from t = 1 (pure noise) to t = 0 on the grid
t_k = 1 - k/steps, one model call per step (``unmask.objectives.continuous.SqrtSchedule``):
the network predicts x0, the state moves to x_s ~ q(x_s | x_t, x0 = prediction).

- ``EmbedRun``: the state is one vector per canvas position. The prediction is rounded to
  a token before it is used (Diffusion-LM's clamping trick, Li et al. 2022, §4.2, which
  maps a predicted vector to its nearest embedding; our network predicts logits, so the
  token is their argmax, or a draw at ``temperature``; the checkpoints recommend a draw,
  measured: argmax repeats frequent tokens), so the predicted x0 is always exactly a row of
  the embedding table; a special token other than EOS is never the rounding. Drawn at
  temperature 1 from the exact p(x0 | x_t), this is exact ancestral sampling at any step
  count (tested with an oracle). Known positions (the
  prompt, tokens around a ``[MASK]``) are replaced at every step by a fresh draw of
  q(x_t | their embedding) (infilling by replacement), and come out verbatim; a template
  gap the last step's rounding broke (``unmask.infill``'s constraint: well-formed UTF-8, no
  special token) is rounded again left to right from the same scores. ``view()`` is
  the rounded canvas of the last step: it sharpens from noise to text.
- ``LatentRun``: the state is ``latent_len`` vectors; the prediction is the denoiser's z0 and
  the text it reads off z_t (its argmax: no draw, the state never reads it) is the view;
  the last step decodes the predicted z0
  (``unmask.objectives.latent.decode_logits``, one more model call). A self-conditioned
  model gets the previous step's z0 estimate with each call. A latent model samples whole
  windows: a prompt is refused.
- Control (``BagOfWords``, ``SampleConfig.guide_words``): before each step the state is moved
  down the gradient of a differentiable constraint on the step's logits (Diffusion-LM §5.2,
  classifier guidance; here a constraint needs no classifier): -sum over the words of
  log max-ish_i p_i(word) (a logsumexp over positions). The step size is ``guide_scale``
  times the current noise's standard deviation, the RMS distance the vectors to generate
  move (the known ones stay and do not count); a guided step costs two model calls.

Commit policies, remasking, blocks, caches and classifier-free guidance do not apply and are
refused in one line (``check``). Neither run shares forward passes (each passes its own
vectors and time), so the server runs them alone, one ``advance()`` per step.

Inside: ``BagOfWords``, ``guide``, ``EmbedRun``, ``LatentRun``, the decoders
``EmbedDiffusionDecoder`` and ``LatentDiffusionDecoder``; the refusals other tasks ask of a
checkpoint's facts: ``refuse_commit_loop`` (template tasks), ``refuse_mask_elbo`` (lm-eval),
``takes_no_prompt`` (a latent model's unconditional samples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import Canvas, CanvasConstraint, as_rows
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.objectives.continuous import (
    TIME_SCALE,
    SqrtSchedule,
    expected_embedding,
    token_embeddings,
    with_self_condition,
)
from unmask.objectives.latent import decode_logits, denoise
from unmask.sampling.ar import RowGenerators, row_generators
from unmask.sampling.loop import add_gumbel_noise, forbid_tokens
from unmask.sampling.policies import Draws, RowDraws
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    ViewCallback,
    make_generator,
    model_device,
)
from unmask.sampling.registry import (
    COMMIT_LOOP_OPTIONS,
    DECODERS,
    SIGMA_HINT,
    Decoder,
    Prompts,
    Target,
    check_penalty_decoder,
    refuse_top_k,
    refuse_unused,
    register_decoder,
)
from unmask.sampling.sedd import banned_ids

Constraint = Callable[[Tensor], Tensor]
"""``constraint(logits (B, G, V)) -> (B,)`` loss, differentiable; lower = better satisfied."""


class BagOfWords:
    """Loss of a bag of required tokens: sum over ``ids`` of -logsumexp_i log p_i(id) over the
    positions i of the generation region (a soft "some position holds it")."""

    def __init__(self, ids: Sequence[int]) -> None:
        if not ids:
            raise UserError("guide_words gave no tokens")
        self.ids = list(ids)

    def __call__(self, logits: Tensor) -> Tensor:
        logp = logits.float().log_softmax(dim=-1)[..., self.ids]  # (B, G, W)
        return -logp.logsumexp(dim=1).sum(dim=-1)  # (B,)


def guide(
    state: Tensor,
    logits_of: Callable[[Tensor], Tensor],
    constraint: Constraint,
    step: float,
    movable: Tensor | None = None,
) -> Tensor:
    """``state`` (B, N, D) moved by ``step`` (in units of its RMS) against the gradient of
    ``constraint(logits_of(state))``: one step of gradient guidance. Each row's gradient is
    normalised to unit RMS over the vectors it moves, ``movable`` (B, N) bool (all when
    None; the others stay), so ``step`` is the RMS distance each row's moving vectors go,
    whatever the loss' scale and however many vectors stay (a prompt, padding)."""
    with torch.enable_grad():
        x = state.detach().requires_grad_(True)
        loss = constraint(logits_of(x)).sum()
        (grad,) = torch.autograd.grad(loss, x)
    grad = grad.float()
    if movable is None:
        count = torch.full((grad.shape[0], 1, 1), float(grad.shape[1] * grad.shape[2]),
                           device=grad.device)
    else:
        keep = movable.to(grad.device, grad.dtype)  # (B, N)
        grad = grad * keep[..., None]
        count = (keep.sum(dim=1) * grad.shape[2])[:, None, None]
    ms = grad.pow(2).sum(dim=(1, 2), keepdim=True) / count.clamp_min(1.0)  # (B, 1, 1)
    rms = ms.sqrt().clamp_min(1e-12)
    return (state - step * (grad / rms).to(state.dtype)).detach()


def _guide_ids(target: Target, config: SampleConfig) -> list[int] | None:
    if config.guide_words is None:
        return None
    tok = target.aux.get("tokenizer")
    if tok is None:
        raise UserError("guide_words needs the checkpoint's tokenizer (run through unmask.api)")
    ids: list[int] = []
    for word in (w.strip() for w in config.guide_words.split(",")):
        if word:  # a BPE word token carries its leading space, as in running text
            ids.extend(tok.encode(" " + word))
    return ids


CONTINUOUS_UNUSED = ("block_length", "cfg_scale", *COMMIT_LOOP_OPTIONS)
"""What the continuous decoders have no use for (``Decoder.unused``)."""

CONTINUOUS_WHY = ("denoises a continuous state (no commit policy, blocks, cache, token "
                  "editing or cfg)")


def check_options(name: str, config: SampleConfig) -> None:
    """Refuse options that belong to the commit loop or to causal models, the penalties
    (no logits to apply them to), and values that cannot work, for a run started without
    ``choose_decoder`` (infill's)."""
    refuse_top_k(name, config)
    refuse_unused(DECODERS[name], config)
    check_penalty_decoder(name, config)
    _check_values(config)


def _check_values(config: SampleConfig) -> None:
    """Refuse a gen_length, steps or temperature no run can take."""
    if config.gen_length <= 0 or config.steps <= 0:
        raise UserError(
            f"gen_length and steps must be positive, got {config.gen_length}, {config.steps}"
        )
    if not config.temperature >= 0:
        raise UserError(f"temperature must be >= 0, got {config.temperature}")


class _GaussianRun(DecoderRun):
    """The ancestral sampler both runs share (see the module docstring). Subclasses give
    ``_forward(state, t)`` (the model's output), ``_view_logits(out)`` (B, G, V),
    ``_x0(out)`` (the x0 prediction; it also sets the rounded canvas ``ids``) and
    ``_finish(x0)``; ``_prepare(t)`` and ``_keep(old, new)`` serve infilling. The run works
    on a copy of the canvas: the caller's is not modified (it was filled in place, so a second
    run on it found nothing left to sample, and ``forbid_eos`` added its constraint to it).

    ``generator``: one per row (CPU ``RowGenerators``; None: one for the run, seeded
    ``config.seed``): row i then draws, from its own, the noise of the shapes its run alone
    draws (its own columns, without the left padding), so a batch of seeded rows writes
    what each row writes alone (``Decoder.row_seeds``)."""

    schedule = SqrtSchedule()
    decoder = ""
    """The decoder's registry name (``check_options`` of a run started without it)."""

    def __init__(
        self,
        model: Any,
        canvas: Canvas,
        config: SampleConfig,
        *,
        eos_id: int | None,
        constraint: Constraint | None,
        on_view: ViewCallback | None,
        generator: RowGenerators | None = None,
    ) -> None:
        check_options(self.decoder, config)  # also when started without choose_decoder
        canvas = canvas.clone()  # the caller's canvas is not modified (as ``SEDDRun``)
        self.model, self.canvas, self.eos_id, self.on_view = model, canvas, eos_id, on_view
        self.mask_id = canvas.mask_id
        start, end = canvas.region
        self.gen_length = end - start
        self.temperature = config.temperature
        self.generator: Draws = (make_generator(config.seed, "cpu") if generator is None
                                 else self._row_draws(generator, canvas))
        self.grid = torch.linspace(1.0, 0.0, config.steps + 1, dtype=torch.float64).tolist()
        self.constraint, self.guide_scale = constraint, config.guide_scale
        if config.forbid_eos:
            if eos_id is None:
                raise UserError("forbid_eos needs the EOS id (eos_id is None)")
            canvas.constraints.append(forbid_tokens([eos_id]))
        # never rounded to: the special tokens (not EOS), none of them a training target
        self.banned = torch.tensor(
            sorted({*banned_ids(getattr(model, "config", None)), canvas.mask_id}),
            dtype=torch.long,
        )
        self.ids = canvas.tokens.clone()  # (B, L): the rounded canvas of the last step
        # what the last step's ``_round`` took the argmax of, (B, L, V), kept only where a
        # gap's automaton may need it again (``EmbedRun._round_in_order``): it is large
        self.keep_scores = any(isinstance(c, CanvasConstraint) for c in canvas.constraints)
        self.scores: Tensor | None = None
        self.state = torch.empty(0)
        self.nfe = self.steps = 0

    def _row_draws(self, generators: RowGenerators, canvas: Canvas) -> RowDraws:
        """A generator per row over the canvas' columns: row i's real ones (left-padded)."""
        return RowDraws.of(generators, (canvas.batch_size, canvas.length), canvas.attention_mask)

    def _row_spans(self, n: int) -> list[tuple[int, int, torch.Generator]]:
        """(row, first column, generator) of each row's own part of a (B, n, ...) tensor:
        one as wide as the draws' columns (``RowDraws.widths``: the canvas) leaves out the
        row's left padding; any other (a latent state) is the row's whole."""
        assert isinstance(self.generator, RowDraws)
        draws = self.generator
        cols = max(draws.widths)
        return [(i, n - w if n == cols else 0, g)
                for i, (g, w) in enumerate(zip(draws.generators, draws.widths, strict=True))]

    def _noise(self, shape: tuple[int, ...]) -> Tensor:
        """(B, n, D) standard normal draws on CPU (row by row with a generator per row, each
        row's (1, its columns, D) draw of its run alone; the padding 0)."""
        if not isinstance(self.generator, RowDraws):
            return torch.randn(shape, generator=self.generator)
        out = torch.zeros(shape)
        for i, lo, g in self._row_spans(shape[1]):
            out[i : i + 1, lo:] = torch.randn((1, shape[1] - lo, *shape[2:]), generator=g)
        return out

    def _posterior(self, x0_hat: Tensor, t: float, s: float) -> Tensor:
        """The state's ancestral step from t to s (its noise drawn row by row with a
        generator per row, ``_noise``)."""
        if not isinstance(self.generator, RowDraws):
            return self.schedule.posterior_step(self.state, x0_hat, t, s, self.generator)
        noise = self._noise(tuple(self.state.shape))
        return self.schedule.posterior_step(self.state, x0_hat, t, s, None, noise=noise)

    @property
    def done(self) -> bool:
        return self.steps == len(self.grid) - 1

    def _forward(self, state: Tensor, t: float) -> Any:
        raise NotImplementedError

    def _view_logits(self, out: Any) -> Tensor:
        raise NotImplementedError

    def _x0(self, out: Any) -> Tensor:
        raise NotImplementedError

    def _finish(self, x0_hat: Tensor) -> None:
        raise NotImplementedError

    def _prepare(self, t: float) -> None:
        """Before a step at time ``t`` (infilling: the known positions' fresh draws)."""

    def _keep(self, old: Tensor, new: Tensor) -> Tensor:
        """The state after guidance moved ``old`` to ``new`` (infilling keeps known ones)."""
        return new

    def _movable(self) -> Tensor | None:
        """(B, N) bool: the state vectors guidance moves (None: all); its step is normalised
        over them alone."""
        return None

    def _round(self, logits: Tensor, temperature: float | None = None) -> Tensor:
        """Token ids from logits (..., V): the canvas constraints (full-canvas logits only),
        never a special token but EOS (``banned_ids``: [MASK], [PAD], BOS, ...), then the
        argmax or a draw at ``temperature`` (default: the run's; 0 draws nothing)."""
        temperature = self.temperature if temperature is None else temperature
        logits = logits.float().clone()
        if logits.shape[:2] == self.canvas.tokens.shape:
            logits = self.canvas.apply_constraints(logits)
        logits.index_fill_(-1, self.banned.to(logits.device), float("-inf"))
        scores = add_gumbel_noise(logits, temperature, self.generator)  # (..., V)
        if self.keep_scores and self.steps == len(self.grid) - 2:  # the last step's
            self.scores = scores
        return scores.argmax(dim=-1)

    def advance(self) -> None:
        t, s = self.grid[self.steps], self.grid[self.steps + 1]
        with torch.no_grad():
            self._prepare(t)
            if self.constraint is not None and self.guide_scale > 0:
                sd = float(1.0 - self.schedule.alpha_bar(torch.tensor(t))) ** 0.5
                moved = guide(
                    self.state,
                    lambda x: self._view_logits(self._forward(x, t)),
                    self.constraint,
                    self.guide_scale * sd,
                    self._movable(),
                )
                self.state = self._keep(self.state, moved)
                self.nfe += 1
            x0_hat = self._x0(self._forward(self.state, t))
            self.nfe += 1
            self.steps += 1
            if self.done:
                self._finish(x0_hat)
            else:
                self.state = self._posterior(x0_hat, t, s)
        self._report()

    def view(self) -> Tensor:
        start, end = self.canvas.region
        return self.ids[:, start:end]  # (B, G)

    def result(self) -> GenerateResult:
        return GenerateResult(
            tokens=self.canvas.tokens,
            region=self.canvas.region,
            nfe=self.nfe,
            steps=self.steps,
            eos_id=self.eos_id,
            attention_mask=self.canvas.attention_mask,
        )


class EmbedRun(_GaussianRun):
    """Embedding diffusion over a canvas (decoder ``embed-diffusion``; module docstring)."""

    decoder = "embed-diffusion"

    def __init__(
        self,
        model: Any,
        canvas: Canvas,
        config: SampleConfig,
        *,
        eos_id: int | None = None,
        constraint: Constraint | None = None,
        on_view: ViewCallback | None = None,
        generator: RowGenerators | None = None,
    ) -> None:
        super().__init__(
            model, canvas, config, eos_id=eos_id, constraint=constraint, on_view=on_view,
            generator=generator,
        )
        with torch.no_grad():  # float32 whatever the weights' dtype: the state is a
            # Gaussian chain (it also turned float32 at the first re-noising of known positions)
            self.table = token_embeddings(model).float()  # (V, D)
        self.self_conditioned = hasattr(getattr(model, "module", model), "self_condition")
        self.known = canvas.locked | ~canvas.masked  # (B, L): given tokens and padding
        B, L = canvas.tokens.shape
        noise = self._noise((B, L, self.table.shape[1]))
        self.state = noise.to(self.table.device, self.table.dtype)  # (B, L, D): x_1 ~ N(0, I)
        self.x0_hat = self.table[canvas.tokens]  # (B, L, D): the last clamped prediction
        self.previous: Tensor | None = None  # a self-conditioned model's last x0 estimate

    def _prepare(self, t: float) -> None:
        # replacement: known positions hold a fresh draw of q(x_t | their embedding)
        B = self.state.shape[0]
        x0 = self.table[self.canvas.tokens]  # (B, L, D)
        if isinstance(self.generator, RowDraws):  # each row's own columns, as alone
            fresh = self.schedule.q_sample(x0, torch.full((B,), t), None,
                                           noise=self._noise(tuple(x0.shape)))
        else:
            fresh = self.schedule.q_sample(x0, torch.full((B,), t), self.generator)  # (B, L, D)
        self.state = torch.where(self.known[..., None], fresh, self.state)

    def _keep(self, old: Tensor, new: Tensor) -> Tensor:
        return torch.where(self.known[..., None], old, new)

    def _movable(self) -> Tensor:
        return ~self.known

    def _forward(self, state: Tensor, t: float) -> Tensor:
        sigma = torch.full((state.shape[0],), TIME_SCALE * t, device=state.device)
        return self.model(
            self.canvas.tokens,
            attention_mask=self.canvas.attention_mask,
            sigma=sigma,
            inputs_embeds=with_self_condition(self.model, state, self.previous),
        )  # (B, L, V)

    def _view_logits(self, out: Tensor) -> Tensor:
        start, end = self.canvas.region
        return out[:, start:end]

    def _x0(self, out: Tensor) -> Tensor:
        if self.self_conditioned:  # the next step reads this step's estimate
            self.previous = expected_embedding(out, self.table)  # (B, L, D)
        # the clamping trick: the prediction is exactly the embedding of the rounded token
        self.ids = torch.where(self.known, self.canvas.tokens, self._round(out))  # (B, L)
        self.x0_hat = self.table[self.ids]  # (B, L, D)
        return self.x0_hat

    def _finish(self, x0_hat: Tensor) -> None:
        self._round_in_order()
        self.canvas.commit(~self.known, self.ids)

    def _round_in_order(self) -> None:
        """Round the gaps the last step broke again, each on its own from the left, each
        position seeing the tokens before it (``CanvasConstraint.complete``: for
        ``unmask.infill``'s gaps, well-formed UTF-8 and no special token; the automaton
        allows a position only what keeps its gap completable after the tokens to its left).
        The last step's scores (float64, noise included) are kept: no new draws; a gap the
        rounding of every position at once left valid keeps its tokens."""
        spans = self.canvas.violations(self.ids)
        if not spans:
            return
        assert self.scores is not None  # kept by ``_round`` at the last step
        broken = torch.zeros_like(self.known)
        for r, s, e in spans:
            broken[r, s:e] = True
        broken &= ~self.known  # (B, L): given text is kept
        draft = torch.where(broken, self.canvas.tokens, self.ids)  # broken gaps open (masks)
        for proc in self.canvas.constraints:
            if isinstance(proc, CanvasConstraint):
                draft = proc.complete(draft, self.scores)
        self.ids = torch.where(broken, draft, self.ids)
        self.scores = None


class LatentRun(_GaussianRun):
    """Latent diffusion of whole windows (decoder ``latent-diffusion``; module docstring)."""

    decoder = "latent-diffusion"

    def __init__(
        self,
        model: Any,
        canvas: Canvas,
        config: SampleConfig,
        *,
        eos_id: int | None = None,
        constraint: Constraint | None = None,
        on_view: ViewCallback | None = None,
        generator: RowGenerators | None = None,
    ) -> None:
        super().__init__(
            model, canvas, config, eos_id=eos_id, constraint=constraint, on_view=on_view,
            generator=generator,
        )
        self.model_config = model.config
        K, D = self.model_config.latent_len, self.model_config.d_model
        device = model_device(model) or canvas.device
        noise = self._noise((canvas.batch_size, K, D))
        self.state = noise.to(device)  # (B, K, D): z_1 ~ N(0, I)
        self.previous: Tensor | None = None  # the last z0 prediction (self-conditioning)

    def _row_draws(self, generators: RowGenerators, canvas: Canvas) -> RowDraws:
        """Its draws of tokens cover the generation region alone (the same in every row)."""
        return RowDraws(generators, [self.gen_length] * canvas.batch_size)

    def _forward(self, state: Tensor, t: float) -> tuple[Tensor, Tensor]:
        t_rows = torch.full((state.shape[0],), t)
        return denoise(self.model, self.model_config, state, t_rows, self.gen_length, self.previous)

    def _view_logits(self, out: tuple[Tensor, Tensor]) -> Tensor:
        return out[1]  # (B, G, V): the text read off z_t

    def _x0(self, out: tuple[Tensor, Tensor]) -> Tensor:
        start, end = self.canvas.region
        # the view alone: its argmax (the state never reads it; a draw at the temperature
        # each step cost 3x the model's time: 11.9 s vs 3.0 s for 16 steps of 16 x 64
        # tokens over a 4,096-token vocabulary, bench preset, one CPU thread)
        self.ids[:, start:end] = self._round(out[1], temperature=0.0)
        self.previous = out[0]
        return out[0]  # (B, K, D)

    def _finish(self, x0_hat: Tensor) -> None:
        logits = decode_logits(self.model, self.model_config, x0_hat, self.gen_length)
        self.nfe += 1
        start, end = self.canvas.region
        self.ids[:, start:end] = self._round(logits)  # (B, G)
        self.canvas.tokens[:, start:end] = self.ids[:, start:end]


CONTINUOUS_DECODERS = ("embed-diffusion", "latent-diffusion")
"""The decoders of this module: they denoise vectors, not a canvas of [MASK] tokens."""


def refuse_commit_loop(facts: ModelFacts, task: str) -> None:
    """One-line ``UserError`` when ``task`` (a template task of ``unmask.infill``, which runs
    the masked-diffusion commit loop) is asked of a checkpoint with no [MASK] state: a
    continuous-diffusion one, or a uniform-graph SEDD one (its network never read a [MASK])."""
    if facts.sedd_graph == "uniform":
        raise UserError(
            f"{task} runs the masked-diffusion commit loop, and a uniform-graph SEDD checkpoint "
            "never saw a [MASK] token; write [MASK] in a generate prompt instead (the sedd "
            "decoder draws those positions and keeps the given tokens)"
        )
    if facts.default_decoder not in CONTINUOUS_DECODERS:
        if facts.needs_sigma:  # infill runs its sedd decoder (unmask.api.infill_decoder)
            raise UserError(f"{task} runs the masked-diffusion commit loop, which cannot give "
                            f"this model its noise level: {SIGMA_HINT}; unmask infill fills "
                            "its fixed-length gaps ([MASK:n]) with decoder 'sedd'")
        return
    hint = (
        "fill plain [MASK] / [MASK:n] gaps with infill (or write [MASK] in a generate prompt)"
        if facts.default_decoder == "embed-diffusion"
        else "a latent model samples whole windows only"
    )
    raise UserError(
        f"{task} runs the masked-diffusion commit loop, which a checkpoint of objective "
        f"{facts.objective} has no use for; {hint}"
    )


def takes_no_prompt(facts: ModelFacts) -> bool:
    """Whether the checkpoint's own decoder samples whole windows from noise and refuses a
    prompt (``latent-diffusion``): its samples can only be unconditional."""
    return facts.default_decoder == "latent-diffusion"


def refuse_mask_elbo(facts: ModelFacts, task: str) -> None:
    """One-line ``UserError`` when ``task`` scores text by the masked-diffusion ELBO (feeding
    [MASK] tokens to a denoiser, ``unmask.evaluate.elbo_loglikelihood``) on a checkpoint that
    has no [MASK] state and no likelihood: a continuous-diffusion one or a uniform-graph SEDD
    one (a causal model is scored exactly, the others by their ELBO)."""
    if facts.default_decoder in CONTINUOUS_DECODERS:
        why = f"a checkpoint of objective {facts.objective} has no likelihood to score"
    elif facts.sedd_graph == "uniform":
        why = ("a uniform-graph SEDD checkpoint never read a [MASK] token; its own bound on "
               "held-out text: unmask eval RUN")
    elif facts.needs_sigma:
        why = f"that ELBO cannot give this model its noise level: {SIGMA_HINT}"
    else:
        return
    raise UserError(f"{task}: a diffusion model's continuations are scored by the "
                    f"masked-diffusion ELBO, and {why}")


def _check_facts(name: str, facts: ModelFacts, objectives: tuple[str, ...]) -> None:
    if facts.objective not in objectives:
        raise UserError(
            f"decoder {name!r} needs a checkpoint of objective {' or '.join(objectives)}; "
            f"this one is {facts.objective}: use decoder {facts.default_decoder!r}"
        )


def _canvas(target: Target, prompt_ids: Prompts, config: SampleConfig) -> Canvas:
    f = target.facts
    canvas = Canvas.from_prompts(prompt_ids, config.gen_length, mask_id=f.mask_id, pad_id=f.pad_id)
    if f.max_seq_len is not None and canvas.length > f.max_seq_len:
        raise UserError(
            f"the canvas ({canvas.length} tokens) exceeds the model's max_seq_len ({f.max_seq_len})"
        )
    return canvas.to(model_device(target.model) or canvas.device)


def _constraint(target: Target, config: SampleConfig) -> Constraint | None:
    ids = _guide_ids(target, config)
    return None if ids is None else BagOfWords(ids)


@register_decoder("embed-diffusion")
class EmbedDiffusionDecoder(Decoder):
    """Gaussian diffusion on token embeddings with the clamping trick (``EmbedRun``)."""

    summary = "continuous diffusion on token embeddings: ancestral steps, clamping, guidance"
    row_seeds = True
    unused, unused_why = CONTINUOUS_UNUSED, CONTINUOUS_WHY

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        _check_facts("embed-diffusion", facts, ("embed-diffusion",))
        refuse_top_k("embed-diffusion", config)  # unused options: choose_decoder refuses them
        _check_values(config)

    def start(
        self,
        target: Target,
        prompt_ids: Prompts,
        config: SampleConfig,
        *,
        on_view: ViewCallback | None = None,
        seeds: Sequence[int] | None = None,
    ) -> DecoderRun:
        canvas = _canvas(target, prompt_ids, config)
        return EmbedRun(
            target.model,
            canvas,
            config,
            eos_id=target.facts.eos_id,
            constraint=_constraint(target, config),
            on_view=on_view,
            generator=None if seeds is None else row_generators(seeds, "cpu"),
        )


@register_decoder("latent-diffusion")
class LatentDiffusionDecoder(Decoder):
    """Gaussian diffusion of an autoencoder's latents, decoded to text (``LatentRun``)."""

    summary = "latent diffusion: ancestral steps on latent vectors, then the decoder"
    row_seeds = True
    unused, unused_why = CONTINUOUS_UNUSED, CONTINUOUS_WHY

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        if facts.objective == "latent-ae":
            raise UserError(
                "this checkpoint is stage 1 of latent diffusion (an autoencoder); train "
                "stage 2 on it: unmask train --objective latent-diffusion --init RUN"
            )
        _check_facts("latent-diffusion", facts, ("latent-diffusion",))
        refuse_top_k("latent-diffusion", config)  # unused options: choose_decoder refuses them
        _check_values(config)

    def start(
        self,
        target: Target,
        prompt_ids: Prompts,
        config: SampleConfig,
        *,
        on_view: ViewCallback | None = None,
        seeds: Sequence[int] | None = None,
    ) -> DecoderRun:
        f = target.facts
        rows = as_rows(prompt_ids)
        if any(t not in (f.pad_id, f.bos_id) for r in rows for t in r):
            raise UserError(
                "a latent-diffusion model samples whole windows from noise and takes no "
                "prompt; give an empty prompt (steer it with guide_words instead)"
            )
        window = getattr(target.model.config, "latent_window", None)
        if window is not None and config.gen_length != window:
            raise UserError(
                f"decoder 'latent-diffusion': this latent model writes windows of {window} "
                f"tokens (the --seq-len its latents were trained on); ask for gen_length "
                f"{window} (--gen-length, max_tokens), got {config.gen_length}"
            )
        canvas = _canvas(target, [[] for _ in rows], config)
        return LatentRun(
            target.model,
            canvas,
            config,
            eos_id=f.eos_id,
            constraint=_constraint(target, config),
            on_view=on_view,
            generator=None if seeds is None else row_generators(seeds, "cpu"),
        )


__all__ = [
    "CONTINUOUS_DECODERS",
    "BagOfWords",
    "Constraint",
    "EmbedDiffusionDecoder",
    "EmbedRun",
    "LatentDiffusionDecoder",
    "LatentRun",
    "check_options",
    "guide",
    "refuse_commit_loop",
    "refuse_mask_elbo",
    "takes_no_prompt",
]
