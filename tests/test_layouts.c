/* test_layouts.c -- stm_register_layout: what it accepts, and objects
 * sized and traced by their layout through minor and major collections,
 * with and without the callbacks (docs/DESIGN.md 13.8). */
#include "support/tx_macros.h"

static const size_t node_pointers[] = { offsetof(node, left), offsetof(node, right) };

static void fatal_handler_only(void)
{
    stm_set_fatal_handler(ts_fatal_handler);
}

/* The library with a 4 KiB nursery (nearly every allocation collects);
 * `callbacks` false: none at all, every type needs a layout (stm_init
 * accepts that; one callback without the other is refused, test_misuse). */
static void setup_with(bool callbacks, bool node_layout)
{
    stm_set_fatal_handler(ts_fatal_handler);
    stm_config cfg;
    ts_options o = { .nursery_size = 4096 };
    ts_config(&cfg, &o);
    if (!callbacks)
        cfg.object_size = NULL, cfg.trace = NULL;
    cr_assert_eq(stm_init(&cfg), STM_OK);
    if (node_layout)
        cr_assert_eq(stm_register_layout(T_NODE, sizeof(node), node_pointers, 2), STM_OK);
    cr_assert_eq(stm_thread_attach(), STM_OK);
}
static void setup_layout_only(void) { setup_with(false, true); }
static void setup_both(void) { setup_with(true, true); }
static void setup_nothing(void) { setup_with(false, false); }

/* ---- what stm_register_layout accepts ------------------------------------ */

Test(layouts, register_checks_its_arguments, .init = fatal_handler_only, .fini = ts_teardown)
{
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), node_pointers, 2), STM_ESTATE);
    stm_config cfg;
    ts_config(&cfg, NULL);
    CHECK_EQ(stm_init(&cfg), STM_OK);

    size_t in_header[] = { offsetof(stm_header, ident) };
    size_t unaligned[] = { offsetof(node, left) + 4 };
    size_t past_end[] = { sizeof(node) };
    size_t twice[] = { offsetof(node, left), offsetof(node, right), offsetof(node, left) };
    CHECK_EQ(stm_register_layout(STM_LAYOUT_MAX_TID + 1, sizeof(node), node_pointers, 2),
             STM_EINVAL);
    CHECK_EQ(stm_register_layout(STM_TID_WEAKREF, sizeof(node), node_pointers, 2), STM_EINVAL);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(stm_header) - 1, NULL, 0), STM_EINVAL);
    CHECK_EQ(stm_register_layout(T_NODE, STM_LAYOUT_MAX_SIZE + 16, NULL, 0), STM_EINVAL);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), in_header, 1), STM_EINVAL);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), unaligned, 1), STM_EINVAL);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), past_end, 1), STM_EINVAL);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), twice, 3), STM_EINVAL);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), NULL, 1), STM_EINVAL);

    /* The largest layout: every word after the header a pointer. */
    size_t all[STM_LAYOUT_MAX_SIZE / sizeof(void *)];
    size_t n = 0;
    for (size_t off = sizeof(stm_header); off < STM_LAYOUT_MAX_SIZE; off += sizeof(void *))
        all[n++] = off;
    CHECK_EQ(stm_register_layout(40, STM_LAYOUT_MAX_SIZE, all, n), STM_OK);
    CHECK_EQ(stm_register_layout(STM_LAYOUT_MAX_TID, sizeof(stm_header), NULL, 0), STM_OK);

    /* Once registered, a type's layout is fixed: the same again is fine. */
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), node_pointers, 2), STM_OK);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), node_pointers, 2), STM_OK);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node), node_pointers, 1), STM_ESTATE);
    CHECK_EQ(stm_register_layout(T_NODE, sizeof(node) + 16, node_pointers, 2), STM_ESTATE);

    CHECK_EQ(stm_thread_attach(), STM_OK);
    TX_BEGIN();
    CHECK_EQ(stm_register_layout(T_ARRAY + 1, sizeof(node), NULL, 0), STM_ESTATE);
    TX_COMMIT();
    CHECK_EQ(stm_register_layout(T_ARRAY + 1, sizeof(node), NULL, 0), STM_OK);
}

/* ---- objects described by their layout ----------------------------------- */

/* Builds a tree of 2^depth - 1 nodes (many minor collections on the way),
 * checks it after a major collection, then drops it and checks that a
 * major collection frees every node. */
static void tree_survives_and_dies(int depth)
{
    long nodes = (1L << depth) - 1;
    TX_BEGIN();
    long next = 0;
    node *root = ts_build_tree(depth, &next);
    CHECK_EQ(next, nodes);
    stm_push_root(root);
    stm_minor_collect();           /* every node old: counted when freed */
    TX_COMMIT();
    stm_stats before = ts_stats();
    CHECK(before.minor_collections > 10, "only %llu minor collections",
          (unsigned long long)before.minor_collections);

    CHECK_EQ(stm_major_collect(), STM_OK);
    TX_BEGIN();
    long expect = 0;
    bool ok = true;
    CHECK_EQ(ts_check_tree(stm_root_slot(0)[0], depth, &expect, &ok), nodes);
    CHECK(ok, "the tree is intact after the major collection");
    TX_COMMIT();

    (void)stm_pop_root();
    CHECK_EQ(stm_major_collect(), STM_OK);
    stm_stats after = ts_stats();
    CHECK(DELTA(after, before, objects_freed) >= nodes, "freed %lld of %ld dropped nodes",
          DELTA(after, before, objects_freed), nodes);
}

Test(layouts, objects_traced_by_their_layout_alone, .init = setup_layout_only,
     .fini = ts_teardown)
{
    tree_survives_and_dies(11);
}

Test(layouts, layout_and_callbacks_together, .init = setup_both, .fini = ts_teardown)
{
    tree_survives_and_dies(11);
}

/* Arrays (by the callbacks) of nodes (by their layout) that point back
 * at arrays: both ways of tracing in one heap, in both directions. */
Test(layouts, layout_types_and_callback_types_point_at_each_other, .init = setup_both,
     .fini = ts_teardown)
{
    enum { ITEMS = 200 };
    TX_BEGIN();
    array *a = stm_allocate(ARRAY_SIZE(ITEMS), T_ARRAY);
    a->n = ITEMS;
    stm_push_root(a);
    for (long i = 0; i < ITEMS; i++) {
        array *inner = stm_allocate(ARRAY_SIZE(1), T_ARRAY);
        inner->n = 1;
        stm_push_root(inner);
        node *leaf = ts_new_node(1000 + i, NULL, NULL);
        inner = stm_pop_root();
        ((array *)stm_write(inner))->items[0] = leaf;
        stm_push_root(inner);
        node *n = ts_new_node(i, NULL, NULL);
        inner = stm_pop_root();
        WR(n)->right = (node *)inner;
        a = stm_root_slot(0)[0];
        ((array *)stm_write(a))->items[i] = n;
    }
    TX_COMMIT();
    CHECK_EQ(stm_major_collect(), STM_OK);
    TX_BEGIN();
    a = stm_read(stm_root_slot(0)[0]);
    for (long i = 0; i < ITEMS; i++) {
        node *n = RD(a->items[i]);
        CHECK_EQ(n->value, i);
        const array *inner = stm_read(n->right);
        CHECK_EQ(inner->n, 1);
        CHECK_EQ(RD(inner->items[0])->value, 1000 + i);
    }
    TX_COMMIT();
    (void)stm_pop_root();
}

/* ---- misuse -------------------------------------------------------------- */

Test(layouts, a_type_without_layout_or_callbacks_is_fatal, .init = setup_nothing)
{
    TX_BEGIN();
    stm_push_root(ts_new_node(1, NULL, NULL));
    EXPECT_FATAL("no layout (stm_register_layout)", stm_minor_collect());
}

#if defined(STM_DEBUG) && STM_DEBUG > 0
static void setup_wrong_layout(void)
{
    setup_with(true, false);
    /* The trace callback visits left and right; this says only left. */
    cr_assert_eq(stm_register_layout(T_NODE, sizeof(node), node_pointers, 1), STM_OK);
}

Test(layouts, a_layout_the_callbacks_contradict_is_fatal_in_debug_builds,
     .init = setup_wrong_layout)
{
    TX_BEGIN();
    stm_push_root(ts_new_node(1, NULL, NULL));
    EXPECT_FATAL("stm_register_layout names pointer words", stm_minor_collect());
}
#endif
