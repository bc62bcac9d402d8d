"""Session 31 (api): one-line errors of the Python API where a script's mistake failed deep
inside, and counts in its messages that agree with their word ("1 token", not "1 tokens")."""

from __future__ import annotations

import pytest
import torch

from unmask import api
from unmask.chat import DEFAULT_CHAT_TEMPLATE
from unmask.checkpoint import load, save_checkpoint
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64,
                       chat_template=DEFAULT_CHAT_TEMPLATE, **tok.special_ids())
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path_factory.mktemp("api31") / "m", model=Transformer(cfg),
                           tokenizer=tok)
    return load(path)


def test_an_empty_prompt_over_the_context_is_one_token(loaded):
    """An empty prompt takes its start token; the refusal said "prompt (1 tokens)"."""
    with pytest.raises(UserError, match=r"^prompt \(1 token\) \+ gen_length \(100\) exceeds"):
        api.generate(loaded, "", config={"gen_length": 100})
    with pytest.raises(UserError, match=r"^prompt \(2 tokens\) \+ gen_length \(100\)"):
        api.generate(loaded, "ab", config={"gen_length": 100})


def test_one_seed_for_two_rows_agrees_in_number(loaded):
    with pytest.raises(UserError, match=r"^1 seed for 2 rows$"):
        api.start(loaded, [[65], [66]], {"gen_length": 4, "temperature": 1.0}, seeds=[1])


@pytest.mark.parametrize("seeds", [1, "12", {0: 1}])
def test_seeds_not_a_list_is_one_line(loaded, seeds):
    """``seeds=1`` (one row) was ``TypeError: object of type 'int' has no len()`` in start
    and run_rows."""
    from unmask.config import SampleConfig

    with pytest.raises(UserError, match=r"^seeds must be a list of whole numbers, one a row"):
        api.start(loaded, [[65]], {"gen_length": 4, "temperature": 1.0}, seeds=seeds)
    cfg = SampleConfig(gen_length=4, steps=4, temperature=1.0)
    with pytest.raises(UserError, match=r"^seeds must be a list of whole numbers, one a row"):
        api.run_rows(loaded, [[65]], cfg, seeds)


def test_a_lone_int_seed_names_the_list_it_means(loaded):
    with pytest.raises(UserError, match=r"\(one row: seeds=\[7\]\)$"):
        api.start(loaded, [[65]], {"gen_length": 4, "temperature": 1.0}, seeds=7)


def test_a_tuple_of_seeds_runs_as_a_list(loaded):
    cfg = {"gen_length": 4, "temperature": 1.0}
    a = api.start(loaded, [[65]], cfg, seeds=(3,)).run().gen_ids
    assert a == api.start(loaded, [[65]], cfg, seeds=[3]).run().gen_ids


@pytest.mark.parametrize("call", [
    lambda p: api.prompt_ids(p, "Hi"),
    lambda p: api.prompt_lengths(p, "Hi"),
    lambda p: api.facts_of(p),
    lambda p: api.recommended_options(p),
    lambda p: api.context_limit(p),
    lambda p: api.weights_dtype(p),
])
def test_the_helpers_refuse_a_path_where_a_loaded_checkpoint_goes(tmp_path, call):
    """``api.prompt_ids("demo", ...)`` (the documented path to ``api.start``), and the other
    helpers that read a loaded checkpoint, were ``AttributeError: 'str' object has no attribute
    'tokenizer'`` (or ``'config'``, ``'model'``); the task entries already said it in one
    line."""
    with pytest.raises(UserError, match=r"^loaded must be a checkpoint loaded by unmask\.load\("
                                        r"'runs/x'\), not the path itself$"):
        call("runs/x")


def test_context_limit_names_the_drafter_given_as_a_path(loaded):
    with pytest.raises(UserError, match=r"^draft must be a checkpoint loaded by unmask\.load"):
        api.context_limit(loaded, "runs/drafter")


def test_system_without_a_template_names_the_way_to_the_models_own(loaded):
    """``generate(m, p, system=...)`` on a chat model said only "a system message needs a chat
    template": ``template=None`` is a raw prompt, and the model's own template is passed as
    ``api.chat_template(m)``."""
    with pytest.raises(UserError, match=r"pass template=api\.chat_template\(m\) for the "
                                        r"model's own"):
        api.generate(loaded, "Hi", system="Be brief.", config={"gen_length": 4})
    own = api.generate(loaded, "Hi", system="Be brief.", config={"gen_length": 4},
                       template=api.chat_template(loaded))
    assert own.prompts == ["Hi"] and len(own.texts) == 1
