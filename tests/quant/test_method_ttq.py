"""TTQ's rules: zones and threshold, the paper's gradients, scales made sums of powers of two."""

import pytest
import torch

from core.errors import UserError
from quant.config import TrainConfig
from quant.methods.ttq import TernaryFn, TTQWeightQuant


def _quant(w, *, wbits=3, terms=1, per_channel=True, wp=None, wn=None):
    q = TTQWeightQuant(wbits=wbits, terms=terms, per_channel=per_channel, threshold=0.25)
    q.allocate(w)
    with torch.no_grad():
        if wp is None:
            q.init_scales(w)
        else:
            q.wp.copy_(torch.tensor(wp))
            q.wn.copy_(torch.tensor(wn))
    return q


def test_gradients_match_a_hand_computation():
    # two channels, delta = 0.25 * max|w| = (0.25, 0.5)
    w = torch.tensor([[1.0, 0.2, -0.3, 0.6], [-2.0, 0.4, 1.5, -0.6]], requires_grad=True)
    wp = torch.tensor([0.5, 2.0], requires_grad=True)
    wn = torch.tensor([0.25, 1.0], requires_grad=True)
    delta = torch.tensor([0.25, 0.5])
    out = TernaryFn.apply(w, wp, wn, delta, wp.detach(), wn.detach())
    assert out.tolist() == [[0.5, 0.0, -0.25, 0.5], [-1.0, 0.0, 2.0, -1.0]]
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    out.backward(g)
    assert wp.grad.tolist() == [1.0 + 4.0, 7.0]  # sum over w > delta
    assert wn.grad.tolist() == [-3.0, -(5.0 + 8.0)]  # through -Wn: minus the sum over w < -delta
    # latent weights: g * Wp, g * 1 or g * Wn by zone
    assert w.grad.tolist() == [[0.5, 2.0, 0.75, 2.0], [5.0, 6.0, 14.0, 8.0]]


def test_scales_become_powers_of_two_in_the_channel_window():
    w = torch.tensor([[1.0, -1.0, 0.1], [1.0, -1.0, 0.1]])
    q = _quant(w, wbits=3, wp=[1.3, 0.9], wn=[0.2, 0.05])  # window: 3 shifts below the larger scale
    out, e0 = q(w)
    assert e0.tolist() == [-2, -2]  # top 2**0 (nearest to 1.3 and to 0.9), unit 2**-2
    assert out.tolist() == [[1.0, -0.25, 0.0], [1.0, -0.25, 0.0]]  # 0.2 -> 1/4; 0.05 clamped to one unit
    codes = q.codes(w)
    assert torch.equal(codes.value * torch.exp2(codes.e0.float())[:, None], out)
    assert codes.sign[0].tolist() == [[0, 1, 0], [0, 1, 0]] and codes.zero[0, :, 2].all()


def test_two_bits_forces_equal_scales():
    w = torch.tensor([[1.0, -1.0, 0.0]])
    out, e0 = _quant(w, wbits=2, wp=[0.9], wn=[0.3])(w)
    assert out.tolist() == [[1.0, -1.0, 0.0]] and e0.tolist() == [0]


def test_terms_give_sums_of_powers_of_two():
    w = torch.tensor([[1.0, -1.0]])
    out, _ = _quant(w, wbits=4, terms=2, wp=[0.75], wn=[0.625])(w)  # 3/4 = 1/2 + 1/4, 5/8 = 1/2 + 1/8
    assert out.tolist() == [[0.75, -0.625]]
    out1, _ = _quant(w, wbits=4, terms=1, wp=[0.75], wn=[0.625])(w)
    assert out1.tolist() == [[1.0, -0.5]]


def test_straight_through_gradient_reaches_the_learned_scales():
    w = torch.tensor([[1.0, -1.0, 0.5]])
    q = _quant(w, wbits=3, wp=[0.9], wn=[0.3])
    out, _ = q(w)
    out.sum().backward()
    assert q.wp.grad.tolist() == [2.0] and q.wn.grad.tolist() == [-1.0]


def test_initial_scales_are_the_mean_magnitudes_of_each_set():
    w = torch.tensor([[2.0, 1.0, -0.5, 0.5], [-4.0, -2.0, 0.0, 0.0]])
    q = _quant(w)  # delta = (0.5, 1.0); an empty set falls back to the channel's mean |w|
    assert q.wp.tolist() == [1.5, 1.5] and q.wn.tolist() == [1.0, 3.0]


def test_per_layer_scales_and_threshold():
    w = torch.tensor([[2.0, -0.4], [0.6, -0.2]])
    q = _quant(w, per_channel=False, wp=[1.0], wn=[1.0])
    assert q.wp.shape == (1,)
    out, e0 = q(w)  # delta = 0.25 * 2 = 0.5 for both channels
    assert out.tolist() == [[1.0, 0.0], [1.0, 0.0]] and e0.tolist() == [-2, -2]


@pytest.mark.parametrize("t", [0.0, 1.0, -0.1])
def test_bad_threshold_is_a_user_error(t):
    with pytest.raises(UserError, match="--ttq-threshold"):
        TrainConfig(method="ttq", ttq_threshold=t).validate()
