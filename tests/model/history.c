/* history.c -- checks serializability and opacity from a recorded history
 * (docs/TESTING.md, "History checker").
 *
 * Several threads run short transactions over a few shared objects (heavy
 * contention): each reads and writes random objects, every write stores a
 * value never written before (thread << 40 | sequence), some attempts
 * become inevitable, abort on purpose or allocate garbage (minor
 * collections).  Every read of every attempt is logged in plain memory,
 * aborted attempts included, with the attempt's outcome: aborted, or
 * committed at its serialisation point (stm_test_last_commit_point: the
 * clock value of a shared commit, the snapshot of a read-only or private
 * one), ties between equal points broken by a ticket taken when the
 * commit started (STM_POINT_COMMIT_START).
 *
 * After the run the checker
 *  1. replays the committed transactions in that order and requires every
 *     read to return the value current at the transaction's position (or
 *     its own earlier write): the committed history is serialisable in
 *     commit order;
 *  2. for every attempt, committed or aborted, intersects the ranges of
 *     positions at which each value it read was current, and requires the
 *     intersection to be non-empty: each attempt saw one consistent
 *     snapshot (opacity).  A value that no committed transaction wrote
 *     (an aborted write leaking out) fails at once.
 *
 *   history [--threads N] [--objects K] [--transactions N] [--seed S]
 *           [--nursery BYTES]
 *
 * Exit status 0 only if both checks pass. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stm.h>
#include "../support/stm_testing.h"

enum { T_CELL = 1, T_JUNK = 2 };
typedef struct cell {
    stm_header hdr;
    long value;
} cell;

static size_t obj_size(const void *o)
{
    return stm_get_tid(o) == T_JUNK ? 64 : sizeof(cell);
}
static void obj_trace(void *o, stm_visit_fn *visit, void *ctx)
{
    (void)o, (void)visit, (void)ctx;
}

#define MAX_OBJECTS 64
static cell cells[MAX_OBJECTS] __attribute__((aligned(STM_ALIGNMENT)));

/* ---- the log ---------------------------------------------------------------- */

typedef struct event {
    int obj;
    bool write;
    long value;
    /* Diagnostics: the copy the barrier returned, the snapshot after the
     * access and the read-set size. */
    const void *copy;
    intptr_t revision, clock;
    intptr_t snapshot;
    size_t read_set;
} event;

typedef struct attempt {
    size_t first, count;     /* events[first .. first+count) of its thread */
    bool committed;
    intptr_t point;
    uint64_t ticket;
    int thread;
} attempt;

typedef struct tlog {
    int index;
    uint64_t rng;
    long seq;
    event *events;
    size_t nevents, cap_events;
    attempt *attempts;
    size_t nattempts, cap_attempts;
    bool open;               /* the last attempt has no outcome yet */
    uint64_t ticket;         /* of the last commit that started */
    /* the current transaction's plan */
    int nops;
    int op_obj[8];
    bool op_write[8];
    bool abort_once, inevitable, junk;
    long commits, aborts;
} tlog;

static struct {
    long threads, objects, transactions, nursery;
    uint64_t seed;
} opt = { .threads = 2, .objects = 4, .transactions = 20000, .nursery = 4096, .seed = 1 };

static atomic_uint_fast64_t tickets;
static pthread_barrier_t start_line;   /* all threads start together */

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        fprintf(stderr, "history: out of memory for the log\n");
        exit(2);
    }
    return p;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void log_event(tlog *l, int obj, bool write, long value, const void *copy)
{
    if (l->nevents == l->cap_events) {
        l->cap_events = l->cap_events ? 2 * l->cap_events : 4096;
        l->events = xrealloc(l->events, l->cap_events * sizeof *l->events);
    }
    l->events[l->nevents++] = (event){ obj,
                                       write,
                                       value,
                                       copy,
                                       /* Atomic: committers lock and forward
                                        * public copies concurrently. */
                                       __atomic_load_n(&((const stm_header *)copy)->revision,
                                                       __ATOMIC_RELAXED),
                                       stm_test_global_time(),
                                       stm_test_snapshot(),
                                       stm_test_read_set_size() };
    l->attempts[l->nattempts - 1].count++;
}

static void open_attempt(tlog *l)
{
    if (l->nattempts == l->cap_attempts) {
        l->cap_attempts = l->cap_attempts ? 2 * l->cap_attempts : 1024;
        l->attempts = xrealloc(l->attempts, l->cap_attempts * sizeof *l->attempts);
    }
    l->attempts[l->nattempts++] = (attempt){ .first = l->nevents, .thread = l->index };
    l->open = true;
}

static void on_commit_start(stm_test_point p, void *arg)
{
    (void)p;
    ((tlog *)arg)->ticket = atomic_fetch_add(&tickets, 1);
}

/* ---- the workload ------------------------------------------------------------ */

static int tx_fn(void *arg)
{
    tlog *l = arg;
    if (l->open) {
        l->aborts++;   /* re-run: the attempt before this one aborted */
        l->open = false;
    }
    open_attempt(l);
    if (l->inevitable)
        stm_become_inevitable();
    for (int i = 0; i < l->nops; i++) {
        int k = l->op_obj[i];
        const cell *c = stm_read(&cells[k]);
        log_event(l, k, false, c->value, c);
        if (l->op_write[i]) {
            long v = ((long)(l->index + 1) << 40) | ++l->seq;
            cell *w = stm_write(&cells[k]);
            w->value = v;
            log_event(l, k, true, v, w);
        }
        if (l->junk)
            (void)stm_allocate(64, T_JUNK);   /* garbage: minor collections */
        /* A short pause between accesses widens the windows in which
         * another thread commits: more conflicts, more stale reads to
         * catch.  Load only; nothing here depends on timing. */
        for (volatile int spin = (int)(l->seq % 64); spin > 0; spin--)
            ;
        /* And now and then a yield, so that transactions interleave even
         * when the threads do not run in parallel (a loaded machine, or
         * fewer cores than threads). */
        if ((l->seq + (long)i) % 8 == 0)
            sched_yield();
    }
    if (l->abort_once && !stm_is_inevitable()) {
        l->abort_once = false;                /* the retry commits */
        stm_abort_and_retry();
    }
    return STM_DONE;
}

static void *worker(void *arg)
{
    tlog *l = arg;
    if (stm_thread_attach() != STM_OK) {
        fprintf(stderr, "history: attach failed\n");
        exit(2);
    }
    stm_test_set_hook(STM_POINT_COMMIT_START, on_commit_start, l);
    pthread_barrier_wait(&start_line);
    for (long n = 0; n < opt.transactions; n++) {
        l->nops = 1 + (int)(next_rand(&l->rng) % 4);
        for (int i = 0; i < l->nops; i++) {
            l->op_obj[i] = (int)(next_rand(&l->rng) % (uint64_t)opt.objects);
            l->op_write[i] = next_rand(&l->rng) % 2;
        }
        uint64_t r = next_rand(&l->rng);
        l->inevitable = r % 64 == 0;
        l->abort_once = (r >> 8) % 16 == 0;
        l->junk = (r >> 16) % 4 == 0;
        l->open = false;
        if (stm_run(tx_fn, l) != STM_OK) {
            fprintf(stderr, "history: stm_run failed\n");
            exit(2);
        }
        attempt *a = &l->attempts[l->nattempts - 1];
        a->committed = true;
        a->point = stm_test_last_commit_point();
        a->ticket = l->ticket;
        l->open = false;
        l->commits++;
    }
    stm_test_set_hook(STM_POINT_COMMIT_START, NULL, NULL);
    stm_thread_detach();
    return NULL;
}

/* ---- the checker -------------------------------------------------------------- */

static tlog *logs;

static const event *events_of(const attempt *a) { return logs[a->thread].events + a->first; }

static int by_order(const void *x, const void *y)
{
    const attempt *a = *(const attempt *const *)x, *b = *(const attempt *const *)y;
    if (a->point != b->point)
        return a->point < b->point ? -1 : 1;
    return a->ticket < b->ticket ? -1 : a->ticket > b->ticket;
}

/* Where each committed value was current: state indices [from, to), where
 * state s is the state after the first s committed transactions. */
typedef struct version {
    long value;
    int obj;
    size_t from, to;
} version;

static int by_value(const void *x, const void *y)
{
    long a = ((const version *)x)->value, b = ((const version *)y)->value;
    return a < b ? -1 : a > b;
}

static void describe(const attempt *a)
{
    fprintf(stderr, "  thread %d, %s", a->thread,
            a->committed ? "committed" : "aborted attempt");
    if (a->committed)
        fprintf(stderr, " at point %" PRIdPTR " ticket %" PRIu64, a->point, a->ticket);
    fprintf(stderr, ":");
    const event *e = events_of(a);
    for (size_t i = 0; i < a->count; i++)
        fprintf(stderr, " %c%d=%ld", e[i].write ? 'W' : 'R', e[i].obj, e[i].value);
    fprintf(stderr, "\n");
}

/* For a failed snapshot: where each value the attempt read was current, and
 * the committed transactions that made and ended those states. */
static void explain(const attempt *a, attempt *const *order, size_t n, const version *versions,
                    size_t nversions)
{
    const event *e = events_of(a);
    for (size_t i = 0; i < a->count; i++) {
        version key = { .value = e[i].value };
        const version *v = bsearch(&key, versions, nversions, sizeof *versions, by_value);
        if (e[i].write || !v) {
            fprintf(stderr, "  %s %zu: object %d copy %p, snapshot %" PRIdPTR ", read set %zu\n",
                    e[i].write ? "write" : "read", i, e[i].obj, e[i].copy, e[i].snapshot,
                    e[i].read_set);
            continue;
        }
        fprintf(stderr,
                "  read %zu: object %d = %ld current in [%zu, %zu); copy %p rev %" PRIdPTR
                ", clock %" PRIdPTR ", snapshot %" PRIdPTR ", read set %zu\n",
                i, e[i].obj, e[i].value, v->from, v->to, e[i].copy, e[i].revision, e[i].clock,
                e[i].snapshot, e[i].read_set);
        if (v->from > 0 && v->from <= n) {
            fprintf(stderr, "    made by state %zu:", v->from);
            describe(order[v->from - 1]);
        }
        if (v->to != SIZE_MAX && v->to <= n) {
            fprintf(stderr, "    ended by state %zu:", v->to);
            describe(order[v->to - 1]);
        }
    }
}

/* Did some committed transaction write `value` into object k? */
static bool committed_write(attempt *const *order, size_t n, int k, long value)
{
    if (value == -(long)(k + 1))
        return true;   /* the initial value */
    for (size_t p = 0; p < n; p++) {
        const event *e = events_of(order[p]);
        for (size_t i = 0; i < order[p]->count; i++)
            if (e[i].write && e[i].obj == k && e[i].value == value)
                return true;
    }
    return false;
}

static int check(void)
{
    size_t ncommitted = 0, nattempts = 0;
    for (long t = 0; t < opt.threads; t++)
        for (size_t i = 0; i < logs[t].nattempts; i++) {
            nattempts++;
            ncommitted += logs[t].attempts[i].committed;
        }
    attempt **order = xrealloc(NULL, (ncommitted + 1) * sizeof *order);
    size_t n = 0;
    for (long t = 0; t < opt.threads; t++)
        for (size_t i = 0; i < logs[t].nattempts; i++)
            if (logs[t].attempts[i].committed)
                order[n++] = &logs[t].attempts[i];
    qsort(order, n, sizeof *order, by_order);

    /* 1. Replay in commit order. */
    long state[MAX_OBJECTS];
    version *versions = xrealloc(NULL, (ncommitted * 4 + (size_t)opt.objects + 1) * sizeof *versions);
    size_t nversions = 0, current[MAX_OBJECTS];
    for (int k = 0; k < opt.objects; k++) {
        state[k] = -(long)(k + 1);   /* the initial values */
        versions[nversions] = (version){ state[k], k, 0, SIZE_MAX };
        current[k] = nversions++;
    }
    for (size_t p = 0; p < n; p++) {
        const attempt *a = order[p];
        const event *e = events_of(a);
        long mine[MAX_OBJECTS];
        bool wrote[MAX_OBJECTS] = { false };
        for (size_t i = 0; i < a->count; i++) {
            int k = e[i].obj;
            if (e[i].write) {
                mine[k] = e[i].value;
                wrote[k] = true;
                continue;
            }
            long want = wrote[k] ? mine[k] : state[k];
            if (e[i].value != want) {
                fprintf(stderr,
                        "history: NOT SERIALISABLE in commit order: transaction %zu of %zu read "
                        "object %d = %ld, but at its position the value is %ld%s\n",
                        p, n, k, e[i].value, want,
                        committed_write(order, n, k, e[i].value)
                            ? ""
                            : " (and no committed transaction ever wrote that value: a "
                              "write of an aborted attempt leaked)");
                describe(a);
                if (p)
                    describe(order[p - 1]);
                return 1;
            }
        }
        for (int k = 0; k < opt.objects; k++)
            if (wrote[k]) {
                state[k] = mine[k];
                versions[current[k]].to = p + 1;
                versions[nversions] = (version){ mine[k], k, p + 1, SIZE_MAX };
                current[k] = nversions++;
            }
    }
    qsort(versions, nversions, sizeof *versions, by_value);

    /* 2. One snapshot per attempt, aborted ones included. */
    size_t reads = 0;
    for (long t = 0; t < opt.threads; t++)
        for (size_t ai = 0; ai < logs[t].nattempts; ai++) {
            const attempt *a = &logs[t].attempts[ai];
            const event *e = events_of(a);
            size_t lo = 0, hi = SIZE_MAX;
            bool wrote[MAX_OBJECTS] = { false };
            for (size_t i = 0; i < a->count; i++) {
                int k = e[i].obj;
                if (e[i].write) {
                    wrote[k] = true;
                    continue;
                }
                if (wrote[k])
                    continue;   /* its own write, checked by the replay if committed */
                reads++;
                version key = { .value = e[i].value };
                const version *v = bsearch(&key, versions, nversions, sizeof *versions, by_value);
                if (!v || v->obj != k) {
                    fprintf(stderr,
                            "history: an attempt read object %d = %ld, which no committed "
                            "transaction wrote there (a dirty or leaked value)\n",
                            k, e[i].value);
                    describe(a);
                    return 1;
                }
                if (v->from > lo)
                    lo = v->from;
                if (v->to < hi)
                    hi = v->to;
                if (lo >= hi) {
                    fprintf(stderr,
                            "history: NOT OPAQUE: an attempt read values that were never "
                            "current together (object %d = %ld was current in states "
                            "[%zu, %zu), the earlier reads need [%zu, ...))\n",
                            k, e[i].value, v->from, v->to, lo);
                    describe(a);
                    explain(a, order, n, versions, nversions);
                    return 1;
                }
            }
        }
    long aborts = 0;
    for (long t = 0; t < opt.threads; t++)
        aborts += logs[t].aborts;
    stm_stats st = { .size = sizeof st };
    stm_get_stats(&st);
    printf("history: %ld threads, %ld objects: %zu commits (%" PRIu64 " shared), %ld aborted "
           "attempts (%" PRIu64 " on purpose, %" PRIu64 " conflicts), %zu reads checked: "
           "serialisable in commit order, every attempt saw one snapshot\n",
           opt.threads, opt.objects, n, st.commits_shared, aborts,
           st.aborts_by_reason[STM_ABORT_EXPLICIT],
           st.aborts - st.aborts_by_reason[STM_ABORT_EXPLICIT], reads);
    (void)nattempts;
    free(order);
    free(versions);
    return 0;
}

static long parse_long(const char *name, const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "history: %s: expected an integer in [%ld, %ld], got '%s'\n", name, min,
                max, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--threads"))
            opt.threads = parse_long(a, v, 1, 64);
        else if (!strcmp(a, "--objects"))
            opt.objects = parse_long(a, v, 1, MAX_OBJECTS);
        else if (!strcmp(a, "--transactions"))
            opt.transactions = parse_long(a, v, 1, 100000000);
        else if (!strcmp(a, "--seed"))
            opt.seed = (uint64_t)parse_long(a, v, 0, INT64_MAX);
        else if (!strcmp(a, "--nursery"))
            opt.nursery = parse_long(a, v, 256, 1L << 30);
        else {
            fprintf(stderr, "history: unknown option %s\n", a);
            return 2;
        }
    }
    if (argc % 2 == 0) {
        fprintf(stderr, "usage: history [--threads N] [--objects K] [--transactions N] "
                        "[--seed S] [--nursery BYTES]\n");
        return 2;
    }
    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = obj_size;
    cfg.trace = obj_trace;
    cfg.nursery_size = (size_t)opt.nursery;
    if (stm_init(&cfg) != STM_OK)
        return 2;
    for (long k = 0; k < opt.objects; k++) {
        cells[k].hdr = (stm_header)STM_PREBUILT(T_CELL);
        cells[k].value = -(k + 1);
        if (stm_register_prebuilt(&cells[k]) != STM_OK)
            return 2;
    }
    pthread_barrier_init(&start_line, NULL, (unsigned)opt.threads);
    logs = calloc((size_t)opt.threads, sizeof *logs);
    pthread_t *th = calloc((size_t)opt.threads, sizeof *th);
    if (!logs || !th)
        return 2;
    for (long t = 0; t < opt.threads; t++) {
        logs[t].index = (int)t;
        logs[t].rng = opt.seed * 1000003u + (uint64_t)t;
        if (pthread_create(&th[t], NULL, worker, &logs[t]) != 0)
            return 2;
    }
    for (long t = 0; t < opt.threads; t++)
        pthread_join(th[t], NULL);
    int rc = check();
    for (long t = 0; t < opt.threads; t++) {
        free(logs[t].events);
        free(logs[t].attempts);
    }
    free(logs);
    free(th);
    return rc;
}
