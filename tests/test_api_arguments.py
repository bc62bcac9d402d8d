"""The Python API's arguments as a library user gets them wrong: a path where a loaded
checkpoint goes, token ids where texts go, None for a path. Each is a one-line ``UserError``
(a ``ValueError``) naming the argument, not an ``AttributeError`` or ``TypeError`` from deep
inside a task or pathlib."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import unmask
from unmask import api
from unmask.errors import UserError


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    path = save_checkpoint(tmp_path_factory.mktemp("api") / "run", model=Transformer(cfg),
                           tokenizer=tok)  # fmt: skip
    return unmask.load(path)


def one_line(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("task", ["generate", "chat", "infill", "edit", "fill_form", "start",
                                  "sample_config"])  # fmt: skip
@pytest.mark.parametrize("given", ["runs/mine", Path("runs/mine"), None, 3])
def test_a_task_given_no_loaded_checkpoint_names_the_argument(task, given):
    args = {
        "generate": ("hi",), "chat": ([{"role": "user", "content": "hi"}],),
        "infill": ("a [MASK] b",), "edit": ("a b",), "fill_form": ('{"a": "<int:0..9>"}',),
        "start": ([[5, 6]], None), "sample_config": ({},),
    }[task]  # fmt: skip
    message = one_line(lambda: getattr(api, task)(given, *args))
    assert message.startswith("loaded must be a checkpoint loaded by unmask.load")
    if isinstance(given, (str, Path)):
        assert "unmask.load('runs/mine')" in message


def test_a_drafter_that_is_neither_loaded_nor_a_path_names_the_argument(loaded):
    message = one_line(lambda: api.generate(loaded, "hi", config={"gen_length": 4}, draft=7))
    assert message == "draft must be a checkpoint loaded by unmask.load, not int"


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (5, "prompts must be a text or a list of texts, not int"),
        (None, "prompts must be a text or a list of texts, not NoneType"),
        (b"hi", "prompts must be a text or a list of texts, not bytes"),
        ({"prompt": "hi"}, "prompts must be a text or a list of texts, not dict"),
        ([72, 105], "prompts must be texts, got int (token ids go to api.start)"),
        (["hi", None], "prompts must be texts, got NoneType"),
    ],
)
def test_generate_prompts_that_are_not_texts_are_one_line(loaded, prompts, message):
    assert one_line(lambda: api.generate(loaded, prompts, config={"gen_length": 4})) == message


def test_generate_takes_any_iterable_of_texts(loaded):
    out = api.generate(loaded, (p for p in ("a", "b")), config={"gen_length": 4, "seed": 0})
    assert len(out.texts) == 2


@pytest.mark.parametrize("template", [5, None, {"a": "[MASK]"}])
def test_infill_template_of_the_wrong_type_is_one_line(loaded, template):
    message = one_line(lambda: api.infill(loaded, template))
    assert message == (f"template must be a text or a list of texts and Gap items, not "
                       f"{type(template).__name__}")


def test_sample_config_takes_none_as_no_options_and_refuses_a_non_mapping(loaded):
    assert api.sample_config(loaded, None) == api.sample_config(loaded, {})
    assert api.sample_config(loaded) == api.sample_config(loaded, {})
    assert one_line(lambda: api.sample_config(loaded, ["gen_length"])) == (
        "given must be a mapping of SampleConfig options (a dict), not list")


@pytest.mark.parametrize("path", [None, 3, 1.5])
@pytest.mark.parametrize("entry", ["load", "load_for_decoding"])
def test_a_model_path_that_is_no_path_is_one_line(entry, path):
    fn = unmask.load if entry == "load" else api.load_for_decoding
    message = one_line(lambda: fn(path))
    assert message == f"path must be a model folder (str or os.PathLike), not {type(path).__name__}"


def test_choose_takes_options_as_start_does(loaded):
    """``choose`` (the decoder ``start`` runs) took only a ``SampleConfig``: the dict every
    other entry takes failed with an ``AttributeError``."""
    from unmask.config import SampleConfig

    assert api.choose(loaded, {"gen_length": 4}) == api.choose(loaded, SampleConfig()) == "llada"
    assert api.choose(loaded, None) == "llada"
    message = one_line(lambda: api.choose(loaded, {"decoder": "ar"}))
    assert "ar" in message
    assert one_line(lambda: api.choose("runs/mine", {})).startswith("loaded must be")


@pytest.mark.parametrize("task", ["generate", "infill", "edit", "fill_form", "start"])
def test_a_step_callback_that_is_not_callable_is_one_line(loaded, task):
    args = {"generate": ("hi",), "infill": ("a [MASK] b",), "edit": ("a b",),
            "fill_form": ('{"a": "<int:0..9>"}',), "start": ([[5, 6]], {"gen_length": 4})}[task]
    kwargs = {"lowest": 1} if task == "edit" else {}
    message = one_line(lambda: getattr(api, task)(loaded, *args, step_callback=5, **kwargs))
    assert message == "step_callback must be callable (step, view) or None, not int"


@pytest.mark.parametrize("messages", ["hi", {"role": "user", "content": "hi"}, None])
def test_chat_messages_that_are_not_a_list_are_one_line(loaded, messages):
    """A text or one message dict was iterated into characters or keys: "messages[0] needs
    'role' and 'content'" about a character; None was a TypeError."""
    message = one_line(lambda: api.chat(loaded, messages, template="plain"))
    assert message == (f"messages must be a list of {{role, content}} dicts, not "
                       f"{type(messages).__name__} (a single message goes in a list)")


@pytest.mark.parametrize("task", ["generate", "chat"])
def test_a_chat_template_of_the_wrong_type_is_one_line(loaded, task):
    first = "hi" if task == "generate" else [{"role": "user", "content": "hi"}]
    message = one_line(lambda: getattr(api, task)(loaded, first, template=5))
    assert message == ("template must be a ChatTemplate, a built-in name, a file or Jinja text, "
                       "not int")


def test_infill_options_as_a_dict_and_of_the_wrong_kind(loaded):
    from unmask.config import InfillOptions

    kw = {"config": {"seed": 0}}
    as_dict = api.infill(loaded, "a [MASK:1-2] b", options={"max_candidates": 2}, **kw)
    as_options = api.infill(loaded, "a [MASK:1-2] b", options=InfillOptions(max_candidates=2),
                            **kw)  # fmt: skip
    assert as_dict.text == as_options.text
    assert one_line(lambda: api.infill(loaded, "a [MASK] b", options={"max_cands": 2})) == (
        "unknown infill option 'max_cands' (the fields of InfillOptions)")
    assert one_line(lambda: api.infill(loaded, "a [MASK] b", options=3)) == (
        "options must be an InfillOptions or a mapping of its fields, not int")
    assert one_line(lambda: InfillOptions(max_candidates="3")) == (
        "max_candidates must be int, not '3'")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": 5, "lowest": 1}, "text must be a str, not int"),
        ({"text": "a b", "lowest": "2"}, "lowest must be an int, not str"),
        ({"text": "a b", "lowest": 1, "rounds": "2"}, "rounds must be an int, not str"),
        ({"text": "a b", "lowest": 1, "rounds": 2.0}, "rounds must be an int, not float"),
        # with spans or a regex, rounds=0 edited once without a word
        ({"text": "a b", "spans": [(0, 1)], "rounds": 0}, "rounds must be at least 1, got 0"),
        ({"text": "a b", "regex": "b", "rounds": -1}, "rounds must be at least 1, got -1"),
        ({"text": "a b", "lowest": 1, "rounds": None}, "rounds must be an int, not NoneType"),
    ],
)
def test_edit_arguments_of_the_wrong_type_are_one_line(loaded, kwargs, message):
    assert one_line(lambda: api.edit(loaded, **kwargs)) == message


def test_fill_form_takes_the_parsed_template(loaded):
    as_text = api.fill_form(loaded, '{"a": "<int:0..9>"}', config={"seed": 0})
    as_dict = api.fill_form(loaded, {"a": "<int:0..9>"}, config={"seed": 0})
    assert as_text.text == as_dict.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_drafter_on_a_device_it_cannot_use_is_one_line():
    """``load_drafter(device="cuda", dtype="bf16")`` without CUDA said "this GPU has no
    bfloat16; use fp16"; ``device="gpu"`` was torch's RuntimeError listing its device types."""
    message = one_line(lambda: api.load_drafter("runs/mine", device="cuda", dtype="bf16"))
    assert message == "device 'cuda' was asked for but torch sees no CUDA device"
    message = one_line(lambda: api.load_drafter("runs/mine", device="gpu"))
    assert message == "unknown device 'gpu'; use auto, cpu or cuda[:i]"
    assert one_line(lambda: api.decode_dtype("bf16", "cuda", None)) == (
        "device 'cuda' was asked for but torch sees no CUDA device")


def test_chat_without_a_template_names_the_argument_not_the_flag(loaded):
    message = one_line(lambda: api.chat(loaded, [{"role": "user", "content": "hi"}]))
    assert "has no chat template" in message and "--template" not in message
    assert 'pass template="plain"' in message and 'template="default" or template=PATH' in message


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_model_path_is_one_line(path):
    """``unmask.load("")`` (an unset variable) read the current folder: ": not a checkpoint"."""
    assert one_line(lambda: unmask.load(path)) == (
        "path is empty: give a run directory, a checkpoint folder or 'demo'")


def test_a_model_path_with_an_unexpanded_tilde_says_so(tmp_path, monkeypatch):
    """``--model=~/runs/x`` (no shell expands ~ after ``=``) or ``unmask.load("~/runs/x")`` said
    only "no such folder" about a folder that is there."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "runs" / "x").mkdir(parents=True)
    message = one_line(lambda: unmask.load("~/runs/x"))
    assert message == f"~/runs/x: no such folder (~ is not expanded here; pass {tmp_path}/runs/x)"
    assert one_line(lambda: unmask.load("~/runs/y")) == "~/runs/y: no such folder"
