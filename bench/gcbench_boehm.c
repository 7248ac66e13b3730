/* gcbench_boehm.c -- GCBench on Boehm GC (bdwgc 8.x).  The benchmark, its
 * options and its report are in gcbench_core.h (shared with gcbench.c);
 * this file is the Boehm side of the allocation interface.
 *
 *   build/release/bench/gcbench_boehm [--threads N] [--json] ...  (--help)
 *
 * Set-up: GC_THREADS without the pthread redirections; GC_INIT, then
 * GC_set_max_heap_size(budget) and GC_expand_hp up to the same budget
 * (--heap-mb, also libstm's heap_limit), so the heap is neither grown on
 * demand nor allowed past the budget.  GC_allow_register_threads starts
 * the parallel markers (GC_MARKERS or --markers N sets how many, the
 * default being one per CPU) in every configuration, and the second thread
 * registers itself with GC_register_my_thread.  The collector runs in its
 * default mode: stop-the-world, non-incremental, non-generational, so every
 * collection is a full one; the report lists them as "major".
 *
 * Nodes: GC_MALLOC (24 bytes, allocated as 32); the array: one
 * GC_MALLOC_ATOMIC.  The shadow-stack operations of the interface are
 * nothing at all: the conservative stack scan finds the same pointers.
 *
 * Pauses: GC_set_on_collection_event; a pause is the time from
 * GC_EVENT_START to GC_EVENT_END of one collection (it includes stopping
 * and restarting the world; sweeping is lazy and happens later, during
 * allocation, as in any Boehm program).  The count is GC_get_gc_no. */
#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS
#include <gc/gc.h>

#define GB_GC_NAME "boehm"
#define GB_NODE_HEADER
#define GB_PUSH(v) ((void)0)
#define GB_POP(v) ((void)0)
#define GB_READ(p) ((const gb_node *)(p))
#define GB_WRITE(p) ((gb_node *)(p))
#define GB_DONE 0

#include "gcbench_core.h"

static void die(const char *what)
{
    fprintf(stderr, "gcbench_boehm: %s\n", what);
    exit(1);
}

static gb_node *g_long_tree;   /* in the data segment: a root */
static double *g_array;
static size_t heap_budget;
static GC_word gc_no_at_start;

/* Pauses, written by the collecting thread with the GC lock held, read by
 * the main thread once every other thread has been joined. */
#define MAX_PAUSES (1 << 16)
static uint64_t pause_ns[MAX_PAUSES];
static uint64_t pause_count, pause_total_ns, pause_max_ns, gc_start_ns;

static void GC_CALLBACK on_collection_event(GC_EventType e)
{
    if (e == GC_EVENT_START) {
        gc_start_ns = bench_now_ns();
    } else if (e == GC_EVENT_END && gc_start_ns) {
        uint64_t d = bench_now_ns() - gc_start_ns;
        gc_start_ns = 0;
        if (pause_count < MAX_PAUSES)
            pause_ns[pause_count] = d;
        pause_count++;
        pause_total_ns += d;
        if (d > pause_max_ns)
            pause_max_ns = d;
    }
}

static void gb_backend_init(const gb_opts *o)
{
    heap_budget = (size_t)o->heap_mb << 20;
    if (o->markers > 0)
        GC_set_markers_count((unsigned)o->markers);
    GC_INIT();
    GC_set_max_heap_size(heap_budget);
    size_t cur = GC_get_heap_size();
    if (cur < heap_budget && !GC_expand_hp(heap_budget - cur))
        fprintf(stderr, "gcbench_boehm: GC_expand_hp(%zu) failed; the heap is %zu bytes\n",
                heap_budget - cur, cur);
    GC_allow_register_threads();
    GC_set_on_collection_event(on_collection_event);
    gc_no_at_start = GC_get_gc_no();
}

static gb_node *gb_alloc_node(void)
{
    gb_node *n = GC_MALLOC(sizeof(gb_node));
    if (__builtin_expect(!n, 0))
        die("out of memory within the heap budget");
    return n;
}

static void gb_run_job(gb_job_fn *fn, void *arg)
{
    (void)fn(arg);
}

static void gb_build_long_lived(const gb_opts *o)
{
    g_long_tree = gb_make_top_down(o->long_lived_depth);
    g_array = GC_MALLOC_ATOMIC((size_t)o->array_size * sizeof(double));
    if (!g_array)
        die("out of memory allocating the long-lived array");
    gb_fill_array(g_array, o->array_size);
}

static gb_node *gb_long_lived_tree(void)
{
    return g_long_tree;
}

static const double *gb_long_lived_array(void)
{
    return g_array;
}

static void gb_thread_begin(int index)
{
    if (index == 0)
        return;
    struct GC_stack_base sb;
    if (GC_get_stack_base(&sb) != GC_SUCCESS)
        die("GC_get_stack_base failed");
    if (GC_register_my_thread(&sb) != GC_SUCCESS)
        die("GC_register_my_thread failed");
}

static void gb_thread_end(int index)
{
    if (index > 0)
        GC_unregister_my_thread();
}

static long gb_run_batch(const gb_opts *o, enum gb_kind kind, int depth, long n)
{
    long defects = 0;
    for (long k = 0; k < n; k++)
        defects += gb_build_tree(kind, depth, gb_check_this(o, k, n));
    return defects;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted v[0..n-1], in ms. */
static double percentile_ms(const uint64_t *v, size_t n, unsigned p)
{
    if (n == 0)
        return NAN;
    size_t rank = (p * n + 99) / 100;        /* ceil(p% of n), without libm */
    return (double)v[rank ? rank - 1 : 0] / 1e6;
}

static void gb_get_gcstats(gb_gcstats *st)
{
    size_t n = pause_count < MAX_PAUSES ? (size_t)pause_count : MAX_PAUSES;
    qsort(pause_ns, n, sizeof pause_ns[0], cmp_u64);
    struct GC_prof_stats_s ps;
    GC_get_prof_stats(&ps, sizeof ps);
    *st = (gb_gcstats){
        .minor = -1,
        .major = (long long)(GC_get_gc_no() - gc_no_at_start),
        .minor_p50_ms = NAN,
        .minor_p99_ms = NAN,
        .minor_max_ms = NAN,
        .minor_total_ms = NAN,
        .major_p50_ms = percentile_ms(pause_ns, n, 50),
        .major_p99_ms = percentile_ms(pause_ns, n, 99),
        .major_max_ms = pause_count ? (double)pause_max_ns / 1e6 : NAN,
        .major_total_ms = (double)pause_total_ns / 1e6,
        .heap_peak_mib = (double)ps.heapsize_full / (1024.0 * 1024.0),
    };
}

static void gb_backend_json(FILE *f)
{
    unsigned v = GC_get_version();
    fprintf(f, ",\"gc_version\":\"bdwgc %u.%u.%u\",\"markers\":%d,\"gc_events\":%llu,"
               "\"heap_budget_bytes\":%zu",
            v >> 16, (v >> 8) & 0xff, v & 0xff, GC_get_parallel() + 1,
            (unsigned long long)pause_count, heap_budget);
}

static void gb_backend_describe(FILE *f)
{
    unsigned v = GC_get_version();
    fprintf(f, "Boehm GC %u.%u.%u: %d marker thread(s), heap expanded to %.1f MiB "
               "(maximum %zu MiB), stop-the-world full collections",
            v >> 16, (v >> 8) & 0xff, v & 0xff, GC_get_parallel() + 1,
            (double)GC_get_heap_size() / (1024.0 * 1024.0), heap_budget >> 20);
}
