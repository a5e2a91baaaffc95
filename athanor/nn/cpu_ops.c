/* Fused small operations of a Llama decode step on the CPU, fp32: residual add + RMSNorm, SiLU-and-multiply,
 * and decode attention over the paged KV cache (RoPE, cache write and attention in one call per layer).
 *
 * Python side and rationale: athanor/nn/cpu_ops.py. Compiled at first use with the flags there
 * (-O3 -mavx2 -mfma -fopenmp -ffp-contract=off); FMAs are written explicitly.
 *
 * Row independence: every output row (a token, or a sequence's attention for one KV head) is computed by one
 * thread with the same operations in the same order whatever the batch and the thread count, so a request's
 * numbers never depend on what it is batched with.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* e^x for 8 lanes: 2^n * e^r with n = round(x log2 e), r = x - n ln 2 (ln 2 split in two for accuracy), e^r by
 * the Cephes single-precision polynomial (relative error ~2 ulp). NaN propagates (operand order of max/min). */
static inline __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
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
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* For each of M rows of width C (C % 8 == 0): x += res (when res is not NULL; the residual add, in place), then
 * y = w * (x * 1/sqrt(mean(x^2) + eps)), Hugging Face's LlamaRMSNorm in fp32. The mean of squares is summed in
 * double, 4 lanes, so its rounding does not depend on C's split. */
void atho_add_rmsnorm(float *x, const float *res, const float *w, float eps, float *y, long M, long C, int nthreads) {
    #pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M >= 64)
    for (long i = 0; i < M; i++) {
        float *xi = x + i * C;
        float *yi = y + i * C;
        if (res) {
            const float *ri = res + i * C;
            for (long j = 0; j < C; j += 8)
                _mm256_storeu_ps(xi + j, _mm256_add_ps(_mm256_loadu_ps(xi + j), _mm256_loadu_ps(ri + j)));
        }
        __m256d acc = _mm256_setzero_pd();
        for (long j = 0; j < C; j += 4) {
            __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(xi + j));
            acc = _mm256_fmadd_pd(v, v, acc);
        }
        double lanes[4];
        _mm256_storeu_pd(lanes, acc);
        float var = (float)(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) / (double)C);
        __m256 inv = _mm256_set1_ps(1.0f / sqrtf(var + eps));
        for (long j = 0; j < C; j += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xi + j), inv);
            _mm256_storeu_ps(yi + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), v));
        }
    }
}

/* out (M, I) = silu(gate) * up with gate_up (M, 2I) = [gate | up] per row, I % 8 == 0; silu(g) = g / (1 + e^-g). */
void atho_silu_mul(const float *gu, float *out, long M, long I, int nthreads) {
    #pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M >= 16)
    for (long i = 0; i < M; i++) {
        const float *g = gu + i * 2 * I, *u = g + I;
        float *o = out + i * I;
        for (long j = 0; j < I; j += 8) {
            __m256 gv = _mm256_loadu_ps(g + j);
            __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
            _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + j)));
        }
    }
}

/* y = x * cos + swap_halves(x) * sin for one head of width D (sin sign-folded [-sin | +sin]); in place. Same
 * float operations as the PyTorch path (mul, mul, add), so the same bits. */
static void rope_head(float *x, const float *c, const float *s, long D, float *tmp) {
    long h = D / 2;
    for (long j = 0; j < h; j++) tmp[j] = x[j] * c[j] + x[j + h] * s[j];
    for (long j = h; j < D; j++) tmp[j] = x[j] * c[j] + x[j - h] * s[j];
    memcpy(x, tmp, (size_t)D * sizeof(float));
}

static inline float dot(const float *a, const float *b, long D) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    long j = 0;
    for (; j + 16 <= D; j += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
    }
    if (j < D) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    return hsum8(_mm256_add_ps(s0, s1));
}

/* Decode attention: each of B sequences adds one token.
 *   qkv   (B, ld): per row q heads [0, H), k heads [H, H+KVH), v heads [H+KVH, H+2KVH), D floats each; q and k
 *         are rotated in place by RoPE at pos[b] (cos/sin tables (P, D)).
 *   cache (2, NB, BS, KVH, D): the new k and v go to slot[b]; then each query head attends over positions
 *         [0, pos[b]] of its sequence, found through bt (B, MB) block ids.
 *   out   (B, H * D).
 * D % 8 == 0, H % KVH == 0. Returns 0, or 1 when scratch memory cannot be allocated. */
int atho_decode_attention(float *qkv, long ld, const int64_t *pos, const float *cos_t, const float *sin_t,
                          float *cache, long NB, long BS, const int64_t *slot, const int64_t *bt, long MB,
                          long B, long H, long KVH, long D, float scale, float *out, int nthreads) {
    float tmp[1024];
    if (D > 1024) return 2;
    const long G = H / KVH, plane = NB * BS * KVH * D;
    long max_n = 0, work = 0;
    for (long b = 0; b < B; b++) {
        float *row = qkv + b * ld;
        const float *c = cos_t + pos[b] * D, *s = sin_t + pos[b] * D;
        for (long h = 0; h < H + KVH; h++) rope_head(row + h * D, c, s, D, tmp);
        for (long g = 0; g < KVH; g++) {
            memcpy(cache + (slot[b] * KVH + g) * D, row + (H + g) * D, (size_t)D * sizeof(float));
            memcpy(cache + plane + (slot[b] * KVH + g) * D, row + (H + KVH + g) * D, (size_t)D * sizeof(float));
        }
        long n = pos[b] + 1;
        if (n > max_n) max_n = n;
        work += n;
    }
    const long npad = (max_n + 7) & ~7L;
    int failed = 0;
    #pragma omp parallel num_threads(nthreads) if (nthreads > 1 && work * H * D >= 65536)
    {
        float *scores = malloc(sizeof(float) * (size_t)(G * npad + G * D + G));
        const float **rows = malloc(sizeof(float *) * (size_t)npad);  /* K row of each position (V: + plane) */
        if (!scores || !rows) {
            #pragma omp atomic write
            failed = 1;
        }
        {  /* every thread reaches the worksharing loop; one without scratch takes no items */
            float *acc = scores + G * npad, *scores_inv = acc + G * D;  /* (G, D) and (G,) */
            #pragma omp for schedule(dynamic, 1)
            for (long item = 0; item < B * KVH; item++) {
                if (!scores || !rows) continue;
                const long b = item / KVH, g = item % KVH, n = pos[b] + 1;
                const float *q = qkv + b * ld + g * G * D;  /* the G query heads that share KV head g */
                const int64_t *blocks = bt + b * MB;
                for (long t0 = 0, blk = 0; t0 < n; t0 += BS, blk++) {
                    const float *base = cache + (blocks[blk] * BS * KVH + g) * D;
                    for (long t = t0; t < n && t < t0 + BS; t++) rows[t] = base + (t - t0) * KVH * D;
                }
                for (long t = 0; t < n; t++)
                    for (long r = 0; r < G; r++) scores[r * npad + t] = dot(q + r * D, rows[t], D) * scale;
                for (long r = 0; r < G; r++) {  /* softmax numerators in place; 1/sum kept in sums */
                    float *sr = scores + r * npad;
                    float m = sr[0];
                    for (long t = 1; t < n; t++) m = sr[t] > m ? sr[t] : m;
                    for (long t = n; t < npad; t++) sr[t] = m;  /* padding lanes: e^0, never summed */
                    __m256 mv = _mm256_set1_ps(m), sum8 = _mm256_setzero_ps();
                    long t = 0;
                    for (; t + 8 <= n; t += 8) {
                        __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sr + t), mv));
                        _mm256_storeu_ps(sr + t, p);
                        sum8 = _mm256_add_ps(sum8, p);
                    }
                    float sum = hsum8(sum8);
                    if (t < n) {
                        _mm256_storeu_ps(sr + t, exp8(_mm256_sub_ps(_mm256_loadu_ps(sr + t), mv)));
                        for (; t < n; t++) sum += sr[t];
                    }
                    scores_inv[r] = 1.0f / sum;
                }
                for (long r = 0; r < G; r++)
                    for (long j = 0; j < D; j += 8) _mm256_storeu_ps(acc + r * D + j, _mm256_setzero_ps());
                for (long t0 = 0; t0 < n; t0 += 32) {  /* 32 V rows (8 KiB at D=64) stay in L1 across the passes */
                    const long t1 = t0 + 32 < n ? t0 + 32 : n;
                    for (long r = 0; r < G; r++) {
                        const float *pr = scores + r * npad;
                        for (long j = 0; j < D; j += 16) {  /* two accumulators in registers, one per 8 lanes */
                            __m256 a0 = _mm256_loadu_ps(acc + r * D + j);
                            __m256 a1 = j + 8 < D ? _mm256_loadu_ps(acc + r * D + j + 8) : _mm256_setzero_ps();
                            for (long t = t0; t < t1; t++) {
                                const float *v = rows[t] + plane + j;
                                __m256 p = _mm256_set1_ps(pr[t]);
                                a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v), a0);
                                if (j + 8 < D) a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8), a1);
                            }
                            _mm256_storeu_ps(acc + r * D + j, a0);
                            if (j + 8 < D) _mm256_storeu_ps(acc + r * D + j + 8, a1);
                        }
                    }
                }
                for (long r = 0; r < G; r++) {
                    __m256 inv = _mm256_set1_ps(scores_inv[r]);
                    float *o = out + b * H * D + (g * G + r) * D;
                    for (long j = 0; j < D; j += 8) _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_loadu_ps(acc + r * D + j), inv));
                }
            }
        }
        free(scores);
        free(rows);
    }
    return failed;
}

/* ---- the whole decoder stack of a decode step in one call (every matmul block-quantized) ------------------ */

/* weights sharing their input, stacked along the output: nn/gguf_kernels.c's athg_matmul_parts (ggml types, int8
 * activations) and nn/qkernels.c's athq_qmatmul_f32_parts (its kernel ids, float activations) */
typedef int (*atho_mm)(int n, const int *types, const uint8_t *const *ws, const long *Ns, long K, const float *x,
                       long M, long ldx, float *y, long ldy, int nthreads);

typedef struct {  /* one (out, in) weight: nn/quant.py's QuantizedWeight (parts == 0) or GGUF blocks (parts >= 1) */
    int parts;                 /* 0: `kind`/`blocks` below; 1..4: GGUF parts stacked along the output */
    int kind;                  /* QuantizedWeight: the kernel id */
    const void *blocks;
    int types[4];              /* GGUF: each part's ggml type, bytes, rows, and */
    int fkind[4];              /* qkernels' kernel id for a float-activation part (Q4_1/Q8_0 blocks), or -1 */
    const uint8_t *part[4];
    long part_out[4];
    long out, in;
    const float *bias;         /* or NULL */
    const int64_t *cols;       /* GGUF: output j is the blocks' row cols[j] (llama.cpp's q/k row order), or NULL */
} atho_weight;

typedef struct {  /* one decoder layer; the KV cache pointer comes per call */
    atho_weight qkv, o, gate_up, down;
    const float *post_norm_w, *next_norm_w;  /* post-attention norm; the next layer's input norm (or the final) */
    float post_eps, next_eps;
} atho_layer;

/* y (M, out) = x (M, in) @ W^T (+ bias), as nn/layers.py's Linear computes it for this weight: its parts in one
 * call when they take the same activations (each element the same bits as part by part), then the column order,
 * then the bias (the float adds qmatmul / BlockParts.matmul do). tmp: M * out floats of scratch, used with cols. */
static int linear(atho_mm fmm, atho_mm gmm, const atho_weight *w, const float *x, long M, float *y, float *tmp,
                  int nt) {
    float *dst = w->cols ? tmp : y;
    int status = 0, floats = 0;
    for (int p = 0; p < w->parts; p++) floats += w->fkind[p] >= 0;
    if (w->parts == 0) {
        const uint8_t *blocks = w->blocks;
        status = fmm(1, &w->kind, &blocks, &w->out, w->in, x, M, w->in, dst, w->out, nt);
    } else if (floats == 0) {
        status = gmm(w->parts, w->types, w->part, w->part_out, w->in, x, M, w->in, dst, w->out, nt);
    } else if (floats == w->parts) {
        status = fmm(w->parts, w->fkind, w->part, w->part_out, w->in, x, M, w->in, dst, w->out, nt);
    } else {  /* part by part into its columns */
        long off = 0;
        for (int p = 0; p < w->parts && !status; off += w->part_out[p], p++)
            status = (w->fkind[p] >= 0 ? fmm(1, w->fkind + p, w->part + p, w->part_out + p, w->in, x, M, w->in,
                                             dst + off, w->out, nt)
                                       : gmm(1, w->types + p, w->part + p, w->part_out + p, w->in, x, M, w->in,
                                             dst + off, w->out, nt));
    }
    if (status) return status;
    for (long i = 0; i < M; i++) {
        float *yr = y + i * w->out;
        if (w->cols)
            for (long j = 0; j < w->out; j++) yr[j] = dst[i * w->out + w->cols[j]];
        if (w->bias)
            for (long j = 0; j < w->out; j++) yr[j] = yr[j] + w->bias[j];
    }
    return 0;
}

/* For l in layers: qkv = h Wqkv; a = attention (RoPE, cache write); x += a Wo; h = post_norm(x);
 * x += down(silu(h Wgate) * (h Wup)); h = next_norm(x). On entry h = layer 0's input norm of x; on return h
 * is the final norm of x. Exactly the operations of LlamaModel._decode_cpu's per-op loop, in the same order.
 * Returns 0, or non-zero when scratch memory cannot be allocated (or a kernel refuses its arguments). */
int atho_decode_layers(atho_mm fmm, atho_mm gmm, const atho_layer *layers, long L, float *const *caches, float *x,
                       float *h, long B, long C, long H, long KVH, long D, long NB, long BS, float scale,
                       const int64_t *pos, const float *cos_t, const float *sin_t, const int64_t *slot,
                       const int64_t *bt, long MB, int nthreads) {
    const long W = (H + 2 * KVH) * D, I = layers[0].gate_up.out / 2;
    const long widest = W > 2 * I ? (W > C ? W : C) : (2 * I > C ? 2 * I : C);  /* any linear's out */
    float *buf = malloc(sizeof(float) * (size_t)(B * (W + H * D + C + 2 * I + I + C + widest)));
    if (!buf) return -1;
    float *qkv = buf, *att = qkv + B * W, *o = att + B * H * D, *gu = o + B * C, *act = gu + B * 2 * I,
          *down = act + B * I, *tmp = down + B * C;
    int status = 0;
    for (long l = 0; l < L && status == 0; l++) {
        const atho_layer *ly = layers + l;
        status |= linear(fmm, gmm, &ly->qkv, h, B, qkv, tmp, nthreads);
        if (status) break;
        status |= atho_decode_attention(qkv, W, pos, cos_t, sin_t, caches[l], NB, BS, slot, bt, MB, B, H, KVH, D,
                                        scale, att, nthreads);
        status |= linear(fmm, gmm, &ly->o, att, B, o, tmp, nthreads);
        atho_add_rmsnorm(x, o, ly->post_norm_w, ly->post_eps, h, B, C, nthreads);
        status |= linear(fmm, gmm, &ly->gate_up, h, B, gu, tmp, nthreads);
        atho_silu_mul(gu, act, B, I, nthreads);
        status |= linear(fmm, gmm, &ly->down, act, B, down, tmp, nthreads);
        atho_add_rmsnorm(x, down, ly->next_norm_w, ly->next_eps, h, B, C, nthreads);
    }
    free(buf);
    return status;
}
