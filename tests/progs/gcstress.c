/* gcstress.c -- stress program for the collector: threads allocate, share
 * and drop objects while major collections run, and nothing reachable may
 * be lost.
 *
 * The main thread publishes NSLOTS slot objects (shared through a global
 * root).  Each slot heads a linked list of nodes and holds its length.
 * Worker transactions push a node on a random slot (a quarter of them with
 * a finalizer), pop one, record or check a node's stm_id, or make and
 * follow weak references to random nodes.  Each committed push or pop is
 * also counted by the program itself, outside the heap.  Major collections
 * run on heap growth (a low threshold) and on request every --major-every
 * transactions.
 *
 * Checked at the end (and the program exits 1 otherwise):
 *   - walking every list finds exactly the nodes the program counted, each
 *     intact (its magic word derives from its serial number);
 *   - every node whose id was recorded still has that stm_id;
 *   - no reachable node was finalized, and every weak reference either
 *     was cleared or leads to an intact node;
 *   - identity, weak and magic checks made inside transactions never
 *     failed.
 *
 *   gcstress [--threads N] [--transactions N] [--nursery BYTES]
 *            [--major-every K] [--seed S] */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stm.h>

enum { T_NODE = 1, T_FNODE = 2, T_SLOT = 3, T_ARRAY = 4 };
#define NSLOTS 64
#define NWEAK 32
#define MAX_THREADS 8
#define SERIAL_BITS 22                 /* per-thread serial numbers */

typedef struct node {
    stm_header hdr;
    struct node *next;
    long serial;
    long magic;
    uintptr_t id;                      /* stm_id once recorded, else 0 */
} node;

typedef struct slot {
    stm_header hdr;
    long count;
    node *head;
} slot;

/* The shared root: the slots and a table of weak references. */
typedef struct array {
    stm_header hdr;
    slot *slots[NSLOTS];
    void *weak[NWEAK];
} array;

static long magic_of(long serial) { return serial * 2654435761L ^ 0x5a5a5a5aL; }

static size_t obj_size(const void *obj)
{
    switch (stm_get_tid(obj)) {
    case T_NODE:
    case T_FNODE:
        return sizeof(node);
    case T_SLOT:
        return sizeof(slot);
    case T_ARRAY:
        return sizeof(array);
    }
    fprintf(stderr, "gcstress: object %p has unknown type id %u\n", obj, stm_get_tid(obj));
    abort();
}

static void obj_trace(void *obj, stm_visit_fn *visit, void *ctx)
{
    switch (stm_get_tid(obj)) {
    case T_NODE:
    case T_FNODE:
        visit((void **)&((node *)obj)->next, ctx);
        break;
    case T_SLOT:
        visit((void **)&((slot *)obj)->head, ctx);
        break;
    case T_ARRAY: {
        array *a = obj;
        for (int i = 0; i < NSLOTS; i++)
            visit((void **)&a->slots[i], ctx);
        for (int i = 0; i < NWEAK; i++)
            visit(&a->weak[i], ctx);
        break;
    }
    }
}

/* ---- finalizers: which serial numbers died ---------------------------- */

static _Atomic uint8_t finalized[MAX_THREADS << SERIAL_BITS];
static atomic_long finalized_count, finalized_corrupt;

static void node_finalizer(void *obj)
{
    node *n = obj;
    if (n->magic != magic_of(n->serial) || n->serial < 0 ||
        n->serial >= (long)MAX_THREADS << SERIAL_BITS) {
        atomic_fetch_add(&finalized_corrupt, 1);
        return;
    }
    atomic_store(&finalized[n->serial], 1);
    atomic_fetch_add(&finalized_count, 1);
}

/* ---- workers ------------------------------------------------------------- */

static array *shared;                  /* global root */
static long opt_threads = 2, opt_tx = 1000000, opt_major_every = 20000;
static size_t opt_nursery = 64 << 10;
static unsigned long opt_seed = 42;
static atomic_long violations;

typedef struct worker {
    int index;
    uint64_t rng;
    long next_serial;
    long delta;                        /* of the attempt that committed */
    long committed_delta;
    long ids_checked, weak_followed;
} worker;

static uint64_t rnd(worker *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static void violation(const char *what, long serial)
{
    if (atomic_fetch_add(&violations, 1) < 10)
        fprintf(stderr, "gcstress: VIOLATION: %s (serial %ld)\n", what, serial);
}

static node *check_node(const void *p)
{
    node *n = stm_read(p);
    if (n->magic != magic_of(n->serial))
        violation("node corrupt", n->serial);
    return n;
}

/* The node `depth` steps down slot s's list, or NULL. */
static node *node_at(slot *s, unsigned depth)
{
    node *p = s->head;
    while (p && depth--)
        p = check_node(p)->next;
    return p;
}

static int tx_op(void *arg)
{
    worker *w = arg;
    w->delta = 0;
    uint64_t r = rnd(w);
    unsigned op = (unsigned)(r % 100);
    unsigned si = (unsigned)((r >> 8) % NSLOTS);
    const array *a = stm_read(shared);
    slot *sp = a->slots[si];
    if (op < 50) {                                  /* push */
        stm_push_root(sp);
        uint32_t tid = (r >> 20) % 4 == 0 ? T_FNODE : T_NODE;
        node *n = tid == T_FNODE ? stm_allocate_finalizable(sizeof(node), tid)
                                 : stm_allocate(sizeof(node), tid);
        sp = stm_pop_root();
        long serial = ((long)w->index << SERIAL_BITS) | (w->next_serial++ & ((1L << SERIAL_BITS) - 1));
        n->serial = serial;
        n->magic = magic_of(serial);
        slot *s = stm_write(sp);
        n->next = s->head;
        s->head = n;
        s->count++;
        w->delta = 1;
    } else if (op < 80) {                           /* pop: drop the head */
        const slot *s = stm_read(sp);
        if (s->head) {
            node *h = check_node(s->head);
            slot *ws = stm_write(sp);
            ws->head = h->next;
            ws->count--;
            w->delta = -1;
        }
    } else if (op < 90) {                           /* identity */
        node *p = node_at(stm_read(sp), (unsigned)((r >> 16) % 6));
        if (p) {
            node *n = check_node(p);
            if (!n->id) {
                uintptr_t id = stm_id(p);
                ((node *)stm_write(p))->id = id;
            } else {
                if (stm_id(p) != n->id)
                    violation("stm_id changed", n->serial);
                w->ids_checked++;
            }
        }
    } else if (op < 95) {                           /* make a weak reference */
        node *p = node_at(stm_read(sp), (unsigned)((r >> 16) % 4));
        if (p) {
            void *wr = stm_weakref_new(p);
            array *wa = stm_write(shared);
            wa->weak[(r >> 24) % NWEAK] = wr;
        }
    } else {                                        /* follow one */
        void *wr = ((const array *)stm_read(shared))->weak[(r >> 24) % NWEAK];
        if (wr) {
            void *target = stm_weakref_get(wr);
            if (target) {
                check_node(target);
                w->weak_followed++;
            }
        }
    }
    return STM_DONE;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    if (stm_thread_attach() != STM_OK) {
        fprintf(stderr, "gcstress: attach failed\n");
        exit(2);
    }
    long n = opt_tx / opt_threads;
    for (long i = 0; i < n; i++) {
        int rc = stm_run(tx_op, w);
        if (rc != STM_OK) {
            fprintf(stderr, "gcstress: stm_run returned %d\n", rc);
            exit(2);
        }
        w->committed_delta += w->delta;
        if (opt_major_every && w->index == 0 && i % opt_major_every == opt_major_every - 1)
            stm_major_collect();
    }
    stm_thread_detach();
    return NULL;
}

/* ---- set-up and the final check -------------------------------------------- */

/* In an inevitable transaction, so that the root it leaves on the shadow
 * stack outlives it. */
static void setup(void)
{
    stm_begin_inevitable();
    array *a = stm_allocate(sizeof(array), T_ARRAY);
    stm_push_root(a);
    for (int i = 0; i < NSLOTS; i++) {
        slot *s = stm_allocate(sizeof(slot), T_SLOT);
        a = stm_write(*stm_root_slot(stm_root_depth() - 1));
        a->slots[i] = s;
    }
    stm_commit();
}

static long walked, expected_total;

static int tx_check(void *arg)
{
    (void)arg;
    walked = 0;
    long counted = 0;
    const array *a = stm_read(shared);
    for (int i = 0; i < NSLOTS; i++) {
        const slot *s = stm_read(a->slots[i]);
        long len = 0;
        for (node *p = s->head; p; p = ((node *)stm_read(p))->next) {
            node *n = check_node(p);
            if (n->id && stm_id(p) != n->id)
                violation("stm_id changed (final check)", n->serial);
            if (stm_get_tid(n) == T_FNODE && atomic_load(&finalized[n->serial]))
                violation("a reachable node was finalized", n->serial);
            len++;
        }
        if (len != s->count)
            violation("slot length differs from its count", i);
        walked += len;
        counted += s->count;
    }
    if (counted != expected_total)
        violation("slot counts differ from the program's count", counted);
    for (int i = 0; i < NWEAK; i++)
        if (a->weak[i]) {
            void *t = stm_weakref_get(a->weak[i]);
            if (t)
                check_node(t);
        }
    return STM_DONE;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "gcstress: %s needs a value\n", o);
            return 2;
        }
        if (!strcmp(o, "--threads"))
            opt_threads = strtol(v, NULL, 10);
        else if (!strcmp(o, "--transactions"))
            opt_tx = strtol(v, NULL, 10);
        else if (!strcmp(o, "--nursery"))
            opt_nursery = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--major-every"))
            opt_major_every = strtol(v, NULL, 10);
        else if (!strcmp(o, "--seed"))
            opt_seed = strtoul(v, NULL, 10);
        else {
            fprintf(stderr, "usage: gcstress [--threads N] [--transactions N] [--nursery BYTES] "
                            "[--major-every K] [--seed S]\n");
            return 2;
        }
        i++;
    }
    if (opt_threads < 1 || opt_threads > MAX_THREADS || opt_tx < opt_threads ||
        opt_tx / opt_threads >= (1L << SERIAL_BITS) * 2) {
        fprintf(stderr, "gcstress: bad --threads or --transactions\n");
        return 2;
    }
    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = obj_size;
    cfg.trace = obj_trace;
    cfg.nursery_size = opt_nursery;
    cfg.major_min_heap = 1 << 20;      /* major collections from 1 MiB on */
    cfg.major_growth_percent = 50;
    /* Nodes and slots by layout, the array by the callbacks: both ways of
     * tracing under stealing and major collections (and debug builds
     * compare each layout with the callbacks at every use). */
    static const size_t node_ptrs[] = { offsetof(node, next) };
    static const size_t slot_ptrs[] = { offsetof(slot, head) };
    if (stm_init(&cfg) != STM_OK ||
        stm_register_layout(T_NODE, sizeof(node), node_ptrs, 1) != STM_OK ||
        stm_register_layout(T_FNODE, sizeof(node), node_ptrs, 1) != STM_OK ||
        stm_register_layout(T_SLOT, sizeof(slot), slot_ptrs, 1) != STM_OK ||
        stm_thread_attach() != STM_OK ||
        stm_register_finalizer(T_FNODE, node_finalizer) != STM_OK) {
        fprintf(stderr, "gcstress: initialisation failed\n");
        return 2;
    }
    setup();
    shared = stm_publish(stm_pop_root());
    if (!shared || stm_register_global_root((void **)&shared) != STM_OK) {
        fprintf(stderr, "gcstress: publishing the root failed\n");
        return 2;
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th[MAX_THREADS];
    worker ws[MAX_THREADS];
    for (long i = 0; i < opt_threads; i++) {
        ws[i] = (worker){ .index = (int)i, .rng = opt_seed * 0x9e3779b97f4a7c15ull + (uint64_t)i + 1 };
        pthread_create(&th[i], NULL, worker_main, &ws[i]);
    }
    for (long i = 0; i < opt_threads; i++) {
        pthread_join(th[i], NULL);
        expected_total += ws[i].committed_delta;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    stm_major_collect();               /* once more with everyone gone */
    stm_run(tx_check, NULL);

    stm_stats st = { .size = sizeof st };
    stm_gc_stats gs = { .size = sizeof gs };
    stm_get_stats(&st);
    stm_get_gc_stats(&gs);
    long ids = 0, weak = 0;
    for (long i = 0; i < opt_threads; i++) {
        ids += ws[i].ids_checked;
        weak += ws[i].weak_followed;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("gcstress: %ld threads, %ld transactions in %.2f s, %" PRIu64 " aborts\n",
           opt_threads, opt_tx, secs, st.aborts);
    for (int r = 0; r < STM_ABORT_REASON_COUNT; r++)
        if (st.aborts_by_reason[r])
            printf("    %-20s %" PRIu64 "\n", stm_abort_reason_name((stm_abort_reason)r),
                   st.aborts_by_reason[r]);
    printf("  collections:    %" PRIu64 " minor, %" PRIu64 " major (%" PRIu64 " compacting), "
           "major pause p50 %.2f ms, max %.2f ms\n",
           gs.minor_collections, gs.major_collections, st.major_compacting,
           gs.major_pause_p50_ns / 1e6, gs.major_pause_max_ns / 1e6);
    printf("  freed:          %" PRIu64 " objects, %" PRIu64 " copies compacted, "
           "%" PRIu64 " weak refs cleared, %ld finalized\n",
           st.objects_freed, st.copies_compacted, st.weakrefs_cleared,
           atomic_load(&finalized_count));
    printf("  heap:           peak %.1f MiB, live after last major %.1f MiB\n",
           gs.heap_peak / 1048576.0, gs.live_after_major / 1048576.0);
    printf("  checked:        %ld nodes reachable (program counted %ld), %ld ids, "
           "%ld weak refs followed\n", walked, expected_total, ids, weak);
    long bad = atomic_load(&violations) + atomic_load(&finalized_corrupt);
    if (walked != expected_total)
        bad++;
    if (gs.major_collections == 0) {
        fprintf(stderr, "gcstress: no major collection ran\n");
        bad++;
    }
    printf("  violations:     %ld\n", bad);
    puts(bad ? "gcstress: FAILED" : "gcstress: OK");
    return bad ? 1 : 0;
}
