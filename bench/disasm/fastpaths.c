/* fastpaths.c -- one function per inline barrier, compiled only to show the
 * generated code (bench/show_fastpaths.sh disassembles it).  Each function
 * applies one barrier and loads one field, so the barrier's instructions are
 * exactly those between the entry and the field load. */
#include "stm.h"

struct obj { stm_header hdr; long value; };

long read_field(struct obj *p)
{
    struct obj *r = stm_read(p);
    return r->value;
}

void write_field(struct obj *p, long v)
{
    struct obj *w = stm_write(p);
    w->value = v;
}

void *allocate_obj(void)
{
    return stm_allocate(sizeof(struct obj), 7);
}
