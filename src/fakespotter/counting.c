/* Counts of a tapped layer's outputs above thresholds, per image and channel, for every
 * threshold in one read of the output: the reduction behind every built-in coverage
 * criterion. Built at install as the extension fakespotter._counting (setup.py);
 * fakespotter/counting.py loads it and calls these two functions through ctypes.
 *
 * x is float32 and dense, in one of two layouts:
 *   fs_count_pc: n x p x c, channels innermost (a channels-last conv output, a linear one);
 *   fs_count_cp: n x c x p, positions innermost (a contiguous NCHW conv output).
 * Both take (x, n, p, c, t, l, out) and fill the int32 n x l x c array out:
 *   out[i][k][ch] = number of positions q with x[i][q][ch] > t[k].
 * A plain C comparison, so the count is exactly torch's `x > t` (NaN is never above; never
 * build this with -ffast-math). Both return 0.
 *
 * One thread, the caller's: the call runs between torch's parallel ops, whose OpenMP workers
 * spin-wait on the other cores for a while after each one; a second counting thread that
 * competed with them was slower inside the forward pass than one, when tried.
 */
#if defined(FS_EXTENSION) /* built as a Python extension: an empty module, so it imports */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef fs_module = {PyModuleDef_HEAD_INIT, "_counting",
                                       "counting.c's functions, called through ctypes", -1, NULL};
PyMODINIT_FUNC PyInit__counting(void) { return PyModule_Create(&fs_module); }
#endif

#include <stdint.h>
#include <string.h>

#if defined(FS_CLONES) /* x86-64 with ifunc: an AVX2 copy, picked at load time */
#define FS_VECTOR __attribute__((target_clones("avx2", "default")))
#else
#define FS_VECTOR
#endif

/* pc: channels are counted a block at a time, so the block's l x 1 KiB of counts stay in
 * the L1 cache while every position's row of the block is read once */
enum { CHANNEL_BLOCK = 256 };

FS_VECTOR int fs_count_pc(const float *x, int64_t n, int64_t p, int64_t c, const float *t,
                          int64_t l, int32_t *out)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t c0 = 0; c0 < c; c0 += CHANNEL_BLOCK) {
            const int64_t width = c - c0 < CHANNEL_BLOCK ? c - c0 : CHANNEL_BLOCK;
            int32_t *o = out + i * l * c + c0;
            for (int64_t k = 0; k < l; k++) memset(o + k * c, 0, sizeof(int32_t) * width);
            for (int64_t q = 0; q < p; q++) {
                const float *row = x + (i * p + q) * c + c0;
                for (int64_t k = 0; k < l; k++) {
                    const float tk = t[k];
                    int32_t *ok = o + k * c;
                    for (int64_t ch = 0; ch < width; ch++) ok[ch] += row[ch] > tk;
                }
            }
        }
    return 0;
}

FS_VECTOR int fs_count_cp(const float *x, int64_t n, int64_t p, int64_t c, const float *t,
                          int64_t l, int32_t *out)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = 0; ch < c; ch++) {
            const float *row = x + (i * c + ch) * p;
            for (int64_t k = 0; k < l; k++) {
                const float tk = t[k];
                int32_t s = 0;
                for (int64_t q = 0; q < p; q++) s += row[q] > tk;
                out[(i * l + k) * c + ch] = s;
            }
        }
    return 0;
}
