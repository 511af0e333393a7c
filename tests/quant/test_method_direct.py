"""direct: weights stored quantised, unbiased projection onto learned levels, channel-aware activations."""

import torch

from quant.layers import QuantReLU
from quant.methods.direct import ChannelAwareActQuant, DirectWeightQuant


def _quant(wbits=4, terms=1, shape=(2, 8)):
    wq = DirectWeightQuant(wbits=wbits, terms=terms)
    wq.allocate(torch.zeros(shape))
    wq.e0.fill_(-4)
    return wq


def test_levels_run_as_sums_of_powers_of_two():
    wq = _quant(terms=1)
    with torch.no_grad():
        wq.levels.copy_(torch.tensor([1.0, 2.9, 3.2, 8.0, 11.0, 40.0, 64.0]))
    assert wq.level_values().tolist() == [1.0, 2.0, 4.0, 8.0, 8.0, 32.0, 64.0]
    wq2 = _quant(terms=2)
    with torch.no_grad():
        wq2.levels.copy_(torch.tensor([1.0, 2.9, 3.2, 8.0, 11.0, 40.0, 64.0]))
    assert wq2.level_values().tolist() == [1.0, 3.0, 3.0, 8.0, 12.0, 40.0, 64.0]


def test_projection_lands_on_levels_and_is_unbiased():
    wq = _quant(shape=(1, 20000))
    w = torch.full((1, 20000), 5.0 / 16)  # 5 units of 2**-4, between the levels 4 and 8
    gen = torch.Generator().manual_seed(1)
    wq.project(w, generator=gen)
    units = w * 16
    assert set(units.unique().tolist()) == {4.0, 8.0}
    assert abs(units.mean().item() - 5.0) < 0.05  # E = 4 + 4 * P(up), P(up) = 1/4; sd of the mean ~0.025
    w2 = torch.tensor([[5.0, -7.0, 0.4, 0.6, 100.0, 0.0, 2.9, -3.1]]) / 16
    wq2 = _quant(shape=(1, 8))
    wq2.project(w2, stochastic=False)
    assert (w2 * 16).tolist() == [[4.0, -8.0, 0.0, 1.0, 64.0, 0.0, 2.0, -4.0]]
    assert wq2.index.tolist() == [[3, -4, 0, 1, 7, 0, 2, -3]]


def test_forward_equals_stored_weight_and_codes_and_levels_get_their_gradients():
    wq = _quant(shape=(2, 4))
    w = torch.tensor([[3.0, -5.0, 20.0, 0.2], [1.0, 1.0, -2.0, 64.0]]) / 16
    wq.project(w, stochastic=False)
    w.requires_grad_()
    q, e0 = wq(w)
    assert torch.equal(q.detach(), w.detach())
    c = wq.codes(w.detach())
    assert torch.equal(c.value * 2.0**-4, w.detach())
    up = torch.arange(8.0).view(2, 4)
    (q * up).sum().backward()
    assert torch.equal(w.grad, up)
    # each level's gradient: the upstream gradient of the weights on it, times their sign and unit
    unit = 2.0**-4
    expect = torch.zeros(7)
    for (r, col), sgn in {(0, 0): 1, (0, 1): -1, (0, 2): 1, (1, 0): 1, (1, 1): 1, (1, 2): -1, (1, 3): 1}.items():
        k = int(wq.index[r, col].abs()) - 1
        expect[k] += sgn * up[r, col] * unit
    assert torch.equal(wq.levels.grad, expect)


def test_channel_aware_exponent_serves_the_majority_of_channels():
    torch.manual_seed(0)
    small = torch.rand(64, 15, 4, 4) * 0.4  # 15 quiet channels
    loud = torch.rand(64, 1, 4, 4) * 12.0  # one loud channel
    x = torch.cat([small, loud], dim=1)
    plain, aware = QuantReLU(bits=4), ChannelAwareActQuant(bits=4)
    plain.observe(x)
    aware.observe(x)
    # the plain MSE choice keeps the loud channel's range; the channel-aware one resolves the quiet ones
    assert int(aware.exp) > int(plain.exp)
    q = ((small * 2.0 ** int(aware.exp) + 0.5).floor().clamp(0, 15) / 2.0 ** int(aware.exp) - small).pow(2).mean()
    qp = ((small * 2.0 ** int(plain.exp) + 0.5).floor().clamp(0, 15) / 2.0 ** int(plain.exp) - small).pow(2).mean()
    assert q < qp
