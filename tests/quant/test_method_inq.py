"""INQ's rules: level set and rounding, schedules, the epoch plan, freezing and the final quantisation."""

import pytest
import torch
from torch import nn

from core import arith
from core.errors import UserError
from quant.config import TrainConfig
from quant.layers import quantize_model
from quant.methods import get_method
from quant.methods.base import fold_bn_for_good
from quant.methods.inq import INQWeightQuant, epoch_plan, inq_levels, parse_schedule, training_steps


def test_inq_level_count_fits_the_hardware_window():
    # the paper's n2 = n1 + 1 - 2**(b-1)/2: 1, 2, 4, 8 powers of two per sign at 2..5 bits
    assert [inq_levels(b) for b in (2, 3, 4, 5)] == [1, 2, 4, 8]
    assert all(inq_levels(b) <= arith.shift_levels(b) for b in (2, 3, 4, 5))


def _quant(wbits, w, per_channel=True):
    q = INQWeightQuant(wbits=wbits, per_channel=per_channel)
    q.allocate(w)
    q.set_range(w)
    return q


def test_inq_rounding_on_hand_made_weights():
    # max|W| = 1.2: n1 = floor(log2(1.6)) = 0; at 4 bits the levels are 1, 1/2, 1/4, 1/8 and 0
    w = torch.tensor([[1.2, -0.76, 0.74, 0.374, -0.376, 0.0624, 0.0626, 0.1, -0.0]])
    q = _quant(4, w)
    assert q.n1.tolist() == [0] and q.e0.tolist() == [-3]
    q.freeze(w, 100)
    want = [1.0, -1.0, 0.5, 0.25, -0.5, 0.0, 0.125, 0.125, 0.0]
    assert q(w)[0].tolist() == [want]
    codes = q.codes(w)
    assert codes.value.tolist() == [[8.0, -8.0, 4.0, 2.0, -4.0, 0.0, 1.0, 1.0, 0.0]]
    assert int(codes.shift.max()) == inq_levels(4) - 1


def test_inq_ternary_has_one_level_and_weights_past_the_top_clamp():
    w = torch.tensor([[0.9, 0.49, -0.51, 0.3]])  # n1 = floor(log2(1.2)) = 0: levels {0, ±1}
    q = _quant(2, w)
    q.freeze(w, 100)
    assert q(w)[0].tolist() == [[1.0, 0.0, -1.0, 0.0]]
    grown = torch.tensor([[3.0, 0.0, 0.0, 0.0]])  # retrained past 1.5 * 2**n1: the top level, not zero
    q2 = _quant(2, w)
    q2.freeze(grown, 100)
    assert q2(grown)[0][0, 0].item() == 1.0


def test_range_per_layer_when_not_per_channel():
    w = torch.tensor([[1.0, 0.1], [0.3, 0.2]])
    assert _quant(3, w).n1.tolist() == [0, -2]
    assert _quant(3, w, per_channel=False).n1.tolist() == [0, 0]


def test_largest_magnitudes_are_frozen_first_per_channel():
    w = torch.tensor([[0.1, -0.9, 0.5, 0.2], [4.0, 1.0, -3.0, 2.0]])
    q = _quant(4, w)
    q.freeze(w, 50)
    assert q.mask.tolist() == [[False, True, True, False], [True, False, True, False]]
    assert q.portion() == 50.0
    q.freeze(w, 75)
    assert q.mask.tolist() == [[False, True, True, True], [True, False, True, True]]


def test_schedules():
    assert parse_schedule("auto", 4) == (30, 50, 80, 90, 95, 100)
    assert parse_schedule("auto", 5) == (50, 75, 87.5, 100)
    assert parse_schedule("auto", 2) == (20, 40, 60, 70, 80, 85, 90, 95, 97.5, 100)
    assert parse_schedule(" 50, 75,87.5 ", 3) == (50, 75, 87.5)
    assert training_steps((50, 75, 87.5, 100)) == (50, 75, 87.5)
    assert training_steps((100,)) == (100,)


@pytest.mark.parametrize("text", ["", "50,x", "0,50", "50,101", "75,50", "50,50,100", "nan"])
def test_bad_schedules_are_user_errors(text):
    with pytest.raises(UserError, match="--inq-schedule"):
        TrainConfig(method="inq", inq_schedule=text).validate()


def test_terms_must_be_one():
    with pytest.raises(UserError, match="--terms 1"):
        TrainConfig(method="inq", terms=2).validate()


def test_epoch_plan():
    assert epoch_plan(8, 5) == [0, 1, 1, 2, 3, 3, 4, 4]
    assert epoch_plan(6, 3) == [0, 0, 1, 1, 2, 2]
    # too few epochs: early steps are skipped, the last one is kept
    assert epoch_plan(2, 9) == [4, 8]


class _FakeTrainer:
    def __init__(self):
        self.restarts = []

    def restart_lr(self, epochs):
        self.restarts.append(epochs)


def _tiny_net(cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    method = get_method(cfg)
    net = quantize_model(model, make_weight_quant=method.weight_quant, abits=cfg.abits)
    method.build(net)
    with torch.no_grad():
        net.body[1].bn.running_var.uniform_(0.5, 2.0)
    return net, method


def test_schedule_freezes_keeps_frozen_weights_exact_and_finish_quantises_all():
    cfg = TrainConfig(method="inq", wbits=4, abits=4, epochs=4, weight_decay=0.1,
                      inq_schedule="50,75,100").validate()
    net, method = _tiny_net(cfg)
    fold_bn_for_good(net)  # what setup does, without its calibration on a data set
    for m in net.weighted_layers():
        m.weight_quant.set_range(m.weight)
    trainer = _FakeTrainer()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05, weight_decay=0.1)
    x = torch.rand(8, 1, 4, 4)
    conv = net.body[1]
    for epoch in range(cfg.epochs):
        method.epoch_start(net, epoch, trainer)
        frozen = conv.weight.detach().clone()
        mask = conv.weight_quant.mask.clone()
        for _ in range(3):
            opt.zero_grad()
            net(x).square().sum().backward()
            assert torch.all(conv.weight.grad[mask] == 0)
            opt.step()
            method.after_step(net)
        assert torch.equal(conv.weight[mask], frozen[mask])  # exactly, despite weight decay
        assert not torch.equal(conv.weight[~mask], frozen[~mask])  # the rest retrains
    assert trainer.restarts == [2, 2]  # the steps 50 and 75 get two epochs each
    assert conv.weight_quant.mask.flatten(1).sum(1).tolist() == [7] * 4  # round(75 % of 9) per channel
    method.finish(net)
    net.eval()
    for m in net.weighted_layers():
        assert m.weight_quant.portion() == 100.0
        w = m.weight.detach()
        q, e0 = m.weight_quant(w)
        codes = m.weight_quant.codes(w)
        assert torch.equal(q, codes.value * torch.exp2(codes.e0.float()).view(-1, *[1] * (w.dim() - 1)))
        assert torch.equal(q, w)
