/* SentencePiece-BPE encoding (llama.cpp's llm_tokenizer_spm) over a compact vocabulary, for athanor/text/spm.py.
 *
 * The vocabulary stays in Python-owned buffers (one UTF-8 blob, n+1 offsets, n float32 scores, n token types);
 * this file adds an open-addressing hash table (text -> first id) and the encoder:
 *   1. special tokens (control, unknown, user-defined) are cut out of the raw text first, leftmost-longest;
 *   2. each piece of text between them: "▁" prepended (add_space_prefix), spaces -> "▁";
 *   3. the piece is split into UTF-8 characters and adjacent symbols are merged, best first: the merge whose
 *      result is a token with the highest score, ties to the leftmost (llama.cpp's priority queue order);
 *   4. a symbol that is not a token is written as its bytes' <0xXX> tokens (byte fallback), else unk.
 * Plain C, no globals; the Python side serialises nothing (calls may run in threads at once). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LENS 40

typedef struct { uint32_t tag; int32_t id; } slot;  /* tag: the hash's high bits, checked before the text */

typedef struct {
    const uint8_t *blob;     /* all token texts, back to back */
    const uint32_t *offsets; /* n + 1: token i is blob[offsets[i] : offsets[i + 1]] */
    const float *scores;     /* n */
    const uint8_t *types;    /* n: tokenizer.ggml.token_type */
    int32_t n, unk_id;
    slot *table;             /* mask + 1 slots, id -1: empty */
    uint64_t mask;
    int32_t byte_ids[256];   /* <0xXX> token of each byte, or -1 */
    /* special tokens by first byte: their distinct lengths, longest first (more than MAX_LENS: all lengths up to
     * max_special are tried); pairs: bit (b0 << 8 | b1) set when a special token of 2+ bytes starts b0 b1 */
    int32_t lens[256][MAX_LENS];
    uint8_t n_lens[256], too_many_lens[256];
    uint8_t pairs[8192];
    int32_t max_special;
} spm_vocab;

enum { TYPE_UNKNOWN = 2, TYPE_CONTROL = 3, TYPE_USER_DEFINED = 4 };

static uint64_t fnv1a(const uint8_t *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    h ^= h >> 33, h *= 0xff51afd7ed558ccdull, h ^= h >> 33;  /* FNV's low bits cluster in a power-of-two table */
    return h;
}

/* First id whose text is s[0:n], or -1. */
static int32_t lookup(const spm_vocab *v, const uint8_t *s, size_t n) {
    uint64_t h = fnv1a(s, n);
    for (uint64_t i = h & v->mask;; i = (i + 1) & v->mask) {
        slot e = v->table[i];
        if (e.id < 0) return -1;
        if (e.tag != (uint32_t)(h >> 32)) continue;
        uint32_t a = v->offsets[e.id], len = v->offsets[e.id + 1] - a;
        if (len == n && memcmp(v->blob + a, s, n) == 0) return e.id;
    }
}

static int is_special(const spm_vocab *v, int32_t id) {
    uint8_t t = v->types[id];
    return t == TYPE_UNKNOWN || t == TYPE_CONTROL || t == TYPE_USER_DEFINED;
}

static void note_special(spm_vocab *v, const uint8_t *s, int32_t len) {
    uint8_t b = s[0];
    if (len > 1) v->pairs[(b << 8 | s[1]) >> 3] |= (uint8_t)(1u << (s[1] & 7));
    if (len > v->max_special) v->max_special = len;
    int32_t *lens = v->lens[b];
    for (int i = 0; i < v->n_lens[b]; i++)
        if (lens[i] == len) return;
    if (v->n_lens[b] == MAX_LENS) { v->too_many_lens[b] = 1; return; }
    int i = v->n_lens[b]++;
    while (i > 0 && lens[i - 1] < len) { lens[i] = lens[i - 1]; i--; }
    lens[i] = len;
}

static const char HEX[] = "0123456789ABCDEF";

void *spm_new(const uint8_t *blob, const uint32_t *offsets, const float *scores, const uint8_t *types,
              int32_t n, int32_t unk_id) {
    spm_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    uint64_t size = 16;
    while (size < 2 * (uint64_t)n) size <<= 1;
    v->table = malloc(size * sizeof(slot));
    if (!v->table) { free(v); return NULL; }
    memset(v->table, 0xff, size * sizeof(slot));
    v->blob = blob, v->offsets = offsets, v->scores = scores, v->types = types;
    v->n = n, v->unk_id = unk_id, v->mask = size - 1;
    for (int32_t id = 0; id < n; id++) {
        const uint8_t *s = blob + offsets[id];
        size_t len = offsets[id + 1] - offsets[id];
        if (lookup(v, s, len) >= 0) continue;  /* a duplicated text keeps its first id */
        uint64_t h = fnv1a(s, len), i = h & v->mask;
        while (v->table[i].id >= 0) i = (i + 1) & v->mask;
        v->table[i] = (slot){(uint32_t)(h >> 32), id};
        if (len > 0 && is_special(v, id)) note_special(v, s, (int32_t)len);
    }
    for (int b = 0; b < 256; b++) {
        uint8_t name[6] = {'<', '0', 'x', (uint8_t)HEX[b >> 4], (uint8_t)HEX[b & 15], '>'};
        v->byte_ids[b] = lookup(v, name, 6);
    }
    return v;
}

void spm_free(void *p) {
    spm_vocab *v = p;
    if (v) free(v->table), free(v);
}

int32_t spm_lookup(const void *p, const uint8_t *s, int64_t n) { return lookup(p, s, (size_t)n); }

/* ------------------------------------------------------------------------------------------ one piece of text */

typedef struct { int32_t prev, next, start, len; } symbol;  /* start/len: bytes in the escaped piece */
typedef struct { float score; int32_t left, right, size; } bigram;

typedef struct {
    bigram *items;
    int64_t n, cap;
} heap;

/* a comes out before b: higher score, then the leftmost (llama.cpp's comparator) */
static int before(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(heap *h, bigram b) {
    if (h->n == h->cap) {
        int64_t cap = h->cap ? 2 * h->cap : 64;
        bigram *items = realloc(h->items, cap * sizeof *items);
        if (!items) return -1;
        h->items = items, h->cap = cap;
    }
    int64_t i = h->n++;
    while (i > 0 && before(&b, &h->items[(i - 1) / 2])) { h->items[i] = h->items[(i - 1) / 2]; i = (i - 1) / 2; }
    h->items[i] = b;
    return 0;
}

static bigram heap_pop(heap *h) {
    bigram top = h->items[0], last = h->items[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->items[c + 1], &h->items[c])) c++;
        if (!before(&h->items[c], &last)) break;
        h->items[i] = h->items[c];
        i = c;
    }
    if (h->n > 0) h->items[i] = last;
    return top;
}

typedef struct {
    const spm_vocab *v;
    const uint8_t *text;
    symbol *syms;
    heap queue;
    int32_t *out;
    int64_t n_out, cap_out;
    int failed;
} session;

static void emit(session *s, int32_t id) {
    if (s->n_out < s->cap_out) s->out[s->n_out] = id;
    s->n_out++;  /* counted past cap_out too: the caller retries with the size needed */
}

static void try_bigram(session *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    int32_t size = s->syms[left].len + s->syms[right].len;
    int32_t id = lookup(s->v, s->text + s->syms[left].start, (size_t)size);
    if (id < 0) return;
    bigram b = {s->v->scores[id], left, right, size};
    if (heap_push(&s->queue, b) != 0) s->failed = 1;
}

static int utf8_len(uint8_t c) {
    static const int lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

static void emit_symbol(session *s, const symbol *sym) {
    int32_t id = lookup(s->v, s->text + sym->start, (size_t)sym->len);
    if (id >= 0) { emit(s, id); return; }
    for (int32_t j = 0; j < sym->len; j++) {
        int32_t b = s->v->byte_ids[s->text[sym->start + j]];
        emit(s, b >= 0 ? b : s->v->unk_id);
    }
}

/* text[0:n]: one escaped piece (spaces already "▁") */
static void encode_piece(session *s, const uint8_t *text, int32_t n) {
    s->text = text, s->queue.n = 0;
    int32_t count = 0;
    for (int32_t at = 0; at < n; count++) {
        int32_t len = utf8_len(text[at]);
        if (len > n - at) len = n - at;
        s->syms[count] = (symbol){count - 1, at + len == n ? -1 : count + 1, at, len};
        at += len;
    }
    for (int32_t i = 1; i < count; i++) try_bigram(s, i - 1, i);
    while (s->queue.n > 0 && !s->failed) {
        bigram b = heap_pop(&s->queue);
        symbol *left = &s->syms[b.left], *right = &s->syms[b.right];
        if (left->len == 0 || right->len == 0 || left->len + right->len != b.size) continue;  /* stale */
        left->len += right->len;
        right->len = 0;
        left->next = right->next;
        if (right->next >= 0) s->syms[right->next].prev = b.left;
        try_bigram(s, left->prev, b.left);
        try_bigram(s, b.left, left->next);
    }
    for (int32_t i = count ? 0 : -1; i >= 0; i = s->syms[i].next) emit_symbol(s, &s->syms[i]);
}

/* Escape raw[0:n] ("▁" prefix when asked, spaces -> "▁") into buf and encode it. */
static void encode_raw(session *s, uint8_t *buf, const uint8_t *raw, int64_t n, int add_prefix) {
    int64_t m = 0;
    if (add_prefix) buf[m++] = 0xE2, buf[m++] = 0x96, buf[m++] = 0x81;
    for (int64_t i = 0; i < n; i++) {
        if (raw[i] == ' ') buf[m++] = 0xE2, buf[m++] = 0x96, buf[m++] = 0x81;
        else buf[m++] = raw[i];
    }
    encode_piece(s, buf, (int32_t)m);
}

static int32_t try_special(const spm_vocab *v, const uint8_t *text, int64_t n, int64_t at, int32_t l, int pair) {
    if (l > n - at || (l > 1 && !pair)) return -1;
    int32_t id = lookup(v, text + at, (size_t)l);
    return id >= 0 && is_special(v, id) ? id : -1;
}

/* The special token starting at text[at] (longest first), or -1; *len gets its length. */
static int32_t match_special(const spm_vocab *v, const uint8_t *text, int64_t n, int64_t at, int32_t *len) {
    uint8_t b = text[at];
    if (!v->n_lens[b]) return -1;
    int pair = at + 1 < n && (v->pairs[(b << 8 | text[at + 1]) >> 3] >> (text[at + 1] & 7) & 1);
    int many = v->too_many_lens[b];
    int32_t count = many ? v->max_special : v->n_lens[b];
    for (int32_t i = 0; i < count; i++) {
        int32_t l = many ? v->max_special - i : v->lens[b][i];
        int32_t id = try_special(v, text, n, at, l, pair);
        if (id >= 0) { *len = l; return id; }
    }
    return -1;
}

/* Token ids of text[0:n] into out[0:cap]; returns how many there are (more than cap: call again with that
 * much room), -1 when memory ran out, -2 for a text over ~700 MB. */
int64_t spm_encode(const void *p, const uint8_t *text, int64_t n, int32_t add_prefix, int32_t *out, int64_t cap) {
    const spm_vocab *v = p;
    if (n > (int64_t)INT32_MAX / 3 - 3) return -2;  /* symbol offsets are int32 */
    session s = {.v = v, .out = out, .cap_out = cap};
    uint8_t *buf = malloc((size_t)(3 * n + 3 + 1));
    s.syms = malloc((size_t)(3 * n + 3 + 1) * sizeof(symbol));
    if (!buf || !s.syms) s.failed = 1;
    int64_t start = 0, at = 0;
    while (at < n && !s.failed) {
        int32_t len = 0, id = match_special(v, text, n, at, &len);
        if (id < 0) { at++; continue; }
        if (at > start) encode_raw(&s, buf, text + start, at - start, add_prefix);
        emit(&s, id);
        at += len, start = at;
    }
    if (start < n && !s.failed) encode_raw(&s, buf, text + start, n - start, add_prefix);
    free(buf), free(s.syms), free(s.queue.items);
    return s.failed ? -1 : s.n_out;
}
