/* workloads.c -- the three Duhton demos of the 2013 "STM lisp experiments"
 * (../shared/reference/stmgc-c4.md, section 7), written in C with the
 * memory behaviour of an interpreter running them on libstm.
 *
 * One source, three programs (demos/SConscript):
 *   demo_stm       the library as shipped
 *   demo_baseline  -DSTM_BASELINE, linked with libstm_baseline: stm_read
 *                  compiles to nothing and stm_write to the collector's
 *                  remembered-set test, stm_run does not checkpoint; same
 *                  allocator and collector; single-threaded
 *   demo_count     demo_stm plus a thread-local counter in every barrier, for
 *                  the share of read barriers that take the slow path; never
 *                  timed (the runner, stm_demo, runs it as a separate pass)
 *
 *   demo_<mode> square|trees|trees2 [--threads N] [--small|--large]
 *               [--verbose] [--json]
 *
 * What an interpreter does, and so what these do:
 *   - every integer result (arithmetic and comparisons) is a freshly
 *     allocated boxed integer;
 *   - every call allocates a frame object holding its argument; the loop
 *     counter of square-root lives in its frame, updated in place through
 *     stm_write (one write barrier per iteration);
 *   - every access to a frame, a boxed value, a cons cell or the shared
 *     globals object goes through stm_read, and every pointer held across
 *     an allocation is kept on the shadow stack;
 *   - the main thread creates the constants (a globals object holding the
 *     boxed 0 and 1 and the tree depth), the shared tree and the task
 *     arguments, commits, and publishes only the root of each (stm_publish);
 *     worker threads reach the rest through stubs and stealing, exactly the
 *     situation in which C4's read barrier kept missing;
 *   - one transaction per task, tasks popped from a queue made up front
 *     (newest first, like Duhton's LIFO list), worker threads pinned one
 *     per usable core.
 *
 * Results are checked: every square root against an integer ceil(sqrt(n))
 * computed in plain C, every walk against 2^depth.  Exit status 0 only if
 * all are right.  The time reported is the wall time of the task phase
 * only, from the moment all workers are attached and pinned to the end of
 * the last task. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <stm.h>

#include "pinning.h"

#if defined(STM_BASELINE)
#  define DEMO_MODE "baseline"
#elif defined(DEMO_COUNT_BARRIERS)
#  define DEMO_MODE "count"
#else
#  define DEMO_MODE "stm"
#endif

/* ---- barriers as the demos spell them ---------------------------------- */

/* In the baseline, stm_read is the identity and stm_write only the
 * generational collector's remembered-set test (include/stm.h). */
#ifdef DEMO_COUNT_BARRIERS
static __thread uint64_t tl_reads, tl_writes;
#  define READ(p) (tl_reads++, stm_read(p))
#  define WRITE(p) (tl_writes++, stm_write(p))
#else
#  define READ(p) stm_read(p)
#  define WRITE(p) stm_write(p)
#endif

/* ---- objects ----------------------------------------------------------- */

enum { T_INT = 1, T_CONS, T_FRAME, T_GLOBALS, T_ARRAY };

typedef struct box {            /* a boxed integer: 32 bytes, as in Duhton */
    stm_header hdr;
    long value;
} box_t;

typedef struct cons {
    stm_header hdr;
    void *car, *cdr;
} cons_t;

typedef struct frame {          /* a call frame: argument and a local */
    stm_header hdr;
    void *a, *b;
} frame_t;

typedef struct globals {        /* the interpreter's global namespace */
    stm_header hdr;
    void *zero, *one, *depth;
} globals_t;

typedef struct array {
    stm_header hdr;
    long count;
    void *items[];
} array_t;

static size_t obj_size(const void *obj)
{
    switch (stm_get_tid(obj)) {
    case T_INT:
        return sizeof(box_t);
    case T_CONS:
        return sizeof(cons_t);
    case T_FRAME:
        return sizeof(frame_t);
    case T_GLOBALS:
        return sizeof(globals_t);
    case T_ARRAY:
        return offsetof(array_t, items) +
               (size_t)((const array_t *)obj)->count * sizeof(void *);
    }
    fprintf(stderr, "demo: object %p has unknown type id %u\n", obj, stm_get_tid(obj));
    abort();
}

static void obj_trace(void *obj, stm_visit_fn *visit, void *ctx)
{
    switch (stm_get_tid(obj)) {
    case T_CONS:
        visit(&((cons_t *)obj)->car, ctx);
        visit(&((cons_t *)obj)->cdr, ctx);
        break;
    case T_FRAME:
        visit(&((frame_t *)obj)->a, ctx);
        visit(&((frame_t *)obj)->b, ctx);
        break;
    case T_GLOBALS:
        visit(&((globals_t *)obj)->zero, ctx);
        visit(&((globals_t *)obj)->one, ctx);
        visit(&((globals_t *)obj)->depth, ctx);
        break;
    case T_ARRAY: {
        array_t *a = obj;
        for (long i = 0; i < a->count; i++)
            visit(&a->items[i], ctx);
        break;
    }
    }
}

/* Shared roots, set by the main thread before the workers start and never
 * changed afterwards.  With the STM they hold public copies (stm_publish)
 * and are registered global roots; in the baseline they hold the committed
 * objects themselves, made old before commit so that nothing moves them. */
static void *G;          /* globals_t */
static void *g_tree;     /* trees, trees2 --large: the shared tree */
static void *g_tasks;    /* square: array of the boxed arguments n */

/* A new boxed integer.  The caller keeps its live pointers on the shadow
 * stack: this may collect. */
static inline void *box(long v)
{
    box_t *b = stm_allocate(sizeof *b, T_INT);
    b->value = v;
    return b;
}

static inline long int_value(const void *p)
{
    const box_t *b = READ(p);
    return b->value;
}

/* ---- options ----------------------------------------------------------- */

enum demo_kind { DEMO_SQUARE, DEMO_TREES, DEMO_TREES2 };
enum demo_size { SIZE_SMALL, SIZE_DEFAULT, SIZE_LARGE };
static const char *const size_names[] = { "small", "default", "large" };

static struct {
    enum demo_kind kind;
    const char *name;
    enum demo_size size;
    long threads;        /* 0: one per usable core */
    bool verbose, json;
} opt = { .size = SIZE_DEFAULT };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: demo_" DEMO_MODE " square|trees|trees2 [options]\n"
            "  --threads N  worker threads (default: one per usable core; the\n"
            "               baseline is single-threaded)\n"
            "  --small      small sizes, for tests: square 20 tasks (n from 10^7),\n"
            "               trees 50 walks, trees2 50 tasks\n"
            "  --large      the 2015 sizes: square 2000 tasks, trees2 one shared\n"
            "               depth-20 tree walked by 100 tasks\n"
            "  --verbose    square prints each root as it is found\n"
            "  --json       one JSON object on stdout instead of the text summary\n");
}

static void parse_args(int argc, char **argv)
{
    bool have_demo = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--small")) {
            opt.size = SIZE_SMALL;
        } else if (!strcmp(a, "--large")) {
            opt.size = SIZE_LARGE;
        } else if (!strcmp(a, "--verbose")) {
            opt.verbose = true;
        } else if (!strcmp(a, "--json")) {
            opt.json = true;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            char *end;
            errno = 0;
            opt.threads = strtol(argv[++i], &end, 10);
            if (errno || *end || opt.threads < 1 || opt.threads > 1024) {
                fprintf(stderr, "demo: --threads: expected 1..1024, got '%s'\n", argv[i]);
                exit(2);
            }
        } else if (a[0] != '-' && !have_demo) {
            have_demo = true;
            opt.name = a;
            if (!strcmp(a, "square"))
                opt.kind = DEMO_SQUARE;
            else if (!strcmp(a, "trees"))
                opt.kind = DEMO_TREES;
            else if (!strcmp(a, "trees2"))
                opt.kind = DEMO_TREES2;
            else {
                fprintf(stderr, "demo: unknown demo '%s'\n", a);
                usage(stderr);
                exit(2);
            }
        } else {
            fprintf(stderr, "demo: unknown option or missing value: %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (!have_demo) {
        usage(stderr);
        exit(2);
    }
#ifdef STM_BASELINE
    if (opt.threads > 1) {
        fprintf(stderr, "demo: the baseline has no STM and runs on one thread only\n");
        exit(2);
    }
    opt.threads = 1;
#endif
}

/* ---- tasks ------------------------------------------------------------- */

typedef struct task {
    long index;
    long n;              /* square: the argument */
    long result;         /* trees: the walk's sum */
    long steps;          /* square: loop iterations (must equal the root) */
    char line[64];       /* square: what the inevitable step printed */
} task;

static task *tasks;
static long ntasks;
static atomic_long next_task;     /* tasks are popped from the end (LIFO) */
static long tree_depth;
static long square_base, square_step;

static long isqrt_ceil(long n)
{
    /* Smallest s with s*s >= n, by integer bisection: no floating point. */
    long lo = 0, hi = 1;
    while (hi * hi < n)
        hi *= 2;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (mid * mid >= n)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---- square: (while (< (* i i) n) (setq i (+ i 1))) --------------------- */

static int square_tx(void *arg)
{
    task *tk = arg;
    /* The task's argument, made by the main thread: reached through the
     * published array (a stub until stolen). */
    const array_t *args = READ(g_tasks);
    void *nbox = args->items[tk->index];
    const globals_t *g = READ(G);
    void *zero = g->zero;

    /* (square-root n): a new frame { n, i = 0 }. */
    stm_push_root(nbox);
    stm_push_root(zero);
    frame_t *f = stm_allocate(sizeof *f, T_FRAME);
    zero = stm_pop_root();
    nbox = stm_pop_root();
    f->a = nbox;
    f->b = zero;
    void *F = f;

    long steps = 0;      /* a C counter, not an stm object: checked at the end */
    for (;;) {
        /* (* i i) */
        f = READ(F);
        void *i = f->b;
        long x = int_value(i), y = int_value(i);
        stm_push_root(F);
        void *sq = box(x * y);
        F = stm_pop_root();
        /* (< sq n) */
        f = READ(F);
        long nv = int_value(f->a), sv = int_value(sq);
        stm_push_root(F);
        void *less = box(sv < nv);
        F = stm_pop_root();
        if (!int_value(less))
            break;
        /* (setq i (+ i 1)): the constant 1 comes from the globals */
        g = READ(G);
        long one = int_value(g->one);
        f = READ(F);
        long iv = int_value(f->b);
        stm_push_root(F);
        void *next = box(iv + one);
        F = stm_pop_root();
        f = WRITE(F);
        f->b = next;
        steps++;
    }

    /* (print 'square-root-of' n 'is' i), inevitable as in Duhton. */
    f = READ(F);
    long n = int_value(f->a), s = int_value(f->b);
    stm_become_inevitable();
    tk->steps = steps;
    if (opt.verbose) {
        printf("square-root-of %ld is %ld\n", n, s);
        fflush(stdout);
    }
    snprintf(tk->line, sizeof tk->line, "square-root-of %ld is %ld", n, s);
    return STM_DONE;
}

/* ---- trees: create-tree and walk-tree ------------------------------------ */

/* (walk-tree t): (if (pair? t) (+ (walk-tree (car t)) (walk-tree (cdr t))) t)
 * Leaves are the shared boxed 1, returned as they are. */
static void *walk(void *node)
{
    stm_push_root(node);
    frame_t *f = stm_allocate(sizeof *f, T_FRAME);
    node = stm_pop_root();
    f->a = node;
    void *F = f;

    const cons_t *c = READ(node);
    if (stm_get_tid(c) != T_CONS)
        return node;
    stm_push_root(F);
    void *left = walk(c->car);
    F = stm_pop_root();

    stm_push_root(F);
    stm_push_root(left);
    f = READ(F);
    c = READ(f->a);
    void *right = walk(c->cdr);
    left = stm_pop_root();
    F = stm_pop_root();

    long sum = int_value(left) + int_value(right);
    return box(sum);
}

/* (create-tree n): (if (== n 0) 1 (cons (create-tree (- n 1))
 *                                       (create-tree (- n 1))))
 * The leaf 1 is the literal from the globals: one object for all leaves. */
static void *create(void *depth)
{
    stm_push_root(depth);
    frame_t *f = stm_allocate(sizeof *f, T_FRAME);
    depth = stm_pop_root();
    f->a = depth;
    void *F = f;

    /* (== n 0) */
    const globals_t *g = READ(G);
    long zero = int_value(g->zero);
    f = READ(F);
    long n = int_value(f->a);
    stm_push_root(F);
    void *is_zero = box(n == zero);
    F = stm_pop_root();
    if (int_value(is_zero)) {
        g = READ(G);
        return g->one;
    }
    /* (create-tree (- n 1)), twice */
    g = READ(G);
    long one = int_value(g->one);
    f = READ(F);
    n = int_value(f->a);
    stm_push_root(F);
    void *m = box(n - one);
    void *left = create(m);
    F = stm_pop_root();

    stm_push_root(F);
    stm_push_root(left);
    g = READ(G);
    one = int_value(g->one);
    f = READ(F);
    n = int_value(f->a);
    m = box(n - one);
    void *right = create(m);
    left = stm_pop_root();
    F = stm_pop_root();

    /* (cons left right) */
    stm_push_root(left);
    stm_push_root(right);
    cons_t *cell = stm_allocate(sizeof *cell, T_CONS);
    right = stm_pop_root();
    left = stm_pop_root();
    cell->car = left;
    cell->cdr = right;
    return cell;
}

static int trees_tx(void *arg)
{
    task *tk = arg;
    void *sum = walk(g_tree);
    tk->result = int_value(sum);
    return STM_DONE;
}

static int trees2_tx(void *arg)
{
    task *tk = arg;
    const globals_t *g = READ(G);
    void *tree = create(g->depth);
    void *sum = walk(tree);
    tk->result = int_value(sum);
    return STM_DONE;
}

/* ---- set-up in the main thread ----------------------------------------- */

/* Makes `*obj` old before the commit: nothing moves it afterwards, which
 * the baseline (shared without publication) relies on. */
static void promote(void **obj)
{
    stm_push_root(*obj);
    stm_minor_collect();
    *obj = stm_pop_root();
}

typedef struct build_ctx {
    void *result;
} build_ctx;

static int build_globals_tx(void *arg)
{
    build_ctx *b = arg;
    void *zero = box(0);
    stm_push_root(zero);
    void *one = box(1);
    stm_push_root(one);
    void *depth = box(tree_depth);
    stm_push_root(depth);
    globals_t *g = stm_allocate(sizeof *g, T_GLOBALS);
    g->depth = stm_pop_root();
    g->one = stm_pop_root();
    g->zero = stm_pop_root();
    b->result = g;
    promote(&b->result);
    return STM_DONE;
}

static int build_tree_tx(void *arg)
{
    build_ctx *b = arg;
    const globals_t *g = READ(G);
    b->result = create(g->depth);
    promote(&b->result);
    return STM_DONE;
}

static int build_square_args_tx(void *arg)
{
    build_ctx *b = arg;
    array_t *a = stm_allocate(offsetof(array_t, items) + (size_t)ntasks * sizeof(void *),
                              T_ARRAY);
    a->count = ntasks;
    for (long k = 0; k < ntasks; k++) {
        stm_push_root(a);
        void *n = box(tasks[k].n);
        a = stm_pop_root();
        a = WRITE(a);     /* the array may have been promoted */
        a->items[k] = n;
    }
    b->result = a;
    promote(&b->result);
    return STM_DONE;
}

/* Runs a set-up transaction and makes its result shareable. */
static void *build_shared(stm_tx_fn *fn, void **slot)
{
    build_ctx b = { NULL };
    if (stm_run(fn, &b) != STM_OK) {
        fprintf(stderr, "demo: a set-up transaction ran out of memory\n");
        exit(1);
    }
#ifdef STM_BASELINE
    *slot = b.result;
#else
    if (stm_register_global_root(slot) != STM_OK) {
        fprintf(stderr, "demo: stm_register_global_root failed\n");
        exit(1);
    }
    *slot = stm_publish(b.result);
    if (!*slot) {
        fprintf(stderr, "demo: stm_publish failed\n");
        exit(1);
    }
#endif
    return *slot;
}

/* ---- workers ----------------------------------------------------------- */

typedef struct worker {
    pthread_t tid;
    int index;
    int pu;              /* OS index of the PU it is bound to, -1: unpinned */
    long done;
    double start, end;   /* of its task phase */
    double cpu;          /* CPU time of its task phase */
    long vcsw, ivcsw;    /* context switches in it: blocked / preempted */
    uint64_t reads, writes;
} worker;

static pthread_barrier_t start_barrier;
static stm_tx_fn *task_fn;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: unlike wall time, it does not count the
 * time other processes of a busy machine take from us. */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    w->pu = demo_cpus_bind_self(w->index);
    if (stm_thread_attach() != STM_OK) {
        fprintf(stderr, "demo: stm_thread_attach failed in worker %d\n", w->index);
        exit(1);
    }
    pthread_barrier_wait(&start_barrier);
    w->start = now_seconds();
    double cpu0 = cpu_seconds();
    struct rusage ru0, ru1;
    getrusage(RUSAGE_THREAD, &ru0);
    for (;;) {
        long k = atomic_fetch_sub_explicit(&next_task, 1, memory_order_relaxed) - 1;
        if (k < 0)
            break;
        if (stm_run(task_fn, &tasks[k]) != STM_OK) {
            fprintf(stderr, "demo: task %ld ran out of memory\n", k);
            exit(1);
        }
        w->done++;
    }
    w->end = now_seconds();
    w->cpu = cpu_seconds() - cpu0;
    getrusage(RUSAGE_THREAD, &ru1);
    w->vcsw = ru1.ru_nvcsw - ru0.ru_nvcsw;
    w->ivcsw = ru1.ru_nivcsw - ru0.ru_nivcsw;
#ifdef DEMO_COUNT_BARRIERS
    w->reads = tl_reads;
    w->writes = tl_writes;
#endif
    if (stm_thread_detach() != STM_OK) {
        fprintf(stderr, "demo: stm_thread_detach failed in worker %d\n", w->index);
        exit(1);
    }
    return NULL;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "demo: out of memory\n");
        exit(1);
    }
    return p;
}

static void stats_now(stm_stats *st)
{
    memset(st, 0, sizeof *st);
    st->size = sizeof *st;
    stm_get_stats(st);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    char err[256];
    if (!demo_cpus_init(err, sizeof err))
        fprintf(stderr, "demo: warning: %s; threads run unpinned\n", err);
    if (opt.threads == 0)
        opt.threads = demo_cpus_count() > 0 ? demo_cpus_count() : 1;

    /* Sizes: ../shared/reference/stmgc-c4.md 7.2 (default) and 7.4 (large). */
    long expected = 0;
    switch (opt.kind) {
    case DEMO_SQUARE:
        ntasks = opt.size == SIZE_SMALL ? 20 : opt.size == SIZE_LARGE ? 2000 : 200;
        square_base = opt.size == SIZE_SMALL ? 10000000 : 1000000000;
        square_step = 100000;
        task_fn = square_tx;
        tree_depth = 0;
        break;
    case DEMO_TREES:
        ntasks = opt.size == SIZE_SMALL ? 50 : 1000;
        tree_depth = 10;
        task_fn = trees_tx;
        break;
    case DEMO_TREES2:
        if (opt.size == SIZE_LARGE) {
            /* 2015: one shared depth-20 tree, 100 walks. */
            ntasks = 100;
            tree_depth = 20;
            task_fn = trees_tx;
        } else {
            ntasks = opt.size == SIZE_SMALL ? 50 : 1000;
            tree_depth = 10;
            task_fn = trees2_tx;
        }
        break;
    }
    expected = 1L << tree_depth;
    tasks = xcalloc((size_t)ntasks, sizeof *tasks);
    long steps = 0;
    for (long k = 0; k < ntasks; k++) {
        tasks[k].index = k;
        tasks[k].n = square_base + square_step * k;
        tasks[k].result = -1;
        if (opt.kind == DEMO_SQUARE)
            steps += isqrt_ceil(tasks[k].n);
    }

    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = obj_size;
    cfg.trace = obj_trace;
    if (stm_init(&cfg) != STM_OK || stm_thread_attach() != STM_OK) {
        fprintf(stderr, "demo: library initialisation failed\n");
        return 1;
    }

    /* Set-up (not timed): constants, then the shared data. */
    double b0 = now_seconds();
    build_shared(build_globals_tx, &G);
    if (task_fn == trees_tx)
        build_shared(build_tree_tx, &g_tree);
    if (opt.kind == DEMO_SQUARE)
        build_shared(build_square_args_tx, &g_tasks);
    double build_seconds = now_seconds() - b0;

    stm_stats before, after;
    stats_now(&before);
    atomic_store(&next_task, ntasks);
    worker *workers = xcalloc((size_t)opt.threads, sizeof *workers);
    pthread_barrier_init(&start_barrier, NULL, (unsigned)opt.threads + 1);
    for (long i = 0; i < opt.threads; i++) {
        workers[i].index = (int)i;
        if (pthread_create(&workers[i].tid, NULL, worker_main, &workers[i])) {
            fprintf(stderr, "demo: pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&start_barrier);
    /* The task phase: from the first worker leaving the start barrier to
     * the last one finishing its last task (attach, pinning and detach are
     * outside it). */
    double t0 = 0, t1 = 0;
    for (long i = 0; i < opt.threads; i++) {
        pthread_join(workers[i].tid, NULL);
        if (i == 0 || workers[i].start < t0)
            t0 = workers[i].start;
        if (i == 0 || workers[i].end > t1)
            t1 = workers[i].end;
    }
    double seconds = t1 - t0;
    double cpu = 0;
    long vcsw = 0, ivcsw = 0;
    for (long i = 0; i < opt.threads; i++) {
        cpu += workers[i].cpu;
        vcsw += workers[i].vcsw;
        ivcsw += workers[i].ivcsw;
    }
    stats_now(&after);

    /* Check every result. */
    long failures = 0, done = 0;
    uint64_t reads = 0, writes = 0;
    for (long i = 0; i < opt.threads; i++) {
        done += workers[i].done;
        reads += workers[i].reads;
        writes += workers[i].writes;
    }
#ifndef DEMO_COUNT_BARRIERS
    (void)reads, (void)writes;   /* printed only by the counting build */
#endif
    if (done != ntasks) {
        fprintf(stderr, "demo: %ld tasks run, %ld expected\n", done, ntasks);
        failures++;
    }
    for (long k = 0; k < ntasks; k++) {
        task *tk = &tasks[k];
        if (opt.kind == DEMO_SQUARE) {
            long n = -1, s = -1;
            if (sscanf(tk->line, "square-root-of %ld is %ld", &n, &s) != 2 || n != tk->n ||
                s != isqrt_ceil(tk->n)) {
                if (failures++ < 5)
                    fprintf(stderr, "demo: task %ld printed '%s', expected "
                            "'square-root-of %ld is %ld'\n",
                            k, tk->line, tk->n, isqrt_ceil(tk->n));
            } else if (tk->steps != s) {
                /* Right answer the long way: the counter was lost and the
                 * loop started again (a collector that missed a write). */
                if (failures++ < 5)
                    fprintf(stderr, "demo: task %ld found %ld in %ld iterations, expected %ld\n",
                            k, s, tk->steps, s);
            }
        } else if (tk->result != expected) {
            if (failures++ < 5)
                fprintf(stderr, "demo: walk %ld gave %ld, expected %ld\n", k, tk->result,
                        expected);
        }
    }
    bool ok = failures == 0;

    uint64_t delta[64];
    const uint64_t *fa = &after.commits, *fb = &before.commits;
    unsigned nfields = 0;
    while (stm_stats_field_name(nfields) && nfields < 64) {
        delta[nfields] = fa[nfields] - fb[nfields];
        nfields++;
    }
    uint64_t aborts = after.aborts - before.aborts;
    uint64_t read_slow = after.read_slow - before.read_slow;

    if (opt.json) {
        printf("{\"demo\":\"%s\",\"mode\":\"%s\",\"size\":\"%s\",\"threads\":%ld,"
               "\"tasks\":%ld,\"ok\":%s,\"failures\":%ld,\"seconds\":%.6f,\"cpu_seconds\":%.6f,"
               "\"build_seconds\":%.6f,\"steps\":%ld,\"expected_sum\":%ld,"
               "\"context_switches\":{\"voluntary\":%ld,\"involuntary\":%ld},",
               opt.name, DEMO_MODE, size_names[opt.size], opt.threads, ntasks,
               ok ? "true" : "false", failures, seconds, cpu, build_seconds, steps,
               opt.kind == DEMO_SQUARE ? 0 : expected, vcsw, ivcsw);
#ifdef DEMO_COUNT_BARRIERS
        printf("\"read_barriers\":%" PRIu64 ",\"write_barriers\":%" PRIu64 ",", reads, writes);
#endif
        printf("\"cpus\":[");
        for (long i = 0; i < opt.threads; i++)
            printf("%s%d", i ? "," : "", workers[i].pu);
        printf("],\"pinning\":\"%s\",\"stats\":{", demo_cpus_describe());
        for (unsigned i = 0; i < nfields; i++)
            printf("%s\"%s\":%" PRIu64, i ? "," : "", stm_stats_field_name(i), delta[i]);
        printf("},\"aborts_by_reason\":{");
        for (unsigned r = 0; r < STM_ABORT_REASON_COUNT; r++)
            printf("%s\"%s\":%" PRIu64, r ? "," : "", stm_abort_reason_name(r),
                   after.aborts_by_reason[r] - before.aborts_by_reason[r]);
        printf("}}\n");
    } else {
        printf("%s (%s, %s sizes): %ld tasks on %ld thread(s) [%s] in %.3f s "
               "(CPU %.3f s; set-up %.3f s)\n",
               opt.name, DEMO_MODE, size_names[opt.size], ntasks, opt.threads,
               demo_cpus_describe(), seconds, cpu, build_seconds);
        printf("  aborts %" PRIu64 ", slow-path reads %" PRIu64 ", slow-path writes %" PRIu64
               ", steals %" PRIu64 ", minor collections %" PRIu64 "\n",
               aborts, read_slow, after.write_slow - before.write_slow,
               after.steals - before.steals,
               after.minor_collections - before.minor_collections);
#ifdef DEMO_COUNT_BARRIERS
        printf("  read barriers %" PRIu64 " (%.4f%% slow), write barriers %" PRIu64 "\n", reads,
               reads ? 100.0 * (double)read_slow / (double)reads : 0.0, writes);
#endif
        printf("  worker context switches: %ld voluntary (blocked), %ld involuntary "
               "(preempted)\n", vcsw, ivcsw);
        printf("  results %s\n", ok ? "all correct" : "WRONG");
    }
    free(workers);
    free(tasks);
    demo_cpus_destroy();
    return ok ? 0 : 1;
}
