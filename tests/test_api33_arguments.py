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
