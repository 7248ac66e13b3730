/* fail.h -- every internal allocation of the library goes through
 * stm_sys_alloc/stm_sys_map so that testing builds can make the Nth one
 * fail (failure injection) and so that failures are handled in one way. */
#ifndef STM_FAIL_H
#define STM_FAIL_H

#include <stddef.h>

#define STM_HIDDEN __attribute__((visibility("hidden")))

STM_HIDDEN void *stm_sys_alloc(size_t size);          /* malloc; NULL on failure */
STM_HIDDEN void *stm_sys_realloc(void *p, size_t size);
STM_HIDDEN void *stm_sys_calloc(size_t n, size_t size);
/* mmap of `size` bytes aligned to `align` (a power of two); NULL on failure. */
STM_HIDDEN void *stm_sys_map(size_t size, size_t align);
STM_HIDDEN void stm_sys_unmap(void *p, size_t size);
/* Gives the pages back to the system; they read as zero afterwards. */
STM_HIDDEN void stm_sys_discard(void *p, size_t size);

#endif
