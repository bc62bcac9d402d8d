"""What a training run did and how good its model is (``unmask eval``, docs/evaluation.md).

Inside:

- ``RunInfo`` / ``find_run``: a run directory or checkpoint folder resolved to its
  checkpoint, its training configuration and its ``metrics.jsonl``.
- ``read_metrics`` and ``TrainingSummary`` (``summarize_training``): the training and
  validation records of ``metrics.jsonl``, summed up.
- ``heldout_bound``: the ELBO bound and bits per byte on the run's validation split, by
  the same call ``unmask.train`` makes for ``val_bpb`` (``unmask.evaluate.evaluate_loss``),
  so the number equals the one the run logged for the same weights.
- ``sample_quality``: generative perplexity of sampled continuations under a reference
  scorer (``unmask.scoring``) with the unigram entropy of the samples beside it (a low
  perplexity alone can mean repetition).
- ``has_demo_heldout`` / ``demo_heldout``: the shipped demo model, measured on its own
  held-out text (the packaged corpus' validation split) when no ``--data`` is given.
- ``plot_loss_curve``: training loss and validation bound against step, as a PNG
  (matplotlib, the optional ``plot`` extra).
- ``RunReport``: all of it, as text lines or a JSON-ready dict.

Heavy imports (torch, matplotlib) happen inside the functions that need them.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unmask.config import TrainConfig, from_dict, load_json
from unmask.errors import UserError
from unmask.files import BadJSON, as_number, finite_or_null, parse_json, read_json
from unmask.messages import plural

PLOT_INSTALL = "pip install matplotlib"
"""How to get the loss curve (also the ``plot`` extra of a source checkout)."""

PLOT_NAME = "loss_curve.png"


@dataclass
class RunInfo:
    """A run (or a bare checkpoint) as ``unmask eval`` finds it."""

    checkpoint: Path
    """Folder holding config.json and model.safetensors."""
    run: Path | None
    """The run directory (train_config.json, metrics.jsonl), or None for a bare checkpoint."""
    train_config: TrainConfig | None
    """How the model was trained: the run's train_config.json, else the checkpoint's
    trainer.json; None for an imported or hand-made checkpoint."""
    step: int | None
    """Optimizer steps behind the checkpoint (trainer.json), when known."""
    world_size: int = 1
    """Processes of the session that saved the checkpoint (trainer.json; ``best.json`` for
    ``RUN/best``): its validations read batches of a size that depends on them
    (``validation_batches``), and a diffusion bound's noise is drawn per batch read."""

    @property
    def metrics_path(self) -> Path | None:
        """The run's ``metrics.jsonl``, when there is one."""
        if self.run is None or not (self.run / "metrics.jsonl").is_file():
            return None
        return self.run / "metrics.jsonl"


def find_run(path: str | Path) -> RunInfo:
    """Resolve a run directory or checkpoint folder; ``UserError`` when it is neither. The
    ``--keep-best`` weights (``RUN/best``, which hold no trainer state) belong to the run
    above them, at the step of the run's last ``best`` event."""
    from unmask.checkpoint import BEST, BEST_RECORD, checkpoint_dir

    ckpt = checkpoint_dir(path)
    run: Path | None = None
    best = ckpt.parent.name == BEST
    for cand in (Path(path), ckpt.parent, *([ckpt.parent.parent] if best else [])):
        if (cand / "train_config.json").is_file() or (cand / "metrics.jsonl").is_file():
            run = cand
            break
    cfg: TrainConfig | None = None
    step: int | None = None
    trainer = ckpt / "trainer.json"
    meta: dict[str, Any] = {}
    if trainer.is_file():
        meta = read_json(trainer)  # one-line errors: not JSON, not UTF-8, not an object
        step = meta.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise UserError(f"{trainer}: step is not a whole number ({json.dumps(step)})")
    if best and step is None and run is not None and (run / "metrics.jsonl").is_file():
        events = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "best"]
        step = events[-1].get("step") if events else None
    if best and not meta and (ckpt / BEST_RECORD).is_file():
        meta = read_json(ckpt / BEST_RECORD)
    world = meta.get("world_size")
    world = world if isinstance(world, int) and not isinstance(world, bool) and world > 0 else 1
    if run is not None and (run / "train_config.json").is_file():
        cfg = load_json(TrainConfig, run / "train_config.json")
    elif isinstance(meta.get("train_config"), dict):
        cfg = from_dict(TrainConfig, meta["train_config"], source=str(trainer))
    return RunInfo(checkpoint=ckpt, run=run, train_config=cfg, step=step, world_size=world)


_METRIC_FIELDS = {"step": int, "params": int, "loss": float, "val_loss": float,
                  "val_bpb": float, "tokens_per_s": float, "elapsed_s": float}
"""The fields of a ``metrics.jsonl`` record that ``summarize_training`` reads, by kind: a
whole number, or any number (``null``: a non-finite one, as ``json_line`` writes it)."""


def _bad_field(record: dict[str, Any]) -> str | None:
    """Why ``record`` cannot be summed up (a field of ``_METRIC_FIELDS`` of another type), or
    None."""
    for name, value in record.items():
        kind = _METRIC_FIELDS.get(name)
        if kind is None or (value is None and name != "step"):
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (kind is int and not float(value).is_integer()):
            what = "a whole number" if kind is int else "a number"
            return f"{name} is not {what} ({json.dumps(value)})"
    return None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a torn last line (a run killed mid-write) is
    skipped, any other bad line (not JSON, not an object, a field ``summarize_training``
    reads of another type) is a ``UserError`` naming it."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:  # the CLI's catch-all named no file
        raise UserError(f"{p}: not UTF-8 text (byte {e.start}), not a metrics log") from None
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = parse_json(line, p, line=i, what="a JSON line")
        except BadJSON:
            if i == len(lines):
                break
            raise
        if not isinstance(record, dict):
            raise UserError(f"{p}:{i}: not a JSON object (a metrics record is one)")
        if (why := _bad_field(record)) is not None:
            raise UserError(f"{p}:{i}: {why}")
        out.append(record)
    return out


@dataclass
class TrainingSummary:
    """The last state of a run, from ``metrics.jsonl``."""

    steps: list[int] = field(default_factory=list)
    """Steps of the training records."""
    loss: list[float] = field(default_factory=list)
    """Training loss (nats per token) at ``steps``."""
    val_steps: list[int] = field(default_factory=list)
    """Steps of the validation records."""
    val_loss: list[float] = field(default_factory=list)
    """Validation bound (nats per token) at ``val_steps``."""
    val_bpb: list[float] = field(default_factory=list)
    """Validation bits per byte at ``val_steps``."""
    params: int | None = None
    """Model parameters (the run's start record)."""
    tokens_per_s: float | None = None
    """Training throughput at the last training record."""
    elapsed_s: float | None = None
    """Seconds of training at the last training record (this session, if resumed)."""

    def as_dict(self) -> dict[str, Any]:
        """The last values (not the curves): what a report line shows."""
        return {
            "last_step": self.steps[-1] if self.steps else None,
            "last_loss": self.loss[-1] if self.loss else None,
            "last_val_bpb": self.val_bpb[-1] if self.val_bpb else None,
            # the least finite value (min() kept a NaN that came first: a validation that
            # overflowed hid every later one); NaN when none is finite (no bound)
            "best_val_bpb": min((v for v in self.val_bpb if math.isfinite(v)), default=math.nan)
            if self.val_bpb else None,
            "params": self.params,
            "tokens_per_s": self.tokens_per_s,
            "elapsed_s": self.elapsed_s,
        }


def summarize_training(records: Sequence[dict[str, Any]]) -> TrainingSummary:
    """Curves and last values of the records ``unmask.train`` writes: ``{"event": "start",
    "params": ...}``, ``{"step", "loss", "tokens_per_s", "elapsed_s", ...}`` and
    ``{"step", "val_loss", "val_bpb", ...}``."""
    s = TrainingSummary()
    for r in records:
        if r.get("event") == "start":
            s.params = r.get("params", s.params)
        elif "loss" in r and "step" in r:
            s.steps.append(int(r["step"]))
            s.loss.append(as_number(r["loss"]))  # null: a skipped step's NaN
            s.tokens_per_s = r.get("tokens_per_s", s.tokens_per_s)
            s.elapsed_s = r.get("elapsed_s", s.elapsed_s)
        elif "val_loss" in r and "step" in r:
            s.val_steps.append(int(r["step"]))
            s.val_loss.append(as_number(r["val_loss"]))
            s.val_bpb.append(as_number(r.get("val_bpb", math.nan)))
    return s


def heldout_bound(
    model: Any,
    config: TrainConfig,
    *,
    data: str | Path | None = None,
    max_batches: int | None = None,
    device: str = "cpu",
    noise_draws: int = 1,
    world: int = 1,
) -> Any:
    """The run's held-out numbers (``unmask.evaluate.EvalResult``: ELBO bound in nats per
    token, its perplexity bound and bits per byte) on the validation split of ``data``
    (default: the dataset the run trained on). An ``sft`` model is measured by the ``mdlm``
    bound (it is a masked-diffusion model; its pairs have no validation split), on ``data``.

    A diffusion bound is a Monte Carlo estimate: on the demo's 32,768 held-out tokens one draw
    of the noise moves it by about 0.02 bits/byte (standard deviation over seeds), more than
    many differences between two checkpoints. ``noise_draws`` K > 1 averages K draws (seeds
    1234, 1235, ...; the first is the one training logs) and reports their standard error;
    a causal model's likelihood is exact, drawn once.

    The call is the one ``unmask.train`` makes for ``val_loss`` / ``val_bpb`` (objective,
    ``seq_len``, batches (``validation_batches``, as ``world`` processes run it: a diffusion
    bound's noise is drawn per batch read), ``eps``, fixed noise seed, the autocast of its
    ``precision``; ``max_batches`` default the run's ``eval_batches``; 0 = the whole split),
    so for the same weights it gives the number the run logged (``world``: the processes it
    ran on, ``RunInfo.world_size``), and more batches give a steadier one.
    """
    import torch

    from unmask.data import TokenDataset
    from unmask.evaluate import evaluate_loss
    from unmask.scoring import perplexity
    from unmask.train_guards import validation_batches

    objective = config.objective
    if objective == "sft":  # LLaDA's SFT trains a masked-diffusion model: mdlm's bound
        if data is None:
            raise UserError(
                "objective sft trains on prompt/response pairs, which have no validation "
                "split; give a prepared corpus of its tokenizer"
            )
        objective = "mdlm"
    folder = Path(data if data is not None else config.data)
    if not (folder / "index.json").is_file():
        raise UserError(
            f"{folder}: no prepared dataset here (give --data DIR from 'unmask prepare')"
        )
    if noise_draws < 1:
        raise UserError(f"noise draws must be at least 1, got {noise_draws}")
    rows, batches = validation_batches(config, world, batches=max_batches)  # as the run did
    dev = torch.device(device)
    val = TokenDataset(folder, "val")
    if len(val) == 0:  # it read "split 'val' has 0 tokens, fewer than seq_len=N"
        raise UserError(f"{folder} has no validation split (prepared with --val-fraction 0); "
                        "give --data DIR, a corpus of the model's tokenizer prepared with one")
    autocast = _autocast(config.precision, dev)

    def draw(k: int) -> Any:
        return evaluate_loss(
            model,
            val,
            objective=objective,
            seq_len=config.seq_len,
            batch_size=rows,
            max_batches=batches,
            eps=config.eps,
            device=dev,
            autocast_dtype=autocast,
            seed=1234 + k,
        )

    first = draw(0)
    if noise_draws == 1 or first.exact:
        return first
    import dataclasses
    import statistics

    results = [first, *(draw(k) for k in range(1, noise_draws))]
    losses = [r.loss for r in results]
    loss = statistics.fmean(losses)
    loss_se = statistics.stdev(losses) / math.sqrt(noise_draws)
    if not first.likelihood:  # a training loss only: no bits/byte (NaN) to average
        return dataclasses.replace(first, loss=loss, noise_draws=noise_draws, loss_se=loss_se)
    bpbs = [r.bpb for r in results]
    return dataclasses.replace(
        first, loss=loss, ppl=perplexity(loss), bpb=statistics.fmean(bpbs),
        noise_draws=noise_draws, bpb_se=statistics.stdev(bpbs) / math.sqrt(noise_draws),
        loss_se=loss_se,
    )


def _autocast(precision: str, device: Any) -> Any:
    """The autocast dtype a run of ``precision`` validated with, on ``device``
    (``unmask.parallel.resolve_precision``, as training reads it), so the bound is the number
    the run logged: bf16 on a GPU was assumed (a run trained in fp32 or fp16 there, or in
    bf16 on a CPU, logged another). Where ``device`` cannot run the run's precision (fp16
    on a CPU, bf16 on a GPU without it), that device's default; bf16 on a CPU without torch's
    bf16 kernels (``cpu_bf16_note``), fp32."""
    import torch

    from unmask.parallel import resolve_precision

    device = torch.device(device)
    try:
        dtype = resolve_precision(precision, device).autocast
    except UserError:
        return resolve_precision("auto", device).autocast
    return None if cpu_bf16_note(precision, device) else dtype


def cpu_bf16_note(precision: str, device: Any) -> str | None:
    """Why the held-out bound of a run trained in ``precision`` bf16 is measured in fp32 on
    ``device``, else None: a CPU without oneDNN's bf16 kernels (``unmask.parallel.cpu_bf16``
    is ``"generic"``: AVX2 only, say), where bf16 is pathologically slow. Measured with the demo
    model (4 batches of 8 x 256 tokens, one thread): bf16 4.6x slower than fp32 there, 2.1x
    faster on a CPU with native bf16 (``avx512_bf16``); the bound moved by 0.0004 nats
    (0.02%). AVX-512 without native bf16 keeps the run's bf16: about fp32's speed there."""
    import torch

    from unmask.parallel import cpu_bf16, resolve_precision

    device = torch.device(device)
    try:
        dtype = resolve_precision(precision, device).autocast
    except UserError:
        return None
    if dtype is not torch.bfloat16 or device.type != "cpu" or cpu_bf16() != "generic":
        return None
    return ("held-out: measured in fp32, not the run's bf16: torch has only its generic bf16 "
            "kernel on this CPU (oneDNN's need AVX-512 or Arm bf16), about 4x slower than fp32; "
            "the bound may differ from the logged val_bpb in the 4th digit")


DEMO_CORPUS = "web-bible.txt.gz"
"""The packaged corpus the shipped demo model was trained on (``unmask/assets``)."""
DEMO_VAL_FRACTION = 0.02
"""The demo's ``unmask prepare --val-fraction`` (its TRAINING.md): with the tokenizer and the
whole file one document (no ``--line-docs``), it gives the split the model was validated on."""


def has_demo_heldout(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` (a folder ``find_run`` resolved) is the shipped demo model and
    the packaged corpus it was trained on is installed (``demo_heldout`` can prepare it)."""
    from unmask.files import asset_path

    demo = asset_path("demo")
    return (demo.is_dir() and Path(checkpoint).resolve() == demo.resolve()
            and asset_path(DEMO_CORPUS).is_file())


def demo_heldout(out: str | Path) -> Path:
    """The shipped demo model's held-out text as a prepared dataset at ``out`` (a new folder;
    ~4 s): the packaged corpus tokenized by the demo's tokenizer and split as its training
    data was (``DEMO_VAL_FRACTION``, no ``--line-docs``), so its validation split is the
    text the demo was validated on (TRAINING.md's "whole held-out split": 32,768 tokens).
    With ``--line-docs`` each verse ends in an EOS the model never saw (1.64 bits/byte
    against 1.31)."""
    from unmask.data import prepare
    from unmask.files import asset_path

    prepare([asset_path(DEMO_CORPUS)], out, tokenizer=asset_path("demo") / "tokenizer.json",
            val_fraction=DEMO_VAL_FRACTION, progress=False)
    return Path(out)


@dataclass
class SampleQuality:
    """Generative perplexity of a set of samples, with their diversity beside it."""

    gen_ppl: float
    """exp(Σ NLL / Σ tokens) of the continuations under the reference, given their prompts."""
    entropy: float
    """Mean unigram entropy of the samples' token ids (nats), cut at EOS."""
    samples: int
    """Number of samples."""
    gen_length: int
    """Tokens sampled per prompt."""
    scorer: str
    """The reference model's name."""
    texts: list[str] = field(default_factory=list)
    """The continuations that were scored."""


Sampler = Callable[[list[list[int]]], Any]
"""``prompt ids -> GenerateResult`` (``gen_ids``, ``texts(tokenizer)``): how samples are
drawn; ``unmask eval`` passes the path of ``unmask generate``, so the number describes
what users get."""


def sample_quality(
    tokenizer: Any,
    prompts: Sequence[list[int]],
    *,
    sampler: Sampler,
    scorer: Any,
    gen_length: int,
    eos_id: int | None,
) -> SampleQuality:
    """Sample a continuation of each prompt with ``sampler`` and score it with ``scorer``
    (a ``unmask.scoring.ReferenceScorer``) as the continuation of the prompt's text; the
    entropy counts each sample's ids up to ``eos_id``."""
    from unmask.evaluate import unigram_entropy
    from unmask.sampling.protocol import cut_at_eos

    result = sampler([list(p) for p in prompts])
    texts = result.texts(tokenizer)
    prompt_texts = [tokenizer.decode(list(p)) for p in prompts]
    ppl = scorer.perplexity(texts, prompts=prompt_texts)
    entropy = unigram_entropy([cut_at_eos(ids, eos_id) for ids in result.gen_ids])
    return SampleQuality(
        gen_ppl=ppl,
        entropy=entropy,
        samples=len(texts),
        gen_length=gen_length,
        scorer=getattr(scorer, "name", "reference"),
        texts=texts,
    )


def decoding_options(
    loaded: Any, config: Any, *, always: Sequence[str] = ()
) -> dict[str, Any]:
    """What a run of ``config`` on ``loaded`` decodes with, as a report names it: the decoder
    ``unmask.api`` chooses (not ``auto``), the temperature (SEDD: its ``sedd_sampler``
    instead), and only the options that decoder
    reads: the block length it runs (a bd3lm model's own block size; one block of
    ``gen_length`` for ``llada`` without one) and the commit policy of the commit-loop
    decoders, the steps of a decoder with a fixed schedule (not of ``ar``); then every other
    option set away from its default (``top_k``, ``cfg_scale``, a cache, a threshold, ...:
    the decoder refuses one it does not read), so two reports that differ in how they
    sampled say so, with the options ``always`` named at their defaults too. Not
    ``gen_length`` and ``seed``, which reports name apart."""
    import dataclasses

    from unmask.api import _POLICY_OPTIONS, facts_of
    from unmask.config import SampleConfig
    from unmask.sampling import choose_decoder

    facts = facts_of(loaded)
    decoder = choose_decoder(facts, config)
    out: dict[str, Any] = {"decoder": decoder.name}
    if "temperature" not in decoder.unused:  # sedd draws from its reverse process instead
        out["temperature"] = config.temperature
    if decoder.name == "sedd":  # what it draws with
        out["sedd_sampler"] = config.sedd_sampler
    if decoder.name == "bd3lm":
        out["block_length"] = facts.block_size
    elif decoder.name == "llada":
        out["block_length"] = config.block_length or config.gen_length
    if decoder.uses_steps(config):
        out["steps"] = config.steps
    if decoder.name in ("llada", "bd3lm"):  # the decoders with commit policies
        out["policy"] = config.policy
        for option, owner in _POLICY_OPTIONS.items():  # the one its policy reads, default or not
            if config.policy == owner:
                out[option] = getattr(config, option)
    named = {*out, "gen_length", "seed", "block_length", "steps", "policy"}
    for f in dataclasses.fields(SampleConfig):
        value = getattr(config, f.name)
        default = getattr(SampleConfig, f.name, value)
        if f.name not in named and (value != default or f.name in always):
            out[f.name] = value
    return out


_CHUNK = 1 << 20
"""Tokens ``validation_documents`` reads at a time."""


def _special_table(val: Any) -> Any:
    """A numpy table of ``val``'s vocabulary (a ``TokenDataset``), True at its special
    tokens (``Tokenizer.is_special``). The tokenizer is loaded once per dataset and
    process (``_special_ids``): an evaluation looks for prompts up to 3 times, and loading
    a vocabulary of 128k tokens took 1.5 s each time."""
    import numpy as np

    files = (val.directory / val.index.get("tokenizer", "tokenizer.json"),
             val.directory / "index.json")
    try:
        stats = [f.stat() for f in files]  # ctime and inode: a copy that keeps the old
        # modification time (cp -p, rsync -t, tar) still changes them
        stamp = tuple((st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino) for st in stats)
    except OSError:  # the tokenizer's own error says what is missing
        ids: tuple[int, ...] = _special_ids.__wrapped__(val.directory, ())
    else:  # re-prepared in place: a new stamp
        ids = _special_ids(val.directory.resolve(), stamp)
    table = np.zeros(val.vocab_size, bool)
    table[[i for i in ids if 0 <= i < val.vocab_size]] = True
    return table


@functools.lru_cache(maxsize=4)
def _special_ids(directory: Path, stamp: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """The special token ids of the dataset at ``directory`` whose tokenizer and index files
    have ``stamp`` (modification and change times, sizes, inodes): its four, and those of the
    tokens added to the vocabulary that ``is_special`` counts (only an added token can be
    another)."""
    from unmask.data import TokenDataset

    tok = TokenDataset(directory, "val").tokenizer()
    found = [*tok.special_ids().values(), *tok.hf.get_added_tokens_decoder()]
    return tuple(sorted({int(i) for i in found if tok.is_special(i)}))


def validation_documents(
    data: str | Path, *, length: int = 1, enough: int | None = None
) -> tuple[Any, Any]:
    """The documents of ``data``'s validation split that hold ``length`` tokens or more, as
    numpy arrays of their first token's place and their length, in order: the runs of
    tokens between special tokens (the separators) and the split's block joins. The split
    is blocks of ``split_block`` tokens (``index.json``) that training text separated in the
    corpus, joined with no separator, so a run ends at each join too, and a run that begins
    at a block's start and ends at a separator is the tail of a document begun before the
    block: it is left out. A block that holds no separator (a piece of a document longer
    than a block, as a corpus prepared without ``--line-docs`` has) counts whole. Read in
    chunks, with numpy, until ``enough`` such documents are found (``None``: the whole
    split)."""
    import numpy as np

    from unmask.data import SPLIT_BLOCK, TokenDataset

    val = TokenDataset(data, "val")
    block = val.index.get("split_block")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        block = SPLIT_BLOCK
    special = _special_table(val)
    starts: list[Any] = []
    lengths: list[Any] = []
    found, begin, after_sep, total, chunk = 0, 0, False, len(val), _CHUNK
    for at in range(0, total, chunk):
        n = min(chunk, total - at)
        seps = np.flatnonzero(special[val.read(at, n)]) + at
        joins = np.arange(-(-at // block) * block, at + n, block)
        joins = joins[joins > 0]
        last = at + n >= total
        # the cuts in order: a run ends at each (its end), the next begins at its start
        ends = np.concatenate([joins, seps, [total] if last else []]).astype(np.int64)
        is_sep = np.concatenate([np.zeros(len(joins), bool), np.ones(len(seps), bool),
                                 [False] if last else []]).astype(bool)
        order = np.argsort(2 * ends + is_sep, kind="stable")  # a join before a separator on it
        ends, is_sep = ends[order], is_sep[order]
        if not len(ends):
            continue
        first = np.concatenate([[begin], ends[:-1] + is_sep[:-1]])
        from_sep = np.concatenate([[after_sep], is_sep[:-1]])
        keep = (ends - first >= max(length, 1)) & (from_sep | ~is_sep)
        starts.append(first[keep])
        lengths.append((ends - first)[keep])
        found += int(keep.sum())
        begin, after_sep = int(ends[-1] + is_sep[-1]), bool(is_sep[-1])
        if enough is not None and found >= enough:
            break
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(lengths)


def validation_prompts(data: str | Path, *, n: int, length: int) -> list[list[int]]:
    """``n`` prompts of ``length`` tokens of held-out text, the model has not trained on, so
    its continuations are not recitations; each inside one document, from its start but in
    a document longer than a block (``validation_documents``), as a prompt that ran from
    one document into the next was continued by the model as a new document while the
    reference scorer read its text as one. The first ``length`` tokens of the first ``n``
    documents that long; where fewer are, their next ``length`` tokens too, and so on.
    Fewer than ``n`` when the documents hold fewer prompts, none when none is ``length``
    tokens long (or the split is empty, as in a dataset prepared with
    ``--val-fraction 0``)."""
    from unmask.data import TokenDataset

    if length < 1 or n < 1:
        return []
    starts, lengths = validation_documents(data, length=length, enough=n)
    fits = lengths // length  # the prompts each document holds, one after another
    places: list[int] = []
    k = 0
    while len(places) < n and (fits > k).any():
        places.extend(int(s) + k * length for s in starts[fits > k][: n - len(places)])
        k += 1
    val = TokenDataset(data, "val")
    return [val.read(at, length).tolist() for at in places]


def plot_loss_curve(summary: TrainingSummary, out: str | Path, *, title: str = "") -> Path:
    """Training loss and validation bound (nats per token) against step, as a PNG at
    ``out`` (written atomically); "validation loss" for a family whose loss is no bound (it
    logs no bits/byte). ``ImportError`` when matplotlib is not installed."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if summary.steps:
            ax.plot(summary.steps, summary.loss, lw=1, label="training loss")
        if summary.val_steps:
            # a family without a bound logs no bits/byte (NaN): its loss is no bound
            bound = any(math.isfinite(b) for b in summary.val_bpb)
            ax.plot(summary.val_steps, summary.val_loss, "o-", ms=3,
                    label="validation bound" if bound else "validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("nats per token")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if summary.steps or summary.val_steps:
            ax.legend()
        import io

        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    from unmask.files import atomic_write_bytes

    path = Path(out)
    # a temp file of its own (the user's umask applies): with one fixed name, two evals
    # writing one plot (RUN and RUN/best both default to RUN/loss_curve.png) raced on it,
    # and one could publish the other's half-written PNG
    atomic_write_bytes(path, buf.getvalue())
    return path


@dataclass
class RunReport:
    """What ``unmask eval`` prints; ``None`` parts were not measured (``notes`` says why)."""

    checkpoint: str
    run: str | None
    step: int | None
    objective: str | None
    training: dict[str, Any] | None = None
    heldout: dict[str, Any] | None = None
    sample_quality: dict[str, Any] | None = None
    plot: str | None = None
    tasks: dict[str, Any] | None = None
    """Solve rates on ``--task-file`` items (``unmask.tasks.score.TaskScore``)."""
    lm_eval: dict[str, Any] | None = None
    """lm-eval's results of ``--tasks`` (``unmask.lm_eval.run_tasks``), with its table."""
    infill: dict[str, Any] | None = None
    """Infill exact match on ``--gaps`` (``unmask.gapset.InfillScore``, with the gap set's path)."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: a number that is not finite (no bound: NaN) is
        None, since NaN is not JSON."""
        return finite_or_null(asdict(self))

    def lines(self) -> list[str]:
        """The report as aligned ``label  value`` lines, notes last."""
        rows: list[tuple[str, str]] = []
        what = [f"step {self.step}"] if self.step is not None else []
        if self.objective:
            what.append(f"objective {self.objective}")
        t = self.training or {}
        if t.get("params"):
            what.append(f"{t['params'] / 1e6:.2f}M parameters")
        where = self.run or self.checkpoint
        rows.append(("run", f"{where} ({', '.join(what)})" if what else where))
        if t.get("last_loss") is not None:
            extra = ""
            if t.get("tokens_per_s"):
                extra += f", {t['tokens_per_s']:,.0f} tokens/s"
            if t.get("elapsed_s"):
                sec = t["elapsed_s"]
                extra += f", {sec:.0f} s" if sec < 120 else f", {sec / 60:.1f} min"
            rows.append(("training", f"loss {t['last_loss']:.4f} at step {t['last_step']}{extra}"))
        if t.get("best_val_bpb") is not None and not math.isnan(t["best_val_bpb"]):
            last = t["last_val_bpb"]  # not finite: the last validation overflowed ("nan")
            last_text = f"{last:.4f} bits/byte" if math.isfinite(last) else "not finite"
            rows.append(
                ("logged val", f"{last_text} last, {t['best_val_bpb']:.4f} best")
            )
        h = self.heldout
        seq = f", windows of {h['seq_len']}" if h and h.get("seq_len") else ""
        if h is not None and not h.get("likelihood", True):
            spread = (f" ± {h['loss_se']:.4f} (standard error over {h['noise_draws']} noise "
                      "draws)" if h.get("loss_se") is not None else "")
            rows.append(
                (
                    "held-out",
                    f"loss {h['loss']:.4f}{spread} nats/token (the objective's training loss, "
                    f"not a likelihood bound), {h['n_tokens']:,} tokens{seq}",
                )
            )
        elif h is not None:
            spread = (f" ± {h['bpb_se']:.4f} (standard error over {h['noise_draws']} noise "
                      "draws)" if h.get("bpb_se") is not None else "")
            what, le = ("NLL", "") if h.get("exact") else ("bound", "<= ")
            rows.append(
                (
                    "held-out",
                    f"{what} {h['loss']:.4f} nats/token (perplexity {le}"
                    f"{h['ppl']:.2f}), {h['bpb']:.4f}{spread} bits/byte, "
                    f"{h['n_tokens']:,} tokens{seq}",
                )
            )
        q = self.sample_quality
        if q is not None:
            ppl = q.get("gen_ppl")
            # NaN (None in JSON): every sample ended at once (EOS first), no token to score
            ppl_text = (f"{ppl:.2f} under {q['scorer']}" if ppl is not None and math.isfinite(ppl)
                        else "none (no sample has a token to score: each ended at once)")
            rows.append(
                (
                    "gen ppl",
                    f"{ppl_text}, unigram entropy "
                    f"{q['entropy']:.3f} nats ({plural(q['samples'], 'sample')} of "
                    f"{q['gen_length']} tokens)",
                )
            )
            if q.get("sampling"):
                rows.append(
                    ("sampled with", ", ".join(f"{k} {v}" for k, v in q["sampling"].items()))
                )
        if self.plot:
            rows.append(("loss curve", self.plot))
        if self.tasks is not None:
            intervals = self.tasks.get("intervals") or {}
            for group, (solved, total) in sorted(self.tasks["by_group"].items()):
                ci = (f"; 95% interval {intervals[group][0]:.1%} to {intervals[group][1]:.1%}"
                      if group in intervals else "")
                rate = f"{solved / total:.1%}{ci}"
                rows.append(("task", f"{group}: {solved}/{total} solved ({rate})"))
            rows.append(
                ("decoded with", ", ".join(f"{k} {v}" for k, v in self.tasks["sampling"].items()))
            )
        if self.infill is not None:
            f = self.infill
            rows.append(
                (
                    "infill",
                    f"exact match {f['exact']:.1%}, token accuracy {f['token_acc']:.1%} on "
                    f"{plural(f['n'], 'gap')} of {f['gaps']} ({f['method']}, true lengths, "
                    f"{f['nfe']:.1f} model calls and {f['seconds']:.3f} s per gap)",
                )
            )
        table: list[str] = []
        if self.lm_eval is not None:
            m = self.lm_eval
            u = m.get("unmask") or {}
            if u.get("requests") == 0:  # generation tasks alone
                how = "no log-likelihood requests"
            elif u.get("exact", True):
                how = "exact log-likelihoods"
            elif u.get("mean_stderr") is None:  # one sample: no spread to estimate it from
                how = (f"ELBO of {plural(u['mc_samples'], 'sample')}, no standard error (it "
                       "needs --mc-samples 2 or more)")
            else:
                how = (f"ELBO of {plural(u['mc_samples'], 'sample')}, mean standard error "
                       f"{u['mean_stderr']:.3f} nats (max {u['max_stderr']:.3f})")
            per = m.get("seconds_per_item")  # model time only, lm-eval's set-up excluded
            rows.append(
                (
                    "lm-eval",
                    f"{how}; {m['seconds']:.1f} s in all"
                    + (f", {per:.3f} s of model time per item" if per else ""),
                )
            )
            table = str(m.get("table", "")).rstrip().splitlines()
        width = max(len(label) for label, _ in rows)
        return [f"{label:<{width}}  {value}" for label, value in rows] + table + self.notes
