"""Files and standard input a user gives (templates, texts, prompts, forms): UTF-16 without a
byte-order mark and binary data are refused in one line that says what they are."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest

from unmask import cli
from unmask.errors import UserError
from unmask.files import read_user_text

RU = "Все люди рождаются свободными и равными в своем достоинстве и правах [MASK].\n" * 3
ZH = "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心 [MASK]。\n" * 3
EN = "The [MASK:4] sat on the mat, and then it [MASK] away.\n" * 3


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(("data", "told"), [
    (RU.encode("utf-16-le"), "UTF-16LE text (no byte-order mark): convert it to UTF-8 "
                             "(iconv -f UTF-16LE -t UTF-8)"),
    (ZH.encode("utf-16-be"), "UTF-16BE text (no byte-order mark)"),
    (EN.encode("utf-16-le"), "UTF-16LE text (no byte-order mark)"),
    (EN.encode("utf-16"), "UTF-16 text: convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    (random.Random(0).randbytes(3000), "binary data, not text"),
])
def test_utf16_and_binary_input_is_one_line_saying_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    data: bytes, told: str,
) -> None:
    """UTF-16 of ASCII or Cyrillic without a BOM is valid UTF-8 (with NULs): infill read it as a
    template with no gaps, generate as prompts of NUL-riddled text; CJK UTF-16 and binary data
    got "not UTF-8 text (invalid start byte at byte 0)". Now all say what they are, from a
    file or from stdin, before any model is loaded."""
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    model = "demo"  # (a model that is not there is refused first, before torch loads)
    for argv, stdin in (
        (["infill", "--model", model, "-"], True),
        (["edit", "--model", model, "--text", "-", "--span", "0:2"], True),
        (["fill-form", "--model", model, "-"], True),
        (["fill-form", "--model", model, str(path)], False),
        (["generate", "--model", model, "--prompt-file", "-"], True),
        (["generate", "--model", model, "--prompt-file", str(path)], False),
    ):
        if stdin:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), "utf-8"))
        line = _one_line(capsys, argv)
        where = "<stdin>" if stdin else str(path)
        assert f"error: {where}: {told}" in line, (argv, line)


def test_user_text_in_any_script_is_read_as_it_was(tmp_path: Path) -> None:
    """UTF-8 text in any script, line ends normalised as a file read as text has them."""
    path = tmp_path / "t.txt"
    for text in (RU, ZH, EN, "naïve café 😀\n"):
        path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
        assert read_user_text(path) == text
    path.write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(UserError, match=r"t.txt: not UTF-8 text \(byte 0xe9 at 3; save it"):
        read_user_text(path)


def test_a_file_saved_with_a_utf8_byte_order_mark_is_read_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Notepad saves UTF-8 with a byte-order mark: JSON readers said line 1 was not JSON (a
    form template, a schema), and a prompt file's first prompt began with U+FEFF. The mark
    is not text: read without it, from a file or from stdin."""
    import json

    import torch

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    torch.manual_seed(0)
    ckpt = str(save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok))
    bom = b"\xef\xbb\xbf"
    form = tmp_path / "form.json"
    form.write_bytes(bom + b'{"n": "<int:1..3>"}\r\n')
    schema = tmp_path / "schema.json"
    schema.write_bytes(bom + b'{"type": "integer", "minimum": 1, "maximum": 3}')
    for argv, stdin in (
        (["fill-form", "--model", ckpt, str(form), "--json"], None),
        (["fill-form", "--model", ckpt, "-", "--json"], form.read_bytes()),
        (["fill-form", "--model", ckpt, "--schema", str(schema), "--json"], None),
    ):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), "utf-8"))
        assert cli.main(argv) == 0, (argv, capsys.readouterr().err)
        value = json.loads(capsys.readouterr().out)["value"]
        assert value in (1, 2, 3) or value.get("n") in (1, 2, 3), value
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(bom + "Все люди\nthe cat\n".encode())
    assert read_user_text(prompts) == "Все люди\nthe cat\n"
