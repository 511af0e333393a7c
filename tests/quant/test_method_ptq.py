"""``ptq``: cross-layer equalisation, the weight range rules, bias correction, and set-up
without data (quant/methods/ptq.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from quant import runs
from quant.config import TrainConfig
from quant.layers import IntMaxPool2d, QuantConv2d, QuantLinear, QuantReLU
from quant.methods import ptq
from quant.methods.base import fold_bn_for_good
from quant.models import cnn
from quant.train import main as train_main

from tests.quant.test_cli import exit_code, one_error_line

SHAPE = (1, 8, 8)


def ptq_config(**kw):
    return TrainConfig(data="digits", method="ptq", init_from="float-run", **kw)


def float_cnn(seed=0):
    """A small float CNN with non-trivial BatchNorm statistics and unequal channel ranges."""
    torch.manual_seed(seed)
    model = cnn(SHAPE)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 3.0)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.1, 4.0)
            elif isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.logspace(-1, 1, m.out_channels).view(-1, 1, 1, 1))
    return model.eval()


def ptq_net(cfg, model):
    return runs.build_network(cfg, SHAPE, 10, float_model=model, method=ptq.PTQ(cfg))


def float_forward(net, x):
    """The float function of a QuantNet's folded weights (no quantisation at all)."""
    for m in net.body:
        if isinstance(m, (QuantConv2d, QuantLinear)):
            w, b = m.folded()
            x = F.conv2d(x, w, b, m.stride, m.padding) if isinstance(m, QuantConv2d) else F.linear(x, w, b)
        elif isinstance(m, QuantReLU):
            x = F.relu(x)
        elif isinstance(m, (IntMaxPool2d, nn.Flatten)):
            x = m(x)
    return x


@torch.no_grad()
def test_cle_keeps_the_function_and_equalises_ranges():
    net = ptq_net(ptq_config(), float_cnn())
    chain = ptq.links(net)
    fold_bn_for_good(net)
    x = torch.rand(16, *SHAPE)
    before = float_forward(net, x)
    models = [(link.mean, link.std, link.layer.bn.bias.double().clone()) for link in chain]
    ranges = [link.layer.weight.abs().flatten(1).amax(1) for link in chain]
    assert any(r.max() > 10 * r.min() for r in ranges)  # the test network starts unequal
    sweeps = ptq.cross_layer_equalize(chain)
    assert 1 < sweeps < 500
    after = float_forward(net, x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())
    for link, (mean, std, bias) in zip(chain, models):
        r1 = link.layer.weight.abs().flatten(1).amax(1)
        c = r1.numel()
        r2 = link.nxt.weight.abs().reshape(link.nxt.weight.shape[0], c, -1).amax(dim=(0, 2))
        torch.testing.assert_close(r1, r2, rtol=1e-5, atol=0)
        # the activation model was scaled with its channel, as the channel's bias was
        b = link.layer.bn.bias.double()
        torch.testing.assert_close(link.mean * bias, mean * b, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(link.std * bias, std * b, rtol=1e-5, atol=1e-9)


def outlier_row():
    """100 weights of 0.3 and one of 4.0 (one output channel)."""
    return torch.cat([torch.full((100,), 0.3), torch.tensor([4.0])])[None]


def squared_error(w, e0, wbits=3):
    return float((ptq.window_values(w, e0, wbits, 1) - w).square().sum())


def test_max_rule_puts_the_top_level_nearest_max():
    # 4.0 is the top level 2**2 of the 3-bit window (1, 2, 4 units): unit 2**0
    assert ptq.choose_window(outlier_row(), 3, 1, "max").tolist() == [0]


def test_mse_rule_clips_the_outlier_when_that_costs_less():
    w = outlier_row()
    e_max, e_mse = ptq.choose_window(w, 3, 1, "max"), ptq.choose_window(w, 3, 1, "mse")
    # unit 2**-1: the 0.3s become 0.5 (error 100 * 0.04) and 4.0 clips to 2 (error 4),
    # against 100 * 0.09 when the 0.3s round to zero under the max window
    assert e_mse.tolist() == [-1]
    assert squared_error(w, e_mse) == pytest.approx(8.0) and squared_error(w, e_max) == pytest.approx(9.0)


def test_gauss_rule_matches_mse_on_gaussian_weights():
    torch.manual_seed(0)
    w = torch.randn(3, 200_000) * torch.tensor([[0.01], [1.0], [30.0]])
    for wbits in (2, 3):
        assert ptq.choose_window(w, wbits, 1, "gauss").tolist() == ptq.choose_window(w, wbits, 1, "mse").tolist()


def test_per_layer_window_is_shared():
    w = torch.cat([outlier_row(), 0.01 * outlier_row()])
    e0 = ptq.choose_window(w, 3, 1, "mse", per_channel=False)
    assert e0[0] == e0[1]
    assert ptq.choose_window(w, 3, 1, "mse").tolist() != e0.tolist()


def test_quantiser_forward_is_its_codes():
    torch.manual_seed(1)
    q = ptq.PTQWeightQuant(wbits=3, terms=2)
    w = torch.randn(4, 3, 3, 3)
    q.allocate(w)
    q.e0.copy_(ptq.choose_window(w, 3, 2, "mse"))
    codes = q.codes(w)
    fake, e0 = q(w)
    assert torch.equal(fake, codes.value * torch.exp2(e0.float()).view(-1, 1, 1, 1))


@torch.no_grad()
def test_bias_correction_cancels_the_expected_error():
    torch.manual_seed(2)
    channels, block = 3, 4  # a linear layer after Flatten: each channel owns 4 inputs
    lin = QuantLinear(channels * block, 5, weight_quant=ptq.PTQWeightQuant(wbits=2))
    lin.weight_quant.allocate(lin.weight)
    lin.weight_quant.e0.copy_(ptq.choose_window(lin.weight, 2, 1, "max"))
    mean, std = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.3, 2.0], dtype=torch.float64)
    link = ptq.Link(layer=None, mean=mean, std=std, act=None, nxt=lin)
    x, prob = ptq.activation_grid(mean, std)
    ex = (prob * x).sum(1).repeat_interleave(block)  # E[x] of each input of the layer
    w, wq = lin.weight.double(), lin.weight_quant(lin.weight)[0].double()
    expected_float = w @ ex + lin.bias.double()
    assert (wq @ ex + lin.bias.double() - expected_float).abs().max() > 1e-2  # ternary weights err
    ptq.correct_bias(link)
    torch.testing.assert_close(wq @ ex + lin.bias.double(), expected_float, rtol=0, atol=1e-6)


def test_rectified_gaussian_mean():
    # E[max(0, N(0, 1))] = 1 / sqrt(2 pi), to the grid's quadrature error
    x, prob = ptq.activation_grid(torch.zeros(1), torch.ones(1))
    assert float((prob * x).sum()) == pytest.approx((2 * torch.pi) ** -0.5, rel=1e-5)


class NoData:
    """A dataset whose images must not be touched."""

    image_shape, num_classes = SHAPE, 10

    def __getattr__(self, name):
        raise AssertionError(f"ptq read dataset.{name}")


@torch.no_grad()
def test_setup_reads_no_data_and_reloads():
    cfg = ptq_config(wbits=3, abits=4)
    net = ptq_net(cfg, float_cnn())
    net.eval()
    ptq.PTQ(cfg).setup(net, NoData(), TrainConfig(method="float"))
    acts = [m for m in net.body if isinstance(m, QuantReLU)]
    assert all(bool(a.calibrated) for a in acts)
    # a checkpoint rebuilds the same network: build, then load_state_dict
    again = ptq_net(cfg, cnn(SHAPE)).eval()
    again.load_state_dict(net.state_dict())
    x = torch.rand(8, *SHAPE)
    assert torch.equal(again(x), net(x))
    assert [int(a.exp) for a in acts] == [int(m.exp) for m in again.body if isinstance(m, QuantReLU)]


def test_ptq_needs_init_from(tmp_path, capsys):
    argv = ["--data", "digits", "--method", "ptq", "--out", tmp_path / "run", "--no-progress"]
    assert exit_code(train_main, argv) == 2
    assert "--init-from" in one_error_line(capsys)


def test_unknown_range_rule(tmp_path, capsys):
    argv = ["--data", "digits", "--method", "ptq", "--init-from", tmp_path, "--ptq-range", "kl",
            "--out", tmp_path / "run", "--no-progress"]
    assert exit_code(train_main, argv) == 2
    assert "--ptq-range" in one_error_line(capsys)


# -- Nayak et al.'s object-class clustering ---------------------------------------------------------

def test_class_clusters_group_classes_whose_rows_point_alike():
    torch.manual_seed(0)
    a, b, c = torch.randn(3, 16)
    # classes 0, 3, 4 along a; 1, 5 along b; 2 along c; lengths differ (the cosine ignores them)
    rows = torch.stack([a, b, c, 2 * a, 0.5 * a, 3 * b]) + 0.01 * torch.randn(6, 16)
    assert ptq.class_clusters(rows, 3).tolist() == [0, 1, 2, 0, 0, 1]
    assert ptq.class_clusters(rows, 6).tolist() == [0, 1, 2, 3, 4, 5]


def test_class_clusters_refuse_more_clusters_than_classes():
    with pytest.raises(UserError, match="--ptq-clusters"):
        ptq.class_clusters(torch.randn(4, 3), 5)


def test_cluster_accuracy_counts_predictions_in_the_true_cluster():
    clusters = [0, 0, 1, 1, 2]
    pred, target = torch.tensor([1, 2, 3, 4, 0]), torch.tensor([0, 3, 2, 4, 1])
    # 1~0 same cluster, 2~3 same, 3~2 same, 4=4, 0~1 same: all in; class accuracy would be 1/5
    assert ptq.cluster_accuracy(pred, target, clusters) == 1.0
    assert ptq.cluster_accuracy(torch.tensor([4, 0]), torch.tensor([0, 4]), clusters) == 0.0


def test_clusters_leave_the_network_alone_and_are_saved(tmp_path):
    cfg = ptq_config(wbits=2, abits=4)
    plain = ptq_net(cfg, float_cnn())
    ptq.PTQ(cfg).setup(plain, NoData(), TrainConfig(method="float"))
    ccfg = ptq_config(wbits=2, abits=4, ptq_clusters=4)
    clustered = ptq_net(ccfg, float_cnn())
    ptq.PTQ(ccfg).setup(clustered, NoData(), TrainConfig(method="float"))
    x = torch.rand(8, *SHAPE)
    assert torch.equal(plain.eval()(x), clustered.eval()(x))
    assert len(ccfg.ptq_class_clusters) == 10 and set(ccfg.ptq_class_clusters) == {0, 1, 2, 3}


@pytest.mark.parametrize("k", [-1, 1])
def test_bad_cluster_count(tmp_path, capsys, k):
    argv = ["--data", "digits", "--method", "ptq", "--init-from", tmp_path, "--ptq-clusters", k,
            "--out", tmp_path / "run", "--no-progress"]
    assert exit_code(train_main, argv) == 2
    assert "--ptq-clusters" in one_error_line(capsys)
