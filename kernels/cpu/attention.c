/* Causal GQA attention over a KV cache, as tiles.
 *
 * A task takes one KV head and a tile of up to WD_ATTN_ROWS query rows: the
 * rows are the (token, head) pairs of the query heads that read that KV head
 * (head h reads KV head h / (n_heads / n_kv_heads)), token-major, so every
 * key and value loaded serves all rows of the tile. Keys go in blocks of
 * WD_ATTN_KB at absolute positions 0, KB, 2 KB, ...; per block:
 *   - scores: rows in vector lanes (the tile's queries transposed once per
 *     task, WD_ATTN_DC head dims at a time), 4 keys broadcast per step, a
 *     register tile of up to 64 rows x 4 keys; each score is one FMA chain
 *     over the head dims, then scaled by 1/sqrt(head_dim);
 *   - online softmax, still rows in lanes (no horizontal reduction): keys
 *     past a row's position are masked, the running max and sum are updated
 *     per row and a row's output is rescaled when its max grows;
 *   - weighted values: head dims in lanes, a register tile of 4 rows x 64
 *     dims, one FMA chain over the block's keys per output, straight into out.
 * A row's arithmetic is the same whatever tile, block of queries or thread
 * it lands in (masked keys add exact zeros, a row with no key in a block is
 * left as it was), so a prefill is bit-identical to one decode call per
 * position and the thread split never changes a result. Tiles further down
 * the prompt see more keys: tasks run the last tiles first, so the dynamic
 * split of the pool stays balanced under the causal mask. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

#define WD_ATTN_KB 64   /* keys per softmax block */
#define WD_ATTN_ROWS 64 /* query rows (token, head) per task: 4 vectors of lanes */
#define WD_ATTN_DC 256  /* head dims per transposed chunk of the queries */

typedef struct {
    float *out;
    const float *q, *k, *v;
    int n, pos0, n_heads, n_kv_heads, head_dim, group, n_tiles;
} attn_ctx;

/* The scratch argument is not used (a task's buffers live on its stack); the
 * function stays for API compatibility and asks for a token amount. */
size_t wd_attention_scratch(int n, int n_heads, int ctx) {
    (void)n, (void)n_heads, (void)ctx;
    return 16;
}

/* Per task: the tile's rows and its softmax state. */
typedef struct {
    int nr;                      /* rows in the tile */
    const float *qr[WD_ATTN_ROWS];
    float *orow[WD_ATTN_ROWS];
    _Alignas(64) int32_t pos[WD_ATTN_ROWS]; /* -1 for lanes past nr */
    _Alignas(64) float m[WD_ATTN_ROWS], l[WD_ATTN_ROWS], r[WD_ATTN_ROWS];
    _Alignas(64) float s[WD_ATTN_KB * WD_ATTN_ROWS]; /* s[j][row] */
    _Alignas(64) float qt[WD_ATTN_DC * WD_ATTN_ROWS]; /* qt[d][row] */
} attn_tile;

/* qt[d][i] = row i's query at head dim d0 + d (lanes past nr are 0). */
static void transpose_q(attn_tile *t, int d0, int dn) {
    for (int d = 0; d < dn; d++) {
        float *dst = t->qt + (size_t)d * WD_ATTN_ROWS;
        for (int i = 0; i < t->nr; i++) dst[i] = t->qr[i][d0 + d];
        for (int i = t->nr; i < WD_ATTN_ROWS; i++) dst[i] = 0;
    }
}

#ifdef WD_AVX512
/* s[j][rows] for keys j0..j0+nj-1 (nj <= 4) of the block, head dims d0..d0+dn-1
 * of k (k points at the block's first key, head dim d0), nrv vectors of rows;
 * acc_in: continue the chains stored in s (a later chunk of head dims). */
static inline __attribute__((always_inline)) void score_step(attn_tile *t, const float *k,
                                                             size_t kvd, int j0, int nj, int dn,
                                                             int acc_in, const int nrv) {
    const float *kp[4];
    for (int u = 0; u < 4; u++) kp[u] = k + (size_t)(j0 + (u < nj ? u : 0)) * kvd;
    __m512 acc[4][4];
    for (int v = 0; v < nrv; v++)
        for (int u = 0; u < 4; u++)
            acc[v][u] = acc_in ? _mm512_load_ps(t->s + (size_t)(j0 + u) * WD_ATTN_ROWS + 16 * v)
                               : _mm512_setzero_ps();
    for (int d = 0; d < dn; d++) {
        __m512 b0 = _mm512_set1_ps(kp[0][d]), b1 = _mm512_set1_ps(kp[1][d]);
        __m512 b2 = _mm512_set1_ps(kp[2][d]), b3 = _mm512_set1_ps(kp[3][d]);
        for (int v = 0; v < nrv; v++) {
            __m512 q = _mm512_load_ps(t->qt + (size_t)d * WD_ATTN_ROWS + 16 * v);
            acc[v][0] = _mm512_fmadd_ps(q, b0, acc[v][0]);
            acc[v][1] = _mm512_fmadd_ps(q, b1, acc[v][1]);
            acc[v][2] = _mm512_fmadd_ps(q, b2, acc[v][2]);
            acc[v][3] = _mm512_fmadd_ps(q, b3, acc[v][3]);
        }
    }
    for (int u = 0; u < nj; u++)
        for (int v = 0; v < nrv; v++)
            _mm512_store_ps(t->s + (size_t)(j0 + u) * WD_ATTN_ROWS + 16 * v, acc[v][u]);
}

static void scores(attn_tile *t, const float *k, size_t kvd, int nk, int dn, int acc_in) {
    int nrv = (t->nr + 15) / 16;
    for (int j0 = 0; j0 < nk; j0 += 4) {
        int nj = nk - j0 < 4 ? nk - j0 : 4;
        switch (nrv) {
        case 1: score_step(t, k, kvd, j0, nj, dn, acc_in, 1); break;
        case 2: score_step(t, k, kvd, j0, nj, dn, acc_in, 2); break;
        case 3: score_step(t, k, kvd, j0, nj, dn, acc_in, 3); break;
        default: score_step(t, k, kvd, j0, nj, dn, acc_in, 4); break;
        }
    }
}

/* Scores of the block's nk keys (first at p0) -> weights; updates m, l and
 * sets r (the factor a row's output is rescaled by, 1 when its max holds). */
static void softmax_block(attn_tile *t, int p0, int nk, float scale) {
    int nrv = (t->nr + 15) / 16;
    const __m512 vs = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
    for (int v = 0; v < nrv; v++) {
        __m512i pos = _mm512_load_si512(t->pos + 16 * v);
        __m512 mold = _mm512_load_ps(t->m + 16 * v), bm = ninf;
        for (int j = 0; j < nk; j++) {
            float *sj = t->s + (size_t)j * WD_ATTN_ROWS + 16 * v;
            __mmask16 ok = _mm512_cmple_epi32_mask(_mm512_set1_epi32(p0 + j), pos);
            __m512 x = _mm512_mask_mul_ps(ninf, ok, _mm512_load_ps(sj), vs);
            _mm512_store_ps(sj, x);
            bm = _mm512_max_ps(bm, x);
        }
        __m512 mnew = _mm512_max_ps(mold, bm);
        __mmask16 grew = _mm512_cmp_ps_mask(mnew, mold, _CMP_GT_OQ);
        __m512 r = _mm512_mask_blend_ps(grew, _mm512_set1_ps(1.0f),
                                        wd_exp512(_mm512_sub_ps(mold, mnew)));
        __m512 l = _mm512_mul_ps(_mm512_load_ps(t->l + 16 * v), r);
        for (int j = 0; j < nk; j++) {
            float *sj = t->s + (size_t)j * WD_ATTN_ROWS + 16 * v;
            __mmask16 ok = _mm512_cmple_epi32_mask(_mm512_set1_epi32(p0 + j), pos);
            __m512 p = _mm512_maskz_mov_ps(ok, wd_exp512(_mm512_sub_ps(_mm512_load_ps(sj), mnew)));
            _mm512_store_ps(sj, p);
            l = _mm512_add_ps(l, p);
        }
        _mm512_store_ps(t->m + 16 * v, mnew);
        _mm512_store_ps(t->l + 16 * v, l);
        _mm512_store_ps(t->r + 16 * v, r);
    }
}

/* o[i] += sum_j w[i][j ws] v_j for rows i < nrow of 4 (o[i], w[i] valid for all 4),
 * keys j < nj, head dims in chunks of 64 (4 vectors, the last masked): the PV
 * product of the prefill tile (ws = WD_ATTN_ROWS) and of decode (ws = 1), the same
 * operations in the same order. */
static inline __attribute__((always_inline)) void pv4(float *const o[4], const float *const w[4],
                                                      const size_t ws, int nrow, const float *v,
                                                      size_t kvd, int nj, int hd) {
    for (int d0 = 0; d0 < hd; d0 += 64) {
        __mmask16 mk[4];
        for (int u = 0; u < 4; u++) {
            int left = hd - d0 - 16 * u;
            mk[u] = left <= 0 ? 0 : wd_tail_mask(left);
        }
        __m512 acc[4][4];
        for (int i = 0; i < 4; i++)
            for (int u = 0; u < 4; u++) acc[i][u] = _mm512_maskz_loadu_ps(mk[u], o[i] + d0 + 16 * u);
        for (int j = 0; j < nj; j++) {
            const float *vj = v + (size_t)j * kvd + d0;
            __m512 x0 = _mm512_maskz_loadu_ps(mk[0], vj), x1 = _mm512_maskz_loadu_ps(mk[1], vj + 16);
            __m512 x2 = _mm512_maskz_loadu_ps(mk[2], vj + 32), x3 = _mm512_maskz_loadu_ps(mk[3], vj + 48);
            for (int i = 0; i < 4; i++) {
                __m512 p = _mm512_set1_ps(w[i][(size_t)j * ws]);
                acc[i][0] = _mm512_fmadd_ps(p, x0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(p, x1, acc[i][1]);
                acc[i][2] = _mm512_fmadd_ps(p, x2, acc[i][2]);
                acc[i][3] = _mm512_fmadd_ps(p, x3, acc[i][3]);
            }
        }
        for (int i = 0; i < nrow; i++)
            for (int u = 0; u < 4; u++) _mm512_mask_storeu_ps(o[i] + d0 + 16 * u, mk[u], acc[i][u]);
    }
}

/* pv4 for rows i0..i0+3 of orow (rows past nr skipped), row i's weights from
 * s + i row_off, key j's at j ws: the prefill tile's s[j][row] (row_off 1, ws
 * WD_ATTN_ROWS) and decode's s[row][key] (row_off WD_ATTN_KB, ws 1). */
static void pv_group(float *const *orow, int nr, int i0, const float *s, size_t row_off, int ws,
                     const float *v, size_t kvd, int nj, int hd) {
    int nrow = nr - i0 < 4 ? nr - i0 : 4;
    float *o[4];
    const float *w[4];
    for (int i = 0; i < 4; i++) {
        int ii = i < nrow ? i0 + i : i0;
        o[i] = orow[ii];
        w[i] = s + (size_t)ii * row_off;
    }
    pv4(o, w, ws, nrow, v, kvd, nj, hd);
}

/* o_i += sum_j s[j][i] v_j for rows i0..i0+3 (rows past nr skipped), keys j < nj. */
static void pv_rows(attn_tile *t, int i0, const float *v, size_t kvd, int nj, int hd) {
    pv_group(t->orow, t->nr, i0, t->s, 1, WD_ATTN_ROWS, v, kvd, nj, hd);
}

static void scale_vec(float *y, float a, int n) {
    __m512 va = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = wd_tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, y + i)));
    }
}
#else
static void scores(attn_tile *t, const float *k, size_t kvd, int nk, int dn, int acc_in) {
    for (int j = 0; j < nk; j++) {
        float *sj = t->s + (size_t)j * WD_ATTN_ROWS;
        const float *kj = k + (size_t)j * kvd;
        for (int i = 0; i < t->nr; i++) {
            float a = acc_in ? sj[i] : 0.0f;
            for (int d = 0; d < dn; d++) a += t->qt[(size_t)d * WD_ATTN_ROWS + i] * kj[d];
            sj[i] = a;
        }
    }
}

static void softmax_block(attn_tile *t, int p0, int nk, float scale) {
    for (int i = 0; i < t->nr; i++) {
        float bm = -INFINITY;
        for (int j = 0; j < nk; j++) {
            float *x = t->s + (size_t)j * WD_ATTN_ROWS + i;
            *x = p0 + j <= t->pos[i] ? *x * scale : -INFINITY;
            if (*x > bm) bm = *x;
        }
        float mnew = bm > t->m[i] ? bm : t->m[i];
        float r = mnew > t->m[i] ? expf(t->m[i] - mnew) : 1.0f, l = t->l[i] * r;
        for (int j = 0; j < nk; j++) {
            float *x = t->s + (size_t)j * WD_ATTN_ROWS + i;
            *x = p0 + j <= t->pos[i] ? expf(*x - mnew) : 0.0f;
            l += *x;
        }
        t->m[i] = mnew;
        t->l[i] = l;
        t->r[i] = r;
    }
}

static void pv_rows(attn_tile *t, int i0, const float *v, size_t kvd, int nj, int hd) {
    int nrow = t->nr - i0 < 4 ? t->nr - i0 : 4;
    for (int i = i0; i < i0 + nrow; i++)
        for (int j = 0; j < nj; j++) {
            float p = t->s[(size_t)j * WD_ATTN_ROWS + i];
            const float *vj = v + (size_t)j * kvd;
            for (int d = 0; d < hd; d++) t->orow[i][d] += p * vj[d];
        }
}

static void scale_vec(float *y, float a, int n) {
    for (int i = 0; i < n; i++) y[i] *= a;
}
#endif

#ifdef WD_AVX512
/* ---- decode: one query token ------------------------------------------------
 * n = 1: a tile would hold only the group's few heads (4 of 16 lanes in use,
 * one broadcast key element per FMA). Here a task takes one KV head and up to
 * WD_DEC_ROWS of its query heads; keys go in blocks of WD_ATTN_KB as above, and
 * per 16 keys the scores have the keys in lanes: 16 key rows are transposed
 * 16 head dims at a time in registers, then each head's score vector is one
 * FMA chain over the head dims with that head's query element broadcast, so
 * every key element loaded serves all heads of the group in 16 lanes. The
 * chain (head dim 0 first, from 0), the softmax per block (scale, max, running
 * max and sum in key order, wd_exp512), the weighted values (the output
 * rescaled, then one FMA chain over the block's keys per output) and the final
 * 1/sum are the tile path's operations in the tile path's order: a decode step
 * is bit-identical to the same position in a prefill. */
#define WD_DEC_ROWS 8

typedef struct {
    int nr;
    const float *qr[WD_DEC_ROWS];
    float *orow[WD_DEC_ROWS];
    float m[WD_DEC_ROWS], l[WD_DEC_ROWS];
    _Alignas(64) float s[WD_DEC_ROWS][WD_ATTN_KB]; /* s[row][key]: scores, then weights */
} attn_dec;

/* Scores of keys j0..j0+15 of the block (k: the block's first key, nj valid)
 * for the nr (== R) heads, into s[row][j0..j0+15]. */
static inline __attribute__((always_inline)) void
dec_scores16(attn_dec *t, const float *k, const float *v, size_t kvd, int j0, int nj, int nk_next,
             int hd, const int R) {
    __m512 acc[WD_DEC_ROWS];
    const float *kr[16], *qr[WD_DEC_ROWS], *pk[16], *pv[16];
    for (int i = 0; i < 16; i++) {
        kr[i] = k + (size_t)(j0 + (i < nj ? i : 0)) * kvd;
        pv[i] = v + (kr[i] - k);
        pk[i] = j0 + i < nk_next ? k + (size_t)(WD_ATTN_KB + j0 + i) * kvd : kr[i];
    }
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps(), qr[r] = t->qr[r];
    int d0 = 0;
    for (; d0 + 16 <= hd; d0 += 16) {
        __m512 x[16];
        for (int i = 0; i < 16; i++) {
            x[i] = _mm512_loadu_ps(kr[i] + d0);
            /* the KV cache comes from DRAM (the weights streamed through the caches
             * since the last token): the next block's keys, this block's values */
            _mm_prefetch((const char *)(pk[i] + d0), _MM_HINT_T0);
            _mm_prefetch((const char *)(pv[i] + d0), _MM_HINT_T0);
        }
        wd_transpose16(x); /* x[d]: head dim d0 + d of the 16 keys */
#pragma GCC unroll 16
        for (int d = 0; d < 16; d++)
            for (int r = 0; r < R; r++)
                acc[r] = _mm512_fmadd_ps(x[d], _mm512_set1_ps(qr[r][d0 + d]), acc[r]);
    }
    if (d0 < hd) { /* the last head dims, fewer than 16 */
        int dn = hd - d0;
        __mmask16 mk = wd_tail_mask(dn);
        __m512 x[16];
        for (int i = 0; i < 16; i++) x[i] = _mm512_maskz_loadu_ps(mk, kr[i] + d0);
        wd_transpose16(x);
        for (int d = 0; d < dn; d++)
            for (int r = 0; r < R; r++)
                acc[r] = _mm512_fmadd_ps(x[d], _mm512_set1_ps(qr[r][d0 + d]), acc[r]);
    }
    for (int r = 0; r < R; r++) _mm512_store_ps(&t->s[r][j0], acc[r]);
}

/* k, v: the block's first key and value; nk_next: keys in the next block. */
static void dec_scores(attn_dec *t, const float *k, const float *v, size_t kvd, int nk,
                       int nk_next, int hd) {
    for (int j0 = 0; j0 < nk; j0 += 16) {
        int nj = nk - j0 < 16 ? nk - j0 : 16;
        switch (t->nr) {
        case 1: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 1); break;
        case 2: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 2); break;
        case 3: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 3); break;
        case 4: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 4); break;
        case 5: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 5); break;
        case 6: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 6); break;
        case 7: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 7); break;
        default: dec_scores16(t, k, v, kvd, j0, nj, nk_next, hd, 8); break;
        }
    }
}

/* softmax_block's arithmetic for one row with the block's keys in lanes:
 * returns the factor the row's output is rescaled by (1 when its max holds). */
static float dec_softmax_row(attn_dec *t, int r, int nk, float scale) {
    const __m512 vs = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
    float *s = t->s[r];
    __m512 bm = ninf;
    for (int j = 0; j < nk; j += 16) {
        __mmask16 ok = wd_tail_mask(nk - j);
        __m512 x = _mm512_mask_mul_ps(ninf, ok, _mm512_load_ps(s + j), vs);
        _mm512_store_ps(s + j, x);
        bm = _mm512_max_ps(bm, x);
    }
    float mold = t->m[r], bmax = _mm512_reduce_max_ps(bm);
    float mnew = mold > bmax ? mold : bmax; /* _mm512_max_ps(mold, bm) */
    float rf = 1.0f;
    if (mnew > mold) rf = _mm512_cvtss_f32(wd_exp512(_mm512_set1_ps(mold - mnew)));
    __m512 vm = _mm512_set1_ps(mnew);
    for (int j = 0; j < nk; j += 16) {
        __mmask16 ok = wd_tail_mask(nk - j);
        _mm512_store_ps(s + j, _mm512_maskz_mov_ps(ok, wd_exp512(_mm512_sub_ps(_mm512_load_ps(s + j), vm))));
    }
    t->m[r] = mnew;
    t->l[r] *= rf; /* the block's weights are added by dec_sums */
    return rf;
}

/* l += the block's weights, in key order as the tile path's lanes do; the
 * rows' chains interleaved (each add waits for the one before in its row). */
static void dec_sums(attn_dec *t, int nk) {
    if (t->nr == 4) {
        float l0 = t->l[0], l1 = t->l[1], l2 = t->l[2], l3 = t->l[3];
        for (int j = 0; j < nk; j++) {
            l0 += t->s[0][j], l1 += t->s[1][j];
            l2 += t->s[2][j], l3 += t->s[3][j];
        }
        t->l[0] = l0, t->l[1] = l1, t->l[2] = l2, t->l[3] = l3;
        return;
    }
    for (int j = 0; j < nk; j++)
        for (int r = 0; r < t->nr; r++) t->l[r] += t->s[r][j];
}

/* A unit: KV head u % n_kv_heads and its query heads from WD_DEC_ROWS * (u / n_kv_heads).
 * A task takes a contiguous range of units, at most WD_DEC_UNITS at a time, block by
 * block across them: on one thread the KV heads of a position are read together, whole
 * cache rows one after another instead of a strided pass per KV head. A unit's
 * arithmetic does not depend on the others or on the split. */
#define WD_DEC_UNITS 8

static void attn_dec_task(void *arg, int task, int n_tasks) {
    const attn_ctx *c = arg;
    attn_dec ts[WD_DEC_UNITS];
    int G = c->group, hd = c->head_dim, pos = c->pos0, nkv = c->n_kv_heads;
    size_t kvd = (size_t)nkv * hd;
    int units = nkv * ((G + WD_DEC_ROWS - 1) / WD_DEC_ROWS);
    int u0 = (int)((int64_t)units * task / n_tasks), u1 = (int)((int64_t)units * (task + 1) / n_tasks);
    float scale = 1.0f / sqrtf((float)hd);
    for (int ub = u0; ub < u1; ub += WD_DEC_UNITS) {
        int nu = u1 - ub < WD_DEC_UNITS ? u1 - ub : WD_DEC_UNITS;
        const float *kb[WD_DEC_UNITS], *vb[WD_DEC_UNITS];
        for (int u = 0; u < nu; u++) {
            attn_dec *t = &ts[u];
            int kvh = (ub + u) % nkv, r0 = WD_DEC_ROWS * ((ub + u) / nkv);
            t->nr = G - r0 < WD_DEC_ROWS ? G - r0 : WD_DEC_ROWS;
            for (int i = 0; i < t->nr; i++) {
                int h = kvh * G + r0 + i;
                t->qr[i] = c->q + (size_t)h * hd;
                t->orow[i] = c->out + (size_t)h * hd;
                t->m[i] = -INFINITY;
                t->l[i] = 0;
                memset(t->orow[i], 0, (size_t)hd * sizeof(float));
            }
            kb[u] = c->k + (size_t)kvh * hd, vb[u] = c->v + (size_t)kvh * hd;
        }
        /* the first block's keys (dec_scores prefetches the later ones as it goes) */
        for (int j = 0; j <= pos && j < WD_ATTN_KB; j++)
            for (int u = 0; u < nu; u++)
                for (int d = 0; d < hd; d += 16)
                    _mm_prefetch((const char *)(kb[u] + (size_t)j * kvd + d), _MM_HINT_T0);
        for (int p0 = 0; p0 <= pos; p0 += WD_ATTN_KB) {
            int nk = pos + 1 - p0 < WD_ATTN_KB ? pos + 1 - p0 : WD_ATTN_KB;
            int left = pos + 1 - p0 - nk, nk_next = left < WD_ATTN_KB ? left : WD_ATTN_KB;
            for (int u = 0; u < nu; u++) {
                attn_dec *t = &ts[u];
                const float *k = kb[u] + (size_t)p0 * kvd, *v = vb[u] + (size_t)p0 * kvd;
                dec_scores(t, k, v, kvd, nk, nk_next, hd);
                for (int i = 0; i < t->nr; i++) {
                    float rf = dec_softmax_row(t, i, nk, scale);
                    if (rf != 1.0f) scale_vec(t->orow[i], rf, hd);
                }
                dec_sums(t, nk);
                for (int i = 0; i < t->nr; i += 4)
                    pv_group(t->orow, t->nr, i, t->s[0], WD_ATTN_KB, 1, v, kvd, nk, hd);
            }
        }
        for (int u = 0; u < nu; u++)
            for (int i = 0; i < ts[u].nr; i++) scale_vec(ts[u].orow[i], 1.0f / ts[u].l[i], hd);
    }
}
#endif

static void attn_task(void *arg, int task, int n_tasks) {
    (void)n_tasks;
    const attn_ctx *c = arg;
    attn_tile t;
    int G = c->group, hd = c->head_dim;
    size_t kvd = (size_t)c->n_kv_heads * hd, qd = (size_t)c->n_heads * hd;
    int kvh = task % c->n_kv_heads, tile = c->n_tiles - 1 - task / c->n_kv_heads;
    int r0 = tile * WD_ATTN_ROWS, r1 = r0 + WD_ATTN_ROWS;
    if (r1 > c->n * G) r1 = c->n * G;
    t.nr = r1 - r0;
    for (int i = 0; i < WD_ATTN_ROWS; i++) {
        t.m[i] = -INFINITY;
        t.l[i] = 0;
        t.pos[i] = -1;
    }
    for (int i = 0; i < t.nr; i++) {
        int tok = (r0 + i) / G, h = kvh * G + (r0 + i) % G;
        t.qr[i] = c->q + tok * qd + (size_t)h * hd;
        t.orow[i] = c->out + tok * qd + (size_t)h * hd;
        t.pos[i] = c->pos0 + tok;
        memset(t.orow[i], 0, (size_t)hd * sizeof(float));
    }
    const float *kb = c->k + (size_t)kvh * hd, *vb = c->v + (size_t)kvh * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int last = t.pos[t.nr - 1], one_chunk = hd <= WD_ATTN_DC;
    if (one_chunk) transpose_q(&t, 0, hd);
    for (int p0 = 0; p0 <= last; p0 += WD_ATTN_KB) {
        int nk = last + 1 - p0 < WD_ATTN_KB ? last + 1 - p0 : WD_ATTN_KB;
        for (int d0 = 0; d0 < hd; d0 += WD_ATTN_DC) {
            int dn = hd - d0 < WD_ATTN_DC ? hd - d0 : WD_ATTN_DC;
            if (!one_chunk) transpose_q(&t, d0, dn);
            scores(&t, kb + (size_t)p0 * kvd + d0, kvd, nk, dn, d0 > 0);
        }
        softmax_block(&t, p0, nk, scale);
        int ra = 0; /* rows are in position order: the first with a key in the block */
        while (t.pos[ra] < p0) ra++;
        for (int i = ra; i < t.nr; i++)
            if (t.r[i] != 1.0f) scale_vec(t.orow[i], t.r[i], hd);
        for (int i = ra; i < t.nr; i += 4) {
            int il = i + 3 < t.nr ? i + 3 : t.nr - 1; /* the group's last row sees the most keys */
            int nj = t.pos[il] + 1 - p0 < nk ? t.pos[il] + 1 - p0 : nk;
            pv_rows(&t, i, vb + (size_t)p0 * kvd, kvd, nj, hd);
        }
    }
    for (int i = 0; i < t.nr; i++) scale_vec(t.orow[i], 1.0f / t.l[i], hd);
}

void wd_attention(wd_pool *pool, float *out, const float *q, const float *k, const float *v,
                  int n, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    if (n <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0) return;
    (void)scratch;
    int group = n_heads / n_kv_heads;
    int n_tiles = (int)(((int64_t)n * group + WD_ATTN_ROWS - 1) / WD_ATTN_ROWS);
    attn_ctx c = {out, q, k, v, n, pos0, n_heads, n_kv_heads, head_dim, group, n_tiles};
    int n_tasks = n_tiles * n_kv_heads;
    void (*task)(void *, int, int) = attn_task;
#ifdef WD_AVX512
    if (n == 1) {
        int units = n_kv_heads * ((group + WD_DEC_ROWS - 1) / WD_DEC_ROWS);
        task = attn_dec_task;
        n_tasks = units < wd_pool_size(pool) ? units : wd_pool_size(pool);
    }
#endif
    /* tiny decode contexts are cheaper than a pool hand-off */
    if ((int64_t)n * n_heads * (pos0 + n) * head_dim < 16384) {
        for (int i = 0; i < n_tasks; i++) task(&c, i, n_tasks);
        return;
    }
    wd_pool_run(pool, task, &c, n_tasks);
}
