"""INQ's rules: level set and rounding, schedules in optimiser steps, freezing, BatchNorm training until the
re-fold, and the final quantisation."""

import math

import pytest
import torch
from torch import nn

from core import arith
from core.errors import UserError
from quant.config import TrainConfig
from quant.layers import quantize_model
from quant.methods import get_method
from quant.methods.inq import (INQWeightQuant, inq_levels, parse_schedule, refold_stage, stage_at, stage_starts,
                               training_steps)


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
    assert q.weight(w).tolist() == [want]
    codes = q.codes(w)
    assert codes.value.tolist() == [[8.0, -8.0, 4.0, 2.0, -4.0, 0.0, 1.0, 1.0, 0.0]]
    assert int(codes.shift.max()) == inq_levels(4) - 1


def test_inq_ternary_has_one_level_and_weights_past_the_top_clamp():
    w = torch.tensor([[0.9, 0.49, -0.51, 0.3]])  # n1 = floor(log2(1.2)) = 0: levels {0, ±1}
    q = _quant(2, w)
    q.freeze(w, 100)
    assert q.weight(w).tolist() == [[1.0, 0.0, -1.0, 0.0]]
    grown = torch.tensor([[3.0, 0.0, 0.0, 0.0]])  # retrained past 1.5 * 2**n1: the top level, not zero
    q2 = _quant(2, w)
    q2.freeze(grown, 100)
    assert q2.weight(grown)[0, 0].item() == 1.0


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


def test_lr_scale_must_be_positive():
    with pytest.raises(UserError, match="--inq-lr-scale"):
        TrainConfig(method="inq", inq_lr_scale=0.0).validate()


def test_terms_must_be_one():
    with pytest.raises(UserError, match="--terms 1"):
        TrainConfig(method="inq", terms=2).validate()


def test_stages_in_optimiser_steps():
    starts = stage_starts(1000, 9)
    assert starts == [0, 111, 222, 333, 444, 555, 666, 777, 888]
    assert [stage_at(t, starts) for t in (0, 110, 111, 999)] == [0, 0, 1, 8]
    # too few steps: early stages are overtaken at once, the last one is kept
    short = stage_starts(2, 9)
    assert [stage_at(t, short) for t in (0, 1)] == [4, 8]
    # the re-fold: the stage start nearest the last --bn-freeze steps (ties to the later stage)
    five = stage_starts(1000, 5)
    assert refold_stage(five, 1000, 500) == 3 and refold_stage(five, 1000, 390) == 3
    assert refold_stage(five, 1000, 1000) == 0 and refold_stage(five, 1000, 0) == 5


class _Trainer:
    def __init__(self, net):
        self.opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05, weight_decay=0.1)


def _tiny_net(cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    method = get_method(cfg)
    net = quantize_model(model, make_weight_quant=method.weight_quant, abits=cfg.abits)
    method.build(net)
    with torch.no_grad():
        net.body[1].bn.running_var.uniform_(0.5, 2.0)
        net.body[1].bn.weight.uniform_(0.5, 2.0)
    return net, method


def _on_levels(values, e0, wbits):
    """Every value is zero or a signed power of two 2**k, k in [0, levels) in units of 2**e0."""
    units = values / torch.exp2(e0.float()).view(-1, *[1] * (values.dim() - 1))
    mag = units.abs()
    ok = (mag == 0) | ((mag == torch.exp2(torch.log2(mag).round())) & (mag <= 2 ** (inq_levels(wbits) - 1)) & (mag >= 1))
    return bool(ok.all())


def test_bn_trains_until_the_refold_frozen_weights_stay_and_finish_quantises_all():
    # 4 epochs of 3 steps, stages 50 and 75 % at steps 0 and 6; the last 2 epochs (6 steps) on the
    # deployed arithmetic: the re-fold at step 6
    cfg = TrainConfig(method="inq", wbits=3, abits=4, epochs=4, weight_decay=0.1,
                      inq_schedule="50,75,100").validate()
    net, method = _tiny_net(cfg)
    for m in net.weighted_layers():
        m.weight_quant.reset(3)
    trainer = _Trainer(net)
    x = torch.rand(8, 1, 4, 4)
    conv = net.body[1]
    bn = conv.bn
    step = 0
    for epoch in range(cfg.epochs):
        net.freeze_bn(method.bn_frozen(epoch))
        method.epoch_start(net, epoch, trainer)
        net.train()
        for _ in range(3):
            refolded = bool(conv.weight_quant.refolded)
            assert refolded == (step >= 6)
            assert conv.bn_folded == refolded and conv.bn_frozen == refolded
            mask = conv.weight_quant.mask.clone()
            assert mask.flatten(1).sum(1).tolist() == [4 if step < 6 else 7] * 4  # round(50 %, 75 % of 9 weights)
            frozen = conv.weight.detach().clone()
            e0 = conv.weight_quant.e0
            # the frozen weights sit on INQ's levels: of the raw weight before the re-fold, of the folded one after
            assert _on_levels(torch.where(mask, frozen, torch.zeros_like(frozen)), e0, cfg.wbits)
            running = bn.running_mean.clone()
            trainer.opt.zero_grad()
            net(x).square().sum().backward()
            assert (bn.weight.grad is not None) == (not refolded)  # BatchNorm learns until the re-fold
            if not refolded:
                assert not torch.equal(bn.running_mean, running)  # and its statistics follow the batches
            method.before_step(net)
            assert torch.all(conv.weight.grad[mask] == 0)
            # each stage restarts the learning rate: cosine from --lr * --inq-lr-scale to zero over its 6 steps
            t = step % 6
            want = cfg.lr * cfg.inq_lr_scale * 0.5 * (1 + math.cos(math.pi * t / 6))
            assert trainer.opt.param_groups[0]["lr"] == pytest.approx(want)
            trainer.opt.step()
            method.after_step(net)
            step += 1
            if step not in (6,):
                assert torch.equal(conv.weight[mask], frozen[mask])  # exactly, despite weight decay
                assert not torch.equal(conv.weight[~mask], frozen[~mask])  # the rest retrains
    method.finish(net)
    net.eval()
    for m in net.weighted_layers():
        assert m.weight_quant.portion() == 100.0
        w = m.weight.detach()
        q, e0 = m.weight_quant(w)
        codes = m.weight_quant.codes(w)
        assert torch.equal(q, codes.value * torch.exp2(codes.e0.float()).view(-1, *[1] * (w.dim() - 1)))
        assert torch.equal(q, w)
        assert _on_levels(q, e0, cfg.wbits)
