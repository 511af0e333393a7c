"""``lsq``: the step gradient is the paper's, the step is a power of two in the forward pass,
and the activation exponent the export reads follows the learned step."""

import math

import torch

from quant import runs
from quant.config import TrainConfig
from quant.methods.lsq import LSQActQuant, LSQWeightQuant, sync_acts
from quant.quantizers import ActQuantFn


def test_step_gradient_is_the_papers():
    # one channel of five weights, 3 bits: QN = QP = 3; step 0.3 runs as 2**-2 = 0.25
    wq = LSQWeightQuant(wbits=3)
    with torch.no_grad():
        wq.step.fill_(0.3)
    w = torch.tensor([[-1.3, -0.2, 0.26, 0.7, 2.0]], requires_grad=True)
    up = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    q, _ = wq(w)
    (q * up).sum().backward()
    # v/s = -5.2 (below -QN), -0.8, 1.04, 2.8, 8 (above QP): -QN, round(v/s) - v/s inside, QP
    per_weight = [-3.0, -1 + 0.8, 1 - 1.04, 3 - 2.8, 3.0]
    want = sum(g * u for g, u in zip(per_weight, up[0].tolist())) / math.sqrt(5 * 3)
    assert abs(wq.step.grad.item() - want) < 1e-5
    assert w.grad.tolist() == [[0.0, 2.0, 3.0, 4.0, 0.0]]


def test_weights_are_integers_on_a_power_of_two_step():
    wq = LSQWeightQuant(wbits=4)
    wq.allocate(torch.zeros(2, 1))
    with torch.no_grad():
        wq.step.copy_(torch.tensor([0.3, 0.011]))
    w = torch.randn(2, 6, generator=torch.Generator().manual_seed(1)) * torch.tensor([[1.0], [0.05]])
    wq.eval()
    q, e0 = wq(w)
    codes = wq.codes(w)
    assert e0.tolist() == [-2, -7]  # round(log2 0.3), round(log2 0.011)
    assert torch.equal(codes.value, codes.value.round()) and codes.value.abs().max() <= 7
    assert torch.equal(q, codes.value * torch.exp2(e0.float())[:, None])


def test_initial_step_is_two_mean_abs_over_sqrt_qp():
    wq = LSQWeightQuant(wbits=4)
    wq.allocate(torch.zeros(2, 1))
    w = torch.tensor([[0.5, -1.5], [0.25, 0.0]])
    wq.init_step(w)
    assert torch.allclose(wq.step, torch.tensor([2 * 1.0, 2 * 0.125]) / math.sqrt(7))


def test_activation_exponent_follows_the_step():
    act = LSQActQuant(bits=4)
    x = torch.linspace(-1, 3, 101)
    with torch.no_grad():
        act.step.fill_(0.3)
    act.train()
    act(x)
    assert int(act.exp) == 2  # the step 2**-2
    with torch.no_grad():
        act.step.fill_(0.1)  # an optimiser step moved it: 2**-3
    act.eval()
    out = act(x)
    assert int(act.exp) == 3
    assert torch.equal(out, ActQuantFn.apply(x, 2.0**3, 15))


def test_build_gives_one_step_per_channel_and_reloads():
    cfg = TrainConfig(method="lsq", wbits=3, abits=4).validate()
    net = runs.build_network(cfg, (1, 8, 8))
    steps = [m.weight_quant.step.numel() for m in net.weighted_layers()]
    assert steps == [m.out_features_ for m in net.weighted_layers()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.rand_like(p))
    sync_acts(net)
    again = runs.build_network(cfg, (1, 8, 8))
    again.load_state_dict(net.state_dict())
    x = torch.rand(4, 1, 8, 8)
    net.eval(), again.eval()
    assert torch.equal(net(x), again(x))


def test_a_step_pushed_through_zero_is_kept_positive():
    """A large learning rate can push a learned step below zero; after the optimiser step the
    method keeps it at 2**-24, so its power of two (and the activation exponent) stays finite."""
    from torch import nn

    from quant.layers import QuantNet
    from quant.methods import get_method

    wq, act = LSQWeightQuant(wbits=4), LSQActQuant(bits=4)
    with torch.no_grad():
        wq.step.fill_(-0.5)
        act.step.fill_(-0.1)
    holder = nn.Module()
    holder.wq = wq
    net = QuantNet(nn.Sequential(act, holder))
    get_method(TrainConfig(method="lsq")).after_step(net)
    assert wq.step.item() == act.step.item() == 2.0**-24
    assert act.exp.item() == 24
