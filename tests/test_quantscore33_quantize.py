"""Session 33 (quantscore): ``quantize_module`` / ``quantize_model`` without torchao, and the
int8 / int4 round trip against its analytic error bound."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from unmask.errors import UserError
from unmask.quantize import quantize_model, quantize_module


@pytest.fixture
def no_torchao(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchao as if not installed: importing it (or a submodule) raises ImportError."""
    for mod in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)


def test_no_quantisation_needs_no_torchao(no_torchao: None) -> None:
    """``name`` None quantises nothing, so it must not need torchao (it imported it first:
    ModuleNotFoundError for a user who never asked for quantisation)."""
    model = nn.Sequential(nn.Linear(32, 32))
    assert quantize_model(model, None, "cpu") is model
    quantize_module(model, None, "cpu")
    assert type(model[0].weight) is nn.Parameter


def test_a_missing_torchao_is_one_line_naming_the_extra(no_torchao: None) -> None:
    """Without torchao, ``quantize_module`` said ModuleNotFoundError (a traceback); now the
    one line of ``check_quantize``, naming the extra to install."""
    with pytest.raises(UserError, match=r"needs torchao: pip install 'unmask\[quantize\]'"):
        quantize_module(nn.Linear(32, 32), "int8", "cpu")


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_round_trip_within_half_a_step(scheme: str) -> None:
    """Each dequantised weight is within half a quantisation step of the float one: int8 per
    row, symmetric (step max|w| / 127.5 at most), int4 per group of 32 on CPU, symmetric
    (step max|w| / 7.5)."""
    pytest.importorskip("torchao")
    torch.manual_seed(0)
    lin = nn.Linear(64, 16, bias=False)
    w = lin.weight.detach().clone()
    quantize_module(lin, scheme, "cpu")
    got = lin(torch.eye(64)).T  # column j of W: the weights as the layer uses them
    if scheme == "int8":
        step = w.abs().amax(1, keepdim=True) / 127.0
    else:
        g = w.view(16, 2, 32)
        step = (g.abs().amax(-1, keepdim=True) / 7.5).expand_as(g).reshape(16, 64)
    err = (got - w).abs()
    assert bool((err <= step / 2 * 1.01 + 1e-6).all())
    assert float(err.max()) > 0  # quantised, not the float weights passed through


def test_no_layer_to_quantise_names_only_the_rules_of_the_scheme() -> None:
    """A model with no linear layer wide enough: int8 said "a multiple of 1" (its per-row
    scheme has no group); int4 names its group."""
    pytest.importorskip("torchao")
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    with pytest.raises(UserError, match="would quantise no layer") as e:
        quantize_model(model, "int8", "cpu")
    assert "multiple of" not in str(e.value)
    assert "at least 8 inputs wide; load it without --quantize" in str(e.value)
    with pytest.raises(UserError, match=r"8 inputs wide and a multiple of 32 \(int4's group"):
        quantize_model(nn.Sequential(nn.Linear(40, 4)), "int4", "cpu")


def test_a_torchao_that_fails_to_import_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torchao built for another torch can fail at import with other than ImportError (an
    AttributeError on a torch dtype it expects): it was a traceback out of ``check_quantize``;
    now one line naming the reinstall."""
    from unmask import quantize

    def broken() -> None:
        raise AttributeError("module 'torch' has no attribute 'int1'")

    monkeypatch.setattr(quantize, "import_torchao", broken)
    with pytest.raises(UserError, match=r"fails to import \(AttributeError: module 'torch' "
                       r"has no attribute 'int1'\): pip install -U 'unmask\[quantize\]'$"):
        quantize.check_quantize("int8", "cpu")


def test_a_torchao_that_fails_with_an_import_error_is_not_called_missing(tmp_path, monkeypatch):
    """A torchao built for another torch usually fails with an ``ImportError`` ("cannot
    import name ... from torch"); that said "needs torchao: pip install", though it is
    installed. Only a missing torchao module is "needs torchao"."""
    import sys

    from unmask.quantize import check_quantize

    fake = tmp_path / "torchao"
    fake.mkdir()
    (fake / "__init__.py").write_text("from torch import _no_such_name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(UserError, match="torchao is installed but fails to import"):
        check_quantize("int8", "cpu")
