/* K-quant quantizers (Q4_K, Q5_K, Q6_K) following llama.cpp's reference method (no importance matrix):
 * per 32-weight sub-block (Q4_K/Q5_K) a weighted least-squares search over candidate scales for scale and
 * min, then the eight scales and mins quantized to 6 bits against the super-block's d and dmin; per
 * 16-weight sub-block (Q6_K) a search over 19 candidate scales weighting each error by x^2, then int8
 * scales against d. Finally every weight is re-rounded with the quantized scales. Output: GGUF blocks.
 * With an importance matrix (athk_quantize_weighted), llama.cpp's quantize_row_{q4_0,q5_0,q4_K,q5_K,q6_K}_impl:
 * each weight's error weighted by its column's mean squared activation (see the section at the end).
 * Built by athanor/models/gguf_quantize.py through cbuild.py.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __F16C__
#include <immintrin.h>
#endif

#define QK 256

static int nearest(float v) { return (int)nearbyintf(v); }  /* round half to even, as llama.cpp's nearest_int */

static uint16_t to_f16(float f) {
#ifdef __F16C__
    return _cvtss_sh(f, 0);
#else
    uint32_t x; memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    int e = (int)((x >> 23) & 0xFF) - 127 + 15;
    uint32_t m = x & 0x7FFFFF;
    if (((x >> 23) & 0xFF) == 0xFF) return (uint16_t)(sign | 0x7C00 | (m ? 0x200 : 0));
    if (e >= 31) return (uint16_t)(sign | 0x7C00);
    if (e <= 0) {  /* subnormal half: shift with round-half-even */
        if (e < -10) return (uint16_t)sign;
        m |= 0x800000;
        const int shift = 14 - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (m >> 13), rem = m & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  /* may carry into the exponent: still right */
    return (uint16_t)(sign | h);
#endif
}

static float from_f16(uint16_t h) {
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    const uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    float v = exp == 0 ? ldexpf((float)man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexpf((float)(man | 0x400), (int)exp - 25);
    return (h & 0x8000) ? -v : v;
#endif
}

/* Scale and min (returned as -min >= 0 in *neg_min) of n weights on levels 0..nmax, minimising the
 * weighted squared error over nstep + 1 candidate scales; L gets the levels. */
static float scale_min_search(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                              float rmin, float rdelta, int nstep) {
    float mn = x[0], mx = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        memset(L, 0, (size_t)n);
        *neg_min = -mn;
        return 0.0f;
    }
    float iscale = nmax / (mx - mn), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest(iscale * (x[i] - mn));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        const float diff = scale * L[i] + mn - x[i];
        best += w[i] * diff * diff;
    }
    uint8_t aux[32];
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (mx - mn);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest(iscale * (x[i] - mn));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            aux[i] = (uint8_t)l;
            sl += w[i] * l;
            sl2 += w[i] * l * l;
            sxl += w[i] * l * x[i];
        }
        const float D = sum_w * sl2 - sl * sl;
        if (D <= 0) continue;
        float s = (sum_w * sxl - sum_x * sl) / D, m = (sl2 * sum_x - sl * sxl) / D;
        if (m > 0) { m = 0; s = sxl / sl2; }
        float err = 0;
        for (int i = 0; i < n; i++) {
            const float diff = s * aux[i] + m - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best) {
            memcpy(L, aux, (size_t)n);
            best = err; scale = s; mn = m;
        }
    }
    *neg_min = -mn;
    return scale;
}

/* Symmetric scale of n weights on levels -nmax..nmax-1 (stored +nmax), error weighted by x^2. */
static float symmetric_search(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    if (amax < 1e-30f) { memset(L, 0, (size_t)n); return 0.0f; }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = sumlx / suml2, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest(iscale * x[i]);
                L[i] = (int8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Re-round every weight of a Q4_K/Q5_K super-block with its quantized scales (already in out: d, dmin,
 * scales) and pack the levels. L: scratch for 256 levels. */
static void pack_k45(const float *x, uint8_t *out, uint8_t *L, int nmax) {
    const uint8_t *sc = out + 4;
    uint16_t d16, m16;
    memcpy(&d16, out, 2);
    memcpy(&m16, out + 2, 2);
    for (int j = 0; j < 8; j++) {
        int s, m;
        if (j < 4) { s = sc[j] & 63; m = sc[j + 4] & 63; }
        else { s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4); m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4); }
        const float d = from_f16(d16) * s;
        if (!d) continue;
        const float dm = from_f16(m16) * m;
        for (int i = 0; i < 32; i++) {
            int l = nearest((x[32 * j + i] + dm) / d);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
    if (nmax == 15) {
        uint8_t *q = out + 16;
        for (int j = 0; j < QK; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        return;
    }
    uint8_t *qh = out + 16, *ql = out + 48;
    memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int j = 0; j < QK; j += 64, ql += 32, m1 <<= 2, m2 <<= 2)
        for (int l = 0; l < 32; l++) {
            int l1 = L[j + l], l2 = L[j + l + 32];
            if (l1 > 15) { l1 -= 16; qh[l] |= m1; }
            if (l2 > 15) { l2 -= 16; qh[l] |= m2; }
            ql[l] = (uint8_t)(l1 | (l2 << 4));
        }
}

/* Q4_K (nmax 15) or Q5_K (nmax 31): one 256-weight super-block -> 144 or 176 bytes. */
static void block_k45(const float *x, uint8_t *out, int nmax) {
    uint8_t L[QK], *sc = out + 4;
    float weights[32], scales[8], mins[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = nmax == 15 ? scale_min_search(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], -1.0f, 0.1f, 20)
                               : scale_min_search(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], -0.5f, 0.1f, 15);
        max_scale = scales[j] > max_scale ? scales[j] : max_scale;
        max_min = mins[j] > max_min ? mins[j] : max_min;
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f, inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        int ls = nearest(inv_scale * scales[j]), lm = nearest(inv_min * mins[j]);
        ls = ls > 63 ? 63 : ls;
        lm = lm > 63 ? 63 : lm;
        if (j < 4) {
            sc[j] = (uint8_t)ls;
            sc[j + 4] = (uint8_t)lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    const uint16_t d16 = to_f16(max_scale / 63.0f), m16 = to_f16(max_min / 63.0f);
    memcpy(out, &d16, 2);
    memcpy(out + 2, &m16, 2);
    pack_k45(x, out, L, nmax);
}

static float qx_weighted(int n, int nmax, const float *x, int8_t *L, const float *w);

/* Q6_K: one super-block -> 210 bytes: ql[128] | qh[64] | int8 scales[16] | d f16. qw: importance or NULL. */
static void block_q6k(const float *x, const float *qw, uint8_t *out) {
    int8_t L[QK], *scales_out = (int8_t *)(out + 192);
    float scales[16], max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = qw ? qx_weighted(16, 32, x + 16 * ib, L + 16 * ib, qw + 16 * ib)
                        : symmetric_search(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs) { max_abs = fabsf(scales[ib]); max_scale = scales[ib]; }
    }
    memset(out, 0, 210);
    if (max_abs < 1e-15f) return;  /* all zero: d = 0 */
    const float iscale = -128.0f / max_scale;
    const uint16_t d16 = to_f16(1 / iscale);
    memcpy(out + 208, &d16, 2);
    for (int ib = 0; ib < 16; ib++) {
        const int s = nearest(iscale * scales[ib]);
        scales_out[ib] = (int8_t)(s > 127 ? 127 : s);
    }
    for (int j = 0; j < 16; j++) {
        const float d = from_f16(d16) * scales_out[j];
        if (!d) continue;
        for (int i = 0; i < 16; i++) {
            int l = nearest(x[16 * j + i] / d);
            L[16 * j + i] = (int8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
        }
    }
    uint8_t *ql = out, *qh = out + 128;
    for (int j = 0; j < QK; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
            ql[l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
            ql[l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
            qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
}

/* n floats (a multiple of 256) -> n/256 blocks of ggml type t (12 Q4_K, 13 Q5_K, 14 Q6_K). 0, or -1. */
int athk_quantize(int t, const float *x, long n, uint8_t *out) {
    if (n % QK || t < 12 || t > 14) return -1;
    const int bytes = t == 12 ? 144 : t == 13 ? 176 : 210;
    #pragma omp parallel for schedule(static)
    for (long b = 0; b < n / QK; b++) {
        if (t == 14) block_q6k(x + b * QK, NULL, out + b * bytes);
        else block_k45(x + b * QK, out + b * bytes, t == 12 ? 15 : 31);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------
 * Importance-weighted quantizers (llama.cpp's quantize_row_*_impl with quant_weights): qw holds one importance
 * per input column (the imatrix's mean squared activation), the same for every row. Each weight's error is
 * weighted by qw[j] * sqrt(sigma2 + x[j]^2) (Q4_0, Q5_0, Q4_K, Q5_K) or by qw[j] (Q6_K).
 * ---------------------------------------------------------------------------------------------------------- */

#define GROUP_EPS 1e-15f

/* llama.cpp's make_qx_quants(rmse_type 1) with explicit weights: symmetric levels -nmax..nmax-1 (stored +nmax). */
static float qx_weighted(int n, int nmax, const float *x, int8_t *L, const float *w) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    if (amax < GROUP_EPS) { memset(L, 0, (size_t)n); return 0.0f; }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            sumlx += w[i] * x[i] * l;
            suml2 += w[i] * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest(iscale * x[i]);
                L[i] = (int8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* llama.cpp's make_qp_quants: non-negative values x on levels 0..nmax, weighted; a few rounds of level fixing. */
static float qp_weighted(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    if (max < GROUP_EPS) { memset(L, 0, (size_t)n); return 0.0f; }
    float iscale = nmax / max, scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)nearest(iscale * x[i]);
        const float diff = x[i] - scale * L[i];
        best += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * is + nmax) / max, scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest(iscale_is * x[i]);
            l = l > nmax ? nmax : l;
            const float diff = x[i] - scale_is * l;
            mse += w[i] * diff * diff;
        }
        if (mse < best) { best = mse; iscale = iscale_is; }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest(iscale * x[i]);
        l = l > nmax ? nmax : l;
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * L[i], sl2 = suml2 - w[i] * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int nl = nearest(x[i] * sl2 / slx);
                nl = nl > nmax ? nmax : nl;
                if (nl != L[i]) {
                    slx += w[i] * x[i] * nl;
                    sl2 += w[i] * nl * nl;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)nl; sumlx = slx; suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = L[i] > nmax ? (uint8_t)nmax : L[i];
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Q4_K / Q5_K super-block with importance: make_qkx3 search per 32-weight sub-block, scales and mins by qp. */
static void block_k45_w(const float *x, const float *qw, uint8_t *out, int nmax) {
    uint8_t L[QK], Ls[8], Lm[8], *sc = out + 4;
    float weights[32], sw[8], scales[8], mins[8], sum_x2 = 0;
    for (int l = 0; l < QK; l++) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / QK;
    for (int j = 0; j < 8; j++) {
        float sumw = 0;
        for (int l = 0; l < 32; l++) {
            weights[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
            sumw += weights[l];
        }
        sw[j] = sumw;
        scales[j] = scale_min_search(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], -0.9f, 0.05f, 36);
    }
    const float d_block = qp_weighted(8, 63, scales, Ls, sw), m_block = qp_weighted(8, 63, mins, Lm, sw);
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = Ls[j];
            sc[j + 4] = Lm[j];
        } else {
            sc[j + 4] = (uint8_t)((Ls[j] & 0xF) | ((Lm[j] & 0xF) << 4));
            sc[j - 4] |= (uint8_t)((Ls[j] >> 4) << 6);
            sc[j] |= (uint8_t)((Lm[j] >> 4) << 6);
        }
    }
    const uint16_t d16 = to_f16(d_block), m16 = to_f16(m_block);
    memcpy(out, &d16, 2);
    memcpy(out + 2, &m16, 2);
    pack_k45(x, out, L, nmax);
}

/* One row of Q4_0 (nmax 8, 18-byte blocks) or Q5_0 (nmax 16, 22-byte blocks) with importance, as
 * llama.cpp's quantize_row_q4_0_impl / q5_0_impl: sigma2 is the row's mean square. */
static void row_q45_0_w(const float *x, const float *qw, long K, uint8_t *out, int nmax) {
    float sum_x2 = 0, weight[32];
    int8_t L[32];
    for (long j = 0; j < K; j++) sum_x2 += x[j] * x[j];
    const float sigma2 = sum_x2 / K;
    const int bytes = nmax == 8 ? 18 : 22;
    for (long ib = 0; ib < K / 32; ib++, out += bytes) {
        const float *xb = x + 32 * ib, *wb = qw + 32 * ib;
        for (int j = 0; j < 32; j++) weight[j] = wb[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        const uint16_t d16 = to_f16(qx_weighted(32, nmax, xb, L, weight));
        memcpy(out, &d16, 2);
        uint8_t *qs = out + (nmax == 8 ? 2 : 6);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const uint8_t a = (uint8_t)L[j], b = (uint8_t)L[j + 16];
            qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= ((uint32_t)(a >> 4) & 1u) << j;
            qh |= ((uint32_t)(b >> 4) & 1u) << (j + 16);
        }
        if (nmax == 16) memcpy(out + 2, &qh, 4);
    }
}

/* rows x K floats -> blocks of ggml type t (2 Q4_0, 6 Q5_0, 12 Q4_K, 13 Q5_K, 14 Q6_K), the errors weighted by
 * qw (K importances, one per column). 0, or -1 for a bad type or width. */
int athk_quantize_weighted(int t, const float *x, long rows, long K, const float *qw, uint8_t *out) {
    const int block = t == 2 || t == 6 ? 32 : QK;
    if (K % block || !(t == 2 || t == 6 || (t >= 12 && t <= 14))) return -1;
    const long row_bytes = K / block * (t == 2 ? 18 : t == 6 ? 22 : t == 12 ? 144 : t == 13 ? 176 : 210);
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * K;
        uint8_t *o = out + r * row_bytes;
        if (t == 2 || t == 6) { row_q45_0_w(xr, qw, K, o, t == 2 ? 8 : 16); continue; }
        for (long b = 0; b < K / QK; b++) {
            if (t == 14) block_q6k(xr + b * QK, qw + b * QK, o + b * 210);
            else block_k45_w(xr + b * QK, qw + b * QK, o + b * (t == 12 ? 144 : 176), t == 12 ? 15 : 31);
        }
    }
    return 0;
}
