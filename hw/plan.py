"""The host side of the layer engine: fit checks, descriptor, memory images and cycle count.

:class:`LayerPlan` turns one exported conv2d/linear layer into what the engine reads
(:mod:`hw.engine`): the descriptor, the activation, weight and parameter memory words,
and the exact number of cycles the engine takes.  Both the testbenches and the
generators read these; nothing here is repeated elsewhere.
"""

from dataclasses import dataclass

import numpy as np

from core import arith, codes
from core.errors import UserError
from core.hwconfig import HwConfig, settings

from .array import lane_words
from .engine import GEOM_BITS, LEVELS, coord_bits, par_layout
from .graph import engine_layers


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
    """How one layer runs on an engine built from ``cfg``, with the max-pool that follows it
    fused in when ``pool`` (its ``(height, width)``, equal to its stride) is given.

    Raises :class:`UserError` (one line naming the layer, the limit and the fix) when the
    layer does not fit the design, unless ``check`` is false (for sizing a design).
    ``nb_multiple`` rounds the output channel blocks up to a multiple (a network's
    activation buffers hold ``rows`` channels a word).
    """

    def __init__(self, layer, cfg, *, pool=None, nb_multiple=1, check=True):
        self.layer, self.cfg = layer, cfg
        self.geom = g = Geometry.of(layer)
        self.pool = (1, 1) if pool is None else tuple(int(v) for v in pool)
        self.cb = ceil_div(g.in_c, cfg.rows)  # input channel blocks
        self.nb = ceil_div(ceil_div(g.out_c, cfg.cols), nb_multiple) * nb_multiple  # output channel blocks
        self.kt = g.kh * g.kw * self.cb  # K tiles per output block
        if check:
            self._check()

    # --- derived numbers -----------------------------------------------------------
    @property
    def pool_n(self):
        """Results per output written: the pooling window's size (1 without pooling)."""
        return self.pool[0] * self.pool[1]

    @property
    def out_hw(self):
        """Height and width of the written output (after the fused pooling)."""
        return self.geom.out_h // self.pool[0], self.geom.out_w // self.pool[1]

    @property
    def out_shape(self):
        return (self.geom.out_c,) + self.out_hw

    @property
    def visited(self):
        """Output positions the engine computes: every one inside a pooling window (a
        pool in floor mode drops the last row or column of an odd map)."""
        return self.out_hw[0] * self.out_hw[1] * self.pool_n

    @property
    def m_tile(self):
        """Most output positions of an M tile: ``psum_depth``, or all of them when the layer
        has one K tile (it keeps no partial sums)."""
        return self.cfg.psum_depth if self.kt > 1 else self.visited

    @property
    def m_tiles(self):
        """Lengths of the M tiles (output positions per partial-sum pass)."""
        m, t = self.visited, self.m_tile
        return [min(t, m - s) for s in range(0, m, t)]

    @property
    def act_words(self):
        return self.geom.in_h * self.geom.in_w * self.cb

    @property
    def wgt_words(self):
        return self.nb * self.kt * self.cfg.load_rows

    @property
    def out_words(self):
        return self.out_hw[0] * self.out_hw[1] * self.nb

    @property
    def skip_words(self):
        """Words of ``cols`` skip codes the layer reads (its unpooled output positions x NB)."""
        return self.geom.positions * self.nb if self.layer.has_skip else 0

    @property
    def drain_cycles(self):
        """Cycles from a block's last streamed position to the controller's next step:
        one for the activation read, ``input_stages`` of registers, ``latency`` through the
        array, ``drain_stages`` to add the partial sum and requantise, one to see the last
        write."""
        cfg = self.cfg
        return cfg.input_stages + cfg.latency + cfg.drain_stages + 2

    def pass_period(self, t):
        """Cycles from the start of a block's second pass (or a later one) of ``t`` positions to
        the start of the next: ``pass_gap`` idle cycles behind its last position, and at least
        ``load_rows`` (the loader reads one weight word a cycle)."""
        return max(t + self.cfg.pass_gap, self.cfg.load_rows)

    def block_cycles(self, t):
        """Cycles of one (M tile, nb) block of KT passes over ``t`` positions: one to start
        the loads of the parameters and the first weights, ``load_cycles`` more before the
        first pass streams, the passes (each but the last ending where the next begins: the
        first ``t + pass_gap`` after it streams and at least ``load_rows`` after its load
        started, the later ones :meth:`pass_period`), the last pass's ``t`` and
        :attr:`drain_cycles`."""
        cfg, kt = self.cfg, self.kt
        if kt == 1:
            return 1 + cfg.load_cycles + t + self.drain_cycles
        first = max(cfg.load_cycles + t + cfg.pass_gap, cfg.load_rows)
        return 1 + first + (kt - 2) * self.pass_period(t) + t + self.drain_cycles

    def cycles(self):
        """Cycles from the one that presents ``start`` to the one in which ``done`` is high:
        one to take the descriptor, and per M tile of ``t`` positions one to size it and
        ``NB`` blocks of :meth:`block_cycles`.  Checked against every simulated run."""
        return 1 + sum(1 + self.nb * self.block_cycles(t) for t in self.m_tiles)

    @property
    def macs(self):
        """Multiply-accumulates the layer needs (not the array's padded work)."""
        g = self.geom
        return self.visited * g.out_c * g.in_c * g.kh * g.kw

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
        if layer.has_skip:
            self._check_skip(refuse)
        geom_max = 2**GEOM_BITS - 1
        if self.pool_n > 1:
            if not layer.relu:
                refuse("only a layer with ReLU can have its max-pool fused", "put the ReLU before the pooling")
            if cfg.psum_depth % self.pool_n:
                refuse(f"its {self.pool_n}-value pooling windows do not divide the {cfg.psum_depth}-position "
                       "M tiles", f"regenerate with a --psum-depth that is a multiple of {self.pool_n}")
            if min(self.out_hw) < 1:
                refuse(f"its {g.out_h}x{g.out_w} output is smaller than the {self.pool} pooling", "pool less")
        for what, v in (("kernel", max(g.kh, g.kw)), ("stride", max(g.stride_y, g.stride_x)),
                        ("padding", max(g.pad_y, g.pad_x)), ("pooling", max(self.pool))):
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
            ("skip codes", self.skip_words, cfg.out_depth, "--out-depth"),
        ):
            if words > depth:
                refuse(f"its {what} need {words} words, the memory has {depth}", f"regenerate with {flag} {words}")
        if max(self.act_words, self.out_words, self.visited, self.skip_words) >= 2 ** (coord_bits(cfg) - 1):
            refuse("its counters overflow", "regenerate with deeper memories")

    def _check_skip(self, refuse):
        layer, cfg = self.layer, self.cfg
        if not cfg.skip:
            refuse("it adds a residual skip and the design has no skip path", "regenerate with --skip true")
        if layer.skip_bits > cfg.abits:
            refuse(f"its {layer.skip_bits}-bit skip exceeds the {cfg.abits}-bit activations",
                   f"regenerate with --abits {layer.skip_bits}")
        left = int(layer.arrays["skip_shift"].max())
        if left > cfg.max_skip_left:
            refuse(f"a skip shifted left by {left}, the design shifts at most {cfg.max_skip_left}",
                   f"regenerate with --max-skip-left {left}")

    @property
    def skip_shift(self):
        """The per-channel skip shifts as the hardware holds them: right shifts clamped to
        ``skip_right`` (every code rounds to 0 from there on); zeros without a skip."""
        if not self.layer.has_skip:
            return np.zeros(self.geom.out_c, dtype=np.int64)
        return np.maximum(self.layer.arrays["skip_shift"], -self.cfg.skip_right)

    # --- what the engine reads -------------------------------------------------------
    def descriptor(self):
        """Field values of :func:`hw.engine.descriptor_layout`."""
        g, cb = self.geom, self.cb
        layer = self.layer
        ph, pw = self.pool
        px_n = self.out_hw[1]
        desc = {
            "relu": int(bool(layer.relu)),
            "amax": arith.act_max(layer.out_bits) if layer.relu else 0,
            "in_h": g.in_h,
            "in_w": g.in_w,
            "m_count": self.visited,
            "cb_n": cb,
            "nb_n": self.nb,
            "kh": g.kh,
            "kw": g.kw,
            "pad_y": g.pad_y,
            "pad_x": g.pad_x,
            "pool_w": pw,
            "pool_h": ph,
            "pool_n": ph * pw,
            "px_n": px_n,
            "tap0": (-g.pad_y * g.in_w - g.pad_x) * cb,
            "ky_jump": (g.in_w - g.kw) * cb + 1,
        }
        # (d oy, d ox) of moving on at each walker level, the levels inside it starting again
        moves = [(0, 1), (1, -(pw - 1)), (-(ph - 1), 1), (1, -(px_n * pw - 1))]
        assert len(moves) == LEVELS
        for level, (doy, dox) in enumerate(moves):
            dy, dx = doy * g.stride_y, dox * g.stride_x
            desc |= {f"step{level}_y": dy, f"step{level}_x": dx, f"step{level}_pos": (dy * g.in_w + dx) * cb}
        if self.cfg.skip:  # the skip walker: output position (oy * out_w + ox) * NB, in skip words
            desc["skip"] = int(layer.has_skip)
            desc |= {f"skip_step{level}": (doy * g.out_w + dox) * self.nb for level, (doy, dox) in enumerate(moves)}
        return desc

    def positions_visited(self):
        """``(oy, ox)`` of every output position in the order the engine computes them."""
        (ph, pw), (py_n, px_n) = self.pool, self.out_hw
        return [(py * ph + dy, px * pw + dx) for py in range(py_n) for px in range(px_n)
                for dy in range(ph) for dx in range(pw)]

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
        """Hardware weight codes ``(O, C, kh, kw)`` (:func:`core.codes.encode_terms`), padded to
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
        """Weight-memory word fields ``(wgt_words, wgt_lanes * cols)`` in load order: tile by
        tile ``(nb, ky, kx, cb)``, each tile as :func:`hw.array.lane_words` loads it."""
        g, cfg = self.geom, self.cfg
        zero_code = sum(codes.zero_field(cfg.wbits) << (t * cfg.wbits) for t in range(cfg.terms))
        full = np.full((self.nb * cfg.cols, self.cb * cfg.rows, g.kh, g.kw), zero_code, dtype=np.int64)
        full[: g.out_c, : g.in_c] = self.weight_codes()
        # (NB, cols, CB, rows, kh, kw) -> (NB, kh, kw, CB, rows, cols)
        t = full.reshape(self.nb, cfg.cols, self.cb, cfg.rows, g.kh, g.kw).transpose(0, 4, 5, 2, 3, 1)
        tiles = t.reshape(-1, cfg.rows, cfg.cols)
        return np.concatenate([lane_words(tile, cfg.wgt_lanes) for tile in tiles])

    def par_image(self):
        """Parameter fields ``(NB, cols)`` of bias and requantiser shift (right shifts
        clamped to ``acc_bits``, where every value rounds to 0 anyway)."""
        cfg, out_c = self.cfg, self.geom.out_c
        bias = np.zeros(self.nb * cfg.cols, dtype=np.int64)
        shift = np.zeros(self.nb * cfg.cols, dtype=np.int64)
        bias[:out_c] = self.layer.arrays["bias"]
        shift[:out_c] = np.minimum(self.layer.arrays["requant"], cfg.acc_bits)
        return bias.reshape(self.nb, cfg.cols), shift.reshape(self.nb, cfg.cols)

    def memory_words(self, x, skip=None):
        """The words to store in the input memories for input codes ``x`` (and the skip
        tensor ``skip`` of a layer that adds one), as integers: ``{"act": [...], "wgt":
        [...], "par": [...]}`` in address order, and ``"skip"`` in a design with the path."""
        cfg = self.cfg
        words = {
            "act": codes.pack(self.act_image(x), cfg.abits),
            "wgt": codes.pack(self.wgt_image(), cfg.code_bits),
            "par": self.par_words(),
        }
        if cfg.skip:
            if self.layer.has_skip and skip is None:
                raise ValueError(f"layer {self.layer.name} adds a skip; pass the output of layer {self.layer.skip}")
            words["skip"] = codes.pack(self.skip_image(skip), cfg.abits) if self.layer.has_skip else []
        return words

    def par_words(self):
        """The parameter memory's words (integers), one output channel each, padded channels zero."""
        cfg = self.cfg
        bias, shift = self.par_image()
        layout = par_layout(cfg)
        words = [b | (s << layout["shift"].offset) for b, s in zip(codes.pack(bias.reshape(-1, 1), cfg.acc_bits),
                                                                   codes.pack(shift.reshape(-1, 1), cfg.rq_bits))]
        if cfg.skip:
            skip = np.zeros(self.nb * cfg.cols, dtype=np.int64)
            skip[:self.geom.out_c] = self.skip_shift
            words = [w | (k << layout["skip"].offset)
                     for w, k in zip(words, codes.pack(skip.reshape(-1, 1), cfg.skip_shift_bits))]
        return words

    def skip_image(self, s):
        """The skip tensor ``s`` (the layer's unpooled output shape) as skip-memory word
        fields ``(positions * NB, cols)``: channel-blocked HWC like the output memory."""
        g, cols = self.geom, self.cfg.cols
        full = np.zeros((self.nb * cols, g.out_h, g.out_w), dtype=np.int64)
        full[: g.out_c] = np.asarray(s, dtype=np.int64).reshape(g.out_c, g.out_h, g.out_w)
        return full.transpose(1, 2, 0).reshape(-1, cols)

    def out_image(self, y):
        """The output ``y`` (:attr:`out_shape`, pooled) as output-memory word fields
        ``(out_words, cols)``, zeros in padded channels: the inverse of :meth:`unpack_outputs`."""
        cols, (oh, ow) = self.cfg.cols, self.out_hw
        full = np.zeros((self.nb * cols, oh, ow), dtype=np.int64)
        full[: self.geom.out_c] = np.asarray(y, dtype=np.int64).reshape(self.out_shape)
        return full.transpose(1, 2, 0).reshape(-1, cols)

    def unpack_outputs(self, words):
        """Output-memory word fields ``(out_words, cols)`` -> the output :attr:`out_shape`
        (the layer's ``out_shape``, pooled when a pool is fused)."""
        cols, (oh, ow) = self.cfg.cols, self.out_hw
        w = np.asarray(words, dtype=np.int64).reshape(oh, ow, self.nb * cols)[:, :, : self.geom.out_c]
        shape = self.layer.out_shape if self.pool_n == 1 else self.out_shape
        return w.transpose(2, 0, 1).reshape(shape)

    def locate(self, flat_index):
        """Where output element ``flat_index`` (of :attr:`out_shape`, row-major) was
        computed: ``(m_tile, nb, written position, column)``, for mismatch reports."""
        cols, (oh, ow) = self.cfg.cols, self.out_hw
        o, rest = divmod(int(flat_index), oh * ow)
        return rest * self.pool_n // self.m_tile, o // cols, rest, o % cols


def _pow2_at_least(n):
    return 1 << max(0, int(n) - 1).bit_length()


def fit_config(network, *, nb_multiple=1, **given):
    """The smallest :class:`~core.hwconfig.HwConfig` that runs every weighted layer of ``network``.

    ``network`` is a :class:`core.artifact.Network` (its layers as :func:`hw.graph.engine_layers`
    gives them, average pools folded in) or anything with ``layers`` that the engine runs as
    they are.  Widths come from the layers (activation and weight bits, terms, deepest
    fan-in, largest left shift, the skip path and its largest left shift); memory depths are
    the largest each layer needs, rounded up to a power of two.  ``given`` fields (e.g.
    ``rows``, ``cols``, ``pipeline``) are kept as given; a given field too small for a layer
    makes :class:`LayerPlan` refuse it.  ``nb_multiple`` is the output channel blocks'
    rounding the layers will be planned with (a network's buffers,
    :class:`hw.program.NetworkProgram`).
    """
    if hasattr(network, "input_shape"):
        layers = [e.layer for e in engine_layers(network)]
    else:
        layers = [layer for layer in network.layers if layer.weighted]
    if not layers:
        raise UserError("the network has no conv2d or linear layer to run")
    skips = [lay for lay in layers if lay.has_skip]
    widths = {
        "abits": max(max(lay.in_bits, lay.out_bits or 0, lay.skip_bits or 0) for lay in layers),
        "wbits": max(lay.wbits for lay in layers),
        "terms": max(lay.terms for lay in layers),
        "max_fan_in": max(lay.arith.fan_in for lay in layers),
        "max_left": max(0, max(-int(lay.arrays["requant"].min()) for lay in layers)),
        "skip": bool(skips),
        "max_skip_left": max([0] + [int(lay.arrays["skip_shift"].max()) for lay in skips]),
    }
    base = HwConfig(**{**widths, **given})
    plans = [LayerPlan(lay, base, check=False, nb_multiple=nb_multiple) for lay in layers]
    need = {"act_depth": max(p.act_words for p in plans), "wgt_depth": max(p.wgt_words for p in plans),
            "par_depth": max(p.nb for p in plans), "out_depth": max(max(p.out_words, p.skip_words) for p in plans)}
    depths = {k: _pow2_at_least(v) for k, v in need.items() if k not in given}
    cfg = HwConfig(**{**widths, **depths, **given})
    for lay in layers:
        LayerPlan(lay, cfg, nb_multiple=nb_multiple)  # refuses what does not fit, naming the layer
    return cfg


def design_config(network=None, *, board=None, flags=None):
    """The layer engine's :class:`~core.hwconfig.HwConfig` for a command: the board's defaults,
    then the ``flags`` given (:func:`core.hwconfig.settings`), the rest fitted to ``network``'s
    layers (:func:`fit_config`), or defaulted without a network."""
    given = settings(flags, board)
    return fit_config(network, **given) if network is not None else HwConfig(**given)
