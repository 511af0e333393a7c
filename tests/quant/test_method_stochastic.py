"""``stochastic``: unbiased stochastic rounding in training, deterministic eval, fixed-point updates."""

import pytest
import torch

from core.errors import UserError
from quant import runs
from quant.config import TrainConfig
from quant.methods import get_method
from quant.methods.stochastic import StochasticActQuant, StochasticWeightQuant, round_fixed, stochastic_round
from quant.quantizers import ActQuantFn, UniformWeightQuant, uniform_codes


def test_stochastic_rounding_is_unbiased():
    x = torch.tensor([0.1, 0.5, 0.77, -0.3, 2.25, 3.0])
    n = 40000
    r = stochastic_round(x.expand(n, -1), torch.Generator().manual_seed(0))
    assert torch.all((r == x.floor()) | (r == x.floor() + 1))
    frac = x - x.floor()
    # five standard errors of a mean of n Bernoulli(frac) draws
    bound = 5 * torch.sqrt(frac * (1 - frac) / n)
    assert torch.all((r.mean(dim=0) - x).abs() <= bound)
    assert torch.all(r[:, -1] == 3.0)  # an exact value never moves


def test_eval_is_round_to_nearest_and_deterministic():
    w = torch.randn(4, 9, generator=torch.Generator().manual_seed(3))
    wq = StochasticWeightQuant(wbits=3)
    c = uniform_codes(w, 3)
    nearest = c.value * torch.exp2(c.e0.float())[:, None]
    torch.manual_seed(0)
    train_q, _ = wq(w)
    assert not torch.equal(train_q, nearest)  # training rounds stochastically
    wq.eval()
    assert torch.equal(wq(w)[0], nearest) and torch.equal(wq(w)[0], nearest)

    act = StochasticActQuant(bits=4)
    act.exp.fill_(3)
    act.calibrated.fill_(True)
    x = torch.rand(1000, generator=torch.Generator().manual_seed(4)) * 2
    act.eval()
    assert torch.equal(act(x), ActQuantFn.apply(x, 2.0**3, 15))


def test_update_leaves_weights_on_the_fixed_point_grid():
    cfg = TrainConfig(method="stochastic", wbits=3, abits=4, update_frac_bits=6).validate()
    net = runs.build_network(cfg, (1, 8, 8))
    method = get_method(cfg)
    method.after_step(net)
    for m in net.weighted_layers():
        scaled = m.weight.detach() * 2**6
        assert torch.equal(scaled, scaled.round())
        assert scaled.abs().max() > 0
    # saturation at the 16-bit word: <10, 6> holds [-512, 512 - 2**-6]
    big = round_fixed(torch.tensor([1000.0, -1000.0]), 6)
    assert big.tolist() == [512 - 2**-6, -512.0]


@pytest.mark.parametrize("flag, value", [("stochastic", "weights,bogus"), ("stochastic", ""),
                                          ("update_frac_bits", 0), ("update_frac_bits", 16)])
def test_bad_values_are_one_user_error(flag, value):
    cfg = TrainConfig(method="stochastic", **{flag: value})
    with pytest.raises(UserError) as err:
        cfg.validate()
    msg = str(err.value)
    assert "\n" not in msg and f"--{flag.replace('_', '-')}" in msg


def test_default_is_gupta_update_and_the_forward_is_the_deployed_rounding():
    cfg = TrainConfig(method="stochastic", wbits=2, abits=4).validate()
    method = get_method(cfg)
    assert method.where == {"update"}
    torch.manual_seed(0)
    net = runs.build_network(cfg, (1, 8, 8), method=method)
    assert all(type(m.weight_quant) is UniformWeightQuant for m in net.weighted_layers())
    net.calibrate(torch.rand(16, 1, 8, 8))
    method.after_step(net)  # the stored words: on the <2, 14> grid
    for m in net.weighted_layers():
        scaled = m.weight.detach() * 2**14
        assert torch.equal(scaled, scaled.round())
    # the training forward (BatchNorm on running statistics) is deterministic and is the eval forward
    net.freeze_bn(True)
    net.train()
    x = torch.rand(4, 1, 8, 8)
    first, second = net(x), net(x)
    net.eval()
    assert torch.equal(first, second) and torch.equal(first, net(x))


def test_weights_re_sampling_is_an_opt_in():
    cfg = TrainConfig(method="stochastic", wbits=2, abits=4, stochastic="weights,update").validate()
    method = get_method(cfg)
    assert isinstance(method.weight_quant(), StochasticWeightQuant)
    assert "stochastic: update,weights" in method.describe()
