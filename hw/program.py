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
  When the whole window takes fewer words than that (``ceil(C * kh * kw / rows) < kh``, a
  stride-1 convolution), the words hold the whole window instead (im2col): lane
  ``(ky * kw + kx) * C + c`` of the words of output position ``(oy, ox)`` is input
  ``(c, oy - pad_y + ky, ox - pad_x + kx)``, the layer becomes a 1x1 convolution over
  ``C * kh * kw`` channels, and the packer writes each code into every lane that holds it.
  With 16 rows MNIST's first layer then takes 1 K tile; with 8 rows, 2.
* **Flatten.**  Activations sit channel-blocked, ``rows`` channels of one position a
  word.  A linear layer after a flatten reads the words in that order, so its weight
  columns are permuted to it (PyTorch flattens channel-major) and padded channels get zero
  weights.  No data moves.

**Average pools** are folded into the weights of the layer after them
(:func:`hw.graph.engine_layers`), so they are no step of their own.

**Buffers.**  Each tensor a step reads (the packed input, every step's output but the
logits) lives in an activation buffer from the step that writes it to the last step that
reads it, as its source or as the skip of a **residual add**.  The buffers are allocated
per graph: a tensor takes a free buffer (one whose tensor is no longer read), so a plain
chain uses two in turn (A, B) and a residual block a third, which keeps its shortcut
while the block runs.  A step's source, skip and destination are always three different
buffers, so each needs only one port.  Every written word holds ``rows`` channels; a
result vector holds ``cols``, so a buffer is ``rows // cols`` banks of ``cols`` lanes and
result ``a = m * NB + nb`` goes to word ``a // banks``, bank ``a % banks``; the skip codes
of output position ``m`` and block ``nb`` are read from the same place of their buffer.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from core import codes
from core.errors import UserError
from core.hwconfig import HwConfig, settings

from .graph import engine_layers
from .plan import LayerPlan, ceil_div, fit_config

#: The partial-sum memory's depth (positions of an M tile) a program sizes a design with,
#: rounded down to whole windows of its fused max-pools.
PSUM_DEPTH = 256
#: Names of the activation buffers, in the order they are allocated.
BUFFER_NAMES = "ABCDEFGH"
#: The destination of the last step.
LOGITS = "logits"
#: Cycles the sequencer spends on each step besides the layer engine's own count: the one
#: after the engine's ``done`` (it returns to idle) and one in which its registers take
#: the next step's descriptor.  Checked against every simulated run.
STEP_OVERHEAD = 2


@dataclass(frozen=True)
class PackerGeometry:
    """How the input packer lays out the network's input (see the module docstring).

    ``channels`` codes make a pixel, ``height`` x ``width`` pixels the image, arriving in
    ``(y, x, c)`` order.  ``mode`` says what an activation word holds:

    * ``"rows"``: ``window`` pixels of a row (lanes ``kx * channels + c``); ``width`` pixels
      make a row; the first word of a row is written after pixel ``lead`` and ``pad`` zero
      pixels follow each row.
    * ``"window"``: the whole ``kernel_rows`` x ``window`` window of an output position, in
      ``blocks`` words of ``lanes`` codes (lane ``l = (ky * window + kx) * channels + c`` in
      word ``l // lanes``), the image padded by ``pad_y`` rows and ``pad`` columns of zeros.
    * ``"blocked"``: a pixel of more channels than a word has lanes takes ``blocks`` words,
      ``lanes`` channels each: channel-blocked, as every later layer's input lies.
    """

    channels: int
    height: int
    width: int
    window: int = 1
    pad: int = 0
    blocks: int = 1
    lanes: int = None  # codes a word holds (the array's rows) when blocks > 1 or mode "window"
    mode: str = "rows"
    kernel_rows: int = 1
    pad_y: int = 0

    @property
    def lead(self):
        return self.window - 1 - self.pad

    @property
    def words_per_row(self):
        return self.width + 2 * self.pad - self.window + 1

    @property
    def out_h(self):
        """Output rows of the packed window (``"window"``; stride 1)."""
        return self.height + 2 * self.pad_y - self.kernel_rows + 1

    @property
    def words(self):
        if self.mode == "window":
            return self.out_h * self.words_per_row * self.blocks
        return self.height * self.words_per_row * self.blocks

    @property
    def n_inputs(self):
        return self.channels * self.height * self.width

    def code_cycles(self, y):
        """Cycles the ``"window"`` packer spends on a code of padded row ``y``: one to fetch
        it, one a tap of the kernel rows that reach the map, and one to stop at the first that
        does not."""
        rows = min(y, self.kernel_rows - 1) + 1
        return 1 + rows * self.window + (rows < self.kernel_rows)

    def stall_cycles(self):
        """``(first, between)``: most cycles the packer keeps ``in_ready`` low from
        ``in_first`` to taking the first code, and from taking one code to being ready for
        the next (its own taps and the padding codes after it).  The link must bring codes
        no faster (:class:`hw.network.NetworkBoard` checks)."""
        c, wp = self.channels, self.width + 2 * self.pad
        if self.mode != "window":
            return 1, self.pad * c + 1
        first = sum(self.code_cycles(y) * wp * c for y in range(self.pad_y)) + \
            self.pad * c * self.code_cycles(self.pad_y) + 1
        between = max(self.code_cycles(y) * (1 + 2 * self.pad * c)
                      for y in range(self.pad_y, self.pad_y + self.height))
        return first, between

    def pack(self, x, rows):
        """Input codes ``(C, H, W)`` -> buffer word fields ``(words, rows)``: what the packer writes."""
        c, h, w, k, p = self.channels, self.height, self.width, self.window, self.pad
        x = np.asarray(x, dtype=np.int64).reshape(c, h, w)
        if self.mode == "blocked":  # (CB * rows, H, W) -> (H, W, CB, rows), padded channels zero
            full = np.zeros((self.blocks * rows, h, w), dtype=np.int64)
            full[:c] = x
            return full.reshape(self.blocks, rows, h, w).transpose(2, 3, 0, 1).reshape(-1, rows)
        if self.mode == "window":  # lane (ky * kw + kx) * C + c of position (oy, ox): x[c, oy + ky, ox + kx]
            xp = np.pad(x, ((0, 0), (self.pad_y, self.pad_y), (p, p)))
            oh, ow = self.out_h, self.words_per_row
            out = np.zeros((oh, ow, self.blocks * rows), dtype=np.int64)
            for ky in range(self.kernel_rows):
                for kx in range(k):
                    lane = (ky * k + kx) * c
                    out[:, :, lane:lane + c] = xp[:, ky:ky + oh, kx:kx + ow].transpose(1, 2, 0)
            return out.reshape(-1, rows)
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


def pack_window_layer(layer):
    """The first conv2d rewritten for words that hold its whole window: a 1x1 convolution
    over ``C * kh * kw`` channels at its output positions, whose channel
    ``(ky * kw + kx) * C + c`` is weight ``(c, ky, kx)``."""
    c = layer.in_shape[0]
    kh, kw = layer.kernel
    out_h, out_w = layer.out_shape[1:]
    arrays = dict(layer.arrays)
    for key in ("weight_sign", "weight_shift", "weight_zero"):
        a = layer.arrays[key]  # (terms, O, C, kh, kw) -> (terms, O, kh * kw * C, 1, 1)
        t, o = a.shape[:2]
        arrays[key] = a.transpose(0, 1, 3, 4, 2).reshape(t, o, kh * kw * c, 1, 1)
    return dataclasses.replace(layer, in_shape=(c * kh * kw, out_h, out_w), kernel=(1, 1), padding=(0, 0),
                               arrays=arrays)


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
    src: str  # the buffer it reads
    dst: str  # the buffer it writes (two joined by "+" when a later step reads it twice), or LOGITS
    wgt_base: int
    par_base: int
    skip: str = None  # the buffer of the tensor a residual add reads
    tensor: int = None  # the artifact layer whose output the step writes
    reads: tuple = ()  # the tensors it reads: its source, then its skip (-1: the input)

    def fields(self, buffers):
        """The descriptor values plus the network's own fields (buffer indices into ``buffers``)."""
        dst = [] if self.dst == LOGITS else self.dst.split("+")
        f = self.plan.descriptor() | {"wgt_base": self.wgt_base, "par_base": self.par_base,
                                      "src": buffers.index(self.src),
                                      "dst_mask": sum(1 << buffers.index(b) for b in dst),
                                      "dst_logits": int(self.dst == LOGITS)}
        if self.plan.cfg.skip:
            f["skip_buf"] = buffers.index(self.skip) if self.skip else 0
        return f


@dataclass
class Buffer:
    """An activation buffer: ``words`` of ``rows`` codes, holding ``tensors`` in turn."""

    name: str
    words: int
    tensors: list
    banks: int = 1  # write enables a word: a result vector's (rows // cols), or a lane's (rows)


class NetworkProgram:
    """A network as steps of the layer engine, with the ROM contents and buffer sizes.

    Parameters
    ----------
    network : core.artifact.Network
    cfg : HwConfig, optional
        The design.  ``rows`` must be a multiple of ``cols``.  Without it,
        :func:`hw.plan.fit_config` sizes one from ``given`` (e.g. ``rows=8, cols=4``).
    """

    @classmethod
    def for_board(cls, network, board=None, flags=None):
        """The program a command builds: the board's defaults, then the ``flags`` given
        (:func:`core.hwconfig.settings`), the rest fitted to ``network``."""
        return cls(network, **settings(flags, board))

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
        if "psum_depth" not in given:  # M tiles of whole pooling windows
            windows = math.lcm(*(it.pool[0] * it.pool[1] for it in items if it.pool))
            given["psum_depth"] = PSUM_DEPTH // windows * windows
        self.cfg = cfg or fit_config(_Layers([it.layer for it in items]), nb_multiple=self.banks, **given)
        self.steps = []
        wgt_base, par_base = 0, 0
        for i, it in enumerate(items):
            last = i == len(items) - 1
            plan = LayerPlan(it.layer, self.cfg, pool=it.pool, nb_multiple=1 if last else self.banks)
            self.steps.append(Step(plan, it.names, None, LOGITS if last else None, wgt_base, par_base,
                                   tensor=it.tensor, reads=it.reads))
            wgt_base += plan.wgt_words
            par_base += plan.nb * self.cfg.cols
        self.buffers = self._allocate()
        self.num_classes = network.num_classes
        if self.steps[-1].plan.geom.out_c != self.num_classes or self.steps[-1].plan.visited != 1:
            raise UserError(f"the last layer must give {self.num_classes} logits at one position, not shape "
                            f"{self.steps[-1].plan.out_shape}")

    # --- the rewrite -------------------------------------------------------------------
    @staticmethod
    def _rewrite(network, rows):
        """The steps' layers (:class:`_Item`) and the input packer's geometry."""
        layers = list(network.layers)
        engine = engine_layers(network)
        if not engine:
            raise UserError("the network has no conv2d or linear layer to run")
        written = {-1: -1}  # artifact layer -> the tensor holding its output (a step's last layer)
        first = engine[0]
        if first.source != -1 or any(lay.kind == "maxpool2d" for lay in layers[:first.index]):
            raise UserError("the network engine runs networks whose first layer is a conv2d or linear (after "
                            "average pools or a flatten); this one starts with " + layers[0].kind)
        items = []
        for n, el in enumerate(engine):
            layer, i = el.layer, el.index
            names = [lay.name for lay in layers[el.source + 1:i + 1]]
            if el.source not in written:
                src = layers[el.source]
                raise UserError(f"{src.name}: the network engine fuses a {src.kind} into the conv2d before it; "
                                f"this one follows {layers[el.source - 1].kind if el.source else 'the input'}")
            if layer.kind == "linear" and len(el.source_shape) == 3:  # after a flatten (the artifact has one)
                layer = flatten_linear(layer, el.source_shape, rows)
            pool, out = None, i
            if i + 1 < len(layers) and layers[i + 1].kind == "maxpool2d":
                p = layers[i + 1]
                if tuple(p.kernel) != tuple(p.stride) or tuple(p.padding or (0, 0)) != (0, 0):
                    raise UserError(f"{p.name}: the fused max-pool needs its stride equal to its kernel and no "
                                    f"padding, not kernel {p.kernel} stride {p.stride}")
                pool, out = tuple(p.kernel), i + 1
                names.append(p.name)
            reads = (written[el.source],)
            if layer.has_skip:
                if layer.skip not in written:
                    src = layers[layer.skip]
                    raise UserError(f"{layer.name}: its residual add reads the output of {src.name} ({src.kind}), "
                                    "which the network engine does not keep (it is folded or fused into the next "
                                    "step); add the shortcut from a conv2d, linear or max-pool output or the input")
                reads += (written[layer.skip],)
            written[out] = out
            items.append(_Item(layer, pool, tuple(names), out, reads))
        # the input packer: a first convolution's kernel rows packed into words where they fit
        # and nothing else reads the input (a residual add reads it channel-blocked)
        layer0 = items[0].layer
        shape = tuple(network.input_shape)
        c, h, w = shape if len(shape) == 3 else (shape[0], 1, 1)
        input_skip = any(-1 in it.reads[1:] for it in items)
        conv = layer0.kind == "conv2d" and not input_skip
        kh, kw = layer0.kernel if conv else (1, 1)
        # K tiles a position takes: the kernel's rows packed, the whole window packed
        row_tiles = kh if conv and c * kw <= rows and kw > 1 else None
        window_tiles = ceil_div(c * kh * kw, rows) if conv and kh * kw > 1 and c <= rows and \
            tuple(layer0.stride) == (1, 1) else None
        if window_tiles and window_tiles < (row_tiles or kh * kw * ceil_div(c, rows)):
            packer = PackerGeometry(channels=c, height=h, width=w, window=kw, pad=layer0.padding[1], blocks=window_tiles,
                                    lanes=rows, mode="window", kernel_rows=kh, pad_y=layer0.padding[0])
            items[0].layer = pack_window_layer(layer0)
        elif row_tiles:
            packer = PackerGeometry(channels=c, height=h, width=w, window=kw, pad=layer0.padding[1])
            items[0].layer = pack_input_layer(layer0, kw)
        else:
            blocks = ceil_div(c, rows)
            packer = PackerGeometry(channels=c, height=h, width=w, blocks=blocks, lanes=rows,
                                    mode="blocked" if blocks > 1 else "rows")
        return items, packer

    def _allocate(self):
        """Give every tensor a buffer: in the order they are written, each takes the first
        buffer whose tensor no later step reads (the input first, into A).  A tensor that one
        step reads as both its source and its skip (a residual block of one layer) is written
        into two buffers at once, one for each read port."""
        steps = self.steps
        last_read = {}
        for k, s in enumerate(steps):
            for t in s.reads:
                last_read[t] = k
        twice = {s.reads[0] for s in steps if s.reads[1:] == s.reads[:1]}
        written = [(-1, -1)] + [(k, s.tensor) for k, s in enumerate(steps[:-1])]
        buffers, holder, where = [], {}, {}  # holder: buffer index -> its tensor; where: tensor -> buffers
        for k, t in written:
            free = [b for b in range(len(buffers)) if last_read.get(holder[b], -1) < k]
            need = 2 if t in twice else 1
            while len(free) < need:
                if len(buffers) == len(BUFFER_NAMES):
                    raise UserError(f"the network keeps more than {len(BUFFER_NAMES)} tensors alive at once; "
                                    "the network engine has that many activation buffers")
                free.append(len(buffers))
                buffers.append(Buffer(BUFFER_NAMES[len(buffers)], 1, []))
            where[t] = free[:need]
            words = self.packer.words if t < 0 else ceil_div(steps[k].plan.out_words, self.banks)
            readers = [s.plan.act_words for s in steps if s.reads[0] == t]
            for b in where[t]:
                holder[b] = t
                buffers[b].words = max([buffers[b].words, words] + readers)
                buffers[b].tensors.append(t)
        self.input_buffers = tuple(buffers[b].name for b in where[-1])
        for b in buffers:  # the packer writes a window's codes one lane at a time
            lanes = b.name in self.input_buffers and self.packer.mode == "window"
            b.banks = self.cfg.rows if lanes else self.banks
        for k, s in enumerate(steps):
            s.src = buffers[where[s.reads[0]][0]].name
            if k < len(steps) - 1:
                s.dst = "+".join(buffers[b].name for b in where[s.tensor])
            if len(s.reads) > 1:
                s.skip = buffers[where[s.reads[1]][-1]].name
        return buffers

    # --- derived numbers -----------------------------------------------------------------
    @property
    def n_inputs(self):
        return self.packer.n_inputs

    @property
    def logit_bits(self):
        return self.cfg.out_bits

    @property
    def buffer_names(self):
        return [b.name for b in self.buffers]

    def buffer_words(self, name):
        """Words buffer ``name`` must hold: every tensor it holds, as written and as read."""
        return next(b.words for b in self.buffers if b.name == name)

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
        return [s.fields(self.buffer_names) for s in self.steps]

    def table(self):
        """One line per step, for reports."""
        lines = [f"{'step':<18} {'src':>3} {'skip':>4} {'dst':>6} {'K tiles':>7} {'N blocks':>8} {'positions':>9} "
                 f"{'cycles':>8} {'PE use':>6}"]
        for s in self.steps:
            p = s.plan
            lines.append(f"{'+'.join(s.names):<18} {s.src:>3} {s.skip or '-':>4} {s.dst:>6} {p.kt:>7} {p.nb:>8} "
                         f"{p.visited:>9} {p.cycles():>8} {p.utilisation():>6.1%}")
        return lines


@dataclass
class _Item:
    """A step before the design is sized: its layer (rewritten), fused pool, names, the
    tensor it writes and the ones it reads (its source, then its skip)."""

    layer: object
    pool: tuple
    names: tuple
    tensor: int
    reads: tuple


class _Layers:
    """Just enough of a Network for :func:`hw.plan.fit_config`: the rewritten layers."""

    def __init__(self, layers):
        self.layers = layers
