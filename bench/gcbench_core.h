/* gcbench_core.h -- GCBench (Hans Boehm and John Ellis, after the Java
 * version by John Ellis and Pete Kovac), written once against a small
 * allocation interface and compiled twice:
 *
 *   bench/gcbench.c        libstm         -> build/<v>/bench/gcbench
 *   bench/gcbench_boehm.c  Boehm GC 8.x   -> build/<v>/bench/gcbench_boehm
 *
 * bench/gcbench.sh builds both, runs each configuration in its own process
 * (peak RSS is per process) and prints them side by side.
 *
 * The program, as in the classic:
 *   1. "stretch" the heap with a bottom-up tree of depth --stretch-depth
 *      (default max-depth + 1), dropped at once;
 *   2. build the long-lived data: a top-down tree of depth 16 and an array
 *      of 500,000 doubles whose first half is filled with 1.0/i;
 *   3. for depth = 4, 6, ..., max-depth (default 16, at most 20) build
 *      count = 2 * TreeSize(stretch) / TreeSize(depth) temporary trees top
 *      down (Populate: allocate the children, store them into the older
 *      parent) and as many bottom up (MakeTree), dropping each at once.
 *   Nodes are { left, right, int i, j } behind the collector's header.
 *   Wall time = phases 1 + 2 (setup) + phase 3.
 *
 * Threads (--threads N): phases 1 and 2 run once, in the main thread; then
 * N threads (the main thread and N-1 new ones) each run the whole of phase
 * 3 on their own, at the same time, so N threads allocate N times as much
 * (weak scaling).  The long-lived tree and array are SHARED: there is one
 * copy, built by the main thread (published with stm_publish for libstm),
 * which the collector must keep alive and trace for every thread; as in
 * the classic, phase 3 never touches them.  They are read back once at the
 * end by the checker.
 *
 * Checking (so that a collector bug is a failure, not just a number): every
 * node carries its height in `i` and 0 in `j`; a tree of depth d is checked
 * by walking it (d+1 levels, leaves without children, every label right,
 * TreeSize(d) nodes).  The stretch tree, the last tree of every batch
 * (--check last, the default: about 2% more node visits than allocations;
 * --check all walks every tree, --check none skips the temporaries), the
 * long-lived tree and every filled element of the array are checked.  The
 * walks of temporary trees are inside the timed phase, on both sides.
 * Exit status 1 if anything is wrong.
 *
 * The interface a backend defines BEFORE including this file:
 *   GB_GC_NAME          "libstm" or "boehm"
 *   GB_NODE_HEADER      the members a node starts with (may be empty)
 *   GB_PUSH(v)/GB_POP(v) keep pointer variable v alive and up to date
 *                       across a call that may collect (a moving collector
 *                       updates it: GB_POP assigns v); pops in reverse order
 *   GB_READ(p)/GB_WRITE(p) the copy of node p to read / to write
 *   GB_DONE             what a job function returns
 * and AFTER including it, the functions declared under "Backend" below. */
#ifndef BENCH_GCBENCH_CORE_H
#define BENCH_GCBENCH_CORE_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"

/* ------------------------------------------------------------------ */
/* Parameters                                                          */
/* ------------------------------------------------------------------ */

#define GB_MIN_TREE_DEPTH 4           /* kMinTreeDepth */
#define GB_DEFAULT_MAX_DEPTH 16       /* kMaxTreeDepth */
#define GB_MAX_MAX_DEPTH 20
#define GB_LONG_LIVED_DEPTH 16        /* kLongLivedTreeDepth */
#define GB_ARRAY_SIZE 500000          /* kArraySize */
#define GB_DEFAULT_HEAP_MB 64         /* for max-depth 16; doubled per level above */
#define GB_MAX_THREADS 64
#define GB_NDEPTHS ((GB_MAX_MAX_DEPTH - GB_MIN_TREE_DEPTH) / 2 + 1)
#define GB_MAX_REPORTED_DEFECTS 10

enum gb_kind { GB_TOP_DOWN, GB_BOTTOM_UP };
enum gb_check { GB_CHECK_NONE, GB_CHECK_LAST, GB_CHECK_ALL };
static const char *const gb_check_names[] = { "none", "last", "all" };

typedef struct gb_opts {
    int threads;
    int max_depth;
    int stretch_depth;
    int long_lived_depth;
    long array_size;
    long heap_mb;
    int markers;           /* Boehm only: GC_set_markers_count (0: its default) */
    long tx_trees;         /* libstm only: temporary trees per transaction at
                              most (0: as many as stm_should_break allows) */
    enum gb_check check;
    bool json;
    bool pin;
    bool callbacks;        /* libstm only: no stm_register_layout, every object
                              sized and traced by the callbacks */
} gb_opts;

/* TreeSize: nodes in a complete tree of depth d. */
static inline long gb_tree_size(int d)
{
    return (1L << (d + 1)) - 1;
}

/* NumIters. */
static inline long gb_num_iters(const gb_opts *o, int d)
{
    return 2 * gb_tree_size(o->stretch_depth) / gb_tree_size(d);
}

/* ------------------------------------------------------------------ */
/* Nodes and the backend                                               */
/* ------------------------------------------------------------------ */

typedef struct gb_node {
    GB_NODE_HEADER
    struct gb_node *left;
    struct gb_node *right;
    int i, j;
} gb_node;

/* A job: run once (Boehm) or as a transaction (libstm, stm_run).  It must
 * only assign its results to C memory (an aborted attempt is run again and
 * overwrites them) and return GB_DONE. */
typedef int gb_job_fn(void *arg);

/* The collector's figures for the whole process.  NaN / -1: not measured. */
typedef struct gb_gcstats {
    long long minor, major;            /* Boehm: every collection is "major" */
    double minor_p50_ms, minor_p99_ms, minor_max_ms, minor_total_ms;
    double major_p50_ms, major_p99_ms, major_max_ms, major_total_ms;
    double heap_peak_mib;
} gb_gcstats;

/* Backend: set up the collector with o->heap_mb MiB of heap, attach the
 * main thread. */
static void gb_backend_init(const gb_opts *o);
/* A zeroed node; may collect.  Never NULL (out of memory is fatal). */
static gb_node *gb_alloc_node(void);
static void gb_run_job(gb_job_fn *fn, void *arg);
/* Builds the long-lived tree (gb_make_top_down) and array (filled by
 * gb_fill_array) and keeps them where every thread can reach them. */
static void gb_build_long_lived(const gb_opts *o);
static gb_node *gb_long_lived_tree(void);           /* inside a job */
static const double *gb_long_lived_array(void);     /* inside a job */
/* Per thread, around phase 3 (index 0 is the main thread). */
static void gb_thread_begin(int index);
static void gb_thread_end(int index);
/* Builds n temporary trees of one kind and depth (calling gb_build_tree),
 * checking those gb_check_this selects; returns the defects found. */
static long gb_run_batch(const gb_opts *o, enum gb_kind kind, int depth, long n);
static void gb_get_gcstats(gb_gcstats *st);
/* Extra JSON members (each preceded by a comma) and a one-line
 * description for the human report. */
static void gb_backend_json(FILE *f);
static void gb_backend_describe(FILE *f);

/* ------------------------------------------------------------------ */
/* The benchmark proper                                                */
/* ------------------------------------------------------------------ */

/* Build tree bottom-up (MakeTree).  Both subtrees stay on the shadow stack
 * across the allocations that follow them. */
static gb_node *gb_make_tree(int depth)
{
    if (depth <= 0)
        return gb_alloc_node();
    gb_node *left = gb_make_tree(depth - 1);
    GB_PUSH(left);
    gb_node *right = gb_make_tree(depth - 1);
    GB_PUSH(right);
    gb_node *n = gb_alloc_node();
    GB_POP(right);
    GB_POP(left);
    gb_node *w = GB_WRITE(n);
    w->left = left;
    w->right = right;
    w->i = depth;
    return n;
}

/* Build tree top down, assigning to older objects (Populate).  `node` must
 * be reachable from a root the caller holds (the tree under construction
 * stays alive, as on the classic's C stack). */
static void gb_populate(int depth, gb_node *node)
{
    if (depth <= 0)
        return;
    GB_PUSH(node);
    gb_node *left = gb_alloc_node();
    GB_PUSH(left);
    gb_node *right = gb_alloc_node();
    GB_POP(left);
    GB_POP(node);
    gb_node *w = GB_WRITE(node);
    w->left = left;
    w->right = right;
    w->i = depth;
    GB_PUSH(node);
    gb_populate(depth - 1, left);
    GB_POP(node);
    gb_populate(depth - 1, GB_READ(node)->right);
}

static gb_node *gb_make_top_down(int depth)
{
    gb_node *root = gb_alloc_node();
    GB_PUSH(root);
    gb_populate(depth, root);
    GB_POP(root);
    return root;
}

/* Walks a tree that should be complete of depth `depth`; counts the nodes
 * into *count and returns the defects (wrong label, missing child, child
 * below a leaf).  Never allocates. */
static long gb_walk(const gb_node *n, int depth, long *count)
{
    if (!n)
        return 1;
    const gb_node *r = GB_READ(n);
    ++*count;
    long bad = (r->i != depth) + (r->j != 0);
    const gb_node *left = r->left, *right = r->right;
    if (depth <= 0)
        return bad + (left != NULL) + (right != NULL);
    bad += gb_walk(left, depth - 1, count);
    bad += gb_walk(right, depth - 1, count);
    return bad;
}

static long gb_check_tree(const char *what, const gb_node *root, int depth)
{
    static _Atomic int reported;
    long count = 0;
    long bad = gb_walk(root, depth, &count);
    if (count != gb_tree_size(depth))
        bad++;
    if (bad && reported++ < GB_MAX_REPORTED_DEFECTS)
        fprintf(stderr, "gcbench: %s tree of depth %d: %ld nodes (expected %ld), %ld defects\n",
                what, depth, count, gb_tree_size(depth), bad);
    return bad;
}

static inline bool gb_check_this(const gb_opts *o, long k, long n)
{
    return o->check == GB_CHECK_ALL || (o->check == GB_CHECK_LAST && k == n - 1);
}

/* One temporary tree, dropped on return. */
static long gb_build_tree(enum gb_kind kind, int depth, bool check)
{
    gb_node *root = kind == GB_TOP_DOWN ? gb_make_top_down(depth) : gb_make_tree(depth);
    if (!check)
        return 0;
    return gb_check_tree(kind == GB_TOP_DOWN ? "top-down" : "bottom-up", root, depth);
}

static void gb_fill_array(double *a, long n)
{
    for (long i = 0; i < n / 2; i++)
        a[i] = 1.0 / (double)i;          /* a[0] = inf, as in the classic */
}

/* Jobs (see gb_job_fn). */
typedef struct gb_stretch_job {
    int depth;
    bool check;
    long defects;        /* out */
} gb_stretch_job;

static int gb_stretch(void *arg)
{
    gb_stretch_job *j = arg;
    gb_node *t = gb_make_tree(j->depth);
    j->defects = j->check ? gb_check_tree("stretch", t, j->depth) : 0;
    return GB_DONE;
}

typedef struct gb_final_check_job {
    const gb_opts *o;
    long tree_defects, array_defects;  /* out */
} gb_final_check_job;

static int gb_final_check(void *arg)
{
    gb_final_check_job *j = arg;
    j->tree_defects = gb_check_tree("long-lived", gb_long_lived_tree(), j->o->long_lived_depth);
    const double *a = gb_long_lived_array();
    long bad = 0;
    for (long i = 0; i < j->o->array_size / 2; i++)
        bad += !(a[i] == 1.0 / (double)i);
    if (bad)
        fprintf(stderr, "gcbench: long-lived array: %ld of %ld elements wrong\n", bad,
                j->o->array_size / 2);
    j->array_defects = bad;
    return GB_DONE;
}

/* ------------------------------------------------------------------ */
/* Threads and pinning                                                 */
/* ------------------------------------------------------------------ */

typedef struct gb_worker {
    int index;
    pthread_t th;
    int pu;                              /* OS index of its CPU, -1: unpinned */
    const gb_opts *o;
    uint64_t start_ns, end_ns;           /* its phase 3 */
    double topdown_ms[GB_NDEPTHS], bottomup_ms[GB_NDEPTHS];
    long defects;
    long trees;
} gb_worker;

static pthread_barrier_t gb_start;
static hwloc_topology_t gb_topo;
static hwloc_bitmap_t gb_usable;          /* allowed CPUs of the process */

static void gb_pin_init(void)
{
    if (hwloc_topology_init(&gb_topo) != 0 || hwloc_topology_load(gb_topo) != 0) {
        fprintf(stderr, "gcbench: hwloc failed; running unpinned\n");
        return;
    }
    gb_usable = hwloc_bitmap_alloc();
    if (hwloc_get_cpubind(gb_topo, gb_usable, HWLOC_CPUBIND_PROCESS) != 0)
        hwloc_bitmap_copy(gb_usable, hwloc_topology_get_allowed_cpuset(gb_topo));
    else
        hwloc_bitmap_and(gb_usable, gb_usable, hwloc_topology_get_allowed_cpuset(gb_topo));
    if (hwloc_bitmap_iszero(gb_usable)) {
        hwloc_bitmap_free(gb_usable);
        gb_usable = NULL;
    }
}

/* Binds the calling thread to the k-th usable PU counting from the last
 * one (CPU 0 usually takes more of the interrupts), wrapping around.
 * Returns its OS index or -1. */
static int gb_pin_self(int k)
{
    if (!gb_usable)
        return -1;
    int n = hwloc_bitmap_weight(gb_usable);
    int pu = hwloc_bitmap_first(gb_usable);
    for (int skip = n - 1 - k % n; skip > 0 && pu >= 0; skip--)
        pu = hwloc_bitmap_next(gb_usable, pu);
    if (pu < 0)
        return -1;
    hwloc_bitmap_t one = hwloc_bitmap_alloc();
    hwloc_bitmap_only(one, (unsigned)pu);
    int r = hwloc_set_cpubind(gb_topo, one, HWLOC_CPUBIND_THREAD);
    hwloc_bitmap_free(one);
    return r == 0 ? pu : -1;
}

static void *gb_worker_main(void *arg)
{
    gb_worker *w = arg;
    const gb_opts *o = w->o;
    gb_thread_begin(w->index);
    if (w->index > 0)            /* the main thread is pinned already */
        w->pu = o->pin ? gb_pin_self(w->index) : -1;
    pthread_barrier_wait(&gb_start);
    w->start_ns = bench_now_ns();
    int di = 0;
    for (int d = GB_MIN_TREE_DEPTH; d <= o->max_depth; d += 2, di++) {
        long n = gb_num_iters(o, d);
        uint64_t t0 = bench_now_ns();
        w->defects += gb_run_batch(o, GB_TOP_DOWN, d, n);
        uint64_t t1 = bench_now_ns();
        w->defects += gb_run_batch(o, GB_BOTTOM_UP, d, n);
        uint64_t t2 = bench_now_ns();
        w->topdown_ms[di] = (double)(t1 - t0) / 1e6;
        w->bottomup_ms[di] = (double)(t2 - t1) / 1e6;
        w->trees += 2 * n;
    }
    w->end_ns = bench_now_ns();
    gb_thread_end(w->index);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static void gb_usage(FILE *f)
{
    fprintf(f,
            "usage: gcbench%s [options]    (GCBench on %s; bench/gcbench.sh compares both)\n"
            "  --threads N          threads in the temporary-tree phase, each doing the\n"
            "                       whole phase (default 1, at most %d)\n"
            "  --max-depth D        deepest temporary trees, %d..%d (default %d)\n"
            "  --stretch-depth D    depth of the stretch tree (default max-depth + 1; the\n"
            "                       1997 C version uses 18 with max-depth 16)\n"
            "  --long-lived-depth D (default %d)\n"
            "  --array-size N       long-lived doubles (default %d)\n"
            "  --heap-mb M          heap budget in MiB, the same for both collectors\n"
            "                       (default %d, doubled per max-depth level above 16)\n"
            "  --markers N          Boehm only: marker threads (default: its own choice)\n"
            "  --tx-trees N         libstm only: at most N temporary trees per transaction\n"
            "                       (default 0: until stm_should_break says to commit)\n"
            "  --check none|last|all  which temporary trees to walk (default last)\n"
            "  --no-pin             do not bind threads to CPUs\n"
            "  --callbacks          libstm only: size and trace nodes through the\n"
            "                       callbacks, not a registered layout\n"
            "  --json               one JSON object on stdout instead of the report\n",
            strcmp(GB_GC_NAME, "boehm") ? "" : "_boehm", GB_GC_NAME, GB_MAX_THREADS,
            GB_MIN_TREE_DEPTH, GB_MAX_MAX_DEPTH, GB_DEFAULT_MAX_DEPTH, GB_LONG_LIVED_DEPTH,
            GB_ARRAY_SIZE, GB_DEFAULT_HEAP_MB);
}

static long gb_parse_long(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "gcbench: %s: expected %ld..%ld, got '%s'\n", opt, lo, hi, s);
        exit(2);
    }
    return v;
}

static void gb_parse_args(int argc, char **argv, gb_opts *o)
{
    *o = (gb_opts){ .threads = 1, .max_depth = GB_DEFAULT_MAX_DEPTH, .stretch_depth = -1,
                    .long_lived_depth = GB_LONG_LIVED_DEPTH, .array_size = GB_ARRAY_SIZE,
                    .heap_mb = -1, .check = GB_CHECK_LAST, .pin = true };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            gb_usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--no-pin")) {
            o->pin = false;
        } else if (!strcmp(a, "--callbacks")) {
            o->callbacks = true;
        } else if (!v) {
            fprintf(stderr, "gcbench: unknown option or missing value: %s\n", a);
            gb_usage(stderr);
            exit(2);
        } else if (!strcmp(a, "--threads")) {
            o->threads = (int)gb_parse_long(a, v, 1, GB_MAX_THREADS), i++;
        } else if (!strcmp(a, "--max-depth")) {
            o->max_depth = (int)gb_parse_long(a, v, GB_MIN_TREE_DEPTH, GB_MAX_MAX_DEPTH), i++;
        } else if (!strcmp(a, "--stretch-depth")) {
            o->stretch_depth = (int)gb_parse_long(a, v, 1, GB_MAX_MAX_DEPTH + 2), i++;
        } else if (!strcmp(a, "--long-lived-depth")) {
            o->long_lived_depth = (int)gb_parse_long(a, v, 0, GB_MAX_MAX_DEPTH), i++;
        } else if (!strcmp(a, "--array-size")) {
            o->array_size = gb_parse_long(a, v, 2, 1L << 26), i++;
        } else if (!strcmp(a, "--heap-mb")) {
            o->heap_mb = gb_parse_long(a, v, 8, 1L << 20), i++;
        } else if (!strcmp(a, "--markers")) {
            o->markers = (int)gb_parse_long(a, v, 0, 256), i++;
        } else if (!strcmp(a, "--tx-trees")) {
            o->tx_trees = gb_parse_long(a, v, 0, 1L << 30), i++;
        } else if (!strcmp(a, "--check")) {
            i++;
            if (!strcmp(v, "none"))
                o->check = GB_CHECK_NONE;
            else if (!strcmp(v, "last"))
                o->check = GB_CHECK_LAST;
            else if (!strcmp(v, "all"))
                o->check = GB_CHECK_ALL;
            else {
                fprintf(stderr, "gcbench: --check: expected none, last or all, got '%s'\n", v);
                exit(2);
            }
        } else {
            fprintf(stderr, "gcbench: unknown option: %s\n", a);
            gb_usage(stderr);
            exit(2);
        }
    }
    if (o->stretch_depth < 0)
        o->stretch_depth = o->max_depth + 1;
    if (o->stretch_depth < o->max_depth) {
        fprintf(stderr, "gcbench: --stretch-depth must be at least --max-depth\n");
        exit(2);
    }
    if (o->heap_mb < 0)
        o->heap_mb = (long)GB_DEFAULT_HEAP_MB
                     << (o->max_depth > GB_DEFAULT_MAX_DEPTH ? o->max_depth - GB_DEFAULT_MAX_DEPTH
                                                             : 0);
}

/* ------------------------------------------------------------------ */
/* Report                                                              */
/* ------------------------------------------------------------------ */

static void gb_json_num(FILE *f, const char *key, double v)
{
    if (isnan(v))
        fprintf(f, ",\"%s\":null", key);
    else
        fprintf(f, ",\"%s\":%.4f", key, v);
}

static void gb_json_array(FILE *f, const char *key, const double *v, int n)
{
    fprintf(f, ",\"%s\":[", key);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.3f", i ? "," : "", v[i]);
    fputc(']', f);
}

static void gb_ms3(FILE *f, double p50, double p99, double max)
{
    if (isnan(max))
        fprintf(f, "-");
    else
        fprintf(f, "%.3f / %.3f / %.3f ms", p50, p99, max);
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    gb_opts o;
    gb_parse_args(argc, argv, &o);
    gb_backend_init(&o);
    if (o.pin)
        gb_pin_init();
    gb_worker *workers = calloc((size_t)o.threads, sizeof *workers);
    if (!workers) {
        fprintf(stderr, "gcbench: out of memory\n");
        return 1;
    }
    /* Pinned after the collector started its own threads (Boehm's markers),
     * which must not inherit the binding. */
    workers[0].pu = o.pin ? gb_pin_self(0) : -1;

    /* Phases 1 and 2, in the main thread. */
    uint64_t t0 = bench_now_ns();
    gb_stretch_job sj = { .depth = o.stretch_depth, .check = o.check != GB_CHECK_NONE };
    gb_run_job(gb_stretch, &sj);
    uint64_t t1 = bench_now_ns();
    gb_build_long_lived(&o);
    uint64_t t2 = bench_now_ns();

    /* Phase 3, in every thread. */
    pthread_barrier_init(&gb_start, NULL, (unsigned)o.threads);
    for (int k = 0; k < o.threads; k++) {
        workers[k].index = k;
        workers[k].o = &o;
    }
    for (int k = 1; k < o.threads; k++) {
        if (pthread_create(&workers[k].th, NULL, gb_worker_main, &workers[k]) != 0) {
            fprintf(stderr, "gcbench: pthread_create failed\n");
            return 1;
        }
    }
    gb_worker_main(&workers[0]);
    uint64_t p3_start = workers[0].start_ns, p3_end = workers[0].end_ns;
    for (int k = 1; k < o.threads; k++) {
        pthread_join(workers[k].th, NULL);
        if (workers[k].start_ns < p3_start)
            p3_start = workers[k].start_ns;
        if (workers[k].end_ns > p3_end)
            p3_end = workers[k].end_ns;
    }
    gb_gcstats gs;
    gb_get_gcstats(&gs);

    /* Checks, outside the timed phases. */
    gb_final_check_job fj = { .o = &o };
    gb_run_job(gb_final_check, &fj);
    long defects = sj.defects + fj.tree_defects + fj.array_defects, trees = 0;
    for (int k = 0; k < o.threads; k++) {
        defects += workers[k].defects;
        trees += workers[k].trees;
    }
    bool ok = defects == 0;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mib = (double)ru.ru_maxrss / 1024.0;          /* KiB on Linux */
    double stretch_s = (double)(t1 - t0) / 1e9, long_lived_s = (double)(t2 - t1) / 1e9;
    double setup_s = (double)(t2 - t0) / 1e9, temp_s = (double)(p3_end - p3_start) / 1e9;
    double wall_s = setup_s + temp_s;
    int ndepths = (o.max_depth - GB_MIN_TREE_DEPTH) / 2 + 1;
    long long gcs = (gs.minor > 0 ? gs.minor : 0) + (gs.major > 0 ? gs.major : 0);
    long nodes = gb_tree_size(o.stretch_depth) + gb_tree_size(o.long_lived_depth);
    for (int d = GB_MIN_TREE_DEPTH; d <= o.max_depth; d += 2)
        nodes += (long)o.threads * 2 * gb_num_iters(&o, d) * gb_tree_size(d);

    if (o.json) {
        FILE *f = stdout;
        fprintf(f, "{\"benchmark\":\"gcbench\",\"gc\":\"%s\",\"threads\":%d,\"ok\":%s,"
                   "\"defects\":%ld,\"max_depth\":%d,\"min_depth\":%d,\"stretch_depth\":%d,"
                   "\"long_lived_depth\":%d,\"array_size\":%ld,\"heap_mb\":%ld,\"check\":\"%s\","
                   "\"node_bytes\":%zu,\"tx_trees\":%ld,\"trees\":%ld,\"nodes\":%ld,\"gc_count\":%lld",
                GB_GC_NAME, o.threads, ok ? "true" : "false", defects, o.max_depth,
                GB_MIN_TREE_DEPTH, o.stretch_depth, o.long_lived_depth, o.array_size, o.heap_mb,
                gb_check_names[o.check], sizeof(gb_node), o.tx_trees, trees, nodes, gcs);
        if (gs.minor >= 0)
            fprintf(f, ",\"minor_gcs\":%lld", gs.minor);
        else
            fprintf(f, ",\"minor_gcs\":null");
        fprintf(f, ",\"major_gcs\":%lld", gs.major);
        gb_json_num(f, "wall_s", wall_s);
        gb_json_num(f, "setup_s", setup_s);
        gb_json_num(f, "stretch_s", stretch_s);
        gb_json_num(f, "long_lived_s", long_lived_s);
        gb_json_num(f, "temp_s", temp_s);
        gb_json_num(f, "minor_p50_ms", gs.minor_p50_ms);
        gb_json_num(f, "minor_p99_ms", gs.minor_p99_ms);
        gb_json_num(f, "minor_max_ms", gs.minor_max_ms);
        gb_json_num(f, "minor_total_ms", gs.minor_total_ms);
        gb_json_num(f, "major_p50_ms", gs.major_p50_ms);
        gb_json_num(f, "major_p99_ms", gs.major_p99_ms);
        gb_json_num(f, "major_max_ms", gs.major_max_ms);
        gb_json_num(f, "major_total_ms", gs.major_total_ms);
        gb_json_num(f, "peak_rss_mib", rss_mib);
        gb_json_num(f, "heap_peak_mib", gs.heap_peak_mib);
        fprintf(f, ",\"cpus\":\"");
        for (int k = 0; k < o.threads; k++)
            fprintf(f, "%s%d", k ? "," : "", workers[k].pu);
        fprintf(f, "\",\"compiler\":\"%s\"", bench_compiler());
        gb_backend_json(f);
        gb_json_array(f, "topdown_ms", workers[0].topdown_ms, ndepths);
        gb_json_array(f, "bottomup_ms", workers[0].bottomup_ms, ndepths);
        fprintf(f, "}\n");
    } else {
        printf("GCBench on %s, %d thread%s (", GB_GC_NAME, o.threads, o.threads > 1 ? "s" : "");
        for (int k = 0; k < o.threads; k++)
            printf("%s%s%d", k ? ", " : "", workers[k].pu >= 0 ? "CPU " : "unpinned",
                   workers[k].pu >= 0 ? workers[k].pu : 0);
        printf("), heap budget %ld MiB, %zu-byte nodes\n", o.heap_mb, sizeof(gb_node));
        printf("  ");
        gb_backend_describe(stdout);
        printf("\n");
        printf(" Stretching memory with a binary tree of depth %d: %.1f ms\n", o.stretch_depth,
               stretch_s * 1e3);
        printf(" Creating a long-lived binary tree of depth %d and an array of %ld doubles: "
               "%.1f ms\n", o.long_lived_depth, o.array_size, long_lived_s * 1e3);
        int di = 0;
        for (int d = GB_MIN_TREE_DEPTH; d <= o.max_depth; d += 2, di++)
            printf(" Creating %ld trees of depth %d: top down %.1f ms, bottom up %.1f ms%s\n",
                   gb_num_iters(&o, d), d, workers[0].topdown_ms[di], workers[0].bottomup_ms[di],
                   o.threads > 1 ? " (thread 0)" : "");
        printf(" Completed in %.3f s (set-up %.3f s, temporary trees %.3f s); "
               "%ld trees, %ld nodes\n", wall_s, setup_s, temp_s, trees, nodes);
        printf(" Collections: ");
        if (gs.minor >= 0)
            printf("%lld minor + %lld major\n", gs.minor, gs.major);
        else
            printf("%lld (all full)\n", gs.major);
        if (gs.minor >= 0) {
            printf("   minor pauses p50/p99/max ");
            gb_ms3(stdout, gs.minor_p50_ms, gs.minor_p99_ms, gs.minor_max_ms);
            printf(", total %.1f ms\n", gs.minor_total_ms);
        }
        printf("   %s pauses p50/p99/max ", gs.minor >= 0 ? "major" : "full");
        gb_ms3(stdout, gs.major_p50_ms, gs.major_p99_ms, gs.major_max_ms);
        printf(", total %.1f ms\n", isnan(gs.major_total_ms) ? 0.0 : gs.major_total_ms);
        printf(" Peak RSS %.1f MiB, peak heap %.1f MiB\n", rss_mib, gs.heap_peak_mib);
        printf(" Checks: %s\n", ok ? "all trees and the array correct" : "FAILED");
    }
    free(workers);
    return ok ? 0 : 1;
}

#endif
