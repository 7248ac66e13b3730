/* fuzz_random.c -- libFuzzer harness for the model-based random tester:
 * the input bytes choose the operations (thread, operation, arguments;
 * see pick() in rt.c) instead of the seeded PRNG, and every model check
 * stays on.  A mismatch aborts, which libFuzzer reports with the input.
 *
 * Built only by "scons stress" when clang's fuzzer runtime is present:
 *   build/<v>/tests/model/fuzz_random -max_total_time=60 [corpus dir]
 * Each input starts from a fresh pair of worker threads and a reset root;
 * the library is initialised once per process. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool initialised;
    static rt_totals totals;
    if (!initialised) {
        rt_init(1024);
        initialised = true;
    }
    /* About three bytes per operation: keep runs short, so that the
     * fuzzer explores many interleavings rather than a few long ones. */
    if (size < 2 || size > 2048)
        return 0;
    rt_source src = { .data = data, .size = size };
    rt_options opt = { .abort_on_failure = true };
    rt_run(&src, &opt, "fuzz input (libFuzzer saves it as crash-*)", &totals);
    return 0;
}
