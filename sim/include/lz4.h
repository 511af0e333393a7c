/* Declarations of the two LZ4 block-compression functions Verilator's FST writer calls.
 *
 * Written for shiftnn: machines that have the LZ4 runtime library (liblz4.so.1) but not its
 * development header can still record FST traces.  sim/runner.py puts this folder on the
 * include path only when the compiler finds no <lz4.h> of its own.  The signatures are the
 * library's documented stable API (lz4.h, "Simple Functions").
 */
#ifndef SHIFTNN_LZ4_SHIM_H
#define SHIFTNN_LZ4_SHIM_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char *src, char *dst, int srcSize, int dstCapacity);
int LZ4_versionNumber(void);
#ifdef __cplusplus
}
#endif
#endif
