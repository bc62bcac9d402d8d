"""Session 33 checks of the Python API's arguments: what a caller gets wrong is one line."""

from __future__ import annotations

import pytest

from unmask.canvas import as_rows
from unmask.errors import UserError


@pytest.mark.parametrize("given, words", [(None, "not NoneType"),
                                          (5, "not int (one prompt of one id: [5])")])
def test_prompt_ids_that_are_no_list_are_refused_in_one_line(given, words):
    """``api.start(m, None, ...)`` (and every decoder, through ``as_rows``) failed with
    ``TypeError: 'NoneType' object is not iterable``."""
    with pytest.raises(UserError, match="prompt ids must be a list") as e:
        as_rows(given)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_lists_and_tensors_of_ids_are_rows_as_before():
    import torch

    assert as_rows([]) == [[]]
    assert as_rows([4, 5]) == [[4, 5]]
    assert as_rows(torch.tensor([[4, 5]])) == [[4, 5]]
    assert as_rows(iter([[4], [5, 6]])) == [[4], [5, 6]]


@pytest.mark.parametrize("given", [[True, False], [[4, True]], [[True]]])
def test_bools_are_no_token_ids(given):
    """A mask passed where ids go: ``[[True]]`` ran as id 1 ([PAD] of unmask's tokenizers)."""
    with pytest.raises(UserError, match="prompt ids must be whole numbers.*got bool True"):
        as_rows(given)


def test_a_bool_tensor_is_no_prompt():
    import torch

    with pytest.raises(UserError, match="got a torch.bool tensor"):
        as_rows(torch.tensor([[True, False]]))


def _bool_rows():
    import torch

    return {"a list of 0-d bool tensors": [torch.tensor(True), torch.tensor(False)],
            "a bool tensor as a row": [torch.tensor([True, False])],
            "a 0-d bool tensor in a row": [[4, torch.tensor(True)]]}


@pytest.mark.parametrize("name", list(_bool_rows()))
def test_bool_tensors_inside_a_list_are_no_token_ids(name):
    """A list of per-prompt masks ran as ids 1/0 (``[torch.tensor([True, False])]`` was the
    prompt ``[1, 0]``), and a list of 0-d bool tensors was ``TypeError: iteration over a 0-d
    tensor``."""
    with pytest.raises(UserError, match="whole numbers.*got a torch.bool tensor$") as e:
        as_rows(_bool_rows()[name])
    assert "\n" not in str(e.value)


def test_0d_tensors_in_a_list_are_ids_when_whole_and_refused_when_not():
    import numpy as np
    import torch

    assert as_rows([torch.tensor(4), torch.tensor(5)]) == [[4, 5]]  # as before
    assert as_rows([[torch.tensor(4)], [np.int64(5)]]) == [[4], [5]]
    assert as_rows([np.array(4)]) == [[4]]  # a 0-d array: was 'iteration over a 0-d array'
    assert as_rows([torch.tensor([4, 5], dtype=torch.int32)]) == [[4, 5]]
    for given in ([torch.tensor(4.0)], [[torch.tensor(4.0)]], [torch.tensor([4.0])]):
        with pytest.raises(UserError, match="whole numbers.*got a torch.float32 tensor$"):
            as_rows(given)
    with pytest.raises(UserError, match=r"in a list must be 1-D, got shape \(1, 1\)"):
        as_rows([torch.tensor([[4]])])  # was [[4]], while (1, 2) was refused


@pytest.mark.parametrize("given, words", [([4, True], "got bool True"),
                                          ([4, None], "got NoneType None"),
                                          ([[4], 5], "prompts mix token ids and lists")])
def test_what_is_wrong_in_a_flat_list_is_named(given, words):
    """``[4, True]`` said 'prompts mix token ids and lists of token ids': True is no list."""
    with pytest.raises(UserError, match=words):
        as_rows(given)
