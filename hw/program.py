"""The host side of the network engine: an exported network as the data the engine runs.

:class:`NetworkProgram` turns an artifact's network into *steps*, one per conv2d/linear
layer, each a :class:`hw.plan.LayerPlan` with the max-pool that follows it fused in, and
into the contents of the engine's read-only memories: the layer descriptors, every layer's
weights one after another and their channel parameters.  Nothing in the hardware is
specific to a model; a different network is a different program.

Two rewrites make the network fit the engine's layout, and both are checked against the
integer reference (``tests/hw/test_program.py``):

* **Input packing.**  A first convolution with few input channels would use ``C`` of the
  array's ``rows`` rows.  When ``C * kw <= rows`` the input words instead hold a row of
  the kernel's window: lane ``kx * C + c`` of the word at ``(y, x')`` is input
  ``(c, y, x' - pad_x + kx)``, zero outside the image.  The layer becomes a ``kh x 1``
  convolution over ``C * kw`` channels with the weights regrouped to match, and the
  engine's input packer (:class:`hw.network.InputPacker`) builds those words as the codes
  arrive.  On MNIST's 1-channel 3x3 first layer this cuts its K tiles from 9 to 3.
* **Flatten.**  Activations sit channel-blocked, ``rows`` channels of one position a
  word.  A linear layer after a flatten reads the words in that order, so its weight
  columns are permuted to it (PyTorch flattens channel-major) and padded channels get zero
  weights.  No data moves.

The activation buffers are two memories, A and B, used in turn: the packer writes the
input into A, the first step reads A and writes B, the next reads B and writes A, and the
last step (the logits) writes the logit registers.  Every written word holds ``rows``
channels; a result vector holds ``cols``, so a buffer is ``rows // cols`` banks of ``cols``
lanes and result ``a = m * NB + nb`` goes to word ``a // banks``, bank ``a % banks``.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from quant.errors import UserError

from . import codes
from .config import HwConfig
from .plan import LayerPlan, ceil_div, fit_config

#: Buffers in the order the steps use them.
BUFFERS = ("A", "B")
#: The destination of the last step.
LOGITS = "logits"
#: Cycles the sequencer spends on each step besides the layer engine's own count: the one
#: after the engine's ``done`` (it returns to idle) and one in which its registers take
#: the next step's descriptor.  Checked against every simulated run.
STEP_OVERHEAD = 2


@dataclass(frozen=True)
class PackerGeometry:
    """How the input packer lays out the network's input (see the module docstring).

    ``channels`` codes make a pixel; a word holds ``window`` pixels (lanes ``kx * channels
    + c``); ``width`` pixels make a row; the first word of a row is written after pixel
    ``lead`` and ``pad`` zero pixels follow each row.
    """

    channels: int
    height: int
    width: int
    window: int
    pad: int

    @property
    def lead(self):
        return self.window - 1 - self.pad

    @property
    def words_per_row(self):
        return self.width + 2 * self.pad - self.window + 1

    @property
    def words(self):
        return self.height * self.words_per_row

    @property
    def n_inputs(self):
        return self.channels * self.height * self.width

    def pack(self, x, rows):
        """Input codes ``(C, H, W)`` -> buffer word fields ``(words, rows)``: what the packer writes."""
        c, h, w, k, p = self.channels, self.height, self.width, self.window, self.pad
        x = np.asarray(x, dtype=np.int64).reshape(c, h, w)
        xp = np.pad(x, ((0, 0), (0, 0), (p, p)))
        out = np.zeros((h, self.words_per_row, rows), dtype=np.int64)
        for kx in range(k):
            # lane kx*C + c of word (y, x') is input (c, y, x' - pad + kx)
            out[:, :, kx * c:(kx + 1) * c] = xp[:, :, kx:kx + self.words_per_row].transpose(1, 2, 0)
        return out.reshape(-1, rows)

    def stream(self, x):
        """Input codes ``(C, H, W)`` in the order they are sent: ``(y, x, c)``, channel fastest."""
        return np.asarray(x, dtype=np.int64).reshape(self.channels, self.height, self.width).transpose(1, 2, 0).ravel()


def _zero_codes_like(arrays, shape):
    """Weight code arrays of ``shape`` (per term) that are all zero weights."""
    terms = arrays["weight_sign"].shape[0]
    return {"weight_sign": np.zeros((terms,) + shape, dtype=np.int64),
            "weight_shift": np.zeros((terms,) + shape, dtype=np.int64),
            "weight_zero": np.ones((terms,) + shape, dtype=np.uint8)}


def pack_input_layer(layer, window):
    """The first conv2d rewritten for packed input words: a ``kh x 1`` convolution over
    ``C * window`` channels whose channel ``kx * C + c`` is weight ``(c, kx)``."""
    c, h, w = layer.in_shape
    kh, kw = layer.kernel
    assert window == kw
    pad_y, pad_x = layer.padding
    arrays = dict(layer.arrays)
    for key in ("weight_sign", "weight_shift", "weight_zero"):
        a = layer.arrays[key]  # (terms, O, C, kh, kw) -> (terms, O, kw * C, kh, 1)
        t, o = a.shape[:2]
        arrays[key] = a.transpose(0, 1, 4, 2, 3).reshape(t, o, kw * c, kh, 1)
    return dataclasses.replace(layer, in_shape=(c * kw, h, w + 2 * pad_x - kw + 1), kernel=(kh, 1),
                               padding=(pad_y, 0), arrays=arrays)


def flatten_linear(layer, map_shape, rows):
    """A linear layer after a flatten of ``map_shape`` ``(C, H, W)`` rewritten to read the
    channel-blocked words as they lie: input ``(p * CB + cb) * rows + r`` is channel
    ``cb * rows + r`` at position ``p``; padded channels get zero weights."""
    c, h, w = map_shape
    positions, cb_n = h * w, ceil_div(c, rows)
    in_c = positions * cb_n * rows
    p, cb, r = np.meshgrid(np.arange(positions), np.arange(cb_n), np.arange(rows), indexing="ij")
    channel = (cb * rows + r).ravel()
    source = channel * positions + p.ravel()  # PyTorch's flatten index, channel-major
    real = channel < c
    out_c = layer.out_shape[0]
    arrays = dict(layer.arrays)
    arrays.update(_zero_codes_like(layer.arrays, (out_c, in_c)))
    for key in ("weight_sign", "weight_shift", "weight_zero"):
        arrays[key][:, :, np.flatnonzero(real)] = layer.arrays[key][:, :, source[real]]
    return dataclasses.replace(layer, in_shape=(in_c,), arrays=arrays)


@dataclass
class Step:
    """One run of the layer engine: a weighted layer, its fused pool, and where it reads and writes."""

    plan: LayerPlan
    names: tuple  # the artifact's layers this step computes
    src: str
    dst: str
    wgt_base: int
    par_base: int

    def fields(self):
        """The descriptor values plus the network's own fields."""
        return self.plan.descriptor() | {"wgt_base": self.wgt_base, "par_base": self.par_base,
                                         "src_b": int(self.src == "B"), "dst_b": int(self.dst == "B"),
                                         "dst_logits": int(self.dst == LOGITS)}


class NetworkProgram:
    """A network as steps of the layer engine, with the ROM contents and buffer sizes.

    Parameters
    ----------
    network : quant.artifact.Network
    cfg : HwConfig, optional
        The design.  ``rows`` must be a multiple of ``cols``.  Without it,
        :func:`hw.plan.fit_config` sizes one from ``given`` (e.g. ``rows=8, cols=4``).
    """

    def __init__(self, network, cfg=None, **given):
        self.network = network
        rows = (cfg.rows if cfg else given.get("rows", HwConfig.rows))
        cols = (cfg.cols if cfg else given.get("cols", HwConfig.cols))
        if rows % cols:
            raise UserError(f"the network engine needs rows a multiple of cols, not {rows}x{cols}; "
                            f"use e.g. --rows {cols * max(1, rows // cols)} --cols {cols}")
        self.banks = rows // cols
        if self.banks & (self.banks - 1):
            raise UserError(f"the network engine needs rows / cols to be a power of two (result addresses split into "
                            f"buffer word and bank by bits), not {rows} / {cols} = {self.banks}; use e.g. --rows "
                            f"{cols * (1 << (self.banks.bit_length() - 1))}")
        items, self.packer = self._rewrite(network, rows)
        self.cfg = cfg or fit_config(_Layers([lay for lay, _, _ in items]), psum_depth=given.pop("psum_depth", 256),
                                     nb_multiple=self.banks, **given)
        self.steps = []
        src, wgt_base, par_base = "A", 0, 0
        for i, (layer, pool, names) in enumerate(items):
            last = i == len(items) - 1
            plan = LayerPlan(layer, self.cfg, pool=pool, nb_multiple=1 if last else self.banks)
            dst = LOGITS if last else ("B" if src == "A" else "A")
            self.steps.append(Step(plan, names, src, dst, wgt_base, par_base))
            wgt_base += plan.wgt_words
            par_base += plan.nb * self.cfg.cols
            src = dst
        self.num_classes = network.num_classes
        if self.steps[-1].plan.geom.out_c != self.num_classes or self.steps[-1].plan.visited != 1:
            raise UserError(f"the last layer must give {self.num_classes} logits at one position, not shape "
                            f"{self.steps[-1].plan.out_shape}")

    # --- the rewrite -------------------------------------------------------------------
    @staticmethod
    def _rewrite(network, rows):
        layers = list(network.layers)
        if not layers or layers[0].kind != "conv2d":
            raise UserError("the network engine runs networks that start with a conv2d layer; "
                            "this one starts with " + (layers[0].kind if layers else "nothing"))
        items, i, packer = [], 0, None
        shape = tuple(network.input_shape)
        while i < len(layers):
            layer = layers[i]
            names = [layer.name]
            if layer.kind == "flatten":
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                if nxt is None or nxt.kind != "linear":
                    raise UserError(f"{layer.name}: the network engine needs a flatten to be followed by a linear "
                                    "layer")
                layer = flatten_linear(nxt, shape, rows)
                names.append(nxt.name)
                i += 1
            elif layer.kind == "avgpool2d":
                raise UserError(f"{layer.name}: the network engine does not run average pools yet (their fusion "
                                "into the next layer is issue 15's next step); use a max-pool for the board")
            elif layer.kind == "maxpool2d":
                raise UserError(f"{layer.name}: the network engine fuses a max-pool into the conv2d before it; "
                                "this one follows no conv2d")
            elif layer.kind == "linear" and len(shape) != 1:
                raise UserError(f"{layer.name}: a linear layer needs a flatten before it")
            if i == 0:
                c, h, w = layer.in_shape
                kh, kw = layer.kernel
                window = kw if c * kw <= rows else 1
                if c > rows:
                    raise UserError(f"{layer.name}: the first layer has {c} input channels, more than the array's "
                                    f"{rows} rows; use --rows {c} or more")
                packer = PackerGeometry(channels=c, height=h, width=w, window=window,
                                        pad=layer.padding[1] if window > 1 else 0)
                if window > 1:
                    layer = pack_input_layer(layer, window)
            pool = None
            if i + 1 < len(layers) and layers[i + 1].kind == "maxpool2d":
                p = layers[i + 1]
                if tuple(p.kernel) != tuple(p.stride) or tuple(p.padding or (0, 0)) != (0, 0):
                    raise UserError(f"{p.name}: the fused max-pool needs its stride equal to its kernel and no "
                                    f"padding, not kernel {p.kernel} stride {p.stride}")
                pool = tuple(p.kernel)
                names.append(p.name)
                i += 1
                shape = p.out_shape
            else:
                shape = layers[i].out_shape
            items.append((layer, pool, tuple(names)))
            i += 1
        return items, packer

    # --- derived numbers -----------------------------------------------------------------
    @property
    def n_inputs(self):
        return self.packer.n_inputs

    @property
    def logit_bits(self):
        return self.cfg.out_bits

    def buffer_words(self, name):
        """Words buffer ``name`` must hold: the packed input (A) and every output written to it."""
        need = [self.packer.words] if name == "A" else []
        need += [ceil_div(s.plan.out_words, self.banks) for s in self.steps if s.dst == name]
        need += [s.plan.act_words for s in self.steps if s.src == name]
        return max(need, default=1)

    @property
    def wgt_words(self):
        return sum(s.plan.wgt_words for s in self.steps)

    @property
    def par_words(self):
        return sum(s.plan.nb for s in self.steps) * self.cfg.cols

    def cycles(self):
        """Cycles of a run, counted as :meth:`hw.plan.LayerPlan.cycles` counts a layer's."""
        return sum(s.plan.cycles() + STEP_OVERHEAD for s in self.steps)

    @property
    def macs(self):
        return sum(s.plan.macs for s in self.steps)

    def conv_utilisation(self):
        """Useful shift-accumulates over the array's PE-cycles of the steps with more than one
        position (the convolutions); ``None`` without any."""
        conv = [s.plan for s in self.steps if s.plan.visited > 1]
        pe_cycles = sum(p.cycles() for p in conv) * self.cfg.rows * self.cfg.cols
        return sum(p.macs for p in conv) / pe_cycles if pe_cycles else None

    # --- ROM contents ----------------------------------------------------------------------
    def wgt_rom(self):
        """Every step's weight words in order (integers, ``cols`` codes each)."""
        return [w for s in self.steps for w in codes.pack(s.plan.wgt_image(), self.cfg.code_bits)]

    def par_rom(self):
        """Every step's channel-parameter words in order (integers, one channel each)."""
        return [w for s in self.steps for w in s.plan.par_words()]

    def descriptors(self):
        return [s.fields() for s in self.steps]

    def table(self):
        """One line per step, for reports."""
        lines = [f"{'step':<18} {'src':>3} {'dst':>6} {'K tiles':>7} {'N blocks':>8} {'positions':>9} {'cycles':>8} "
                 f"{'PE use':>6}"]
        for s in self.steps:
            p = s.plan
            lines.append(f"{'+'.join(s.names):<18} {s.src:>3} {s.dst:>6} {p.kt:>7} {p.nb:>8} {p.visited:>9} "
                         f"{p.cycles():>8} {p.utilisation():>6.1%}")
        return lines


class _Layers:
    """Just enough of a Network for :func:`hw.plan.fit_config`: the rewritten layers."""

    def __init__(self, layers):
        self.layers = layers
