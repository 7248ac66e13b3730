/* test_barriers.c -- stm_read / stm_write / stm_write_again on every kind
 * of copy return the copy to use, with the right contents; aliases of one
 * object agree; and a pointer resolved once in a transaction takes the
 * inline fast path afterwards (read_slow does not grow), whatever kind of
 * copy it names (docs/DESIGN.md 2.1, cache invariants C1-C5). */
#include "support/tx_macros.h"

#include <stdio.h>

TestSuite(barriers, .init = ts_setup, .fini = ts_teardown, .timeout = 60);

#ifdef STM_TESTING
#define KIND(p, k) CHECK_KIND(p, k)
#else
#define KIND(p, k) ((void)(p))
#endif

TS_PREBUILT_NODE(g_a);
TS_PREBUILT_NODE(g_b);

typedef struct bctx {
    node *n, *m, *p, *l, *s, *c, *w;
    long v;
    int attempts;
    long long slow_first, slow_repeat, write_slow;
} bctx;

/* ---- single thread: private, protected, private from protected, public */

static int tx_private(void *arg)
{
    (void)arg;
    node *n = ts_new_node(1, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_PTR_EQ(stm_read(n), n);
        CHECK_PTR_EQ(stm_write(n), n);
        CHECK_PTR_EQ(stm_write_again(n), n);
    }
    WR(n)->value = 2;
    CHECK_EQ(RD(n)->value, 2);
    return STM_DONE;
}

Test(barriers, private_object_is_its_own_copy)
{
    stm_stats before = ts_stats();
    ts_run(tx_private, NULL);
    stm_stats after = ts_stats();
    /* Fresh objects never need the slow paths. */
    CHECK_EQ(DELTA(after, before, read_slow), 0);
    CHECK_EQ(DELTA(after, before, write_slow), 0);
}

static int tx_make(void *arg)
{
    bctx *bx = arg;
    bx->n = ts_new_node(10, NULL, NULL);
    return STM_DONE;
}

static int tx_protected(void *arg)
{
    bctx *bx = arg;
    node *n = bx->n;
    CHECK_PTR_EQ(stm_read(n), n);
    CHECK_EQ(RD(n)->value, 10);
    node *w = WR(n);
    CHECK_PTR_EQ(w, n);                        /* in place */
    KIND(w, STM_KIND_PRIVATE_FROM_PROTECTED);
    CHECK_PTR_EQ(stm_write_again(w), w);
    w->value = 11;
    CHECK_PTR_EQ(stm_read(n), n);              /* private from protected */
    CHECK_EQ(RD(n)->value, 11);
    CHECK_PTR_EQ(stm_write(n), n);
    return STM_DONE;
}

Test(barriers, protected_and_private_from_protected_are_written_in_place)
{
    bctx bx = { 0 };
    ts_run(tx_make, &bx);
    ts_run(tx_protected, &bx);
    CHECK_EQ(bx.n->value, 11);
}

static int tx_public(void *arg)
{
    bctx *bx = arg;
    CHECK_PTR_EQ(stm_read(&g_a), &g_a);
    CHECK_EQ(RD(&g_a)->value, 100);
    node *w = WR(&g_a);
    CHECK_PTR_NEQ(w, &g_a);
    KIND(w, STM_KIND_PRIVATE);
    CHECK_EQ(w->value, 100);
    w->value = 101;
    /* Every alias now resolves to the private copy. */
    CHECK_PTR_EQ(stm_read(&g_a), w);
    CHECK_PTR_EQ(stm_write(&g_a), w);
    CHECK_PTR_EQ(stm_read(w), w);
    CHECK_PTR_EQ(stm_write(w), w);
    CHECK_EQ(RD(&g_a)->value, 101);
    bx->w = w;
    return STM_DONE;
}

static int tx_public_outdated_by_us(void *arg)
{
    bctx *bx = arg;
    /* &g_a -> stub -> our protected copy */
    CHECK_PTR_EQ(stm_read(&g_a), bx->w);
    CHECK_EQ(RD(&g_a)->value, 101);
    node *s = ts_forward(&g_a);
    CHECK_PTR_EQ(stm_read(s), bx->w);          /* the stub itself */
    node *w = WR(&g_a);                        /* our copy is protected: in place */
    CHECK_PTR_EQ(w, bx->w);
    KIND(w, STM_KIND_PRIVATE_FROM_PROTECTED);
    w->value = 102;
    CHECK_PTR_EQ(stm_read(&g_a), w);
    CHECK_PTR_EQ(stm_read(s), w);
    return STM_DONE;
}

Test(barriers, public_copy_then_outdated_by_own_commit)
{
    ts_register_prebuilt(&g_a, 100);
    bctx bx = { 0 };
    ts_run(tx_public, &bx);
    KIND(&g_a, STM_KIND_PUBLIC_OUTDATED);
    CHECK_EQ(g_a.value, 100);
    stm_push_root(bx.w);
    ts_run(tx_public_outdated_by_us, &bx);
    bx.w = stm_pop_root();
    CHECK_EQ(bx.w->value, 102);
}

/* Reading first caches &g_a -> &g_a; the write must redirect that entry. */
static int tx_read_write_read(void *arg)
{
    (void)arg;
    node *r = RD(&g_a);
    CHECK_PTR_EQ(r, &g_a);
    node *r2 = RD(&g_b);
    CHECK_PTR_EQ(r2, &g_b);
    node *w = WR(&g_a);
    CHECK_PTR_NEQ(w, &g_a);
    w->value = 7;
    CHECK_PTR_EQ(stm_read(&g_a), w);
    CHECK_EQ(RD(&g_a)->value, 7);
    CHECK_PTR_EQ(stm_read(&g_b), &g_b);        /* other entries unaffected */
    return STM_DONE;
}

Test(barriers, write_redirects_earlier_reads_of_same_pointer)
{
    ts_register_prebuilt(&g_a, 1);
    ts_register_prebuilt(&g_b, 2);
    ts_run(tx_read_write_read, NULL);
}

/* Published object: the original pointer (now a forwarder) and the public
 * copy resolve to the same copy, for reading and writing. */
static int tx_moved(void *arg)
{
    bctx *bx = arg;
    CHECK_PTR_EQ(stm_read(bx->n), bx->p);
    CHECK_PTR_EQ(stm_read(bx->p), bx->p);
    CHECK_EQ(RD(bx->n)->value, 10);
    node *w = WR(bx->n);                       /* through the forwarder */
    CHECK_PTR_NEQ(w, bx->n);
    CHECK_PTR_NEQ(w, bx->p);
    KIND(w, STM_KIND_PRIVATE);
    w->value = 12;
    CHECK_PTR_EQ(stm_write(bx->p), w);         /* the other alias: same copy */
    CHECK_PTR_EQ(stm_read(bx->p), w);
    CHECK_PTR_EQ(stm_read(bx->n), w);
    CHECK_EQ(bx->p->value, 10);                /* public copy untouched */
    return STM_DONE;
}

Test(barriers, moved_forwarder_and_its_public_copy_agree)
{
    bctx bx = { 0 };
    ts_run(tx_make, &bx);
    bx.p = stm_publish(bx.n);
    CHECK(bx.p != NULL && bx.p != bx.n, "stm_publish gives a new public copy");
    KIND(bx.n, STM_KIND_MOVED);
    ts_run(tx_moved, &bx);
}

/* ---- another thread's copies: stubs, outdated copies, stolen copies ----- */

/* A commits g_a := 101 (g_a -> stub S -> A's protected L); then B reads and
 * writes through &g_a, S and the stolen copy. */
static int tx_a_writes(void *arg)
{
    bctx *bx = arg;
    node *w = WR(&g_a);
    w->value = 101;
    bx->l = w;
    return STM_DONE;
}

static int tx_b_reads_foreign(void *arg)
{
    bctx *bx = arg;
    node *s = bx->s;
    KIND(s, STM_KIND_STUB);
    node *c = RD(s);                           /* steals L */
    CHECK_PTR_NEQ(c, s);
    CHECK_PTR_NEQ(c, bx->l);
    KIND(c, STM_KIND_PUBLIC);
    CHECK_EQ(c->value, 101);
    CHECK_PTR_EQ(stm_read(&g_a), c);           /* outdated public -> same copy */
    CHECK_PTR_EQ(stm_read(bx->l), c);          /* A's (now moved) copy too */
    KIND(bx->l, STM_KIND_MOVED);
    bx->c = c;
    /* Writing through any alias makes one private copy of the newest state. */
    node *w = WR(&g_a);
    CHECK_PTR_NEQ(w, c);
    KIND(w, STM_KIND_PRIVATE);
    CHECK_EQ(w->value, 101);
    w->value = 202;
    CHECK_PTR_EQ(stm_write(s), w);
    CHECK_PTR_EQ(stm_write(c), w);
    CHECK_PTR_EQ(stm_read(s), w);
    CHECK_PTR_EQ(stm_read(c), w);
    CHECK_PTR_EQ(stm_read(&g_a), w);
    CHECK_PTR_EQ(stm_read(bx->l), w);
    CHECK_EQ(c->value, 101);
    return STM_DONE;
}

static void b_foreign(void *arg)
{
    bctx *bx = arg;
    ls_wait(1);
    ts_run(tx_b_reads_foreign, bx);
    ls_set(2);
}

static int tx_a_reads_b(void *arg)
{
    bctx *bx = arg;
    node *r = RD(&g_a);
    CHECK_EQ(r->value, 202);
    CHECK_PTR_NEQ(r, bx->l);
    CHECK_PTR_EQ(stm_read(bx->l), r);          /* our old copy forwards too */
    CHECK_PTR_EQ(stm_read(bx->s), r);
    return STM_DONE;
}

static void a_foreign(void *arg)
{
    bctx *bx = arg;
    ts_run(tx_a_writes, bx);
    stm_push_root(bx->l);
    bx->s = ts_forward(&g_a);
    KIND(bx->s, STM_KIND_STUB);
    ls_set(1);
    ls_wait(2);
    ts_run(tx_a_reads_b, bx);
    bx->l = stm_pop_root();
}

Test(barriers, stubs_outdated_and_stolen_copies_resolve_to_one_copy)
{
    ts_register_prebuilt(&g_a, 100);
    bctx bx = { 0 };
    two_threads(a_foreign, b_foreign, &bx);
}

/* A transaction's cached resolution must not survive into a later
 * transaction after another thread committed a newer version. */
static int tx_read_value(void *arg)
{
    bctx *bx = arg;
    bx->v = RD(&g_a)->value;
    return STM_DONE;
}

static int tx_b_increments(void *arg)
{
    (void)arg;
    WR(&g_a)->value += 1;
    return STM_DONE;
}

static void b_increments(void *arg)
{
    (void)arg;
    ls_wait(1);
    ts_run(tx_b_increments, NULL);
    ls_set(2);
}

static void a_reads_twice(void *arg)
{
    bctx *bx = arg;
    ts_run(tx_read_value, bx);
    CHECK_EQ(bx->v, 100);
    ts_run(tx_read_value, bx);   /* cached, read-only commit in between */
    CHECK_EQ(bx->v, 100);
    ls_set(1);
    ls_wait(2);
    ts_run(tx_read_value, bx);
    CHECK_EQ(bx->v, 101);
}

Test(barriers, cached_resolution_does_not_outlive_a_newer_commit)
{
    ts_register_prebuilt(&g_a, 100);
    bctx bx = { 0 };
    two_threads(a_reads_twice, b_increments, &bx);
}

/* ---- slow-path counting: resolved once -> fast path afterwards ----------- */

#define REPEAT 1000

/* Reads `p` once and then REPEAT times; records the read_slow deltas. */
static void count_reads(bctx *bx, const void *p, const void *expect)
{
    stm_stats s0 = ts_stats();
    void *r = stm_read(p);
    stm_stats s1 = ts_stats();
    CHECK_PTR_EQ(r, expect);
    for (int i = 0; i < REPEAT; i++) {
        void *again = stm_read(p);
        if (again != expect)
            CHECK_PTR_EQ(again, expect);
    }
    stm_stats s2 = ts_stats();
    bx->slow_first = DELTA(s1, s0, read_slow);
    bx->slow_repeat = DELTA(s2, s1, read_slow);
}

typedef struct count_case {
    const void *ptr;
    const void *expect;
    const char *what;
} count_case;

static count_case cases[8];
static int ncases;

static int tx_count_all(void *arg)
{
    bctx *bx = arg;
    const void *keys[8];
    for (int i = 0; i < ncases; i++)
        keys[i] = cases[i].ptr;
    if (!ts_distinct_cache_slots(keys, (size_t)ncases)) {
        for (int i = 0; i < ncases; i++)
            fprintf(stderr, "  %-40s %p\n", cases[i].what, cases[i].ptr);
        CHECK(false, "test precondition: the pointers must use distinct read-cache slots");
    }
    for (int i = 0; i < ncases; i++) {
        count_reads(bx, cases[i].ptr, cases[i].expect);
        CHECK(bx->slow_first == 1, "%s: first stm_read took %lld slow paths, expected 1",
              cases[i].what, bx->slow_first);
        CHECK(bx->slow_repeat == 0, "%s: %d repeated stm_reads took %lld slow paths, expected 0",
              cases[i].what, REPEAT, bx->slow_repeat);
    }
    /* And after all of them, the first ones are still cached. */
    stm_stats s0 = ts_stats();
    for (int i = 0; i < ncases; i++)
        CHECK_PTR_EQ(stm_read(cases[i].ptr), cases[i].expect);
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, read_slow), 0);
    return STM_DONE;
}

static int tx_count_private(void *arg)
{
    bctx *bx = arg;
    node *n = ts_new_node(3, NULL, NULL);
    count_reads(bx, n, n);
    CHECK_EQ(bx->slow_first, 0);
    CHECK_EQ(bx->slow_repeat, 0);
    return STM_DONE;
}

Test(barriers, read_slow_path_once_for_prebuilt_protected_published_private)
{
    ts_register_prebuilt(&g_b, 5);
    bctx bx = { 0 };
    /* Padding: the first nursery object and the first old object both sit
     * at offset 0 of a 1 MiB chunk, so they would share a cache slot. */
    ts_run(tx_make, &bx);
    ts_run(tx_make, &bx);             /* protected N */
    node *prot = bx.n;
    stm_push_root(prot);
    ts_run(tx_make, &bx);             /* a second one, published */
    node *moved = bx.n;
    node *pub = stm_publish(moved);
    CHECK(pub != NULL, "stm_publish");
    prot = stm_pop_root();
    ncases = 0;
    cases[ncases++] = (count_case){ &g_b, &g_b, "prebuilt object" };
    cases[ncases++] = (count_case){ prot, prot, "own protected object" };
    cases[ncases++] = (count_case){ moved, pub, "moved forwarder" };
    cases[ncases++] = (count_case){ pub, pub, "published copy" };
    ts_run(tx_count_all, &bx);
    ts_run(tx_count_private, &bx);
}

/* Own outdated public copy and own stub. */
static int tx_write_g_a(void *arg)
{
    bctx *bx = arg;
    /* Padding (see ts_distinct_cache_slots): our copy must not sit at the
     * start of the nursery, where it would share a read-cache slot with
     * the first old objects of either thread. */
    for (int i = 0; i < bx->attempts; i++)
        ts_new_node(0, NULL, NULL);
    node *w = WR(&g_a);
    w->value = 1;
    bx->l = w;
    return STM_DONE;
}

static int tx_clear_cache_by_aborting(void *arg)
{
    bctx *bx = arg;
    if (bx->attempts++ == 0)
        stm_abort_and_retry();         /* an abort clears the read cache */
    return tx_count_all(arg);
}

Test(barriers, read_slow_path_once_for_own_outdated_public_and_stub)
{
    ts_register_prebuilt(&g_a, 0);
    bctx bx = { 0 };
    ts_run(tx_write_g_a, &bx);
    node *stub = ts_forward(&g_a);
    CHECK(stub != NULL, "g_a is outdated");
    ncases = 0;
    cases[ncases++] = (count_case){ &g_a, bx.l, "own outdated public copy" };
    cases[ncases++] = (count_case){ stub, bx.l, "own stub" };
    ts_run(tx_clear_cache_by_aborting, &bx);
}

/* Another thread's stub and outdated public copy, and the forwarder left
 * behind by stealing. */
static void a_commits_for_b(void *arg)
{
    bctx *bx = arg;
    bx->attempts = 2;
    ts_run(tx_write_g_a, bx);
    bx->attempts = 0;
    stm_push_root(bx->l);
    bx->s = ts_forward(&g_a);
    ls_set(1);
    ls_wait(2);
    bx->l = stm_pop_root();
}

static int tx_b_steal_first(void *arg)
{
    bctx *bx = arg;
    bx->c = RD(bx->s);
    return STM_DONE;
}

static int tx_b_pad(void *arg)
{
    bctx *bx = arg;
    bx->n = ts_new_node(0, NULL, NULL);
    return STM_DONE;
}

static void b_counts(void *arg)
{
    bctx *bx = arg;
    ls_wait(1);
    /* Padding: the stolen copy must not be the first object of our old
     * space (same cache slot as A's first stub). */
    ts_run(tx_b_pad, bx);
    CHECK(stm_publish(bx->n) != NULL, "stm_publish");
    ts_run(tx_b_steal_first, bx);    /* L becomes a forwarder to c */
    ncases = 0;
    cases[ncases++] = (count_case){ &g_a, bx->c, "another thread's outdated public copy" };
    cases[ncases++] = (count_case){ bx->s, bx->c, "another thread's stub (already stolen)" };
    cases[ncases++] = (count_case){ bx->l, bx->c, "forwarder left by stealing" };
    cases[ncases++] = (count_case){ bx->c, bx->c, "stolen public copy" };
    bx->attempts = 0;
    ts_run(tx_clear_cache_by_aborting, bx);
    ls_set(2);
}

Test(barriers, read_slow_path_once_for_foreign_stub_outdated_and_moved)
{
    ts_register_prebuilt(&g_a, 0);
    bctx bx = { 0 };
    two_threads(a_commits_for_b, b_counts, &bx);
}

/* A stub whose target has not been stolen yet: the first read steals, the
 * later ones hit the cache. */
static int tx_b_count_fresh_stub(void *arg)
{
    bctx *bx = arg;
    stm_stats s0 = ts_stats();
    node *c = RD(bx->s);
    stm_stats s1 = ts_stats();
    for (int i = 0; i < REPEAT; i++)
        CHECK_PTR_EQ(RD(bx->s), c);
    stm_stats s2 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, steals), 1);
    CHECK_EQ(DELTA(s1, s0, read_slow), 1);
    CHECK_EQ(DELTA(s2, s1, read_slow), 0);
    CHECK_EQ(DELTA(s2, s1, steals), 0);
    CHECK_EQ(c->value, 1);
    return STM_DONE;
}

static void b_counts_fresh_stub(void *arg)
{
    bctx *bx = arg;
    ls_wait(1);
    ts_run(tx_b_count_fresh_stub, bx);
    ls_set(2);
}

Test(barriers, read_slow_path_once_for_unstolen_foreign_stub)
{
    ts_register_prebuilt(&g_a, 0);
    bctx bx = { 0 };
    two_threads(a_commits_for_b, b_counts_fresh_stub, &bx);
}

/* The cache survives a commit when the clock did not move (C5): reads of
 * shared data stay on the fast path across read-only transactions. */
static int tx_read_g_b(void *arg)
{
    bctx *bx = arg;
    stm_stats s0 = ts_stats();
    for (int i = 0; i < REPEAT; i++)
        CHECK_PTR_EQ(stm_read(&g_b), &g_b);
    stm_stats s1 = ts_stats();
    bx->slow_first = DELTA(s1, s0, read_slow);
    return STM_DONE;
}

Test(barriers, read_cache_survives_read_only_commits)
{
    ts_register_prebuilt(&g_b, 5);
    bctx bx = { 0 };
    ts_run(tx_read_g_b, &bx);
    CHECK_EQ(bx.slow_first, 1);
    for (int i = 0; i < 5; i++) {
        ts_run(tx_read_g_b, &bx);
        CHECK(bx.slow_first == 0, "transaction %d after a read-only commit: %lld slow reads",
              i + 2, bx.slow_first);
    }
}

/* ---- write barrier slow-path counting ----------------------------------- */

static int tx_write_many(void *arg)
{
    bctx *bx = arg;
    stm_stats s0 = ts_stats();
    node *w = WR(bx->n);
    for (int i = 0; i < REPEAT; i++)
        WR(bx->n)->value = i;
    CHECK_PTR_EQ(WR(bx->n), w);
    stm_stats s1 = ts_stats();
    bx->write_slow = DELTA(s1, s0, write_slow);
    return STM_DONE;
}

Test(barriers, write_slow_path_once_per_protected_object)
{
    bctx bx = { 0 };
    ts_run(tx_make, &bx);
    ts_run(tx_write_many, &bx);
    CHECK_EQ(bx.write_slow, 1);
    CHECK_EQ(bx.n->value, REPEAT - 1);
}

/* "The first write to an object in a transaction takes the slow path"
 * (stm.h): later writes through the same (public) pointer should not. */
Test(barriers, write_slow_path_once_per_public_object)
{
    ts_register_prebuilt(&g_a, 0);
    bctx bx = { .n = &g_a };
    ts_run(tx_write_many, &bx);
    CHECK(bx.write_slow == 1, "%d writes through a prebuilt pointer took %lld slow paths",
          REPEAT + 2, bx.write_slow);
}

#ifdef STM_TESTING
/* ---- the sort behind read-set deduplication and commit lock order ---- */

static int cmp_uintptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Every shape that trips a hand-written quicksort: tiny, sorted, reversed,
 * all equal, few distinct values, organ pipe, and random; compared with
 * qsort's result word for word (so a lost or duplicated word fails too). */
Test(barriers, sort_words_agrees_with_qsort_on_every_shape)
{
    static const size_t sizes[] = { 0, 1, 2, 3, 15, 16, 17, 33, 100, 1000, 4097, 50000 };
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        uintptr_t *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
        cr_assert(a && b);
        for (int shape = 0; shape < 7; shape++) {
            for (size_t i = 0; i < n; i++) {
                seed = seed * 6364136223846793005u + 1442695040888963407u;
                uintptr_t r = (uintptr_t)(seed >> 16);
                switch (shape) {
                case 0: a[i] = i * 16; break;
                case 1: a[i] = (n - i) * 16; break;
                case 2: a[i] = 42; break;
                case 3: a[i] = r % 3; break;
                case 4: a[i] = i < n / 2 ? i : n - i; break;
                case 5: a[i] = r; break;
                default: a[i] = r | ((uintptr_t)1 << 47); break;   /* high addresses */
                }
            }
            memcpy(b, a, n * sizeof *a);
            stm_test_sort_words(a, n);
            if (n)
                qsort(b, n, sizeof *b, cmp_uintptr);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(a[i], b[i], "n=%zu shape=%d: word %zu is %#lx, expected %#lx", n,
                             shape, i, (unsigned long)a[i], (unsigned long)b[i]);
        }
        free(a);
        free(b);
    }
}
#endif
