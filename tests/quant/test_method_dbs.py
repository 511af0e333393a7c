"""DBS: the eps schedule in optimiser steps, the source's shift code in the hardware window, the blend
f_eps with its unit gradient tending to the hard quantiser, and eval = export."""

import pytest
import torch

from core.errors import UserError
from quant.config import TrainConfig
from quant.methods.dbs import (DBS, SOURCE_SCHEDULE, DBSActQuant, DBSWeightQuant, blend, eps_at, shift_level,
                               source_magnitudes)


def test_eps_follows_the_source_schedule_over_the_run():
    # 15 epochs: one entry per epoch, as the source
    spe = 10
    assert [eps_at(e * spe, 15 * spe) for e in range(15)] == list(SOURCE_SCHEDULE)
    assert eps_at(15 * spe - 1, 15 * spe) == 1 / 128
    # any other length passes through every entry, in equal shares of its optimiser steps
    seen = [eps_at(t, 8 * spe) for t in range(8 * spe)]
    assert sorted(set(seen), reverse=True) == sorted(set(SOURCE_SCHEDULE), reverse=True)
    assert all(a >= b for a, b in zip(seen, seen[1:]))


def test_source_code_in_the_hardware_window():
    # 1, 2, 4, 8 magnitudes in the 1, 3, 7, 15 shifts of a 2..5-bit code
    assert [source_magnitudes(b) for b in (2, 3, 4, 5)] == [1, 2, 4, 8]


def test_shift_level_rounds_up_in_the_log_domain_and_has_no_zero():
    x = torch.tensor([1.0, 0.6, 0.5, 0.3, 0.25, 0.2, 0.13, 0.125, 0.1, 0.0, 3.0, -0.3, -0.01])
    j, sign = shift_level(x, magnitudes=4)  # magnitudes 1, 1/2, 1/4, 1/8
    assert (sign * torch.exp2(-j)).tolist() == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, -0.125,
                                                 1.0, -0.5, -0.125]
    j2, s2 = shift_level(torch.tensor([0.9, 0.2, -0.4, -2.0]), magnitudes=2)  # the source's 2-bit code
    assert (s2 * torch.exp2(-j2)).tolist() == [1.0, 0.5, -0.5, -1.0]


def _weights():
    torch.manual_seed(0)
    return (torch.randn(4, 3, 3, 3) * torch.tensor([0.1, 1.0, 0.02, 0.5]).view(-1, 1, 1, 1)).requires_grad_()


@pytest.mark.parametrize("wbits", [2, 3, 4])
def test_eval_forward_is_the_hard_quantiser_and_the_codes(wbits):
    wq = DBSWeightQuant(wbits=wbits)
    w = _weights()
    wq.eps.fill_(0.5)  # a blended value must never reach evaluation or export
    wq.eval()
    with torch.no_grad():
        q, e0 = wq(w)
        c = wq.codes(w)
    assert torch.equal(q, c.value * torch.exp2(c.e0.float()).view(-1, 1, 1, 1))
    assert torch.equal(e0, c.e0)
    n = source_magnitudes(wbits)
    # no zero; one signed power of two per weight among the source's n magnitudes
    assert not c.zero.any() and c.shift.max() <= n - 1
    assert set(c.value.abs().unique().tolist()) <= {2.0**k for k in range(n)}


def test_f_eps_tends_to_q_with_the_unit_gradient():
    wq = DBSWeightQuant(wbits=3)
    w = _weights()
    with torch.no_grad():
        hard = wq.eval()(w)[0]
    wq.train()
    flat = w.detach().flatten(1)
    sigma = flat.std(1).view(-1, 1, 1, 1)
    unit = torch.exp2(torch.round(torch.log2(3 * sigma)))
    ident = w.detach() / (3 * sigma) * unit
    gaps = []
    for eps in (1.0, 0.5, 1 / 8, 1 / 128, 1e-6):
        wq.eps.fill_(eps)
        w.grad = None
        q, _ = wq(w)
        torch.testing.assert_close(q, eps * ident + (1 - eps) * hard)
        q.sum().backward()
        # the blend's derivative eps divided by eps: what is left is the scaling's factor, whatever eps
        torch.testing.assert_close(w.grad, (unit / (3 * sigma)).expand_as(w))
        gaps.append((q - hard).abs().max().item())
    assert gaps[0] > 0 and all(b < a for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-5
    # and the blend itself: f_eps(x) -> Q(x), gradient 1 for every eps
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    q = torch.sign(x.detach())
    for eps in (0.5, 1e-3, 0.0):
        x.grad = None
        y = blend(x, q, eps)
        assert (y - q).abs().max() <= eps * 2 + 1e-7
        y.sum().backward()
        assert torch.equal(x.grad, torch.ones_like(x))


def test_activation_blend_and_hard_eval():
    a = DBSActQuant(bits=4)
    a.exp.fill_(2)
    a.calibrated.fill_(True)
    x = torch.tensor([-1.0, 0.1, 0.3, 1.0, 9.0], requires_grad=True)
    a.eval()
    assert a(x).tolist() == [0.0, 0.0, 0.25, 1.0, 3.75]
    a.train()
    a.every = 10**9  # keep the exponent fixed for this check
    a._steps = 1
    a.eps.fill_(0.5)
    y = a(x)
    torch.testing.assert_close(y, 0.5 * torch.relu(x.detach()) + 0.5 * torch.tensor([0.0, 0.0, 0.25, 1.0, 3.75]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_finish_sets_the_hard_quantiser_and_terms_are_refused():
    m = DBS(TrainConfig(method="dbs"))
    wq, aq = DBSWeightQuant(wbits=4), DBSActQuant(bits=4)
    net = torch.nn.Sequential(wq, aq)
    wq.eps.fill_(0.5)
    aq.eps.fill_(0.5)
    m.finish(net)
    assert float(wq.eps) == 0 and float(aq.eps) == 0
    with pytest.raises(UserError, match="--terms 1"):
        TrainConfig(method="dbs", terms=2).validate()
