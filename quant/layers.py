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

from core import arith
from core.errors import UserError

from .modules import Residual
from .quantizers import ActQuant, quant_bias, quantize_input, ste


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

    #: a :class:`quant.distributed.World` when training batches are split over processes
    #: (set by ``World.attach``): then BatchNorm takes the global batch's statistics
    world = None

    def _init_quant(self, weight_quant, bn):
        self.weight_quant = weight_quant
        self.bn = bn
        self.bn_frozen = False
        self.bn_folded = False  # BatchNorm folded into the weight for good (quant.methods.base.fold_bn_for_good)
        self._input = None  # a one-element tuple: keeps the feeding quantiser out of submodules
        self.skip_source = None  # body index of the module whose output the residual add brings
        self._skip = None  # (quantiser of that output,)
        self.user_index = None  # where the user's model has this layer ("3.1"), for messages

    def link_input(self, quant):
        """Name the quantiser (:class:`QuantInput` or :class:`QuantReLU`) whose codes feed this layer."""
        self._input = (quant,)

    def link_skip(self, source, quant):
        """Add the output of body module ``source`` (codes of ``quant``) into this layer's
        accumulator: the residual add (:class:`quant.modules.Residual`)."""
        self.skip_source, self._skip = source, (quant,)

    @property
    def skip_quant(self):
        return self._skip[0] if self._skip else None

    def _add_skip(self, y, skip, e0):
        """``y`` plus the skip rounded to the accumulator unit ``2**(e0 - in_exp)`` (round half
        up), as the integer contract adds it: exact, and the identity where the skip is finer
        than no unit (a left shift in hardware).  Straight-through gradient."""
        shape = (1, -1) + (1,) * (y.dim() - 2)
        unit = torch.exp2(e0.to(y.dtype) - float(self.input_quant.exp)).view(shape)
        skip = skip.to(y.dtype)
        return y + ste(skip, torch.floor(skip.detach() / unit + 0.5) * unit)

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
        """The layer's derived integer numbers (:class:`core.arith.LayerArith`)."""
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
        if self.world is not None and self.world.sharded:
            out, mean, var = self.world.batch_norm(y, bn.weight.abs(), bn.bias, bn.eps)
        else:
            # momentum 1 makes batch_norm leave the batch mean and unbiased variance of y in
            # these buffers, at no extra pass over y
            mean, var = torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var)
            out = F.batch_norm(y, mean, var, bn.weight.abs(), bn.bias, True, 1.0, bn.eps)
        with torch.no_grad():
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = self.bias if self.bias is not None else 0.0
            bn.running_mean.lerp_(mean / scale + bias, bn.momentum)
            bn.running_var.lerp_(var / scale.square(), bn.momentum)
            bn.num_batches_tracked += 1
        return out

    def _quant_forward(self, x, op, skip=None):
        if (skip is None) != (self.skip_source is None):
            raise RuntimeError(f"{type(self).__name__}: the skip is given exactly when the layer has a skip source")
        w, b = self.folded()
        w_q, e0 = self.weight_quant(w)
        if self.training and self.bn is not None and not self.bn_frozen:
            y = self._batch_stats_forward(op(x, w_q, None))
            return y if skip is None else y + skip
        num = self.arith
        _, b_q = quant_bias(b, self.input_quant.exp, e0.to(b.dtype), num.product_bound)
        if not self.training and (skip is not None or not arith.float32_exact(num.product_bound)):
            # partial sums (and the skip in accumulator units) may exceed float32's 24-bit
            # mantissa: evaluate exactly in float64
            y = op(x.double(), w_q.double(), b_q.double())
        else:
            y = op(x, w_q, b_q)
        return y if skip is None else self._add_skip(y, skip, e0)


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

    def forward(self, x, skip=None):  # (B, C, H, W) -> (B, O, H', W')
        return self._quant_forward(x, lambda x, w, b: F.conv2d(x, w, b, self.stride, self.padding), skip)


class QuantLinear(_QuantWeighted, nn.Linear):
    """``nn.Linear`` with quantised weights, integer bias and optional folded BatchNorm1d."""

    def __init__(self, in_features, out_features, bias=True, *, weight_quant, bn=None):
        super().__init__(in_features, out_features, bias=bias)
        self._init_quant(weight_quant, bn)

    @property
    def out_features_(self):
        return self.out_features

    def forward(self, x, skip=None):  # (B, I) -> (B, O)
        return self._quant_forward(x, F.linear, skip)


class IntMaxPool2d(nn.MaxPool2d):
    """Max-pooling on activation codes (no padding); exact on integers since it only compares."""

    def __init__(self, kernel_size, stride=None):
        super().__init__(kernel_size, stride=stride, padding=0)


class IntAvgPool2d(nn.Module):
    """Average pooling as the integer contract has it: the window *sum* of the codes, with the
    exponent raised by ``log2`` of the window area (a power of two), so the division is a
    shift that costs nothing.  ``kernel_size=None`` pools globally (the whole map).

    In the float forward the codes times ``2**-exp`` average exactly (a sum of dyadic numbers
    divided by a power of two).
    """

    def __init__(self, kernel_size=None, *, user_index=None):
        super().__init__()
        self.kernel_size = None if kernel_size is None else tuple(_pair(kernel_size))
        self.user_index = user_index
        self.log2_area = None if kernel_size is None else self._log2(self.kernel_size)

    def _log2(self, kernel):
        area = kernel[0] * kernel[1]
        if area & (area - 1):
            raise UserError(f"layer {self.user_index} (average pool {kernel[0]}x{kernel[1]}): its window area {area} "
                            "is not a power of two, so the division is not a shift; use a 2x2, 4x4, 2x4, ... "
                            "window (or a map whose area is a power of two for a global pool)")
        return area.bit_length() - 1

    def window(self, shape):
        """The window for an input map of ``shape`` ``(..., H, W)``."""
        return self.kernel_size or tuple(shape[-2:])

    def forward(self, x):
        k = self.window(x.shape)
        if self.kernel_size is None:
            self.log2_area = self._log2(k)
        return F.avg_pool2d(x, k, k)

    def extra_repr(self):
        return "global" if self.kernel_size is None else f"kernel_size={self.kernel_size}"


class PooledInput:
    """What an average pool hands the next weighted layer: the codes of ``quant`` summed over
    the pool's window, ``log2(area)`` bits wider and with the exponent ``log2(area)`` higher."""

    def __init__(self, quant, pool):
        self.quant, self.pool = quant, pool

    @property
    def log2_area(self):
        if self.pool.log2_area is None:
            raise RuntimeError("a global average pool knows its area after the first forward pass")
        return self.pool.log2_area

    @property
    def bits(self):
        bits = self.quant.bits + self.log2_area
        if bits > arith.MAX_IN_BITS:
            raise UserError(f"layer {self.pool.user_index} (average pool): {self.quant.bits}-bit codes summed over "
                            f"{1 << self.log2_area} positions need {bits} bits, more than the {arith.MAX_IN_BITS} a "
                            "weighted layer takes; pool over a smaller window or lower --abits")
        return bits

    @property
    def exp(self):
        return self.quant.exp + self.log2_area


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class QuantNet(nn.Module):
    """A quantised feed-forward network: ``body`` is an ``nn.Sequential`` of quantised layers."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def stages(self):
        """The body as the forward runs it: ``(indices, modules)`` with modules ``(module,)``
        or ``(max_pool, quantiser)``, and the body indices they stand for.

        A quantiser is monotone, so it commutes with max-pooling: pooling first gives the same
        codes from a quarter of the work, and the exponent is calibrated on what the next layer
        sees.  (Golden vectors still tap the layers in their listed order.)
        """
        mods = list(self.body)
        out, i = [], 0
        while i < len(mods):
            if isinstance(mods[i], QuantReLU) and i + 1 < len(mods) and isinstance(mods[i + 1], IntMaxPool2d):
                out.append(((i, i + 1), (mods[i + 1], mods[i])))
                i += 2
            else:
                out.append(((i,), (mods[i],)))
                i += 1
        return out

    def run(self, x, *, listed=False, before=None):
        """The forward pass; returns the output of every body index (a list).

        ``listed`` runs the modules in their listed order (a max-pool after its quantiser),
        which gives the same final output; ``before(module, x)`` is called before each runs.
        A weighted layer with a skip source gets that module's output added (the residual).
        """
        mods = list(self.body)
        units = [((i,), (m,)) for i, m in enumerate(mods)] if listed else self.stages()
        outs = [None] * len(mods)
        for idxs, stage in units:
            for m in stage:
                if before is not None:
                    before(m, x)
                source = getattr(m, "skip_source", None)
                x = m(x) if source is None else m(x, skip=outs[source])
            for i in idxs:
                outs[i] = x
        return outs

    def forward(self, x):
        return self.run(x)[-1]

    def weighted_layers(self):
        return [m for m in self.body if isinstance(m, _QuantWeighted)]

    @torch.no_grad()
    def calibrate(self, x):
        """Set every activation exponent from a batch ``x`` (eval-mode forward, BatchNorm untouched)."""
        was = self.training
        self.eval()

        def observe(m, h):
            if isinstance(m, QuantReLU):
                m.calibrated.fill_(False)
                m.observe(h)

        self.run(x, before=observe)
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


def quantize_model(model, *, method=None, make_weight_quant=None, make_act_quant=None, abits=None):
    """Convert a float ``nn.Sequential`` into a :class:`QuantNet`.

    Supported layers: ``Conv2d`` (groups 1, zero padding) and ``Linear``, each optionally
    followed by ``BatchNorm2d``/``BatchNorm1d`` (folded in) and ``ReLU`` (becomes a
    :class:`QuantReLU`); ``MaxPool2d`` (no padding); ``Flatten``.  An input quantiser is put
    in front.  Float weights, biases and BatchNorm statistics are copied.

    Parameters
    ----------
    model : nn.Sequential
        The float network.
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
    out = [QuantInput(bits=abits)]

    def where(path, m):
        return f"layer {'.'.join(map(str, path))} ({m})"

    def convert(mods, path, feeding):
        """Append the quantised form of ``mods`` (user indices ``path + (i,)``) to ``out``;
        returns the quantiser feeding whatever comes next."""
        i = 0
        while i < len(mods):
            m, here = mods[i], path + (i,)
            if isinstance(m, nn.Sequential):
                feeding = convert(list(m), here, feeding)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                bn = None
                if i + 1 < len(mods) and isinstance(mods[i + 1], (nn.BatchNorm1d, nn.BatchNorm2d)):
                    bn = mods[i + 1]
                    i += 1
                if isinstance(m, nn.Conv2d):
                    if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
                        raise UserError(f"{where(here, m)} is not supported: only groups=1, dilation=1, numeric "
                                        "zero padding")
                    q = QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                    bias=m.bias is not None, weight_quant=make_weight_quant(), bn=copy.deepcopy(bn))
                else:
                    q = QuantLinear(m.in_features, m.out_features, bias=m.bias is not None,
                                    weight_quant=make_weight_quant(), bn=copy.deepcopy(bn))
                q.load_state_dict(m.state_dict(), strict=False)
                q.link_input(feeding)
                q.user_index = ".".join(map(str, here))
                out.append(q)
            elif isinstance(m, nn.ReLU):
                feeding = make_act_quant(abits)
                out.append(feeding)
            elif isinstance(m, nn.MaxPool2d):
                if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                    raise UserError(f"{where(here, m)} is not supported: max-pool needs padding 0, dilation 1")
                out.append(IntMaxPool2d(m.kernel_size, m.stride))
            elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                if isinstance(m, nn.AdaptiveAvgPool2d):
                    if _pair(m.output_size) != (1, 1):
                        raise UserError(f"{where(here, m)} is not supported: an adaptive average pool must be global "
                                        "(output size 1), so that its window is the whole map")
                    pool = IntAvgPool2d(None, user_index=".".join(map(str, here)))
                else:
                    k, st = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
                    if k != st or _pair(m.padding) != (0, 0) or m.ceil_mode:
                        raise UserError(f"{where(here, m)} is not supported: an average pool needs its stride equal "
                                        "to its kernel, padding 0 and floor mode")
                    pool = IntAvgPool2d(k, user_index=".".join(map(str, here)))
                out.append(pool)
                feeding = PooledInput(feeding, pool)
            elif isinstance(m, nn.Flatten):
                out.append(nn.Flatten())
            elif isinstance(m, nn.Dropout):
                pass  # the identity at inference: dropped
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                raise UserError(f"{where(here, type(m).__name__)} is not supported here: a BatchNorm must come "
                                "directly after a Conv2d or Linear, whose weights and bias it is folded into; move it "
                                "before the ReLU or pooling")
            elif isinstance(m, Residual):
                source, at_start = len(out) - 1, feeding
                block = list(m.block) if isinstance(m.block, nn.Sequential) else [m.block]
                n = len(out)
                convert(block, here, feeding)
                last = out[-1] if len(out) > n else None
                if not isinstance(last, _QuantWeighted):
                    raise UserError(f"{where(here, type(m).__name__)}: a residual block must end in a Conv2d or Linear "
                                    "(with its BatchNorm), so the add happens in its accumulator; move the ReLU after "
                                    "the Residual")
                if not (i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)):
                    raise UserError(f"{where(here, type(m).__name__)}: a ReLU must follow a Residual, so the sum is "
                                    "requantised to activation codes; add nn.ReLU() after it")
                if last.skip_source is not None:
                    raise UserError(f"{where(here, type(m).__name__)}: its block ends in another residual add; "
                                    "put a layer between them")
                last.link_skip(source, at_start)
            else:
                raise UserError(f"{where(here, type(m).__name__)} has no quantised form; use Conv2d, Linear, "
                                "BatchNorm, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout and "
                                "quant.modules.Residual")
            i += 1
        return feeding

    convert(list(model), (), out[0])
    net = QuantNet(nn.Sequential(*out))
    if method is not None:
        method.build(net)
    return net
