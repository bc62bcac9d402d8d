"""Dream's tokenizer from the files its folders ship: ``vocab.json``, ``merges.txt`` and the
added tokens of ``tokenizer_config.json`` (``Dream-org/Dream-v0-*-7B`` publish Qwen2's slow
``DreamTokenizer``, ``tokenization_dream.py``, and no ``tokenizer.json``).

``qwen2_tokenizer`` builds the ``tokenizers.Tokenizer`` that ``transformers`` builds for
Qwen2 (``convert_slow_tokenizer.Qwen2Converter``): a byte-level BPE over NFC-normalised text,
split first by Qwen2's pattern (single digits, letters with one leading non-letter, ...), with
the added tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|mask|>``, ...) at the ids the folder
gives them. GPT-2's byte-level BPE over the same two files (what
``tokenizers.ByteLevelBPETokenizer`` builds) splits numbers and spaces otherwise and knows no
added token, so the model would read other ids than it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.convert.stream import is_lfs_pointer, lfs_error
from unmask.errors import UserError
from unmask.files import read_json

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenisation pattern (``tokenization_qwen2.PRETOKENIZE_REGEX``)."""


def added_tokens(folder: Path) -> list[tuple[int, dict[str, Any]]]:
    """(id, ``AddedToken`` fields) of the folder's added tokens, in id order: from
    ``tokenizer_config.json``'s ``added_tokens_decoder``, else ``added_tokens.json`` (then
    every token special, as Qwen2's are)."""
    config_path, added_path = folder / "tokenizer_config.json", folder / "added_tokens.json"
    decoder = read_json(config_path).get("added_tokens_decoder") if config_path.is_file() else None
    out: list[tuple[int, dict[str, Any]]] = []
    if isinstance(decoder, dict) and decoder:
        for key, entry in decoder.items():
            content = entry.get("content") if isinstance(entry, dict) else None
            if not (str(key).isdecimal() and isinstance(content, str)):  # int() reads it
                raise UserError(f"{config_path}: added_tokens_decoder entry {key!r} is not "
                                "an id with its token's content")
            fields = {k: bool(entry[k]) for k in
                      ("single_word", "lstrip", "rstrip", "normalized", "special") if k in entry}
            out.append((int(key), {"content": content, **fields}))
    elif added_path.is_file():
        added = read_json(added_path)
        for content, tid in added.items():
            if isinstance(tid, bool) or not isinstance(tid, int):
                raise UserError(f"{added_path}: {content!r} has id {tid!r}, not an integer")
            out.append((tid, {"content": content, "special": True, "normalized": False}))
    return sorted(out, key=lambda item: item[0])


def qwen2_tokenizer(folder: Path) -> HFTokenizer | None:
    """The folder's tokenizer built from ``vocab.json`` + ``merges.txt`` (+ added tokens) as
    ``transformers`` builds Qwen2's; None when the folder lacks either file. A one-line
    ``UserError`` for files that do not make one (an added token's id out of sequence)."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import BPE

    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        return None
    for file in (vocab, merges):  # a `git clone` without git-lfs: say so, not a parse error
        if is_lfs_pointer(file):
            raise lfs_error(file)
    try:
        model = BPE.from_file(
            str(vocab), str(merges), dropout=None, unk_token=None, continuing_subword_prefix="",
            end_of_word_suffix="", fuse_unk=False, byte_fallback=False,
        )
    except Exception as e:  # tokenizers raises plain Exception for unreadable files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{folder}: vocab.json and merges.txt do not make a BPE tokenizer "
                        f"({first})") from None
    tok = HFTokenizer(model)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for tid, fields in added_tokens(folder):
        at = add_token(tok, fields)
        if at != tid:
            raise UserError(
                f"{folder}: added token {fields['content']!r} has id {tid}, but vocab.json and the "
                f"tokens before it put it at {at}"
            )
    return tok


def add_token(tok: HFTokenizer, fields: dict[str, Any]) -> int | None:
    """Add to ``tok`` one added token (``added_tokens``' fields: special or not, as
    ``transformers`` adds it); the id it has then."""
    from tokenizers import AddedToken

    token = AddedToken(**fields)
    if fields.get("special"):
        tok.add_special_tokens([token])
    else:
        tok.add_tokens([token])
    return tok.token_to_id(fields["content"])
