"""distill: the soft-target loss, learned points with their gradients, and the teacher refusals."""

import json

import pytest
import torch
import torch.nn.functional as F

from core.errors import UserError
from quant.config import TrainConfig
from quant import runs
from quant.methods.distill import Distill, PointsWeightQuant, redistribute_bits
from quant.quantizers import Pow2WeightQuant
from quant.train import main as train_main

from tests.conftest import one_thread
from tests.quant.test_cli import exit_code, one_error_line


def test_loss_mixes_labels_and_soft_targets():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 10), torch.randint(10, (8,))
    m = Distill(TrainConfig(method="distill", distill_weight=0.7, temperature=3.0))
    m.teacher = lambda x: logits * 1.0  # a teacher that agrees with the student: KL is zero
    torch.testing.assert_close(m.loss(logits, y, None), 0.3 * F.cross_entropy(logits, y))
    other = torch.randn(8, 10)
    m.teacher = lambda x: other
    kl = F.kl_div(F.log_softmax(logits / 3, 1), F.softmax(other / 3, 1), reduction="batchmean")
    torch.testing.assert_close(m.loss(logits, y, None), 0.3 * F.cross_entropy(logits, y) + 0.7 * 9 * kl / 10)


def test_points_assignment_hardware_values_and_gradients():
    wq = PointsWeightQuant(wbits=3, terms=1)  # points 1, 2, 4 in units of 2**e0
    with torch.no_grad():
        wq.points.copy_(torch.tensor([1.0, 2.6, 3.5]))  # learned; the hardware runs 1, 2, 4
    # max 0.9: top level 2**0 (INQ's rule), unit 2**-2
    w = torch.tensor([[0.9, 0.6, -0.2, 0.05, 0.14]], requires_grad=True)
    q, e0 = wq(w)
    assert e0.tolist() == [-2]
    # in units 3.6, 2.4, -0.8, 0.2, 0.56: nearest points 3.5, 2.6, 1, 0, 1, run as 4, 2, 1, 0, 1
    assert (q.detach() / 0.25).tolist() == [[4.0, 2.0, -1.0, 0.0, 1.0]]
    (q * torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])).sum().backward()
    # each point: the sum of its weights' upstream gradients times sign and unit
    assert wq.points.grad.tolist() == [(-3.0 + 5.0) * 0.25, 2.0 * 0.25, 1.0 * 0.25]
    assert w.grad.tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0]]  # straight-through to the float weights
    wq.eval()
    with torch.no_grad():
        c = wq.codes(w)
        q2, _ = wq(w)
    assert torch.equal(q2, c.value * 0.25)


def test_learn_points_false_is_the_pow2_quantiser():
    assert isinstance(Distill(TrainConfig(method="distill", learn_points=False)).weight_quant(), Pow2WeightQuant)


def test_assignment_follows_the_hardware_values_not_the_learned_points():
    # a learned point of 1.4 runs as 1 (one shift): a weight at 0.6 units is nearer 1 than 0, so it
    # takes the point, although it is nearer 0 than 1.4; at W2 the point cannot move the zero threshold
    wq = PointsWeightQuant(wbits=2, terms=1)
    with torch.no_grad():
        wq.points.fill_(1.4)
    w = torch.tensor([[1.0, 0.6, -0.45, 0.52]])  # max 1.0: unit 2**0
    q, e0 = wq(w)
    assert e0.tolist() == [0] and q.tolist() == [[1.0, 1.0, 0.0, 1.0]]


def test_bad_options_and_a_missing_teacher(tmp_path, capsys, trained_runs):
    with pytest.raises(UserError, match="--temperature"):
        TrainConfig(method="distill", temperature=0).validate()
    with pytest.raises(UserError, match="--distill-weight"):
        TrainConfig(method="distill", distill_weight=1.5).validate()
    with one_thread(), pytest.raises(SystemExit) as exc:
        train_main(["--method", "distill", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    assert exc.value.code == 2
    assert "--teacher" in capsys.readouterr().err
    with one_thread():
        # a teacher of another data set is refused
        train_main(["--data", "synthetic", "--method", "float", "--epochs", "1", "--out", str(tmp_path / "syn"),
                    "--no-progress"])
        with pytest.raises(SystemExit):
            train_main(["--method", "distill", "--epochs", "1", "--teacher", str(tmp_path / "syn"),
                        "--init-from", str(trained_runs.float), "--out", str(tmp_path / "r2"), "--no-progress"])
    assert "--data synthetic" in capsys.readouterr().err


def test_any_run_teaches(tmp_path, trained_runs):
    """A quantised run, or a network of other widths, is a teacher like any other (same data)."""
    with one_thread():
        train_main(["--method", "float", "--channels", "8,8", "--epochs", "1", "--out", str(tmp_path / "narrow"),
                    "--no-progress"])
        for teacher in (trained_runs.pow2, tmp_path / "narrow"):
            out = tmp_path / f"from-{teacher.name}"
            train_main(["--method", "distill", "--wbits", "2", "--epochs", "1", "--teacher", str(teacher),
                        "--init-from", str(trained_runs.float), "--golden", "2", "--out", str(out), "--no-progress"])
            s = json.loads((out / "summary.json").read_text())
            assert s["logit_mismatches"] == 0


def test_points_start_at_the_quantiles_of_the_weights():
    # one channel, max 4.0: the 3-bit window's top level is 2**2, unit 2**0; |w| in units 0..4
    wq = PointsWeightQuant(wbits=3, terms=1)
    wq.init_quantiles(torch.tensor([[0.0, -1.0, 1.0, 2.0, -3.0, 3.0, 4.0]]))
    # point j of 3 at the j/3 quantile of |w| = 0, 1, 1, 2, 3, 3, 4 (linear interpolation)
    assert wq.points.tolist() == [1.0, 3.0, 4.0]
    # the hardware runs each as a power of two of the window: 3 rounds up to 4 (at or above 1.5 * 2),
    # so two points share the level 4 and the level 2 goes unused while the points stay there
    assert wq._hardware().tolist() == [1.0, 4.0, 4.0]
    q, _ = wq(torch.tensor([[2.0, 2.9, 4.0]]))
    assert q.tolist() == [[1.0, 4.0, 4.0]]  # 2 and 2.9 take the nearest hardware values, 1 and 4


def test_at_w2_quantile_points_run_as_the_one_shift():
    wq = PointsWeightQuant(wbits=2, terms=1)
    w = torch.tensor([[0.1, 0.2, -0.9, 1.0]])
    wq.init_quantiles(w)
    assert wq.points.tolist() == [1.0]  # the 1/1 quantile of |w| / 2**0 is the max


def test_redistribute_bits_keeps_the_total_and_the_hardware_bounds():
    # the source's rule: each layer keeps bits - 1, one bit per layer is shared by gradient norm
    assert redistribute_bits([1.0, 1.0, 1.0], [3, 3, 3]) == [3, 3, 3]
    assert redistribute_bits([4.0, 1.0, 1.0], [3, 3, 3]) == [4, 3, 2]
    assert redistribute_bits([10.0, 0.0, 0.0], [3, 3, 3]) == [5, 2, 2]  # 5 is the widest code
    # at W2 no layer can give a bit up: ternary is the narrowest code the hardware has
    assert redistribute_bits([10.0, 1.0, 0.0], [2, 2, 2]) == [2, 2, 2]
    for norms in ([0.3, 2.0, 0.1, 5.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]):
        out = redistribute_bits(norms, [3, 3, 3, 3])
        assert sum(out) == 12 and all(2 <= b <= 5 for b in out)


def test_redistributed_run_exports_exactly_and_reloads(tmp_path, trained_runs):
    out = tmp_path / "r"
    with one_thread():
        train_main(["--method", "distill", "--wbits", "3", "--epochs", "1", "--redistribute-bits", "true",
                    "--init-from", str(trained_runs.float), "--teacher", str(trained_runs.float),
                    "--golden", "2", "--out", str(out), "--no-progress"])
    s = json.loads((out / "summary.json").read_text())
    bits = json.loads((out / "config.json").read_text())["layer_wbits"]
    assert s["logit_mismatches"] == 0 and sum(bits) == 3 * len(bits)
    net, _ = runs.load_network(out)
    assert [m.weight_quant.wbits for m in net.weighted_layers()] == bits


def test_bad_points_init_is_one_line(tmp_path, capsys, trained_runs):
    code = exit_code(train_main, ["--method", "distill", "--points-init", "median", "--init-from",
                                  trained_runs.float, "--out", tmp_path / "r", "--no-progress"])
    assert code == 2
    assert "--points-init" in one_error_line(capsys)
