/* barriers.c -- microbenchmark of the read and write barriers on every kind
 * of copy (docs/DESIGN.md 1.1), fast and slow paths, and of begin+commit.
 *
 *   build/release/bench/barriers            ns/op (median of 5 runs, pinned
 *                                           to one core) and instr/op (the
 *                                           program re-runs itself under
 *                                           callgrind), next to the same
 *                                           loops in barriers_baseline
 *   build/release/bench/barriers --json     the same as JSON
 *   bench/barriers_callgrind.sh             the instruction table alone
 *
 * Each case is one loop, compiled twice: here (barriers) and with
 * -DSTM_BASELINE against libstm_baseline (barriers_baseline), where
 * stm_read and stm_write are the identity.  The difference between the two
 * is the cost of the barrier.  Instruction counts are net of an "empty
 * loop": the same loop without the barrier call (for reads: load the
 * pointer, load the field, add; for writes: load the pointer, store the
 * field; for transactions: call an empty function).  So a read that costs
 * "3.0 instr/op" costs three instructions more than the plain field load.
 *
 * The copies are made as an interpreter's would be:
 *   private           allocated by the running transaction
 *   own protected     allocated by an earlier transaction of this thread
 *   public            stm_publish of a committed object, or a prebuilt
 *                     object registered with stm_register_prebuilt
 *   outdated (own)    a public copy this thread wrote and committed: the
 *                     pointer held is the old copy (old -> stub -> ours)
 *   outdated          a public copy another thread wrote and committed
 *                     (old -> stub -> the other thread's copy, stolen on
 *                     the first access by any thread)
 *   stub              a field of such a copy that pointed to an object of
 *                     the other thread (the steal made it a stub)
 * "hit" loops read K objects already resolved in the transaction (read
 * cache hits); "first" loops read M distinct objects once each, after a
 * cache clear (an inevitable transaction clears it: DESIGN.md, C5);
 * "steal" loops read objects no thread has resolved yet (fresh ones for
 * each run).  Two more rows show how the read cache behaves after a first
 * write to a public object ("rehit"), and two show shared commits after
 * one large transaction (".big").
 *
 * Timing: CLOCK_MONOTONIC around each measured loop, inside its
 * transaction; the median of --runs runs (5) after a warm-up run, on one
 * CPU (hwloc).  Hit loops are sized from the warm-up to last about 2 ms;
 * a run during which the thread was preempted (getrusage RUSAGE_THREAD)
 * is redone.  stm_get_stats is read around the same loops, so the table
 * also shows how many barriers per operation took a slow path: 0 on every
 * cache-hit row is part of the result.
 *
 * Modes: --callgrind runs fixed small iteration counts with each measured
 * region between CALLGRIND_ZERO_STATS and CALLGRIND_DUMP_STATS_AT, and
 * reads the counts back from the dump files (--cg-out names them; the
 * callgrind command line must use the same --callgrind-out-file).  The
 * environment variables STM_BENCH_CALLGRIND=1 and STM_BENCH_CG_OUT=FILE do
 * the same as --callgrind and --cg-out FILE.
 * --raw prints one tab-separated line per case (the format the program
 * reads back from its callgrind run and from barriers_baseline). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stm.h>

#include "common.h"

#if defined(__has_include)
#  if __has_include(<valgrind/callgrind.h>)
#    include <valgrind/callgrind.h>
#    define HAVE_CALLGRIND 1
#  endif
#endif
#ifndef HAVE_CALLGRIND
#  define RUNNING_ON_VALGRIND 0
#  define CALLGRIND_ZERO_STATS ((void)0)
#  define CALLGRIND_DUMP_STATS_AT(s) ((void)(s))
#endif

#ifdef STM_BASELINE
#  define FLAVOUR "baseline"
#else
#  define FLAVOUR "stm"
#endif

#define MAX_RUNS 32

/* ------------------------------------------------------------------ */
/* Object model: one node type                                         */
/* ------------------------------------------------------------------ */

enum { T_NODE = 1 };

typedef struct node {
    stm_header hdr;
    long value;
    struct node *left;
    struct node *right;
} node;

static size_t node_size(const void *obj)
{
    (void)obj;
    return sizeof(node);
}

static void node_trace(void *obj, stm_visit_fn *visit, void *ctx)
{
    node *n = obj;
    visit((void **)&n->left, ctx);
    visit((void **)&n->right, ctx);
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "barriers: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

/* ------------------------------------------------------------------ */
/* Parameters                                                          */
/* ------------------------------------------------------------------ */

typedef struct params {
    size_t K;            /* working set of the cache-hit loops (power of 2) */
    size_t M;            /* objects per first-access pass (power of 2) */
    size_t n_hit;        /* barrier calls per hit-loop run (timing: of the
                            warm-up run, which calibrates the others) */
    int passes;          /* first-access passes per run, each after a cache clear */
    size_t n_tx;         /* transactions per run */
    size_t n_tx_shared;  /* shared-writing transactions per run (fresh objects) */
    int runs;            /* measured runs; one warm-up run precedes them */
    int spare;           /* extra batches of fresh objects, for redone runs */
} params;

/* Timing: each run lasts about a millisecond, so that most runs fit in one
 * scheduler time slice even when the machine is busy; a run during which
 * the thread was preempted is redone (see run_case). */
static const params TIMING = { 256, 1024, (size_t)1 << 20, 16, 20000, 1000, 5, 10 };
static const params CALLGRIND = { 256, 1024, (size_t)1 << 14, 1, 2000, 200, 1, 0 };

/* Timing mode: the hit loops are sized to last about this long. */
#define TARGET_RUN_NS 2000000.0
/* Times a run is redone when the thread was preempted during it. */
#define MAX_REDO 20

static params P;
static bool cg_mode;              /* --callgrind */
static const char *cg_out;        /* base name of the callgrind dump files */
static int cg_dumps;              /* dumps made so far: file cg_out.<n> */

/* ------------------------------------------------------------------ */
/* Kernels: the measured loops, out of line, one copy each             */
/* ------------------------------------------------------------------ */

static volatile long sink;

typedef long kernel_fn(node *const *objs, size_t mask, size_t n);

static BENCH_NOINLINE long k_read(node *const *objs, size_t mask, size_t n)
{
    long acc = 0;
    for (size_t i = 0; i < n; i++) {
        const node *p = objs[i & mask];
        acc += ((const node *)stm_read(p))->value;
    }
    return acc;
}

static BENCH_NOINLINE long k_read_empty(node *const *objs, size_t mask, size_t n)
{
    long acc = 0;
    for (size_t i = 0; i < n; i++) {
        const node *p = objs[i & mask];
        acc += p->value;
    }
    return acc;
}

static BENCH_NOINLINE long k_write(node *const *objs, size_t mask, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        node *p = objs[i & mask];
        ((node *)stm_write(p))->value = (long)i;
    }
    return 0;
}

static BENCH_NOINLINE long k_write_empty(node *const *objs, size_t mask, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        node *p = objs[i & mask];
        p->value = (long)i;
    }
    return 0;
}

/* Transactions: argument block of the transaction functions. */
typedef struct txc {
    node *const *objs;
    size_t k;
} txc;

static int tx_empty(void *arg)
{
    (void)arg;
    return STM_DONE;
}

static int tx_read_k(void *arg)
{
    txc *c = arg;
    sink = k_read(c->objs, c->k - 1, c->k);
    return STM_DONE;
}

static int tx_write_k(void *arg)
{
    txc *c = arg;
    k_write(c->objs, c->k - 1, c->k);
    return STM_DONE;
}

/* n transactions; the i-th works on base[i * stride ...]. */
static BENCH_NOINLINE void k_tx(stm_tx_fn *fn, txc *c, node *const *base, size_t stride,
                                size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c->objs = base + i * stride;
        if (stm_run(fn, c) != STM_OK)
            die("%s", "stm_run failed");
    }
}

/* The same loop calling the function directly (the "empty loop" of the
 * transaction cases; only ever given tx_empty). */
static BENCH_NOINLINE void k_tx_empty(stm_tx_fn *fn, txc *c, node *const *base, size_t stride,
                                      size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c->objs = base + i * stride;
        fn(c);
    }
}

/* ------------------------------------------------------------------ */
/* Results and metering                                                */
/* ------------------------------------------------------------------ */

enum { G_REF, G_READ, G_WRITE, G_TX };
static const char *const group_names[] = { "reference", "read", "write", "transaction" };

typedef struct result {
    const char *id;
    int group;
    const char *empty;       /* id of the empty loop to subtract (NULL: none) */
    const char *desc;
    /* this build */
    double ns_runs[MAX_RUNS];
    int nruns;
    double ns;               /* median ns/op */
    double instr;            /* instr/op, net of the empty loop (raw for G_REF) */
    double instr_raw;
    uint64_t ops_stats, read_slow, write_slow, aborts;
    int distinct_slots;      /* hit loops: distinct read-cache slots of the K keys */
    int redone;              /* runs redone because the thread was preempted */
    int disturbed;           /* measured runs kept although preempted (no redo left) */
    /* callgrind mode: the dumps of the measured regions */
    uint64_t cg_ir, cg_ops;
    /* the baseline build, read back from barriers_baseline --raw */
    double base_ns, base_instr;
    bool have_base;
} result;

#define NA (0.0 / 0.0)

#define CASE(id_, group_, empty_, desc_) \
    { .id = (id_), .group = (group_), .empty = (empty_), .desc = (desc_) }

static result results[] = {
    CASE("loop.read", G_REF, NULL, "empty loop: load pointer, load field (per op)"),
    CASE("loop.write", G_REF, NULL, "empty loop: load pointer, store field (per op)"),
    CASE("loop.call", G_REF, NULL, "empty loop: call an empty function (per op)"),

    CASE("read.private", G_READ, "loop.read", "private (allocated in this transaction)"),
    CASE("read.protected.hit", G_READ, "loop.read", "own protected, resolved before: cache hit"),
    CASE("read.protected.first", G_READ, "loop.read", "own protected, first access"),
    CASE("read.public.hit", G_READ, "loop.read", "public (stm_publish): cache hit"),
    CASE("read.public.first", G_READ, "loop.read", "public (stm_publish): first access"),
    CASE("read.prebuilt.hit", G_READ, "loop.read", "prebuilt public: cache hit"),
    CASE("read.prebuilt.first", G_READ, "loop.read", "prebuilt public: first access"),
    CASE("read.outdated_own.hit", G_READ, "loop.read", "public outdated by own commit: cache hit"),
    CASE("read.outdated_own.first", G_READ, "loop.read",
         "public outdated by own commit: first access"),
    CASE("read.outdated.hit", G_READ, "loop.read", "public outdated by other thread: cache hit"),
    CASE("read.outdated.first", G_READ, "loop.read",
         "public outdated by other thread: first access"),
    CASE("read.outdated.steal", G_READ, "loop.read",
         "public outdated by other thread: first ever (steal)"),
    CASE("read.stub.hit", G_READ, "loop.read", "stub to other thread's object: cache hit"),
    CASE("read.stub.first", G_READ, "loop.read", "stub to other thread's object: first access"),
    CASE("read.stub.steal", G_READ, "loop.read", "stub to other thread's object: first ever (steal)"),
    CASE("read.rehit128", G_READ, "loop.read",
         "public, hit again after a write to another public (128 resolved)"),
    CASE("read.rehit512", G_READ, "loop.read",
         "public, hit again after a write to another public (512 resolved)"),

    CASE("write.private", G_WRITE, "loop.write", "private (allocated in this transaction)"),
    CASE("write.pfp", G_WRITE, "loop.write", "own protected, after the first write (in place)"),
    CASE("write.protected.first", G_WRITE, "loop.write", "own protected, first write (backup)"),
    CASE("write.outdated_own.first", G_WRITE, "loop.write",
         "public outdated by own commit, first write (backup)"),
    CASE("write.outdated_own.again", G_WRITE, "loop.write",
         "public outdated by own commit, again via old pointer"),
    CASE("write.public.first", G_WRITE, "loop.write", "public, first write (private copy)"),
    CASE("write.public.again", G_WRITE, "loop.write", "public, again via the public pointer"),

    CASE("tx.empty", G_TX, "loop.call", "stm_run(empty function)"),
    CASE("tx.read16", G_TX, "loop.call", "read-only: 16 public objects (cache carried over)"),
    CASE("tx.write1.private", G_TX, "loop.call", "write 1 own protected object (private commit)"),
    CASE("tx.write4.private", G_TX, "loop.call", "write 4 own protected objects (private commit)"),
    CASE("tx.write1.shared", G_TX, "loop.call", "write 1 public object (shared commit)"),
    CASE("tx.write4.shared", G_TX, "loop.call", "write 4 public objects (shared commit)"),
    CASE("tx.write1.shared.big", G_TX, "loop.call",
         "write 1 public object, after one 1024-object transaction"),
    CASE("tx.write4.shared.big", G_TX, "loop.call",
         "write 4 public objects, after one 1024-object transaction"),
};
#define NRESULTS (sizeof results / sizeof results[0])

static result *find_result(const char *id)
{
    for (size_t i = 0; i < NRESULTS; i++)
        if (strcmp(results[i].id, id) == 0)
            return &results[i];
    return NULL;
}

/* The callgrind dumps of measured regions, parsed once at the end. */
typedef struct dump_rec {
    result *res;
    int index;
    uint64_t ops;
} dump_rec;
static dump_rec *dumps;
static size_t ndumps, cap_dumps;

static stm_stats get_stats(void)
{
    stm_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    stm_get_stats(&s);
    return s;
}

/* One run of one case: the measured regions it is made of. */
typedef struct meter {
    result *res;
    bool measured;           /* false during the warm-up run */
    bool preempted;          /* an involuntary context switch hit a region */
    stm_stats s0;
    long nivcsw0;
    uint64_t t0, ns, ops;
} meter;

/* Involuntary context switches of the calling thread so far. */
static long preemptions(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return 0;
    return ru.ru_nivcsw;
}

static void m_start(meter *m)
{
    if (m->measured)
        m->s0 = get_stats();
    if (cg_mode) {
        CALLGRIND_ZERO_STATS;
    } else {
        m->nivcsw0 = preemptions();
        m->t0 = bench_now_ns();
    }
}

static void m_stop(meter *m, uint64_t ops)
{
    if (cg_mode) {
        if (!m->measured)
            return;
        CALLGRIND_DUMP_STATS_AT(m->res->id);
        if (ndumps == cap_dumps) {
            cap_dumps = cap_dumps ? 2 * cap_dumps : 64;
            dumps = realloc(dumps, cap_dumps * sizeof *dumps);
            if (!dumps)
                die("%s", "out of memory");
        }
        dumps[ndumps++] = (dump_rec){ m->res, ++cg_dumps, ops };
    } else {
        m->ns += bench_now_ns() - m->t0;
        if (preemptions() != m->nivcsw0)
            m->preempted = true;
    }
    m->ops += ops;
    if (m->measured) {
        stm_stats s1 = get_stats();
        m->res->ops_stats += ops;
        m->res->read_slow += s1.read_slow - m->s0.read_slow;
        m->res->write_slow += s1.write_slow - m->s0.write_slow;
        m->res->aborts += s1.aborts - m->s0.aborts;
    }
}

/* One run of a case; `batch` counts the calls of the body for this case
 * (0 is the warm-up), so that cases that use up fresh objects take batch
 * number `batch` of their pool. */
typedef void case_body(meter *m, int batch, void *arg);

/* Runs body once as a warm-up, then P.runs times measured.  In timing
 * mode a measured run during which the thread was preempted (an
 * involuntary context switch, getrusage RUSAGE_THREAD) is redone, up to
 * MAX_REDO times per run and while fresh batches last (`batches`: how
 * many the body can take, 0 for no limit), so that a busy machine
 * lengthens the benchmark rather than its results. */
static void run_case(const char *id, case_body *body, void *arg, int batches)
{
    result *res = find_result(id);
    if (!res)
        die("no case %s", id);
    int batch = 0;
    for (int run = -1; run < P.runs; run++) {
        for (int redo = 0;; redo++) {
            meter m = { .res = res, .measured = run >= 0 };
            body(&m, batch++, arg);
            bool can_redo = redo < MAX_REDO && (batches == 0 || batch < batches);
            if (run >= 0 && !cg_mode && m.preempted && can_redo) {
                res->redone++;
                continue;
            }
            if (run >= 0 && !cg_mode && m.ops) {
                res->ns_runs[res->nruns++] = (double)m.ns / (double)m.ops;
                res->disturbed += m.preempted;
            }
            break;
        }
    }
    res->ns = cg_mode ? NA : bench_median(res->ns_runs, res->nruns);
}

/* ------------------------------------------------------------------ */
/* Object pools, kept on the shadow stack                              */
/* ------------------------------------------------------------------ */

/* A pool is a range of shadow-stack slots: the collector keeps them up to
 * date when objects move, so the slots themselves serve as the array the
 * loops index (read only, inside transactions). */
typedef struct pool {
    size_t base, n;
} pool;

static node **pool_at(pool p, size_t i)
{
    return (node **)stm_root_slot(p.base + i);
}

/* An inevitable transaction: set-up code, and roots pushed in it stay
 * (it cannot abort).  Beginning one also clears the read cache and the
 * read set of the next transaction (DESIGN.md 2.1, C5). */
static void begin_setup(void)
{
    if (stm_begin_inevitable() != STM_OK)
        die("%s", "stm_begin_inevitable failed");
}

static void end_setup(void)
{
    if (stm_commit() != STM_OK)
        die("%s", "stm_commit failed");
}

static void clear_cache(void)
{
    begin_setup();
    end_setup();
}

/* Empties the nursery: rooted young objects become old.  Called before
 * each case so that no minor collection runs inside a measured loop. */
static void fresh_nursery(void)
{
    begin_setup();
    stm_minor_collect();
    end_setup();
}

/* n new committed objects (protected, young until fresh_nursery). */
static pool make_pool(size_t n, long v0)
{
    pool p = { stm_root_depth(), n };
    begin_setup();
    for (size_t i = 0; i < n; i++) {
        node *x = stm_allocate(sizeof(node), T_NODE);
        if (!x)
            die("%s", "out of memory");
        x->value = v0 + (long)i;
        stm_push_root(x);
    }
    end_setup();
    return p;
}

/* Replaces every object of the pool by its public copy (stm_publish). */
static void publish_pool(pool p)
{
    for (size_t i = 0; i < p.n; i++) {
        node **slot = pool_at(p, i);
        node *pub = stm_publish(*slot);
        if (!pub)
            die("%s", "stm_publish failed");
        *slot = pub;
    }
}

/* How many distinct read-cache slots the n keys use (the cache is
 * direct-mapped on the low 16 address bits: 4096 slots of 16 bytes). */
static int distinct_slots(node *const *keys, size_t n)
{
    static unsigned char used[STM__CACHE_BYTES / sizeof(stm__cache_entry)];
    memset(used, 0, sizeof used);
    int d = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned s = (uint16_t)(uintptr_t)keys[i] / sizeof(stm__cache_entry);
        if (!used[s]++)
            d++;
    }
    return d;
}

/* Prebuilt objects: static, public from the start. */
#define MAX_PREBUILT 1024
static node prebuilt[MAX_PREBUILT] __attribute__((aligned(STM_ALIGNMENT)));

/* ------------------------------------------------------------------ */
/* The other thread: writes public objects, so that this thread sees   */
/* outdated copies and stubs                                            */
/* ------------------------------------------------------------------ */

typedef struct foreign_ctx {
    node **pubs;      /* public copies (they never move: a plain array) */
    size_t n;
} foreign_ctx;

/* For each public C: C.left = a new object X of this thread, committed.
 * C becomes outdated (C -> stub -> our copy L, L.left = X); the first
 * thread that reads C steals L, which turns L.left into a stub to X. */
static int tx_foreign(void *arg)
{
    foreign_ctx *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        node *x = stm_allocate(sizeof(node), T_NODE);   /* may collect: allocate first */
        if (!x)
            die("%s", "out of memory");
        x->value = 7000 + (long)i;
        node *w = stm_write(c->pubs[i]);                 /* never collects */
        w->left = x;
        w->value += 1;
    }
    return STM_DONE;
}

static void *foreign_thread(void *arg)
{
    if (stm_thread_attach() != STM_OK)
        die("%s", "stm_thread_attach failed in the other thread");
    if (stm_run(tx_foreign, arg) != STM_OK)
        die("%s", "the other thread's transaction failed");
    stm_thread_detach();
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The cases                                                           */
/* ------------------------------------------------------------------ */

typedef struct loop_ctx {
    kernel_fn *k;
    node *const *objs;
    size_t mask;
    size_t warm;       /* calls before the measured ones, same transaction */
    size_t n;          /* measured calls */
    size_t alloc;      /* > 0: objs = this many objects allocated first */
    meter *m;
} loop_ctx;

static node *scratch[4096];

static int tx_loop(void *arg)
{
    loop_ctx *c = arg;
    node *const *objs = c->objs;
    if (c->alloc) {
        /* No collection can run: the nursery was emptied before the case
         * and these few objects fit. */
        for (size_t i = 0; i < c->alloc; i++) {
            scratch[i] = stm_allocate(sizeof(node), T_NODE);
            scratch[i]->value = (long)i;
        }
        objs = scratch;
    }
    if (c->warm)
        sink = c->k(objs, c->mask, c->warm);
    m_start(c->m);
    long r = c->k(objs, c->mask, c->n);
    m_stop(c->m, c->n);
    sink = r;
    return STM_DONE;
}

/* A loop over the K objects at objs (or K fresh private ones), n_hit calls
 * after `warm` unmeasured ones. */
typedef struct hit_arg {
    kernel_fn *k;
    node *const *objs;     /* NULL: allocate private objects */
    size_t warm;
    pool *fresh;           /* non-NULL: objs = fresh + batch * K */
    size_t n;              /* calls per measured run (0: from the warm-up) */
} hit_arg;

static void body_hit(meter *m, int batch, void *arg)
{
    hit_arg *a = arg;
    node *const *objs = a->objs;
    if (a->fresh)
        objs = pool_at(*a->fresh, (size_t)batch * P.K);
    size_t n = m->measured && a->n ? a->n : P.n_hit;
    loop_ctx c = { a->k, objs, P.K - 1, a->warm, n, objs ? 0 : P.K, m };
    stm_run(tx_loop, &c);
    if (!m->measured && !cg_mode && m->ns) {
        /* Calibrate: measured runs of about TARGET_RUN_NS, whole passes. */
        double calls = TARGET_RUN_NS / ((double)m->ns / (double)m->ops);
        if (calls < (double)(16 * P.K))
            calls = (double)(16 * P.K);
        if (calls > (double)((size_t)1 << 26))
            calls = (double)((size_t)1 << 26);
        a->n = ((size_t)calls + P.K - 1) / P.K * P.K;
    }
    if (objs && m->measured && !m->res->distinct_slots)
        m->res->distinct_slots = distinct_slots(objs, P.K);
}

/* P.passes passes over M objects, each in its own transaction; `clear`:
 * after a cache clear (reads); `fresh`: objects fresh + batch * M, one
 * pass. */
typedef struct first_arg {
    kernel_fn *k;
    node *const *objs;
    bool clear;
    pool *fresh;
} first_arg;

static void body_first(meter *m, int batch, void *arg)
{
    first_arg *a = arg;
    node *const *objs = a->objs;
    int passes = P.passes;
    if (a->fresh) {
        objs = pool_at(*a->fresh, (size_t)batch * P.M);
        passes = 1;
    }
    for (int pass = 0; pass < passes; pass++) {
        if (a->clear)
            clear_cache();
        loop_ctx c = { a->k, objs, P.M - 1, 0, P.M, 0, m };
        stm_run(tx_loop, &c);
    }
}

/* n transactions of fn; the i-th on objs + i * stride. */
typedef struct tx_arg {
    stm_tx_fn *fn;
    bool empty;            /* k_tx_empty: call fn directly */
    node *const *objs;
    size_t k, stride, n;
    pool *fresh;           /* objs = fresh + batch * n * stride */
} tx_arg;

static void body_tx(meter *m, int batch, void *arg)
{
    tx_arg *a = arg;
    node *const *objs = a->objs;
    if (a->fresh)
        objs = pool_at(*a->fresh, (size_t)batch * a->n * a->stride);
    txc c = { NULL, a->k };
    m_start(m);
    if (a->empty)
        k_tx_empty(a->fn, &c, objs, a->stride, a->n);
    else
        k_tx(a->fn, &c, objs, a->stride, a->n);
    m_stop(m, a->n);
}

/* Collects the stubs: L.left of the stolen copies of the batch's public
 * objects (reading them is a cache hit by now). */
static pool collect_stubs(pool outdated)
{
    pool p = { stm_root_depth(), outdated.n };
    begin_setup();
    for (size_t i = 0; i < outdated.n; i++) {
        const node *c = stm_read(*pool_at(outdated, i));
        if (!c->left)
            die("%s", "no stub where one was expected");
        stm_push_root(c->left);
    }
    end_setup();
    return p;
}

/* Resolves r public objects, writes another public object for the first
 * time (stm_cache_redirect runs), then reads the r objects again: the
 * measured part.  While at most 256 pointers have been resolved the
 * redirect keeps the cache; above, it clears it (stm/barrier.c). */
typedef struct rehit_arg {
    node *const *objs;
    size_t r;
    pool *victims;
    size_t next_victim;
} rehit_arg;

typedef struct rehit_ctx {
    rehit_arg *a;
    node *victim;
    meter *m;
} rehit_ctx;

static int tx_rehit(void *arg)
{
    rehit_ctx *c = arg;
    sink = k_read(c->a->objs, c->a->r - 1, c->a->r);
    ((node *)stm_write(c->victim))->value += 1;
    m_start(c->m);
    long r = k_read(c->a->objs, c->a->r - 1, c->a->r);
    m_stop(c->m, c->a->r);
    sink = r;
    return STM_DONE;
}

static void body_rehit(meter *m, int batch, void *arg)
{
    (void)batch;
    rehit_arg *a = arg;
    for (int pass = 0; pass < P.passes; pass++) {
        if (a->next_victim >= a->victims->n)
            die("%s", "out of fresh public objects");
        rehit_ctx c = { a, *pool_at(*a->victims, a->next_victim++), m };
        clear_cache();
        stm_run(tx_rehit, &c);
    }
}

/* Writes `n` public objects of the pool in one transaction, in chunks of
 * `chunk` per transaction (chunk == n: one transaction). */
typedef struct write_range {
    pool p;
    size_t from, to;
} write_range;

static int tx_write_range(void *arg)
{
    write_range *w = arg;
    for (size_t i = w->from; i < w->to; i++)
        ((node *)stm_write(*pool_at(w->p, i)))->value += 1;
    return STM_DONE;
}

static void write_pool(pool p, size_t chunk)
{
    for (size_t i = 0; i < p.n; i += chunk) {
        write_range w = { p, i, i + chunk < p.n ? i + chunk : p.n };
        if (stm_run(tx_write_range, &w) != STM_OK)
            die("%s", "writing a pool failed");
    }
}

/* The size of the one large transaction before the ".big" cases. */
#define BIG_TX 1024

static void run_all(void)
{
    const size_t K = P.K, M = P.M, B = (size_t)P.runs + 1 + (size_t)P.spare;

    /* ---- set-up: every pool, before anything is measured ---- */
    pool prot = make_pool(M, 100);               /* own protected */
    pool pub = make_pool(M, 200);                /* public (published) */
    publish_pool(pub);
    if (M > MAX_PREBUILT)
        die("%s", "M above MAX_PREBUILT");
    for (size_t i = 0; i < M; i++) {
        prebuilt[i] = (node){ STM_PREBUILT(T_NODE), 300 + (long)i, NULL, NULL };
        if (stm_register_prebuilt(&prebuilt[i]) != STM_OK)
            die("%s", "stm_register_prebuilt failed");
    }
    node *pre_ptrs[MAX_PREBUILT];
    for (size_t i = 0; i < M; i++)
        pre_ptrs[i] = &prebuilt[i];
    /* Outdated by our own commits: written in small transactions, so that
     * the public-to-private map stays small (see the ".big" cases). */
    pool own_out = make_pool(M, 400);
    publish_pool(own_out);
    write_pool(own_out, 16);
    pool foreign = make_pool(B * M, 500);        /* outdated by the other thread */
    publish_pool(foreign);
    {
        foreign_ctx fc = { pool_at(foreign, 0), foreign.n };
        pthread_t th;
        if (pthread_create(&th, NULL, foreign_thread, &fc) != 0)
            die("%s", "pthread_create failed");
        pthread_join(th, NULL);
    }
    /* Fresh public objects for the cases that write them (one use each). */
    pool victims = make_pool(2 * B * (size_t)P.passes, 550);
    publish_pool(victims);
    pool wpub_first = make_pool(B * M, 600);
    publish_pool(wpub_first);
    pool wpub_again = make_pool(B * K, 700);
    publish_pool(wpub_again);
    pool tshared1 = make_pool(B * P.n_tx_shared * 1, 800);
    publish_pool(tshared1);
    pool tshared4 = make_pool(B * P.n_tx_shared * 4, 900);
    publish_pool(tshared4);
    pool tshared1b = make_pool(B * P.n_tx_shared * 1, 1000);
    publish_pool(tshared1b);
    pool tshared4b = make_pool(B * P.n_tx_shared * 4, 1100);
    publish_pool(tshared4b);
    pool big = make_pool(BIG_TX, 1200);
    publish_pool(big);
    fresh_nursery();
    if (cg_mode) {
        /* Start the measured dumps from a clean state (counts of the set-up
         * and of the other thread go to this one, which is not read). */
        CALLGRIND_DUMP_STATS_AT("setup");
        cg_dumps++;
    }

    node *const *protp = pool_at(prot, 0);
    node *const *pubp = pool_at(pub, 0);
    node *const *own_outp = pool_at(own_out, 0);
    node *const *foreign0 = pool_at(foreign, 0);

    /* ---- reference loops ---- */
    hit_arg h;
    h = (hit_arg){ k_read_empty, protp, K, NULL, 0 };
    fresh_nursery();
    run_case("loop.read", body_hit, &h, 0);
    h = (hit_arg){ k_write_empty, protp, K, NULL, 0 };
    fresh_nursery();
    run_case("loop.write", body_hit, &h, 0);
    tx_arg t = { tx_empty, true, protp, 1, 0, P.n_tx, NULL };
    run_case("loop.call", body_tx, &t, 0);

    /* ---- reads ---- */
    first_arg f;
    h = (hit_arg){ k_read, NULL, K, NULL, 0 };
    fresh_nursery();
    run_case("read.private", body_hit, &h, 0);

    h = (hit_arg){ k_read, protp, K, NULL, 0 };
    fresh_nursery();
    run_case("read.protected.hit", body_hit, &h, 0);
    f = (first_arg){ k_read, protp, true, NULL };
    run_case("read.protected.first", body_first, &f, 0);

    h = (hit_arg){ k_read, pubp, K, NULL, 0 };
    fresh_nursery();
    run_case("read.public.hit", body_hit, &h, 0);
    f = (first_arg){ k_read, pubp, true, NULL };
    run_case("read.public.first", body_first, &f, 0);

    h = (hit_arg){ k_read, pre_ptrs, K, NULL, 0 };
    fresh_nursery();
    run_case("read.prebuilt.hit", body_hit, &h, 0);
    f = (first_arg){ k_read, pre_ptrs, true, NULL };
    run_case("read.prebuilt.first", body_first, &f, 0);

    h = (hit_arg){ k_read, own_outp, K, NULL, 0 };
    fresh_nursery();
    run_case("read.outdated_own.hit", body_hit, &h, 0);
    f = (first_arg){ k_read, own_outp, true, NULL };
    run_case("read.outdated_own.first", body_first, &f, 0);

    /* The first read of each batch steals; batch 0 (the warm-up's) then
     * serves the hit and first-access loops. */
    f = (first_arg){ k_read, NULL, true, &foreign };
    fresh_nursery();
    run_case("read.outdated.steal", body_first, &f, (int)B);
    h = (hit_arg){ k_read, foreign0, K, NULL, 0 };
    run_case("read.outdated.hit", body_hit, &h, 0);
    f = (first_arg){ k_read, foreign0, true, NULL };
    run_case("read.outdated.first", body_first, &f, 0);

    pool stubs = collect_stubs(foreign);
    node *const *stubs0 = pool_at(stubs, 0);
    f = (first_arg){ k_read, NULL, true, &stubs };
    fresh_nursery();
    run_case("read.stub.steal", body_first, &f, (int)B);
    h = (hit_arg){ k_read, stubs0, K, NULL, 0 };
    run_case("read.stub.hit", body_hit, &h, 0);
    f = (first_arg){ k_read, stubs0, true, NULL };
    run_case("read.stub.first", body_first, &f, 0);

    rehit_arg ra = { pubp, 128, &victims, 0 };
    fresh_nursery();
    run_case("read.rehit128", body_rehit, &ra, (int)B);
    ra.r = 512;
    fresh_nursery();
    run_case("read.rehit512", body_rehit, &ra, (int)B);

    /* ---- transactions, while the public-to-private map is small ---- */
    fresh_nursery();
    t = (tx_arg){ tx_empty, false, protp, 1, 0, P.n_tx, NULL };
    run_case("tx.empty", body_tx, &t, 0);
    t = (tx_arg){ tx_read_k, false, pubp, 16, 0, P.n_tx, NULL };
    run_case("tx.read16", body_tx, &t, 0);
    fresh_nursery();
    t = (tx_arg){ tx_write_k, false, protp, 1, 0, P.n_tx, NULL };
    run_case("tx.write1.private", body_tx, &t, 0);
    fresh_nursery();
    t = (tx_arg){ tx_write_k, false, protp, 4, 0, P.n_tx, NULL };
    run_case("tx.write4.private", body_tx, &t, 0);
    fresh_nursery();
    t = (tx_arg){ tx_write_k, false, NULL, 1, 1, P.n_tx_shared, &tshared1 };
    run_case("tx.write1.shared", body_tx, &t, (int)B);
    fresh_nursery();
    t = (tx_arg){ tx_write_k, false, NULL, 4, 4, P.n_tx_shared, &tshared4 };
    run_case("tx.write4.shared", body_tx, &t, (int)B);

    /* ---- writes ---- */
    h = (hit_arg){ k_write, NULL, K, NULL, 0 };
    fresh_nursery();
    run_case("write.private", body_hit, &h, 0);

    h = (hit_arg){ k_write, protp, K, NULL, 0 };
    fresh_nursery();
    run_case("write.pfp", body_hit, &h, 0);
    f = (first_arg){ k_write, protp, false, NULL };
    fresh_nursery();
    run_case("write.protected.first", body_first, &f, 0);

    f = (first_arg){ k_write, own_outp, false, NULL };
    fresh_nursery();
    run_case("write.outdated_own.first", body_first, &f, 0);
    h = (hit_arg){ k_write, own_outp, K, NULL, 0 };
    fresh_nursery();
    run_case("write.outdated_own.again", body_hit, &h, 0);

    /* M public objects written in one transaction: from here on the
     * thread's public-to-private map has room for M entries. */
    f = (first_arg){ k_write, NULL, false, &wpub_first };
    fresh_nursery();
    run_case("write.public.first", body_first, &f, (int)B);
    h = (hit_arg){ k_write, NULL, K, &wpub_again, 0 };
    fresh_nursery();
    run_case("write.public.again", body_hit, &h, (int)B);

    /* ---- shared commits again, after one large transaction ---- */
    fresh_nursery();
    write_pool(big, BIG_TX);
    fresh_nursery();
    t = (tx_arg){ tx_write_k, false, NULL, 1, 1, P.n_tx_shared, &tshared1b };
    run_case("tx.write1.shared.big", body_tx, &t, (int)B);
    fresh_nursery();
    t = (tx_arg){ tx_write_k, false, NULL, 4, 4, P.n_tx_shared, &tshared4b };
    run_case("tx.write4.shared.big", body_tx, &t, (int)B);
}

/* ------------------------------------------------------------------ */
/* Callgrind dumps                                                     */
/* ------------------------------------------------------------------ */

/* The "summary:" line of dump file <cg_out>.<index>: the instructions of
 * the dumped interval, what callgrind_annotate shows as PROGRAM TOTALS.
 * (The set-up dump in run_all absorbs the counts of the other thread,
 * which would otherwise land in the first measured dump.) */
static uint64_t read_dump(int index)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s.%d", cg_out, index);
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open callgrind dump %s (is --cg-out the --callgrind-out-file?)", path);
    char line[512];
    uint64_t v = 0;
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long long x;
        if (sscanf(line, "summary: %llu", &x) == 1) {
            v = x;
            found = true;
            break;
        }
    }
    fclose(f);
    if (!found)
        die("no summary line in %s", path);
    return v;
}

static void collect_dumps(void)
{
    for (size_t i = 0; i < ndumps; i++) {
        dumps[i].res->cg_ir += read_dump(dumps[i].index);
        dumps[i].res->cg_ops += dumps[i].ops;
    }
    for (size_t i = 0; i < NRESULTS; i++) {
        result *r = &results[i];
        r->instr_raw = r->cg_ops ? (double)r->cg_ir / (double)r->cg_ops : NA;
    }
}

/* instr: net of the case's empty loop. */
static void net_instr(void)
{
    for (size_t i = 0; i < NRESULTS; i++) {
        result *r = &results[i];
        if (!r->empty) {
            r->instr = r->instr_raw;
            continue;
        }
        result *e = find_result(r->empty);
        r->instr = r->instr_raw - e->instr_raw;
    }
}

/* ------------------------------------------------------------------ */
/* Child processes: the callgrind run and the baseline twin            */
/* ------------------------------------------------------------------ */

/* Runs argv, returns its standard output (malloc'ed) or NULL. */
static char *capture(char *const argv[])
{
    int fd[2];
    if (pipe(fd) != 0)
        return NULL;
    pid_t pid = fork();
    if (pid < 0)
        return NULL;
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "barriers: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        if (!buf)
            die("%s", "out of memory");
        ssize_t r = read(fd[0], buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = 0;
    close(fd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "barriers: %s failed (status %d)\n", argv[0], status);
        free(buf);
        return NULL;
    }
    return buf;
}

/* Lines "R\t<id>\t<ns>\t<instr>\t<read_slow/op>\t<write_slow/op>\t<desc>". */
typedef void raw_sink(result *r, double ns, double instr);

static void parse_raw(char *text, raw_sink *fn)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] != 'R' || line[1] != '\t')
            continue;
        char *f[4];
        char *s = line + 2;
        int nf = 0;
        while (nf < 4) {
            f[nf++] = s;
            s = strchr(s, '\t');
            if (!s)
                break;
            *s++ = 0;
        }
        if (nf < 3)
            continue;
        result *r = find_result(f[0]);
        if (r)
            fn(r, strtod(f[1], NULL), strtod(f[2], NULL));
    }
}

static void take_instr(result *r, double ns, double instr)
{
    (void)ns;
    r->instr = instr;
}

#ifndef STM_BASELINE
static void take_base(result *r, double ns, double instr)
{
    r->base_ns = ns;
    r->base_instr = instr;
    r->have_base = true;
}
#endif

static char self_path[PATH_MAX];

static bool have_valgrind(void)
{
    char *argv[] = { "valgrind", "--version", NULL };
    int devnull = open("/dev/null", O_WRONLY);
    int saved = dup(2);
    dup2(devnull, 2);
    char *out = capture(argv);
    dup2(saved, 2);
    close(saved);
    close(devnull);
    bool ok = out != NULL;
    free(out);
    return ok;
}

/* Runs this program under callgrind in --callgrind mode and takes the
 * instruction counts from its --raw output. */
static bool instr_from_callgrind(void)
{
    char dir[] = "/tmp/stm-barriers-XXXXXX";
    if (!mkdtemp(dir))
        return false;
    char out_file[PATH_MAX + 32], out_opt[PATH_MAX + 64];
    snprintf(out_file, sizeof out_file, "%s/cg.out", dir);
    snprintf(out_opt, sizeof out_opt, "--callgrind-out-file=%s", out_file);
    char *argv[] = { "valgrind", "--tool=callgrind", "-q", out_opt, self_path, "--callgrind",
                     "--raw",    "--cg-out",         out_file, NULL };
    char *out = capture(argv);
    if (out) {
        parse_raw(out, take_instr);
        free(out);
    }
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "barriers: could not remove %s\n", dir);
    return out != NULL;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static int pinned_pu = -1;
static double load_at_start = NA;   /* 1-minute load average, /proc/loadavg */

static void read_loadavg(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load_at_start) != 1)
            load_at_start = NA;
        fclose(f);
    }
}

static double per_op(uint64_t n, const result *r)
{
    return r->ops_stats ? (double)n / (double)r->ops_stats : NA;
}

/* v with prec decimals, or `na` for a missing value. */
static void fmt_na(char *buf, size_t len, double v, int prec, const char *na)
{
    if (isnan(v))
        snprintf(buf, len, "%s", na);
    else
        snprintf(buf, len, "%.*f", prec, v);
}

static void fmt(char *buf, size_t len, double v, int prec)
{
    fmt_na(buf, len, v, prec, "-");
}

static void print_raw(void)
{
    for (size_t i = 0; i < NRESULTS; i++) {
        const result *r = &results[i];
        char ns[32], in[32], rs[32], ws[32];
        fmt_na(ns, sizeof ns, r->ns, 4, "nan");
        fmt_na(in, sizeof in, r->instr, 4, "nan");
        fmt_na(rs, sizeof rs, per_op(r->read_slow, r), 6, "nan");
        fmt_na(ws, sizeof ws, per_op(r->write_slow, r), 6, "nan");
        printf("R\t%s\t%s\t%s\t%s\t%s\t%s\n", r->id, ns, in, rs, ws, r->desc);
    }
}

static void print_table(bool with_base)
{
    printf("libstm barriers (%s build, %s, -O2), %s\n", FLAVOUR, bench_compiler(),
           cg_mode ? "callgrind mode" : "timing mode");
    if (!cg_mode) {
        if (pinned_pu >= 0)
            printf("pinned to CPU %d; ", pinned_pu);
        else
            printf("not pinned; ");
        printf("ns/op: median of %d runs after a warm-up run; load average %.2f at start, "
               "%ld CPUs online\n",
               P.runs, load_at_start, sysconf(_SC_NPROCESSORS_ONLN));
    }
    printf("K = %zu objects in hit loops, M = %zu objects per first-access pass; "
           "instr/op net of the empty loop (callgrind)\n\n",
           P.K, P.M);
    const char *hdr_base = with_base ? "  base ns  base ins |    +ns   +instr" : "";
    int last_group = -1;
    for (size_t i = 0; i < NRESULTS; i++) {
        const result *r = &results[i];
        if (r->group != last_group) {
            last_group = r->group;
            printf("%-12s %-53s %7s %8s%s %7s %7s\n", group_names[r->group], "", "ns/op",
                   "instr/op", hdr_base, "rd.slow", "wr.slow");
        }
        char ns[32], in[32], bns[32], bin[32], dns[32], din[32], rs[32], ws[32];
        fmt(ns, sizeof ns, r->ns, 2);
        fmt(in, sizeof in, r->instr, 1);
        fmt(bns, sizeof bns, r->have_base ? r->base_ns : NA, 2);
        fmt(bin, sizeof bin, r->have_base ? r->base_instr : NA, 1);
        fmt(dns, sizeof dns, r->have_base ? r->ns - r->base_ns : NA, 2);
        fmt(din, sizeof din, r->have_base ? r->instr - r->base_instr : NA, 1);
        fmt(rs, sizeof rs, per_op(r->read_slow, r), 3);
        fmt(ws, sizeof ws, per_op(r->write_slow, r), 3);
        printf("  %-64s %7s %8s", r->desc, ns, in);
        if (with_base)
            printf(" | %8s %8s | %6s %8s", bns, bin, dns, din);
        printf(" %7s %7s\n", rs, ws);
    }
    printf("\nrd.slow / wr.slow: stm_get_stats read_slow / write_slow per operation in "
           "the measured loops (this build).\n");
    for (size_t i = 0; i < NRESULTS; i++) {
        const result *r = &results[i];
        if (r->distinct_slots && (size_t)r->distinct_slots < P.K)
            printf("note: %s: the %zu keys use only %d distinct read-cache slots\n", r->id, P.K,
                   r->distinct_slots);
        if (r->aborts)
            printf("note: %s: %llu aborts in the measured runs\n", r->id,
                   (unsigned long long)r->aborts);
        if (r->disturbed)
            printf("note: %s: %d of its %d measured runs were preempted (no redo left)\n",
                   r->id, r->disturbed, r->nruns);
    }
    if (!cg_mode) {
        int redone = 0;
        for (size_t i = 0; i < NRESULTS; i++)
            redone += results[i].redone;
        printf("runs redone because the thread was preempted during them: %d\n", redone);
    }
}

static void json_num(const char *key, double v, bool comma)
{
    if (isnan(v))
        printf("\"%s\": null%s", key, comma ? ", " : "");
    else
        printf("\"%s\": %.4f%s", key, v, comma ? ", " : "");
}

static void print_json(bool with_base)
{
    printf("{\n  \"benchmark\": \"barriers\",\n  \"build\": \"%s\",\n  \"compiler\": \"%s\",\n",
           FLAVOUR, bench_compiler());
    printf("  \"mode\": \"%s\",\n  \"pinned_cpu\": %d,\n  ", cg_mode ? "callgrind" : "timing",
           pinned_pu);
    json_num("loadavg_at_start", load_at_start, false);
    printf(",\n");
    printf("  \"params\": {\"K\": %zu, \"M\": %zu, \"n_hit\": %zu, \"passes\": %d, \"n_tx\": %zu, "
           "\"n_tx_shared\": %zu, \"runs\": %d},\n",
           P.K, P.M, P.n_hit, P.passes, P.n_tx, P.n_tx_shared, P.runs);
    printf("  \"cases\": [\n");
    for (size_t i = 0; i < NRESULTS; i++) {
        const result *r = &results[i];
        printf("    {\"id\": \"%s\", \"group\": \"%s\", \"desc\": \"%s\", ", r->id,
               group_names[r->group], r->desc);
        json_num("ns_per_op", r->ns, true);
        printf("\"ns_runs\": [");
        for (int j = 0; j < r->nruns; j++)
            printf("%s%.4f", j ? ", " : "", r->ns_runs[j]);
        printf("], ");
        double mn = NA;
        for (int j = 0; j < r->nruns; j++)
            if (isnan(mn) || r->ns_runs[j] < mn)
                mn = r->ns_runs[j];
        json_num("ns_min", mn, true);
        printf("\"runs_redone\": %d, \"runs_preempted\": %d, ", r->redone, r->disturbed);
        json_num("instr_per_op", r->instr, true);
        json_num("read_slow_per_op", per_op(r->read_slow, r), true);
        json_num("write_slow_per_op", per_op(r->write_slow, r), with_base);
        if (with_base) {
            printf("\"baseline\": {");
            json_num("ns_per_op", r->have_base ? r->base_ns : NA, true);
            json_num("instr_per_op", r->have_base ? r->base_instr : NA, false);
            printf("}, \"overhead\": {");
            json_num("ns_per_op", r->have_base ? r->ns - r->base_ns : NA, true);
            json_num("instr_per_op", r->have_base ? r->instr - r->base_instr : NA, false);
            printf("}");
        }
        printf("}%s\n", i + 1 < NRESULTS ? "," : "");
    }
    printf("  ]\n}\n");
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: barriers [--json | --raw] [--no-instr] [--no-baseline] [--runs N] [--cpu N]\n"
            "       barriers --callgrind --cg-out FILE [--json | --raw]   (under valgrind)\n"
            "\n"
            "  --json         JSON instead of the table\n"
            "  --raw          one tab-separated line per case (used between the programs)\n"
            "  --no-instr     do not re-run under callgrind for instr/op\n"
            "  --no-baseline  do not run barriers_baseline (same loops, no barriers)\n"
            "  --runs N       measured runs per case, median reported (default 5)\n"
            "  --cpu N        pin to CPU N if allowed (default: the last allowed one)\n"
            "  --callgrind    fixed small counts, instruction counts from callgrind dumps\n"
            "                 (also STM_BENCH_CALLGRIND=1); needs --cg-out FILE equal to\n"
            "                 valgrind's --callgrind-out-file=FILE\n");
}

int main(int argc, char **argv)
{
    bool json = false, raw = false, want_instr = true, want_base = true;
    int runs = -1, cpu = -1;
    const char *env = getenv("STM_BENCH_CALLGRIND");
    cg_mode = env && *env && strcmp(env, "0") != 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--raw"))
            raw = true;
        else if (!strcmp(a, "--no-instr"))
            want_instr = false;
        else if (!strcmp(a, "--no-baseline"))
            want_base = false;
        else if (!strcmp(a, "--callgrind"))
            cg_mode = true;
        else if (!strcmp(a, "--cg-out") && i + 1 < argc)
            cg_out = argv[++i];
        else if (!strcmp(a, "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(a, "--cpu") && i + 1 < argc)
            cpu = atoi(argv[++i]);
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!cg_out)
        cg_out = getenv("STM_BENCH_CG_OUT");
    P = cg_mode ? CALLGRIND : TIMING;
    if (runs > 0)
        P.runs = runs < MAX_RUNS ? runs : MAX_RUNS;
    if (cg_mode) {
#ifndef HAVE_CALLGRIND
        die("%s", "--callgrind: built without <valgrind/callgrind.h>");
#endif
        if (!RUNNING_ON_VALGRIND || !cg_out)
            die("%s", "--callgrind must run under valgrind --tool=callgrind "
                      "--callgrind-out-file=FILE, with --cg-out FILE "
                      "(bench/barriers_callgrind.sh does it)");
        want_instr = false;
        want_base = false;
    }
    ssize_t len = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (len <= 0)
        die("%s", "cannot find my own path (/proc/self/exe)");
    self_path[len] = 0;
    for (size_t i = 0; i < NRESULTS; i++)
        results[i].instr = results[i].instr_raw = NA;

    /* The baseline twin is started after this program's own timing runs,
     * so that the two never share the core. */
    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = node_size;
    cfg.trace = node_trace;
    if (stm_init(&cfg) != STM_OK || stm_thread_attach() != STM_OK)
        die("%s", "cannot initialise libstm");
    if (!cg_mode) {
        read_loadavg();
        pinned_pu = bench_pin_to_one_pu(cpu);
    }

    run_all();

    stm_stats total = get_stats();
    if (stm_thread_detach() != STM_OK)
        die("%s", "stm_thread_detach failed");

    if (cg_mode) {
        collect_dumps();
        net_instr();
    } else if (want_instr) {
        if (!have_valgrind())
            fprintf(stderr, "barriers: valgrind not found: no instr/op (apt-get install "
                            "valgrind, or bench/barriers_callgrind.sh)\n");
        else if (!instr_from_callgrind())
            fprintf(stderr, "barriers: the callgrind run failed: no instr/op\n");
    }

    bool with_base = false;
#ifndef STM_BASELINE
    if (want_base) {
        char twin[PATH_MAX + 16];
        snprintf(twin, sizeof twin, "%s_baseline", self_path);
        if (access(twin, X_OK) != 0) {
            fprintf(stderr, "barriers: %s not found: no baseline columns\n", twin);
        } else {
            char runs_s[16], cpu_s[16];
            snprintf(runs_s, sizeof runs_s, "%d", P.runs);
            snprintf(cpu_s, sizeof cpu_s, "%d", pinned_pu >= 0 ? pinned_pu : -1);
            char *targv[10];
            int n = 0;
            targv[n++] = twin;
            targv[n++] = "--raw";
            targv[n++] = "--runs";
            targv[n++] = runs_s;
            targv[n++] = "--cpu";
            targv[n++] = cpu_s;
            if (!want_instr)
                targv[n++] = "--no-instr";
            targv[n] = NULL;
            char *out = capture(targv);
            if (out) {
                parse_raw(out, take_base);
                free(out);
                with_base = true;
            }
        }
    }
#endif
    (void)want_base;

    if (raw)
        print_raw();
    else if (json)
        print_json(with_base);
    else
        print_table(with_base);
    if (total.aborts)
        fprintf(stderr, "barriers: %llu aborts in the whole run (expected none)\n",
                (unsigned long long)total.aborts);
    return 0;
}
