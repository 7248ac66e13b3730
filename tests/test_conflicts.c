/* test_conflicts.c -- conflicts between two threads, each interleaving
 * forced with the lockstep helper (and, where a thread must be paused
 * inside its commit, with the STM_TESTING protocol hooks):
 *   write-write        -> the second committer aborts WRITE_CONFLICT
 *   read-write         -> VALIDATE_COMMIT at commit, or VALIDATE_INFLIGHT
 *                         when a newer object is read
 *   stolen-modified    -> the owner of an object stolen while it was being
 *                         written, and changed by the thief, aborts
 *                         STOLEN_MODIFIED
 * and the cases that must NOT abort (read-only and private commits, the
 * owner's commit after a mere steal). */
#include "support/tx_macros.h"

TestSuite(conflicts, .init = ts_setup, .fini = ts_teardown, .timeout = 60);

#ifdef STM_TESTING
#define KIND(p, k) CHECK_KIND(p, k)
#else
#define KIND(p, k) ((void)(p))
#endif

TS_PREBUILT_NODE(g_x);
TS_PREBUILT_NODE(g_y);
TS_PREBUILT_NODE(g_z);

static node *volatile shared_raw;

typedef struct cctx {
    int a_attempts, b_attempts;
    long a_seen, a_seen2, b_seen;
    stm_abort_info a_abort;
    int a_has_abort;
    stm_stats before, after;
    node *n, *c;
} cctx;

static void record_a_abort(cctx *cx)
{
    cx->a_has_abort = stm_last_abort(&cx->a_abort);
}

static void check_abort(cctx *cx, stm_abort_reason why, const void *obj)
{
    CHECK(cx->a_has_abort, "thread A never aborted");
    CHECK(cx->a_abort.reason == why, "thread A aborted with %s, expected %s",
          stm_abort_reason_name(cx->a_abort.reason), stm_abort_reason_name(why));
    if (obj) {
        CHECK_PTR_EQ(cx->a_abort.object, obj);
        CHECK_EQ(cx->a_abort.object_tid, T_NODE);
    }
    CHECK_EQ(cx->a_abort.attempt, 1);
    CHECK_EQ(cx->a_attempts, 2);
    CHECK_EQ(DELTA(cx->after, cx->before, aborts), 1);
    CHECK_EQ(DELTA(cx->after, cx->before, aborts_by_reason[why]), 1);
}

/* B's side of most tests: when step 1 is reached, commit g_x += 10. */
static int tx_b_adds_x(void *arg)
{
    cctx *cx = arg;
    cx->b_attempts++;
    WR(&g_x)->value += 10;
    return STM_DONE;
}

static void b_writes_x_at_1(void *arg)
{
    cctx *cx = arg;
    ls_wait(1);
#ifdef STM_TESTING
    stm_test_set_max_aborts(0);
#endif
    ts_run(tx_b_adds_x, cx);
    ls_set(2);
}

/* ---- write-write ------------------------------------------------------------ */

static int tx_a_adds_x(void *arg)
{
    cctx *cx = arg;
    node *w = WR(&g_x);
    w->value += 1;
    if (cx->a_attempts++ == 0) {
        ls_set(1);      /* B commits its own write to g_x now */
        ls_wait(2);
    } else {
        cx->a_seen = RD(&g_x)->value;
    }
    return STM_DONE;
}

static void a_write_write(void *arg)
{
    cctx *cx = arg;
    cx->before = ts_stats();
    ts_run(tx_a_adds_x, cx);
    cx->after = ts_stats();
    record_a_abort(cx);
}

Test(conflicts, write_write_second_committer_aborts)
{
    ts_register_prebuilt(&g_x, 0);
    cctx cx = { 0 };
    two_threads(a_write_write, b_writes_x_at_1, &cx);
    check_abort(&cx, STM_ABORT_WRITE_CONFLICT, &g_x);
    CHECK_EQ(cx.a_seen, 11);      /* the retry saw B's write, then added 1 */
    CHECK_EQ(cx.b_attempts, 1);
    TX_BEGIN();
    CHECK_EQ(RD(&g_x)->value, 11);
    TX_COMMIT();
}

#ifdef STM_TESTING
/* The same, B committing while A is already inside its commit (paused at
 * the start of commit by a hook). */
typedef struct pause_ctx {
    int set, wait;
    int fired;
} pause_ctx;

static void hook_pause_once(stm_test_point p, void *arg)
{
    (void)p;
    pause_ctx *pc = arg;
    if (pc->fired++ == 0) {
        ls_set(pc->set);
        ls_wait(pc->wait);
    }
}

static int tx_a_adds_x_plain(void *arg)
{
    cctx *cx = arg;
    cx->a_attempts++;
    WR(&g_x)->value += 1;
    cx->a_seen = RD(&g_x)->value;
    return STM_DONE;
}

static void a_write_write_in_commit(void *arg)
{
    cctx *cx = arg;
    pause_ctx pc = { .set = 1, .wait = 2 };
    stm_test_set_hook(STM_POINT_COMMIT_START, hook_pause_once, &pc);
    cx->before = ts_stats();
    ts_run(tx_a_adds_x_plain, cx);
    cx->after = ts_stats();
    stm_test_set_hook(STM_POINT_COMMIT_START, NULL, NULL);
    record_a_abort(cx);
    CHECK_EQ(pc.fired, 2);
}

Test(conflicts, write_write_conflict_found_inside_commit)
{
    ts_register_prebuilt(&g_x, 0);
    cctx cx = { 0 };
    two_threads(a_write_write_in_commit, b_writes_x_at_1, &cx);
    check_abort(&cx, STM_ABORT_WRITE_CONFLICT, &g_x);
    CHECK_EQ(cx.a_seen, 11);
}

/* A holds its write locks (paused after taking its commit time): the
 * written public copy shows as locked to other threads; B's commit, which
 * read g_x, must then fail validation rather than wait; A completes. */
static int tx_a_writes_x_locked(void *arg)
{
    cctx *cx = arg;
    cx->a_attempts++;
    WR(&g_x)->value = 5;
    return STM_DONE;
}

static void a_pauses_locked(void *arg)
{
    cctx *cx = arg;
    pause_ctx pc = { .set = 2, .wait = 3 };
    ls_wait(1);                      /* B has read g_x */
    stm_test_set_max_aborts(0);
    stm_test_set_hook(STM_POINT_COMMIT_LOCKED, hook_pause_once, &pc);
    ts_run(tx_a_writes_x_locked, cx);
    stm_test_set_hook(STM_POINT_COMMIT_LOCKED, NULL, NULL);
    CHECK_EQ(cx->a_attempts, 1);
}

static void hook_b_abort_signals(stm_test_point p, void *arg)
{
    (void)p;
    cctx *cx = arg;
    /* Runs in B, before B's rollback: A may finish its commit now. */
    if (cx->b_attempts == 1) {
        KIND(&g_x, STM_KIND_LOCKED);
        ls_set(3);
    }
}

static int tx_b_reads_x_writes_y(void *arg)
{
    cctx *cx = arg;
    cx->b_attempts++;
    long x = RD(&g_x)->value;
    if (cx->b_attempts == 1) {
        ls_set(1);
        ls_wait(2);                  /* A is paused with g_x locked */
        KIND(&g_x, STM_KIND_LOCKED);
    }
    WR(&g_y)->value = x;
    cx->b_seen = x;
    return STM_DONE;
}

static void b_validates_against_lock(void *arg)
{
    cctx *cx = arg;
    stm_test_set_hook(STM_POINT_ABORT, hook_b_abort_signals, cx);
    ts_run(tx_b_reads_x_writes_y, cx);
    stm_test_set_hook(STM_POINT_ABORT, NULL, NULL);
    stm_abort_info info;
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK(info.reason == STM_ABORT_VALIDATE_COMMIT, "B aborted with %s",
          stm_abort_reason_name(info.reason));
    CHECK_PTR_EQ(info.object, &g_x);
}

Test(conflicts, commit_validation_fails_on_a_copy_locked_by_another_committer)
{
    ts_register_prebuilt(&g_x, 0);
    ts_register_prebuilt(&g_y, 0);
    cctx cx = { 0 };
    two_threads(a_pauses_locked, b_validates_against_lock, &cx);
    CHECK_EQ(cx.b_attempts, 2);
    CHECK_EQ(cx.b_seen, 5);          /* the retry read A's committed value */
}
#endif /* STM_TESTING */

/* ---- read-write: VALIDATE_COMMIT -------------------------------------------- */

static int tx_a_reads_x_writes_y(void *arg)
{
    cctx *cx = arg;
    long x = RD(&g_x)->value;
    if (cx->a_attempts++ == 0) {
        ls_set(1);
        ls_wait(2);                  /* B committed g_x += 10 */
        CHECK_EQ(RD(&g_x)->value, x);   /* still our snapshot */
    }
    WR(&g_y)->value = x + 1;
    cx->a_seen = x;
    return STM_DONE;
}

static void a_read_write(void *arg)
{
    cctx *cx = arg;
    cx->before = ts_stats();
    ts_run(tx_a_reads_x_writes_y, cx);
    cx->after = ts_stats();
    record_a_abort(cx);
}

Test(conflicts, read_write_aborts_at_commit_with_validate_commit)
{
    ts_register_prebuilt(&g_x, 0);
    ts_register_prebuilt(&g_y, 0);
    cctx cx = { 0 };
    two_threads(a_read_write, b_writes_x_at_1, &cx);
    check_abort(&cx, STM_ABORT_VALIDATE_COMMIT, &g_x);
    CHECK_EQ(cx.a_seen, 10);
    CHECK(DELTA(cx.after, cx.before, read_validations) >= 1, "a validation ran");
    TX_BEGIN();
    CHECK_EQ(RD(&g_y)->value, 11);
    TX_COMMIT();
}

/* ---- read-write: VALIDATE_INFLIGHT -------------------------------------------- */

static int tx_b_adds_x_and_z(void *arg)
{
    cctx *cx = arg;
    cx->b_attempts++;
    WR(&g_x)->value += 10;
    WR(&g_z)->value += 10;
    return STM_DONE;
}

static void b_writes_x_z_at_1(void *arg)
{
    cctx *cx = arg;
    ls_wait(1);
    ts_run(tx_b_adds_x_and_z, cx);
    ls_set(2);
}

static int tx_a_reads_x_then_z(void *arg)
{
    cctx *cx = arg;
    long x = RD(&g_x)->value;
    if (cx->a_attempts++ == 0) {
        ls_set(1);
        ls_wait(2);
    }
    long z = RD(&g_z)->value;        /* newer than our snapshot */
    /* Opacity: never a mix of the two states. */
    CHECK(x == z, "inconsistent reads x=%ld z=%ld", x, z);
    cx->a_seen = x;
    cx->a_seen2 = z;
    return STM_DONE;
}

static void a_inflight(void *arg)
{
    cctx *cx = arg;
    cx->before = ts_stats();
    ts_run(tx_a_reads_x_then_z, cx);
    cx->after = ts_stats();
    record_a_abort(cx);
}

Test(conflicts, read_of_newer_object_aborts_with_validate_inflight)
{
    ts_register_prebuilt(&g_x, 0);
    ts_register_prebuilt(&g_z, 0);
    cctx cx = { 0 };
    two_threads(a_inflight, b_writes_x_z_at_1, &cx);
    check_abort(&cx, STM_ABORT_VALIDATE_INFLIGHT, &g_x);
    CHECK_EQ(cx.a_seen, 10);
    CHECK_EQ(cx.a_seen2, 10);
}

/* Reading a newer object when nothing read before changed extends the
 * snapshot instead of aborting. */
static int tx_a_reads_y_then_z(void *arg)
{
    cctx *cx = arg;
    cx->a_attempts++;
    long y = RD(&g_y)->value;
    if (cx->a_attempts == 1) {
        ls_set(1);
        ls_wait(2);
    }
    cx->a_seen = y;
    cx->a_seen2 = RD(&g_z)->value;
    return STM_DONE;
}

static void a_extends(void *arg)
{
    cctx *cx = arg;
#ifdef STM_TESTING
    stm_test_set_max_aborts(0);
#endif
    cx->before = ts_stats();
    ts_run(tx_a_reads_y_then_z, cx);
    cx->after = ts_stats();
}

Test(conflicts, read_of_newer_object_extends_snapshot_when_reads_are_valid)
{
    ts_register_prebuilt(&g_x, 0);
    ts_register_prebuilt(&g_y, 7);
    ts_register_prebuilt(&g_z, 0);
    cctx cx = { 0 };
    two_threads(a_extends, b_writes_x_z_at_1, &cx);
    CHECK_EQ(cx.a_attempts, 1);
    CHECK_EQ(cx.a_seen, 7);
    CHECK_EQ(cx.a_seen2, 10);
    CHECK_EQ(DELTA(cx.after, cx.before, aborts), 0);
    CHECK(DELTA(cx.after, cx.before, read_validations) >= 1, "the snapshot was extended");
}

/* ---- what does not conflict ------------------------------------------------- */

/* Round r of B: wait for step 2r+1, commit g_x += 10, set step 2r+2. */
static void b_writes_x_rounds(void *arg)
{
    cctx *cx = arg;
    for (int r = 0; r < 2; r++) {
        ls_wait(2 * r + 1);
        ts_run(tx_b_adds_x, cx);
        ls_set(2 * r + 2);
    }
}

typedef struct round_ctx {
    cctx *cx;
    int step;          /* set this step, then wait for step + 1 */
    int attempts;
    long seen;
    bool write_own;
} round_ctx;

static int tx_a_round(void *arg)
{
    round_ctx *rc = arg;
    long x = RD(&g_x)->value;
    if (rc->attempts++ == 0) {
        ls_set(rc->step);
        ls_wait(rc->step + 1);       /* B has committed g_x += 10 */
    }
    if (rc->write_own)
        WR(rc->cx->n)->value = x;
    rc->seen = x;
    return STM_DONE;
}

static int tx_make_n(void *arg)
{
    cctx *cx = arg;
    cx->n = ts_new_node(-1, NULL, NULL);
    return STM_DONE;
}

static void a_no_conflict(void *arg)
{
    cctx *cx = arg;
    ts_run(tx_make_n, cx);
    stm_push_root(cx->n);
#ifdef STM_TESTING
    stm_test_set_max_aborts(0);
#endif
    stm_stats s0 = ts_stats();
    /* Read-only: serialised at its snapshot, commits although g_x changed. */
    round_ctx r1 = { .cx = cx, .step = 1 };
    ts_run(tx_a_round, &r1);
    stm_stats s1 = ts_stats();
    CHECK_EQ(r1.attempts, 1);
    CHECK_EQ(r1.seen, 0);
    CHECK_EQ(DELTA(s1, s0, commits_readonly), 1);
    /* Private: writes only its own protected object, no validation. */
    round_ctx r2 = { .cx = cx, .step = 3, .write_own = true };
    ts_run(tx_a_round, &r2);
    stm_stats s2 = ts_stats();
    CHECK_EQ(r2.attempts, 1);
    CHECK_EQ(r2.seen, 10);
    CHECK_EQ(DELTA(s2, s1, commits_private), 1);
    cx->n = stm_pop_root();
    CHECK_EQ(cx->n->value, 10);
    CHECK_EQ(DELTA(s2, s0, aborts), 0);
}

Test(conflicts, read_only_and_private_commits_do_not_conflict)
{
    ts_register_prebuilt(&g_x, 0);
    cctx cx = { 0 };
    two_threads(a_no_conflict, b_writes_x_rounds, &cx);
}

/* ---- stealing and conflicts -------------------------------------------------- */

static int tx_make_raw(void *arg)
{
    cctx *cx = arg;
    cx->n = ts_new_node(1, NULL, NULL);
    return STM_DONE;
}

/* A writes N in place; B steals N, writes the stolen copy and commits; A's
 * commit finds the stolen copy outdated: STOLEN_MODIFIED. */
static int tx_a_modifies_n(void *arg)
{
    cctx *cx = arg;
    node *n = *stm_root_slot(0);
    WR(n)->value += 1;
    if (cx->a_attempts++ == 0) {
        KIND(n, STM_KIND_PRIVATE_FROM_PROTECTED);
        ls_set(1);
        ls_wait(2);
    }
    cx->a_seen = RD(n)->value;
    return STM_DONE;
}

static void a_stolen_modified(void *arg)
{
    cctx *cx = arg;
    ts_run(tx_make_raw, cx);
    stm_push_root(cx->n);
    shared_raw = cx->n;
    cx->before = ts_stats();
    ts_run(tx_a_modifies_n, cx);
    cx->after = ts_stats();
    record_a_abort(cx);
    stm_pop_root();
}

static int tx_b_steals_and_writes(void *arg)
{
    cctx *cx = arg;
    cx->b_attempts++;
    node *c = RD(shared_raw);
    CHECK_EQ(c->value, 1);            /* A's committed state */
    KIND(c, STM_KIND_PUBLIC);
    cx->c = c;
    WR(c)->value = 100;
    return STM_DONE;
}

static void b_steals_and_writes(void *arg)
{
    cctx *cx = arg;
    ls_wait(1);
#ifdef STM_TESTING
    stm_test_set_max_aborts(0);
#endif
    ts_run(tx_b_steals_and_writes, cx);
    ls_set(2);
}

Test(conflicts, owner_aborts_stolen_modified_when_thief_changed_the_copy)
{
    cctx cx = { 0 };
    two_threads(a_stolen_modified, b_steals_and_writes, &cx);
    check_abort(&cx, STM_ABORT_STOLEN_MODIFIED, cx.c);
    CHECK_EQ(cx.a_seen, 101);         /* the retry built on B's value */
}

/* A writes N in place; B steals it and only reads it, then A commits: the
 * stolen copy is outdated and B, which read it, fails validation when it
 * commits a shared write. */
static int tx_a_modifies_once(void *arg)
{
    cctx *cx = arg;
    cx->a_attempts++;
    node *n = *stm_root_slot(0);
    WR(n)->value = 2;
    if (cx->a_attempts == 1) {
        ls_set(1);
        ls_wait(2);                   /* B stole N */
    }
    return STM_DONE;
}

static void a_commits_after_steal(void *arg)
{
    cctx *cx = arg;
    ts_run(tx_make_raw, cx);
    stm_push_root(cx->n);
    shared_raw = cx->n;
#ifdef STM_TESTING
    stm_test_set_max_aborts(0);       /* a mere steal never aborts the owner */
#endif
    ts_run(tx_a_modifies_once, cx);
    CHECK_EQ(cx->a_attempts, 1);
    KIND(cx->c, STM_KIND_PUBLIC_OUTDATED);
    ls_set(3);
    stm_pop_root();
}

static int tx_b_reads_stolen_then_writes_y(void *arg)
{
    cctx *cx = arg;
    node *c = RD(shared_raw);
    long v = c->value;
    if (cx->b_attempts++ == 0) {
        CHECK_EQ(v, 1);
        cx->c = c;
        ls_set(2);
        ls_wait(3);                   /* A committed N = 2 */
    }
    WR(&g_y)->value = v;
    cx->b_seen = v;
    return STM_DONE;
}

static void b_reads_stolen(void *arg)
{
    cctx *cx = arg;
    ls_wait(1);
    ts_run(tx_b_reads_stolen_then_writes_y, cx);
    stm_abort_info info;
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK(info.reason == STM_ABORT_VALIDATE_COMMIT, "B aborted with %s",
          stm_abort_reason_name(info.reason));
    CHECK_PTR_EQ(info.object, cx->c);
}

Test(conflicts, owner_commit_outdates_stolen_copy_and_thief_revalidates)
{
    ts_register_prebuilt(&g_y, 0);
    cctx cx = { 0 };
    two_threads(a_commits_after_steal, b_reads_stolen, &cx);
    CHECK_EQ(cx.b_attempts, 2);
    CHECK_EQ(cx.b_seen, 2);
}

/* A reads its own protected N; B steals N and commits a change to the
 * stolen copy; A's shared commit must see that N (a forwarder now) is no
 * longer current: VALIDATE_COMMIT. */
static int tx_a_reads_own_writes_y(void *arg)
{
    cctx *cx = arg;
    node *n = *stm_root_slot(0);
    long v = RD(n)->value;
    if (cx->a_attempts++ == 0) {
        ls_set(1);
        ls_wait(2);
    }
    WR(&g_y)->value = v;
    cx->a_seen = v;
    return STM_DONE;
}

static void a_reads_own(void *arg)
{
    cctx *cx = arg;
    ts_run(tx_make_raw, cx);
    stm_push_root(cx->n);
    shared_raw = cx->n;
    cx->before = ts_stats();
    ts_run(tx_a_reads_own_writes_y, cx);
    cx->after = ts_stats();
    record_a_abort(cx);
    stm_pop_root();
}

Test(conflicts, read_of_own_object_stolen_and_changed_fails_validation)
{
    ts_register_prebuilt(&g_y, 0);
    cctx cx = { 0 };
    two_threads(a_reads_own, b_steals_and_writes, &cx);
    check_abort(&cx, STM_ABORT_VALIDATE_COMMIT, cx.n);
    CHECK_EQ(cx.a_seen, 100);
}

/* ---- no false conflicts after one's own shared commit -------------------------- */

/* A commits g_x (g_x is now outdated by A's own copy); its next transaction
 * keeps the read set and cache (DESIGN C5: the clock moved only by A's own
 * commit).  B then commits an unrelated object.  A's transaction read
 * nothing B wrote, so it must commit without aborting. */
static int tx_a_writes_x_once(void *arg)
{
    cctx *cx = arg;
    (void)cx;
    WR(&g_x)->value += 1;
    return STM_DONE;
}

static int tx_b_writes_z(void *arg)
{
    (void)arg;
    WR(&g_z)->value += 1;
    return STM_DONE;
}

static void b_writes_z_at_1(void *arg)
{
    (void)arg;
    ls_wait(1);
    ts_run(tx_b_writes_z, NULL);
    ls_set(2);
}

typedef struct after_ctx {
    cctx *cx;
    bool read_newer;     /* read g_z (newer than the snapshot) instead of writing g_y */
} after_ctx;

static int tx_a_after_own_commit(void *arg)
{
    after_ctx *ac = arg;
    cctx *cx = ac->cx;
    if (cx->a_attempts++ == 0) {
        ls_set(1);
        ls_wait(2);                  /* B committed g_z */
    }
    CHECK_EQ(RD(&g_x)->value, 1);    /* our own committed write */
    if (ac->read_newer)
        cx->a_seen = RD(&g_z)->value;
    else
        WR(&g_y)->value += 1;
    return STM_DONE;
}

static void a_after_own_commit(void *arg)
{
    after_ctx *ac = arg;
    ts_run(tx_a_writes_x_once, ac->cx);
    ac->cx->before = ts_stats();
    ts_run(tx_a_after_own_commit, ac);
    ac->cx->after = ts_stats();
    record_a_abort(ac->cx);
}

static void check_no_false_conflict(cctx *cx)
{
    CHECK(cx->a_attempts == 1,
          "A aborted (%s on %p, g_x is %p): nothing it read in this transaction was written "
          "by another thread",
          cx->a_has_abort ? stm_abort_reason_name(cx->a_abort.reason) : "-",
          cx->a_abort.object, (void *)&g_x);
    CHECK_EQ(DELTA(cx->after, cx->before, aborts), 0);
}

Test(conflicts, no_false_conflict_at_commit_after_own_shared_commit)
{
    ts_register_prebuilt(&g_x, 0);
    ts_register_prebuilt(&g_y, 0);
    ts_register_prebuilt(&g_z, 0);
    cctx cx = { 0 };
    after_ctx ac = { .cx = &cx };
    two_threads(a_after_own_commit, b_writes_z_at_1, &ac);
    check_no_false_conflict(&cx);
}

Test(conflicts, no_false_conflict_in_flight_after_own_shared_commit)
{
    ts_register_prebuilt(&g_x, 0);
    ts_register_prebuilt(&g_z, 0);
    cctx cx = { 0 };
    after_ctx ac = { .cx = &cx, .read_newer = true };
    two_threads(a_after_own_commit, b_writes_z_at_1, &ac);
    check_no_false_conflict(&cx);
    CHECK_EQ(cx.a_seen, 1);
}
