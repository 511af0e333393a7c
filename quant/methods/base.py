"""The method interface, the plain methods (``float``, ``pow2``, ``uniform``) and shared helpers.

A :class:`Method` is built from the typed config.  The training loop in
:mod:`quant.train` calls, in order:

``build(net)``
    After the network is constructed, for a fresh run and for a checkpoint alike:
    structural settings that are not in the state dict.  By default each weight quantiser
    with an ``allocate(weight)`` method sizes its per-channel or per-weight state from its
    layer's weight there, before any checkpoint is loaded.
``setup(net, dataset, source)``
    Fresh runs only: numeric initialisation from the starting point ``source`` (a float
    network, a quantised one, or None): calibration, learned scales (``init_layer`` per
    layer), the whole of PTQ.
``epoch_start(net, epoch, trainer)``
    Before each epoch: schedules (DBS's eps; INQ keeps ``trainer`` and counts optimiser
    steps, partitioning and setting the learning rate itself around each step).
``param_groups(net)``
    Adam's parameter groups (a method may give some parameters their own learning rate).
``loss(logits, yb, xb)``, ``before_step(net)``, ``after_step(net)``
    Around each optimiser step.
``finish(net)``
    After the last epoch: make the eval-mode forward the deployed one (e.g. eps = 0).

A weight quantiser (``weight_quant()``) is an ``nn.Module`` with ``wbits``, ``terms`` and
``per_channel``; ``forward(w)`` returns the fake-quantised weight and the per-channel unit
exponent ``e0``, and ``codes(w)`` the :class:`quant.quantizers.WeightCodes` the hardware
stores (``sign``/``shift``/``zero`` may be None when ``value`` is a plain integer; the
export then writes it in canonical signed digits with ``terms`` powers of two).  In eval
mode ``forward`` must equal ``codes(w).value * 2**e0`` exactly: that is what makes the
exported model compute what PyTorch computed.

An activation quantiser (``act_quant(bits)``) is a :class:`quant.layers.QuantReLU`: in eval
mode it computes ``clamp(floor(x * 2**exp + 1/2), 0, 2**bits - 1) * 2**-exp`` with its
integer ``exp``, whatever it does in training.
"""

import torch
import torch.nn.functional as F

from core.errors import UserError

from ..layers import QuantReLU
from ..quantizers import Pow2WeightQuant, UniformWeightQuant


class Method:
    """A quantisation method: the defaults are plain QAT with the straight-through estimator."""

    #: shown in logs and tables
    label = "method"
    #: False for the float network
    quantized = True
    #: False for post-training methods (no epochs are run)
    trains = True
    #: the source says which weight bits it is defined for (None: any); e.g. TTQ is ternary
    wbits_only = None
    #: True when the method needs a float teacher network (``--teacher``)
    needs_teacher = False
    #: True when each weight is one shift by construction (``--terms`` must be 1)
    single_shift = False

    def __init__(self, cfg):
        self.cfg = cfg
        self.teacher = None

    @classmethod
    def check(cls, cfg):
        """Refuse config values this method cannot use (a one-line :class:`UserError`)."""
        if cls.wbits_only is not None and cfg.wbits not in cls.wbits_only:
            raise UserError(f"--method {cfg.method} is defined for --wbits {' or '.join(map(str, cls.wbits_only))} "
                            f"only, not {cfg.wbits}")
        if cls.single_shift and cfg.terms != 1:
            raise UserError(f"--method {cfg.method} quantises each weight to one shift; use --terms 1, not {cfg.terms}")

    # -- what the network is made of -----------------------------------------------------------
    def weight_quant(self):
        """A fresh weight quantiser for one weighted layer (None: float)."""
        raise NotImplementedError

    def act_quant(self, bits):
        """A fresh activation quantiser (a :class:`quant.layers.QuantReLU`)."""
        return QuantReLU(bits=bits)

    # -- set-up ---------------------------------------------------------------------------------
    def build(self, net):
        """Structural settings after construction (fresh run or checkpoint): size each weight
        quantiser's state that depends on its layer (``allocate``)."""
        for m in net.weighted_layers():
            if hasattr(m.weight_quant, "allocate"):
                m.weight_quant.allocate(m.weight)

    def setup(self, net, dataset, source):
        """Initialise a fresh quantised ``net``; default: activation exponents from 512 training images.

        ``source`` is the configuration of the run it starts from (None when fresh).
        """
        if source is None or not source.quantized or source.abits != self.cfg.abits:
            net.calibrate(dataset.train_x[:512])

    def init_layers(self, net):
        """Call :meth:`init_layer` on every weighted layer (no gradient is recorded)."""
        with torch.no_grad():
            for m in net.weighted_layers():
                self.init_layer(m)

    def init_layer(self, layer):
        """Initialise ``layer.weight_quant`` from the layer's float weight (``layer.folded()``)."""
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------
    def bn_frozen(self, epoch):
        """Whether BatchNorm uses its running statistics in this epoch's training forward."""
        return epoch >= self.cfg.epochs - self.cfg.bn_freeze_epochs

    def param_groups(self, net):
        """Adam's parameter groups: default one group of every trainable parameter.  A group
        may carry ``lr_scale``, its learning rate as a fraction of ``--lr``."""
        return [{"params": [p for p in net.parameters() if p.requires_grad]}]

    def epoch_start(self, net, epoch, trainer):
        """Per-epoch schedule; default none."""

    def loss(self, logits, yb, xb):
        return F.cross_entropy(logits, yb)

    def before_step(self, net):
        """After ``backward``, before the optimiser step."""

    def after_step(self, net):
        """After the optimiser step."""

    def finish(self, net):
        """After the last epoch, before evaluation and export."""

    def summary(self, net, dataset):
        """Figures of this method's own for ``summary.json`` (after export); default none."""
        return {}

    def describe(self):
        """One line for logs: the method and its bit widths."""
        c = self.cfg
        if not self.quantized:
            return self.label
        return f"{self.label} W{c.wbits}/A{c.abits}" + (f" terms={c.terms}" if c.terms > 1 else "")


class Float(Method):
    label = "float"
    quantized = False

    def weight_quant(self):
        return None

    def setup(self, net, dataset, source):
        pass


class Pow2(Method):
    """Power-of-two weights (INQ's level rule, sums of ``terms`` shifts), straight-through QAT."""

    label = "pow2"

    def weight_quant(self):
        c = self.cfg
        return Pow2WeightQuant(wbits=c.wbits, terms=c.terms, per_channel=c.per_channel)


class Uniform(Method):
    """Uniform integer weights with a power-of-two scale (run as canonical signed digits)."""

    label = "uniform"

    def weight_quant(self):
        c = self.cfg
        return UniformWeightQuant(wbits=c.wbits, per_channel=c.per_channel)

    def describe(self):
        c = self.cfg
        return f"{self.label} W{c.wbits}/A{c.abits}"


class FoldedMethod(Method):
    """A method whose weight quantiser holds per-weight state (INQ's masks, DeepShift's shifts,
    TTQ's scales, direct's levels), with BatchNorm folded into the weights for good.

    ``build`` sizes each quantiser's state from its layer (``weight_quant.allocate(weight)``)
    before any checkpoint is loaded; ``setup`` folds BatchNorm and then calls
    :meth:`init_layer` on each weighted layer.
    """

    def build(self, net):
        super().build(net)
        mark_bn_folded(net)

    def bn_frozen(self, epoch):
        return True

    def setup(self, net, dataset, source):
        fold_bn_for_good(net)
        self.init_layers(net)
        super().setup(net, dataset, source)


# -- helpers shared by several methods ----------------------------------------------------------

def fold_bn_for_good(net):
    """Fold each weighted layer's BatchNorm into its weight and bias once, numerically.

    For methods that parametrise the deployed weight directly (INQ, DeepShift, direct), a
    BatchNorm that keeps moving would change the weights after they are quantised.  The
    running statistics are folded now (call this once, in ``setup``): ``weight <- w * g/s``,
    and the BatchNorm's bias holds the folded bias ``beta + (b - mean) * g/s``.  The layer is
    marked (:func:`mark_bn_folded`), so from now on BatchNorm only adds that bias.
    """
    with torch.no_grad():
        for m in net.weighted_layers():
            bn = m.bn
            if bn is None:
                continue
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = m.bias if m.bias is not None else torch.zeros_like(scale)
            m.weight.mul_(channel_view(scale, m.weight))
            bn.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
            if m.bias is not None:
                m.bias.zero_()
            # no longer read (the layer is marked folded); identity values for anyone who looks
            bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
    mark_bn_folded(net)


def mark_bn_folded(net):
    """Mark BatchNorm as folded (see :func:`fold_bn_for_good`); call it in ``build`` so a
    checkpoint rebuilds the same forward.  BatchNorm's scale stops learning; its bias is the
    layer's bias."""
    for m in net.weighted_layers():
        if m.bn is not None:
            m.bn_folded = True
            m.bn.weight.requires_grad_(False)
    net.freeze_bn(True)


def channel_view(v, w):
    """A per-output-channel vector shaped to broadcast against ``w``."""
    return v.view((-1,) + (1,) * (w.dim() - 1))


def pow2_exponent_ste(s):
    """``2**round(log2 s)`` with a straight-through gradient to ``s`` (a learned scale made a shift)."""
    e = torch.round(torch.log2(s.detach().clamp_min(2.0**-126)))
    return s + (torch.exp2(e) - s).detach(), e


