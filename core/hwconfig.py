"""The typed hardware config: array shape, bit widths and memory depths, with every derived width.

One :class:`HwConfig` describes a generated design.  The widths that follow from it
(accumulator, shift field, weight word, output word, counters) are properties here,
computed once from :mod:`core.arith` and read by the RTL, the testbenches and the
layer planner alike.
"""

import dataclasses
from dataclasses import dataclass, field

from core import arith
from core.errors import UserError


@dataclass(frozen=True)
class HwConfig:
    """A shift-accumulate array and the memories of the layer engine around it."""

    rows: int = field(default=8, metadata={"help": "array rows: inputs summed in one pass (the K tile)"})
    cols: int = field(default=8, metadata={"help": "array columns: output channels of one pass (the N tile)"})
    abits: int = field(default=4, metadata={"help": "unsigned activation code bits (inputs and ReLU outputs)"})
    wbits: int = field(default=4,
                     metadata={"help": "weight code bits per term: a sign and a (wbits-1)-bit shift field"})
    terms: int = field(default=1, metadata={"help": "powers of two summed per weight"})
    max_fan_in: int = field(default=1568, metadata={"help": "deepest fan-in accepted; sets the accumulator width"})
    max_left: int = field(default=4, metadata={"help": "largest left shift of a logits layer's requantiser"})
    skip: bool = field(default=False, metadata={
        "help": "build the residual-add path: a layer may add an earlier tensor, shifted per channel, into its "
                "accumulator"})
    max_skip_left: int = field(default=0, metadata={"help": "largest left shift of a residual add's skip term"})
    pipeline: bool = field(default=False,
                     metadata={"help": "register after each PE's shifter (one more cycle of latency)"})
    bram_reg: bool = field(default=False,
                           metadata={"help": "register the activation and partial-sum memories' outputs (ECP5 block "
                                             "RAM reads slowly); two more cycles a pass"})
    input_reg: bool = field(default=False, metadata={
        "help": "one more register stage between the memories and the array, on the activations and the weight "
                "words: block RAM's clock-to-output and the route across a large array fall in separate cycles; "
                "one more cycle a block"})
    skew_ram: bool = field(default=False, metadata={
        "help": "delay the array's rows by whole groups of 16 bits in block RAM, only the rest in flip-flops "
                "(iCE40: a flip-flop is a logic cell of its own); same cycles"})
    wgt_lanes: int = field(default=1, metadata={
        "help": "array rows a weight memory word holds, one for each of as many groups of rows that load side by "
                "side: a pass's weights load in rows / wgt_lanes cycles (wider weight words, more flip-flops)"})
    act_depth: int = field(default=1024, metadata={"help": "input activation memory, words of `rows` codes"})
    wgt_depth: int = field(default=2048,
                     metadata={"help": "weight memory, words of `wgt_lanes` array rows (`cols` weight codes each)"})
    par_depth: int = field(default=16, metadata={"help": "per-channel bias/shift memory, in output channel blocks of `cols`"})
    psum_depth: int = field(default=256, metadata={"help": "partial-sum memory: output positions of one M tile"})
    out_depth: int = field(default=2048, metadata={"help": "output memory, words of `cols` results"})

    def __post_init__(self):
        for name in ("rows", "cols", "wgt_lanes", "max_fan_in", "act_depth", "wgt_depth", "par_depth", "psum_depth",
                     "out_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive integer, not {value!r}")
        for name in ("max_left", "max_skip_left"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"{name} must be a non-negative integer, not {value!r}")
        if self.rows % self.wgt_lanes:
            raise UserError(f"wgt_lanes {self.wgt_lanes} does not divide the {self.rows} rows; use a divisor of "
                            f"{self.rows}, e.g. --wgt-lanes {max(d for d in range(1, self.wgt_lanes + 1) if self.rows % d == 0)}")
        arith.check_bits(wbits=self.wbits, abits=self.abits, terms=self.terms)
        if self.acc_bits > arith.MAX_ACC_BITS:
            raise UserError(
                f"fan-in {self.max_fan_in} with {self.abits}-bit activations and {self.terms} term(s) of "
                f"{self.wbits}-bit weights needs a {self.acc_bits}-bit accumulator, more than the "
                f"{arith.MAX_ACC_BITS} the array builds; lower --max-fan-in, --abits, --wbits or --terms"
            )

        if self.skip and self.skip_issue < 0:
            raise UserError(f"the residual-add path needs its skip read {-self.skip_issue} cycle(s) before a "
                            f"position enters the {self.rows}x{self.cols} array; use an array of at least 2 PEs")

    # --- derived numbers -------------------------------------------------------------
    @property
    def arith(self):
        """The integer contract of the deepest layer this design accepts."""
        skip = arith.skip_bound(self.abits, self.max_skip_left) if self.skip else 0
        return arith.LayerArith(fan_in=self.max_fan_in, in_bits=self.abits, wbits=self.wbits, terms=self.terms,
                                skip_bound=skip)

    @property
    def acc_bits(self):
        """Accumulator width: holds bias plus the worst-case sum of ``max_fan_in`` products."""
        return self.arith.acc_bits

    @property
    def dot_bits(self):
        """Width of the partial sums inside the engine's array: one pass sums ``rows``
        products, and the accumulation across passes happens after the array."""
        return arith.signed_bits(arith.product_bound(self.rows, self.abits, self.wbits, self.terms))

    @property
    def load_rows(self):
        """Weight words of one pass (one K tile): ``rows / wgt_lanes``, read one a cycle."""
        return self.rows // self.wgt_lanes

    @property
    def par_lead(self):
        """Cycles from a block's first read of activations to the first read of its channel
        parameters: the position enters the array ``1 + input_stages`` cycles later, its
        sums reach the drain's adder (which reads the bias) ``latency + bram_reg`` after
        that, and a residual add reads the bias a cycle before the adder."""
        return 1 + self.input_stages + self.latency + int(self.bram_reg) - int(self.skip)

    @property
    def load_cycles(self):
        """Cycles a block waits after starting its loads before its first pass streams.  The
        first weights need none (they load along the diagonal ahead of the activations, as
        every later pass's do), and the ``cols`` channel parameters shift in while the pass
        streams, in its first ``cols`` cycles; they must be in place before
        :attr:`par_lead`, which is always later (``latency >= cols``), so this is 0."""
        return max(0, self.cols - self.par_lead)

    @property
    def pass_gap(self):
        """Fewest idle cycles between the last position a pass streams and the first of the
        next pass of the same block: ``bram_reg + 2``, so that a partial sum is written
        before the next pass reads it (a pass of one position reads what the one before
        wrote).  The weights need none: the next pass's load follows the last activations
        of the old ones along the array's diagonal (:class:`hw.array.SystolicArray`)."""
        return int(self.bram_reg) + 2

    @property
    def input_stages(self):
        """Registers between the memories and the array, on the activations and the weight
        words alike: one with ``bram_reg``, one more with ``input_reg``."""
        return int(self.bram_reg) + int(self.input_reg)

    @property
    def requant_stages(self):
        """Register stages of the requantiser (:class:`hw.requant.Requantizer`): the code
        bits are selected into the first, rounded and clamped into the second.  Two, since
        with one the rounding, clamp and path muxes and the route to the output memory
        made the iCE40 build's critical path."""
        return 2

    @property
    def drain_stages(self):
        """Engine cycles from a result vector leaving the array to its last memory write:
        one to add the partial sums (read a cycle ahead, as it leaves), one more with
        ``bram_reg`` (the sums and dot products registered), then the requantiser's."""
        return 1 + int(self.bram_reg) + self.requant_stages

    @property
    def shift_levels(self):
        return self.arith.shift_levels

    @property
    def skip_right(self):
        """Largest right shift of a skip term that can leave anything: a code shifted right
        by ``abits + 1`` rounds to 0, so larger shifts are clamped to it."""
        return self.abits + 1

    @property
    def skip_shift_bits(self):
        """Signed bits of a skip shift in ``[-skip_right, max_skip_left]`` (0 without the path)."""
        return arith.signed_bits(max(self.skip_right, self.max_skip_left)) if self.skip else 0

    @property
    def skip_lead(self):
        """Cycles between the skip read of a position and its dot products entering the
        drain's adder: one for the read, one to add the term to the bias."""
        return 2

    @property
    def skip_issue(self):
        """Cycles from a position entering the array to the read of its skip codes: its sums
        leave the array ``latency`` cycles after it enters, the drain's adder takes them
        ``bram_reg`` cycles later, and the read comes ``skip_lead`` cycles before that."""
        return self.latency + int(self.bram_reg) - self.skip_lead

    @property
    def code_bits(self):
        """Bits of one PE's weight register: ``terms`` codes of ``wbits`` bits."""
        return self.terms * self.wbits

    @property
    def product_bits(self):
        """Bits of one shifted activation ``a << e`` (unsigned)."""
        return self.abits + self.shift_levels - 1

    @property
    def rq_bits(self):
        """Signed bits of a requantiser shift in ``[-max_left, acc_bits]``."""
        return arith.signed_bits(max(self.acc_bits, self.max_left))

    @property
    def out_bits(self):
        """Signed bits of one engine output: an activation code, or a left-shifted logit."""
        return max(self.abits + 1, self.acc_bits + self.max_left)

    @property
    def pipeline_stages(self):
        return int(self.pipeline)

    @property
    def latency(self):
        """Cycles from an activation vector entering the array to its sums leaving it."""
        return self.rows + self.cols - 1 + self.pipeline_stages

    def to_dict(self):
        return dataclasses.asdict(self)

    def derived(self):
        """The derived widths, for the record saved beside generated files."""
        return {k: getattr(self, k) for k in ("acc_bits", "dot_bits", "shift_levels", "code_bits", "product_bits",
                                              "rq_bits", "out_bits", "latency", "load_rows", "par_lead", "load_cycles", "pass_gap", "input_stages", "requant_stages",
                                              "drain_stages", "skip_shift_bits")}

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown hardware config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


def settings(flags=None, board=None):
    """The :class:`HwConfig` fields a user or board sets: ``board.defaults``
    (:attr:`core.boards.Board.defaults`), then the ``flags`` given (``None`` = not given).

    Everything else is derived from the network (:func:`hw.plan.fit_config`) or defaulted.
    Unknown names are refused in one line.
    """
    merged = dict(board.defaults) if board is not None else {}
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(HwConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise UserError(f"unknown hardware config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return merged


def given_flags(args):
    """The :class:`HwConfig` flags given on a command line (:func:`core.cli.add_config_arguments`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(HwConfig)
            if getattr(args, f.name, None) is not None}
