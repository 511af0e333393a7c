"""DBS: the eps schedule, the shift quantiser in the hardware's code, the blend and its gradient."""

import pytest
import torch

from core.errors import UserError
from quant.config import TrainConfig
from quant.methods.dbs import DBS, SOURCE_SCHEDULE, DBSActQuant, DBSWeightQuant, eps_schedule, shift_level


def test_eps_schedule_resamples_the_source():
    assert eps_schedule(15) == list(SOURCE_SCHEDULE)
    assert eps_schedule(5) == [1, 1 / 2, 1 / 4, 1 / 8, 1 / 32]
    s = eps_schedule(8)
    assert s[0] == 1 and all(a >= b for a, b in zip(s, s[1:]))


def test_shift_level_rounds_up_in_the_log_domain():
    x = torch.tensor([1.0, 0.6, 0.5, 0.3, 0.25, 0.2, 0.13, 0.125, 0.1, 3.0, -0.3])
    j, zero = shift_level(x, levels=3)  # magnitudes 1, 1/2, 1/4; zero at or below 1/8
    mag = torch.where(zero, torch.zeros_like(x), torch.exp2(-j))
    assert mag.tolist() == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.0, 0.0, 1.0, 0.5]


def _weights():
    torch.manual_seed(0)
    return (torch.randn(4, 3, 3, 3) * torch.tensor([0.1, 1.0, 0.02, 0.5]).view(-1, 1, 1, 1)).requires_grad_()


def test_eval_forward_is_the_hard_quantiser_and_the_codes():
    wq = DBSWeightQuant(wbits=4)
    w = _weights()
    wq.eps.fill_(0.5)  # a blended value must never reach evaluation or export
    wq.eval()
    with torch.no_grad():
        q, e0 = wq(w)
        c = wq.codes(w)
    assert torch.equal(q, c.value * torch.exp2(c.e0.float()).view(-1, 1, 1, 1))
    assert torch.equal(e0, c.e0)
    # one signed power of two (or zero) per weight, within the 7-shift window
    assert c.shift.max() <= 6 and c.value.abs().max() <= 64


def test_blend_forward_and_unit_gradient():
    wq = DBSWeightQuant(wbits=3)
    w = _weights()
    wq.train()
    wq.eps.fill_(0.25)
    q, e0 = wq(w)
    hard = wq.codes(w).value * torch.exp2(e0.float()).view(-1, 1, 1, 1)
    flat = w.detach().flatten(1)
    mu, sigma = flat.mean(1).view(-1, 1, 1, 1), flat.std(1, unbiased=False).view(-1, 1, 1, 1)
    unit = torch.exp2(torch.round(torch.log2(3 * sigma)))
    ident = (w.detach() - mu) / (3 * sigma) * unit
    torch.testing.assert_close(q, 0.25 * ident + 0.75 * hard)
    q.sum().backward()
    # the blend's derivative eps is divided by eps: what is left is the standardisation's scale
    torch.testing.assert_close(w.grad, (unit / (3 * sigma)).expand_as(w))


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
