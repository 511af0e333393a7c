"""Quantised layers that keep PyTorch's signatures, and ``quantize_model`` for a float network.

A weighted layer knows the quantiser that feeds it (``link_input``), because its bias is
rounded to the accumulator's unit ``2**(e0 - in_exp)`` and its accumulator width depends on
the input's bits.  BatchNorm is folded into the weights inside the forward pass: in eval
mode (and in training once ``bn_frozen``) the layer computes exactly
``conv(x, Q(w * g/s)) + Q(b')``, the arithmetic the hardware performs.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .errors import UserError
from .quantizers import ActQuant, quant_bias, quantize_input


class QuantInput(nn.Module):
    """Quantises network inputs in ``[0, 1]`` to unsigned ``bits``-bit codes (exponent ``bits``)."""

    def __init__(self, *, bits):
        super().__init__()
        arith.check_bits(abits=bits)
        self.bits = bits

    @property
    def exp(self):
        return self.bits

    def forward(self, x):
        return quantize_input(x, self.bits) * 2.0**-self.bits

    def extra_repr(self):
        return f"bits={self.bits}"


class QuantReLU(ActQuant):
    """ReLU followed by an unsigned ``bits``-bit power-of-two-scaled quantiser (keeps ``nn.ReLU``'s
    place in a network; the quantiser is :class:`quant.quantizers.ActQuant`)."""


class _QuantWeighted:
    """Shared forward of :class:`QuantConv2d` and :class:`QuantLinear`."""

    def _init_quant(self, weight_quant, bn):
        self.weight_quant = weight_quant
        self.bn = bn
        self.bn_frozen = False
        self.bn_folded = False  # BatchNorm folded into the weight for good (quant.methods.base.fold_bn_for_good)
        self._input = None  # a one-element tuple: keeps the feeding quantiser out of submodules

    def link_input(self, quant):
        """Name the quantiser (:class:`QuantInput` or :class:`QuantReLU`) whose codes feed this layer."""
        self._input = (quant,)

    @property
    def input_quant(self):
        if self._input is None:
            raise RuntimeError(f"{type(self).__name__} has no input quantiser; build it with quantize_model")
        return self._input[0]

    @property
    def fan_in(self):
        return self.weight[0].numel()

    @property
    def arith(self):
        """The layer's derived integer numbers (:class:`quant.arith.LayerArith`)."""
        return arith.LayerArith(
            fan_in=self.fan_in,
            in_bits=self.input_quant.bits,
            wbits=self.weight_quant.wbits,
            terms=self.weight_quant.terms,
        )

    def folded(self):
        """Weight and bias with BatchNorm (running statistics) folded in: ``(w * g/s, b')``."""
        bias = self.bias if self.bias is not None else torch.zeros(self.out_features_, device=self.weight.device)
        if self.bn is None:
            return self.weight, bias
        if self.bn_folded:
            return self.weight, self.bn.bias + bias
        inv_std = torch.rsqrt(self.bn.running_var + self.bn.eps)
        scale = self.bn.weight * inv_std
        w = self.weight * scale.view((-1,) + (1,) * (self.weight.dim() - 1))
        return w, self.bn.bias + (bias - self.bn.running_mean) * scale

    def integer_params(self):
        """The weight codes and integer bias the hardware stores, as computed in the forward pass."""
        w, b = self.folded()
        codes = self.weight_quant.codes(w)
        b_int, _ = quant_bias(b, self.input_quant.exp, codes.e0.to(b.dtype), self.arith.product_bound)
        return codes, b_int

    def _batch_stats_forward(self, y):
        """BatchNorm with batch statistics while it still learns (Krishnamoorthi, arXiv 1806.08342).

        ``y = conv(x, Q(w * s))`` with ``s = g / sqrt(running_var + eps)`` per channel.  The
        reference form normalises ``y / s`` by its batch statistics; normalisation cancels a
        per-channel factor up to its sign (``sign(s) = sign(g)``), so ``|g|`` on ``y`` itself
        gives the same output without the division and its backward pass (eps aside).  The
        running statistics are those of ``y / s + bias``, as the float BatchNorm would see.
        """
        bn = self.bn
        # momentum 1 makes batch_norm leave the batch mean and unbiased variance of y in these
        # buffers, at no extra pass over y
        mean, var = torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var)
        out = F.batch_norm(y, mean, var, bn.weight.abs(), bn.bias, True, 1.0, bn.eps)
        with torch.no_grad():
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = self.bias if self.bias is not None else 0.0
            bn.running_mean.lerp_(mean / scale + bias, bn.momentum)
            bn.running_var.lerp_(var / scale.square(), bn.momentum)
            bn.num_batches_tracked += 1
        return out

    def _quant_forward(self, x, op):
        w, b = self.folded()
        w_q, e0 = self.weight_quant(w)
        if self.training and self.bn is not None and not self.bn_frozen:
            return self._batch_stats_forward(op(x, w_q, None))
        num = self.arith
        _, b_q = quant_bias(b, self.input_quant.exp, e0.to(b.dtype), num.product_bound)
        if not self.training and not arith.float32_exact(num.product_bound):
            # partial sums may exceed float32's 24-bit mantissa: evaluate exactly in float64
            return op(x.double(), w_q.double(), b_q.double())
        return op(x, w_q, b_q)


class QuantConv2d(_QuantWeighted, nn.Conv2d):
    """``nn.Conv2d`` with quantised weights, integer bias and optional folded BatchNorm.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, bias
        As :class:`torch.nn.Conv2d` (``groups=1``, ``dilation=1``, zero padding).
    weight_quant : nn.Module
        A weight quantiser from :mod:`quant.quantizers`.
    bn : nn.BatchNorm2d, optional
        The BatchNorm that follows this convolution, folded into it.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
                 weight_quant, bn=None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self._init_quant(weight_quant, bn)

    @property
    def out_features_(self):
        return self.out_channels

    def forward(self, x):  # (B, C, H, W) -> (B, O, H', W')
        return self._quant_forward(x, lambda x, w, b: F.conv2d(x, w, b, self.stride, self.padding))


class QuantLinear(_QuantWeighted, nn.Linear):
    """``nn.Linear`` with quantised weights, integer bias and optional folded BatchNorm1d."""

    def __init__(self, in_features, out_features, bias=True, *, weight_quant, bn=None):
        super().__init__(in_features, out_features, bias=bias)
        self._init_quant(weight_quant, bn)

    @property
    def out_features_(self):
        return self.out_features

    def forward(self, x):  # (B, I) -> (B, O)
        return self._quant_forward(x, F.linear)


class IntMaxPool2d(nn.MaxPool2d):
    """Max-pooling on activation codes (no padding); exact on integers since it only compares."""

    def __init__(self, kernel_size, stride=None):
        super().__init__(kernel_size, stride=stride, padding=0)


class QuantNet(nn.Module):
    """A quantised feed-forward network: ``body`` is an ``nn.Sequential`` of quantised layers."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def stages(self):
        """The body as the forward runs it: ``(module,)`` or ``(max_pool, quantiser)``.

        A quantiser is monotone, so it commutes with max-pooling: pooling first gives the same
        codes from a quarter of the work, and the exponent is calibrated on what the next layer
        sees.  (Golden vectors still tap the layers in their listed order.)
        """
        mods = list(self.body)
        out, i = [], 0
        while i < len(mods):
            if isinstance(mods[i], QuantReLU) and i + 1 < len(mods) and isinstance(mods[i + 1], IntMaxPool2d):
                out.append((mods[i + 1], mods[i]))
                i += 2
            else:
                out.append((mods[i],))
                i += 1
        return out

    def forward(self, x):
        for stage in self.stages():
            for m in stage:
                x = m(x)
        return x

    def weighted_layers(self):
        return [m for m in self.body if isinstance(m, _QuantWeighted)]

    @torch.no_grad()
    def calibrate(self, x):
        """Set every activation exponent from a batch ``x`` (eval-mode forward, BatchNorm untouched)."""
        was = self.training
        self.eval()
        for stage in self.stages():
            for m in stage:
                if isinstance(m, QuantReLU):
                    m.calibrated.fill_(False)
                    m.observe(x)
                x = m(x)
        self.train(was)

    def start_epoch(self, step):
        """Set the training step count of every activation quantiser to ``step`` (the steps of the
        epochs done), so their calibration cadence is the same in a resumed run."""
        for m in self.modules():
            if isinstance(m, ActQuant):
                m._steps = step

    def freeze_bn(self, frozen=True):
        """Fold BatchNorm with its running statistics in training too, so the training forward is
        the deployed arithmetic exactly (the statistics stop updating)."""
        for m in self.weighted_layers():
            m.bn_frozen = frozen


def quantize_model(model, config=None, *, method=None, make_weight_quant=None, make_act_quant=None, abits=None):
    """Convert a float ``nn.Sequential`` into a :class:`QuantNet`.

    Supported layers: ``Conv2d`` (groups 1, zero padding) and ``Linear``, each optionally
    followed by ``BatchNorm2d``/``BatchNorm1d`` (folded in) and ``ReLU`` (becomes a
    :class:`QuantReLU`); ``MaxPool2d`` (no padding); ``Flatten``.  An input quantiser is put
    in front.  Float weights, biases and BatchNorm statistics are copied.

    Parameters
    ----------
    model : nn.Sequential
        The float network.
    config : quant.config.TrainConfig, optional
        Its method (:mod:`quant.methods`) makes the quantisers.
    method : quant.methods.base.Method, optional
        The method object itself (its config gives the bits); it makes the quantisers and
        ``build`` s the network.  Or give the keywords instead:
    make_weight_quant : callable
        Returns a fresh weight quantiser for each weighted layer.
    make_act_quant : callable, optional
        ``make_act_quant(bits)`` returns a fresh :class:`QuantReLU` (default: ``QuantReLU``).
    abits : int
        Activation bits (also the input's bits).
    """
    if config is not None:
        from .methods import get_method  # the methods build on these layers

        method = get_method(config)
    if method is not None:
        make_weight_quant = method.weight_quant if method.quantized else None
        make_act_quant, abits = method.act_quant, method.cfg.abits
    if make_act_quant is None:
        make_act_quant = lambda bits: QuantReLU(bits=bits)  # noqa: E731
    if make_weight_quant is None or abits is None:
        raise UserError("quantize_model needs a quantised config (method other than float), "
                        "or make_weight_quant and abits")
    if not isinstance(model, nn.Sequential):
        raise UserError(f"quantize_model takes an nn.Sequential, not {type(model).__name__}")
    arith.check_bits(abits=abits)
    mods = list(model)
    out = [QuantInput(bits=abits)]
    feeding = out[0]
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bn = None
            if i + 1 < len(mods) and isinstance(mods[i + 1], (nn.BatchNorm1d, nn.BatchNorm2d)):
                bn = mods[i + 1]
                i += 1
            if isinstance(m, nn.Conv2d):
                if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
                    raise UserError(f"layer {i} ({m}) is not supported: only groups=1, dilation=1, zero padding")
                q = QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                bias=m.bias is not None, weight_quant=make_weight_quant(), bn=copy.deepcopy(bn))
            else:
                q = QuantLinear(m.in_features, m.out_features, bias=m.bias is not None,
                                weight_quant=make_weight_quant(), bn=copy.deepcopy(bn))
            q.load_state_dict(m.state_dict(), strict=False)
            q.link_input(feeding)
            out.append(q)
        elif isinstance(m, nn.ReLU):
            feeding = make_act_quant(abits)
            out.append(feeding)
        elif isinstance(m, nn.MaxPool2d):
            if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise UserError(f"layer {i} ({m}) is not supported: max-pool needs padding 0, dilation 1")
            out.append(IntMaxPool2d(m.kernel_size, m.stride))
        elif isinstance(m, nn.Flatten):
            out.append(nn.Flatten())
        else:
            raise UserError(f"layer {i} ({type(m).__name__}) has no quantised form; "
                            f"use Conv2d, Linear, BatchNorm, ReLU, MaxPool2d and Flatten")
        i += 1
    net = QuantNet(nn.Sequential(*out))
    if method is not None:
        method.build(net)
    return net
