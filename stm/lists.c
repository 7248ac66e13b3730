/* lists.c -- growth of the containers in lists.h (the cold paths). */
#include "stm/lists.h"

bool stm_vec_grow_(stm_vec *v, size_t need)
{
    size_t cap = v->capacity ? v->capacity : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(uintptr_t))
            return false;
        cap *= 2;
    }
    uintptr_t *items = stm_sys_realloc(v->items, cap * sizeof(uintptr_t));
    if (!items)
        return false;
    v->items = items;
    v->capacity = cap;
    return true;
}

bool stm_map_grow_(stm_map *m)
{
    size_t old_cap = m->entries ? m->mask + 1 : 0;
    size_t cap = old_cap ? old_cap * 2 : 64;
    if (cap > SIZE_MAX / sizeof(stm_map_entry))
        return false;
    stm_map_entry *fresh = stm_sys_calloc(cap, sizeof(stm_map_entry));
    if (!fresh)
        return false;
    stm_map_entry *old = m->entries;
    m->entries = fresh;
    m->mask = cap - 1;
    m->count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            stm_map_put(m, old[i].key, old[i].value);   /* cannot grow again */
    free(old);
    return true;
}

static int cmp_words(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

void stm_sort_words(uintptr_t *items, size_t n)
{
    if (n > 1)
        qsort(items, n, sizeof *items, cmp_words);
}
