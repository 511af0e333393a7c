"""``apot``: the level sets, their hardware codes, nearest projection and the clipping gradient."""

import pytest
import torch

from core import arith
from quant.methods.apot import APoTWeightQuant, level_set, nearest_level, term_exponents


def test_level_sets_are_the_hand_listed_ones():
    # b = 3: two 1-bit terms {0, 1} + {0, 1/2}: APoT with k = 1 is uniform
    assert term_exponents(3, 2) == [[0], [1]]
    assert level_set(3, 2).values.tolist() == [0, 1, 2, 3]
    # b = 4: {0, 1, 1/2, 1/8} + {0, 1/4}, in units of 1/8 (the authors' 3-bit magnitude table)
    assert term_exponents(4, 2) == [[0, 1, 3], [2]]
    assert level_set(4, 2).values.tolist() == [0, 1, 2, 3, 4, 6, 8, 10]
    # b = 5: the paper's p0 in {0, 2**0, 2**-2, 2**-4}, p1 in {0, 2**-1, 2**-3, 2**-5}
    assert term_exponents(5, 2) == [[0, 2, 4], [1, 3, 5]]


@pytest.mark.parametrize("bits, terms", [(b, t) for b in (2, 3, 4, 5) for t in (1, 2, 3)])
def test_every_level_is_a_hardware_code(bits, terms):
    lv = level_set(bits, terms)
    assert lv.values.numel() == 2 ** (bits - 1) and len(set(lv.values.tolist())) == lv.values.numel()
    assert lv.shift.max() < arith.shift_levels(lv.hw_wbits)
    terms_value = torch.where(lv.zero, 0, 2 ** lv.shift).sum(dim=1)
    assert terms_value.tolist() == lv.values.long().tolist()


def test_projection_is_nearest():
    values = level_set(4, 2).values
    a = torch.rand(10000, generator=torch.Generator().manual_seed(0)) * 11
    brute = (a[:, None] - values[None, :]).abs().argmin(dim=1)
    assert torch.equal(nearest_level(a, values), brute)


def test_codes_sum_to_the_forward_weights():
    wq = APoTWeightQuant(bits=4, terms=2).eval()
    assert (wq.wbits, wq.terms) == (4, 2)
    w = torch.randn(3, 20, generator=torch.Generator().manual_seed(2)) * torch.tensor([[1.0], [0.1], [0.02]])
    q, e0 = wq(w)
    c = wq.codes(w)
    term = torch.where(c.zero, 0, (1 - 2 * c.sign) * 2 ** c.shift).sum(dim=0)
    assert torch.equal(term.float(), c.value)
    assert torch.equal(q, c.value * torch.exp2(e0.float())[:, None])
    assert set(c.value.abs().unique().tolist()) <= set(level_set(4, 2).values.tolist())


def test_clipping_gradient_is_the_rcf():
    clip = torch.tensor(1.0, requires_grad=True)
    w = torch.tensor([0.3, -2.0, 0.9, 1.5], requires_grad=True)
    proj = torch.tensor([0.25, -1.0, 1.0, 1.0])  # Proj(clip(w / clip)) on some level set
    out = APoTWeightQuant.rcf(w, clip, proj)
    assert torch.equal(out.detach(), proj)
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # inside: Proj(x) - x; outside: sign(w)
    want = 1 * (0.25 - 0.3) + 2 * -1.0 + 3 * (1.0 - 0.9) + 4 * 1.0
    assert abs(clip.grad.item() - want) < 1e-6
    assert w.grad.tolist() == [1.0, 0.0, 3.0, 0.0]
