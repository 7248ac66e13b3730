/* fail.c -- system allocation wrappers and (in testing builds) failure
 * injection: stm_test_fail_allocations(n) makes the allocation after the
 * next n succeed-ones fail, so that every failure path can be driven. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "stm/core.h"

#ifdef STM_TESTING
static long fail_countdown = -1;   /* <0: never fail; guarded by the caller's test */

STM_API void stm_test_fail_allocations(long n) { __atomic_store_n(&fail_countdown, n, __ATOMIC_RELAXED); }
static bool injected_failure(void)
{
    long n = __atomic_load_n(&fail_countdown, __ATOMIC_RELAXED);
    if (n < 0)
        return false;
    if (n == 0)
        return true;
    __atomic_store_n(&fail_countdown, n - 1, __ATOMIC_RELAXED);
    return false;
}
#else
static inline bool injected_failure(void) { return false; }
#endif

void *stm_sys_alloc(size_t size)
{
    return injected_failure() ? NULL : malloc(size);
}
void *stm_sys_realloc(void *p, size_t size)
{
    return injected_failure() ? NULL : realloc(p, size);
}
void *stm_sys_calloc(size_t n, size_t size)
{
    return injected_failure() ? NULL : calloc(n, size);
}

void *stm_sys_map(size_t size, size_t align)
{
    if (injected_failure())
        return NULL;
    size_t total;
    if (__builtin_add_overflow(size, align, &total))
        return NULL;
    char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* Trim to the requested alignment: unmap the slack on both sides. */
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)p;
    if (head)
        munmap(p, head);
    size_t tail = total - head - size;
    if (tail)
        munmap((char *)start + size, tail);
    return (void *)start;
}

void stm_sys_unmap(void *p, size_t size)
{
    munmap(p, size);
}

void stm_sys_discard(void *p, size_t size)
{
    /* The pages read back as zero and their memory returns to the
     * system; failure only means the memory stays resident. */
    (void)madvise(p, size, MADV_DONTNEED);
}
