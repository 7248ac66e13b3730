/* test_abort.c -- an abort rolls back every kind of copy
 * (docs/DESIGN.md 3.4): objects written in place are restored from their
 * backups, private copies of public objects and fresh objects are
 * discarded, roots pushed in the transaction are popped, atomic sections
 * are closed; stm_abort_and_retry re-runs the function; stm_last_abort
 * and the abort counters describe the last abort. */
#include "support/tx_macros.h"

TestSuite(abort, .init = ts_setup, .fini = ts_teardown, .timeout = 60);

#ifdef STM_TESTING
#define KIND(p, k) CHECK_KIND(p, k)
#else
#define KIND(p, k) ((void)(p))
#endif

TS_PREBUILT_NODE(g1);
TS_PREBUILT_NODE(g2);

typedef struct actx {
    node *p1, *p2;           /* protected objects (roots below the tx) */
    int attempts;
    int calls;
    long seen;
    long long promoted;
    size_t depth;
    void *w1;
} actx;

static int tx_make_two(void *arg)
{
    actx *ax = arg;
    ax->p1 = ts_new_node(1, NULL, NULL);
    ax->p2 = ts_new_node(2, NULL, NULL);
    return STM_DONE;
}

/* Sets p1/p2 from the two shadow-stack slots pushed by the test. */
static void reload(actx *ax)
{
    ax->p1 = *stm_root_slot(0);
    ax->p2 = *stm_root_slot(1);
}

static void setup_two(actx *ax, bool old)
{
    ts_run(tx_make_two, ax);
    stm_push_root(ax->p1);
    stm_push_root(ax->p2);
    if (old) {
        TX_BEGIN();
        stm_minor_collect();
        TX_COMMIT();
        reload(ax);
#ifdef STM_TESTING
        CHECK(!stm_test_is_young(ax->p1), "promoted");
#endif
    }
}

/* ---- everything rolled back at once -------------------------------------- */

static int tx_mixed_then_abort(void *arg)
{
    actx *ax = arg;
    reload(ax);
    if (ax->attempts++ == 0) {
        node *fresh = ts_new_node(77, NULL, NULL);
        reload(ax);
        node *w1 = WR(ax->p1);
        w1->value = 100;
        w1->left = fresh;
        w1->right = &g1;
        WR(ax->p2)->value = 200;
        node *c1 = WR(&g1);
        c1->value = 300;
        c1->left = fresh;
        WR(&g2)->value = 400;
        KIND(ax->p1, STM_KIND_PRIVATE_FROM_PROTECTED);
        KIND(c1, STM_KIND_PRIVATE);
        stm_push_root(fresh);
        stm_push_root(c1);
        stm_abort_and_retry();
    }
    /* Everything as committed before the aborted attempt. */
    CHECK_EQ(stm_root_depth(), 2);
    KIND(ax->p1, STM_KIND_PROTECTED);
    KIND(ax->p2, STM_KIND_PROTECTED);
#ifdef STM_TESTING
    CHECK(stm_test_backup_of(ax->p1) == NULL, "no backup after abort");
    CHECK(stm_test_backup_of(ax->p2) == NULL, "no backup after abort");
#endif
    CHECK_PTR_EQ(stm_read(ax->p1), ax->p1);
    CHECK_EQ(RD(ax->p1)->value, 1);
    CHECK(RD(ax->p1)->left == NULL && RD(ax->p1)->right == NULL, "pointer fields restored");
    CHECK_EQ(RD(ax->p2)->value, 2);
    /* The private copies of public objects are gone. */
    KIND(&g1, STM_KIND_PUBLIC);
    KIND(&g2, STM_KIND_PUBLIC);
    CHECK_PTR_EQ(stm_read(&g1), &g1);
    CHECK_PTR_EQ(stm_read(&g2), &g2);
    CHECK_EQ(RD(&g1)->value, 10);
    CHECK_EQ(RD(&g2)->value, 20);
    /* A new write makes a new private copy of the (unchanged) public one. */
    node *c = WR(&g1);
    CHECK_PTR_NEQ(c, &g1);
    CHECK_EQ(c->value, 10);
    CHECK(c->left == NULL, "the new private copy has the public contents");
    c->value = 11;
    return STM_DONE;
}

static void run_mixed(bool old)
{
    ts_register_prebuilt(&g1, 10);
    ts_register_prebuilt(&g2, 20);
    actx ax = { 0 };
    setup_two(&ax, old);
    stm_stats before = ts_stats();
    ts_run(tx_mixed_then_abort, &ax);
    stm_stats after = ts_stats();
    CHECK_EQ(ax.attempts, 2);
    CHECK_EQ(DELTA(after, before, aborts), 1);
    CHECK_EQ(DELTA(after, before, aborts_by_reason[STM_ABORT_EXPLICIT]), 1);
    CHECK_EQ(DELTA(after, before, commits), 1);
    reload(&ax);
    CHECK_EQ(ax.p1->value, 1);
    CHECK_EQ(ax.p2->value, 2);
    KIND(&g1, STM_KIND_PUBLIC_OUTDATED);     /* only the retry's write committed */
    KIND(&g2, STM_KIND_PUBLIC);
    CHECK_EQ(g1.value, 10);
    CHECK_EQ(g2.value, 20);
}

Test(abort, abort_rolls_back_young_copies_of_every_kind)
{
    run_mixed(false);
}

Test(abort, abort_rolls_back_old_copies_of_every_kind)
{
    run_mixed(true);
}

/* ---- abort and retry, last abort information ---------------------------- */

static int tx_abort_n_times(void *arg)
{
    actx *ax = arg;
    ax->calls++;
    if (ax->calls <= 3) {
        stm_abort_info info;
        if (ax->calls > 1 && ax->depth == 0) {
            CHECK_EQ(stm_last_abort(&info), 1);
            CHECK_EQ(info.reason, STM_ABORT_EXPLICIT);
            CHECK_EQ(info.attempt, (unsigned)ax->calls - 1);
        }
        stm_abort_and_retry();
    }
    return STM_DONE;
}

Test(abort, abort_and_retry_reruns_the_function_and_records_it)
{
    stm_abort_info info;
    memset(&info, 0xab, sizeof info);
    CHECK_EQ(stm_last_abort(&info), 0);      /* never aborted yet */
    actx ax = { 0 };
    stm_stats before = ts_stats();
    ts_run(tx_abort_n_times, &ax);
    stm_stats after = ts_stats();
    CHECK_EQ(ax.calls, 4);
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK_EQ(info.reason, STM_ABORT_EXPLICIT);
    CHECK(info.object == NULL, "an explicit abort names no object");
    CHECK_EQ(info.object_tid, 0);
    CHECK_EQ(info.attempt, 3);
    CHECK_EQ(DELTA(after, before, aborts), 3);
    CHECK_EQ(DELTA(after, before, aborts_by_reason[STM_ABORT_EXPLICIT]), 3);
    CHECK_EQ(DELTA(after, before, commits), 1);
    /* The attempt count starts again at the next stm_run. */
    ax.calls = 1;
    ax.depth = 1;   /* (no in-function check of the previous run's abort) */
    ts_run(tx_abort_n_times, &ax);
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK_EQ(info.attempt, 2);
}

/* ---- roots ---------------------------------------------------------------- */

static int tx_push_and_abort(void *arg)
{
    actx *ax = arg;
    CHECK_EQ(stm_root_depth(), ax->depth);
    CHECK_PTR_EQ(*stm_root_slot(0), &g1);
    if (ax->attempts++ == 0) {
        node *n = ts_new_node(1, NULL, NULL);
        stm_push_root(n);
        stm_push_root(n);
        stm_push_root(NULL);
        CHECK_EQ(stm_root_depth(), ax->depth + 3);
        stm_abort_and_retry();
    }
    stm_push_root(&g2);
    CHECK_PTR_EQ(stm_pop_root(), &g2);
    return STM_DONE;
}

Test(abort, abort_pops_roots_pushed_in_the_transaction)
{
    ts_register_prebuilt(&g1, 1);
    ts_register_prebuilt(&g2, 2);
    stm_push_root(&g1);
    actx ax = { .depth = 1 };
    ts_run(tx_push_and_abort, &ax);
    CHECK_EQ(ax.attempts, 2);
    CHECK_EQ(stm_root_depth(), 1);
    CHECK_PTR_EQ(stm_pop_root(), &g1);
}

/* ---- fresh objects are garbage after an abort ------------------------------ */

static int tx_fresh_then_abort(void *arg)
{
    actx *ax = arg;
    if (ax->attempts++ == 0) {
        node *chain = NULL;
        for (int i = 0; i < 10; i++)
            chain = ts_new_node(i, chain, NULL);
        reload(ax);
        WR(ax->p1)->left = chain;       /* reachable from a protected object */
        stm_push_root(chain);           /* and from a root */
        stm_abort_and_retry();
    }
    reload(ax);
    CHECK(RD(ax->p1)->left == NULL, "restored");
    stm_stats s0 = ts_stats();
    stm_minor_collect();
    stm_stats s1 = ts_stats();
    ax->promoted = DELTA(s1, s0, bytes_promoted);
    reload(ax);
    return STM_DONE;
}

Test(abort, abort_discards_fresh_objects)
{
    actx ax = { 0 };
    setup_two(&ax, false);
    ts_run(tx_fresh_then_abort, &ax);
    /* Only the two rooted protected nodes survive the collection. */
    CHECK_EQ(ax.promoted, 2 * (long long)sizeof(node));
}

/* The same with a fresh object large enough to be allocated old: it is in
 * the remembered set, which must not keep the aborted attempt's young
 * objects alive. */
#define BIG 140000   /* ARRAY_SIZE(BIG) > 1 MiB: allocated old by every path */

static int tx_fresh_large_then_abort(void *arg)
{
    actx *ax = arg;
    if (ax->attempts++ == 0) {
        node *chain = NULL;
        for (int i = 0; i < 10; i++)
            chain = ts_new_node(i, chain, NULL);
        stm_push_root(chain);
        array *a = stm_allocate(ARRAY_SIZE(BIG), T_ARRAY);
        chain = stm_pop_root();
        CHECK(a != NULL, "allocated");
#ifdef STM_TESTING
        CHECK(!stm_test_is_young(a), "a large object is allocated old");
#endif
        a = stm_write(a);
        a->n = BIG;
        a->items[0] = chain;
        stm_abort_and_retry();
    }
    stm_stats s0 = ts_stats();
    stm_minor_collect();
    stm_stats s1 = ts_stats();
    ax->promoted = DELTA(s1, s0, bytes_promoted);
    reload(ax);
    return STM_DONE;
}

Test(abort, abort_discards_fresh_large_objects_and_what_they_reference)
{
    actx ax = { 0 };
    setup_two(&ax, false);
    ts_run(tx_fresh_large_then_abort, &ax);
    CHECK(ax.promoted == 2 * (long long)sizeof(node),
          "a minor collection after the abort promoted %lld bytes; only the two rooted "
          "nodes (%zu bytes) are live",
          ax.promoted, 2 * sizeof(node));
}

/* ---- remembered set after an abort ----------------------------------------- */

static int tx_old_write_abort(void *arg)
{
    actx *ax = arg;
    reload(ax);
    if (ax->attempts++ == 0) {
        node *y = ts_new_node(11, NULL, NULL);
        reload(ax);
        WR(ax->p1)->left = y;
        stm_abort_and_retry();
    }
    /* Retry: the restored old object must be tracked again when written. */
    node *y2 = ts_new_node(22, NULL, NULL);
    reload(ax);
    WR(ax->p1)->left = y2;
    stm_minor_collect();
    reload(ax);
    node *l = RD(ax->p1)->left;
    CHECK(l != NULL, "field kept");
#ifdef STM_TESTING
    CHECK(!stm_test_is_young(l), "the young object referenced by an old one was promoted");
#endif
    CHECK_EQ(RD(l)->value, 22);
    return STM_DONE;
}

Test(abort, remembered_set_works_after_abort_of_old_object)
{
    actx ax = { 0 };
    setup_two(&ax, true);
    ts_run(tx_old_write_abort, &ax);
    reload(&ax);
    CHECK_EQ(ax.p1->left->value, 22);
}

/* A young object written in place, promoted by a minor collection during
 * the transaction, then the transaction aborts: it is restored at its new
 * address. */
static int tx_pfp_collect_abort(void *arg)
{
    actx *ax = arg;
    reload(ax);
    if (ax->attempts++ == 0) {
        WR(ax->p1)->value = 9;
        stm_minor_collect();
        node *y = ts_new_node(5, NULL, NULL);
        reload(ax);
        KIND(ax->p1, STM_KIND_PRIVATE_FROM_PROTECTED);
        CHECK_EQ(RD(ax->p1)->value, 9);
        WR(ax->p1)->left = y;
        stm_abort_and_retry();
    }
#ifdef STM_TESTING
    CHECK(!stm_test_is_young(ax->p1), "promoted during the aborted attempt");
#endif
    KIND(ax->p1, STM_KIND_PROTECTED);
    CHECK_EQ(RD(ax->p1)->value, 1);
    CHECK(RD(ax->p1)->left == NULL, "restored");
    stm_minor_collect();
    reload(ax);
    CHECK_EQ(RD(ax->p1)->value, 1);
    return STM_DONE;
}

Test(abort, abort_restores_object_moved_by_collection_during_attempt)
{
    actx ax = { 0 };
    setup_two(&ax, false);
    ts_run(tx_pfp_collect_abort, &ax);
    reload(&ax);
    CHECK_EQ(ax.p1->value, 1);
}

/* ---- atomic sections, chunks and nesting ----------------------------------- */

static int tx_atomic_abort(void *arg)
{
    actx *ax = arg;
    if (ax->attempts++ == 0) {
        stm_atomic_begin();
        stm_atomic_begin();
        CHECK_EQ(stm_atomic_depth(), 2);
        stm_abort_and_retry();
    }
    CHECK_EQ(stm_atomic_depth(), 0);
    return STM_DONE;
}

Test(abort, abort_closes_atomic_sections)
{
    actx ax = { 0 };
    ts_run(tx_atomic_abort, &ax);
    CHECK_EQ(ax.attempts, 2);
    CHECK_EQ(stm_atomic_depth(), 0);
}

/* STM_CONTINUE commits each chunk: an abort rolls back the current chunk
 * only and re-runs the function from that chunk. */
static int tx_chunks(void *arg)
{
    actx *ax = arg;
    ax->calls++;
    reload(ax);
    node *p = RD(ax->p1);
    switch (ax->calls) {
    case 1:
        CHECK_EQ(p->value, 1);
        WR(ax->p1)->value = 2;
        return STM_CONTINUE;
    case 2:
        CHECK_EQ(p->value, 2);
        WR(ax->p1)->value = 3;
        stm_abort_and_retry();
    case 3:
        CHECK_EQ(p->value, 2);   /* chunk 1 stays committed */
        WR(ax->p1)->value = 4;
        return STM_DONE;
    default:
        CHECK(false, "called %d times", ax->calls);
        return STM_DONE;
    }
}

Test(abort, abort_rolls_back_only_the_current_chunk)
{
    actx ax = { 0 };
    setup_two(&ax, false);
    stm_stats before = ts_stats();
    ts_run(tx_chunks, &ax);
    stm_stats after = ts_stats();
    reload(&ax);
    CHECK_EQ(ax.p1->value, 4);
    CHECK_EQ(DELTA(after, before, commits), 2);
    CHECK_EQ(DELTA(after, before, aborts), 1);
}

/* stm_run inside a transaction is part of it: an abort in the inner
 * function re-runs the outer one. */
static int tx_inner(void *arg)
{
    actx *ax = arg;
    reload(ax);
    WR(ax->p1)->value += 10;
    if (ax->attempts++ == 0)
        stm_abort_and_retry();
    return STM_DONE;
}

static int tx_outer(void *arg)
{
    actx *ax = arg;
    ax->calls++;
    reload(ax);
    WR(ax->p2)->value += 1;
    int r = stm_run(tx_inner, ax);
    CHECK_EQ(r, STM_OK);
    CHECK(stm_in_transaction(), "still in the outer transaction");
    return STM_DONE;
}

Test(abort, abort_in_nested_run_reruns_the_outer_function)
{
    actx ax = { 0 };
    setup_two(&ax, false);
    ts_run(tx_outer, &ax);
    reload(&ax);
    CHECK_EQ(ax.calls, 2);
    CHECK_EQ(ax.p1->value, 11);   /* inner effects of the aborted attempt gone */
    CHECK_EQ(ax.p2->value, 3);
}
