"""Session 34 (store follow-ups): every reader of a native checkpoint's tokenizer takes the
special tokens its config.json names by id (``checkpoint.native_parts``), as ``load`` does; a
search by name appended ``[EOS]`` / ``[PAD]`` for a tokenizer whose names it does not know
(DeepSeek's ``<｜end▁of▁sentence｜>``), so the tokenizer had other tokens and other ids."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from unmask.config import ModelConfig, save_json
from unmask.tokenizer import Tokenizer, load_tokenizer

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"


def _run(tmp_path: Path) -> tuple[Path, Tokenizer]:
    """A run directory whose checkpoint saved a tokenizer with DeepSeek's special-token names
    (its tokenizer_config.json not kept: a saved copy) and their ids in config.json; the
    weights are not read."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(["hello world, some text"] * 20, trainer)
    folder = tmp_path / "tok"
    folder.mkdir()
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}))
    tok = load_tokenizer(folder)
    ckpt = tmp_path / "run" / "checkpoint"
    tok.save(ckpt)
    save_json(ModelConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2,
                          **tok.special_ids()), ckpt / "config.json")
    (ckpt / "model.safetensors").write_bytes(b"")
    assert load_tokenizer(ckpt).special_ids() != tok.special_ids()  # what by name finds
    return tmp_path / "run", tok


def _same(got: Tokenizer, want: Tokenizer) -> bool:
    return (got.special_ids(), got.vocab_size) == (want.special_ids(), want.vocab_size)


def test_a_trajectory_files_teacher_tokenizer_has_the_configs_ids(tmp_path: Path) -> None:
    # two more tokens than the stamp records: a student refused as "<teacher> now holds another
    # tokenizer" when the folder still held the teacher
    from unmask.objectives.distill import teacher_tokenizer

    run, tok = _run(tmp_path)
    assert _same(teacher_tokenizer({"teacher": str(run)}), tok)


def test_distills_corpus_check_reads_the_teacher_as_load_does(tmp_path: Path) -> None:
    # a guard: the corpus check compares shared ids, which the appended tokens left alone
    from unmask.commands.distill import _check_corpus
    from unmask.data import prepare

    run, tok = _run(tmp_path)
    (tmp_path / "a.txt").write_text("hello world\nsome text\n")
    data = prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(run / "checkpoint"),
                   line_docs=True, val_fraction=0, progress=False).out
    _check_corpus(str(run), str(data))


def test_resuming_a_run_reads_its_tokenizer_with_the_configs_ids(tmp_path: Path) -> None:
    # by name: [EOS] and [PAD] appended, so resuming on the run's own dataset was refused as
    # "its tokenizer differs from the run's"
    from unmask.data import TokenDataset, prepare
    from unmask.tokenizer import reads_ids_of
    from unmask.train import load_checkpoint_tokenizer

    run, tok = _run(tmp_path)
    (tmp_path / "a.txt").write_text("hello world\nsome text\n")
    data = prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(tmp_path / "tok"),
                   line_docs=True, val_fraction=0, progress=False).out
    got = load_checkpoint_tokenizer(run)
    assert _same(got, tok) and reads_ids_of(got, TokenDataset(data, "train").tokenizer())
