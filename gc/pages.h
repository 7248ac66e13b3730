/* pages.h -- old-object pages and the address -> owner table. */
#ifndef GC_PAGES_H
#define GC_PAGES_H

#include "stm/core.h"

/* All GC memory (nurseries, old pages, large objects) is mapped in chunks
 * of GC_CHUNK bytes aligned to GC_CHUNK, each recorded with its owner. */
#define GC_CHUNK_SHIFT 20
#define GC_CHUNK ((size_t)1 << GC_CHUNK_SHIFT)
#define GC_PAGE_SMALL ((size_t)16 << 10)
#define GC_PAGE_MEDIUM ((size_t)64 << 10)

/* Maps `size` bytes (rounded up to whole chunks) owned by thread `owner`. */
STM_HIDDEN void *gc_map_chunks(size_t size, unsigned owner);

/* Held across fork() by stm/lifecycle.c. */
STM_HIDDEN void gc_fork_lock(void);
STM_HIDDEN void gc_fork_unlock(void);

#endif
