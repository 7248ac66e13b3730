/* rt.c -- the model-based random tester; see rt.h and docs/TESTING.md.
 *
 * The heap under test: a prebuilt root object G and objects allocated by
 * the workers, all of type robj (an id, a value, three references and, for
 * each reference, the id of its target, so a read can be checked without
 * following it).  Workers reach objects only through G and references:
 * they load pointers onto their shadow stack, then read, write and link
 * the objects those roots name.  Every write stores a value never used
 * before.
 *
 * The model keeps the committed state (value, references, a version
 * number, the step of the last change, and which thread owns the current
 * copy: a thread, or public), and for each transaction its read set (the
 * version and values it read), its writes and its creations.  What the
 * model predicts, and why (DESIGN.md sections in brackets):
 *
 *  - a read returns the newest committed version, or for an object the
 *    transaction read before, the value it read then [3.2, read cache];
 *  - a transaction is *stale* once a commit changed an object in its read
 *    set (that commit was always a shared one: an object another thread
 *    read is public or stolen, so its next change moves the clock);
 *  - while not stale, nothing aborts except stm_abort_and_retry;
 *  - a stale transaction must abort when it reads an object for the first
 *    time whose newest version is at least as recent as the staleness (the
 *    read must extend the snapshot, and validation fails), when it becomes
 *    inevitable, and when it commits a write to a public object (a shared
 *    commit validates); it may abort on any other first read (a steal can
 *    give a recent stamp) and on reads through another pointer;
 *  - read-only and private commits (only the thread's own objects written,
 *    none stolen meanwhile) never abort and do not move the clock; the
 *    model checks the commit kind against the clock;
 *  - the read set and cache carry over to the next transaction of the
 *    thread if the clock has not moved since it began (C5), and the model
 *    carries its read set the same way.
 *
 * Ownership is tracked with a "sure" bit: re-reading an object of another
 * thread may or may not steal it (a cache hit does not), and where the
 * model is unsure of the commit kind it allows the abort instead of
 * requiring it, and learns the kind from the clock. */
#include "rt.h"

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stm.h>
#include "../support/stm_testing.h"

/* ---- the heap under test --------------------------------------------------- */

enum { T_OBJ = 7 };
#define NREF 3
#define SMALL_SIZE ((long)sizeof(robj))
#define BIG_SIZE 2048L   /* above the large-object threshold of a small nursery */

typedef struct robj {
    stm_header hdr;
    long id;
    long value;
    long size;             /* as passed to stm_allocate */
    long ref_id[NREF];     /* id of what ref[k] points to, 0 for NULL */
    struct robj *ref[NREF];
} robj;

static size_t robj_size(const void *o) { return (size_t)((const robj *)o)->size; }
static void robj_trace(void *o, stm_visit_fn *visit, void *ctx)
{
    robj *r = o;
    for (int k = 0; k < NREF; k++)
        visit((void **)&r->ref[k], ctx);
}

#define G_ID 1
static robj G __attribute__((aligned(STM_ALIGNMENT))) = {
    STM_PREBUILT(T_OBJ), G_ID, 0, sizeof(robj), { 0 }, { 0 }
};

/* ---- operations -------------------------------------------------------------
 * To add an operation (a major collection, a weak reference ...): an enum
 * value and a name here, a weight in pick_op, what the worker does in
 * worker_op, and what the model predicts and learns in step(). */
enum {
    OP_BEGIN,        /* stm_run: the worker's transaction function starts */
    OP_SETUP,        /* write G to value 0, no references (once per run) */
    OP_LOAD_SLOT,    /* read G, push G.ref[a] */
    OP_LOAD_REF,     /* read root a, push its ref[b] */
    OP_READ,         /* read root a */
    OP_WRITE,        /* root a's value := fresh value */
    OP_STORE_REF,    /* root a's ref[b] := root c (or NULL if c < 0) */
    OP_STORE_SLOT,   /* G.ref[b] := root c (or NULL) */
    OP_ALLOC,        /* new object (a: big), pushed */
    OP_POP,          /* pop the top root */
    OP_MINOR_GC,     /* stm_minor_collect */
    OP_MAJOR_GC,     /* stm_major_collect: the model changes nothing, but a
                        transaction whose reads are stale may be aborted */
    OP_INEVITABLE,   /* stm_become_inevitable */
    OP_ABORT,        /* stm_abort_and_retry */
    OP_COMMIT,       /* return from the transaction function */
    OP_VERIFY,       /* outside a transaction: a read-only transaction that
                        walks everything reachable from G */
    OP_QUIT,
    OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "begin", "setup", "load_slot", "load_ref", "read", "write", "store_ref", "store_slot",
    "alloc", "pop", "minor_gc", "major_gc", "inevitable", "abort", "commit", "verify", "quit",
};

#define MAXO 256          /* objects per run (ids) */
#define MAXR 8            /* roots per transaction */

typedef struct seen {      /* one object as a worker read it */
    long id, value, size;
    long ref_id[NREF];
    bool ref_null[NREF];
} seen;

typedef struct cmd {
    int op, a, b, c;
    long value, id;        /* fresh value to write; id of a new object or of root c */
    bool may_abort;
} cmd;

typedef struct reply {
    bool aborted;
    stm_abort_reason reason;
    seen obj;              /* the object read or written */
    bool pushed_null;
    intptr_t clock;        /* global time after the operation */
    unsigned attempts;     /* OP_VERIFY */
    int nseen;
    seen all[MAXO];        /* OP_VERIFY: every reachable object */
    char problem[160];     /* inconsistency the worker found itself */
} reply;

typedef struct worker {
    int index;
    pthread_t th;
    bool has_cmd, has_reply;
    cmd c;
    reply r;
    bool entered, aborted;
} worker;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* ---- failure reporting ---------------------------------------------------- */

#define LOG_LINES 48
static char oplog[LOG_LINES][160];
static long oplog_n;
static const char *cur_label;
static bool cur_abort_on_failure;

static void log_op(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(oplog[oplog_n % LOG_LINES], sizeof oplog[0], fmt, ap);
    va_end(ap);
    oplog_n++;
}

static __attribute__((noreturn, format(printf, 1, 2))) void fail(const char *fmt, ...)
{
    pthread_mutex_lock(&mu);   /* one report, even if both threads fail */
    fprintf(stderr, "\nrandom tester: FAILED (%s)\n", cur_label ? cur_label : "?");
    fprintf(stderr, "last operations:\n");
    for (long i = oplog_n > LOG_LINES ? oplog_n - LOG_LINES : 0; i < oplog_n; i++)
        fprintf(stderr, "  %s\n", oplog[i % LOG_LINES]);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "problem: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    if (cur_abort_on_failure)
        abort();
    _exit(1);
}

/* An unexpected abort reaches the fatal handler through the abort budget
 * ("unexpected abort"); so does any misuse the tester would commit. */
static void on_fatal(const char *msg) { fail("library fatal error: %s", msg); }

/* ---- the workers ---------------------------------------------------------- */

static void send(worker *w, const cmd *c)
{
    pthread_mutex_lock(&mu);
    w->c = *c;
    w->has_cmd = true;
    w->has_reply = false;
    pthread_cond_broadcast(&cv);
    while (!w->has_reply)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static cmd next_cmd(worker *w)
{
    pthread_mutex_lock(&mu);
    while (!w->has_cmd) {
        if (stm_in_transaction()) {
            /* Idle inside a transaction: stay at a safe point, so that the
             * other worker's major collection can stop us. */
            pthread_mutex_unlock(&mu);
            (void)stm_should_break();
            sched_yield();
            pthread_mutex_lock(&mu);
            continue;
        }
        pthread_cond_wait(&cv, &mu);
    }
    w->has_cmd = false;
    cmd c = w->c;
    pthread_mutex_unlock(&mu);
    /* The model's verdict, armed in the library: an abort it does not
     * allow is fatal ("unexpected abort") at the point where it happens. */
    stm_test_set_max_aborts(c.may_abort ? -1 : 0);
    return c;
}

static void done(worker *w)
{
    w->r.clock = stm_test_global_time();
    pthread_mutex_lock(&mu);
    w->has_reply = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void see(seen *s, const robj *o)
{
    s->id = o->id;
    s->value = o->value;
    s->size = o->size;
    for (int k = 0; k < NREF; k++) {
        s->ref_id[k] = o->ref_id[k];
        s->ref_null[k] = o->ref[k] == NULL;
    }
}

static robj *root(int i) { return *(robj **)stm_root_slot((size_t)i); }

/* One operation inside the transaction. */
static void worker_op(worker *w, const cmd *c)
{
    reply *r = &w->r;
    switch (c->op) {
    case OP_SETUP: {
        robj *g = stm_write(&G);
        g->value = 0;
        for (int k = 0; k < NREF; k++) {
            g->ref[k] = NULL;
            g->ref_id[k] = 0;
        }
        see(&r->obj, g);
        break;
    }
    case OP_LOAD_SLOT:
    case OP_LOAD_REF: {
        const robj *o = stm_read(c->op == OP_LOAD_SLOT ? &G : root(c->a));
        see(&r->obj, o);
        int k = c->op == OP_LOAD_SLOT ? c->a : c->b;
        r->pushed_null = o->ref[k] == NULL;
        stm_push_root(o->ref[k]);
        break;
    }
    case OP_READ:
        see(&r->obj, stm_read(root(c->a)));
        break;
    case OP_WRITE: {
        robj *o = stm_write(root(c->a));
        o->value = c->value;
        see(&r->obj, o);
        break;
    }
    case OP_STORE_REF:
    case OP_STORE_SLOT: {
        robj *o = stm_write(c->op == OP_STORE_SLOT ? &G : root(c->a));
        o->ref[c->b] = c->c >= 0 ? root(c->c) : NULL;
        o->ref_id[c->b] = c->c >= 0 ? c->id : 0;
        see(&r->obj, o);
        break;
    }
    case OP_ALLOC: {
        long size = c->a ? BIG_SIZE : SMALL_SIZE;
        robj *o = stm_allocate((size_t)size, T_OBJ);
        o->id = c->id;
        o->value = c->value;
        o->size = size;
        see(&r->obj, o);
        stm_push_root(o);
        break;
    }
    case OP_POP:
        (void)stm_pop_root();
        break;
    case OP_MINOR_GC:
        stm_minor_collect();
        break;
    case OP_MAJOR_GC:
        stm_major_collect();
        break;
    case OP_INEVITABLE:
        stm_become_inevitable();
        break;
    case OP_ABORT:
        stm_abort_and_retry();
    default:
        fail("worker %d: operation %s inside a transaction", w->index, op_names[c->op]);
    }
}

static int tx_fn(void *arg)
{
    worker *w = arg;
    if (w->entered) {
        /* Re-run after an abort: the model's transaction is over.  Commit
         * this empty attempt and report the abort from worker_main. */
        w->aborted = true;
        return STM_DONE;
    }
    w->entered = true;
    done(w);   /* OP_BEGIN */
    for (;;) {
        cmd c = next_cmd(w);
        memset(&w->r, 0, sizeof w->r);
        if (c.op == OP_COMMIT) {
            /* stm_run requires balanced roots; the model drops them too. */
            while (stm_root_depth() > 0)
                (void)stm_pop_root();
            return STM_DONE;   /* worker_main replies after the commit */
        }
        worker_op(w, &c);
        done(w);
    }
}

static int verify_fn(void *arg)
{
    worker *w = arg;
    reply *r = &w->r;
    r->attempts++;
    r->nseen = 0;
    /* No allocation here, so no collection: raw pointers stay valid. */
    static __thread bool visited[MAXO];
    static __thread const robj *queue[MAXO];
    memset(visited, 0, sizeof visited);
    int head = 0, tail = 0;
    queue[tail++] = &G;
    visited[G_ID] = true;
    while (head < tail) {
        const robj *p = queue[head++];
        const robj *o = stm_read(p);
        seen *s = &r->all[r->nseen++];
        see(s, o);
        for (int k = 0; k < NREF; k++) {
            if (!o->ref[k])
                continue;
            const robj *t = stm_read(o->ref[k]);
            /* The reference and the id recorded next to it were written
             * together: they must agree in every snapshot. */
            if (t->id != o->ref_id[k])
                snprintf(r->problem, sizeof r->problem,
                         "object %ld: ref[%d] leads to object %ld, ref_id says %ld", o->id, k,
                         t->id, o->ref_id[k]);
            if (t->id > 0 && t->id < MAXO && !visited[t->id]) {
                visited[t->id] = true;
                queue[tail++] = o->ref[k];
            }
        }
    }
    return STM_DONE;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    if (stm_thread_attach() != STM_OK)
        fail("worker %d: stm_thread_attach failed", w->index);
    for (;;) {
        cmd c = next_cmd(w);
        memset(&w->r, 0, sizeof w->r);
        switch (c.op) {
        case OP_BEGIN: {
            w->entered = w->aborted = false;
            int rc = stm_run(tx_fn, w);
            if (rc != STM_OK)
                fail("worker %d: stm_run returned %d", w->index, rc);
            /* Answers the command the transaction ended on: the commit,
             * or whichever operation aborted. */
            w->r.aborted = w->aborted;
            stm_abort_info info;
            if (w->aborted && stm_last_abort(&info))
                w->r.reason = info.reason;
            done(w);
            break;
        }
        case OP_VERIFY: {
            int rc = stm_run(verify_fn, w);
            if (rc != STM_OK)
                fail("worker %d: verify: stm_run returned %d", w->index, rc);
            done(w);
            break;
        }
        case OP_QUIT:
            if (stm_thread_detach() != STM_OK)
                fail("worker %d: stm_thread_detach failed", w->index);
            done(w);
            return NULL;
        default:
            fail("worker %d: operation %s outside a transaction", w->index, op_names[c.op]);
        }
    }
}

/* ---- the model ------------------------------------------------------------ */

#define PUBLIC (-1)
#define UNKNOWN_OWNER (-2)

typedef struct mval {
    long value;
    int ref[NREF];
} mval;

typedef struct mobj {
    bool exists;
    mval v;
    long size;
    unsigned version;      /* bumped by every committed change */
    long changed_at;       /* step of the last committed change */
    int owner;             /* thread, PUBLIC, or UNKNOWN_OWNER */
    bool owner_sure;       /* if not: owner or PUBLIC */
} mobj;

typedef struct mthread {
    bool in_tx, inevitable;
    int rs_ver[MAXO];      /* version read, -1: not in the read set */
    mval rs_val[MAXO];     /* what was read */
    bool created[MAXO], written[MAXO];
    mval w_val[MAXO];
    long stale_since;      /* step that made the read set stale, or -1 */
    int roots[MAXR];
    int nroots;
    intptr_t begin_clock, carry_clock;
    bool no_carry;         /* a major collection ran during this transaction */
} mthread;

typedef struct model {
    mobj o[MAXO];
    mthread t[2];
    int next_id;
    long next_value;
    long step;
    intptr_t clock;        /* last observed global time */
} model;

enum { RISK_NONE, RISK_MAY, RISK_MUST };
static const char *const risk_names[] = { "no abort", "may abort", "must abort" };

static void clear_read_set(mthread *t)
{
    for (int i = 0; i < MAXO; i++)
        t->rs_ver[i] = -1;
    t->stale_since = -1;
}

static mval view(const model *m, const mthread *t, int x)
{
    if (t->created[x] || t->written[x])
        return t->w_val[x];
    if (t->rs_ver[x] >= 0)
        return t->rs_val[x];
    return m->o[x].v;
}

/* What resolving object x (read or write barrier) may do to thread t. */
static int resolve_risk(const model *m, const mthread *t, int x)
{
    if (t->created[x])
        return RISK_NONE;                       /* private copy: fast path */
    if (t->written[x])                          /* our copy, unless it is outdated */
        return m->o[x].version != (unsigned)t->rs_ver[x] ? RISK_MAY : RISK_NONE;
    if (t->stale_since < 0)
        return RISK_NONE;
    if (t->rs_ver[x] >= 0)
        return RISK_MAY;                        /* cache hit, or a miss that extends */
    return m->o[x].changed_at >= t->stale_since ? RISK_MUST : RISK_MAY;
}

/* After resolving x without an abort: record the read, and the steal. */
static void resolved(model *m, mthread *t, int ti, int x, bool first)
{
    mobj *o = &m->o[x];
    if (first && o->owner == UNKNOWN_OWNER) {
        o->owner = ti;         /* ours, or public: a steal made it public */
        o->owner_sure = false;
    } else if (first && o->owner != ti && o->owner != PUBLIC) {
        o->owner = PUBLIC;     /* the other thread's: stolen now */
        o->owner_sure = true;
    }
    if (!t->created[x] && !t->written[x] && t->rs_ver[x] < 0) {
        t->rs_ver[x] = (int)o->version;
        t->rs_val[x] = o->v;
    }
}

/* After an abort while resolving x: a first resolution stole it before
 * the snapshot check; a re-resolution may or may not have. */
static void resolved_aborting(model *m, int ti, const mthread *t, int x)
{
    mobj *o = &m->o[x];
    if (o->owner == ti || o->owner == PUBLIC || t->created[x])
        return;
    if (t->rs_ver[x] < 0 && !t->written[x]) {
        o->owner = PUBLIC;
        o->owner_sure = true;
    } else {
        o->owner_sure = false;
    }
}

enum { KIND_READONLY, KIND_PRIVATE, KIND_SHARED, KIND_UNKNOWN };
static const char *const kind_names[] = { "read-only", "private", "shared", "unknown" };

static int commit_kind(const model *m, const mthread *t, int ti)
{
    bool any = false, all_mine = true, shared = false;
    for (int x = 0; x < m->next_id; x++) {
        if (!t->written[x] || t->created[x])
            continue;
        any = true;
        const mobj *o = &m->o[x];
        if (o->owner == PUBLIC && o->owner_sure)
            shared = true;
        if (!(o->owner == ti && o->owner_sure))
            all_mine = false;
    }
    if (!any)
        return KIND_READONLY;
    if (shared)
        return KIND_SHARED;
    return all_mine ? KIND_PRIVATE : KIND_UNKNOWN;
}

static void end_tx(mthread *t)
{
    t->in_tx = t->inevitable = false;
    memset(t->created, 0, sizeof t->created);
    memset(t->written, 0, sizeof t->written);
    t->nroots = 0;
}

static void check_seen(const model *m, const mthread *t, int x, const seen *s, const char *what)
{
    mval v = view(m, t, x);
    if (s->id != x)
        fail("%s: expected object %d, the pointer led to object %ld", what, x, s->id);
    if (s->value != v.value)
        fail("%s: object %d has value %ld, the model says %ld", what, x, s->value, v.value);
    for (int k = 0; k < NREF; k++) {
        if (s->ref_id[k] != v.ref[k])
            fail("%s: object %d ref[%d] names object %ld, the model says %d", what, x, k,
                 s->ref_id[k], v.ref[k]);
        if (s->ref_null[k] != (v.ref[k] == 0))
            fail("%s: object %d ref[%d] is %sNULL but its id is %d", what, x, k,
                 s->ref_null[k] ? "" : "not ", v.ref[k]);
    }
}

/* ---- choosing operations ---------------------------------------------------- */

static unsigned pick(rt_source *src, unsigned n)
{
    if (n <= 1)
        return 0;
    if (src->data) {
        if (src->pos >= src->size)
            return 0;
        return src->data[src->pos++] % n;
    }
    /* splitmix64: fast, and every seed gives an independent stream. */
    uint64_t z = (src->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (unsigned)((z ^ (z >> 31)) % n);
}

static bool exhausted(const rt_source *src) { return src->data && src->pos >= src->size; }

/* Picks an applicable operation for thread ti and its arguments. */
static bool pick_op(rt_source *src, model *m, int ti, cmd *c)
{
    mthread *t = &m->t[ti], *u = &m->t[1 - ti];
    memset(c, 0, sizeof *c);
    if (!t->in_tx) {
        c->op = pick(src, 8) == 0 ? OP_VERIFY : OP_BEGIN;
        return true;
    }
    static const struct { int op, weight; } table[] = {
        { OP_LOAD_SLOT, 12 }, { OP_LOAD_REF, 8 }, { OP_READ, 10 },   { OP_WRITE, 10 },
        { OP_STORE_REF, 5 },  { OP_STORE_SLOT, 5 }, { OP_ALLOC, 6 }, { OP_POP, 2 },
        { OP_MINOR_GC, 3 },   { OP_MAJOR_GC, 1 },   { OP_INEVITABLE, 1 }, { OP_ABORT, 1 }, { OP_COMMIT, 7 },
    };
    int total = 0;
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        total += table[i].weight;
    unsigned r = pick(src, (unsigned)total);
    size_t i = 0;
    while ((int)r >= table[i].weight)
        r -= (unsigned)table[i++].weight;
    c->op = table[i].op;
    int nr = t->nroots;
    switch (c->op) {
    case OP_LOAD_SLOT: {
        mval g = view(m, t, G_ID);
        c->a = (int)pick(src, NREF);
        return nr < MAXR && g.ref[c->a] != 0;
    }
    case OP_LOAD_REF: {
        if (!nr || nr >= MAXR)
            return false;
        c->a = (int)pick(src, (unsigned)nr);
        c->b = (int)pick(src, NREF);
        return view(m, t, t->roots[c->a]).ref[c->b] != 0;
    }
    case OP_READ:
    case OP_WRITE:
        if (!nr)
            return false;
        c->a = (int)pick(src, (unsigned)nr);
        c->value = m->next_value++;
        return true;
    case OP_STORE_REF:
    case OP_STORE_SLOT:
        if (c->op == OP_STORE_REF && !nr)
            return false;
        c->a = nr ? (int)pick(src, (unsigned)nr) : 0;
        c->b = (int)pick(src, NREF);
        c->c = (int)pick(src, (unsigned)nr + 1) - 1;   /* -1: NULL */
        c->id = c->c >= 0 ? t->roots[c->c] : 0;
        return true;
    case OP_ALLOC:
        c->a = pick(src, 6) == 0;
        c->id = m->next_id;
        c->value = m->next_value++;
        return nr < MAXR && m->next_id < MAXO;
    case OP_POP:
        return nr > 0;
    case OP_INEVITABLE:
        /* One inevitable transaction at a time (the other would block). */
        return !t->inevitable && !u->inevitable;
    case OP_ABORT:
        return !t->inevitable;
    case OP_COMMIT:
        /* A commit while the other thread is inevitable may wait for it. */
        return !u->inevitable;
    default:
        return true;
    }
}

/* ---- one step: predict, run, check, learn ------------------------------------ */

static worker workers[2];
static model M;

static void describe(char *buf, size_t cap, int ti, const cmd *c, int risk)
{
    snprintf(buf, cap, "step %ld: thread %d %s a=%d b=%d c=%d value=%ld id=%ld [%s]", M.step, ti,
             op_names[c->op], c->a, c->b, c->c, c->value, c->id, risk_names[risk]);
}

static void step(int ti, cmd *c, const rt_options *opt, rt_totals *tot)
{
    model *m = &M;
    mthread *t = &m->t[ti];
    worker *w = &workers[ti];
    int risk = RISK_NONE, x = 0, kind = -1;
    bool first = false;

    /* Which object the operation resolves, and what may happen. */
    switch (c->op) {
    case OP_SETUP:
    case OP_LOAD_SLOT:
    case OP_STORE_SLOT:
        x = G_ID;
        break;
    case OP_LOAD_REF:
    case OP_READ:
    case OP_WRITE:
    case OP_STORE_REF:
        x = t->roots[c->a];
        break;
    default:
        x = 0;
    }
    if (x) {
        risk = resolve_risk(m, t, x);
        first = !t->created[x] && !t->written[x] && t->rs_ver[x] < 0;
    }
    switch (c->op) {
    case OP_INEVITABLE:
        risk = t->stale_since >= 0 ? RISK_MUST : RISK_NONE;
        break;
    case OP_MAJOR_GC:
        /* A compacting collection aborts a transaction whose reads are
         * already outdated (reason MAJOR_GC) rather than move them. */
        risk = t->stale_since >= 0 && !t->inevitable ? RISK_MAY : RISK_NONE;
        break;
    case OP_ABORT:
        risk = RISK_MUST;
        break;
    case OP_COMMIT:
        kind = commit_kind(m, t, ti);
        if (t->inevitable || t->stale_since < 0 || kind == KIND_READONLY || kind == KIND_PRIVATE)
            risk = RISK_NONE;
        else
            risk = kind == KIND_SHARED ? RISK_MUST : RISK_MAY;
        break;
    }
    c->may_abort = risk != RISK_NONE;

    char line[160];
    describe(line, sizeof line, ti, c, risk);
    log_op("%s", line);
    if (opt->verbose)
        fprintf(stderr, "%s\n", line);

    intptr_t clock_before = m->clock;
    send(w, c);
    reply *r = &w->r;
    m->clock = r->clock;
    if (r->problem[0])
        fail("%s", r->problem);

    /* A major collection ran, whether or not it then aborted the caller:
     * no thread's read set and cache carry over to its next transaction
     * (the running ones keep theirs until they end). */
    if (c->op == OP_MAJOR_GC)
        for (int k = 0; k < 2; k++) {
            m->t[k].carry_clock = -1;
            m->t[k].no_carry = m->t[k].in_tx;
        }

    /* Aborts: required, allowed, or not at all. */
    if (r->aborted) {
        if (risk == RISK_NONE)
            fail("unexpected abort (%s) in %s", stm_abort_reason_name(r->reason),
                 op_names[c->op]);
        if ((c->op == OP_ABORT) != (r->reason == STM_ABORT_EXPLICIT))
            fail("abort reason %s for %s", stm_abort_reason_name(r->reason), op_names[c->op]);
        log_op("  -> aborted: %s", stm_abort_reason_name(r->reason));
        tot->aborts++;
        if (risk == RISK_MUST)
            tot->aborts_required++;
        else
            tot->aborts_optional++;
        if (x)
            resolved_aborting(m, ti, t, x);
        clear_read_set(t);
        end_tx(t);
        return;
    }
    if (risk == RISK_MUST)
        fail("missing abort: the model requires %s to abort (stale since step %ld)",
             op_names[c->op], t->stale_since);

    char what[64];
    snprintf(what, sizeof what, "thread %d %s", ti, op_names[c->op]);
    switch (c->op) {
    case OP_BEGIN: {
        intptr_t now = r->clock & ~(intptr_t)1;
        t->in_tx = true;
        t->no_carry = false;
        t->begin_clock = now;
        /* The library keeps read set and cache iff the clock has not
         * moved since the thread's last transaction began (C5). */
        if (now != t->carry_clock)
            clear_read_set(t);
        break;
    }
    case OP_SETUP:
        resolved(m, t, ti, G_ID, first);
        t->written[G_ID] = true;
        memset(&t->w_val[G_ID], 0, sizeof(mval));
        check_seen(m, t, G_ID, &r->obj, what);
        break;
    case OP_LOAD_SLOT:
    case OP_LOAD_REF: {
        check_seen(m, t, x, &r->obj, what);
        resolved(m, t, ti, x, first);
        int k = c->op == OP_LOAD_SLOT ? c->a : c->b;
        int target = view(m, t, x).ref[k];
        if (r->pushed_null)
            fail("%s: pushed NULL, the model says object %d", what, target);
        t->roots[t->nroots++] = target;
        break;
    }
    case OP_READ:
        check_seen(m, t, x, &r->obj, what);
        resolved(m, t, ti, x, first);
        break;
    case OP_WRITE:
    case OP_STORE_REF:
    case OP_STORE_SLOT: {
        resolved(m, t, ti, x, first);
        mval v = view(m, t, x);
        if (c->op == OP_WRITE)
            v.value = c->value;
        else
            v.ref[c->b] = (int)c->id;
        if (!t->created[x])
            t->written[x] = true;
        t->w_val[x] = v;
        check_seen(m, t, x, &r->obj, what);
        break;
    }
    case OP_ALLOC: {
        int id = m->next_id++;
        mobj *o = &m->o[id];
        memset(o, 0, sizeof *o);
        o->size = c->a ? BIG_SIZE : SMALL_SIZE;
        t->created[id] = true;
        t->w_val[id] = (mval){ .value = c->value };
        t->roots[t->nroots++] = id;
        check_seen(m, t, id, &r->obj, what);
        break;
    }
    case OP_POP:
        t->nroots--;
        break;
    case OP_MINOR_GC:
        tot->minor_collections++;
        break;
    case OP_MAJOR_GC:
        tot->major_collections++;
        break;
    case OP_INEVITABLE:
        t->inevitable = true;
        tot->inevitable++;
        break;
    case OP_COMMIT: {
        /* The kind shows in the clock: only a shared commit moves it. */
        bool shared = r->clock > (clock_before | 1);
        if ((kind == KIND_SHARED && !shared) ||
            ((kind == KIND_READONLY || kind == KIND_PRIVATE) && shared))
            fail("commit: the model expects a %s commit, the clock went from %" PRIdPTR
                 " to %" PRIdPTR, kind_names[kind], clock_before, r->clock);
        tot->commits++;
        tot->commits_shared += shared;
        log_op("  -> committed (%s)", shared ? "shared" : "read-only or private");
        for (int id = 0; id < m->next_id; id++) {
            if (!t->created[id] && !t->written[id])
                continue;
            mobj *o = &m->o[id];
            if (t->created[id]) {
                o->exists = true;
                o->version = 0;
            } else {
                o->version++;
            }
            o->v = t->w_val[id];
            o->changed_at = m->step;
            o->owner = ti;          /* the new version is our protected copy */
            o->owner_sure = true;
            if (!t->created[id]) {
                /* Our own commit keeps our read set valid (C5) ... */
                t->rs_ver[id] = (int)o->version;
                t->rs_val[id] = o->v;
                /* ... and makes the other thread's stale if it read it. */
                mthread *u = &m->t[1 - ti];
                if (u->rs_ver[id] >= 0 && u->stale_since < 0)
                    u->stale_since = m->step;
            }
        }
        /* A shared commit re-arms the carry; otherwise a collection that
         * ran meanwhile cancelled it. */
        t->carry_clock = shared ? r->clock : t->no_carry ? -1 : t->begin_clock;
        end_tx(t);
        break;
    }
    case OP_VERIFY: {
        tot->verifies++;
        if (r->attempts != 1)
            fail("verify: %u attempts, a read-only walk with nothing stale never aborts",
                 r->attempts);
        /* Everything reachable from G in the committed state, exactly. */
        bool reach[MAXO] = { false };
        int queue[MAXO], head = 0, tail = 0, count = 0;
        queue[tail++] = G_ID;
        reach[G_ID] = true;
        while (head < tail) {
            int id = queue[head++];
            count++;
            for (int k = 0; k < NREF; k++) {
                int to = m->o[id].v.ref[k];
                if (to && !reach[to]) {
                    reach[to] = true;
                    queue[tail++] = to;
                }
            }
        }
        if (r->nseen != count)
            fail("verify: %d objects reachable, the model has %d", r->nseen, count);
        intptr_t now = r->clock & ~(intptr_t)1;
        if (now != t->carry_clock)
            clear_read_set(t);
        for (int i = 0; i < r->nseen; i++) {
            long id = r->all[i].id;
            if (id <= 0 || id >= MAXO || !reach[id])
                fail("verify: reached object %ld, which the model does not reach", id);
            check_seen(m, t, (int)id, &r->all[i], "verify");
            resolved(m, t, ti, (int)id, t->rs_ver[id] < 0);
        }
        t->carry_clock = now;
        break;
    }
    default:
        break;
    }
}

/* ---- runs ---------------------------------------------------------------- */

void rt_init(size_t nursery_size)
{
    stm_set_fatal_handler(on_fatal);
    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = robj_size;
    cfg.trace = robj_trace;
    cfg.nursery_size = nursery_size;
    /* Every abort ends the model's transaction, so the automatic switch to
     * inevitable after max_attempts never comes into play; keep it far. */
    cfg.max_attempts = 1000;
    if (stm_init(&cfg) != STM_OK || stm_register_prebuilt(&G) != STM_OK) {
        fprintf(stderr, "random tester: stm_init failed\n");
        exit(2);
    }
}

void rt_run(rt_source *src, const rt_options *opt, const char *label, rt_totals *tot)
{
    cur_label = label;
    cur_abort_on_failure = opt->abort_on_failure;
    oplog_n = 0;
    memset(&M, 0, sizeof M);
    M.next_id = G_ID + 1;
    M.next_value = 1000;
    M.clock = stm_test_global_time();
    /* G keeps whatever an earlier run left, owned by a thread whose index
     * a new worker may get: unknown until the set-up commit. */
    M.o[G_ID].exists = true;
    M.o[G_ID].owner = UNKNOWN_OWNER;
    for (int i = 0; i < 2; i++) {
        clear_read_set(&M.t[i]);
        M.t[i].carry_clock = -1;
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].index = i;
        if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i]) != 0)
            fail("pthread_create failed");
    }
    cmd c = { .op = OP_BEGIN };
    step(0, &c, opt, tot);
    c = (cmd){ .op = OP_SETUP };
    step(0, &c, opt, tot);
    c = (cmd){ .op = OP_COMMIT };
    step(0, &c, opt, tot);

    long n = 0;
    int ti = 0;
    while (src->data ? !exhausted(src) : n < opt->ops) {
        /* Stay on one thread for a while, then switch: runs of operations
         * make transactions long enough to overlap. */
        if (pick(src, 3) == 0)
            ti = 1 - ti;
        M.step++;
        if (!pick_op(src, &M, ti, &c))
            continue;
        step(ti, &c, opt, tot);
        n++;
        /* Check the committed state after every commit or abort, from a
         * thread that is not in a transaction, now and then. */
        if (c.op == OP_COMMIT && pick(src, 3) == 0 && !M.t[ti].in_tx) {
            M.step++;
            cmd v = { .op = OP_VERIFY };
            step(ti, &v, opt, tot);
        }
    }
    /* Finish: commit or abort what is open (the inevitable one first),
     * check everything, stop the workers. */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 2; i++) {
            if (!M.t[i].in_tx || M.t[1 - i].inevitable)
                continue;
            M.step++;
            c = (cmd){ .op = OP_COMMIT };
            step(i, &c, opt, tot);
        }
    for (int i = 0; i < 2; i++) {
        if (M.t[i].in_tx)
            fail("run end: thread %d still in a transaction", i);
        M.step++;
        c = (cmd){ .op = OP_VERIFY };
        step(i, &c, opt, tot);
    }
    for (int i = 0; i < 2; i++) {
        c = (cmd){ .op = OP_QUIT };
        send(&workers[i], &c);
        pthread_join(workers[i].th, NULL);
    }
    tot->runs++;
    tot->ops += n;
}
