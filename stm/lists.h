/* lists.h -- the two containers the library uses: a growable vector of
 * words and an open-addressing map from addresses to words.  Both are
 * owned by one thread, or used under that thread's collection lock.
 * Growth is overflow-checked and reports failure instead of aborting. */
#ifndef STM_LISTS_H
#define STM_LISTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stm/fail.h"

typedef struct stm_vec {
    uintptr_t *items;
    size_t count;
    size_t capacity;
} stm_vec;

bool stm_vec_grow_(stm_vec *v, size_t need) __attribute__((visibility("hidden")));
/* Sorts words (addresses) in increasing order. */
void stm_sort_words(uintptr_t *items, size_t n) __attribute__((visibility("hidden")));

static inline bool stm_vec_push(stm_vec *v, uintptr_t x)
{
    if (__builtin_expect(v->count == v->capacity, 0) && !stm_vec_grow_(v, v->count + 1))
        return false;
    v->items[v->count++] = x;
    return true;
}
static inline bool stm_vec_reserve(stm_vec *v, size_t extra)
{
    size_t need;
    if (__builtin_add_overflow(v->count, extra, &need))
        return false;
    return need <= v->capacity || stm_vec_grow_(v, need);
}
static inline void stm_vec_push_reserved(stm_vec *v, uintptr_t x)
{
    v->items[v->count++] = x;
}
static inline void stm_vec_clear(stm_vec *v) { v->count = 0; }
static inline void stm_vec_free(stm_vec *v)
{
    free(v->items);
    v->items = NULL;
    v->count = v->capacity = 0;
}

/* Map from non-zero keys (object addresses) to values.  Linear probing,
 * power-of-two capacity, tombstone-free: entries are never removed one by
 * one, the map is cleared as a whole. */
typedef struct stm_map_entry { uintptr_t key, value; } stm_map_entry;
typedef struct stm_map {
    stm_map_entry *entries;
    size_t count;
    size_t mask;            /* capacity - 1, or 0 when unallocated */
} stm_map;

bool stm_map_grow_(stm_map *m) __attribute__((visibility("hidden")));

static inline size_t stm_map_hash_(uintptr_t key)
{
    key ^= key >> 29;
    key *= 0xbf58476d1ce4e5b9ull;
    return (size_t)(key ^ (key >> 32));
}
static inline stm_map_entry *stm_map_find(const stm_map *m, uintptr_t key)
{
    if (m->count == 0)
        return NULL;
    for (size_t i = stm_map_hash_(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->entries[i].key == key)
            return &m->entries[i];
        if (m->entries[i].key == 0)
            return NULL;
    }
}
/* Inserts or overwrites; false when memory is exhausted. */
static inline bool stm_map_put(stm_map *m, uintptr_t key, uintptr_t value)
{
    if ((m->count + 1) * 4 > (m->mask + 1) * 3 && !stm_map_grow_(m))
        return false;
    for (size_t i = stm_map_hash_(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->entries[i].key == key) {
            m->entries[i].value = value;
            return true;
        }
        if (m->entries[i].key == 0) {
            m->entries[i].key = key;
            m->entries[i].value = value;
            m->count++;
            return true;
        }
    }
}
static inline void stm_map_clear(stm_map *m)
{
    if (m->mask >= 256 && m->count * 8 < m->mask + 1) {
        /* Grown by an earlier big transaction and now mostly empty: give
         * it back rather than clear (and walk) the whole capacity at every
         * commit.  A map that is well used is cleared in proportion. */
        free(m->entries);
        m->entries = NULL;
        m->count = m->mask = 0;
    } else if (m->count) {
        memset(m->entries, 0, (m->mask + 1) * sizeof(stm_map_entry));
        m->count = 0;
    }
}
static inline void stm_map_free(stm_map *m)
{
    free(m->entries);
    m->entries = NULL;
    m->count = m->mask = 0;
}
#define STM_MAP_FOREACH(m, e) \
    for (stm_map_entry *e = (m)->entries; (m)->count && e <= (m)->entries + (m)->mask; e++) \
        if (e->key != 0)

#endif
