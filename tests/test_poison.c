/* test_poison.c -- in ASan builds the part of a nursery that a minor
 * collection moved objects out of is poisoned (gc/nursery.c), so that a
 * stale pointer into it faults at once.  The test keeps a raw pointer to
 * a young object across a collection and reads through it: AddressSanitizer
 * must stop the process (exit status 1, its default).  Other builds zero
 * the old nursery instead, which the other suites cover. */
#include "support/tx_macros.h"

#include <fcntl.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define TS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TS_ASAN 1
#endif
#endif

#ifdef TS_ASAN
static int tx_stale_read(void *arg)
{
    (void)arg;
    node *n = ts_new_node(1234, NULL, NULL);
    stm_push_root(n);
    node *stale = n;                 /* not updated by the collection */
    stm_minor_collect();
    n = stm_pop_root();
    CHECK(n != stale, "the rooted node moved out of the nursery");
    CHECK_EQ(RD(n)->value, 1234);
    /* A use-after-move: must fault here (its report is expected: keep it
     * out of the test log). */
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0)
        dup2(devnull, 2);
    volatile long v = stale->value;
    (void)v;
    return STM_DONE;
}

Test(poison, stale_pointer_into_the_collected_nursery_faults, .init = ts_setup,
     .fini = ts_teardown, .exit_code = 1)
{
    ts_run(tx_stale_read, NULL);
}
#endif
