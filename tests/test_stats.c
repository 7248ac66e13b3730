/* test_stats.c -- stm_get_stats: every counter moves as documented in
 * stm.h (STM_STATS_FIELDS), counters are merged over all threads (attached
 * and detached), and the struct is versioned by size: a caller passing a
 * smaller size gets exactly its prefix filled. */
#include "support/tx_macros.h"

#include <stddef.h>

TestSuite(stats, .init = ts_setup, .fini = ts_teardown, .timeout = 60);

TS_PREBUILT_NODE(g_x);
TS_PREBUILT_NODE(g_y);

#define NODE ((long long)sizeof(node))

/* ---- the struct and its names ------------------------------------------------ */

Test(stats, full_struct_is_filled_and_versioned)
{
    stm_stats s;
    memset(&s, 0xab, sizeof s);
    s.size = sizeof s;
    CHECK_EQ(stm_get_stats(&s), STM_OK);
    CHECK_EQ(s.size, sizeof s);            /* the caller's field is left alone */
    CHECK_EQ(s.version, STM_STATS_VERSION);
    /* A fresh library: no commit yet, and every counter was written. */
    CHECK_EQ(s.commits, 0);
    CHECK_EQ(s.aborts, 0);
    for (int r = 0; r < STM_ABORT_REASON_COUNT; r++)
        CHECK_EQ(s.aborts_by_reason[r], 0);
}

static int tx_noop(void *arg)
{
    (void)arg;
    return STM_DONE;
}

/* A buffer larger than the struct, filled with a pattern. */
typedef struct big_buf {
    stm_stats s;
    unsigned char tail[64];
} big_buf;

static bool untouched_from(const void *buf, size_t from, size_t to)
{
    const unsigned char *b = buf;
    for (size_t i = from; i < to; i++)
        if (b[i] != 0xab)
            return false;
    return true;
}

Test(stats, smaller_size_gets_only_its_prefix)
{
    for (int i = 0; i < 3; i++)
        ts_run(tx_noop, NULL);
    big_buf b;
    /* Up to and including commits_shared. */
    size_t prefix = offsetof(stm_stats, commits_shared) + sizeof(uint64_t);
    memset(&b, 0xab, sizeof b);
    b.s.size = prefix;
    CHECK_EQ(stm_get_stats(&b.s), STM_OK);
    CHECK_EQ(b.s.size, prefix);
    CHECK_EQ(b.s.version, STM_STATS_VERSION);
    CHECK_EQ(b.s.commits, 3);
    CHECK_EQ(b.s.commits_readonly, 3);
    CHECK_EQ(b.s.commits_shared, 0);
    CHECK(untouched_from(&b, prefix, sizeof b), "bytes beyond the caller's size were written");

    /* The smallest valid size: the version only. */
    size_t tiny = offsetof(stm_stats, version) + sizeof(unsigned);
    memset(&b, 0xab, sizeof b);
    b.s.size = tiny;
    CHECK_EQ(stm_get_stats(&b.s), STM_OK);
    CHECK_EQ(b.s.version, STM_STATS_VERSION);
    CHECK(untouched_from(&b, tiny, sizeof b), "bytes beyond the caller's size were written");

    /* Too small even for the version: refused, nothing written. */
    memset(&b, 0xab, sizeof b);
    b.s.size = tiny - 1;
    CHECK_EQ(stm_get_stats(&b.s), STM_EINVAL);
    CHECK(untouched_from(&b, sizeof b.s.size, sizeof b), "a refused call wrote something");
    CHECK_EQ(stm_get_stats(NULL), STM_EINVAL);

    /* A newer caller with a bigger struct: ours is filled, the rest left. */
    memset(&b, 0xab, sizeof b);
    b.s.size = sizeof b;
    CHECK_EQ(stm_get_stats(&b.s), STM_OK);
    CHECK_EQ(b.s.size, sizeof b);
    CHECK_EQ(b.s.commits, 3);
    CHECK(untouched_from(&b, sizeof b.s, sizeof b), "bytes beyond sizeof(stm_stats) written");
}

static const char *const field_names[] = {
#define X(name, text) #name,
    STM_STATS_FIELDS(X)
#undef X
};
static const size_t field_offsets[] = {
#define X(name, text) offsetof(stm_stats, name),
    STM_STATS_FIELDS(X)
#undef X
};

Test(stats, field_names_follow_the_struct)
{
    unsigned n = sizeof field_names / sizeof *field_names;
    for (unsigned i = 0; i < n; i++) {
        const char *name = stm_stats_field_name(i);
        CHECK(name != NULL, "field %u has a name", i);
        CHECK(strcmp(name, field_names[i]) == 0, "field %u: \"%s\", expected \"%s\"", i, name,
              field_names[i]);
        CHECK_EQ(field_offsets[i], offsetof(stm_stats, commits) + i * sizeof(uint64_t));
    }
    CHECK(stm_stats_field_name(n) == NULL, "NULL past the end");
    CHECK(stm_stats_field_name(~0u) == NULL, "NULL far past the end");
}

Test(stats, abort_reason_names_and_texts)
{
    static const char *const names[] = {
#define X(name, text) #name,
        STM_ABORT_REASONS(X)
#undef X
    };
    static const char *const texts[] = {
#define X(name, text) text,
        STM_ABORT_REASONS(X)
#undef X
    };
    for (int r = 0; r < STM_ABORT_REASON_COUNT; r++) {
        CHECK(strcmp(stm_abort_reason_name(r), names[r]) == 0, "reason %d: %s", r,
              stm_abort_reason_name(r));
        CHECK(strcmp(stm_abort_reason_text(r), texts[r]) == 0, "reason %d text", r);
    }
    CHECK(strcmp(stm_abort_reason_name(STM_ABORT_WRITE_CONFLICT), "WRITE_CONFLICT") == 0,
          "spelling");
    CHECK(strcmp(stm_abort_reason_name(STM_ABORT_REASON_COUNT), "UNKNOWN") == 0, "unknown");
    CHECK(strcmp(stm_abort_reason_name((stm_abort_reason)-1), "UNKNOWN") == 0, "negative");
    CHECK(stm_abort_reason_text(STM_ABORT_REASON_COUNT) != NULL, "a text for unknown reasons");
}

/* ---- commits by kind -------------------------------------------------------------- */

typedef struct sctx {
    node *p;
    int attempts;
} sctx;

static int tx_read_only(void *arg)
{
    (void)arg;
    (void)RD(&g_x)->value;
    return STM_DONE;
}

static int tx_alloc_only(void *arg)
{
    sctx *sx = arg;
    sx->p = ts_new_node(1, NULL, NULL);
    return STM_DONE;
}

static int tx_write_own(void *arg)
{
    sctx *sx = arg;
    WR(sx->p)->value++;
    return STM_DONE;
}

static int tx_write_public(void *arg)
{
    (void)arg;
    WR(&g_x)->value++;
    WR(&g_y)->value++;
    return STM_DONE;
}

#define EXPECT_COMMIT(before, after, field)                                              \
    do {                                                                                 \
        CHECK_EQ(DELTA(after, before, commits), 1);                                      \
        CHECK_EQ(DELTA(after, before, commits_readonly), strcmp(#field, "commits_readonly") == 0); \
        CHECK_EQ(DELTA(after, before, commits_private), strcmp(#field, "commits_private") == 0); \
        CHECK_EQ(DELTA(after, before, commits_shared), strcmp(#field, "commits_shared") == 0); \
    } while (0)

Test(stats, commits_are_counted_by_kind)
{
    ts_register_prebuilt(&g_x, 0);
    ts_register_prebuilt(&g_y, 0);
    sctx sx = { 0 };
    stm_stats s0 = ts_stats();
    ts_run(tx_read_only, &sx);
    stm_stats s1 = ts_stats();
    EXPECT_COMMIT(s0, s1, commits_readonly);
    ts_run(tx_alloc_only, &sx);            /* fresh objects only: nothing existing written */
    stm_stats s2 = ts_stats();
    EXPECT_COMMIT(s1, s2, commits_readonly);
    stm_push_root(sx.p);
    ts_run(tx_write_own, &sx);
    stm_stats s3 = ts_stats();
    EXPECT_COMMIT(s2, s3, commits_private);
    ts_run(tx_write_public, &sx);
    stm_stats s4 = ts_stats();
    EXPECT_COMMIT(s3, s4, commits_shared);
    CHECK_EQ(DELTA(s4, s3, stubs_created), 2);   /* one stub per public copy written */
    CHECK_EQ(DELTA(s4, s3, write_slow), 2);
    sx.p = stm_pop_root();
}

Test(stats, inevitable_commits_are_counted_by_kind)
{
    ts_register_prebuilt(&g_x, 0);
    stm_stats s0 = ts_stats();
    TX_BEGIN();
    (void)RD(&g_x)->value;
    TX_COMMIT();
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, inevitable), 1);
    /* "commits_readonly: commits that wrote nothing" */
    EXPECT_COMMIT(s0, s1, commits_readonly);
    TX_BEGIN();
    WR(&g_x)->value = 1;
    TX_COMMIT();
    stm_stats s2 = ts_stats();
    EXPECT_COMMIT(s1, s2, commits_shared);
}

Test(stats, inevitable_private_commit_is_counted_private)
{
    sctx sx = { 0 };
    ts_run(tx_alloc_only, &sx);
    stm_push_root(sx.p);
    stm_stats s0 = ts_stats();
    TX_BEGIN();
    WR(*stm_root_slot(0))->value = 5;
    TX_COMMIT();
    stm_stats s1 = ts_stats();
    EXPECT_COMMIT(s0, s1, commits_private);
    stm_pop_root();
}

/* ---- aborts, inevitability ------------------------------------------------------- */

static int tx_abort_twice(void *arg)
{
    sctx *sx = arg;
    if (sx->attempts++ < 2)
        stm_abort_and_retry();
    return STM_DONE;
}

static int tx_inevitable_twice(void *arg)
{
    (void)arg;
    stm_become_inevitable();
    stm_become_inevitable();
    return STM_DONE;
}

Test(stats, aborts_and_inevitable_transactions)
{
    sctx sx = { 0 };
    stm_stats s0 = ts_stats();
    ts_run(tx_abort_twice, &sx);
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, aborts), 2);
    CHECK_EQ(DELTA(s1, s0, aborts_by_reason[STM_ABORT_EXPLICIT]), 2);
    long long sum = 0;
    for (int r = 0; r < STM_ABORT_REASON_COUNT; r++)
        sum += DELTA(s1, s0, aborts_by_reason[r]);
    CHECK_EQ(sum, 2);
    CHECK_EQ(DELTA(s1, s0, commits), 1);
    CHECK_EQ(DELTA(s1, s0, inevitable), 0);
    ts_run(tx_inevitable_twice, NULL);
    stm_stats s2 = ts_stats();
    CHECK_EQ(DELTA(s2, s1, inevitable), 1);   /* once per transaction */
    CHECK_EQ(DELTA(s2, s1, aborts), 0);
}

/* ---- barriers, validation ----------------------------------------------------------- */

static int tx_barrier_counts(void *arg)
{
    (void)arg;
    stm_stats s0 = ts_stats();
    for (int i = 0; i < 10; i++)
        (void)stm_read(&g_x);
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, read_slow), 1);
    CHECK_EQ(DELTA(s1, s0, write_slow), 0);
    node *w = WR(&g_x);
    for (int i = 0; i < 10; i++)
        w = WR(w);
    stm_stats s2 = ts_stats();
    CHECK_EQ(DELTA(s2, s1, write_slow), 1);
    CHECK_EQ(DELTA(s2, s1, read_slow), 0);
    node *n = ts_new_node(0, NULL, NULL);
    for (int i = 0; i < 10; i++)
        WR(n)->value = RD(n)->value + 1;
    stm_stats s3 = ts_stats();
    CHECK_EQ(DELTA(s3, s2, write_slow), 0);
    CHECK_EQ(DELTA(s3, s2, read_slow), 0);
    return STM_DONE;
}

Test(stats, barrier_slow_paths)
{
    ts_register_prebuilt(&g_x, 0);
    ts_run(tx_barrier_counts, NULL);
}

static int tx_write_x(void *arg)
{
    (void)arg;
    WR(&g_x)->value++;
    return STM_DONE;
}

Test(stats, no_validation_without_concurrent_commits)
{
    ts_register_prebuilt(&g_x, 0);
    stm_stats s0 = ts_stats();
    for (int i = 0; i < 10; i++)
        ts_run(tx_write_x, NULL);
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, read_validations), 0);
    /* The first commit outdates g_x with our copy, which later transactions
     * write in place: one shared commit, then private ones. */
    CHECK_EQ(DELTA(s1, s0, commits_shared), 1);
    CHECK_EQ(DELTA(s1, s0, commits_private), 9);
    CHECK_EQ(DELTA(s1, s0, aborts), 0);
}

/* ---- memory: allocation, promotion, backups, stubs, steals ------------------------ */

#define HUGE_ITEMS 140000

static int tx_alloc_counts(void *arg)
{
    (void)arg;
    stm_stats s0 = ts_stats();
    for (int i = 0; i < 10; i++)
        ts_new_node(i, NULL, NULL);
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, bytes_allocated), 10 * NODE);
    array *a = stm_allocate(ARRAY_SIZE(HUGE_ITEMS), T_ARRAY);
    CHECK(a != NULL, "allocated");
    stm_stats s2 = ts_stats();
    CHECK_EQ(DELTA(s2, s1, bytes_allocated),
             (ARRAY_SIZE(HUGE_ITEMS) + STM_ALIGNMENT - 1) & ~(size_t)(STM_ALIGNMENT - 1));
    return STM_DONE;
}

Test(stats, bytes_allocated)
{
    ts_run(tx_alloc_counts, NULL);
}

static int tx_collect_counts(void *arg)
{
    sctx *sx = arg;
    node *keep = ts_new_node(1, ts_new_node(2, NULL, NULL), NULL);
    stm_push_root(keep);
    stm_stats s0 = ts_stats();
    stm_minor_collect();
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, minor_collections), 1);
    CHECK_EQ(DELTA(s1, s0, bytes_promoted), 2 * NODE);
    stm_minor_collect();
    stm_stats s2 = ts_stats();
    CHECK_EQ(DELTA(s2, s1, minor_collections), 1);
    CHECK_EQ(DELTA(s2, s1, bytes_promoted), 0);   /* already old */
    sx->p = stm_pop_root();
    return STM_DONE;
}

static int tx_backups(void *arg)
{
    sctx *sx = arg;
    stm_stats s0 = ts_stats();
    WR(sx->p)->value = 5;
    WR(sx->p)->value = 6;
    WR(RD(sx->p)->left)->value = 7;
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, backups_made), 2);
    return STM_DONE;
}

Test(stats, collections_promotion_and_backups)
{
    sctx sx = { 0 };
    ts_run(tx_collect_counts, &sx);
    stm_push_root(sx.p);
    ts_run(tx_backups, &sx);
    sx.p = stm_pop_root();
    CHECK_EQ(sx.p->value, 6);
    CHECK_EQ(sx.p->left->value, 7);
}

static int tx_churn_10m(void *arg)
{
    sctx *sx = arg;
    stm_stats s0 = ts_stats();
    ts_churn(10 << 20);
    stm_stats s1 = ts_stats();
    sx->attempts = (int)DELTA(s1, s0, minor_collections);
    return STM_DONE;
}

Test(stats, collections_triggered_by_allocation)
{
    /* 10 MiB through the default 4 MiB nursery. */
    sctx sx = { 0 };
    ts_run(tx_churn_10m, &sx);
    CHECK(sx.attempts >= 2 && sx.attempts <= 3, "%d minor collections", sx.attempts);
}

static int tx_make_pair(void *arg)
{
    sctx *sx = arg;
    sx->p = ts_new_node(1, ts_new_node(2, NULL, NULL), ts_new_node(3, NULL, NULL));
    return STM_DONE;
}

/* "steals: objects stolen from other threads": publishing one's own
 * object is not a steal; its private references still become stubs. */
Test(stats, publishing_own_object_is_not_a_steal)
{
    sctx sx = { 0 };
    ts_run(tx_make_pair, &sx);
    stm_stats s0 = ts_stats();
    node *pub = stm_publish(sx.p);
    stm_stats s1 = ts_stats();
    CHECK(pub != NULL, "published");
    CHECK_EQ(DELTA(s1, s0, stubs_created), 2);
    CHECK_EQ(DELTA(s1, s0, steals), 0);
}

/* ---- merged over threads ---------------------------------------------------------- */

static void five_commits(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++)
        ts_run(tx_noop, NULL);
}

static void three_commits_and_an_abort(void *arg)
{
    (void)arg;
    sctx sx = { .attempts = 1 };
    for (int i = 0; i < 2; i++)
        ts_run(tx_noop, NULL);
    ts_run(tx_abort_twice, &sx);
}

Test(stats, counters_of_detached_threads_are_kept)
{
    stm_stats s0 = ts_stats();
    ts_join(ts_spawn(five_commits, NULL));           /* attaches, detaches, exits */
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, commits), 5);
    ts_join(ts_spawn(three_commits_and_an_abort, NULL));   /* reuses the descriptor */
    stm_stats s2 = ts_stats();
    CHECK_EQ(DELTA(s2, s1, commits), 3);
    CHECK_EQ(DELTA(s2, s1, aborts), 1);
    ts_run(tx_noop, NULL);
    stm_stats s3 = ts_stats();
    CHECK_EQ(DELTA(s3, s0, commits), 9);
}
