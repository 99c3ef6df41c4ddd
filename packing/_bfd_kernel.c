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
 * split_round(...): the bookkeeping of a BufferedPacker round after its BFD (below). */
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
 * - rooms: a FIFO of bins per remaining room (oldest first) and a bitset of the rooms that hold
 *   any, scanned upward from s; no memmove, but O(L) state, so used when L <= ROOMS_PER_ITEM * n.
 * bin_at maps a clock (one per insertion) to its bin; in rooms, next links a room's FIFO. */
#define ROOMS_PER_ITEM 4
typedef struct {
    int rooms;
    int64_t N, nk, clock, *keys, *bin_at, *head, *tail, *next;
    uint64_t *bits;
    Py_ssize_t W;
} Open;

/* Removes the fullest open bin with room >= s (the oldest on a tie); 0 when there is none. */
static int take_fit(Open *o, int64_t s, int64_t *r, int64_t *b) {
    if (o->rooms) {
        Py_ssize_t w = (Py_ssize_t)(s >> 6);
        uint64_t x = o->bits[w] & (~0ULL << (s & 63));
        while (!x && ++w < o->W) x = o->bits[w];
        if (!x) return 0;
        *r = ((int64_t)w << 6) + ctz64(x);
        int64_t node = o->head[*r];
        *b = o->bin_at[node];
        if (node == o->tail[*r]) o->bits[*r >> 6] &= ~(1ULL << (*r & 63));
        else o->head[*r] = o->next[node];
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
        else { o->head[r] = node; o->bits[r >> 6] |= 1ULL << (r & 63); }
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
        o.bits = calloc((size_t)o.W, sizeof(uint64_t));
        if (!o.head || !o.tail || !o.next || !o.bits) goto done;
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

static PyMethodDef methods[] = {
    {"assign", assign, METH_VARARGS,
     "assign(lengths, order, capacity, out, mode=0) -> n_bins: exact BFD."},
    {"split_round", split_round, METH_VARARGS,
     "split_round(assignment, lengths, n_bins, threshold, budget, final, order, offsets)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bfd_kernel",
                                    "Compiled placement loop of packing.bfd.", -1, methods};

PyMODINIT_FUNC PyInit__bfd_kernel(void) {
    PyObject *m = PyModule_Create(&module);
    /* packing.bfd uses the kernel only when this matches: a stale build falls back to Python */
    if (m && PyModule_AddIntConstant(m, "VERSION", 4) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
