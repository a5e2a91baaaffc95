/* Matmuls straight from GGUF block formats: y (M, N) = x (M, K) @ W^T, W (N, K) kept in the file's bytes.
 *
 * Types: Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL (blocks of 32) against x quantized to q8_0 (per 32: fp32 scale, int8 quants);
 * Q4_K, Q5_K, Q6_K, IQ4_XS (super-blocks of 256) against x quantized to q8_K (per 256: fp32 scale, int8 quants,
 * int16 sums of every 16 quants), as llama.cpp pairs them. The inner loop is int8 x int8 dot products
 * (AVX2 `maddubs`/`madd`, or one `vpdpbusd` when compiled with AVX512-VNNI; plain C otherwise), scaled per
 * block in fp32.
 *
 * AVX2/VNNI: each weight block is decoded in registers straight from its bytes (Q5_0's 5th bits by a byte
 * shuffle + compare, Q6_K's 2-bit highs by masks and shifts, Q4_K/Q5_K's 6-bit scales by word masks, IQ4's
 * nibbles mapped through the 16-entry non-linear table by one byte shuffle) and dotted with up to MR rows of x
 * at once (4 with AVX2, 8 with AVX-512VL; prefill pays the decoding once per tile); 32-blocks use two
 * accumulators so consecutive blocks' FMAs overlap; a full tile is compiled with its row loop unrolled (accumulators
 * in registers). With VNNI the 32-blocks' signed weights meet x + 128, each int32 lane starting from -128 times
 * its weights' sum (once per weight block): one vpdpbusd per 32 weights and x row, the same integers. Plain C: each weight row is first unpacked into int8
 * quants + integer sub-block scales (an L1 sized buffer), then dotted with every row of x.
 * Layouts (from GGUF; byte offsets inside one block):
 *   Q4_0  18 B: d f16 | 16 B nibbles (lo = w0..15, hi = w16..31)           w = d (q - 8)
 *   Q4_1  20 B: d f16 | m f16 | 16 B nibbles (as Q4_0)                     w = d q + m
 *         (sum over the block of w x = d dx sum q xq + m dx sum xq: the second sum from the x quants' sums per
 *         16, as llama.cpp's q8_1 carries it)
 *   Q5_0  22 B: d f16 | qh u32 (5th bits) | 16 B nibbles                   w = d (q - 16)
 *   Q8_0  34 B: d f16 | 32 int8                                             w = d q
 *   Q4_K 144 B: d f16 | dmin f16 | 12 B packed 6-bit scales/mins | 128 B nibbles    w = d sc q - dmin m
 *   Q5_K 176 B: as Q4_K with 32 B of 5th bits before the nibbles
 *   Q6_K 210 B: 128 B low nibbles | 64 B 2-bit highs | 16 int8 scales | d f16       w = d sc (q - 32)
 *   IQ4_NL 18 B: d f16 | 16 B nibbles (lo = w0..15, hi = w16..31)          w = d T[q]
 *   IQ4_XS 136 B: d f16 | scales_h u16 | 4 B scales_l | 128 B nibbles, 16 B per 32-weight sub-block j
 *         (lo = its w0..15, hi = w16..31)   w = d (ls_j - 32) T[q]
 *         ls_j = nibble j of scales_l | (bits 2j, 2j+1 of scales_h) << 4
 *   T = llama.cpp's kvalues_iq4nl {-127, -104, ..., 113}.
 * Integer bounds: |w| <= 128, |x| <= 127, so a maddubs pair sum stays below 2^15 and a super-block's scaled
 * sum below 2^31.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

enum { T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_IQ4_NL = 20, T_IQ4_XS = 23 };

/* IQ4_NL / IQ4_XS: the 16 weight values a 4-bit index stands for (non-linear, denser near zero) */
static const int8_t IQ4_TABLE[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static float f16(const uint8_t *p) {  /* IEEE half at p (little-endian) -> float, subnormals included */
    const uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
#ifdef __F16C__
    return _cvtsh_ss(h);
#endif
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    float v;
    if (exp == 0) v = ldexpf((float)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = ldexpf((float)(man | 0x400), (int)exp - 25);
    return sign ? -v : v;
}

/* Super-block geometry: weights per block, bytes per block, weights per sub-block scale. */
static int block_weights(int t) { return (t >= T_Q4_K && t <= T_Q6_K) || t == T_IQ4_XS ? 256 : 32; }
static int block_bytes(int t) {
    switch (t) {
        case T_Q4_0: return 18; case T_Q4_1: return 20; case T_Q5_0: return 22; case T_Q8_0: return 34;
        case T_Q4_K: return 144; case T_Q5_K: return 176; case T_Q6_K: return 210;
        case T_IQ4_NL: return 18; case T_IQ4_XS: return 136;
        default: return 0;
    }
}

/* One unpacked weight row: K int8 quants, one int16 scale per 16 weights, per block d and dmin (Q4_1: its m), and
 * per 32-weight sub-block the K-quant min m (Q4_K/Q5_K only). */
typedef struct { int8_t *q; int16_t *sc; float *d, *dmin; int16_t *m; } Row;

static void k4_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) { *sc = s[j] & 63; *m = s[j + 4] & 63; }
    else { *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4); *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
}

/* IQ4_XS: the 6-bit scale of sub-block j, minus 32 */
static inline int iq4xs_scale(const uint8_t *b, int j) {
    const int sh = b[2] | (b[3] << 8);
    return (((b[4 + j / 2] >> (4 * (j & 1))) & 0xF) | (((sh >> (2 * j)) & 3) << 4)) - 32;
}

static void unpack_block(int t, const uint8_t *b, long blk, Row *r) {
    int8_t *q = r->q + blk * block_weights(t);
    int16_t *sc = r->sc + blk * block_weights(t) / 16;
    if (t == T_IQ4_NL || t == T_IQ4_XS) {
        r->d[blk] = f16(b);
        const uint8_t *qs = b + (t == T_IQ4_NL ? 2 : 8);
        for (int j = 0; j < block_weights(t) / 32; j++, qs += 16, q += 32) {
            sc[2 * j] = sc[2 * j + 1] = (int16_t)(t == T_IQ4_NL ? 1 : iq4xs_scale(b, j));
            for (int l = 0; l < 16; l++) {
                q[l] = IQ4_TABLE[qs[l] & 0xF];
                q[l + 16] = IQ4_TABLE[qs[l] >> 4];
            }
        }
        return;
    }
    if (t == T_Q4_1) {
        r->d[blk] = f16(b);
        r->dmin[blk] = f16(b + 2);
        sc[0] = sc[1] = 1;
        for (int j = 0; j < 16; j++) q[j] = (int8_t)(b[4 + j] & 0xF), q[j + 16] = (int8_t)(b[4 + j] >> 4);
        return;
    }
    if (t == T_Q4_0 || t == T_Q5_0 || t == T_Q8_0) {
        r->d[blk] = f16(b);
        sc[0] = sc[1] = 1;
        if (t == T_Q8_0) { memcpy(q, b + 2, 32); return; }
        const uint8_t *qs = b + (t == T_Q4_0 ? 2 : 6);
        uint32_t qh = 0;
        if (t == T_Q5_0) qh = (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        const int off = t == T_Q4_0 ? 8 : 16;
        for (int j = 0; j < 16; j++) {
            const int h0 = t == T_Q5_0 ? (int)((qh >> j) << 4 & 0x10) : 0;
            const int h1 = t == T_Q5_0 ? (int)((qh >> (j + 12)) & 0x10) : 0;
            q[j] = (int8_t)(((qs[j] & 0xF) | h0) - off);
            q[j + 16] = (int8_t)(((qs[j] >> 4) | h1) - off);
        }
        return;
    }
    if (t == T_Q6_K) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *s = (const int8_t *)(b + 192);
        r->d[blk] = f16(b + 208);
        for (int k = 0; k < 16; k++) sc[k] = s[k];
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, q += 128)
            for (int l = 0; l < 32; l++) {
                q[l] = (int8_t)(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                q[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        return;
    }
    /* Q4_K / Q5_K */
    r->d[blk] = f16(b);
    r->dmin[blk] = f16(b + 2);
    const uint8_t *s = b + 4, *qh = b + 16, *qs = b + (t == T_Q5_K ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        int a, m;
        k4_scale_min(s, j, &a, &m);
        sc[2 * j] = sc[2 * j + 1] = (int16_t)a;
        r->m[blk * 8 + j] = (int16_t)m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            const uint8_t byte = qs[32 * c + l];
            int lo = byte & 0xF, hi = byte >> 4;
            if (t == T_Q5_K) {
                lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            q[64 * c + l] = (int8_t)lo;
            q[64 * c + 32 + l] = (int8_t)hi;
        }
}

/* x row -> int8 quants per group of G (32 or 256): scale amax/127 (round half to even), and int16 sums
 * of every 16 quants (used by the K-quant mins). A group holding NaN/inf gets scale NaN. */
static void quantize_x(const float *x, long K, int G, int8_t *q, float *dx, int16_t *bs) {
    for (long g = 0; g < K / G; g++) {
        const float *xg = x + g * G;
        float amax = 0.0f;
        int bad = 0;
        for (int j = 0; j < G; j++) {
            const float a = fabsf(xg[j]);
            bad |= !(a <= 3.4e38f);
            amax = a > amax ? a : amax;
        }
        const float d = bad ? NAN : amax / 127.0f, id = (d != 0.0f && !bad) ? 1.0f / d : 0.0f;
        for (int j = 0; j < G; j++) q[g * G + j] = (int8_t)nearbyintf(xg[j] * id);
        dx[g] = d;
        for (int k = 0; k < G / 16; k++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += q[g * G + 16 * k + j];
            bs[g * G / 16 + k] = (int16_t)s;
        }
    }
}

#ifdef __AVX2__
/* quantize_x for one group of G (a multiple of 32), 8 lanes at a time: the same float operations (amax, amax / 127,
 * 1 / d, x * id rounded half to even), so the same bits; a group holding NaN/inf goes to the plain loop. */
static int quantize_group_avx2(const float *xg, int G, int8_t *q, float *dx, int16_t *bs) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), big = _mm256_set1_ps(3.4e38f);
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < G; j += 8) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xg + j), abs_mask);
        if (_mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ)) != 0xFF) return 0;  /* NaN or inf */
        amax = _mm256_max_ps(amax, a);
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < G; j += 32) {
        __m256i i[4];
        for (int k = 0; k < 4; k++)
            i[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xg + j + 8 * k), vid),
                                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        _mm256_storeu_si256((__m256i *)(q + j), _mm256_permutevar8x32_epi32(b, order));
        for (int h = 0; h < 2; h++) {  /* int16 sums of each 16 quants (exact in int32) */
            __m256i s = _mm256_add_epi32(i[2 * h], i[2 * h + 1]);
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
            bs[(j / 16) + h] = (int16_t)_mm_cvtsi128_si32(t);
        }
    }
    *dx = d;
    return 1;
}
#endif

/* Rows of x quantized as quantize_x does, the groups vectorized where AVX2 is, rows split over threads when the
 * batch is big enough to pay for a parallel region (prefill). */
static void quantize_rows(const float *x, long M, long ldx, long K, int G, int8_t *q, float *dx, int16_t *bs,
                          int nthreads) {
    #pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M * K >= 65536)
    for (long i = 0; i < M; i++) {
#ifdef __AVX2__
        for (long g = 0; g < K / G; g++) {
            const long at = i * K + g * G;
            if (!quantize_group_avx2(x + i * ldx + g * G, G, q + at, dx + i * (K / G) + g, bs + at / 16))
                quantize_x(x + i * ldx + g * G, G, G, q + at, dx + i * (K / G) + g, bs + at / 16);
        }
#else
        quantize_x(x + i * ldx, K, G, q + i * K, dx + i * (K / G), bs + i * K / 16);
#endif
    }
}

#ifdef __AVX2__
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#else
/* One (weight row, x row) dot: blocks of BW weights, one fp32 scale each; the K-quant min term (Q4_1: its m
 * term) apart. */
static inline float row_dot(int t, const Row *r, long K, const int8_t *qx, const float *dx, const int16_t *bs) {
    const int BW = block_weights(t);
    const long nblk = K / BW;
    float mins = 0.0f;
    float y = 0.0f;
    for (long b = 0; b < nblk; b++) {
        int32_t isum = 0;
        for (int k = 0; k < BW / 16; k++) {
            int32_t s = 0;
            for (int j = 0; j < 16; j++) s += (int32_t)r->q[b * BW + 16 * k + j] * qx[b * BW + 16 * k + j];
            isum += s * r->sc[b * BW / 16 + k];
        }
        y += r->d[b] * dx[b] * (float)isum;
    }
    if (t == T_Q4_K || t == T_Q5_K)
        for (long b = 0; b < nblk; b++) {
            int32_t s = 0;
            for (int j = 0; j < 8; j++) s += r->m[b * 8 + j] * (bs[b * 16 + 2 * j] + bs[b * 16 + 2 * j + 1]);
            mins += r->dmin[b] * dx[b] * (float)s;
        }
    if (t == T_Q4_1) {  /* m (dx sum xq) per block, added after the scaled dots */
        float plus = 0.0f;
        for (long b = 0; b < nblk; b++) plus += r->dmin[b] * (dx[b] * (float)(bs[2 * b] + bs[2 * b + 1]));
        return y + plus;
    }
    return y - mins;
}
#endif

#ifdef __AVX2__
/* ---- AVX2: dot products read straight from the block bytes (no unpacked row), MR rows of x per pass ---- */
/* x rows sharing one decode of a weight block (prefill); a tile of fewer rows at the end. 8 where AVX-512VL gives
 * 32 vector registers (two accumulators per row fit), 4 with AVX2's 16. A row's own operations are the same. */
#if defined(__AVX512VL__)
#define MR 8
#else
#define MR 4
#endif

/* 32 bytes: the 16 nibble bytes at p, low nibbles first (elements 0..15), then the high ones (16..31). */
static inline __m256i nibbles32(const uint8_t *p) {
    const __m128i v = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}

/* 32 bytes, byte e = 0xFF when bit e of the little-endian u32 at p is set, else 0. */
static inline __m256i bits32(const uint8_t *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i probe = _mm256_set1_epi64x((long long)0x7FBFDFEFF7FBFDFEULL);  /* all bits but bit e%8 */
    return _mm256_cmpeq_epi8(_mm256_or_si256(spread, probe), _mm256_set1_epi32(-1));
}

/* int32 lanes: lane k = sum of u*s over bytes 4k..4k+3, u unsigned, s signed, |u s| pairs below 2^15 */
static inline __m256i dot_us8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);  /* one instruction, same integers */
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* the same for w and x both signed int8: |w| * (x sign(w)) */
static inline __m256i dot_i8(__m256i w, __m256i x) {
    return dot_us8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

/* IQ4 nibbles -> table values: one in-lane byte shuffle (indices 0..15, table in both halves) */
static inline __m256i iq4_values(const uint8_t *p) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)IQ4_TABLE)), nibbles32(p));
}

/* int32 lanes acc + pairwise p * s (int16): one vpdpwssd with AVX512-VNNI, madd + add otherwise; same integers */
static inline __m256i madd_acc(__m256i acc, __m256i p, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpwssd_epi32(acc, p, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
#endif
}

/* The 32 signed weights of block b of a 32-type row (Q4_0 q-8, Q4_1 q (0..15), Q5_0 q-16, Q8_0 q, IQ4_NL T[q]) and
 * its scale. */
static inline __m256i block32(int t, const uint8_t *b, float *d) {
    *d = f16(b);
    if (t == T_Q8_0) return _mm256_loadu_si256((const __m256i *)(b + 2));
    if (t == T_Q4_1) return nibbles32(b + 4);
    if (t == T_IQ4_NL) return iq4_values(b + 2);
    if (t == T_Q4_0) return _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8));
    /* Q5_0: q | 0xF0 where the 5th bit is clear is q - 16 as int8, q where it is set is (q + 16) - 16 */
    return _mm256_or_si256(nibbles32(b + 6), _mm256_andnot_si256(bits32(b + 2), _mm256_set1_epi8((char)0xF0)));
}

#define INLINE static inline __attribute__((always_inline))
/* the loops over a tile's x rows: unrolled, so the full tile keeps its accumulators in registers */
#define UNROLL_ROWS _Pragma("GCC unroll 8")

/* Activations as the tiles read them, pointers at a tile's first row: int8 quants, scales, int16 sums per 16; with
 * AVX512-VNNI the 32-blocks' quants + 128 as bytes (the unsigned operand of vpdpbusd; NULL for blocks of 256). Blocks of 256: row-major (rows K, K / 256, K / 16
 * apart). Blocks of 32: tile-major, each MR-row tile's block b as MR consecutive 32-quant pieces (and MR scales, MR
 * lanes of 8 sums), so a tile is read through one pointer each; a tile starts where its first row would. */
typedef struct { int8_t *q; float *d; int16_t *bs; uint8_t *xu; long ts; float *sx; } XQ;
/* sx (Q4_1, blocks of 32 only; else NULL): per row and block, dx * (the block's sum of quants), laid out as the
 * scales d (tile-major) */

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define VNNI_TILES 1
#endif

/* Block b of a 32-type row (block32's signed weights) and its scale; with VNNI also *wc = -128 (sum of each lane's
 * four weights), the lanes' starting value in dot32 (once per weight block, for the whole tile). */
INLINE __m256i wblock32(const int t, const int mr, const uint8_t *b, float *d, __m256i *wc) {
    const __m256i w = block32(t, b, d);
    *wc = _mm256_setzero_si256();
#ifdef VNNI_TILES
    if (mr > 1)
        *wc = _mm256_sub_epi32(*wc, _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), w));
#else
    (void)mr;
#endif
    return w;
}

/* int32 lanes: lane k = sum over the 4 weights 4k..4k+3 of block b of (signed weight) * (x row r's quant), the same
 * integers whatever the path. VNNI: one vpdpbusd of x + 128 (unsigned) against the signed weights, the lanes starting
 * from wc: w x = w (x + 128) - 128 w. Otherwise |w| (x sign(w)). */
INLINE __m256i dot32(const int t, const int mr, __m256i wv, __m256i wc, const XQ *X, int r, long b) {
    const long at = b * X->ts + r;  /* tile-major: the tile's rows of block b side by side */
    if (t == T_Q4_1 && mr == 1)  /* unsigned weights: straight u8 x s8 (one vpdpbusd with VNNI), the same integers */
        return dot_us8(wv, _mm256_loadu_si256((const __m256i *)(X->q + at * 32)));
#ifdef VNNI_TILES
    if (mr > 1) return _mm256_dpbusd_epi32(wc, _mm256_loadu_si256((const __m256i *)(X->xu + at * 32)), wv);
#else
    (void)mr;
#endif
    (void)wc;
    return dot_i8(wv, _mm256_loadu_si256((const __m256i *)(X->q + at * 32)));
}

/* The scales d * dx of block b for the tile's rows: with 8-row tiles one vmulps for all of them, each lane then
 * broadcast from memory (a load, no shuffle); the same products as one by one. */
#if MR == 8
#define BLOCK_SCALES(sc, d, b) \
    if (mr > 1) _mm256_storeu_ps(sc, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_loadu_ps(dx + (b) * X->ts)))
#define ROW_SCALE(sc, d, b, r) (mr > 1 ? _mm256_broadcast_ss(sc + (r)) : _mm256_set1_ps((d) * dx[(b) * X->ts + (r)]))
#else
#define BLOCK_SCALES(sc, d, b) (void)sc
#define ROW_SCALE(sc, d, b, r) _mm256_set1_ps((d) * dx[(b) * X->ts + (r)])
#endif

/* Two accumulators per x row (even and odd blocks) so consecutive blocks' FMAs do not wait on each other. Q4_1 adds
 * m * sx per block and row in block order, a multiply then an add (a full 8-row tile: one vector for its 8 rows, the
 * same roundings), so a row's bits do not depend on the tile. */
#define Q41_PLUS(b) \
    if (t == T_Q4_1) { \
        const float m_ = f16(w + (b) * BB + 2); \
        if (mr == 8)  /* a full 8-row tile: the 8 rows' products and sums in one vector, the same roundings */ \
            plus8 = _mm256_add_ps(plus8, _mm256_mul_ps(_mm256_set1_ps(m_), _mm256_loadu_ps(X->sx + (b) * X->ts))); \
        else { \
            UNROLL_ROWS \
            for (int r = 0; r < mr; r++) plus[r] += m_ * X->sx[(b) * X->ts + r]; \
        } \
    }
INLINE void tile32(const int t, const uint8_t *w, long nblk, const XQ *X, long K, const int mr, float *out) {
    const int BB = block_bytes(t);
    const float *dx = X->d;
    __m256 acc0[MR], acc1[MR], plus8 = _mm256_setzero_ps();
    float sc0[8], sc1[8], plus[8];
    (void)K;
    UNROLL_ROWS
    for (int r = 0; r < mr; r++) acc0[r] = acc1[r] = _mm256_setzero_ps(), plus[r] = 0.0f;
    long b = 0;
    for (; b + 2 <= nblk; b += 2) {
        float d0, d1;
        __m256i c0, c1;
        Q41_PLUS(b)
        Q41_PLUS(b + 1)
        const __m256i w0 = wblock32(t, mr, w + b * BB, &d0, &c0), w1 = wblock32(t, mr, w + (b + 1) * BB, &d1, &c1);
        BLOCK_SCALES(sc0, d0, b);
        BLOCK_SCALES(sc1, d1, b + 1);
        UNROLL_ROWS
        for (int r = 0; r < mr; r++) {
            const __m256i p0 = dot32(t, mr, w0, c0, X, r, b), p1 = dot32(t, mr, w1, c1, X, r, b + 1);
            acc0[r] = _mm256_fmadd_ps(ROW_SCALE(sc0, d0, b, r), _mm256_cvtepi32_ps(p0), acc0[r]);
            acc1[r] = _mm256_fmadd_ps(ROW_SCALE(sc1, d1, b + 1, r), _mm256_cvtepi32_ps(p1), acc1[r]);
        }
    }
    if (b < nblk) {
        float d0;
        __m256i c0;
        Q41_PLUS(b)
        const __m256i w0 = wblock32(t, mr, w + b * BB, &d0, &c0);
        BLOCK_SCALES(sc0, d0, b);
        UNROLL_ROWS
        for (int r = 0; r < mr; r++) {
            const __m256i p0 = dot32(t, mr, w0, c0, X, r, b);
            acc0[r] = _mm256_fmadd_ps(ROW_SCALE(sc0, d0, b, r), _mm256_cvtepi32_ps(p0), acc0[r]);
        }
    }
    if (t == T_Q4_1 && mr == 8) _mm256_storeu_ps(plus, plus8);
    UNROLL_ROWS
    for (int r = 0; r < mr; r++) out[r] = t == T_Q4_1 ? hsum8(_mm256_add_ps(acc0[r], acc1[r])) + plus[r]
                                                      : hsum8(_mm256_add_ps(acc0[r], acc1[r]));
}

/* Q4_K / Q5_K: 8 scales then 8 mins (6 bits each) out of the 12 packed bytes, as bytes of u[0..3]. */
static inline void k4_scales(const uint8_t *s, uint32_t u[4]) {
    memcpy(u, s, 12);
    u[3] = ((u[2] >> 4) & 0x0F0F0F0F) | (((u[1] >> 6) & 0x03030303) << 4);
    const uint32_t mins_lo = u[1] & 0x3F3F3F3F;
    u[1] = (u[2] & 0x0F0F0F0F) | (((u[0] >> 6) & 0x03030303) << 4);
    u[2] = mins_lo;
    u[0] &= 0x3F3F3F3F;
}

/* K-quant super-blocks: sum over 256 of sc(w) * q(w) * x as int32 (each 32-chunk decoded once for the tile),
 * then d * dx times it; Q4_K/Q5_K subtract dmin * dx * sum_j m_j (x sums of sub-block j), Q6_K's -32 offset
 * is folded in as 32 * sum(x) per 16. IQ4_XS: signed table values, |w| * (x sign(w)) as for the 32-blocks, times
 * its sub-block scale (ls - 32) per 32. */
INLINE void tilek(const int t, const uint8_t *w, long nblk, const XQ *X, long K, const int mr, float *out) {
    const int BB = block_bytes(t);
    const int8_t *qx = X->q;
    const float *dx = X->d;
    const int16_t *bs = X->bs;
    __m256 acc[MR];
    float mins[MR];
    UNROLL_ROWS
    for (int r = 0; r < mr; r++) acc[r] = _mm256_setzero_ps(), mins[r] = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (long b = 0; b < nblk; b++) {
        const uint8_t *blk = w + b * BB;
        __m256i isum[MR];
        UNROLL_ROWS
        for (int r = 0; r < mr; r++) isum[r] = _mm256_setzero_si256();
        float d;
        if (t == T_IQ4_XS) {
            d = f16(blk);
            for (int j = 0; j < 8; j++) {
                const __m256i wv = iq4_values(blk + 8 + 16 * j), aw = _mm256_sign_epi8(wv, wv);
                const __m256i s16 = _mm256_set1_epi16((short)iq4xs_scale(blk, j));
                UNROLL_ROWS
                for (int r = 0; r < mr; r++) {
                    const __m256i xv = _mm256_loadu_si256((const __m256i *)(qx + r * K + b * 256 + 32 * j));
                    isum[r] = madd_acc(isum[r], _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv)), s16);
                }
            }
        } else if (t == T_Q6_K) {
            d = f16(blk + 208);
            const int8_t *sc = (const int8_t *)(blk + 192);
            for (int half = 0; half < 2; half++) {
                const uint8_t *ql = blk + 64 * half, *qh = blk + 128 + 32 * half;
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)ql), l2 = _mm256_loadu_si256((const __m256i *)(ql + 32));
                const __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(3)), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l2, m4), _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(12)), 2));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_and_si256(hb, _mm256_set1_epi8(48)));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l2, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(hb, 2), _mm256_set1_epi8(48)));
                for (int j = 0; j < 4; j++) {
                    const int k = half * 8 + 2 * j;  /* scale of the first 16 of these 32 */
                    const __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[k + 1]), _mm_set1_epi16(sc[k]));
                    UNROLL_ROWS
                    for (int r = 0; r < mr; r++) {
                        const __m256i xv = _mm256_loadu_si256((const __m256i *)(qx + r * K + b * 256 + half * 128 + 32 * j));
                        const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[j], xv),
                                                           _mm256_maddubs_epi16(_mm256_set1_epi8(32), xv));
                        isum[r] = madd_acc(isum[r], p, s16);
                    }
                }
            }
        } else {
            d = f16(blk);
            const float dmin = f16(blk + 2);
            uint32_t u[4];
            k4_scales(blk + 4, u);
            const uint8_t *sc = (const uint8_t *)u, *mn = sc + 8;
            const uint8_t *qh = blk + 16, *qs = blk + (t == T_Q5_K ? 48 : 16);
            const __m256i hb = t == T_Q5_K ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                const __m256i bytes = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(bytes, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), m4);
                if (t == T_Q5_K) {
                    const __m256i one = _mm256_set1_epi8(1);
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
                }
                const __m256i slo = _mm256_set1_epi16(sc[2 * c]), shi = _mm256_set1_epi16(sc[2 * c + 1]);
                UNROLL_ROWS
                for (int r = 0; r < mr; r++) {
                    const int8_t *xb = qx + r * K + b * 256 + 64 * c;
                    const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)xb));
                    const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xb + 32)));
                    isum[r] = madd_acc(madd_acc(isum[r], plo, slo), phi, shi);
                }
            }
            /* sum_j m_j (x sums of sub-block j): int16 pairs times m_j twice over, one madd, the 8 lanes added */
            const __m256i mn16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)mn),
                                                                     _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
            if (mr == 1) {  /* decode: the 8 products in scalar registers (the same integer) */
                const int16_t *xs = bs + b * 16;
                int32_t s = 0;
                for (int j = 0; j < 8; j++) s += mn[j] * (xs[2 * j] + xs[2 * j + 1]);
                mins[0] += dmin * dx[b] * (float)s;
            } else
            UNROLL_ROWS
            for (int r = 0; r < mr; r++) {
                const __m256i pr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(bs + r * (K / 16) + b * 16)), mn16);
                __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(pr), _mm256_extracti128_si256(pr, 1));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
                mins[r] += dmin * dx[r * nblk + b] * (float)_mm_cvtsi128_si32(s4);
            }
        }
        UNROLL_ROWS
        for (int r = 0; r < mr; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx[r * nblk + b]), _mm256_cvtepi32_ps(isum[r]), acc[r]);
    }
    UNROLL_ROWS
    for (int r = 0; r < mr; r++) out[r] = hsum8(acc[r]) - mins[r];
}
/* One weight row against mr <= MR rows of x; each type, the full tile (accumulators in registers, the row loop
 * unrolled) and the one-row case compiled on their own. */
#define TILE(T, FN) case T: \
    if (mr == MR) FN(T, w, nblk, X, K, MR, v); else if (mr == 1) FN(T, w, nblk, X, K, 1, v); \
    else FN(T, w, nblk, X, K, mr, v); \
    break
__attribute__((noinline)) static void row_tile(int t, const uint8_t *w, long nblk, const XQ *X, long K, int mr, float *v) {
    switch (t) {
        TILE(T_Q4_0, tile32);
        TILE(T_Q4_1, tile32);
        TILE(T_Q5_0, tile32);
        TILE(T_Q8_0, tile32);
        TILE(T_Q4_K, tilek);
        TILE(T_Q5_K, tilek);
        TILE(T_Q6_K, tilek);
        TILE(T_IQ4_NL, tile32);
        TILE(T_IQ4_XS, tilek);
        default: break;
    }
}

/* X's rows from i0 on */
static inline XQ xq_rows(const XQ *X, long i0, long K, int G) {
    XQ r = {X->q + i0 * K, X->d + i0 * (K / G), X->bs + i0 * (K / 16), X->xu ? X->xu + i0 * K : NULL, X->ts,
            X->sx ? X->sx + i0 * (K / G) : NULL};
    return r;
}
#endif

/* x (M, K) -> int8 quants, one scale per G, int16 sums per 16: what the matmuls dot with (tests compare it with
 * the formula). Returns 0, or -1 when K is not a multiple of G. */
int athg_quantize_rows(const float *x, long M, long ldx, long K, int G, int8_t *q, float *dx, int16_t *bs,
                       int nthreads) {
    if ((G != 32 && G != 256) || K % G) return -1;
    quantize_rows(x, M, ldx, K, G, q, dx, bs, nthreads < 1 ? 1 : nthreads);
    return 0;
}

#ifdef __AVX2__
/* X = x quantized per G (G = 32: re-laid tile-major), plus for G = 32 what the types whose bit (1 << ggml type) is in
 * `need` read besides: Q4_1 the scaled block sums sx; with VNNI, x + 128 as bytes for every 32-type. Returns 0, or -1
 * when memory runs out (X is then still safe to xq_free). */
static int xq_make(XQ *X, const float *x, long M, long ldx, long K, int G, unsigned need, int nthreads) {
    memset(X, 0, sizeof *X);
    X->q = malloc((size_t)(M * K));
    X->d = malloc(sizeof(float) * (size_t)(M * K / G));
    X->bs = malloc(sizeof(int16_t) * (size_t)(M * K / 16));
    if (!X->q || !X->d || !X->bs) return -1;
    quantize_rows(x, M, ldx, K, G, X->q, X->d, X->bs, nthreads);
    if (G != 32) return 0;
    if (need & (1u << T_Q4_1)) {  /* before the scales move tile-major */
        if (!(X->sx = malloc(sizeof(float) * (size_t)(M * K / 32)))) return -1;
        for (long j = 0; j < M * K / 32; j++) X->sx[j] = X->d[j] * (float)(X->bs[2 * j] + X->bs[2 * j + 1]);
    }
    /* tiles of ts rows: MR, or all of M when that is less (a decode step's row stays as it is) */
    const long nblk = K / 32, ts = M < MR ? M : MR, Mp = (M + ts - 1) / ts * ts;  /* padded to whole tiles */
    X->ts = ts;
    if (M == 1) return 0;  /* one row: its tile-major layout is the row as it is; dot32 reads its signed quants */
    int8_t *qt = calloc((size_t)(Mp * K), 1);
    float *dt = calloc((size_t)(Mp * nblk + 8), sizeof(float));  /* + 8: a tile's scales are read 8 at a time */
    float *st = X->sx ? calloc((size_t)(Mp * nblk + 8), sizeof(float)) : NULL;
    if (!qt || !dt || (X->sx && !st)) { free(qt); free(dt); free(st); return -1; }
    for (long i = 0; i < M; i++)
        for (long b = 0; b < nblk; b++) {
            const long at = (i / ts * nblk + b) * ts + i % ts;
            memcpy(qt + at * 32, X->q + i * K + b * 32, 32);
            dt[at] = X->d[i * nblk + b];
            if (st) st[at] = X->sx[i * nblk + b];
        }
    free(X->q);
    free(X->d);
    free(X->sx);
    X->q = qt;
    X->d = dt;
    X->sx = st;
#ifdef VNNI_TILES
    if (!(X->xu = malloc((size_t)(Mp * K)))) return -1;
    uint8_t *xu = X->xu;
    const int8_t *q = X->q;
    #pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M * K >= 65536)
    for (long j = 0; j < M * nblk; j++) {  /* each 32 quants of a real row */
        const long i = j / nblk, b = j % nblk, at = (i / ts * nblk + b) * ts + i % ts;
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(q + 32 * at));
        _mm256_storeu_si256((__m256i *)(xu + 32 * at), _mm256_xor_si256(xv, _mm256_set1_epi8((char)0x80)));
    }
#endif
    return 0;
}

static void xq_free(XQ *X) { free(X->q); free(X->d); free(X->bs); free(X->xu); free(X->sx); }

/* y[:, off_p : off_p + N_p] = x @ W_p^T (+ bias when n == 1), off_p the sum of the earlier N: x quantized once per
 * block size and every output row of every part one item of a single parallel loop. */
static int mm_parts(int n, const int *types, const uint8_t *const *ws, const long *Ns, long K, const float *x, long M,
                    long ldx, const float *bias, float *y, long ldy, int nthreads) {
    long start[9] = {0};
    unsigned need[2] = {0, 0};  /* blocks of 32, of 256 */
    for (int p = 0; p < n; p++) {
        const int BW = block_weights(types[p]);
        if (!block_bytes(types[p]) || K % BW) return -1;
        need[BW == 256] |= 1u << types[p];
        start[p + 1] = start[p] + Ns[p];
    }
    if (nthreads < 1) nthreads = 1;
    XQ X[2];
    memset(X, 0, sizeof X);
    int failed = 0;
    for (int g = 0; g < 2; g++)
        if (need[g]) failed |= xq_make(&X[g], x, M, ldx, K, g ? 256 : 32, need[g], nthreads) != 0;
    long nb[8], rb[8];  /* per part: blocks per row, bytes per row */
    for (int p = 0; p < n; p++) nb[p] = K / block_weights(types[p]), rb[p] = nb[p] * block_bytes(types[p]);
    if (M <= MR) {  /* a decode step (one tile): one item per output row, nothing else per row */
        #pragma omp parallel for schedule(guided, 16) num_threads(nthreads) if (nthreads > 1 && !failed)
        for (long o = 0; o < start[n]; o++) {
            if (failed) continue;
            int p = 0;
            while (o >= start[p + 1]) p++;
            const int t = types[p];
            float v[MR];
            row_tile(t, ws[p] + (o - start[p]) * rb[p], nb[p], &X[block_weights(t) == 256], K, (int)M, v);
            for (long i = 0; i < M; i++) y[i * ldy + o] = bias ? v[i] + bias[o] : v[i];
        }
        xq_free(&X[0]);
        xq_free(&X[1]);
        return failed ? -2 : 0;
    }
    /* items: runs of R_p output rows of part p. A prefill (more than one tile of x) takes ~16 KiB of weight rows per
     * item and runs every x tile past them, so both stay in L1 (row after row, each sweep of x came from L2); a
     * decode step one row per item. Each output is the same whichever item or thread computes it. */
    long bstart[9] = {0}, R[8];
    for (int p = 0; p < n; p++) {
        const long row_bytes = K / block_weights(types[p]) * block_bytes(types[p]), fit = 16384 / row_bytes;
        R[p] = M <= MR ? 1 : fit < 4 ? 4 : fit > 64 ? 64 : fit;
        bstart[p + 1] = bstart[p] + (Ns[p] + R[p] - 1) / R[p];
    }
    const int chunk = M <= MR ? 16 : 1;
    #pragma omp parallel for schedule(guided, chunk) num_threads(nthreads) if (nthreads > 1 && !failed)
    for (long it = 0; it < bstart[n]; it++) {
        if (failed) continue;
        int p = 0;
        while (it >= bstart[p + 1]) p++;
        const int t = types[p], g = block_weights(t) == 256;
        const long nblk = K / block_weights(t), row_bytes = nblk * block_bytes(t);
        const long r0 = (it - bstart[p]) * R[p], r1 = r0 + R[p] < Ns[p] ? r0 + R[p] : Ns[p];
        for (long i0 = 0; i0 < M; i0 += MR) {
            const int mr = M - i0 < MR ? (int)(M - i0) : MR;
            const XQ rows = xq_rows(&X[g], i0, K, g ? 256 : 32);
            float v[64][MR];  /* the run's outputs, written out row by row of y below */
            for (long r = r0; r < r1; r++) row_tile(t, ws[p] + r * row_bytes, nblk, &rows, K, mr, v[r - r0]);
            for (int i = 0; i < mr; i++) {
                float *yr = y + (i0 + i) * ldy + start[p];
                for (long r = r0; r < r1; r++) yr[r] = bias ? v[r - r0][i] + bias[start[p] + r] : v[r - r0][i];
            }
        }
    }
    xq_free(&X[0]);
    xq_free(&X[1]);
    return failed ? -2 : 0;
}
#endif

/* y (M, N; rows ldy floats apart) = x (M, K; rows ldx floats apart) @ W^T (+ bias); W: N rows of K/BW blocks
 * of ggml type t. Returns 0; -1 for an unknown type or K not a multiple of the block; -2 when memory runs out. */
int athg_matmul_ld(int t, const uint8_t *w, long N, long K, const float *x, long M, long ldx, const float *bias,
                   float *y, long ldy, int nthreads) {
#ifdef __AVX2__
    return mm_parts(1, &t, &w, &N, K, x, M, ldx, bias, y, ldy, nthreads);
#else
    const int BW = block_weights(t), BB = block_bytes(t);
    if (!BB || K % BW) return -1;
    const long nblk = K / BW, row_bytes = nblk * BB;
    int8_t *qx = malloc((size_t)(M * K));
    float *dx = malloc(sizeof(float) * (size_t)(M * nblk));
    int16_t *bs = malloc(sizeof(int16_t) * (size_t)(M * K / 16));
    int failed = !qx || !dx || !bs;
    if (nthreads < 1) nthreads = 1;
    if (!failed) quantize_rows(x, M, ldx, K, BW, qx, dx, bs, nthreads);
    #pragma omp parallel num_threads(nthreads) if (nthreads > 1 && !failed)
    {
        Row r = {malloc((size_t)K + 32), malloc(sizeof(int16_t) * (size_t)(K / 16 + 2)), malloc(sizeof(float) * (size_t)nblk),
                 malloc(sizeof(float) * (size_t)nblk), malloc(sizeof(int16_t) * (size_t)(nblk * 8))};
        if (!r.q || !r.sc || !r.d || !r.dmin || !r.m) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic, 8)
        for (long o = 0; o < N; o++) {
            if (failed) continue;
            for (long b = 0; b < nblk; b++) unpack_block(t, w + o * row_bytes + b * BB, b, &r);
            for (long i = 0; i < M; i++) {
                const float v = row_dot(t, &r, K, qx + i * K, dx + i * nblk, bs + i * K / 16);
                y[i * ldy + o] = bias ? v + bias[o] : v;
            }
        }
        free(r.q); free(r.sc); free(r.d); free(r.dmin); free(r.m);
    }
    free(qx); free(dx); free(bs);
    return failed ? -2 : 0;
#endif
}

int athg_matmul(int t, const uint8_t *w, long N, long K, const float *x, long M, long ldx, const float *bias,
                float *y, int nthreads) {
    return athg_matmul_ld(t, w, N, K, x, M, ldx, bias, y, N, nthreads);
}

/* Weights that share their input (q | k | v, gate | up; each part its own type): y[:, off_p : off_p + N_p] =
 * x @ W_p^T with off_p the sum of the earlier N. x is quantized once per block size and every output row of every
 * part is one item of a single parallel loop; each element is the same as athg_matmul_ld's, bit for bit.
 * At most 8 parts. Returns as athg_matmul_ld. */
int athg_matmul_parts(int n, const int *types, const uint8_t *const *ws, const long *Ns, long K, const float *x,
                      long M, long ldx, float *y, long ldy, int nthreads) {
    if (n < 1 || n > 8) return -1;
#ifdef __AVX2__
    return mm_parts(n, types, ws, Ns, K, x, M, ldx, NULL, y, ldy, nthreads);
#else
    int status = 0;
    for (int p = 0, off = 0; p < n; off += (int)Ns[p], p++)
        status |= athg_matmul_ld(types[p], ws[p], Ns[p], K, x, M, ldx, NULL, y + off, ldy, nthreads);
    return status;
#endif
}

/* Rows `ids` of a block-quantized (V, K) table dequantized to fp32 (the embedding lookup). */
int athg_get_rows(int t, const uint8_t *w, long K, const long *ids, long n, float *out) {
    const int BW = block_weights(t), BB = block_bytes(t);
    if (!BB || K % BW) return -1;
    const long nblk = K / BW;
    Row r = {malloc((size_t)K + 32), malloc(sizeof(int16_t) * (size_t)(K / 16 + 2)), malloc(sizeof(float) * (size_t)nblk),
             malloc(sizeof(float) * (size_t)nblk), malloc(sizeof(int16_t) * (size_t)(nblk * 8))};
    int rc = (!r.q || !r.sc || !r.d || !r.dmin || !r.m) ? -2 : 0;
    for (long i = 0; i < n && !rc; i++) {
        const uint8_t *row = w + ids[i] * nblk * BB;
        for (long b = 0; b < nblk; b++) unpack_block(t, row + b * BB, b, &r);
        for (long b = 0; b < nblk; b++)
            for (int j = 0; j < BW; j++) {
                /* the reference's order: (d * sc) * q, then + (-(dmin * m)) */
                float v = r.d[b] * (float)r.sc[(b * BW + j) / 16] * (float)r.q[b * BW + j];
                if (t == T_Q4_K || t == T_Q5_K) v -= r.dmin[b] * (float)r.m[b * 8 + j / 32];
                if (t == T_Q4_1) v = (float)r.q[b * BW + j] * r.d[b] + r.dmin[b];  /* the reference's d q + m */
                out[i * K + b * BW + j] = v;
            }
    }
    free(r.q); free(r.sc); free(r.d); free(r.dmin); free(r.m);
    return rc;
}
