// shiftnn.h: the shift-accumulate integer network as a header-only C++14 library for HLS.
//
// Hand-written; the generator (python -m templates.hls) copies it beside the code it writes.
// It computes exactly the integer contract of core/arith.py and core/reference.py:
//
//   acc = bias + sum over inputs and terms of (-1)**sign * (a << shift)    (no multiplies)
//   acc += skip_term(skip, k)       (a residual add: layers with a skip input only)
//   out = round_shift(acc, s), then clamp to [0, 2**out_bits - 1] for ReLU layers,
//   round_shift(acc, s) = (acc + 2**(s-1)) >> s (arithmetic) for s > 0, acc for s == 0,
//                         acc << -s for s < 0,
//   skip_term(v, k)     = round_shift(v, -k): v << k for k >= 0, rounded half up v >> -k for k < 0;
//   average pool: the sum of each window (its mean at an exponent log2(KH*KW) higher; no division).
//
// Every layer function is templated on a layer description L, a struct the generator writes
// with the sizes as enum constants and the integer types as typedefs:
//
//   conv2d / pools / flatten:  C, H, W (input), HO, WO (output), and for conv2d O
//   conv2d / pools:            KH, KW, SH, SW (kernel, stride), conv2d also PH, PW (zero padding)
//   linear:                    N (inputs), O (outputs)
//   weighted layers:           WBITS, TERMS, RELU, OUT_BITS, and the types acc_t (accumulator),
//                              wide_t (requantiser), code_t, bias_t, shift_t
//   with a skip (*_skip):      skip_t (the added tensor's codes), skip_shift_t, and skip_wide_t
//                              (the rounding right shift of a skip code)
//   every layer:               in_t, out_t
//
// Arrays are C arrays in NCHW order per sample, as in the reference.  A weight is TERMS codes
// of WBITS bits packed into one code_t, term 0 in the low bits.  A code is the sign in its top
// bit and a WBITS-1 bit shift field below it; the all-ones field means a zero term (the same
// encoding as the RTL, core/codes.py).
//
// Integer types: sint<W> / uint<W> are ap_int<W> / ap_uint<W> when SHIFTNN_AP_INT is defined
// (Vitis HLS), otherwise the smallest std::intN_t / std::uintN_t with at least W bits.  The
// generator chooses every W from the layer's derived widths, so no value ever overflows.
//
// The "#pragma HLS" lines are for Vitis HLS (and tools that read its pragmas); a plain C++
// compiler ignores them (build with -Wno-unknown-pragmas).

#ifndef SHIFTNN_H
#define SHIFTNN_H

#include <cstdint>
#include <type_traits>

#ifdef SHIFTNN_AP_INT
#include <ap_int.h>
#endif

namespace shiftnn {

namespace detail {

// The smallest standard integer type of at least W bits (W in 1..64).
template <int W, bool SIGNED>
struct std_int {
    static_assert(W >= 1 && W <= 64, "shiftnn: standard integer types hold at most 64 bits");
    typedef typename std::conditional<(W <= 8), std::int8_t,
            typename std::conditional<(W <= 16), std::int16_t,
            typename std::conditional<(W <= 32), std::int32_t, std::int64_t>::type>::type>::type sint_type;
    typedef typename std::conditional<(W <= 8), std::uint8_t,
            typename std::conditional<(W <= 16), std::uint16_t,
            typename std::conditional<(W <= 32), std::uint32_t, std::uint64_t>::type>::type>::type uint_type;
    typedef typename std::conditional<SIGNED, sint_type, uint_type>::type type;
};

}  // namespace detail

#ifdef SHIFTNN_AP_INT
template <int W> using sint = ap_int<W>;
template <int W> using uint = ap_uint<W>;
#else
template <int W> using sint = typename detail::std_int<W, true>::type;
template <int W> using uint = typename detail::std_int<W, false>::type;
#endif

// x << n for a value that may be negative.  For standard types the shift is done on the
// unsigned 64-bit pattern (a signed left shift of a negative value is undefined in C++14);
// the result fits in T by construction of the widths.
template <class T>
inline typename std::enable_if<std::is_integral<T>::value, T>::type shl(T x, int n) {
    return static_cast<T>(static_cast<std::uint64_t>(static_cast<std::int64_t>(x)) << n);
}

// Arbitrary-precision types (ap_int) shift negative values exactly.
template <class T>
inline typename std::enable_if<!std::is_integral<T>::value, T>::type shl(T x, int n) {
    return T(x << n);
}

// acc + sum over the TERMS codes packed in `code` of (-1)**sign * (a << shift); zero terms
// add nothing.  Shifts and adds only.
template <class L>
inline typename L::acc_t shift_accumulate(typename L::acc_t acc, typename L::in_t a, typename L::code_t code) {
    typedef typename L::acc_t acc_t;
    const unsigned zero_field = (1u << (L::WBITS - 1)) - 1u;
    unsigned rest = static_cast<unsigned>(code);
    for (int t = 0; t < L::TERMS; ++t) {
#pragma HLS UNROLL
        const unsigned field = rest & zero_field;
        const bool negative = ((rest >> (L::WBITS - 1)) & 1u) != 0u;
        if (field != zero_field) {
            const acc_t p = shl(acc_t(a), static_cast<int>(field));
            acc = acc_t(negative ? acc_t(acc - p) : acc_t(acc + p));
        }
        rest >>= L::WBITS;
    }
    return acc;
}

// The requantiser: round half up by `shift` (left shift where shift < 0), then ReLU and clamp
// to OUT_BITS unsigned bits when L::RELU.  Computed in wide_t, which holds acc + 2**(shift-1)
// and acc << -shift.
template <class L>
inline typename L::out_t requantize(typename L::acc_t acc, typename L::shift_t shift) {
    typedef typename L::wide_t wide_t;
    const int s = static_cast<int>(shift);
    wide_t v = wide_t(acc);
    if (s > 0) {
        v = wide_t((v + shl(wide_t(1), s - 1)) >> s);
    } else if (s < 0) {
        v = shl(v, -s);
    }
    if (L::RELU) {
        const wide_t top = wide_t((1 << L::OUT_BITS) - 1);
        if (v < wide_t(0)) {
            v = wide_t(0);
        } else if (v > top) {
            v = top;
        }
    }
    return typename L::out_t(v);
}

// A skip code in accumulator units (core.arith.skip_term): v << k for k >= 0, else v shifted
// right by -k rounding half up, computed in skip_wide_t, which holds v + 2**(-k-1).
template <class L>
inline typename L::acc_t skip_term(typename L::skip_t v, typename L::skip_shift_t k) {
    typedef typename L::acc_t acc_t;
    typedef typename L::skip_wide_t skip_wide_t;
    const int s = static_cast<int>(k);
    if (s >= 0) {
        return shl(acc_t(v), s);
    }
    const skip_wide_t w = skip_wide_t(skip_wide_t(v) + shl(skip_wide_t(1), -s - 1));
    return acc_t(w >> -s);
}

// The residual add: acc + skip_term(v, k).  acc_t holds the bias, the products and the largest
// skip term together (core.arith.accumulator_bits).
template <class L>
inline typename L::acc_t add_skip(typename L::acc_t acc, typename L::skip_t v, typename L::skip_shift_t k) {
    return typename L::acc_t(acc + skip_term<L>(v, k));
}

namespace detail {

// acc[o] = bias[o] + the taps of the KH x KW window whose top left corner is (y0, x0) in input
// coordinates (outside the input: zero padding).  The taps (channel, ky, kx) go through a
// pipeline one per cycle; each tap's activation is shifted and added into all O accumulators at
// once (one shift-adder per output channel and term).
template <class L>
inline void conv2d_window(const typename L::in_t in[L::C][L::H][L::W],
                          const typename L::code_t codes[L::O][L::C][L::KH][L::KW],
                          const typename L::bias_t bias[L::O],
                          int y0, int x0, typename L::acc_t acc[L::O]) {
#pragma HLS INLINE
    for (int o = 0; o < L::O; ++o) {
#pragma HLS UNROLL
        acc[o] = typename L::acc_t(bias[o]);
    }
    for (int c = 0; c < L::C; ++c) {
        for (int ky = 0; ky < L::KH; ++ky) {
            for (int kx = 0; kx < L::KW; ++kx) {
#pragma HLS PIPELINE II=1
                const int iy = y0 + ky;
                const int ix = x0 + kx;
                const bool inside = iy >= 0 && iy < L::H && ix >= 0 && ix < L::W;
                const typename L::in_t a = inside ? in[c][iy][ix] : typename L::in_t(0);
                for (int o = 0; o < L::O; ++o) {
#pragma HLS UNROLL
                    acc[o] = shift_accumulate<L>(acc[o], a, codes[o][c][ky][kx]);
                }
            }
        }
    }
}

// acc[o] = bias[o] + the N inputs, one per cycle, each shifted and added into all O accumulators.
template <class L>
inline void linear_sum(const typename L::in_t in[L::N],
                       const typename L::code_t codes[L::O][L::N],
                       const typename L::bias_t bias[L::O],
                       typename L::acc_t acc[L::O]) {
#pragma HLS INLINE
    for (int o = 0; o < L::O; ++o) {
#pragma HLS UNROLL
        acc[o] = typename L::acc_t(bias[o]);
    }
    for (int n = 0; n < L::N; ++n) {
#pragma HLS PIPELINE II=1
        const typename L::in_t a = in[n];
        for (int o = 0; o < L::O; ++o) {
#pragma HLS UNROLL
            acc[o] = shift_accumulate<L>(acc[o], a, codes[o][n]);
        }
    }
}

}  // namespace detail

// 2-D convolution, zero padding, NCHW: per output pixel the window's taps into all O
// accumulators (detail::conv2d_window), then the requantiser, one output channel per cycle.
template <class L>
void conv2d(const typename L::in_t in[L::C][L::H][L::W],
            typename L::out_t out[L::O][L::HO][L::WO],
            const typename L::code_t codes[L::O][L::C][L::KH][L::KW],
            const typename L::bias_t bias[L::O],
            const typename L::shift_t shift[L::O]) {
#pragma HLS ARRAY_PARTITION variable=codes complete dim=1
#pragma HLS ARRAY_PARTITION variable=bias complete dim=1
#pragma HLS ARRAY_PARTITION variable=shift complete dim=1
    typename L::acc_t acc[L::O];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
    int y0 = -L::PH;  // top row of the current window in input coordinates
    for (int y = 0; y < L::HO; ++y) {
        int x0 = -L::PW;  // left column of the current window
        for (int x = 0; x < L::WO; ++x) {
            detail::conv2d_window<L>(in, codes, bias, y0, x0, acc);
            for (int o = 0; o < L::O; ++o) {
#pragma HLS PIPELINE II=1
                out[o][y][x] = requantize<L>(acc[o], shift[o]);
            }
            x0 += L::SW;
        }
        y0 += L::SH;
    }
}

// conv2d with a residual add: skip (the output shape, an earlier tensor's codes) goes into the
// accumulators through skip_term with the per-channel skip_shift, one channel per cycle in the
// requantiser loop, before requantisation.
template <class L>
void conv2d_skip(const typename L::in_t in[L::C][L::H][L::W],
                 const typename L::skip_t skip[L::O][L::HO][L::WO],
                 typename L::out_t out[L::O][L::HO][L::WO],
                 const typename L::code_t codes[L::O][L::C][L::KH][L::KW],
                 const typename L::bias_t bias[L::O],
                 const typename L::shift_t shift[L::O],
                 const typename L::skip_shift_t skip_shift[L::O]) {
#pragma HLS ARRAY_PARTITION variable=codes complete dim=1
#pragma HLS ARRAY_PARTITION variable=bias complete dim=1
#pragma HLS ARRAY_PARTITION variable=shift complete dim=1
#pragma HLS ARRAY_PARTITION variable=skip_shift complete dim=1
    typename L::acc_t acc[L::O];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
    int y0 = -L::PH;
    for (int y = 0; y < L::HO; ++y) {
        int x0 = -L::PW;
        for (int x = 0; x < L::WO; ++x) {
            detail::conv2d_window<L>(in, codes, bias, y0, x0, acc);
            for (int o = 0; o < L::O; ++o) {
#pragma HLS PIPELINE II=1
                out[o][y][x] = requantize<L>(add_skip<L>(acc[o], skip[o][y][x], skip_shift[o]), shift[o]);
            }
            x0 += L::SW;
        }
        y0 += L::SH;
    }
}

// Fully connected layer: the N inputs into all O accumulators (detail::linear_sum), then the
// requantiser, one output per cycle.
template <class L>
void linear(const typename L::in_t in[L::N],
            typename L::out_t out[L::O],
            const typename L::code_t codes[L::O][L::N],
            const typename L::bias_t bias[L::O],
            const typename L::shift_t shift[L::O]) {
#pragma HLS ARRAY_PARTITION variable=codes complete dim=1
#pragma HLS ARRAY_PARTITION variable=bias complete dim=1
#pragma HLS ARRAY_PARTITION variable=shift complete dim=1
    typename L::acc_t acc[L::O];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
    detail::linear_sum<L>(in, codes, bias, acc);
    for (int o = 0; o < L::O; ++o) {
#pragma HLS PIPELINE II=1
        out[o] = requantize<L>(acc[o], shift[o]);
    }
}

// linear with a residual add of skip (O codes of an earlier tensor), as conv2d_skip.
template <class L>
void linear_skip(const typename L::in_t in[L::N],
                 const typename L::skip_t skip[L::O],
                 typename L::out_t out[L::O],
                 const typename L::code_t codes[L::O][L::N],
                 const typename L::bias_t bias[L::O],
                 const typename L::shift_t shift[L::O],
                 const typename L::skip_shift_t skip_shift[L::O]) {
#pragma HLS ARRAY_PARTITION variable=codes complete dim=1
#pragma HLS ARRAY_PARTITION variable=bias complete dim=1
#pragma HLS ARRAY_PARTITION variable=shift complete dim=1
#pragma HLS ARRAY_PARTITION variable=skip_shift complete dim=1
    typename L::acc_t acc[L::O];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
    detail::linear_sum<L>(in, codes, bias, acc);
    for (int o = 0; o < L::O; ++o) {
#pragma HLS PIPELINE II=1
        out[o] = requantize<L>(add_skip<L>(acc[o], skip[o], skip_shift[o]), shift[o]);
    }
}

// Max pooling over KH x KW windows with stride (SH, SW), no padding; one window element per cycle.
template <class L>
void maxpool2d(const typename L::in_t in[L::C][L::H][L::W], typename L::out_t out[L::C][L::HO][L::WO]) {
    for (int c = 0; c < L::C; ++c) {
        int y0 = 0;
        for (int y = 0; y < L::HO; ++y) {
            int x0 = 0;
            for (int x = 0; x < L::WO; ++x) {
                typename L::in_t m = in[c][y0][x0];
                for (int ky = 0; ky < L::KH; ++ky) {
                    for (int kx = 0; kx < L::KW; ++kx) {
#pragma HLS PIPELINE II=1
                        const typename L::in_t v = in[c][y0 + ky][x0 + kx];
                        if (v > m) {
                            m = v;
                        }
                    }
                }
                out[c][y][x] = typename L::out_t(m);
                x0 += L::SW;
            }
            y0 += L::SH;
        }
    }
}

// Average pooling as window sums (core.arith): each KH x KW window's codes added up, which is
// their mean at an exponent log2(KH*KW) higher, so there is no division and no rounding.  Stride
// (SH, SW) (the contract has it equal to the kernel), no padding, rows and columns past the last
// whole window dropped (floor mode); KH = H, KW = W is global average pooling.  out_t has
// log2(KH*KW) more bits than in_t, so a sum never overflows.  One window element per cycle.
template <class L>
void avgpool2d(const typename L::in_t in[L::C][L::H][L::W], typename L::out_t out[L::C][L::HO][L::WO]) {
    typedef typename L::out_t out_t;
    for (int c = 0; c < L::C; ++c) {
        int y0 = 0;
        for (int y = 0; y < L::HO; ++y) {
            int x0 = 0;
            for (int x = 0; x < L::WO; ++x) {
                out_t sum = out_t(0);
                for (int ky = 0; ky < L::KH; ++ky) {
                    for (int kx = 0; kx < L::KW; ++kx) {
#pragma HLS PIPELINE II=1
                        sum = out_t(sum + out_t(in[c][y0 + ky][x0 + kx]));
                    }
                }
                out[c][y][x] = sum;
                x0 += L::SW;
            }
            y0 += L::SH;
        }
    }
}

// (C, H, W) -> (C*H*W,), row-major: channel, then row, then column.
template <class L>
void flatten(const typename L::in_t in[L::C][L::H][L::W], typename L::out_t out[L::N]) {
    int i = 0;
    for (int c = 0; c < L::C; ++c) {
        for (int y = 0; y < L::H; ++y) {
            for (int x = 0; x < L::W; ++x) {
#pragma HLS PIPELINE II=1
                out[i] = typename L::out_t(in[c][y][x]);
                ++i;
            }
        }
    }
}

// Flatten of an already flat (N,) tensor: a copy.
template <class L>
void copy(const typename L::in_t in[L::N], typename L::out_t out[L::N]) {
    for (int i = 0; i < L::N; ++i) {
#pragma HLS PIPELINE II=1
        out[i] = typename L::out_t(in[i]);
    }
}

}  // namespace shiftnn

#endif  // SHIFTNN_H
