"""Tokenizers: one class over HF ``tokenizers``, one file format (``tokenizer.json``).

Inside:

- ``Tokenizer``: wraps a ``tokenizers.Tokenizer`` and knows its special ids
  (mask, pad, EOS, BOS), the raw bytes of every token, and how to save itself atomically.
- ``byte_tokenizer()``: 4 specials + 256 bytes, no merges (ids 0-3 specials, id 4+b = byte b).
- ``train_bpe(texts, vocab_size)``: byte-level BPE trained on an iterator of strings.
- ``load_tokenizer(path)``: ours or any foreign ``tokenizer.json`` (GPT-2, LLaDA, ...);
  special tokens are found by name, and ``[MASK]`` / ``[PAD]`` / ``[EOS]`` are appended
  when the tokenizer has none.
- ``with_fim_tokens(tok)``: the fill-in-the-middle sentinels ``[FIM_PREFIX]``,
  ``[FIM_SUFFIX]``, ``[FIM_MIDDLE]`` appended at the end of the vocabulary (AR-FIM
  training); ``Tokenizer.fim_ids()`` finds them.
- ``with_empty_token(tok)``: the ``[EMPTY]`` filler of variable-length gaps appended the
  same way (mdlm training with ``empty_rate``); ``Tokenizer.empty_ids()`` finds it.

Tokenizers we build put ``[MASK]``, ``[PAD]``, ``[EOS]``, ``[BOS]`` at ids 0, 1, 2, 3,
matching the ``ModelConfig`` defaults, so ``ModelConfig(vocab_size=tok.vocab_size,
**tok.special_ids())`` is always right.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from unmask.errors import UserError

MASK_TOKEN = "[MASK]"
PAD_TOKEN = "[PAD]"
EOS_TOKEN = "[EOS]"
BOS_TOKEN = "[BOS]"
SPECIAL_TOKENS = (MASK_TOKEN, PAD_TOKEN, EOS_TOKEN, BOS_TOKEN)
"""Our special tokens in id order: mask=0, pad=1, eos=2, bos=3."""

FIM_PREFIX_TOKEN = "[FIM_PREFIX]"
FIM_SUFFIX_TOKEN = "[FIM_SUFFIX]"
FIM_MIDDLE_TOKEN = "[FIM_MIDDLE]"
FIM_TOKENS = {
    "fim_prefix_id": FIM_PREFIX_TOKEN,
    "fim_suffix_id": FIM_SUFFIX_TOKEN,
    "fim_middle_id": FIM_MIDDLE_TOKEN,
}
"""Fill-in-the-middle sentinels (Bavarian et al. 2022), keyed by their ``ModelConfig`` field."""
EMPTY_TOKEN = "[EMPTY]"
EMPTY_TOKENS = {"empty_id": EMPTY_TOKEN}
"""The filler of unused variable-length gap slots (``unmask.objectives.insert_empty``), keyed by its
``ModelConfig`` field."""

# Names under which foreign tokenizers store their special tokens, most specific first.
MASK_CANDIDATES = ("[MASK]", "<|mdm_mask|>", "<|mask|>", "<mask>", "<MASK>")
PAD_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>", "<|endoftext|>")
EOS_CANDIDATES = (
    "[EOS]", "</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>",
)  # fmt: skip
BOS_CANDIDATES = (
    "[BOS]", "<s>", "<bos>", "<|startoftext|>", "<|begin_of_text|>", "<|beginoftext|>",
)  # fmt: skip

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Follows ``bytes_to_unicode`` in openai/gpt-2 ``encoder.py``; HF's ``ByteLevel``
    pre-tokenizer and decoder use the same table.
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _decoder_types(hf: HFTokenizer) -> set[str]:
    """Types of the decoder and of any decoders nested in a ``Sequence`` decoder."""
    if hf.decoder is None:
        return set()
    state = json.loads(hf.decoder.__getstate__())
    found: set[str] = set()

    def walk(d: Any) -> None:
        if isinstance(d, dict):
            if "type" in d:
                found.add(str(d["type"]))
            if d.get("type") == "Replace" and "▁" in json.dumps(d, ensure_ascii=False):
                found.add("Metaspace")
            for v in d.get("decoders", []) or []:
                walk(v)

    walk(state)
    return found



_GIL_FREE_CHARS = 16_384
"""``Tokenizer.encode`` takes texts at least this long through HF's ``encode_batch``: the same
ids, with the GIL released while it runs (``encode`` holds it)."""


@lru_cache(maxsize=1)
def _batch_is_fork_safe() -> bool:
    """Whether this HF tokenizers rebuilds its thread pool in a forked child (0.23 does, checked
    with a fork and DataLoader workers). Older ones print "The current process just got
    forked, after parallelism has already been used" in every child forked after any
    ``encode_batch`` (DataLoader workers, torchrun) and turn parallelism off there."""
    import tokenizers

    try:
        major, minor = (int(x) for x in tokenizers.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (0, 23)


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the facts the rest of unmask needs.

    ``encode`` treats its input as plain text: a literal ``"[MASK]"`` in a document is
    encoded as the characters ``[``, ``M``, ... (never as the mask id), so corpora cannot
    smuggle special tokens into training data. Pass ``allow_special=True`` to map the
    strings of special tokens to their ids (chat templates).
    """

    def __init__(
        self, hf: HFTokenizer, *, mask_id: int, pad_id: int, eos_id: int, bos_id: int
    ) -> None:
        # A tokenizer.json saved with truncation or padding on (``enable_truncation``, a
        # model's max length) would cut every text to its length and pad it with pad ids:
        # ``encode`` gives all of a text's tokens and nothing else. Turned off on ``hf`` itself.
        hf.no_truncation()
        hf.no_padding()
        self._hf_special = hf  # parses special-token strings (allow_special=True)
        self.mask_id = int(mask_id)
        self.pad_id = int(pad_id)
        self.eos_id = int(eos_id)
        self.bos_id = int(bos_id)
        added = hf.get_added_tokens_decoder()
        ids = list(hf.get_vocab(with_added_tokens=True).values()) + list(added)
        self._vocab_size = max(hf.get_vocab_size(with_added_tokens=True), max(ids) + 1)
        self._special = {i for i, t in added.items() if t.special}
        self._special |= {self.mask_id, self.pad_id, self.eos_id, self.bos_id}
        self._hf_plain = _plain_copy(hf, self._special)  # specials are plain text here
        # the byte tokenizer: plain text is its UTF-8 bytes + 4 (prepare: 2.5x less CPU than HF)
        self._bytes_plus = 4 if self._vocab_size == 260 and hf.to_str() == _byte_json() else 0
        self._token_bytes: list[bytes] | None = None

    # -- facts ------------------------------------------------------------------------

    @property
    def hf(self) -> HFTokenizer:
        """The wrapped HF tokenizer (special-token strings are parsed by it)."""
        return self._hf_special

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special and added tokens included (embedding rows)."""
        return self._vocab_size

    def special_ids(self) -> dict[str, int]:
        """``{"mask_id", "pad_id", "eos_id", "bos_id"}``, named like the ``ModelConfig`` fields."""
        return {
            "mask_id": self.mask_id,
            "pad_id": self.pad_id,
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
        }

    def fim_ids(self) -> dict[str, int]:
        """``{"fim_prefix_id", "fim_suffix_id", "fim_middle_id"}`` (``ModelConfig`` field names)
        when the vocabulary has the three FIM sentinels, ``{}`` when it has none of them."""
        return self.appended_ids(FIM_TOKENS, "FIM sentinels")

    def empty_ids(self) -> dict[str, int]:
        """``{"empty_id": id}`` (the ``ModelConfig`` field) when the vocabulary has ``[EMPTY]``,
        else ``{}``."""
        return self.appended_ids(EMPTY_TOKENS, "[EMPTY] tokens")

    def appended_ids(self, tokens: dict[str, str], what: str) -> dict[str, int]:
        """Ids of a group of appended special tokens (``FIM_TOKENS``, ``EMPTY_TOKENS``) keyed like
        ``tokens``: all of them, or ``{}`` when the vocabulary has none (``UserError`` for some)."""
        ids = {name: self._hf_special.token_to_id(tok) for name, tok in tokens.items()}
        found = {k: int(v) for k, v in ids.items() if v is not None}
        if found and len(found) != len(tokens):
            missing = [tokens[k] for k in tokens if k not in found]
            raise UserError(f"tokenizer has only some {what} (missing {', '.join(missing)})")
        return found

    def is_special(self, token_id: int) -> bool:
        """True for the four special ids and any other token registered as special."""
        return int(token_id) in self._special

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string as stored in the vocabulary, or None."""
        return self._hf_special.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Token string of an id as stored in the vocabulary (byte-level symbols, not text)."""
        return self._hf_special.id_to_token(int(token_id))

    # -- text <-> ids -----------------------------------------------------------------

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``; no BOS/EOS is added.

        With ``allow_special=False`` (default) special-token strings in ``text`` are plain
        text; with True they become their ids.
        """
        if self._bytes_plus and not allow_special:
            return self._byte_ids([text])[0]
        hf = self._hf_special if allow_special else self._hf_plain
        with _encode_errors([text]):
            if len(text) >= _GIL_FREE_CHARS and _batch_is_fork_safe():
                # encode holds the GIL for the whole call, encode_batch releases it: a
                # 65k-character prompt stopped the server's other threads for ~0.12 s
                return hf.encode_batch([text], add_special_tokens=False)[0].ids
            return hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], *, allow_special: bool = False) -> list[list[int]]:
        """``encode`` for many texts at once (parallel in HF tokenizers)."""
        texts = list(texts)
        if self._bytes_plus and not allow_special:
            return self._byte_ids(texts)
        hf = self._hf_special if allow_special else self._hf_plain
        with _encode_errors(texts):
            return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """``encode_batch(texts)`` (plain text) as int64 arrays, one a text: what ``unmask
        prepare`` writes. The byte tokenizer makes them from the UTF-8 bytes directly, where
        ids as Python lists were turned back into arrays: ``unmask prepare`` of a 20 MB
        corpus with ``--line-docs`` took 3.8 s of CPU, now 2.8 s (the whole command, start-up
        included; docs/data.md)."""
        texts = list(texts)
        if self._bytes_plus:
            try:
                return self._byte_arrays(texts)
            except UnicodeEncodeError:  # an unpaired surrogate: HF's path says so
                pass
        return [np.asarray(ids, dtype=np.int64) for ids in self.encode_batch(texts)]

    def _byte_arrays(self, texts: list[str]) -> list[np.ndarray]:
        """The byte tokenizer's ids of ``texts`` (``_bytes_plus``), what HF encodes them into;
        ``UnicodeEncodeError`` for a text that is not Unicode (an unpaired surrogate)."""
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not str")
            raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            out.append(raw.astype(np.int64) + self._bytes_plus)
        return out

    def _byte_ids(self, texts: list[str]) -> list[list[int]]:
        """What HF encodes ``texts`` into with the byte tokenizer (``_bytes_plus``)."""
        try:
            return [ids.tolist() for ids in self._byte_arrays(texts)]
        except UnicodeEncodeError:  # an unpaired surrogate: HF's path says so
            hf = self._hf_plain
            with _encode_errors(texts):
                return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``.

        ``skip_special=True`` drops every special token (mask, pad, EOS, BOS, ...);
        False renders them as their strings, e.g. ``"[MASK]"`` for the mask id, which
        is what a live view of a partly denoised canvas wants. Incomplete UTF-8 (a
        multi-byte character cut between tokens) decodes to U+FFFD.
        """
        ids = [int(i) for i in ids]
        if skip_special:
            ids = [i for i in ids if i not in self._special]
        return self._hf_special.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw UTF-8 bytes one token stands for; ``b""`` for special tokens.

        For byte-level tokenizers this is exact (a token may hold part of a multi-byte
        character). For SentencePiece-style tokenizers ``▁`` counts as a space and
        ``<0xNN>`` as one byte; other kinds use the decoded text of the single token.
        """
        return self._bytes_table()[int(token_id)]

    def token_byte_lengths(self) -> np.ndarray:
        """``len(token_bytes(i))`` for every id, as an int64 array of length ``vocab_size``."""
        return np.array([len(b) for b in self._bytes_table()], dtype=np.int64)

    def _bytes_table(self) -> list[bytes]:
        if self._token_bytes is None:
            self._token_bytes = self._build_bytes_table()
        return self._token_bytes

    def _build_bytes_table(self) -> list[bytes]:
        hf = self._hf_special
        kinds = _decoder_types(hf)
        byte_level = "ByteLevel" in kinds
        metaspace = "Metaspace" in kinds
        inv = _unicode_to_bytes()
        added = hf.get_added_tokens_decoder()
        table: list[bytes] = []
        for i in range(self._vocab_size):
            if i in self._special:
                table.append(b"")
                continue
            if i in added:  # added tokens are stored as raw text, not byte-level symbols
                table.append(added[i].content.encode("utf-8"))
                continue
            tok = hf.id_to_token(i)
            if tok is None:
                table.append(b"")
            elif byte_level and all(c in inv for c in tok):
                table.append(bytes(inv[c] for c in tok))
            elif (m := _BYTE_FALLBACK.match(tok)) is not None:
                table.append(bytes([int(m.group(1), 16)]))
            elif metaspace:
                table.append(tok.replace("▁", " ").encode("utf-8"))
            else:
                table.append(hf.decode([i], skip_special_tokens=False).encode("utf-8"))
        return table

    # -- files ------------------------------------------------------------------------

    def to_str(self) -> str:
        """The ``tokenizer.json`` text."""
        return self._hf_special.to_str(pretty=True)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``directory/tokenizer.json`` atomically (``files.atomic_write_text``: temp
        file + rename, UTF-8, a replaced file's mode kept); returns its path. A path that ends
        in ``.json`` and is no folder is the file itself, as HF's ``Tokenizer.save`` takes
        it: it made a folder ``tokenizer.json/`` holding the file, or, where the file was
        there, a ``FileExistsError`` traceback."""
        from unmask.files import atomic_write_text

        d = Path(directory)
        path = d if d.suffix.lower() == ".json" and not d.is_dir() else d / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_str())
        return path

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, mask_id={self.mask_id}, "
            f"pad_id={self.pad_id}, eos_id={self.eos_id}, bos_id={self.bos_id})"
        )


_SURROGATE = re.compile("[\ud800-\udfff]")


@contextmanager
def _encode_errors(texts: Sequence[Any]) -> Iterator[None]:
    """A foreign ``tokenizer.json`` that cannot encode some text (a WordLevel or BPE model
    whose ``unk_token`` is missing from its vocabulary, met at the first character it has no
    piece for) as a ``UserError``, and so is a text holding an unpaired surrogate (``\ud800``
    from JSON or ``surrogateescape``: no UTF-8 text), where HF raised "TextInputSequence must
    be str" about a str. HF raises a plain ``Exception`` for the first; anything more specific
    (a ``TypeError`` for a non-string) is a caller's bug and stays as it is."""
    try:
        yield
    except TypeError:
        for i, text in enumerate(texts):
            m = _SURROGATE.search(text) if isinstance(text, str) else None
            if m is not None:
                which = f"text {i} of the batch" if len(texts) > 1 else "the text"
                raise UserError(f"{which} holds an unpaired surrogate (U+{ord(m[0]):04X} at "
                                f"character {m.start()}), which is not valid Unicode text; "
                                "encode only text read as UTF-8") from None
        raise
    except Exception as e:
        if type(e) is not Exception:
            raise
        msg = str(e).splitlines()[0] if str(e) else "no reason given"
        raise UserError(f"the tokenizer cannot encode this text ({msg}); its tokenizer.json "
                        "is broken or incomplete: choose another tokenizer") from None


def _unreachable(token_id: int) -> str:
    """A vocabulary entry no text matches: U+FFFF is a noncharacter, absent from real text."""
    return f"\uffff[special {token_id}]\uffff"


def _plain_copy(hf: HFTokenizer, special: set[int]) -> HFTokenizer:
    """A copy of ``hf`` that encodes the strings of special tokens as plain text.

    ``encode_special_tokens`` only turns off the added-token matcher. Foreign tokenizers may
    also hold their specials in the model's own vocabulary (SentencePiece-style Unigram and
    BPE: ``<unk>``, ``<s>``, ``</s>`` at ids 0-2 with the best score), where the model itself
    would turn a literal ``</s>`` in a document into the EOS id. Here those entries get a name
    no text matches, merges that build or use them are dropped, and ``unk_token`` follows its
    entry; every id keeps its meaning, so the ids of ordinary text do not change.
    """
    text = hf.to_str()
    state = json.loads(text)
    model = state.get("model") or {}
    vocab = model.get("vocab")
    renamed: dict[str, str] = {}
    if isinstance(vocab, list):  # Unigram: [piece, score] by id
        for i in sorted(special):
            if 0 <= i < len(vocab) and isinstance(vocab[i], list) and vocab[i]:
                renamed[str(vocab[i][0])] = vocab[i][0] = _unreachable(i)
    elif isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: piece -> id
        for piece, i in list(vocab.items()):
            if i in special:
                renamed[piece] = _unreachable(i)
                vocab[renamed[piece]] = vocab.pop(piece)
        if model.get("unk_token") in renamed:
            model["unk_token"] = renamed[model["unk_token"]]
        merges = model.get("merges")
        if renamed and isinstance(merges, list):

            def parts(m: Any) -> list[str]:
                return m.split(" ", 1) if isinstance(m, str) else [str(x) for x in m]

            model["merges"] = [
                m for m in merges
                if not any(p in renamed for p in (*parts(m), "".join(parts(m))))
            ]  # fmt: skip
    for t in state.get("added_tokens") or []:
        if t.get("content") in renamed:
            t["content"] = renamed[t["content"]]
    plain = HFTokenizer.from_str(json.dumps(state) if renamed else text)
    plain.encode_special_tokens = True  # the added-token matcher leaves specials alone
    return plain


def _ours(hf: HFTokenizer) -> Tokenizer:
    """Wrap a tokenizer we built (specials at ids 0-3)."""
    ids = [hf.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3], ids
    return Tokenizer(hf, mask_id=0, pad_id=1, eos_id=2, bos_id=3)


def _byte_level_parts(hf: HFTokenizer, *, use_regex: bool) -> None:
    # No normalizer and no prefix space: decode(encode(s)) == s for every string.
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    hf.decoder = decoders.ByteLevel()


def byte_tokenizer() -> Tokenizer:
    """Byte-level tokenizer: ``[MASK] [PAD] [EOS] [BOS]`` at ids 0-3, then byte b at id 4 + b.

    Stored as an HF BPE model without merges, so it shares ``Tokenizer`` and the
    ``tokenizer.json`` format with trained BPE tokenizers.
    """
    return _ours(HFTokenizer.from_str(_byte_json()))


@lru_cache(maxsize=1)
def _byte_json() -> str:
    """``byte_tokenizer``'s ``tokenizer.json``: a ``Tokenizer`` holding exactly this (ours, or
    its copy saved in a dataset or checkpoint) encodes plain text as its UTF-8 bytes + 4,
    which ``Tokenizer`` then does without HF (``_bytes_plus``)."""
    b2u = bytes_to_unicode()
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({b2u[b]: len(SPECIAL_TOKENS) + b for b in range(256)})
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    _byte_level_parts(hf, use_regex=False)
    hf.add_special_tokens(list(SPECIAL_TOKENS))
    return str(hf.to_str())


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 pre-tokenization) on an iterator of strings.

    Ids 0-3 are the specials, then the 256 byte symbols, then merges up to
    ``vocab_size`` (fewer when the corpus has too few pairs seen ``min_frequency``
    times). Every string round-trips exactly: ``decode(encode(s)) == s``. Feed long
    documents in pieces (e.g. a few KB of lines each); the trainer only keeps counts.
    """
    n_base = len(SPECIAL_TOKENS) + 256
    if vocab_size < n_base:
        raise UserError(
            f"vocab_size={vocab_size} is too small for byte-level BPE (minimum {n_base})"
        )
    hf = HFTokenizer(models.BPE())
    _byte_level_parts(hf, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    _interruptible(lambda: hf.train_from_iterator(_short_runs(texts), trainer=trainer))
    hf.add_special_tokens(list(SPECIAL_TOKENS))
    return _ours(hf)


TRAIN_RUN_CHARS = 1024
"""Longest run without whitespace the BPE trainer sees as one piece: a longer one (DNA, a
letter-only dump, CJK without spaces) is fed in pieces of this many characters. The trainer's
merge inside one word is quadratic in its length (a 1 MB single-line ACGT file took 28.5 s to
train, 1.9 s with a line break every 1,000 characters); a token is never this long."""

_LONG_RUN = re.compile(rf"\S{{{TRAIN_RUN_CHARS + 1},}}")


def _short_runs(texts: Iterable[str]) -> Iterator[str]:
    """``texts`` with every run of more than ``TRAIN_RUN_CHARS`` non-whitespace characters
    cut into separate strings of at most that many (the trainer keeps words within one
    string); the rest as it is."""
    for text in texts:
        start = 0
        for m in _LONG_RUN.finditer(text):
            if m.start() > start:
                yield text[start:m.start()]
            for k in range(m.start(), m.end(), TRAIN_RUN_CHARS):
                yield text[k:min(k + TRAIN_RUN_CHARS, m.end())]
            start = m.end()
        if start < len(text):
            yield text[start:] if start else text


def _interruptible(work: Callable[[], object]) -> None:
    """Run ``work`` (native code that holds no Python frame for seconds: the BPE merges) on a
    daemon thread while this one waits, so Ctrl-C stops the command at once instead of when
    the trainer is done; the abandoned thread dies with the process."""
    import threading

    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            failed.append(e)

    if threading.current_thread() is not threading.main_thread():
        work()  # signals reach only the main thread: nothing to gain
        return
    thread = threading.Thread(target=run, name="unmask-bpe", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except BaseException:
        global ABANDONED
        ABANDONED = True  # the CLI then ends the process without finalising (``cli.main``)
        raise
    if failed:
        raise failed[0]


ABANDONED = False
"""True once ``_interruptible`` left a thread running in native code: the interpreter's
normal shutdown would abort on it, so the command line exits with ``os._exit``."""


def _find(
    hf: HFTokenizer, role: str, override: str | None, candidates: Sequence[str]
) -> int | None:
    if override is not None:
        i = hf.token_to_id(override)
        if i is None:
            raise UserError(f"{role} token {override!r} is not in the tokenizer's vocabulary")
        special = {j for j, t in hf.get_added_tokens_decoder().items() if t.special}
        if len(override) == 1 and i not in special:  # the alphabet: text would lose it
            raise UserError(
                f"{role} token {override!r} is an ordinary character of the vocabulary: as a "
                f"special token it could not appear in text; name a special token, or leave "
                f"{role}_token out (unmask adds one)"
            )
        return i
    for name in candidates:
        i = hf.token_to_id(name)
        if i is not None:
            return i
    return None


def config_tokens(folder: Path, hf: HFTokenizer) -> dict[str, str | None]:
    """The special tokens ``folder``'s ``tokenizer_config.json`` names (``transformers``'
    ``mask_token``, ``pad_token``, ``eos_token``, ``bos_token``, ``unk_token``: a string or an
    added-token object), keyed by role (``mask`` ...); None for a role it does not name or
    whose token ``hf`` lacks, or is one ordinary character (``_find`` refuses that), and for
    every role when there is no such file or it is not a JSON object. How a tokenizer folder
    says which of its tokens ends a document when the token's name is none ``load_tokenizer``
    knows (DeepSeek's ``<｜end▁of▁sentence｜>``), as ``transformers`` reads it."""
    special = {t.content for t in hf.get_added_tokens_decoder().values() if t.special}
    out: dict[str, str | None] = {}
    for role, token in config_token_strings(folder).items():
        usable = token is not None and hf.token_to_id(token) is not None
        out[role] = token if usable and (len(token) > 1 or token in special) else None
    return out


def config_token_strings(folder: Path) -> dict[str, str | None]:
    """The token ``folder``'s ``tokenizer_config.json`` gives each role (``mask``, ``pad``,
    ``eos``, ``bos``, ``unk``) as written (a string, or an added-token object's content), None
    where it gives none or there is no readable file; ``config_tokens`` keeps the usable ones."""
    from unmask.files import read_json

    path = folder / "tokenizer_config.json"
    try:
        cfg = read_json(path) if path.is_file() else {}
    except UserError:  # a broken side file: the search by name, as without one
        cfg = {}
    out: dict[str, str | None] = {}
    for role in ("mask", "pad", "eos", "bos", "unk"):
        token = cfg.get(f"{role}_token")
        if isinstance(token, dict):
            token = token.get("content")
        out[role] = token if isinstance(token, str) else None
    return out


def own_mask(hf: HFTokenizer, named: Mapping[str, str | None], *taken: int | None) -> str | None:
    """The mask token ``tokenizer_config.json`` names (``named``, ``config_tokens``' result)
    where it is a token of its own: None where it names none, or the EOS, BOS or unknown
    token that file names, ``hf``'s model's unknown token, or a token at one of the ``taken``
    ids (the EOS and BOS found otherwise). The one rule for both readers of such a folder,
    ``load_tokenizer`` and the converters (``unmask.convert.load``): a mask that is the
    unknown token would make every character the vocabulary lacks read as a mask."""
    token = named.get("mask")
    if token is None:
        return None
    others = (named.get("eos"), named.get("bos"), named.get("unk"), _unk_token(hf))
    ids = {*taken, *(hf.token_to_id(t) for t in others if t)}
    return None if hf.token_to_id(token) in ids else token


def _unk_token(hf: HFTokenizer) -> str:
    """The token ``hf``'s model puts for what it cannot encode (BPE, WordPiece, WordLevel;
    Unigram's by its ``unk_id``, which only the saved JSON holds), else ``""``."""
    if isinstance(hf.model, models.Unigram):
        unk = json.loads(hf.to_str())["model"].get("unk_id")
        return (hf.id_to_token(unk) or "") if isinstance(unk, int) else ""
    return getattr(hf.model, "unk_token", None) or ""


def _other_format(folder: Path) -> str:
    """What a folder without ``tokenizer.json`` holds instead, and how to convert it: the two
    older formats that published models still ship alone. ``""`` when it holds neither."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return ("; it holds vocab.json and merges.txt (GPT-2's older format): save them as one "
                "with tokenizers.ByteLevelBPETokenizer('vocab.json', 'merges.txt')"
                ".save('tokenizer.json')")
    if (folder / "tokenizer.model").is_file() or (folder / "spiece.model").is_file():
        return ("; it holds a SentencePiece model: save it as tokenizer.json with transformers "
                "(AutoTokenizer.from_pretrained(folder).save_pretrained(folder))")
    return ""


def load_tokenizer(
    path: str | os.PathLike[str],
    *,
    mask_token: str | None = None,
    pad_token: str | None = None,
    eos_token: str | None = None,
    bos_token: str | None = None,
) -> Tokenizer:
    """Load ``path`` (a ``tokenizer.json`` or a directory holding one): ours or a foreign one.

    Special tokens are ``mask_token`` etc. where given, which must then be in the
    vocabulary; else found by name (``MASK_CANDIDATES``, ``PAD_CANDIDATES``,
    ``EOS_CANDIDATES``, ``BOS_CANDIDATES``, first match wins), and last the one the
    ``tokenizer_config.json`` beside the file names (``config_tokens``: DeepSeek's
    ``<｜end▁of▁sentence｜>``; after the names, so a tokenizer found before is found still:
    an instruct model's config names its turn end, ``<|eot_id|>``, not the end of text; its
    mask only where that is a token of its own, not the EOS, BOS or unknown token; and never
    its pad, so a fine-tune's ``"pad_token": "</s>"``, ``"<|eot_id|>"`` or
    ``"<|finetune_right_pad_id|>"`` still gets ``[PAD]``, as before the file was read).
    Tokenizers without a mask, pad or EOS token get ``[MASK]`` / ``[PAD]`` / ``[EOS]``
    appended as new special tokens at the end of the vocabulary (so ``vocab_size`` grows;
    ``save`` keeps them). A tokenizer without a BOS token uses its EOS token as BOS
    (GPT-2's convention).
    Tokens found are registered as special, so ``decode`` skips them.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise UserError(f"{p}: no such tokenizer file{_other_format(p.parent)}")
    try:
        hf = HFTokenizer.from_file(str(p))
    except Exception as e:  # HF raises plain Exception for bad JSON / unknown schema
        from unmask.convert.stream import is_lfs_pointer, lfs_error

        if is_lfs_pointer(p):  # a clone of a model without git-lfs
            raise lfs_error(p) from None
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{p}: not a valid tokenizer.json ({msg})") from None

    config_named = config_tokens(p.parent, hf)
    named = {k: (v,) if v else () for k, v in config_named.items()}
    eos = _find(hf, "eos", eos_token, EOS_CANDIDATES + named["eos"])
    bos = _find(hf, "bos", bos_token, BOS_CANDIDATES + named["bos"])
    # a mask the config names that is another role's token or the unknown token is not
    # taken, and its pad never is (Llama-2 fine-tunes' "pad_token": "</s>", Llama-3-Instruct's
    # "<|eot_id|>", unsloth's "<|finetune_right_pad_id|>"): such folders got [PAD] appended
    # before tokenizer_config.json was read, and keep the datasets and models made then
    mask_named = own_mask(hf, config_named, eos, bos)
    mask = _find(hf, "mask", mask_token, MASK_CANDIDATES + ((mask_named,) if mask_named else ()))
    pad = _find(hf, "pad", pad_token, PAD_CANDIDATES)
    found = [i for i in (mask, pad, eos, bos) if i is not None]
    # Register found tokens as special (no-op for tokens that already are).
    hf.add_special_tokens([hf.id_to_token(i) for i in found])
    if mask is None:
        hf.add_special_tokens([MASK_TOKEN])
        mask = hf.token_to_id(MASK_TOKEN)
    if pad is None:
        hf.add_special_tokens([PAD_TOKEN])
        pad = hf.token_to_id(PAD_TOKEN)
    if eos is None:
        hf.add_special_tokens([EOS_TOKEN])
        eos = hf.token_to_id(EOS_TOKEN)
    if bos is None:
        bos = eos
    return Tokenizer(hf, mask_id=mask, pad_id=pad, eos_id=eos, bos_id=bos)


def load_tokenizer_with_ids(path: str | os.PathLike[str],
                            special_ids: Mapping[str, int | None]) -> Tokenizer:
    """``load_tokenizer(path)`` with the special tokens at ``special_ids`` (``mask_id``,
    ``pad_id``, ``eos_id``, ``bos_id``, None for one not recorded: what a dataset's
    ``index.json`` or a checkpoint's ``config.json`` says) where the search by name finds
    others: a foreign tokenizer's were named by its folder (``config.json`` by id,
    ``tokenizer_config.json``), which the saved copy lacks, though it keeps them special. The
    caller checks the result: where an id is not a special token of the file (another
    tokenizer put in its place) the search by name's tokenizer is returned."""
    tok = load_tokenizer(path)
    ids = {k: i for k, i in special_ids.items() if i is not None}
    found = tok.special_ids()
    if all(found.get(k) == i for k, i in ids.items()):
        return tok
    named = {k.removesuffix("_id") + "_token": tok.id_to_token(i)
             if 0 <= i < tok.vocab_size and tok.is_special(i) else None for k, i in ids.items()}
    return tok if None in named.values() else load_tokenizer(path, **named)


def first_difference(a: Tokenizer, b: Tokenizer) -> int | None:
    """The first id below both vocabularies at which ``a`` and ``b`` hold different tokens, or
    None when they agree on every id they share (equal, or one is the other with tokens
    appended). What a model of one means by an id, the other then means too."""
    for i in range(min(a.vocab_size, b.vocab_size)):
        if a.id_to_token(i) != b.id_to_token(i):
            return i
    return None


def reads_ids_of(model: Tokenizer, data: Tokenizer) -> bool:
    """Whether a model of tokenizer ``model`` reads token data of tokenizer ``data`` as it was
    written: every data id means the same token (the model's may hold more, appended: FIM
    sentinels, ``[EMPTY]``) and the special tokens agree."""
    return (data.vocab_size <= model.vocab_size and first_difference(model, data) is None
            and model.special_ids() == data.special_ids())


def with_fim_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer`` with the FIM sentinels ``[FIM_PREFIX]``, ``[FIM_SUFFIX]``, ``[FIM_MIDDLE]``.

    Returns ``tokenizer`` itself when it already has them; otherwise a new ``Tokenizer``
    with the three appended as special tokens at ids ``vocab_size``, ``vocab_size + 1``,
    ``vocab_size + 2`` (``with_appended_tokens``).
    """
    return with_appended_tokens(tokenizer, FIM_TOKENS, "the FIM sentinels")


def with_empty_token(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer`` with the ``[EMPTY]`` filler of variable-length gaps appended at id
    ``vocab_size`` (itself when it already has it; ``with_appended_tokens``)."""
    return with_appended_tokens(tokenizer, EMPTY_TOKENS, "the [EMPTY] token")


def with_appended_tokens(tokenizer: Tokenizer, tokens: dict[str, str], what: str) -> Tokenizer:
    """``tokenizer`` with ``tokens`` (``ModelConfig`` field -> token string) appended as special
    tokens.

    Returns ``tokenizer`` itself when it already has them; otherwise a new ``Tokenizer`` with
    them at ids ``vocab_size``, ``vocab_size + 1``, ... in order. Existing ids never change,
    so data prepared with the original tokenizer stays valid. Like other special tokens,
    ``encode`` never produces them from text and ``decode`` skips them.
    """
    if tokenizer.appended_ids(tokens, what):
        return tokenizer
    hf = HFTokenizer.from_str(tokenizer.hf.to_str())
    hf.add_special_tokens(list(tokens.values()))
    out = Tokenizer(hf, **tokenizer.special_ids())
    got = list(out.appended_ids(tokens, what).values())
    want = list(range(tokenizer.vocab_size, tokenizer.vocab_size + len(tokens)))
    if got != want:  # a foreign tokenizer with holes in its id range
        raise UserError(f"could not append {what} at ids {want} (got {got})")
    return out
