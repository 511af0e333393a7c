"""DeepShift-PS's rules: initialisation, the gradients of P and S, the shift window."""

import math

import pytest
import torch

from core.errors import UserError
from quant.config import TrainConfig
from quant.methods.deepshift import DeepShiftWeightQuant, ShiftSignFn


def _quant(w, wbits=3, per_channel=True):
    q = DeepShiftWeightQuant(wbits=wbits, per_channel=per_channel)
    q.allocate(w)
    q.init_from(w)
    return q


def test_initialisation_from_float_weights():
    # max 0.9: top shift 0, at 3 bits the window is shifts -2..0 (unit 1/4)
    w = torch.tensor([[0.9, -0.3, 0.2, 0.1, -0.01]])
    q = _quant(w)
    assert q.e0.tolist() == [-2]
    out, e0 = q(w)
    # log-domain rounding of P = log2|w| (0.3 -> 2**-2, not 2**-1), S = w / unit rounded:
    # 0.1 is below half a unit, so zero
    assert out.tolist() == [[1.0, -0.25, 0.25, 0.0, -0.0]]
    codes = q.codes(w)
    assert torch.equal(codes.value * torch.exp2(codes.e0.float())[:, None], out)
    assert codes.shift.min() >= 0 and codes.shift.max() <= 2


def test_gradients_are_deepshifts():
    shift = torch.tensor([[0.2, -1.4, -2.0]], requires_grad=True)
    sign = torch.tensor([[0.8, -0.6, 0.3]], requires_grad=True)
    value, w = ShiftSignFn.apply(shift, sign, torch.tensor([-3]), 7)
    assert value.tolist() == [[8.0, -4.0, 0.0]] and w.tolist() == [[1.0, -0.5, 0.0]]
    g = torch.tensor([[2.0, 3.0, 5.0]])
    w.backward(g)
    # dL/dP = dL/dW * W * ln 2; dL/dS = dL/dW * 2**round(P) (straight through both roundings)
    assert shift.grad[0].tolist() == pytest.approx([2.0 * math.log(2), -1.5 * math.log(2), 0.0])
    assert sign.grad.tolist() == [[2.0, 1.5, 5.0 * 0.25]]


def test_shifts_stay_in_the_channel_window():
    w = torch.tensor([[1.0, 0.5, 0.25], [8.0, 0.01, -0.02]])
    q = _quant(w, wbits=2)  # one shift per channel: ternary with the channel's top power of two
    assert q.e0.tolist() == [0, 3]
    with torch.no_grad():
        q.shift.add_(5.0)  # far above the window
        q.sign.mul_(4.0)
    q.project()
    assert torch.equal(q.shift, q.e0.float()[:, None].expand(2, 3))
    assert q.sign.abs().max().item() == 1.0
    out, _ = q(w)
    assert out.tolist() == [[1.0, 1.0, 1.0], [8.0, 0.0, -0.0]]


def test_per_layer_window():
    w = torch.tensor([[1.0, 0.5], [0.1, 0.05]])
    assert _quant(w, wbits=3, per_channel=False).e0.tolist() == [-2, -2]


def test_terms_must_be_one():
    with pytest.raises(UserError, match="--terms 1"):
        TrainConfig(method="deepshift", terms=2).validate()
