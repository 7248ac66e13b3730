/* test_nursery.c -- nurseries and minor collection (docs/DESIGN.md 5):
 * survivors move out of the nursery and every reference to them is
 * updated; everything reachable from the shadow stack, the remembered set
 * (old objects written to point to young ones), the public-to-private map,
 * backups, and public objects through stubs survives; nothing else is
 * promoted.  A "tiny nursery" group builds structures while nearly every
 * allocation collects, and checks them completely.
 *
 * Criterion runs a suite's fixtures as well as a test's, so each test
 * names its own fixture. */
#include "support/tx_macros.h"

#include <stdlib.h>

TestSuite(nursery, .timeout = 120);

#ifdef STM_TESTING
#define KIND(p, k) CHECK_KIND(p, k)
#define YOUNG(p) stm_test_is_young(p)
#define CHECK_OLD(p) CHECK(!stm_test_is_young(p), "%s (%p) is still in the nursery", #p, (void *)(p))
#else
#define KIND(p, k) ((void)(p))
#define CHECK_OLD(p) ((void)(p))
#endif

#define NODE ((long long)sizeof(node))

TS_PREBUILT_NODE(g_x);

typedef struct nctx {
    node *n, *m, *w;
    long long promoted, collections;
    int attempts;
    int steal_leaf;                      /* thief_b: also steal the leaf directly */
    long v;
} nctx;

static void collect(nctx *nx)
{
    stm_stats s0 = ts_stats();
    stm_minor_collect();
    stm_stats s1 = ts_stats();
    nx->promoted = DELTA(s1, s0, bytes_promoted);
    nx->collections = DELTA(s1, s0, minor_collections);
}

/* ---- shadow stack ------------------------------------------------------------ */

static int tx_promote_rooted(void *arg)
{
    nctx *nx = arg;
    node *leaf = ts_new_node(8, NULL, NULL);
    node *n = ts_new_node(7, leaf, NULL);
    for (int i = 0; i < 100; i++)         /* garbage */
        ts_new_node(i, n, NULL);
#ifdef STM_TESTING
    CHECK(YOUNG(n) && YOUNG(leaf), "fresh objects are young");
#endif
    stm_push_root(n);
    collect(nx);
    node *n2 = stm_pop_root();
    CHECK_PTR_NEQ(n2, n);
    CHECK_OLD(n2);
    KIND(n2, STM_KIND_PRIVATE);           /* still ours, same transaction */
    CHECK_EQ(RD(n2)->value, 7);
    node *l2 = RD(n2)->left;
    CHECK_PTR_NEQ(l2, leaf);
    CHECK_OLD(l2);
    CHECK_EQ(RD(l2)->value, 8);
    CHECK_EQ(nx->collections, 1);
    CHECK_EQ(nx->promoted, 2 * NODE);     /* exactly the two live nodes */
    nx->n = n2;
    return STM_DONE;
}

Test(nursery, minor_collection_promotes_exactly_what_is_rooted, .init = ts_setup,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_promote_rooted, &nx);
    KIND(nx.n, STM_KIND_PROTECTED);
    CHECK_EQ(nx.n->value, 7);
}

static int tx_collect_only(void *arg)
{
    nctx *nx = arg;
    collect(nx);
    return STM_DONE;
}

static int tx_make(void *arg)
{
    nctx *nx = arg;
    nx->n = ts_new_node(1, ts_new_node(2, NULL, NULL), NULL);
    return STM_DONE;
}

Test(nursery, roots_pushed_outside_transactions_are_updated, .init = ts_setup,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_make, &nx);
    node *before = nx.n;
    stm_push_root(NULL);
    stm_push_root(before);
    stm_push_root(&g_x);                  /* not in the nursery: untouched */
    CHECK_EQ(stm_root_depth(), 3);
    CHECK_PTR_EQ(*stm_root_slot(1), before);
    ts_run(tx_collect_only, &nx);
    CHECK_EQ(nx.promoted, 2 * NODE);
    CHECK_EQ(stm_root_depth(), 3);
    node *after = *stm_root_slot(1);
    CHECK_PTR_NEQ(after, before);
    CHECK_OLD(after);
    CHECK_EQ(after->value, 1);
    CHECK_EQ(after->left->value, 2);
    CHECK_PTR_EQ(stm_pop_root(), &g_x);
    CHECK_PTR_EQ(stm_pop_root(), after);
    CHECK(stm_pop_root() == NULL, "a NULL root stays NULL");
    CHECK_EQ(stm_root_depth(), 0);
}

Test(nursery, nothing_unrooted_is_promoted, .init = ts_setup, .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_make, &nx);
    ts_run(tx_collect_only, &nx);
    CHECK_EQ(nx.collections, 1);
    CHECK_EQ(nx.promoted, 0);
}

/* ---- remembered set ------------------------------------------------------------ */

static int tx_old_private_to_young(void *arg)
{
    nctx *nx = arg;
    node *o = ts_new_node(1, NULL, NULL);
    stm_push_root(o);
    collect(nx);                          /* o: old, private */
    o = *stm_root_slot(0);
    CHECK_OLD(o);
    node *y = ts_new_node(2, NULL, NULL); /* young, referenced only by o */
    o = *stm_root_slot(0);
    WR(o)->left = y;
    collect(nx);
    CHECK_EQ(nx->promoted, NODE);         /* y only */
    o = *stm_root_slot(0);
    node *y2 = RD(o)->left;
    CHECK_PTR_NEQ(y2, y);
    CHECK_OLD(y2);
    CHECK_EQ(RD(y2)->value, 2);
    /* After a collection the object must be recorded again when written. */
    node *z = ts_new_node(3, NULL, NULL);
    o = *stm_root_slot(0);
    WR(o)->right = z;
    collect(nx);
    CHECK_EQ(nx->promoted, NODE);
    o = stm_pop_root();
    CHECK_OLD(RD(o)->right);
    CHECK_EQ(RD(RD(o)->right)->value, 3);
    CHECK_EQ(RD(RD(o)->left)->value, 2);
    return STM_DONE;
}

Test(nursery, old_private_object_written_keeps_young_object_alive, .init = ts_setup,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_old_private_to_young, &nx);
}

static int tx_old_protected_to_young(void *arg)
{
    nctx *nx = arg;
    node *y = ts_new_node(5, NULL, NULL);
    node *o = *stm_root_slot(0);
    WR(o)->left = y;                      /* o: old protected -> PFP, remembered */
    collect(nx);
    o = *stm_root_slot(0);
    CHECK_OLD(RD(o)->left);
    CHECK_EQ(RD(RD(o)->left)->value, 5);
    return STM_DONE;
}

static int tx_check_left(void *arg)
{
    nctx *nx = arg;
    node *o = *stm_root_slot(0);
    ts_churn(1000 * sizeof(node));
    collect(nx);
    o = *stm_root_slot(0);
    nx->v = RD(RD(o)->left)->value;
    return STM_DONE;
}

Test(nursery, old_protected_object_written_keeps_young_object_alive, .init = ts_setup,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_make, &nx);
    stm_push_root(nx.n);
    ts_run(tx_collect_only, &nx);         /* promote: old protected */
    CHECK_OLD(*stm_root_slot(0));
    ts_run(tx_old_protected_to_young, &nx);
    ts_run(tx_check_left, &nx);
    CHECK_EQ(nx.v, 5);
    stm_pop_root();
}

/* An object big enough to skip the nursery is old at once, and traced as
 * part of the remembered set. */
#define HUGE_ITEMS 140000   /* > 1 MiB */

static int tx_large(void *arg)
{
    nctx *nx = arg;
    array *a = stm_allocate(ARRAY_SIZE(HUGE_ITEMS), T_ARRAY);
    CHECK(a != NULL, "allocated");
    CHECK_OLD(a);
    KIND(a, STM_KIND_PRIVATE);
    a = stm_write(a);
    a->n = HUGE_ITEMS;
    stm_push_root(a);
    node *y = ts_new_node(9, NULL, NULL);
    a = *stm_root_slot(0);
    a = stm_write(a);
    a->items[HUGE_ITEMS - 1] = y;
    collect(nx);
    CHECK_EQ(nx->promoted, NODE);
    a = stm_pop_root();
    node *y2 = a->items[HUGE_ITEMS - 1];
    CHECK_OLD(y2);
    CHECK_EQ(RD(y2)->value, 9);
    return STM_DONE;
}

Test(nursery, large_object_is_allocated_old_and_traced, .init = ts_setup, .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_large, &nx);
}

#ifdef STM_TESTING
/* "Objects above min(nursery/4, 64 KiB) are allocated old" (DESIGN 5,
 * stm.h stm_allocate): with a 64 KiB nursery the threshold is 16 KiB. */
static int tx_above_threshold(void *arg)
{
    (void)arg;
    size_t n = 2500;                      /* 20 KiB */
    array *a = stm_allocate(ARRAY_SIZE(n), T_ARRAY);
    CHECK(a != NULL, "allocated");
    CHECK(!stm_test_is_young(a),
          "an object of %zu bytes (above the 16 KiB large-object threshold of a 64 KiB "
          "nursery) was allocated in the nursery", ARRAY_SIZE(n));
    return STM_DONE;
}

Test(nursery, object_above_large_threshold_skips_the_nursery, .init = ts_setup_small,
     .fini = ts_teardown)
{
    ts_run(tx_above_threshold, NULL);
}
#endif

/* ---- other roots: private copies, backups, stubs --------------------------------- */

static int tx_private_copy_survives(void *arg)
{
    nctx *nx = arg;
    node *y = ts_new_node(4, NULL, NULL);
    node *w = WR(&g_x);                   /* a young private copy */
#ifdef STM_TESTING
    CHECK(YOUNG(w), "the private copy was made in the nursery");
#endif
    w->value = 42;
    w->left = y;
    CHECK_PTR_EQ(stm_read(&g_x), w);      /* cached: &g_x -> w */
    collect(nx);                          /* no roots at all */
    CHECK_EQ(nx->promoted, 2 * NODE);     /* kept by the public-to-private map */
    node *w2 = RD(&g_x);
    CHECK_PTR_NEQ(w2, w);
    CHECK_OLD(w2);
    CHECK_EQ(w2->value, 42);
    CHECK_EQ(RD(w2->left)->value, 4);
    CHECK_PTR_EQ(stm_write(&g_x), w2);
    nx->w = w2;
    return STM_DONE;
}

static int tx_read_g_x(void *arg)
{
    nctx *nx = arg;
    nx->v = RD(&g_x)->value + RD(RD(&g_x)->left)->value;
    return STM_DONE;
}

Test(nursery, private_copy_of_public_object_survives_without_roots, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 0);
    nctx nx = { 0 };
    ts_run(tx_private_copy_survives, &nx);
    KIND(&g_x, STM_KIND_PUBLIC_OUTDATED);
    CHECK_PTR_EQ(ts_stub_target(ts_forward(&g_x)), nx.w);
    ts_run(tx_read_g_x, &nx);
    CHECK_EQ(nx.v, 46);
}

/* A committed young copy reachable only from a public object through a
 * stub (prebuilt g_x -> stub -> our copy) survives our collections. */
static int tx_write_g_x_young(void *arg)
{
    nctx *nx = arg;
    node *y = ts_new_node(8, NULL, NULL);
    node *w = WR(&g_x);
    w->value = 7;
    w->left = y;
    nx->w = w;
    return STM_DONE;
}

static int tx_collect_then_read(void *arg)
{
    nctx *nx = arg;
    ts_churn(100 * sizeof(node));
    collect(nx);
    node *r = RD(&g_x);
    CHECK_OLD(r);
    CHECK_OLD(r->left);
    nx->v = r->value * 10 + RD(r->left)->value;
    return STM_DONE;
}

Test(nursery, young_copy_reachable_only_through_a_stub_survives, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 0);
    nctx nx = { 0 };
    ts_run(tx_write_g_x_young, &nx);
#ifdef STM_TESTING
    CHECK(YOUNG(nx.w), "the committed copy is still young");
#endif
    ts_run(tx_collect_then_read, &nx);
    CHECK_EQ(nx.promoted, 2 * NODE);
    CHECK_EQ(nx.v, 78);
    /* The stub now points to the promoted copy. */
    node *stub = ts_forward(&g_x);
    KIND(stub, STM_KIND_STUB);
    node *target = ts_stub_target(stub);
    CHECK_PTR_NEQ(target, nx.w);
    CHECK_OLD(target);
    CHECK_EQ(target->value, 7);
}

/* A young object referenced only by the backup of an object being written
 * in place must survive: an abort restores the reference. */
static int tx_backup_root(void *arg)
{
    nctx *nx = arg;
    node *p = *stm_root_slot(0);
    if (nx->attempts++ == 0) {
        WR(p)->left = NULL;               /* the backup still holds the old left */
        collect(nx);
        CHECK_EQ(nx->promoted, 2 * NODE); /* p itself and its old left */
        stm_abort_and_retry();
    }
    node *l = RD(p)->left;
    CHECK(l != NULL, "the reference was restored");
    CHECK_OLD(l);
    CHECK_EQ(RD(l)->value, 2);
    return STM_DONE;
}

Test(nursery, objects_referenced_from_backups_survive, .init = ts_setup, .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_make, &nx);
    stm_push_root(nx.n);
    ts_run(tx_backup_root, &nx);
    CHECK_EQ(nx.attempts, 2);
    stm_pop_root();
}

/* A young object written in place and then promoted keeps its backup and
 * commits normally. */
static int tx_pfp_promoted(void *arg)
{
    nctx *nx = arg;
    node *p = *stm_root_slot(0);
    WR(p)->value = 10;
    collect(nx);
    p = *stm_root_slot(0);
    CHECK_OLD(p);
    KIND(p, STM_KIND_PRIVATE_FROM_PROTECTED);
#ifdef STM_TESTING
    node *b = stm_test_backup_of(p);
    CHECK(b != NULL, "the backup survives promotion");
    CHECK_EQ(b->value, 1);
#endif
    CHECK_EQ(RD(p)->value, 10);
    WR(p)->value = 11;
    return STM_DONE;
}

Test(nursery, object_written_in_place_is_promoted_with_its_backup, .init = ts_setup,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_make, &nx);
    stm_push_root(nx.n);
    ts_run(tx_pfp_promoted, &nx);
    node *p = stm_pop_root();
    KIND(p, STM_KIND_PROTECTED);
    CHECK_EQ(p->value, 11);
}

/* Stubs held by another thread into our nursery are re-pointed by our
 * minor collection (DESIGN I5). */
static node *volatile shared_raw, *volatile shared_raw_leaf;

static void owner_a(void *arg)
{
    nctx *nx = arg;
    ts_run(tx_make, nx);                 /* n(1) -> leaf(2), both young */
    nx->m = nx->n->left;
    shared_raw = nx->n;
    shared_raw_leaf = nx->m;             /* for a thief that steals it directly */
    ls_set(1);
    ls_wait(2);                          /* B stole n, holds a stub to leaf */
    ts_run(tx_collect_only, nx);         /* no roots: leaf lives through the stub */
    ls_set(3);
    ls_wait(4);
}

static int tx_b_steal_n(void *arg)
{
    nctx *nx = arg;
    node *c = RD(shared_raw);
    CHECK_EQ(c->value, 1);
    KIND(c->left, STM_KIND_STUB);
    CHECK_PTR_EQ(ts_stub_target(c->left), nx->m);
    nx->w = c;
    return STM_DONE;
}

static int tx_b_follow_stub(void *arg)
{
    nctx *nx = arg;
    node *stub = nx->w->left;
    KIND(stub, STM_KIND_STUB);
    node *target = ts_stub_target(stub);
    CHECK_PTR_NEQ(target, nx->m);        /* re-pointed to the promoted leaf */
    CHECK(target != NULL && target->value == 2, "the promoted leaf has the contents");
    nx->v = RD(stub)->value;
    return STM_DONE;
}

/* A stub into our nursery whose target another thief stole directly (not
 * through this stub) must become a plain forwarder to that thief's public
 * copy at our minor collection, not a stub of ours leading to it: stm_steal
 * would lock us for an object in another thread's old space (DESIGN I5). */
static int tx_b_steal_leaf(void *arg)
{
    nctx *nx = arg;
    node *leaf = RD(shared_raw_leaf);    /* raw pointer: a steal, not via the stub */
    CHECK_PTR_NEQ(leaf, nx->m);
    KIND(leaf, STM_KIND_PUBLIC);
    CHECK_EQ(leaf->value, 2);
    KIND(nx->w->left, STM_KIND_STUB);    /* the stub still leads to the young leaf */
    nx->n = leaf;
    return STM_DONE;
}

static int tx_b_stub_forwards(void *arg)
{
    nctx *nx = arg;
    node *stub = nx->w->left;
    KIND(stub, STM_KIND_PUBLIC_OUTDATED);
    CHECK(ts_stub_target(stub) == NULL, "the stub no longer names a target of thread A");
    CHECK_PTR_EQ(ts_forward(stub), nx->n);   /* straight to B's public copy */
    CHECK_PTR_EQ(RD(stub), nx->n);
    nx->v = RD(stub)->value;
    return STM_DONE;
}

/* B steals n (getting a stub to the young leaf); with nx->steal_leaf it
 * also steals the leaf itself, directly.  After A's minor collection it
 * checks what the stub became. */
static void thief_b(void *arg)
{
    nctx *nx = arg;
    ls_wait(1);
    ts_run(tx_b_steal_n, nx);
    if (nx->steal_leaf)
        ts_run(tx_b_steal_leaf, nx);
    ls_set(2);
    ls_wait(3);
    ts_run(nx->steal_leaf ? tx_b_stub_forwards : tx_b_follow_stub, nx);
    ls_set(4);
}

Test(nursery, stubs_into_the_nursery_are_repointed_by_its_owner, .init = ts_setup,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    two_threads(owner_a, thief_b, &nx);
    CHECK_EQ(nx.promoted, NODE);         /* only the leaf */
    CHECK_EQ(nx.v, 2);
}

Test(nursery, stub_to_a_young_object_stolen_directly_becomes_a_forwarder, .init = ts_setup,
     .fini = ts_teardown)
{
    nctx nx = { .steal_leaf = 1 };
    two_threads(owner_a, thief_b, &nx);
    CHECK_EQ(nx.promoted, 0);            /* n and leaf both live on as B's copies */
    CHECK_EQ(nx.v, 2);
}

/* ---- nursery size from the environment ---------------------------------------- */

static void setup_env_4k(void)
{
    setenv("STM_NURSERY_SIZE", "4k", 1);
    ts_setup();
}

static void setup_env_bad(void)
{
    setenv("STM_NURSERY_SIZE", "lots", 1);
    ts_setup();
}

static int tx_alloc_1000(void *arg)
{
    nctx *nx = arg;
    stm_stats s0 = ts_stats();
    ts_churn(1000 * sizeof(node));
    stm_stats s1 = ts_stats();
    nx->collections = DELTA(s1, s0, minor_collections);
    return STM_DONE;
}

Test(nursery, env_nursery_size_is_used, .init = setup_env_4k, .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_alloc_1000, &nx);
    /* 48000 bytes through a 4 KiB nursery. */
    CHECK(nx.collections >= 11, "only %lld minor collections", nx.collections);
    stm_config c;
    stm_config_init(&c);
    CHECK_EQ(stm_get_config(&c), STM_OK);
    CHECK_EQ(c.nursery_size, 4096);       /* the override, as in effect */
}

Test(nursery, bad_env_nursery_size_keeps_the_default, .init = setup_env_bad,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_alloc_1000, &nx);
    CHECK_EQ(nx.collections, 0);         /* 48000 bytes fit in 4 MiB */
    stm_config c, dflt;
    stm_config_init(&c);
    stm_config_init(&dflt);
    CHECK_EQ(stm_get_config(&c), STM_OK);
    CHECK_EQ(c.nursery_size, dflt.nursery_size);
}

/* ---- tiny nursery: nearly every allocation collects ---------------------------- */

#define LIST_LEN 3000

static int tx_build_list(void *arg)
{
    nctx *nx = arg;
    stm_stats s0 = ts_stats();
    stm_push_root(NULL);
    void **top = stm_root_slot(stm_root_depth() - 1);
    for (long i = 0; i < LIST_LEN; i++) {
        /* a side object and a bit of garbage on every node */
        node *side = ts_new_node(-i, NULL, NULL);
        stm_push_root(side);
        ts_churn(2 * sizeof(node));
        side = stm_pop_root();
        *top = ts_new_node(i, *top, side);
    }
    node *head = stm_pop_root();
    stm_stats s1 = ts_stats();
    nx->collections = DELTA(s1, s0, minor_collections);
    /* Check everything: LIST_LEN nodes with side objects, in order. */
    long i = LIST_LEN - 1;
    for (node *p = head; p; p = RD(p)->left, i--) {
        node *r = RD(p);
        if (r->value != i || r->right == NULL || RD(r->right)->value != -i) {
            CHECK(false, "node %ld: value %ld, side %p", i, r->value, (void *)r->right);
            break;
        }
    }
    CHECK_EQ(i, -1);
    nx->n = head;
    return STM_DONE;
}

Test(nursery, tiny_nursery_long_list_in_one_transaction, .init = ts_setup_tiny,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_build_list, &nx);
    CHECK(nx.collections > 100, "only %lld minor collections", nx.collections);
}

static int tx_tree(void *arg)
{
    nctx *nx = arg;
    long counter = 0;
    node *t = ts_build_tree(11, &counter);
    CHECK_EQ(counter, 2047);
    stm_push_root(t);
    ts_churn(64 << 10);
    t = stm_pop_root();
    bool ok = true;
    long seen = 0;
    CHECK_EQ(ts_check_tree(t, 11, &seen, &ok), 2047);
    CHECK(ok, "the tree is intact");
    nx->n = t;
    return STM_DONE;
}

static int tx_check_tree(void *arg)
{
    (void)arg;
    bool ok = true;
    long seen = 0;
    ts_churn(32 << 10);
    node *t = *stm_root_slot(0);
    CHECK_EQ(ts_check_tree(t, 11, &seen, &ok), 2047);
    CHECK(ok, "the tree is intact in a later transaction");
    return STM_DONE;
}

Test(nursery, tiny_nursery_tree, .init = ts_setup_tiny, .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_tree, &nx);
    stm_push_root(nx.n);
    ts_run(tx_check_tree, &nx);
    stm_pop_root();
}

/* Many transactions, each appending to a list held by a protected holder
 * (an old object written in place every time, so the remembered set and
 * backups carry the young references), with arrays of mixed sizes. */
#define CHUNKS 200
#define PER_CHUNK 15

static int tx_append_chunk(void *arg)
{
    nctx *nx = arg;
    for (int k = 0; k < PER_CHUNK; k++) {
        long i = nx->v++;
        size_t n = (size_t)(i % 40);
        array *a = stm_allocate(ARRAY_SIZE(n), T_ARRAY);
        CHECK(a != NULL, "allocated");
        a = stm_write(a);
        a->n = (long)n;
        stm_push_root(a);
        for (size_t j = 0; j < n; j += 7) {
            node *leaf = ts_new_node(i * 1000 + (long)j, NULL, NULL);
            a = *stm_root_slot(stm_root_depth() - 1);
            a = stm_write(a);
            a->items[j] = leaf;
        }
        a = stm_pop_root();
        stm_push_root(a);
        node *holder = *stm_root_slot(0);
        node *cell = ts_new_node(i, RD(holder)->left, NULL);
        a = stm_pop_root();
        WR(cell)->right = (node *)a; /* (an array in a node field: traced the same way) */
        holder = *stm_root_slot(0);
        WR(holder)->left = cell;
        WR(holder)->value = i + 1;
    }
    return nx->v < CHUNKS * PER_CHUNK ? STM_CONTINUE : STM_DONE;
}

static int tx_make_holder(void *arg)
{
    nctx *nx = arg;
    nx->n = ts_new_node(0, NULL, NULL);
    return STM_DONE;
}

static int tx_check_appended(void *arg)
{
    nctx *nx = arg;
    node *holder = *stm_root_slot(0);
    CHECK_EQ(RD(holder)->value, CHUNKS * PER_CHUNK);
    long i = CHUNKS * PER_CHUNK - 1;
    for (node *p = RD(holder)->left; p; p = RD(p)->left, i--) {
        node *c = RD(p);
        array *a = (array *)c->right;
        CHECK_EQ(c->value, i);
        CHECK(a != NULL, "cell %ld has its array", i);
        a = stm_read(a);
        CHECK_EQ(a->n, i % 40);
        for (long j = 0; j < a->n; j++) {
            node *leaf = a->items[j];
            if (j % 7 == 0) {
                CHECK(leaf != NULL, "cell %ld item %ld", i, j);
                CHECK_EQ(RD(leaf)->value, i * 1000 + j);
            } else {
                CHECK(leaf == NULL, "cell %ld item %ld", i, j);
            }
        }
    }
    CHECK_EQ(i, -1);
    nx->attempts++;
    return STM_DONE;
}

Test(nursery, tiny_nursery_many_transactions_mixed_sizes, .init = ts_setup_tiny,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_run(tx_make_holder, &nx);
    stm_push_root(nx.n);
    stm_stats s0 = ts_stats();
    ts_run(tx_append_chunk, &nx);
    stm_stats s1 = ts_stats();
    CHECK_EQ(DELTA(s1, s0, commits), CHUNKS);
    CHECK(DELTA(s1, s0, minor_collections) > CHUNKS, "%lld collections",
          DELTA(s1, s0, minor_collections));
    ts_run(tx_check_appended, &nx);
    CHECK_EQ(nx.attempts, 1);
    stm_pop_root();
}

/* Tiny nursery, shared data: each transaction pushes onto a list held by a
 * public (prebuilt) object, so every commit is a shared one and the young
 * private copies live only through the map and then through stubs. */
static int tx_push_public(void *arg)
{
    nctx *nx = arg;
    long i = nx->v++;
    node *cell = ts_new_node(i, RD(&g_x)->left, NULL);
    stm_push_root(cell);
    ts_churn(3 * sizeof(node));
    cell = stm_pop_root();
    node *w = WR(&g_x);
    w->left = cell;
    w->value = i + 1;
    ts_churn(3 * sizeof(node));
    return nx->v < 500 ? STM_CONTINUE : STM_DONE;
}

static int tx_check_public_list(void *arg)
{
    nctx *nx = arg;
    CHECK_EQ(RD(&g_x)->value, 500);
    long i = 499;
    for (node *p = RD(&g_x)->left; p; p = RD(p)->left, i--)
        CHECK_EQ(RD(p)->value, i);
    CHECK_EQ(i, -1);
    nx->attempts++;
    return STM_DONE;
}

Test(nursery, tiny_nursery_list_under_a_public_object, .init = ts_setup_tiny,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 0);
    nctx nx = { 0 };
    ts_run(tx_push_public, &nx);
    ts_run(tx_check_public_list, &nx);
    CHECK_EQ(nx.attempts, 1);
}

/* Tiny nursery, two threads: A builds and publishes a list while B walks
 * it, stealing through stubs; then A keeps allocating (collecting) and B
 * walks it again. */
static int tx_a_build(void *arg)
{
    nctx *nx = arg;
    node *head = NULL;
    for (long i = 0; i < 400; i++) {
        head = ts_new_node(i, head, NULL);
        stm_push_root(head);
        ts_churn(sizeof(node));
        head = stm_pop_root();
    }
    nx->n = head;
    return STM_DONE;
}

static int tx_a_churn(void *arg)
{
    (void)arg;
    ts_churn(64 << 10);
    return STM_DONE;
}

static void a_builds(void *arg)
{
    nctx *nx = arg;
    ts_run(tx_a_build, nx);
    node *pub = stm_publish(nx->n);
    CHECK(pub != NULL, "published");
    shared_raw = pub;
    ls_set(1);
    ls_wait(2);
    ts_run(tx_a_churn, nx);
    ls_set(3);
    ls_wait(4);
}

static int tx_b_walk(void *arg)
{
    nctx *nx = arg;
    long i = 399;
    for (node *p = shared_raw; p; p = RD(p)->left, i--) {
        CHECK_EQ(RD(p)->value, i);
        ts_churn(sizeof(node));      /* B collects too */
    }
    CHECK_EQ(i, -1);
    nx->attempts++;
    return STM_DONE;
}

static int tx_b_peek(void *arg)
{
    nctx *nx = arg;
    CHECK_EQ(RD(shared_raw)->value, 399);
    nx->attempts++;
    return STM_DONE;
}

static void b_walks(void *arg)
{
    nctx *nx = arg;
    ls_wait(1);
    ts_run(tx_b_peek, nx);      /* steals nothing: the head is public */
    ls_set(2);
    ls_wait(3);                 /* A collected: its stubs were re-pointed */
    ts_run(tx_b_walk, nx);
    ls_set(4);
}

Test(nursery, tiny_nursery_two_threads_share_a_published_list, .init = ts_setup_tiny,
     .fini = ts_teardown)
{
    nctx nx = { 0 };
    two_threads(a_builds, b_walks, &nx);
    CHECK_EQ(nx.attempts, 2);
}

/* ---- detached threads ------------------------------------------------------------ */

/* A thread builds a list (part promoted, part still young), publishes its
 * head and detaches: its committed objects stay valid for other threads
 * (stm_thread_detach), which steal the young ones out of its nursery.  A
 * new thread then reuses its descriptor and nursery. */
static int tx_t1_build(void *arg)
{
    nctx *nx = arg;
    node *head = NULL;
    for (long i = 0; i < 200; i++) {
        head = ts_new_node(i, head, NULL);
        if (i == 99) {
            stm_push_root(head);
            stm_minor_collect();           /* the first 100 are old */
            head = stm_pop_root();
        }
    }
    nx->n = head;
    return STM_DONE;
}

static void t1_builds_and_leaves(void *arg)
{
    nctx *nx = arg;
    ts_run(tx_t1_build, nx);
    node *pub = stm_publish(nx->n);
    CHECK(pub != NULL, "published");
    shared_raw = pub;
}

static int tx_walk_200(void *arg)
{
    nctx *nx = arg;
    long i = 199;
    for (node *p = shared_raw; p; p = RD(p)->left, i--)
        CHECK_EQ(RD(p)->value, i);
    CHECK_EQ(i, -1);
    nx->attempts++;
    return STM_DONE;
}

static int tx_t2_churn(void *arg)
{
    nctx *nx = arg;
    stm_stats s0 = ts_stats();
    node *keep = ts_new_node(1, NULL, NULL);
    stm_push_root(keep);
    ts_churn(8 << 20);                     /* through the reused nursery */
    stm_pop_root();
    stm_stats s1 = ts_stats();
    nx->collections = DELTA(s1, s0, minor_collections);
    return STM_DONE;
}

static void t2_reuses(void *arg)
{
    nctx *nx = arg;
#ifdef STM_TESTING
    nx->v = stm_test_thread_index();
#endif
    ts_run(tx_t2_churn, nx);
}

Test(nursery, objects_of_a_detached_thread_stay_valid, .init = ts_setup, .fini = ts_teardown)
{
    nctx nx = { 0 };
    ts_join(ts_spawn(t1_builds_and_leaves, &nx));
    ts_run(tx_walk_200, &nx);              /* steals from the detached thread */
    ts_join(ts_spawn(t2_reuses, &nx));
#ifdef STM_TESTING
    CHECK_EQ(nx.v, 2);                     /* the descriptor was reused */
#endif
    CHECK(nx.collections >= 1, "the new thread collected its nursery");
    ts_run(tx_walk_200, &nx);
    CHECK_EQ(nx.attempts, 2);
}
