"""Session 39 (api): the Python API's refusals of a misspelt sampling option."""

from __future__ import annotations

import pytest

from unmask.errors import UserError


def test_a_misspelt_sampling_option_names_the_nearest_field():
    """``config={"gen_lenght": 8}`` said only "unknown sampling option 'gen_lenght' (the fields
    of SampleConfig)"; the command line names the flag a misspelt one is closest to, and so
    does the API now (any letter case too). A name close to none gets no guess."""
    from unmask.api import check_option_names

    with pytest.raises(UserError) as e:
        check_option_names({"gen_lenght": 8, "steps": 4})
    assert str(e.value) == ("unknown sampling option 'gen_lenght'; did you mean gen_length? "
                            "(the fields of SampleConfig)")
    with pytest.raises(UserError, match=r"^unknown sampling option 'Temperature'; did you "
                                        r"mean temperature\?"):
        check_option_names(["Temperature"])
    with pytest.raises(UserError) as e:
        check_option_names(["zzz"])
    assert str(e.value) == "unknown sampling option 'zzz' (the fields of SampleConfig)"
    check_option_names(["gen_length", "seed"])  # the fields themselves: nothing said


def test_an_option_key_that_is_no_text_is_one_line():
    """A mapping with a key that is not a text beside one that is (``{1: 2, "x": 3}``) was a
    ``TypeError`` traceback from sorting the unknown names; now the usual one line."""
    from unmask.api import check_option_names

    with pytest.raises(UserError, match=r"^unknown sampling option 1 \(the fields"):
        check_option_names({1: 2, "x": 3})
