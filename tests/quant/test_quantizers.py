"""Quantisers: codes on the documented level sets, straight-through gradients, activation exponents."""

import math

import pytest
import torch

from core import arith
from quant.quantizers import ActQuant, Pow2WeightQuant, UniformWeightQuant, pow2_codes, quant_bias, uniform_codes


@pytest.mark.parametrize("wbits", [2, 3, 4, 5])
def test_pow2_codes_on_level_set_with_inq_top(wbits):
    torch.manual_seed(wbits)
    w = torch.randn(8, 5, 3, 3) * 0.3
    c = pow2_codes(w, wbits, 1, per_channel=True)
    levels = arith.shift_levels(wbits)
    # INQ's range rule, per output channel
    for o in range(8):
        n1 = math.floor(math.log2(4 * w[o].abs().max().item() / 3))
        assert c.e0[o].item() == n1 - (levels - 1)
    mags = c.value.abs().unique().tolist()
    assert set(mags) <= {0.0} | {float(2**k) for k in range(levels)}
    assert torch.equal(c.value, torch.from_numpy(arith.weight_value(c.sign.numpy(), c.shift.numpy(), c.zero.numpy())).float())


def test_pow2_rounds_to_nearest_level_in_linear_domain():
    # top |w| = 6 -> n1 = floor(log2(8)) = 3; wbits 3 has 3 levels, so e0 = 1: levels 2, 4, 8
    w = torch.tensor([[6.0, 0.9, 1.1, 1.6, 2.9, 3.1, -5.9, 0.4]])
    c = pow2_codes(w, 3, 1)
    units = 2.0 ** c.e0.item()
    assert c.e0.item() == 1
    got = (c.value * units).tolist()[0]
    # 6.0 is a tie between 4 and 8: INQ rounds it up (0.75*8 <= 6); 5.9 is nearer 4
    assert got == [8.0, 0.0, 2.0, 2.0, 2.0, 4.0, -4.0, 0.0]


def test_more_terms_reduce_error():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    errs = []
    for terms in (1, 2, 3):
        q, e0 = Pow2WeightQuant(wbits=4, terms=terms)(w)
        errs.append((q - w).pow(2).mean().item())
    assert errs[0] > errs[1] > errs[2]


def test_uniform_codes_range_and_scale():
    torch.manual_seed(1)
    w = torch.randn(4, 10)
    c = uniform_codes(w, 4, per_channel=True)
    assert c.value.abs().max() <= 7 and torch.equal(c.value, c.value.round())


def test_weight_quant_straight_through_gradient():
    w = torch.randn(4, 6, requires_grad=True)
    for q in (Pow2WeightQuant(wbits=3), UniformWeightQuant(wbits=3)):
        out, _ = q(w)
        out.sum().backward()
        assert torch.equal(w.grad, torch.ones_like(w))
        w.grad = None


def test_quant_bias_units_and_clamp():
    b = torch.tensor([0.30, -0.26, 100.0])
    e0 = torch.tensor([-4.0, -4.0, -4.0])
    b_int, b_fake = quant_bias(b, 3, e0, bound=500)  # unit 2**-7
    assert b_int.tolist() == [38.0, -33.0, 500.0]
    assert torch.equal(b_fake, b_int * 2.0**-7)


def test_act_quant_codes_and_clipped_ste():
    q = ActQuant(bits=3)
    q.exp.fill_(2)  # step 1/4, top 7/4
    q.eval()
    x = torch.tensor([-1.0, 0.1, 0.125, 0.37, 1.7, 5.0], requires_grad=True)
    y = q(x)
    assert (y * 4).tolist() == [0.0, 0.0, 1.0, 1.0, 7.0, 7.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_act_quant_exponent_tracks_scale():
    torch.manual_seed(0)
    q = ActQuant(bits=4)
    q.train()
    q(torch.rand(10000) * 8)
    small = int(q.exp)
    q2 = ActQuant(bits=4)
    q2.train()
    q2(torch.rand(10000) * 0.5)
    assert int(q2.exp) == small + 4  # 16x smaller range -> exponent 4 higher
