/* gcbench.c -- GCBench on libstm.  The benchmark, its options and its
 * report are in gcbench_core.h (shared with gcbench_boehm.c); this file
 * is the libstm side of the allocation interface.
 *
 *   build/release/bench/gcbench [--threads N] [--json] ...   (--help)
 *   bench/gcbench.sh                                  both collectors
 *
 * How the benchmark runs on libstm:
 *   - stm_config.heap_limit is the heap budget (--heap-mb), the same
 *     number Boehm gets as GC_set_max_heap_size + GC_expand_hp; the other
 *     fields keep their defaults (STM_NURSERY_SIZE, STM_HEAP_LIMIT and
 *     STM_MAJOR_GROWTH in the environment still override them);
 *   - every phase runs in transactions: the stretch tree is one stm_run;
 *     each batch of temporary trees (one kind, one depth) is an stm_run
 *     whose function builds trees until stm_should_break() and returns
 *     STM_CONTINUE (chunking), keeping its progress in a per-thread stm
 *     object so that an aborted attempt restarts from the last commit;
 *   - the long-lived tree and array are built in one inevitable
 *     transaction (stm_begin_inevitable / stm_commit: it cannot abort, so
 *     its roots may outlive it), then published (stm_publish) into two
 *     registered global roots, which any thread may read;
 *   - nodes are 48 bytes (the 24-byte stm_header, two pointers, two ints)
 *     where Boehm's are 24 (allocated as 32); the array is larger than
 *     STM_LARGE_OBJECT_SIZE and goes straight to the old generation;
 *   - pauses, collection counts and the peak heap come from
 *     stm_get_gc_stats, over the whole process. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <stm.h>

#define GB_GC_NAME "libstm"
#define GB_NODE_HEADER stm_header hdr;
#define GB_PUSH(v) stm_push_root(v)
#define GB_POP(v) ((v) = stm_pop_root())
#define GB_READ(p) ((const gb_node *)stm_read(p))
#define GB_WRITE(p) ((gb_node *)stm_write(p))
#define GB_DONE STM_DONE

#include "gcbench_core.h"

enum { T_NODE = 1, T_ARRAY, T_PROGRESS };

/* The long-lived array: not traced (the GC_MALLOC_ATOMIC of the classic). */
typedef struct gb_array {
    stm_header hdr;
    long count;
    double data[];
} gb_array;

/* A thread's progress through its current batch of temporary trees. */
typedef struct gb_progress {
    stm_header hdr;
    long done;
    long defects;
} gb_progress;

static size_t obj_size(const void *obj)
{
    switch (stm_get_tid(obj)) {
    case T_NODE:
        return sizeof(gb_node);
    case T_ARRAY:
        return offsetof(gb_array, data) + (size_t)((const gb_array *)obj)->count * sizeof(double);
    case T_PROGRESS:
        return sizeof(gb_progress);
    }
    fprintf(stderr, "gcbench: object %p has unknown type id %u\n", obj, stm_get_tid(obj));
    abort();
}

static void obj_trace(void *obj, stm_visit_fn *visit, void *ctx)
{
    if (stm_get_tid(obj) == T_NODE) {
        gb_node *n = obj;
        visit((void **)&n->left, ctx);
        visit((void **)&n->right, ctx);
    }
}

static void die(const char *what)
{
    fprintf(stderr, "gcbench: %s\n", what);
    exit(1);
}

static void on_out_of_memory(size_t bytes)
{
    stm_gc_stats g;
    memset(&g, 0, sizeof g);
    g.size = sizeof g;
    stm_get_gc_stats(&g);
    fprintf(stderr, "gcbench: libstm: a request for %zu bytes failed within the heap budget "
                    "(mapped %.1f MiB, old generation %.1f MiB in use, %.1f MiB live after the "
                    "last of %llu major collections)\n",
            bytes, (double)g.heap_current / 1048576.0, (double)g.old_bytes_in_use / 1048576.0,
            (double)g.live_after_major / 1048576.0, (unsigned long long)g.major_collections);
}

static stm_config cfg;
static bool g_layouts;         /* node layouts registered (not --callbacks) */
static void *g_long_tree;      /* registered global roots: public copies */
static void *g_array;
static __thread size_t tl_progress_slot;   /* shadow-stack index of the gb_progress */

static void gb_backend_init(const gb_opts *o)
{
    stm_config_init(&cfg);
    cfg.object_size = obj_size;
    cfg.trace = obj_trace;
    cfg.heap_limit = (size_t)o->heap_mb << 20;
    cfg.out_of_memory = on_out_of_memory;
    if (stm_init(&cfg) != STM_OK)
        die("stm_init failed");
    g_layouts = !o->callbacks;
    if (g_layouts) {
        /* What an interpreter would do for its fixed-size types: the
         * collector then needs no callback for them. */
        static const size_t node_ptrs[] = { offsetof(gb_node, left), offsetof(gb_node, right) };
        if (stm_register_layout(T_NODE, sizeof(gb_node), node_ptrs, 2) != STM_OK ||
            stm_register_layout(T_PROGRESS, sizeof(gb_progress), NULL, 0) != STM_OK)
            die("stm_register_layout failed");
    }
    if (stm_thread_attach() != STM_OK)
        die("stm_thread_attach failed");
}

static gb_node *gb_alloc_node(void)
{
    /* NULL only in an inevitable transaction (the long-lived tree); in
     * the others, running out of memory rolls back and stm_run returns
     * STM_ENOMEM. */
    gb_node *n = stm_allocate(sizeof(gb_node), T_NODE);
    if (STM__UNLIKELY(!n))
        die("out of memory within the heap budget");
    return n;
}

static void gb_run_job(gb_job_fn *fn, void *arg)
{
    int r = stm_run(fn, arg);
    if (r == STM_ENOMEM)
        die("a transaction ran out of memory within the heap budget");
    if (r != STM_OK)
        die("stm_run failed");
}

static void gb_build_long_lived(const gb_opts *o)
{
    size_t base = stm_root_depth();
    if (stm_begin_inevitable() != STM_OK)
        die("stm_begin_inevitable failed");
    gb_node *tree = gb_make_top_down(o->long_lived_depth);
    stm_push_root(tree);
    gb_array *a = stm_allocate(offsetof(gb_array, data) + (size_t)o->array_size * sizeof(double),
                               T_ARRAY);
    if (!a)
        die("out of memory allocating the long-lived array");
    a = stm_write(a);
    a->count = o->array_size;
    gb_fill_array(a->data, o->array_size);
    stm_push_root(a);
    if (stm_commit() != STM_OK)
        die("stm_commit failed");
    /* Outside any transaction now; both objects stay on the shadow stack
     * until their public copies are in the global roots. */
    if (stm_register_global_root(&g_long_tree) != STM_OK ||
        stm_register_global_root(&g_array) != STM_OK)
        die("stm_register_global_root failed");
    g_long_tree = stm_publish(*stm_root_slot(base));
    g_array = stm_publish(*stm_root_slot(base + 1));
    if (!g_long_tree || !g_array)
        die("stm_publish failed");
    (void)stm_pop_root();
    (void)stm_pop_root();
}

static gb_node *gb_long_lived_tree(void)
{
    return g_long_tree;
}

static const double *gb_long_lived_array(void)
{
    return ((const gb_array *)stm_read(g_array))->data;
}

static void gb_thread_begin(int index)
{
    if (index > 0 && stm_thread_attach() != STM_OK)
        die("stm_thread_attach failed");
    /* The progress object outlives every transaction of the thread: made
     * in an inevitable one, whose roots survive its commit. */
    tl_progress_slot = stm_root_depth();
    if (stm_begin_inevitable() != STM_OK)
        die("stm_begin_inevitable failed");
    gb_progress *p = stm_allocate(sizeof *p, T_PROGRESS);
    if (!p)
        die("out of memory allocating the progress record");
    stm_push_root(p);
    if (stm_commit() != STM_OK)
        die("stm_commit failed");
}

static void gb_thread_end(int index)
{
    (void)stm_pop_root();
    if (index > 0 && stm_thread_detach() != STM_OK)
        die("stm_thread_detach failed");
}

typedef struct gb_batch {
    const gb_opts *o;
    enum gb_kind kind;
    int depth;
    long n;
    long defects;        /* out */
} gb_batch;

static int reset_progress_tx(void *arg)
{
    (void)arg;
    gb_progress *p = stm_write(*stm_root_slot(tl_progress_slot));
    p->done = 0;
    p->defects = 0;
    return STM_DONE;
}

static int batch_tx(void *arg)
{
    gb_batch *b = arg;
    const gb_progress *p = stm_read(*stm_root_slot(tl_progress_slot));
    long k = p->done, defects = p->defects, cap = b->o->tx_trees;
    for (long here = 1; k < b->n; here++) {
        defects += gb_build_tree(b->kind, b->depth, gb_check_this(b->o, k, b->n));
        k++;
        if (here == cap || stm_should_break())
            break;
    }
    gb_progress *w = stm_write(*stm_root_slot(tl_progress_slot));
    w->done = k;
    w->defects = defects;
    if (k < b->n)
        return STM_CONTINUE;
    b->defects = defects;     /* rewritten by whichever attempt commits last */
    return STM_DONE;
}

static long gb_run_batch(const gb_opts *o, enum gb_kind kind, int depth, long n)
{
    gb_batch b = { .o = o, .kind = kind, .depth = depth, .n = n };
    gb_run_job(reset_progress_tx, NULL);
    gb_run_job(batch_tx, &b);
    return b.defects;
}

static double ns_to_ms(uint64_t ns, uint64_t count)
{
    return count ? (double)ns / 1e6 : NAN;
}

static void gb_get_gcstats(gb_gcstats *st)
{
    stm_gc_stats g;
    memset(&g, 0, sizeof g);
    g.size = sizeof g;
    if (stm_get_gc_stats(&g) != STM_OK) {
        fprintf(stderr, "gcbench: stm_get_gc_stats failed\n");
        *st = (gb_gcstats){ 0, 0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN };
        return;
    }
    uint64_t mi = g.minor_collections, ma = g.major_collections;
    *st = (gb_gcstats){
        .minor = (long long)mi,
        .major = (long long)ma,
        .minor_p50_ms = ns_to_ms(g.minor_pause_p50_ns, mi),
        .minor_p99_ms = ns_to_ms(g.minor_pause_p99_ns, mi),
        .minor_max_ms = ns_to_ms(g.minor_pause_max_ns, mi),
        .minor_total_ms = (double)g.minor_pause_total_ns / 1e6,
        .major_p50_ms = ns_to_ms(g.major_pause_p50_ns, ma),
        .major_p99_ms = ns_to_ms(g.major_pause_p99_ns, ma),
        .major_max_ms = ns_to_ms(g.major_pause_max_ns, ma),
        .major_total_ms = (double)g.major_pause_total_ns / 1e6,
        .heap_peak_mib = (double)g.heap_peak / (1024.0 * 1024.0),
    };
}

static void get_stats(stm_stats *s)
{
    memset(s, 0, sizeof *s);
    s->size = sizeof *s;
    stm_get_stats(s);
}

/* The STM_* variables set, for the record (the figures printed are the
 * settings in effect, which already include them). */
static void env_overrides(FILE *f, bool json)
{
    static const char *const vars[] = { "STM_NURSERY_SIZE", "STM_HEAP_LIMIT", "STM_MAJOR_GROWTH" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (!v)
            continue;
        if (json)
            fprintf(f, ",\"env_%s\":\"%s\"", vars[i], v);
        else
            fprintf(f, ", %s=%s", vars[i], v);
    }
}

/* The settings in effect (the STM_* environment overrides applied). */
static stm_config effective_config(void)
{
    stm_config c;
    stm_config_init(&c);
    if (stm_get_config(&c) != STM_OK)
        c = cfg;
    return c;
}

static void gb_backend_json(FILE *f)
{
    stm_stats s;
    get_stats(&s);
    stm_config eff = effective_config();
    fprintf(f, ",\"layouts\":%s", g_layouts ? "true" : "false");
    fprintf(f, ",\"gc_version\":\"libstm %d.%d\",\"nursery_bytes\":%zu,\"major_growth_percent\":%u,"
               "\"major_min_heap_bytes\":%zu,\"commits\":%llu,\"aborts\":%llu,"
               "\"bytes_allocated\":%llu,\"bytes_promoted\":%llu,\"objects_freed\":%llu",
            STM_VERSION_MAJOR, STM_VERSION_MINOR, eff.nursery_size, eff.major_growth_percent,
            eff.major_min_heap, (unsigned long long)s.commits, (unsigned long long)s.aborts,
            (unsigned long long)s.bytes_allocated, (unsigned long long)s.bytes_promoted,
            (unsigned long long)s.objects_freed);
    env_overrides(f, true);
}

static void gb_backend_describe(FILE *f)
{
    stm_stats s;
    get_stats(&s);
    stm_config eff = effective_config();
    fprintf(f, "libstm %d.%d: nursery %zu KiB per thread, major collection at +%u%% "
               "(not below %zu MiB); %llu commits, %llu aborts; %.0f MiB allocated, %.0f MiB "
               "promoted; nodes %s",
            STM_VERSION_MAJOR, STM_VERSION_MINOR, eff.nursery_size >> 10,
            eff.major_growth_percent, eff.major_min_heap >> 20, (unsigned long long)s.commits,
            (unsigned long long)s.aborts, (double)s.bytes_allocated / 1048576.0,
            (double)s.bytes_promoted / 1048576.0,
            g_layouts ? "by registered layout" : "by callbacks (--callbacks)");
    env_overrides(f, false);
}
