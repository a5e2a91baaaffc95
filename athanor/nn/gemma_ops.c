/* The whole Gemma 3 decoder stack of a decode step or a prefill chunk in one call, fp32, every matmul in GGUF blocks.
 *
 * Python side and rationale: athanor/nn/gemma_ops.py. Matmuls go through nn/gguf_kernels.c's
 * athg_matmul_parts (passed in as a function pointer: one library per source file); everything between them is
 * here: (1 + w) RMSNorms (the weights arrive as 1 + w), per-head q/k RMSNorm, RoPE with each layer's own table
 * (sliding layers use the local base), the paged KV cache write, attention (sliding-window layers see the last
 * `window` positions), GELU-tanh gate, and the post-attention / pre- and post-feedforward norms.
 *
 * Row independence: every token's row (and every (sequence, query head) of attention) is computed by one
 * thread with the same operations whatever the batch and the thread count, so a request's logits never depend
 * on what it is batched with. Compiled with -ffp-contract=off: FMAs are written where meant.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*athg_mm_fn)(int n, const int *types, const uint8_t *const *ws, const long *Ns, long K,
                          const float *x, long M, long ldx, float *y, long ldy, int nthreads);  /* athg_matmul_parts */

typedef struct {  /* GGUF weights (out_p, in) stacked along the output, each in its own type */
    int n;
    int types[4];
    const uint8_t *blocks[4];
    long out[4];
} gm_linear;

typedef struct {
    gm_linear qkv, o, gate_up, down;
    const float *in_norm, *q_norm, *k_norm, *post_attn_norm, *pre_ffn_norm, *post_ffn_norm;  /* 1 + w each */
    const float *cos, *sin;  /* this layer's RoPE tables (P, D), sin sign-folded [-sin | +sin] */
    long window;             /* sliding window; 0: full attention */
    float *cache;            /* (2, NB, BS, KVH, D) */
} gm_layer;

static int linear(athg_mm_fn mm, const gm_linear *l, const float *x, long M, long K, float *y, long N, int nt) {
    return mm(l->n, l->types, l->blocks, l->out, K, x, M, K, y, N, nt);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* y = w * x / sqrt(mean(x^2) + eps) for one row of n (n % 8 == 0; y may be x); sum of squares in double. */
static void rmsnorm(const float *x, const float *w, float eps, float *y, long n) {
    __m256d acc = _mm256_setzero_pd();
    for (long j = 0; j < n; j += 4) {
        const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + j));
        acc = _mm256_fmadd_pd(v, v, acc);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, acc);
    const float var = (float)(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) / (double)n);
    const __m256 inv = _mm256_set1_ps(1.0f / sqrtf(var + eps));
    for (long j = 0; j < n; j += 8)
        _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), _mm256_mul_ps(_mm256_loadu_ps(x + j), inv)));
}

/* e^x for 8 lanes (Cephes polynomial, ~2 ulp), inputs clamped to [-87, 88]. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* out (I) = gelu_tanh(gate) * up, gu = [gate | up]; gelu_tanh(g) = g (1 + tanh u) / 2 = g / (1 + e^(-2u)),
 * u = sqrt(2/pi) (g + 0.044715 g^3). */
static void gelu_mul(const float *gu, float *out, long I) {
    const __m256 c = _mm256_set1_ps(-2.0f * 0.7978845608028654f), k = _mm256_set1_ps(0.044715f), one = _mm256_set1_ps(1.0f);
    for (long j = 0; j < I; j += 8) {
        const __m256 g = _mm256_loadu_ps(gu + j);
        const __m256 inner = _mm256_add_ps(g, _mm256_mul_ps(k, _mm256_mul_ps(g, _mm256_mul_ps(g, g))));
        const __m256 act = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_mul_ps(c, inner))));
        _mm256_storeu_ps(out + j, _mm256_mul_ps(act, _mm256_loadu_ps(gu + I + j)));
    }
}

/* y = x cos + swap_halves(x) sin for one head of D, in place (the PyTorch path's mul, mul, add). */
static void rope_head(float *x, const float *c, const float *s, long D, float *tmp) {
    const long h = D / 2;
    for (long j = 0; j < h; j++) tmp[j] = x[j] * c[j] + x[j + h] * s[j];
    for (long j = h; j < D; j++) tmp[j] = x[j] * c[j] + x[j - h] * s[j];
    memcpy(x, tmp, (size_t)D * sizeof(float));
}

typedef struct {
    long B, C, H, KVH, D, I, NB, BS, MB;
    float eps, scale;
    const int64_t *pos, *slot, *bt;
    int nthreads;
} gm_step;

#define INLINE static inline __attribute__((always_inline))
#define UNROLL4 _Pragma("GCC unroll 4")

/* The cache rows of positions [t0, n) of one kv head g: rows[t - t0] (one block-table lookup per block). */
static void cache_rows(const gm_step *s, const float *plane, const int64_t *blocks, long g, long t0, long n,
                       const float **rows) {
    const long KVH = s->KVH, D = s->D, BS = s->BS;
    for (long t = t0; t < n;) {
        const long off = t % BS, run = BS - off < n - t ? BS - off : n - t;
        const float *base = plane + ((blocks[t / BS] * BS + off) * KVH + g) * D;
        for (long u = 0; u < run; u++) rows[t - t0 + u] = base + u * KVH * D;
        t += run;
    }
}

/* nh <= 4 query heads (q, D apart) of one row against the keys rows[0 .. L) of their kv head, then softmax and the
 * values: o (nh heads, D apart). Every key and value is loaded once for the nh heads (the cache is read from L2).
 * p: nh score rows ps floats apart (ps >= L + 8). Each head's operations are the same whatever the batch (decode,
 * or a prefill chunk's row) and whichever thread: one item of attention(). */
INLINE void attend_heads(const int nh, const float *q, long D, const float *const *rows, long L, long plane,
                         float scale, float *p, long ps, float *o) {
    long t = 0;
    for (; t + 2 <= L; t += 2) {  /* scores, two keys at a time: 2 nh FMA chains, each key loaded once */
        __m256 a[4], c[4];
        UNROLL4
        for (int hh = 0; hh < nh; hh++) a[hh] = c[hh] = _mm256_setzero_ps();
        const float *k0 = rows[t], *k1 = rows[t + 1];
        for (long j = 0; j < D; j += 8) {
            const __m256 kv0 = _mm256_loadu_ps(k0 + j), kv1 = _mm256_loadu_ps(k1 + j);
            UNROLL4
            for (int hh = 0; hh < nh; hh++) {
                const __m256 qv = _mm256_loadu_ps(q + hh * D + j);
                a[hh] = _mm256_fmadd_ps(qv, kv0, a[hh]);
                c[hh] = _mm256_fmadd_ps(qv, kv1, c[hh]);
            }
        }
        UNROLL4
        for (int hh = 0; hh < nh; hh++) p[hh * ps + t] = hsum8(a[hh]) * scale, p[hh * ps + t + 1] = hsum8(c[hh]) * scale;
    }
    if (t < L) {  /* the same sums for a last key alone */
        __m256 a[4];
        UNROLL4
        for (int hh = 0; hh < nh; hh++) a[hh] = _mm256_setzero_ps();
        for (long j = 0; j < D; j += 8) {
            const __m256 kv = _mm256_loadu_ps(rows[t] + j);
            UNROLL4
            for (int hh = 0; hh < nh; hh++) a[hh] = _mm256_fmadd_ps(_mm256_loadu_ps(q + hh * D + j), kv, a[hh]);
        }
        UNROLL4
        for (int hh = 0; hh < nh; hh++) p[hh * ps + t] = hsum8(a[hh]) * scale;
    }
    float inv[4];
    for (int hh = 0; hh < nh; hh++) {  /* e^(score - max), 8 at a time; lanes past L: 0 */
        float *ph = p + hh * ps, m = -INFINITY;
        for (long t = 0; t < L; t++) m = ph[t] > m ? ph[t] : m;
        const __m256 vm = _mm256_set1_ps(m);
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256 vsum = _mm256_setzero_ps();
        for (long t = 0; t < L; t += 8) {
            const long left = L - t;
            const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)), lane));
            const __m256 x = _mm256_blendv_ps(vm, _mm256_loadu_ps(ph + t), live);
            const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(x, vm)), live);
            _mm256_storeu_ps(ph + t, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        inv[hh] = 1.0f / hsum8(vsum);
    }
    long j0 = 0;
    for (; j0 + 16 <= D; j0 += 16) {  /* values: 16 lanes of every head in registers (AVX2's 16) over all positions */
        __m256 acc[4][2];
        UNROLL4
        for (int hh = 0; hh < nh; hh++) acc[hh][0] = acc[hh][1] = _mm256_setzero_ps();
        for (long t = 0; t < L; t++) {
            const float *v = rows[t] + plane + j0;
            const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
            UNROLL4
            for (int hh = 0; hh < nh; hh++) {
                const __m256 e = _mm256_set1_ps(p[hh * ps + t]);
                acc[hh][0] = _mm256_fmadd_ps(e, v0, acc[hh][0]);
                acc[hh][1] = _mm256_fmadd_ps(e, v1, acc[hh][1]);
            }
        }
        UNROLL4
        for (int hh = 0; hh < nh; hh++) {
            const __m256 iv = _mm256_set1_ps(inv[hh]);
            _mm256_storeu_ps(o + hh * D + j0, _mm256_mul_ps(acc[hh][0], iv));
            _mm256_storeu_ps(o + hh * D + j0 + 8, _mm256_mul_ps(acc[hh][1], iv));
        }
    }
    for (; j0 < D; j0 += 8) {  /* D % 16 lanes left */
        __m256 acc[4];
        UNROLL4
        for (int hh = 0; hh < nh; hh++) acc[hh] = _mm256_setzero_ps();
        for (long t = 0; t < L; t++) {
            const __m256 v = _mm256_loadu_ps(rows[t] + plane + j0);
            UNROLL4
            for (int hh = 0; hh < nh; hh++) acc[hh] = _mm256_fmadd_ps(_mm256_set1_ps(p[hh * ps + t]), v, acc[hh]);
        }
        UNROLL4
        for (int hh = 0; hh < nh; hh++) _mm256_storeu_ps(o + hh * D + j0, _mm256_mul_ps(acc[hh], _mm256_set1_ps(inv[hh])));
    }
}

/* Query heads h0 .. h0 + nh - 1 of row b (all of kv head g) attend over the row's window. */
static void attend(const gm_step *s, const gm_layer *ly, const float *qkv_row, long h0, int nh, long b, float *p,
                   long ps, const float **rows, float *out) {
    const long D = s->D, G = s->H / s->KVH, g = h0 / G, n = s->pos[b] + 1;
    const long t0 = ly->window && n > ly->window ? n - ly->window : 0, L = n - t0;
    const long plane = s->NB * s->BS * s->KVH * D;
    cache_rows(s, ly->cache, s->bt + b * s->MB, g, t0, n, rows);
    const float *q = qkv_row + h0 * D;
    float *o = out + b * s->H * D + h0 * D;
    switch (nh) {
        case 4: attend_heads(4, q, D, rows, L, plane, s->scale, p, ps, o); break;
        case 3: attend_heads(3, q, D, rows, L, plane, s->scale, p, ps, o); break;
        case 2: attend_heads(2, q, D, rows, L, plane, s->scale, p, ps, o); break;
        default: attend_heads(1, q, D, rows, L, plane, s->scale, p, ps, o); break;
    }
}

/* q/k norms, RoPE, cache write for every sequence; then each (sequence, query head) attends over its window.
 * qkv (B, (H + 2 KVH) D) is changed in place; out (B, H D). Returns 0, or 1 when scratch runs out. */
static int attention(const gm_step *s, const gm_layer *ly, float *qkv, float *out) {
    const long H = s->H, KVH = s->KVH, D = s->D, W = (H + 2 * KVH) * D, G = H / KVH;
    const long plane = s->NB * s->BS * KVH * D;
    long max_n = 0, work = 0;
    for (long b = 0; b < s->B; b++) {
        const long n = s->pos[b] + 1;
        max_n = n > max_n ? n : max_n;
        work += n;
    }
    #pragma omp parallel for schedule(static) num_threads(s->nthreads) if (s->nthreads > 1 && s->B >= 16)
    for (long b = 0; b < s->B; b++) {  /* rows apart: each writes its own cache slot */
        float tmp[1024];
        float *row = qkv + b * W;
        const float *c = ly->cos + s->pos[b] * D, *sn = ly->sin + s->pos[b] * D;
        for (long h = 0; h < H + KVH; h++) {
            rmsnorm(row + h * D, h < H ? ly->q_norm : ly->k_norm, s->eps, row + h * D, D);
            rope_head(row + h * D, c, sn, D, tmp);
        }
        for (long g = 0; g < KVH; g++) {
            memcpy(ly->cache + (s->slot[b] * KVH + g) * D, row + (H + g) * D, (size_t)D * sizeof(float));
            memcpy(ly->cache + plane + (s->slot[b] * KVH + g) * D, row + (H + KVH + g) * D, (size_t)D * sizeof(float));
        }
    }
    /* items: (row, up to hs query heads of one kv head). A head's numbers are the same alone or in a group (its
     * own accumulators, the same operations): groups of 4 share key/value loads in a prefill; a decode step's few
     * rows go one head per item so the threads share them. */
    const long hs = s->B * KVH >= 2 * s->nthreads ? 4 : 1;
    const long per_g = (G + hs - 1) / hs, items = s->B * KVH * per_g, ps = max_n + 8;
    int failed = 0;
    #pragma omp parallel num_threads(s->nthreads) if (s->nthreads > 1 && work * H * D >= 131072)
    {
        float *p = malloc(sizeof(float) * (size_t)(4 * ps));
        const float **rows = malloc(sizeof(float *) * (size_t)max_n);
        if (!p || !rows) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic, 1)
        for (long item = 0; item < items; item++) {
            if (!p || !rows) continue;
            const long b = item / (KVH * per_g), r = item % (KVH * per_g), g = r / per_g, h0 = g * G + (r % per_g) * hs;
            const int nh = (int)(g * G + G - h0 < hs ? g * G + G - h0 : hs);
            attend(s, ly, qkv + b * W, h0, nh, b, p, ps, rows, out);
        }
        free(p);
        free(rows);
    }
    return failed;
}

/* Loops over the rows between the matmuls: threads split the rows of a prefill chunk, each row's operations the same. */
#define FOR_ROWS(...) do { \
    if (nthreads > 1 && B >= 16) { \
        _Pragma("omp parallel for schedule(static) num_threads(nthreads)") \
        for (long b = 0; b < B; b++) { __VA_ARGS__ } \
    } else { \
        for (long b = 0; b < B; b++) { __VA_ARGS__ } \
    } \
} while (0)

/* For each layer: h = in_norm(x); a = attention(h Wqkv) Wo; x += post_attn_norm(a); h = pre_ffn_norm(x);
 * x += post_ffn_norm(down(gelu(h Wgate) * h Wup)). On return h = final_norm(x). x, h: (B, C).
 * D % 8 == 0 and D <= 1024, C % 8 == 0, I % 8 == 0, H % KVH == 0. Returns 0, non-zero on a failure. */
int gemma_decode_layers(athg_mm_fn mm, const gm_layer *layers, long L, const float *final_norm, float *x, float *h,
                        long B, long C, long H, long KVH, long D, long I, long NB, long BS, float eps, float scale,
                        const int64_t *pos, const int64_t *slot, const int64_t *bt, long MB, int nthreads) {
    if (D > 1024 || D % 8 || C % 8 || I % 8 || H % KVH) return -1;
    const gm_step s = {B, C, H, KVH, D, I, NB, BS, MB, eps, scale, pos, slot, bt, nthreads};
    const long W = (H + 2 * KVH) * D;
    float *buf = malloc(sizeof(float) * (size_t)(B * (W + H * D + C + 2 * I + I)));
    if (!buf) return -2;
    float *qkv = buf, *att = qkv + B * W, *o = att + B * H * D, *gu = o + B * C, *act = gu + B * 2 * I;
    int status = 0;
    for (long l = 0; l < L && status == 0; l++) {
        const gm_layer *ly = layers + l;
        FOR_ROWS(rmsnorm(x + b * C, ly->in_norm, eps, h + b * C, C););
        status |= linear(mm, &ly->qkv, h, B, C, qkv, W, nthreads);
        status |= attention(&s, ly, qkv, att);
        status |= linear(mm, &ly->o, att, B, H * D, o, C, nthreads);
        FOR_ROWS(
            rmsnorm(o + b * C, ly->post_attn_norm, eps, o + b * C, C);
            for (long j = 0; j < C; j++) x[b * C + j] += o[b * C + j];
            rmsnorm(x + b * C, ly->pre_ffn_norm, eps, h + b * C, C);
        );
        status |= linear(mm, &ly->gate_up, h, B, C, gu, 2 * I, nthreads);
        FOR_ROWS(gelu_mul(gu + b * 2 * I, act + b * I, I););
        status |= linear(mm, &ly->down, act, B, I, o, C, nthreads);
        FOR_ROWS(
            rmsnorm(o + b * C, ly->post_ffn_norm, eps, o + b * C, C);
            for (long j = 0; j < C; j++) x[b * C + j] += o[b * C + j];
        );
    }
    for (long b = 0; b < B; b++) rmsnorm(x + b * C, final_norm, eps, h + b * C, C);
    free(buf);
    return status;
}
