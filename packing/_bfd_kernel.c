/* Exact Best-Fit-Decreasing placement loop, compiled (optional: packing/bfd.py and
 * packing/online.py fall back to the same steps in Python when this extension is not built).
 *
 * assign(lengths, order, capacity, out, mode=0) -> n_bins
 *   lengths: int64 item sizes, each in [1, capacity]; order: int64 item indices by non-increasing
 *   size, ties by index, or None to have them sorted here (insertion sort: for a few dozen items,
 *   cheaper than a numpy call); out: writable int64, receives each item's bin (bins numbered by
 *   opening).
 *
 * Open bins live in one sorted array of keys room * N + clock (N = n + 1): a binary search finds
 * the smallest room that fits and, between equal rooms, the bin that reached it first (the clock
 * counts insertions). A run of c equal sizes puts min(c, room / s) of them into the chosen bin at
 * once, so the loop steps once per (size, bin). Bins with less room than the smallest item are
 * never stored. The same rules, step for step, as packing.bfd._place_runs. When L is at most a
 * few times n, bins are kept by room instead (Open, below: same choices, no memmove).
 *
 * split_round(...): the bookkeeping of a BufferedPacker round after its BFD (below).
 * stream(...): a whole BufferedPacker push with BFD rounds: buffer, sort, place and split in one
 * call (below). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(_MSC_VER)
#include <intrin.h>
static int ctz64(uint64_t x) { unsigned long i; _BitScanForward64(&i, x); return (int)i; }
#else
#define ctz64 __builtin_ctzll
#endif

static Py_ssize_t lower_bound(const int64_t *a, Py_ssize_t n, int64_t x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + ((hi - lo) >> 1);
        if (a[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* Open bins, in one of two structures that make the same choices (the tests compare them):
 * - sorted: one array of keys room * N + clock, kept sorted (a memmove per step, growing with
 *   the open bins);
 * - rooms: a FIFO of bins per remaining room (oldest first), a bitset of the rooms that hold
 *   any, scanned upward from s, and above it a bitset of its non-zero words (top), so a scan
 *   reads at most two words and a stretch of top (L / 4096 words); no memmove, but O(L) state,
 *   so used when L <= ROOMS_PER_ITEM * n.
 * bin_at maps a clock (one per insertion) to its bin; in rooms, next links a room's FIFO. */
#define ROOMS_PER_ITEM 4
typedef struct {
    int rooms;
    int64_t N, nk, clock, *keys, *bin_at, *head, *tail, *next;
    uint64_t *bits, *top;
    Py_ssize_t W, TW;
} Open;

/* Removes the fullest open bin with room >= s (the oldest on a tie); 0 when there is none. */
static int take_fit(Open *o, int64_t s, int64_t *r, int64_t *b) {
    if (o->rooms) {
        Py_ssize_t w = (Py_ssize_t)(s >> 6);
        uint64_t x = o->bits[w] & (~0ULL << (s & 63));
        if (!x) {  /* the next non-empty word, found through top */
            if (++w >= o->W) return 0;
            Py_ssize_t t = w >> 6;
            uint64_t y = o->top[t] & (~0ULL << (w & 63));
            while (!y && ++t < o->TW) y = o->top[t];
            if (!y) return 0;
            w = (t << 6) + ctz64(y);
            x = o->bits[w];
        }
        *r = ((int64_t)w << 6) + ctz64(x);
        int64_t node = o->head[*r];
        *b = o->bin_at[node];
        if (node != o->tail[*r]) o->head[*r] = o->next[node];
        else if (!(o->bits[w] &= ~(1ULL << (*r & 63)))) o->top[w >> 6] &= ~(1ULL << (w & 63));
        return 1;
    }
    Py_ssize_t i = lower_bound(o->keys, o->nk, s * o->N);
    if (i == o->nk) return 0;
    *r = o->keys[i] / o->N;
    *b = o->bin_at[o->keys[i] % o->N];
    memmove(o->keys + i, o->keys + i + 1, sizeof(int64_t) * (size_t)(o->nk - i - 1));
    o->nk--;
    return 1;
}

static void put(Open *o, int64_t r, int64_t b) {
    int64_t node = o->clock++;
    o->bin_at[node] = b;
    if (o->rooms) {
        if (o->bits[r >> 6] >> (r & 63) & 1) o->next[o->tail[r]] = node;
        else {
            o->head[r] = node;
            o->bits[r >> 6] |= 1ULL << (r & 63);
            o->top[r >> 12] |= 1ULL << (r >> 6 & 63);
        }
        o->tail[r] = node;
        return;
    }
    int64_t key = r * o->N + node;
    Py_ssize_t j = lower_bound(o->keys, o->nk, key);
    memmove(o->keys + j + 1, o->keys + j, sizeof(int64_t) * (size_t)(o->nk - j));
    o->keys[j] = key;
    o->nk++;
}

/* Returns the number of bins, -1 when out of memory, -2 for an index or size out of range.
 * mode: 0 picks the structure, 1 the sorted array, 2 the rooms. */
static int64_t place(const int64_t *len, const int64_t *order, Py_ssize_t n, int64_t L,
                     int64_t *out, int mode) {
    Open o = {0};
    o.N = (int64_t)n + 1;
    if (L < 1 || L > INT64_MAX / o.N) return -2;  /* keys room * N + clock must fit in int64 */
    for (Py_ssize_t t = 0; t < n; t++)  /* never read or write outside the buffers */
        if (order[t] < 0 || order[t] >= n || len[order[t]] < 1 || len[order[t]] > L) return -2;
    o.rooms = mode == 2 || (mode == 0 && L <= ROOMS_PER_ITEM * (int64_t)n);
    o.bin_at = malloc(sizeof(int64_t) * (size_t)n);
    int64_t n_bins = -1, smallest = len[order[n - 1]];
    if (o.rooms) {
        o.W = (Py_ssize_t)(L >> 6) + 1;
        o.head = malloc(sizeof(int64_t) * ((size_t)L + 1));
        o.tail = malloc(sizeof(int64_t) * ((size_t)L + 1));
        o.next = malloc(sizeof(int64_t) * (size_t)n);
        o.TW = (o.W >> 6) + 1;
        o.bits = calloc((size_t)o.W, sizeof(uint64_t));
        o.top = calloc((size_t)o.TW, sizeof(uint64_t));
        if (!o.head || !o.tail || !o.next || !o.bits || !o.top) goto done;
    } else if (!(o.keys = malloc(sizeof(int64_t) * (size_t)n))) goto done;
    if (!o.bin_at) goto done;
    n_bins = 0;
    Py_ssize_t t = 0;
    while (t < n) {
        int64_t s = len[order[t]];
        Py_ssize_t end = t + 1;
        while (end < n && len[order[end]] == s) end++;
        int64_t c = end - t;
        while (c) {
            int64_t r, b;
            if (!take_fit(&o, s, &r, &b)) {
                r = L;
                b = n_bins++;
            }
            int64_t k = r / s;
            if (k > c) k = c;
            r -= k * s;
            c -= k;
            for (int64_t j = 0; j < k; j++) out[order[t++]] = b;
            if (r >= smallest) put(&o, r, b);
        }
    }
done:
    free(o.keys); free(o.bin_at); free(o.head); free(o.tail); free(o.next); free(o.bits);
    free(o.top);
    return n_bins;
}

static int get_i64(PyObject *obj, Py_buffer *view, int flags, const char *name) {
    if (PyObject_GetBuffer(obj, view, flags | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = view->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (view->ndim != 1 || view->itemsize != 8 || (strcmp(f, "q") && strcmp(f, "l"))) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D contiguous int64 buffer", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int64_t sort_and_place(const int64_t *len, Py_ssize_t n, int64_t L, int64_t *out,
                              int mode) {
    int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
    if (!order) return -1;
    for (Py_ssize_t t = 0; t < n; t++) {  /* stable: an item moves only past smaller ones */
        Py_ssize_t j = t;
        while (j > 0 && len[order[j - 1]] < len[t]) { order[j] = order[j - 1]; j--; }
        order[j] = t;
    }
    int64_t n_bins = place(len, order, n, L, out, mode);
    free(order);
    return n_bins;
}

static PyObject *assign(PyObject *self, PyObject *args) {
    PyObject *lo, *oo, *uo;
    long long L;
    int mode = 0;
    Py_buffer lv, ov = {0}, uv;
    if (!PyArg_ParseTuple(args, "OOLO|i:assign", &lo, &oo, &L, &uo, &mode)) return NULL;
    if (get_i64(lo, &lv, PyBUF_SIMPLE, "lengths") < 0) return NULL;
    if (oo != Py_None && get_i64(oo, &ov, PyBUF_SIMPLE, "order") < 0) {
        PyBuffer_Release(&lv); return NULL;
    }
    if (get_i64(uo, &uv, PyBUF_WRITABLE, "out") < 0) {
        PyBuffer_Release(&lv); if (oo != Py_None) PyBuffer_Release(&ov); return NULL;
    }
    Py_ssize_t n = lv.shape[0];
    int64_t n_bins = 0;
    if ((oo != Py_None && ov.shape[0] != n) || uv.shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "lengths, order and out must have the same size");
        n_bins = -3;
    } else if (n > 0) {
        Py_BEGIN_ALLOW_THREADS
        n_bins = oo == Py_None ? sort_and_place(lv.buf, n, (int64_t)L, uv.buf, mode)
                               : place(lv.buf, ov.buf, n, (int64_t)L, uv.buf, mode);
        Py_END_ALLOW_THREADS
        if (n_bins == -1) PyErr_NoMemory();
        if (n_bins == -2)
            PyErr_SetString(PyExc_ValueError, "order, a length or the capacity out of range");
    }
    PyBuffer_Release(&lv); PyBuffer_Release(&uv);
    if (oo != Py_None) PyBuffer_Release(&ov);
    return n_bins < 0 ? NULL : PyLong_FromLongLong(n_bins);
}

/* A BufferedPacker round after its BFD (packing/online.py, _round, has the same rules in numpy):
 * bins with fill < threshold are carried, fewest tokens first (ties by bin), while their total
 * stays within budget (none when final). order receives the buffer positions of the emitted
 * items, bin after bin in bin order and increasing inside, then those of the carried items in
 * buffer order; offsets[0..n_kept] the emitted bins' starts. Returns (n_kept, n_emit). */
static const int64_t *fill_of;
static int by_fill(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (fill_of[x] != fill_of[y]) return fill_of[x] < fill_of[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static PyObject *split_round(PyObject *self, PyObject *args) {
    PyObject *o[4];
    Py_buffer v[4];
    long long n_bins, budget;
    double threshold;
    int final, got = 0;
    if (!PyArg_ParseTuple(args, "OOLdLpOO:split_round", &o[0], &o[1], &n_bins, &threshold,
                          &budget, &final, &o[2], &o[3])) return NULL;
    static const char *names[4] = {"assignment", "lengths", "order", "offsets"};
    for (; got < 4; got++)
        if (get_i64(o[got], &v[got], got < 2 ? PyBUF_SIMPLE : PyBUF_WRITABLE, names[got]) < 0)
            break;
    const int64_t *a = v[0].buf, *len = v[1].buf;
    int64_t *order = v[2].buf, *offsets = v[3].buf, *fill = NULL, *label = NULL, *low = NULL;
    Py_ssize_t n = got == 4 ? v[0].shape[0] : 0, n_low = 0, n_kept = 0, n_emit = 0;
    int err = got < 4;
    if (!err && (n_bins < 0 || v[1].shape[0] != n || v[2].shape[0] != n
                 || v[3].shape[0] <= n_bins)) {
        PyErr_SetString(PyExc_ValueError, "split_round: buffer sizes do not match");
        err = 1;
    }
    if (!err) {
        fill = calloc((size_t)n_bins + 1, sizeof(int64_t));
        label = malloc(sizeof(int64_t) * ((size_t)n_bins + 1));
        low = malloc(sizeof(int64_t) * ((size_t)n_bins + 1));
        if (!fill || !label || !low) { PyErr_NoMemory(); err = 1; }
    }
    for (Py_ssize_t i = 0; !err && i < n; i++) {
        if (a[i] < 0 || a[i] >= n_bins) {
            PyErr_SetString(PyExc_ValueError, "split_round: a bin out of range");
            err = 1;
        } else fill[a[i]] += len[i];
    }
    if (!err) {  /* the GIL stays: qsort's comparator reads a static */
        for (int64_t b = 0; b < n_bins; b++) {
            label[b] = 0;
            if (!final && (double)fill[b] < threshold) low[n_low++] = b;
        }
        fill_of = fill;
        qsort(low, (size_t)n_low, sizeof(int64_t), by_fill);
        for (int64_t k = 0, total = 0; k < n_low && (total += fill[low[k]]) <= budget; k++)
            label[low[k]] = -1;  /* carried */
        for (int64_t b = 0; b < n_bins; b++) label[b] = label[b] < 0 ? -1 : n_kept++;
        for (int64_t b = 0; b <= n_kept; b++) offsets[b] = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (label[a[i]] >= 0) offsets[label[a[i]] + 1]++;
        for (int64_t b = 0; b < n_kept; b++) offsets[b + 1] += offsets[b];
        n_emit = offsets[n_kept];
        for (int64_t b = n_kept; b > 0; b--) offsets[b] = offsets[b - 1];  /* starts, shifted */
        offsets[0] = 0;
        for (Py_ssize_t i = 0, c = n_emit; i < n; i++)
            if (label[a[i]] >= 0) order[offsets[label[a[i]] + 1]++] = i; else order[c++] = i;
    }
    free(fill); free(label); free(low);
    for (int k = 0; k < got; k++) PyBuffer_Release(&v[k]);
    return err ? NULL : Py_BuildValue("nn", n_kept, n_emit);
}

/* Stable sorts of the indices a[0..n) by key[a[i]] in [0, maxkey], ascending, or descending
 * when desc (ties keep the order of a): LSD radix, 8 bits a pass (two at L = 2048 or 8192),
 * insertion below 32 items; tmp holds n more. merge joins two such runs, x's first on a tie.
 * No comparator callback, no global state: they run without the GIL. */
static inline int before(const int64_t *key, int desc, int64_t x, int64_t y) {
    return desc ? key[x] > key[y] : key[x] < key[y];
}

static void rsort(int64_t *a, int64_t *tmp, Py_ssize_t n, const int64_t *key, int64_t maxkey,
                  int desc) {
    if (n < 32) {
        for (Py_ssize_t i = 1; i < n; i++) {
            int64_t v = a[i];
            Py_ssize_t j = i;
            while (j > 0 && before(key, desc, v, a[j - 1])) { a[j] = a[j - 1]; j--; }
            a[j] = v;
        }
        return;
    }
    int64_t *src = a, *dst = tmp;
    for (int shift = 0; shift < 63 && (maxkey >> shift) > 0; shift += 8) {
        Py_ssize_t start[257] = {0};
        for (Py_ssize_t i = 0; i < n; i++) {  /* & 255: a key out of range only sorts wrong */
            int64_t k = desc ? maxkey - key[src[i]] : key[src[i]];
            start[((uint64_t)k >> shift & 255) + 1]++;
        }
        for (int d = 0; d < 256; d++) start[d + 1] += start[d];
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t k = desc ? maxkey - key[src[i]] : key[src[i]];
            dst[start[(uint64_t)k >> shift & 255]++] = src[i];
        }
        int64_t *t = src; src = dst; dst = t;
    }
    if (src != a) memcpy(a, src, sizeof(int64_t) * (size_t)n);
}

static void merge(const int64_t *x, Py_ssize_t nx, const int64_t *y, Py_ssize_t ny, int64_t *out,
                  const int64_t *key, int desc) {
    Py_ssize_t i = 0, j = 0, k = 0;
    while (i < nx && j < ny) out[k++] = before(key, desc, y[j], x[i]) ? y[j++] : x[i++];
    while (i < nx) out[k++] = x[i++];
    while (j < ny) out[k++] = y[j++];
}

/* A BufferedPacker's state for stream() (packing/online.py, BufferedPacker._stream). The
 * buffer holds items at positions 0..n-1 in id order: len and id; its first n_sorted items
 * (those carried from the last round) are listed in `sorted` by non-increasing length, ties by
 * position, so a round sorts only the items that came after them and merges. Emitted bins are
 * appended to out_items / out_offsets (from offsets[0] = 0; n_items and n_bins count what is
 * written). */
typedef struct {
    int64_t *len, *id, *sorted, *out_items, *out_offsets;
    Py_ssize_t cap, n, n_sorted, n_items, n_bins;
    int64_t L, tokens, budget, rounds;
    double threshold;
} Stream;

/* A round's BFD keeps open bins by room over a wider range than place's own rule: measured on
 * lognormal and uniform lengths, as fast or faster than the sorted array up to L = 32n at
 * L = 2048 and 8192 (2x at 8192 with ~500 uniform lengths), but several times slower at
 * L = 65536, so only up to 8192. Same choices either way. */
#define STREAM_ROOMS_PER_ITEM 32
#define STREAM_ROOMS_MAX_L 8192

/* One round: BFD of the buffer (the order of packing.bfd: length down, ties by position), then
 * the split of split_round: bins under threshold carried, fewest tokens first (ties by bin),
 * while their total stays within budget (none when final); the others emitted in bin order,
 * items by position. Carried items move to the front in position order, sorted kept for them.
 * Returns 0, -1 when out of memory, -2 for a length out of range. */
static int stream_round(Stream *s, int final) {
    Py_ssize_t n = s->n, k = n - s->n_sorted, n_low = 0, n_kept = 0, c = 0;
    if (n == 0) return 0;
    int64_t *w = malloc(sizeof(int64_t) * 6 * (size_t)n);
    if (!w) return -1;
    int64_t *order = w, *fresh = w + n, *tmp = w + 2 * n, *bin = w + 3 * n, *fill = w + 4 * n;
    int64_t *label = w + 5 * n, *low = tmp, *newpos = fresh;  /* reused once free */
    for (Py_ssize_t i = 0; i < k; i++) fresh[i] = s->n_sorted + i;
    rsort(fresh, tmp, k, s->len, s->L, 1);
    merge(s->sorted, s->n_sorted, fresh, k, order, s->len, 1);  /* ties: carried (lower) first */
    int rooms = s->L <= STREAM_ROOMS_MAX_L && s->L <= STREAM_ROOMS_PER_ITEM * (int64_t)n;
    int64_t n_bins = place(s->len, order, n, s->L, bin, rooms ? 2 : 0);
    if (n_bins < 0) { free(w); return (int)n_bins; }
    for (int64_t b = 0; b < n_bins; b++) fill[b] = 0;
    for (Py_ssize_t i = 0; i < n; i++) fill[bin[i]] += s->len[i];
    for (int64_t b = 0; b < n_bins; b++) {
        label[b] = 0;
        if (!final && (double)fill[b] < s->threshold) low[n_low++] = b;
    }
    rsort(low, fresh, n_low, fill, s->L, 0);
    s->tokens = 0;
    for (Py_ssize_t j = 0; j < n_low && s->tokens + fill[low[j]] <= s->budget; j++) {
        s->tokens += fill[low[j]];
        label[low[j]] = -1;  /* carried */
    }
    int64_t *offs = s->out_offsets + s->n_bins;  /* offs[0]: where this round's items start */
    for (int64_t b = 0; b < n_bins; b++) label[b] = label[b] < 0 ? -1 : n_kept++;
    for (Py_ssize_t j = 1; j <= n_kept; j++) offs[j] = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (label[bin[i]] >= 0) offs[label[bin[i]] + 1]++;
    offs[0] = s->n_items;
    for (Py_ssize_t j = 0; j < n_kept; j++) offs[j + 1] += offs[j];
    /* starts: bin j's next slot is offs[j], moved on as items land; afterwards offs[j] is bin
     * j's end, i.e. bin j + 1's start, so shift back by one */
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t b = label[bin[i]];
        if (b >= 0) s->out_items[offs[b]++] = s->id[i];
        else {
            newpos[i] = c;
            s->len[c] = s->len[i];
            s->id[c] = s->id[i];
            c++;
        }
    }
    for (Py_ssize_t j = n_kept; j > 0; j--) offs[j] = offs[j - 1];
    offs[0] = s->n_items;
    s->n_items = offs[n_kept];
    s->n_bins += n_kept;
    for (Py_ssize_t t = 0, j = 0; t < n; t++)  /* the carried, still by length then position */
        if (label[bin[order[t]]] < 0) s->sorted[j++] = newpos[order[t]];
    s->n = s->n_sorted = c;
    s->rounds++;
    free(w);
    return 0;
}

/* stream(len, id, sorted, n, n_sorted, tokens, new, first_id, capacity, buffer_tokens,
 *        threshold, budget, final, out_items, out_offsets) -> (n, n_sorted, tokens, rounds,
 *        n_items, n_bins)
 * A BufferedPacker push: the items of new (ids first_id, first_id + 1, ...) enter the buffer
 * one by one, and whenever it holds buffer_tokens tokens or more a round runs; with final, a
 * last round packs what is left (a flush). len, id and sorted are the buffer (writable, room
 * for every item it can hold); out_items and out_offsets receive the emitted bins (room for
 * n + len(new) items and one more offset); rounds counts those run. */
static PyObject *stream(PyObject *self, PyObject *args) {
    PyObject *o[6];
    Py_buffer v[6];
    Py_ssize_t n, n_sorted;
    long long tokens, first_id, L, buffer_tokens, budget;
    double threshold;
    int final, got = 0, err = 0;
    if (!PyArg_ParseTuple(args, "OOOnnLOLLLdLpOO:stream", &o[0], &o[1], &o[2], &n, &n_sorted,
                          &tokens, &o[3], &first_id, &L, &buffer_tokens, &threshold, &budget,
                          &final, &o[4], &o[5])) return NULL;
    static const char *names[6] = {"len", "id", "sorted", "new", "out_items", "out_offsets"};
    for (; got < 6; got++)
        if (get_i64(o[got], &v[got], got == 3 ? PyBUF_SIMPLE : PyBUF_WRITABLE, names[got]) < 0)
            break;
    Stream s = {0};
    Py_ssize_t n_new = got == 6 ? v[3].shape[0] : 0;
    if (got < 6) err = 1;
    else if (n < 0 || n_sorted < 0 || n_sorted > n || n > v[0].shape[0]
             || v[1].shape[0] != v[0].shape[0] || v[2].shape[0] != v[0].shape[0]
             || v[4].shape[0] < n + n_new || v[5].shape[0] < n + n_new + 1) {
        PyErr_SetString(PyExc_ValueError, "stream: buffer sizes do not match");
        err = 1;
    } else {
        s.len = v[0].buf; s.id = v[1].buf; s.sorted = v[2].buf; s.cap = v[0].shape[0];
        s.out_items = v[4].buf; s.out_offsets = v[5].buf;
        s.n = n; s.n_sorted = n_sorted; s.L = L; s.tokens = tokens; s.budget = budget;
        s.threshold = threshold;
        char *seen = calloc((size_t)n_sorted + 1, 1);  /* a permutation: every item placed */
        if (!seen) { PyErr_NoMemory(); err = 1; }
        for (Py_ssize_t i = 0; !err && i < n_sorted; i++) {
            if (s.sorted[i] < 0 || s.sorted[i] >= n_sorted || seen[s.sorted[i]]++) {
                PyErr_SetString(PyExc_ValueError, "stream: sorted is not a permutation of the "
                                "carried positions");
                err = 1;
            }
        }
        free(seen);
        const int64_t *add = v[3].buf;
        for (Py_ssize_t j = 0; !err && j < n_new; j++)  /* checked before anything changes */
            if (add[j] < 1 || add[j] > L) {
                PyErr_Format(PyExc_ValueError, "stream: new[%zd] = %lld is out of [1, %lld]", j,
                             (long long)add[j], L);
                err = 1;
            }
    }
    int rc = 0;
    if (!err) {
        const int64_t *add = v[3].buf;
        s.out_offsets[0] = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t j = 0; j < n_new && rc == 0; j++) {
            if (s.n == s.cap) { rc = -3; break; }
            s.len[s.n] = add[j];
            s.id[s.n++] = first_id + j;
            s.tokens += add[j];
            if (s.tokens >= buffer_tokens) rc = stream_round(&s, 0);
        }
        if (rc == 0 && final) rc = stream_round(&s, 1);
        Py_END_ALLOW_THREADS
        if (rc == -1) PyErr_NoMemory();
        if (rc == -2)
            PyErr_SetString(PyExc_ValueError, "stream: a length or the capacity out of range");
        if (rc == -3)
            PyErr_SetString(PyExc_ValueError, "stream: the buffer is full before a round");
        err = rc != 0;
    }
    for (int k = 0; k < got; k++) PyBuffer_Release(&v[k]);
    if (err) return NULL;
    return Py_BuildValue("nnLLnn", s.n, s.n_sorted, (long long)s.tokens, (long long)s.rounds,
                         s.n_items, s.n_bins);
}

static PyMethodDef methods[] = {
    {"assign", assign, METH_VARARGS,
     "assign(lengths, order, capacity, out, mode=0) -> n_bins: exact BFD."},
    {"split_round", split_round, METH_VARARGS,
     "split_round(assignment, lengths, n_bins, threshold, budget, final, order, offsets)"},
    {"stream", stream, METH_VARARGS,
     "stream(len, id, sorted, n, n_sorted, tokens, new, first_id, capacity, buffer_tokens, "
     "threshold, budget, final, out_items, out_offsets): a BufferedPacker push, rounds and all"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bfd_kernel",
                                    "Compiled placement loop of packing.bfd.", -1, methods};

PyMODINIT_FUNC PyInit__bfd_kernel(void) {
    PyObject *m = PyModule_Create(&module);
    /* packing.bfd uses the kernel only when this matches: a stale build falls back to Python */
    if (m && PyModule_AddIntConstant(m, "VERSION", 5) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
