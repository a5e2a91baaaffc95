/* Quantized matmul kernels for batch-1/small-batch CPU decode: y = x @ W^T with W in GGUF Q4_1 or Q8_0
 * blocks, two ways: athq_qmatmul_f32 (fp32 x, weights converted to fp32 in registers, fp32 FMAs) and
 * athq_qmatmul (x quantized on the fly to int8 per 32-block, int8 dot products, fp32 accumulation).
 *
 * Built by athanor/nn/quant.py at first use (cc -O3 -mavx2 -mfma -mf16c -fopenmp -ffp-contract=off).
 * -ffp-contract=off matters: every float operation below is written out, so one output element is the
 * same sequence of roundings whatever M is and however threads split the rows (row independence).
 *
 * Weights: GGUF's blocks with each row's scales moved to the front, so 8 are converted at once. One row
 * of W after the other (N rows, nb = K/32 blocks each, same bytes as GGUF):
 *   Q8_0 row: d f16 [nb] | qs int8 [nb][32]                       w = d * q
 *   Q4_1 row: d f16 [nb] | m f16 [nb] | nibbles [nb][16]          w = d * q + m  (lo = w0..15, hi = w16..31)
 * int8 activations: q int8 (M, K) with per-block scale dx (fp32, = amax/127) and, for Q4_1, sx = dx * sum(q),
 * which carries the weight offset m through the dot product: sum (d q_j + m)(dx y_j) = d dx sum q_j y_j + m sx.
 * athq_qmatmul_f32_ld also reads GGUF's own layout (kinds 2 = Q8_0, 3 = Q4_1: blocks d | (m |) quants, e.g. the
 * pages of a mapped file), with the same float operations as the rows above: each block's scales are gathered
 * 8 at a time into a small array first, so an output is the same bits in either layout.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QK 32
#define MR_MAX 8   /* rows of x processed per weight block load (register tiles of MR x NR <= 8) */
#define OC 32      /* output rows per work item: weights of one item stay in L1/L2 while all row tiles pass */
#define PF_ROWS 8  /* fp32 kernels prefetch the weight rows this many rows ahead */

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* One row of K floats -> int8 q, dx[b] = amax/127, sx[b] = dx * sum(q) (round half to even, like
 * llama.cpp's AVX path). A block holding NaN or inf gets dx = sx = NaN and q = 0: the whole output row
 * becomes NaN instead of silently saturating. */
static void quantize_row(const float *x, long K, int8_t *q, float *dx, float *sx) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (long b = 0; b < K / QK; b++) {
        const float *xb = x + b * QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                                 _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
        /* inf and NaN both compare unordered/equal-to-inf; max_ps may drop a NaN, so test all lanes */
        __m256 bad = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(v0, v0, _CMP_UNORD_Q), _mm256_cmp_ps(v1, v1, _CMP_UNORD_Q)),
                                  _mm256_or_ps(_mm256_cmp_ps(v2, v2, _CMP_UNORD_Q), _mm256_cmp_ps(v3, v3, _CMP_UNORD_Q)));
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
        if (_mm256_movemask_ps(bad)) {
            for (int j = 0; j < QK; j++) q[b * QK + j] = 0;
            dx[b] = sx[b] = NAN;
            continue;
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float d = _mm_cvtss_f32(m4) / 127.0f;  /* amax / 127 */
        const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
        const int sum = hsum8i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_storeu_si256((__m256i *)(q + b * QK), _mm256_permutevar8x32_epi32(p, perm));
        dx[b] = d;
        sx[b] = d * (float)sum;
    }
}

/* The 8 f16 values at h[0..7] as floats, lanes >= n zeroed (the 16 B read stays inside the row: the
 * scale arrays are always followed by at least 16 B of the same row). */
static inline __m256 load8_f16(const uint16_t *h, long n) {
    __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    if (n >= 8) return v;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane)));
}

/* Register tile: MR rows of x against NR consecutive weight rows `w` (row_bytes apart), nb blocks each;
 * MR * NR <= 8 accumulators. Inlined with constant MR, NR. Every (x row, weight row) pair runs the same
 * operations in the same order whatever the tile shape, so results never depend on M or threads.
 * Blocks go in groups of 8: their f16 scales are converted 8 at a time and multiplied by the activation
 * scales into `scale` (read back as broadcasts), and Q4_1's offset term sum_b m_b * sx_b enters the
 * accumulator lane-wise (lane = block) once per group. */
static inline __attribute__((always_inline)) void tile_q4_1(
    const int MR, const int NR, const uint8_t *w, long row_bytes, long nb, long nbp, const int8_t *qx,
    long K, const float *dx, const float *sx, float *y, long ldy) {
    const __m256i lo = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i hi_shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    float scale[8][8] __attribute__((aligned(32)));  /* [r * NR + n][j]: d_w * d_x of block b0 + j */
    __m256 acc[8];
    for (int t = 0; t < MR * NR; t++) acc[t] = _mm256_setzero_ps();
    for (long b0 = 0; b0 < nb; b0 += 8) {
        const long nj = nb - b0 < 8 ? nb - b0 : 8;
        for (int n = 0; n < NR; n++) {
            const uint16_t *dm = (const uint16_t *)(w + n * row_bytes);  /* d[nb] then m[nb] */
            const __m256 d8 = load8_f16(dm + b0, nj), m8 = load8_f16(dm + nb + b0, nj);
            for (int r = 0; r < MR; r++) {
                _mm256_store_ps(scale[r * NR + n], _mm256_mul_ps(d8, _mm256_loadu_ps(dx + r * nbp + b0)));
                acc[r * NR + n] = _mm256_fmadd_ps(m8, _mm256_loadu_ps(sx + r * nbp + b0), acc[r * NR + n]);
            }
        }
        for (long j = 0; j < nj; j++) {
            const long b = b0 + j;
            __m256i wq[4];
            for (int n = 0; n < NR; n++) {
                const uint8_t *qs = w + n * row_bytes + 4 * nb + 16 * b;
                const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
                wq[n] = _mm256_and_si256(_mm256_srlv_epi32(raw, hi_shift), lo);  /* lo nibbles | hi nibbles */
            }
            for (int r = 0; r < MR; r++) {
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(qx + r * K + b * QK));
                for (int n = 0; n < NR; n++) {
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[n], xq), ones);
                    const __m256 sc = _mm256_broadcast_ss(&scale[r * NR + n][j]);
                    acc[r * NR + n] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), acc[r * NR + n]);
                }
            }
        }
    }
    for (int r = 0; r < MR; r++)
        for (int n = 0; n < NR; n++) y[r * ldy + n] = hsum8(acc[r * NR + n]);
}

static inline __attribute__((always_inline)) void tile_q8_0(
    const int MR, const int NR, const uint8_t *w, long row_bytes, long nb, long nbp, const int8_t *qx,
    long K, const float *dx, const float *sx, float *y, long ldy) {
    (void)sx;
    const __m256i ones = _mm256_set1_epi16(1);
    float scale[8][8] __attribute__((aligned(32)));  /* [r * NR + n][j]: d_w * d_x of block b0 + j */
    __m256 acc[8];
    for (int t = 0; t < MR * NR; t++) acc[t] = _mm256_setzero_ps();
    for (long b0 = 0; b0 < nb; b0 += 8) {
        const long nj = nb - b0 < 8 ? nb - b0 : 8;
        for (int n = 0; n < NR; n++) {
            const __m256 d8 = load8_f16((const uint16_t *)(w + n * row_bytes) + b0, nj);
            for (int r = 0; r < MR; r++)
                _mm256_store_ps(scale[r * NR + n], _mm256_mul_ps(d8, _mm256_loadu_ps(dx + r * nbp + b0)));
        }
        for (long j = 0; j < nj; j++) {
            const long b = b0 + j;
            __m256i wq[4], wabs[4];
            for (int n = 0; n < NR; n++) {
                wq[n] = _mm256_loadu_si256((const __m256i *)(w + n * row_bytes + 2 * nb + QK * b));
                wabs[n] = _mm256_sign_epi8(wq[n], wq[n]);  /* |w| as unsigned bytes (-128 -> 128) */
            }
            for (int r = 0; r < MR; r++) {
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(qx + r * K + b * QK));
                for (int n = 0; n < NR; n++) {
                    const __m256i xs = _mm256_sign_epi8(xq, wq[n]);  /* |w| * (x * sign w) == w * x */
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs[n], xs), ones);
                    const __m256 sc = _mm256_broadcast_ss(&scale[r * NR + n][j]);
                    acc[r * NR + n] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), acc[r * NR + n]);
                }
            }
        }
    }
    for (int r = 0; r < MR; r++)
        for (int n = 0; n < NR; n++) y[r * ldy + n] = hsum8(acc[r * NR + n]);
}

#define TILE(FN, MR, NR) FN(MR, NR, wr, row_bytes, nb, nbp, q, K, d, s, yo, N)
#define DISPATCH(FN)                                                                   \
    switch (mr * 8 + nr) {                                                             \
        case 1 * 8 + 4: TILE(FN, 1, 4); break;  case 2 * 8 + 4: TILE(FN, 2, 4); break;  \
        case 3 * 8 + 2: TILE(FN, 3, 2); break;  case 4 * 8 + 2: TILE(FN, 4, 2); break;  \
        case 1 * 8 + 1: TILE(FN, 1, 1); break;  case 2 * 8 + 1: TILE(FN, 2, 1); break;  \
        case 3 * 8 + 1: TILE(FN, 3, 1); break;  case 4 * 8 + 1: TILE(FN, 4, 1); break;  \
        case 5 * 8 + 1: TILE(FN, 5, 1); break;  case 6 * 8 + 1: TILE(FN, 6, 1); break;  \
        case 7 * 8 + 1: TILE(FN, 7, 1); break;  default: TILE(FN, 8, 1); break;         \
    }

/* Output rows [o0, o1) for every row of x, in row tiles of up to MR_MAX: the item's weights are read
 * from memory once, then from cache for the following row tiles. */
static void run_item(int kind, const uint8_t *w, long o0, long o1, long K, long nbp, const int8_t *qx,
                     const float *dx, const float *sx, long M, long N, float *y) {
    const long nb = K / QK;
    const long row_bytes = nb * (kind == 1 ? 20 : 34);
    for (long i0 = 0; i0 < M; i0 += MR_MAX) {
        const int mr = (int)(M - i0 < MR_MAX ? M - i0 : MR_MAX);
        const int nr_full = mr <= 2 ? 4 : mr <= 4 ? 2 : 1;  /* MR * NR <= 8 accumulators */
        const int8_t *q = qx + i0 * K;
        const float *d = dx + i0 * nbp, *s = sx + i0 * nbp;
        for (long o = o0; o < o1;) {
            const int nr = o + nr_full <= o1 ? nr_full : 1;
            const uint8_t *wr = w + o * row_bytes;
            float *yo = y + i0 * N + o;
            if (kind == 1) {
                DISPATCH(tile_q4_1)
            } else {
                DISPATCH(tile_q8_0)
            }
            o += nr;
        }
    }
}

/* y (M, N) = x (M, K; row stride ldx floats) @ W^T (+ bias). kind: 1 = Q4_1, 0 = Q8_0.
 * Returns 0, or -1 when scratch memory could not be allocated. */
int athq_qmatmul(int kind, const uint8_t *w, long N, long K, const float *x, long M, long ldx,
                 const float *bias, float *y, int nthreads) {
    const long nb = K / QK, nbp = (nb + 7) / 8 * 8, n_items = (N + OC - 1) / OC;
    if (nthreads < 1) nthreads = 1;
    if (kind != 0 && kind != 1) return -1;  /* the re-packed rows only */
    int8_t *qx = malloc((size_t)(M * K) + 32);
    float *dx = calloc((size_t)(M * nbp), sizeof(float)), *sx = calloc((size_t)(M * nbp), sizeof(float));
    if (!qx || !dx || !sx) { free(qx); free(dx); free(sx); return -1; }
    /* Few rows: quantize them here, so the parallel region has no barrier but its end. Items are handed
     * out dynamically: on a busy machine a thread that starts late just takes fewer of them. */
    if (M <= MR_MAX)
        for (long i = 0; i < M; i++) quantize_row(x + i * ldx, K, qx + i * K, dx + i * nbp, sx + i * nbp);
    #pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        if (M > MR_MAX) {
            #pragma omp for schedule(static)
            for (long i = 0; i < M; i++) quantize_row(x + i * ldx, K, qx + i * K, dx + i * nbp, sx + i * nbp);
        }
        #pragma omp for schedule(guided, 1) nowait
        for (long it = 0; it < n_items; it++) {
            const long o0 = it * OC, o1 = o0 + OC < N ? o0 + OC : N;
            run_item(kind, w, o0, o1, K, nbp, qx, dx, sx, M, N, y);
            if (bias)
                for (long i = 0; i < M; i++)
                    for (long o = o0; o < o1; o++) y[i * N + o] = y[i * N + o] + bias[o];
        }
    }
    free(qx); free(dx); free(sx);
    return 0;
}

/* ---- fp32 activations: weights dequantized in registers, fp32 FMAs against the unquantized x ----
 * Per weight block b of output o and row x:  Q8_0: d_b * P_b;  Q4_1: d_b * P_b + m_b * S_b, where
 * P_b = sum_j q_j x_j (fp32: q_j converted exactly, one mul then three FMAs over 4 vectors of 8 lanes) and
 * S_b = sum_j x_j of the block (precomputed once per row of x per call). Lanes are summed once, at the end.
 * The sequence of float operations for one (x row, output) pair is fixed, whatever the tile, M or threads. */

/* Block b's 32 quants as floats in 4 vectors: q[0..7], q[8..15], q[16..23], q[24..31]. */
static inline __attribute__((always_inline)) void unpack_q4_1(const uint8_t *qs, __m256 qf[4]) {
    const __m256i lo = _mm256_set1_epi32(0x0F);
    const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));        /* bytes 0..7 */
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8)));  /* bytes 8..15 */
    qf[0] = _mm256_cvtepi32_ps(_mm256_and_si256(a, lo));
    qf[1] = _mm256_cvtepi32_ps(_mm256_and_si256(b, lo));
    qf[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4));
    qf[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
}

static inline __attribute__((always_inline)) void unpack_q8_0(const uint8_t *qs, __m256 qf[4]) {
    for (int k = 0; k < 4; k++)
        qf[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8 * k))));
}

/* S_b = sum of x's block b (4 vectors added pairwise, then across lanes); padded with zeros to nbp. */
static void block_sums(const float *x, long K, float *s) {
    for (long b = 0; b < K / QK; b++) {
        const float *xb = x + b * QK;
        s[b] = hsum8(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
                                   _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24))));
    }
}

/* MR rows of x (ldx apart) against NR consecutive weight rows; MR * NR <= 8 accumulators. pf > 0: also
 * prefetch the same bytes of the rows pf bytes further on (the tiles to come: weights are contiguous), so
 * DRAM streams ahead of the arithmetic. */
static inline __attribute__((always_inline)) void tile_f32(
    const int Q41, const int GG, const int MR, const int NR, const uint8_t *w, long row_bytes, long nb, long nbp,
    const float *x, long ldx, const float *sx, float *y, long ldy, long pf) {
    /* GG (GGUF layout): block b at b * BB, its quants after its scales; else scales in front, then quants */
    const long BB = Q41 ? 20 : 34, qoff = GG ? (Q41 ? 4 : 2) : (Q41 ? 4 * nb : 2 * nb);
    const long qbytes = GG ? BB : Q41 ? 16 : 32;
    float dsc[4][8] __attribute__((aligned(32)));  /* [n][j]: d of block b0 + j */
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    /* the low 2 bytes of each 32-bit lane (d) to the low 8 bytes of its 128-bit half, the high 2 (m) to the top */
    const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                          0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    __m256 acc[8];
    for (int t = 0; t < MR * NR; t++) acc[t] = _mm256_setzero_ps();
    for (long b0 = 0; b0 < nb; b0 += 8) {
        const long nj = nb - b0 < 8 ? nb - b0 : 8;
        for (int n = 0; n < NR; n++) {
            const uint16_t *dm = (const uint16_t *)(w + n * row_bytes);  /* d[nb] (then m[nb] for Q4_1) */
            __m256 d8, m8 = _mm256_setzero_ps();
            if (GG) {  /* the first 4 bytes of blocks b0 .. b0 + nj - 1 (d, and m for Q4_1), lanes >= nj zero; one
                        * vector built from 8 loads (a gather, or 8 stores read back as one, were slower here) */
                const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nj), lane);
                const uint8_t *r0 = w + n * row_bytes + b0 * BB;
                int32_t v0, v1, v2, v3, v4, v5, v6, v7;
                memcpy(&v0, r0, 4); memcpy(&v1, r0 + BB * (nj > 1), 4); memcpy(&v2, r0 + 2 * BB * (nj > 2), 4);
                memcpy(&v3, r0 + 3 * BB * (nj > 3), 4); memcpy(&v4, r0 + 4 * BB * (nj > 4), 4);
                memcpy(&v5, r0 + 5 * BB * (nj > 5), 4); memcpy(&v6, r0 + 6 * BB * (nj > 6), 4);
                memcpy(&v7, r0 + 7 * BB * (nj > 7), 4);
                const __m256i g = _mm256_and_si256(_mm256_setr_epi32(v0, v1, v2, v3, v4, v5, v6, v7), mask);
                const __m256i h = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(g, pick), _MM_SHUFFLE(3, 1, 2, 0));
                d8 = _mm256_cvtph_ps(_mm256_castsi256_si128(h));  /* exact: the same floats as load8_f16 */
                if (Q41) m8 = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
            } else {
                if (pf) {
                    _mm_prefetch((const char *)(dm + b0) + pf, _MM_HINT_T0);
                    if (Q41) _mm_prefetch((const char *)(dm + nb + b0) + pf, _MM_HINT_T0);
                }
                d8 = load8_f16(dm + b0, nj);
                if (Q41) m8 = load8_f16(dm + nb + b0, nj);
            }
            _mm256_store_ps(dsc[n], d8);
            if (Q41) {
                for (int r = 0; r < MR; r++)
                    acc[r * NR + n] = _mm256_fmadd_ps(m8, _mm256_loadu_ps(sx + r * nbp + b0), acc[r * NR + n]);
            }
        }
        for (long j = 0; j < nj; j++) {
            const long b = b0 + j;
            for (int n = 0; n < NR; n++) {
                __m256 qf[4];
                const uint8_t *qs = w + n * row_bytes + qoff + qbytes * b;
                if (pf) _mm_prefetch((const char *)qs + pf, _MM_HINT_T0);  /* every line: blocks <= 32 B */
                if (pf && GG && !Q41) _mm_prefetch((const char *)qs + 31 + pf, _MM_HINT_T0);  /* 34 B blocks */
                if (Q41) unpack_q4_1(qs, qf); else unpack_q8_0(qs, qf);
                const __m256 d = _mm256_broadcast_ss(&dsc[n][j]);
                for (int r = 0; r < MR; r++) {
                    const float *xb = x + r * ldx + b * QK;
                    __m256 p = _mm256_mul_ps(qf[0], _mm256_loadu_ps(xb));
                    p = _mm256_fmadd_ps(qf[1], _mm256_loadu_ps(xb + 8), p);
                    p = _mm256_fmadd_ps(qf[2], _mm256_loadu_ps(xb + 16), p);
                    p = _mm256_fmadd_ps(qf[3], _mm256_loadu_ps(xb + 24), p);
                    acc[r * NR + n] = _mm256_fmadd_ps(d, p, acc[r * NR + n]);
                }
            }
        }
    }
    for (int r = 0; r < MR; r++)
        for (int n = 0; n < NR; n++) y[r * ldy + n] = hsum8(acc[r * NR + n]);
}

#define TILEF(Q41, GG, MR, NR) tile_f32(Q41, GG, MR, NR, wr, row_bytes, nb, nbp, xr, ldx, s, yo, ldy, pf)
#define DISPATCHF(Q41, GG)                                                                                   \
    switch (mr * 8 + nr) {                                                                                   \
        case 1 * 8 + 4: TILEF(Q41, GG, 1, 4); break;  case 2 * 8 + 4: TILEF(Q41, GG, 2, 4); break;          \
        case 3 * 8 + 2: TILEF(Q41, GG, 3, 2); break;  case 4 * 8 + 2: TILEF(Q41, GG, 4, 2); break;          \
        case 1 * 8 + 1: TILEF(Q41, GG, 1, 1); break;  case 2 * 8 + 1: TILEF(Q41, GG, 2, 1); break;          \
        case 3 * 8 + 1: TILEF(Q41, GG, 3, 1); break;  case 4 * 8 + 1: TILEF(Q41, GG, 4, 1); break;          \
        case 5 * 8 + 1: TILEF(Q41, GG, 5, 1); break;  case 6 * 8 + 1: TILEF(Q41, GG, 6, 1); break;          \
        case 7 * 8 + 1: TILEF(Q41, GG, 7, 1); break;  default: TILEF(Q41, GG, 8, 1); break;                 \
    }

static void run_item_f32(int kind, const uint8_t *w, long o0, long o1, long K, long nbp, const float *x,
                         long ldx, const float *sx, long M, float *y, long ldy) {
    const long nb = K / QK;
    const long row_bytes = nb * (kind & 1 ? 20 : 34);
    const long mr_max = K * 4 * MR_MAX <= (24 << 10) ? MR_MAX : 4;  /* a row tile of x stays in L1 (32 KiB) */
    for (long i0 = 0; i0 < M; i0 += mr_max) {
        const int mr = (int)(M - i0 < mr_max ? M - i0 : mr_max);
        const int nr_full = mr <= 2 ? 4 : mr <= 4 ? 2 : 1;
        const float *xr = x + i0 * ldx, *s = sx + i0 * nbp;
        const long pf = i0 == 0 ? PF_ROWS * row_bytes : 0;  /* later row tiles find the item in cache */
        for (long o = o0; o < o1;) {
            const int nr = o + nr_full <= o1 ? nr_full : 1;
            const uint8_t *wr = w + o * row_bytes;
            float *yo = y + i0 * ldy + o;
            switch (kind) {
                case 0: DISPATCHF(0, 0) break;
                case 1: DISPATCHF(1, 0) break;
                case 2: DISPATCHF(0, 1) break;
                default: DISPATCHF(1, 1) break;
            }
            o += nr;
        }
    }
}

/* As athq_qmatmul with fp32 activations, y's rows ldy floats apart; kind also 2 = Q8_0, 3 = Q4_1 in GGUF's own
 * layout. Returns 0, or -1 when scratch could not be allocated or the kind is unknown. */
int athq_qmatmul_f32_ld(int kind, const uint8_t *w, long N, long K, const float *x, long M, long ldx,
                        const float *bias, float *y, long ldy, int nthreads) {
    const long nb = K / QK, nbp = (nb + 7) / 8 * 8, n_items = (N + OC - 1) / OC;
    if (nthreads < 1) nthreads = 1;
    if (kind < 0 || kind > 3) return -1;
    float *sx = calloc((size_t)(M * nbp), sizeof(float));  /* Q4_1 only; zero padding is read */
    if (!sx) return -1;
    if ((kind & 1) && M <= MR_MAX)
        for (long i = 0; i < M; i++) block_sums(x + i * ldx, K, sx + i * nbp);
    #pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        if ((kind & 1) && M > MR_MAX) {
            #pragma omp for schedule(static)
            for (long i = 0; i < M; i++) block_sums(x + i * ldx, K, sx + i * nbp);
        }
        #pragma omp for schedule(guided, 1) nowait
        for (long it = 0; it < n_items; it++) {
            const long o0 = it * OC, o1 = o0 + OC < N ? o0 + OC : N;
            run_item_f32(kind, w, o0, o1, K, nbp, x, ldx, sx, M, y, ldy);
            if (bias)
                for (long i = 0; i < M; i++)
                    for (long o = o0; o < o1; o++) y[i * ldy + o] = y[i * ldy + o] + bias[o];
        }
    }
    free(sx);
    return 0;
}

int athq_qmatmul_f32(int kind, const uint8_t *w, long N, long K, const float *x, long M, long ldx,
                     const float *bias, float *y, int nthreads) {
    return athq_qmatmul_f32_ld(kind, w, N, K, x, M, ldx, bias, y, N, nthreads);
}

/* Weights that share their input (q | k | v, gate | up), each of its own kind (as athq_qmatmul_f32_ld's):
 * y[:, off_p : off_p + N_p] = x @ W_p^T with off_p the sum of the earlier N, no bias. Every part's items are one
 * parallel loop (one fork and join for the lot); each element is the same bits as athq_qmatmul_f32_ld's. At most
 * 8 parts. Returns 0, or -1 for a bad kind, too many parts or no scratch memory. */
int athq_qmatmul_f32_parts(int n, const int *kinds, const uint8_t *const *ws, const long *Ns, long K, const float *x,
                           long M, long ldx, float *y, long ldy, int nthreads) {
    if (n < 1 || n > 8) return -1;
    const long nb = K / QK, nbp = (nb + 7) / 8 * 8;
    long first[9] = {0}, off[9] = {0};  /* part p: items first[p] .. first[p + 1] - 1, columns from off[p] */
    int q41 = 0;
    for (int p = 0; p < n; p++) {
        if (kinds[p] < 0 || kinds[p] > 3) return -1;
        q41 |= kinds[p] & 1;
        first[p + 1] = first[p] + (Ns[p] + OC - 1) / OC;
        off[p + 1] = off[p] + Ns[p];
    }
    if (nthreads < 1) nthreads = 1;
    float *sx = calloc((size_t)(M * nbp), sizeof(float));
    if (!sx) return -1;
    if (q41)
        for (long i = 0; i < M; i++) block_sums(x + i * ldx, K, sx + i * nbp);
    #pragma omp parallel for schedule(guided, 1) num_threads(nthreads) if (nthreads > 1)
    for (long it = 0; it < first[n]; it++) {
        int p = 0;
        while (it >= first[p + 1]) p++;
        const long o0 = (it - first[p]) * OC, o1 = o0 + OC < Ns[p] ? o0 + OC : Ns[p];
        run_item_f32(kinds[p], ws[p], o0, o1, K, nbp, x, ldx, sx, M, y + off[p], ldy);
    }
    free(sx);
    return 0;
}

/* The int8 activations and scales of athq_qmatmul, for tests: q (M, K), dx and sx (M, K/32). */
void athq_quantize_rows(const float *x, long M, long K, long ldx, int8_t *q, float *dx, float *sx) {
    for (long i = 0; i < M; i++) quantize_row(x + i * ldx, K, q + i * K, dx + i * (K / QK), sx + i * (K / QK));
}

/* Rows `ids` (n of them, each in [0, N): the caller checks) of a weight in the row layout above as float32
 * (n, K): d * q (+ m) with d and m read from f16, the float operations of athanor/nn/dequant.py, so the result
 * is `dequantize()[ids]` bit for bit (the embedding lookup of a token table kept in these blocks). */
void athq_get_rows(int kind, const uint8_t *w, long K, const long *ids, long n, float *out) {
    const long nb = K / QK, head = kind == 1 ? 4 : 2, row_bytes = nb * (kind == 1 ? 20 : 34);
    for (long i = 0; i < n; i++) {
        const uint8_t *r = w + ids[i] * row_bytes, *qs = r + head * nb;
        float *y = out + i * K;
        for (long b = 0; b < nb; b++, y += QK) {
            uint16_t hd, hm;
            memcpy(&hd, r + 2 * b, 2);
            const float d = _cvtsh_ss(hd);
            if (kind == 1) {
                memcpy(&hm, r + 2 * nb + 2 * b, 2);
                const float m = _cvtsh_ss(hm);
                const uint8_t *q = qs + b * 16;
                for (int j = 0; j < 16; j++) {
                    y[j] = (float)(q[j] & 15) * d + m;
                    y[j + 16] = (float)(q[j] >> 4) * d + m;
                }
            } else {
                const int8_t *q = (const int8_t *)(qs + b * 32);
                for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d;
            }
        }
    }
}
