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

/* The read set is deduplicated by sorting it (barrier.c, record_read) and
 * commits sort their write set into lock order: an introsort on words,
 * with the comparison inline.  glibc's qsort calls a comparison function
 * per step and merge-sorts through a malloc'd buffer: GCBench's final
 * walks, which read the long-lived tree's public nodes, spent 43.6
 * million instructions in it; this takes 16.6 million (callgrind, 1 MiB
 * nursery). */
#define SORT_SMALL 16

static inline void swap_words(uintptr_t *a, uintptr_t *b)
{
    uintptr_t t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(uintptr_t *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uintptr_t x = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1] > x; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

static void sift_down(uintptr_t *a, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && a[child + 1] > a[child])
            child++;
        if (a[root] >= a[child])
            return;
        swap_words(&a[root], &a[child]);
        root = child;
    }
}

/* The fallback that bounds the worst case at O(n log n). */
static void heap_sort(uintptr_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n);
    for (size_t end = n; end-- > 1;) {
        swap_words(&a[0], &a[end]);
        sift_down(a, 0, end);
    }
}

static void introsort(uintptr_t *a, size_t n, unsigned depth)
{
    while (n > SORT_SMALL) {
        if (depth-- == 0) {
            heap_sort(a, n);
            return;
        }
        /* Median of three, which also leaves a sentinel at each end: the
         * scans below cannot run off the range. */
        size_t mid = n / 2;
        if (a[mid] < a[0])
            swap_words(&a[mid], &a[0]);
        if (a[n - 1] < a[0])
            swap_words(&a[n - 1], &a[0]);
        if (a[n - 1] < a[mid])
            swap_words(&a[n - 1], &a[mid]);
        uintptr_t pivot = a[mid];
        /* Hoare partition: afterwards [0, j] <= pivot <= [j + 1, n),
         * both parts non-empty. */
        size_t i = 0, j = n - 1;
        for (;;) {
            do
                i++;
            while (a[i] < pivot);
            do
                j--;
            while (a[j] > pivot);
            if (i >= j)
                break;
            swap_words(&a[i], &a[j]);
        }
        /* Recurse into the smaller part, loop on the larger: the stack
         * stays logarithmic. */
        size_t left = j + 1;
        if (left < n - left) {
            introsort(a, left, depth);
            a += left;
            n -= left;
        } else {
            introsort(a + left, n - left, depth);
            n = left;
        }
    }
    insertion_sort(a, n);
}

void stm_sort_words(uintptr_t *items, size_t n)
{
    unsigned depth = 0;
    for (size_t m = n; m > 1; m >>= 1)
        depth += 2;
    introsort(items, n, depth);
}
