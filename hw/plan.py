"""The host side of the layer engine: fit checks, descriptor, memory images and cycle count.

:class:`LayerPlan` turns one exported conv2d/linear layer into what the engine reads
(:mod:`hw.engine`): the descriptor, the activation, weight and parameter memory words,
and the exact number of cycles the engine takes.  Both the testbenches and the
generators read these; nothing here is repeated elsewhere.
"""

from dataclasses import dataclass

import numpy as np

from quant import arith
from quant.errors import UserError

from . import codes
from .engine import GEOM_BITS, coord_bits, par_layout


def ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class Geometry:
    """A weighted layer as a convolution (a linear layer is a 1x1 convolution on a 1x1 map)."""

    in_c: int
    in_h: int
    in_w: int
    out_c: int
    out_h: int
    out_w: int
    kh: int = 1
    kw: int = 1
    stride_y: int = 1
    stride_x: int = 1
    pad_y: int = 0
    pad_x: int = 0

    @classmethod
    def of(cls, layer):
        if layer.kind == "linear":
            return cls(in_c=layer.in_shape[0], in_h=1, in_w=1, out_c=layer.out_shape[0], out_h=1, out_w=1)
        if layer.kind == "conv2d":
            (c, h, w), (o, ho, wo) = layer.in_shape, layer.out_shape
            return cls(in_c=c, in_h=h, in_w=w, out_c=o, out_h=ho, out_w=wo, kh=layer.kernel[0], kw=layer.kernel[1],
                       stride_y=layer.stride[0], stride_x=layer.stride[1], pad_y=layer.padding[0],
                       pad_x=layer.padding[1])
        raise UserError(f"layer {layer.name} is a {layer.kind}; the layer engine runs conv2d and linear layers")

    @property
    def positions(self):
        return self.out_h * self.out_w


class LayerPlan:
    """How one layer runs on an engine built from ``cfg``.

    Raises :class:`UserError` (one line naming the layer, the limit and the fix) when the
    layer does not fit the design, unless ``check`` is false (for sizing a design).
    """

    def __init__(self, layer, cfg, *, check=True):
        self.layer, self.cfg = layer, cfg
        self.geom = g = Geometry.of(layer)
        self.cb = ceil_div(g.in_c, cfg.rows)  # input channel blocks
        self.nb = ceil_div(g.out_c, cfg.cols)  # output channel blocks
        self.kt = g.kh * g.kw * self.cb  # K tiles per output block
        if check:
            self._check()

    # --- derived numbers -----------------------------------------------------------
    @property
    def m_tiles(self):
        """Lengths of the M tiles (output positions per partial-sum pass)."""
        m, t = self.geom.positions, self.cfg.psum_depth
        return [min(t, m - s) for s in range(0, m, t)]

    @property
    def act_words(self):
        return self.geom.in_h * self.geom.in_w * self.cb

    @property
    def wgt_words(self):
        return self.nb * self.kt * self.cfg.rows

    @property
    def out_words(self):
        return self.geom.positions * self.nb

    @property
    def pass_cycles(self):
        """Cycles of one (M tile, nb, kt) pass over ``t`` positions, less ``t``:
        ``load_cycles + 1`` to load weights and parameters and
        ``input_stages + latency + drain_stages + 2`` to drain."""
        cfg = self.cfg
        return cfg.load_cycles + 1 + cfg.input_stages + cfg.latency + cfg.drain_stages + 2

    def cycles(self):
        """Cycles from the one that presents ``start`` to the one in which ``done`` is high.

        ``1 + sum over M tiles t of (1 + NB * KT * (t + load_cycles + 1 + input_stages + latency + drain_stages + 2))``
        with ``load_cycles = max(rows, cols)``: one cycle to take the descriptor, one per M
        tile to size it, and per pass ``load_cycles + 1`` to load the weights and parameters, ``t`` to stream the positions and ``latency + drain_stages + 2``
        to drain (one for the activation read, ``latency`` through the array,
        ``input_stages`` of registers before it, ``drain_stages`` to add the partial sum and
        requantise, one to see the last write).
        Checked against every simulated run.
        """
        return 1 + sum(1 + self.nb * self.kt * (t + self.pass_cycles) for t in self.m_tiles)

    @property
    def macs(self):
        """Multiply-accumulates the layer needs (not the array's padded work)."""
        g = self.geom
        return g.positions * g.out_c * g.in_c * g.kh * g.kw

    def utilisation(self):
        """Useful shift-accumulates over the array's PE-cycles while the layer runs."""
        return self.macs / (self.cycles() * self.cfg.rows * self.cfg.cols)

    # --- checks --------------------------------------------------------------------
    def _check(self):
        layer, cfg, g = self.layer, self.cfg, self.geom
        name = layer.name

        def refuse(what, fix):
            raise UserError(f"layer {name} does not fit the engine: {what}; {fix}")

        if layer.in_bits > cfg.abits:
            refuse(f"{layer.in_bits}-bit inputs exceed the {cfg.abits}-bit activations", "regenerate with --abits "
                   f"{layer.in_bits}")
        if layer.relu and layer.out_bits > cfg.abits:
            refuse(f"{layer.out_bits}-bit outputs exceed the {cfg.abits}-bit activations",
                   f"regenerate with --abits {layer.out_bits}")
        if layer.terms > cfg.terms:
            refuse(f"{layer.terms} terms per weight, the PEs hold {cfg.terms}",
                   f"regenerate with --terms {layer.terms}")
        if arith.shift_levels(layer.wbits) > cfg.shift_levels:
            refuse(f"{layer.wbits}-bit weight codes, the PEs hold {cfg.wbits}",
                   f"regenerate with --wbits {layer.wbits}")
        fan_in = layer.arith.fan_in
        if arith.product_bound(fan_in, cfg.abits, cfg.wbits, cfg.terms) > cfg.arith.product_bound:
            refuse(f"fan-in {fan_in} needs more than the {cfg.acc_bits}-bit accumulator built for fan-in "
                   f"{cfg.max_fan_in}", f"regenerate with --max-fan-in {fan_in}")
        geom_max = 2**GEOM_BITS - 1
        for what, v in (("kernel", max(g.kh, g.kw)), ("stride", max(g.stride_y, g.stride_x)),
                        ("padding", max(g.pad_y, g.pad_x))):
            if v > geom_max:
                refuse(f"{what} {v} is over the descriptor's {geom_max}", f"use a {what} of at most {geom_max}")
        rq = layer.arrays["requant"]
        if int(rq.min()) < -cfg.max_left:
            refuse(f"a left shift of {-int(rq.min())} in the requantiser, the design has {cfg.max_left}",
                   f"regenerate with --max-left {-int(rq.min())}")
        if not layer.relu and int(rq.max()) > 0:
            refuse(f"a right shift of {int(rq.max())} without ReLU; the requantiser's path for layers "
                   "without ReLU (the logits) only shifts left",
                   "export the logits unscaled (quant.lower gives them shifts <= 0)")
        for what, words, depth, flag in (
            ("input activations", self.act_words, cfg.act_depth, "--act-depth"),
            ("weights", self.wgt_words, cfg.wgt_depth, "--wgt-depth"),
            ("channel parameters", self.nb, cfg.par_depth, "--par-depth"),
            ("outputs", self.out_words, cfg.out_depth, "--out-depth"),
        ):
            if words > depth:
                refuse(f"its {what} need {words} words, the memory has {depth}", f"regenerate with {flag} {words}")
        if max(self.act_words, self.out_words, self.wgt_words, g.positions) >= 2 ** (coord_bits(cfg) - 1):
            refuse("its counters overflow", "regenerate with deeper memories")

    # --- what the engine reads -------------------------------------------------------
    def descriptor(self):
        """Field values of :func:`hw.engine.descriptor_layout`."""
        g, cb = self.geom, self.cb
        layer = self.layer
        return {
            "relu": int(bool(layer.relu)),
            "amax": arith.act_max(layer.out_bits) if layer.relu else 0,
            "in_h": g.in_h,
            "in_w": g.in_w,
            "out_w": g.out_w,
            "m_count": g.positions,
            "cb_n": cb,
            "nb_n": self.nb,
            "kh": g.kh,
            "kw": g.kw,
            "pad_y": g.pad_y,
            "pad_x": g.pad_x,
            "stride_y": g.stride_y,
            "stride_x": g.stride_x,
            "tap0": (-g.pad_y * g.in_w - g.pad_x) * cb,
            "ky_jump": (g.in_w - g.kw) * cb + 1,
            "x_step": g.stride_x * cb,
            "y_jump": (g.stride_y * g.in_w - (g.out_w - 1) * g.stride_x) * cb,
        }

    def act_image(self, x):
        """Input codes of one sample (the layer's ``in_shape``) as act-memory word fields,
        shape ``(act_words, rows)``: channel-blocked HWC, zero-padded channels."""
        g, rows = self.geom, self.cfg.rows
        x = np.asarray(x, dtype=np.int64).reshape(g.in_c, g.in_h, g.in_w)
        padded = np.zeros((self.cb * rows, g.in_h, g.in_w), dtype=np.int64)
        padded[: g.in_c] = x
        # (CB*R, H, W) -> (H, W, CB, R)
        return padded.reshape(self.cb, rows, g.in_h, g.in_w).transpose(2, 3, 0, 1).reshape(-1, rows)

    def weight_codes(self):
        """Hardware weight codes ``(O, C, kh, kw)`` (:func:`hw.codes.encode_terms`), padded to
        ``cfg.terms`` with zero terms."""
        a, cfg = self.layer.arrays, self.cfg
        sign, shift, zero = a["weight_sign"], a["weight_shift"], a["weight_zero"].astype(bool)
        extra = cfg.terms - sign.shape[0]
        if extra:
            pad = [(0, extra)] + [(0, 0)] * (sign.ndim - 1)
            sign, shift = np.pad(sign, pad), np.pad(shift, pad)
            zero = np.pad(zero, pad, constant_values=True)
        c = codes.encode_terms(sign, shift, zero, cfg.wbits)
        g = self.geom
        return c.reshape(g.out_c, g.in_c, g.kh, g.kw)

    def wgt_image(self):
        """Weight-memory word fields ``(wgt_words, cols)`` in load order: tile by tile
        ``(nb, ky, kx, cb)``, each tile's rows bottom (row ``rows - 1``) first."""
        g, cfg = self.geom, self.cfg
        zero_code = sum(codes.zero_field(cfg.wbits) << (t * cfg.wbits) for t in range(cfg.terms))
        full = np.full((self.nb * cfg.cols, self.cb * cfg.rows, g.kh, g.kw), zero_code, dtype=np.int64)
        full[: g.out_c, : g.in_c] = self.weight_codes()
        # (NB, cols, CB, rows, kh, kw) -> (NB, kh, kw, CB, rows reversed, cols)
        t = full.reshape(self.nb, cfg.cols, self.cb, cfg.rows, g.kh, g.kw).transpose(0, 4, 5, 2, 3, 1)
        return t[:, :, :, :, ::-1, :].reshape(-1, cfg.cols)

    def par_image(self):
        """Parameter fields ``(NB, cols)`` of bias and requantiser shift (right shifts
        clamped to ``acc_bits``, where every value rounds to 0 anyway)."""
        cfg, out_c = self.cfg, self.geom.out_c
        bias = np.zeros(self.nb * cfg.cols, dtype=np.int64)
        shift = np.zeros(self.nb * cfg.cols, dtype=np.int64)
        bias[:out_c] = self.layer.arrays["bias"]
        shift[:out_c] = np.minimum(self.layer.arrays["requant"], cfg.acc_bits)
        return bias.reshape(self.nb, cfg.cols), shift.reshape(self.nb, cfg.cols)

    def memory_words(self, x):
        """The words to store in the input memories for input codes ``x``, as integers:
        ``{"act": [...], "wgt": [...], "par": [...]}`` in address order."""
        cfg = self.cfg
        bias, shift = self.par_image()
        shift_at = par_layout(cfg)["shift"].offset
        return {
            "act": codes.pack(self.act_image(x), cfg.abits),
            "wgt": codes.pack(self.wgt_image(), cfg.code_bits),
            "par": [b | (s << shift_at) for b, s in zip(codes.pack(bias.reshape(-1, 1), cfg.acc_bits),
                                                         codes.pack(shift.reshape(-1, 1), cfg.rq_bits))],
        }

    def out_image(self, y):
        """The layer's output ``y`` (``out_shape``) as output-memory word fields
        ``(out_words, cols)``, zeros in padded channels: the inverse of :meth:`unpack_outputs`."""
        g, cols = self.geom, self.cfg.cols
        full = np.zeros((self.nb * cols, g.out_h, g.out_w), dtype=np.int64)
        full[: g.out_c] = np.asarray(y, dtype=np.int64).reshape(g.out_c, g.out_h, g.out_w)
        return full.transpose(1, 2, 0).reshape(-1, cols)

    def unpack_outputs(self, words):
        """Output-memory word fields ``(out_words, cols)`` -> the layer's output ``out_shape``."""
        g, cols = self.geom, self.cfg.cols
        w = np.asarray(words, dtype=np.int64).reshape(g.out_h, g.out_w, self.nb * cols)[:, :, : g.out_c]
        return w.transpose(2, 0, 1).reshape(self.layer.out_shape)

    def locate(self, flat_index):
        """Where output element ``flat_index`` (of ``out_shape``, row-major) was computed:
        ``(m_tile, nb, position, column)``, for mismatch reports."""
        g, cols = self.geom, self.cfg.cols
        o, rest = divmod(int(flat_index), g.positions)
        return rest // self.cfg.psum_depth, o // cols, rest, o % cols


def _pow2_at_least(n):
    return 1 << max(0, int(n) - 1).bit_length()


def fit_config(network, **given):
    """The smallest :class:`~hw.config.HwConfig` that runs every weighted layer of ``network``.

    Widths come from the layers (activation and weight bits, terms, deepest fan-in, largest
    left shift); memory depths are the largest each layer needs, rounded up to a power of
    two.  ``given`` fields (e.g. ``rows``, ``cols``, ``pipeline``) are kept as given; a
    given field too small for a layer makes :class:`LayerPlan` refuse it.
    """
    from .config import HwConfig

    layers = [layer for layer in network.layers if layer.weighted]
    if not layers:
        raise UserError("the network has no conv2d or linear layer to run")
    widths = {
        "abits": max(max(lay.in_bits, lay.out_bits or 0) for lay in layers),
        "wbits": max(lay.wbits for lay in layers),
        "terms": max(lay.terms for lay in layers),
        "max_fan_in": max(lay.arith.fan_in for lay in layers),
        "max_left": max(0, max(-int(lay.arrays["requant"].min()) for lay in layers)),
    }
    base = HwConfig(**{**widths, **given})
    plans = [LayerPlan(lay, base, check=False) for lay in layers]
    need = {"act_depth": max(p.act_words for p in plans), "wgt_depth": max(p.wgt_words for p in plans),
            "par_depth": max(p.nb for p in plans), "out_depth": max(p.out_words for p in plans)}
    depths = {k: _pow2_at_least(v) for k, v in need.items() if k not in given}
    cfg = HwConfig(**{**widths, **depths, **given})
    for lay in layers:
        LayerPlan(lay, cfg)  # refuses what does not fit, naming the layer
    return cfg
