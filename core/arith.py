"""The integer arithmetic contract: weight codes, rounding shifts and widths, read by every stage.

Everything downstream (the PyTorch fake-quantised forward, the integer reference, the
hardware and its testbenches) follows the rules written here, and the derived numbers
(shift range, accumulator width, output width) are computed here once and read
everywhere else.

Number formats
--------------
Activation
    An unsigned integer ``q`` in ``[0, 2**abits - 1]`` standing for ``q * 2**-f``,
    where ``f`` (the activation's *exponent*) is an integer fixed per tensor.
Weight
    A sum of ``terms`` signed powers of two in units of ``2**e0`` (``e0`` per output
    channel).  Each term is a code ``(zero, sign, shift)`` with ``shift`` in
    ``[0, shift_levels(wbits) - 1]`` and value ``0`` if ``zero`` else
    ``(-1)**sign * 2**shift``.  A ``wbits``-bit code is one sign bit and a
    ``wbits - 1``-bit field in which one value means zero and the others are shifts, so
    ``shift_levels(wbits) = 2**(wbits - 1) - 1`` (``wbits = 2`` is ternary).
Accumulator
    ``acc = bias + sum(weight_int * act)``, exact in two's complement of
    :func:`accumulator_bits` bits.
Skip (residual add)
    A layer with a skip adds an earlier tensor of its own output shape into its
    accumulator, rescaled by a power of two: ``acc += skip_term(skip, s)`` with a
    per-channel shift ``s`` (:func:`skip_term`).
Average pool
    The sum of a window of ``A = 2**k`` codes, standing for their mean at exponent
    ``f + k``: no rounding, ``k`` more bits (at most :data:`MAX_IN_BITS`).
Requantisation
    ``out = clamp(round_shift(acc, s), 0, 2**abits - 1)`` with a per-channel shift ``s``
    (``relu`` layers), or ``out = round_shift(acc, s)`` with ``s <= 0`` (the logits layer,
    lossless left shifts to one common scale).  ``round_shift`` rounds half up:
    ``(acc + 2**(s-1)) >> s`` with an arithmetic shift for ``s > 0``, ``acc << -s``
    otherwise.
"""

from dataclasses import dataclass

import numpy as np

from .errors import UserError

#: Hardware limits: the configurations the shift-accumulate array can represent.
WBITS_RANGE = (2, 5)
ABITS_RANGE = (1, 8)
TERMS_RANGE = (1, 3)
#: The widest accumulator the hardware builds; also keeps the float32 fake-quantised
#: forward exact (integers below 2**24 are exact in float32), see :func:`float32_exact`.
MAX_ACC_BITS = 32
#: The widest input of a weighted layer: activations, or the sums an average pool gives.
MAX_IN_BITS = 16


def check_bits(*, wbits=None, abits=None, terms=None):
    """Refuse bit widths the hardware cannot represent, with a one-line :class:`UserError`."""
    for name, value, (lo, hi), flag in (
        ("weight bits", wbits, WBITS_RANGE, "--wbits"),
        ("activation bits", abits, ABITS_RANGE, "--abits"),
        ("terms", terms, TERMS_RANGE, "--terms"),
    ):
        if value is None:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
            raise UserError(
                f"{name} {value!r} cannot be represented by the shift array; "
                f"choose {flag} between {lo} and {hi}"
            )


def shift_levels(wbits):
    """Number of distinct shifts a ``wbits``-bit weight code selects (one code is zero)."""
    check_bits(wbits=wbits)
    return 2 ** (wbits - 1) - 1


def act_max(abits):
    """Largest unsigned activation code."""
    check_bits(abits=abits)
    return 2**abits - 1


def signed_bits(bound):
    """Bits of a two's complement integer that holds every value in ``[-bound, bound]``."""
    return int(bound).bit_length() + 1


def check_in_bits(in_bits):
    """Refuse a weighted layer's input width outside ``1 .. MAX_IN_BITS``."""
    if not isinstance(in_bits, (int, np.integer)) or isinstance(in_bits, bool) or not 1 <= in_bits <= MAX_IN_BITS:
        raise UserError(f"input bits {in_bits!r} of a weighted layer must be between 1 and {MAX_IN_BITS}; "
                        "pool over a smaller window or lower --abits")


def product_bound(fan_in, in_bits, wbits, terms):
    """Largest ``|sum(weight_int * act)|`` of one output: every input at its maximum,
    every weight term at the largest shift with one sign.  Biases are clamped to it.
    ``in_bits`` may exceed the activation bits after an average pool (up to
    :data:`MAX_IN_BITS`)."""
    check_bits(wbits=wbits, terms=terms)
    check_in_bits(in_bits)
    if fan_in < 1:
        raise UserError(f"fan-in {fan_in!r} must be a positive integer")
    return fan_in * (2**in_bits - 1) * terms * 2 ** (shift_levels(wbits) - 1)


def skip_term(skip, shift):
    """A skip tensor's codes in accumulator units: ``skip << shift`` where ``shift >= 0``,
    the round-half-up shift right by ``-shift`` (:func:`round_shift`) where it is negative.
    ``shift`` broadcasts against ``skip`` (per channel)."""
    return round_shift(skip, -np.asarray(shift, dtype=np.int64))


def skip_bound(skip_bits, max_shift):
    """Largest skip term: the largest code shifted left by the largest shift (a right shift
    never makes a code larger)."""
    check_bits(abits=skip_bits)
    return act_max(skip_bits) << max(0, int(max_shift))


def accumulator_bits(fan_in, in_bits, wbits, terms, skip=0):
    """Accumulator width of a layer: products plus a bias of at most the same magnitude.

    Parameters
    ----------
    fan_in : int
        Inputs summed into one output (``in_channels * kh * kw`` for a convolution).
    in_bits : int
        Unsigned activation bits of the layer's input.
    wbits : int
        Weight code bits (sign + shift field).
    terms : int
        Powers of two per weight.
    skip : int
        The largest skip term added (:func:`skip_bound`), 0 without a skip.

    Returns
    -------
    int
        Two's complement bits that hold ``bias + sum(products) + skip`` for any input.
    """
    return signed_bits(2 * product_bound(fan_in, in_bits, wbits, terms) + skip)


def output_bits(acc_bits, requant_shift, relu, out_abits):
    """Width of a layer's output: ``out_abits`` unsigned after ReLU and clamp, else the
    accumulator widened by the largest left shift."""
    if relu:
        return out_abits
    left = max(0, -int(np.min(requant_shift)))
    return acc_bits + left


def check_accumulator(name, acc_bits):
    """Refuse a layer whose accumulator would be wider than the hardware builds."""
    if acc_bits > MAX_ACC_BITS:
        raise UserError(
            f"layer {name} needs a {acc_bits}-bit accumulator, more than the {MAX_ACC_BITS} the array "
            f"builds; lower --wbits/--abits/--terms or the layer's fan-in"
        )


def float32_exact(bound):
    """True when every partial sum below ``bound`` (in integer units) is exact in float32."""
    return bound < 2**24


def round_shift(acc, shift):
    """Round-half-up arithmetic shift right by ``shift`` (left shift where ``shift < 0``).

    Works on numpy integer arrays; ``shift`` broadcasts against ``acc`` (per channel).
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = np.maximum(shift, 0)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    shifted_right = np.right_shift(acc + half, right)
    return np.where(shift >= 0, shifted_right, np.left_shift(acc, np.maximum(-shift, 0)))


def requantize(acc, shift, relu, abits):
    """The per-column requantiser: round shift, then ReLU and clamp to ``abits`` if ``relu``."""
    out = round_shift(acc, shift)
    if relu:
        out = np.clip(out, 0, act_max(abits))
    return out


@dataclass(frozen=True)
class LayerArith:
    """Derived numbers of one weighted layer, computed once here and read everywhere."""

    fan_in: int
    in_bits: int
    wbits: int
    terms: int
    skip_bound: int = 0  # the largest skip term (:func:`skip_bound`); 0 without a skip

    @property
    def shift_levels(self):
        return shift_levels(self.wbits)

    @property
    def shift_bits(self):
        """Bits of the shift field in hardware (enough for ``shift_levels - 1``)."""
        return max(1, (self.shift_levels - 1).bit_length())

    @property
    def product_bound(self):
        return product_bound(self.fan_in, self.in_bits, self.wbits, self.terms)

    @property
    def acc_bits(self):
        return accumulator_bits(self.fan_in, self.in_bits, self.wbits, self.terms, self.skip_bound)


def weight_value(sign, shift, zero):
    """Integer weight (units of ``2**e0``) of term codes stacked on axis 0."""
    sign = np.asarray(sign, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    zero = np.asarray(zero).astype(bool)
    term = np.where(zero, 0, np.where(sign != 0, -1, 1) * np.left_shift(np.int64(1), shift))
    return term.sum(axis=0)


def csd_codes(values, terms, levels):
    """Encode integers as at most ``terms`` signed powers of two (canonical signed digits).

    Used for weights that are plain integers (the uniform baseline).  Raises
    :class:`UserError` when a value needs more digits or a shift beyond ``levels - 1``.

    Returns
    -------
    sign, shift, zero : numpy.ndarray
        Each of shape ``(terms, *values.shape)``.
    """
    values = np.asarray(values, dtype=np.int64)
    sign = np.zeros((terms,) + values.shape, dtype=np.int64)
    shift = np.zeros_like(sign)
    zero = np.ones_like(sign, dtype=bool)
    rest = values.copy()
    pos = np.zeros_like(values)
    used = np.zeros_like(values)
    while np.any(rest != 0):
        odd = (rest & 1) == 1
        # CSD digit: +1 where rest % 4 == 1, -1 where rest % 4 == 3
        digit = np.where(odd, 2 - (rest & 3), 0)
        has = digit != 0
        if np.any(has & (used >= terms)) or np.any(has & (pos >= levels)):
            bad = values[(has & (used >= terms)) | (has & (pos >= levels))].flat[0]
            raise UserError(
                f"weight value {int(bad)} needs more than {terms} powers of two within {levels} shifts; "
                f"raise --terms or lower --wbits"
            )
        idx = np.nonzero(has)
        t = used[idx]
        sign[(t,) + idx] = (digit[idx] < 0).astype(np.int64)
        shift[(t,) + idx] = pos[idx]
        zero[(t,) + idx] = False
        used = used + has
        rest = (rest - digit) >> 1
        pos = pos + 1
    return sign, shift, zero
