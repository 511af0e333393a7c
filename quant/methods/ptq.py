"""``ptq``: data-free post-training quantisation of a float run (DFQ's equalisation and bias
correction, Nagel et al. arXiv 1906.04721; weight range rules compared as in Nayak et al.
arXiv 1910.04877).

No image is looked at.  Everything the method needs about the activations comes from the
float network's BatchNorm: a hidden layer's pre-activation in channel ``i`` is modelled as
``N(beta_i, gamma_i**2)``, so after ReLU its values follow a rectified Gaussian
(max-pooling is left out of the model, see :func:`activation_grid`).  In order, :func:`quantize`:

1. folds BatchNorm into the weights for good, keeping ``(beta, |gamma|)`` per channel;
2. equalises the ranges of consecutive layers joined by ReLU (and max-pooling, Flatten);
3. picks each weight channel's power-of-two window ``e0`` by the range rule;
4. corrects each bias for the expected error its quantised weights make;
5. picks each activation exponent by the least expected squared error under the model.

The network's weight quantisers then hold only ``e0``; the codes are the greedy power-of-two
sums of the (equalised) float weights in that window, the same function in the forward pass
and in the export.

With ``--ptq-clusters K`` the classes are also grouped by their classifier rows
(:func:`class_clusters`, Nayak et al.'s object-class clustering as we read it) and the run
reports its accuracy at the cluster level; the network itself is unchanged.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from core import arith
from core.errors import UserError

from ..layers import QuantReLU
from ..quantizers import pow2_window, window_codes
from .base import Method, channel_view, fold_bn_for_good, mark_bn_folded

#: weight range rules (``--ptq-range``)
RANGES = ("max", "mse", "gauss")
#: clipping candidates of the mse and gauss rules: the max rule's window and this many below it
CLIP_STEPS = 4
#: standard-normal grid on which expectations under the Gaussian models are computed
_Z = torch.linspace(-8.0, 8.0, 4001, dtype=torch.float64)


# -- power-of-two codes in a chosen window ------------------------------------------------------

def window_values(w, e0, wbits, terms):
    """The quantised weights ``value * 2**e0`` of :func:`window_codes`."""
    value = window_codes(w, e0, wbits, terms, values_only=True).value
    return value * channel_view(torch.exp2(e0.to(w.dtype)), w)


def choose_window(w, wbits, terms, rule, per_channel=True, clip_steps=CLIP_STEPS):
    """The unit exponent ``e0`` per output channel of ``w`` that the range ``rule`` picks.

    ``max``: INQ's rule, the top level is the power of two nearest to ``max|w|`` (no clipping).
    ``mse``: among that window and the ``clip_steps`` below it, the least squared error of the
    weights themselves.  ``gauss``: the same candidates, the least expected squared error
    for weights drawn from ``N(0, rms(w)**2)`` (a parameter-driven rule that ignores where
    the individual outliers sit).  Ties go to the wider window.
    """
    w = w.detach().double().flatten(1)  # (C, n)
    widest = pow2_window(w, wbits, per_channel)
    if rule == "max":
        return widest.long()
    cands = widest[None] - torch.arange(clip_steps + 1, dtype=w.dtype)[:, None]  # (J, C)
    if rule == "mse":
        samples, prob = w, torch.ones(w.shape[1], dtype=w.dtype)
    elif rule == "gauss":
        ms = w.square().mean(1) if per_channel else w.square().mean().expand(w.shape[0])
        samples, prob = ms.sqrt()[:, None] * _Z, torch.exp(-0.5 * _Z.square())
    else:
        raise UserError(f"unknown --ptq-range {rule!r}; choose from {', '.join(RANGES)}")
    err = torch.stack([(prob * (window_values(samples, e, wbits, terms) - samples).square()).sum(1)
                       for e in cands])  # (J, C)
    if not per_channel:
        err = err.sum(1, keepdim=True).expand_as(err)
    return cands.gather(0, err.argmin(0)[None])[0].long()


class PTQWeightQuant(nn.Module):
    """Power-of-two weights in a window fixed at set-up (buffer ``e0``, one per output channel).

    The codes are a function of the weight and ``e0`` only, so the forward pass and the export
    agree exactly.  Nothing is trained: the forward has no gradient to the weight.
    """

    def __init__(self, *, wbits, terms=1, per_channel=True):
        super().__init__()
        arith.check_bits(wbits=wbits, terms=terms)
        self.wbits, self.terms, self.per_channel = wbits, terms, per_channel

    def allocate(self, weight):
        """Make the ``e0`` buffer, one per output channel of ``weight`` (at build)."""
        self.register_buffer("e0", torch.zeros(weight.shape[0], dtype=torch.long))

    def codes(self, w):
        return window_codes(w, self.e0, self.wbits, self.terms)

    def forward(self, w):
        return window_values(w, self.e0, self.wbits, self.terms), self.e0

    def extra_repr(self):
        return f"wbits={self.wbits}, terms={self.terms}, per_channel={self.per_channel}"


class BNRangeReLU(QuantReLU):
    """A :class:`QuantReLU` whose exponent is set once, from BatchNorm statistics; it never
    observes activations, in training mode either."""

    def train_step(self, x):
        pass


# -- the Gaussian model of the activations ------------------------------------------------------

@dataclasses.dataclass
class Link:
    """A hidden weighted layer and what follows it up to the next weighted layer.

    ``mean``/``std``: the model ``N(mean, std**2)`` of its pre-activation per output channel
    (from BatchNorm); ``act``: its ReLU quantiser; ``nxt``: the next weighted layer.
    """

    layer: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    act: QuantReLU
    nxt: nn.Module


def links(net):
    """The :class:`Link` of each weighted layer that feeds another (BatchNorm not yet folded)."""
    body, layers = list(net.body), net.weighted_layers()
    out = []
    for layer, nxt in zip(layers, layers[1:]):
        between = body[body.index(layer) + 1: body.index(nxt)]
        acts = [m for m in between if isinstance(m, QuantReLU)]
        if layer.bn is None or len(acts) != 1:
            raise UserError(f"--method ptq needs BatchNorm and ReLU after every hidden layer "
                            f"({type(layer).__name__} lacks them); use --model cnn or mlp")
        out.append(Link(layer, layer.bn.bias.detach().double().clone(), layer.bn.weight.detach().double().abs(),
                        acts[0], nxt))
    return out


def activation_grid(mean, std):
    """The modelled distribution of a ReLU layer's output per channel, for expectations.

    Returns ``(x, prob)``: points ``x`` of shape ``(C, G)`` of the rectified Gaussian
    ``max(0, N(mean, std**2))`` and their probabilities ``prob`` (``G``, summing to one).
    Max-pooling raises the values; the model ignores it, because the maximum of independent
    draws overstates it for correlated neighbours and that error cost more accuracy than the
    understatement does (docs/methods.md gives the measurements).
    """
    dens = torch.exp(-0.5 * _Z.square())
    x = (mean.double()[:, None] + std.double()[:, None] * _Z).clamp_min(0.0)
    return x, dens / dens.sum()


def act_exponent(mean, std, bits):
    """The activation exponent with the least expected squared quantisation error, averaged
    over the channels of the tensor, under :func:`activation_grid`'s model."""
    x, prob = activation_grid(mean, std)
    qmax = arith.act_max(bits)
    top = float(x.max())
    if top <= 0:  # every channel is dead: all codes are zero whatever the exponent
        return bits
    lo = math.floor(math.log2(qmax / top))  # no clipping even at 8 standard deviations
    errs = []
    for e in range(lo, lo + 10):
        q = torch.clamp(torch.floor(x * 2.0**e + 0.5), 0, qmax) * 2.0**-e
        errs.append(float((prob * (q - x).square()).sum(1).mean()))
    return lo + min(range(len(errs)), key=errs.__getitem__)


# -- Nayak et al.'s object-class clustering -----------------------------------------------------

def class_clusters(w, k, *, iters=100):
    """Cluster the ``C`` classes into ``k`` groups by their classifier rows, without data.

    ``w`` is the last layer's float weight ``(C, features)``; row ``c`` is the feature template
    of class ``c``.  Classes whose rows point the same way are the ones the network tells apart
    by the fewest features, so a coarsely quantised network confuses them most: they go in one
    cluster.  k-means on the unit-normalised rows (cosine), started deterministically by
    farthest points from class 0, ``iters`` Lloyd steps.  Returns the cluster of each class
    (``C``, long), numbered in order of first appearance; no cluster is empty.
    """
    rows = F.normalize(w.detach().double().flatten(1), dim=1)
    c = rows.shape[0]
    if not 2 <= k <= c:
        raise UserError(f"--ptq-clusters must be between 2 and the {c} classes (0: off), not {k}")
    centres = [0]
    for _ in range(k - 1):
        dist = torch.cdist(rows, rows[centres]).amin(1)
        centres.append(int(dist.argmax()))
    centre = rows[centres].clone()
    assign = None
    for _ in range(iters):
        new = torch.cdist(rows, centre).argmin(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = rows[assign == j]
            if members.numel():
                centre[j] = members.mean(0)
    # renumber in order of first appearance, so the result does not depend on the start's order
    order = {}
    for a in assign.tolist():
        order.setdefault(a, len(order))
    return torch.tensor([order[a] for a in assign.tolist()], dtype=torch.long)


def cluster_accuracy(pred, target, clusters):
    """Share of ``pred`` in the same class cluster as ``target`` (``clusters[class]``)."""
    clusters = torch.as_tensor(clusters, dtype=torch.long)
    return float((clusters[torch.as_tensor(pred)] == clusters[torch.as_tensor(target)]).double().mean())


# -- DFQ: cross-layer equalisation and bias correction ------------------------------------------

def _bias(layer):
    """The tensor holding a layer's bias once BatchNorm is folded for good (None: no bias)."""
    return layer.bn.bias if layer.bn is not None else layer.bias


def _grouped(w, channels):
    """``w`` as ``(out, channels, rest)``: input channel ``i`` of the previous layer owns
    ``w[:, i]`` (a conv's kernel taps, or after Flatten the ``H*W`` block of linear inputs)."""
    return w.reshape(w.shape[0], channels, -1)


def equalize_pair(link):
    """One DFQ step on ``link.layer -> link.nxt``: ``W1 <- S^-1 W1``, ``b1 <- S^-1 b1``,
    ``W2 <- W2 S`` with ``s_i = sqrt(r1_i r2_i) / r2_i``, where ``r1_i`` is the range of output
    channel ``i`` of ``W1`` and ``r2_i`` that of input channel ``i`` of ``W2``.  ReLU and
    max-pooling commute with a positive per-channel scale, so the float function is unchanged;
    the activation model scales with the channel too.  Returns ``s``."""
    w1, w2 = link.layer.weight, link.nxt.weight
    c = w1.shape[0]
    r1 = w1.detach().abs().flatten(1).amax(1).double()
    r2 = _grouped(w2.detach().abs(), c).amax(dim=(0, 2)).double()
    s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-300)), torch.ones_like(r1))
    w1.div_(channel_view(s.float(), w1))
    b1 = _bias(link.layer)
    if b1 is not None:
        b1.div_(s.float())
    _grouped(w2.data, c).mul_(s.float()[None, :, None])
    link.mean, link.std = link.mean / s, link.std / s
    return s


def cross_layer_equalize(chain, *, tol=1e-6, max_sweeps=500):
    """Equalise every pair of :func:`links` in turn until no scale moves more than ``tol``
    (relative).  Returns the number of sweeps."""
    for sweep in range(1, max_sweeps + 1):
        worst = max(float(equalize_pair(link).log().abs().max()) for link in chain)
        if worst < tol:
            break
    return sweep


def correct_bias(link):
    """DFQ's bias correction of ``link.nxt``: ``b <- b - (W_q - W) E[x]``, with ``E[x]`` per input
    channel the mean of :func:`activation_grid` (the rectified Gaussian of ``link``).
    Its expected output is then the float layer's, under that model."""
    x, prob = activation_grid(link.mean, link.std)
    mean_in = (prob * x).sum(1)  # (C,)
    w = link.nxt.weight.detach()
    err = _grouped((link.nxt.weight_quant(w)[0] - w).double(), mean_in.numel()).sum(2) @ mean_in
    b = _bias(link.nxt)
    if b is not None:  # a layer without bias has nowhere to put the correction
        b.sub_(err.to(b.dtype))


@torch.no_grad()
def quantize(net, rule, *, cle=True, bias_correction=True):
    """Set up a freshly built ``ptq`` network (float weights and BatchNorm) without data.

    BatchNorm is folded for good (its ``beta, |gamma|`` kept as the activation model), the
    ranges equalised (``cle``), each weight window chosen by the range ``rule`` (:data:`RANGES`),
    the biases corrected (``bias_correction``) and each activation exponent set.
    """
    chain = links(net)
    fold_bn_for_good(net)
    if cle and chain:
        cross_layer_equalize(chain)
    for m in net.weighted_layers():
        q = m.weight_quant
        q.e0.copy_(choose_window(m.weight, q.wbits, q.terms, rule, q.per_channel))
    for link in chain:
        if bias_correction:
            correct_bias(link)
        link.act.exp.fill_(act_exponent(link.mean, link.std, link.act.bits))
        link.act.calibrated.fill_(True)


class PTQ(Method):
    """Data-free post-training quantisation: no epochs; everything happens in :meth:`setup`."""

    label = "ptq"
    trains = False

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        if not cfg.init_from:
            raise UserError("--method ptq quantises a trained float network: give --init-from FLOAT_RUN_DIR")
        if cfg.ptq_range not in RANGES:
            raise UserError(f"unknown --ptq-range {cfg.ptq_range!r}; choose from {', '.join(RANGES)}")
        if cfg.ptq_clusters < 0 or cfg.ptq_clusters == 1:
            raise UserError(f"--ptq-clusters must be 0 (off) or at least 2, not {cfg.ptq_clusters}")

    def weight_quant(self):
        c = self.cfg
        return PTQWeightQuant(wbits=c.wbits, terms=c.terms, per_channel=c.per_channel)

    def act_quant(self, bits):
        return BNRangeReLU(bits=bits)

    def build(self, net):
        super().build(net)
        mark_bn_folded(net)

    def setup(self, net, dataset, source):
        """Quantise from the float network alone; ``dataset`` is not touched."""
        if source is None or source.quantized:
            raise UserError("--method ptq starts from a float run: give --init-from a run trained with --method float")
        c = self.cfg
        if c.ptq_clusters:
            last = net.weighted_layers()[-1]
            c.ptq_class_clusters = class_clusters(last.folded()[0], c.ptq_clusters).tolist()
        quantize(net, c.ptq_range, cle=c.ptq_cle, bias_correction=c.ptq_bias_correction)

    def summary(self, net, dataset):
        """With class clusters: the test accuracy at the cluster level (a prediction counts when it
        falls in its true class's cluster) and chance at that level."""
        clusters = self.cfg.ptq_class_clusters
        if not clusters:
            return {}
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(x).argmax(1) for x in dataset.test_x.split(1000)])
        sizes = torch.bincount(torch.tensor(clusters)).double() / len(clusters)
        return {"class_clusters": clusters,
                "cluster_accuracy": cluster_accuracy(pred, dataset.test_y, clusters),
                "cluster_chance": float(sizes.square().sum())}

    def describe(self):
        c = self.cfg
        opts = [f"range={c.ptq_range}"] + [name for name, on in (("cle", c.ptq_cle),
                                                                 ("bias-correction", c.ptq_bias_correction)) if on]
        if c.ptq_clusters:
            opts.append(f"clusters={c.ptq_clusters}")
        return f"{super().describe()} {' '.join(opts)}"
