/* rt.h -- the model-based random tester (docs/TESTING.md, "Random tester").
 *
 * Two worker threads run operations one at a time, in an order the driver
 * picks (a seeded PRNG, or the bytes of a fuzzer input), so every run is a
 * deterministic interleaving.  After each operation the driver compares
 * what the worker saw with a reference model of the committed state and of
 * each transaction's view, and the model says whether the operation must
 * abort, may abort, or must not abort; the workers arm the library's abort
 * budget accordingly, so an unexpected abort is a fatal error at the spot.
 *
 * Needs a testing build (STM_TESTING: debug, asan, tsan variants). */
#ifndef RT_H
#define RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the driver's choices come from. */
typedef struct rt_source {
    uint64_t rng;              /* PRNG state (when data == NULL) */
    const uint8_t *data;       /* fuzzer input, consumed byte by byte */
    size_t size, pos;
} rt_source;

typedef struct rt_options {
    long ops;                  /* operations per run (PRNG source) */
    bool verbose;              /* print every operation */
    bool abort_on_failure;     /* abort() instead of exit(1) (for the fuzzer) */
} rt_options;

/* Totals over all runs, printed by the drivers. */
typedef struct rt_totals {
    long runs, ops, commits, commits_shared, aborts, aborts_required, aborts_optional,
        inevitable, minor_collections, major_collections, verifies;
} rt_totals;

/* Once per process: stm_init with a tiny nursery, the prebuilt root object. */
void rt_init(size_t nursery_size);
/* One run: fresh worker threads, a reset root, then operations until
 * opt->ops are done or the source is exhausted.  On a model mismatch it
 * prints the seed (`label`), the last operations and the difference, and
 * exits (or aborts). */
void rt_run(rt_source *src, const rt_options *opt, const char *label, rt_totals *tot);

#endif
