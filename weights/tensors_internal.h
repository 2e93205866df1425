/* weights/tensors_internal.h: building a wd_tensors store (private to weights/).
 *
 * Other modules use weights/weights.h only. Loaders inside weights/ (safetensors,
 * GGUF) build a store with these functions:
 *
 *   wd_tensors *ts = wd_tensors_new();
 *   wd_tensors_keep_mapping(ts, base, len);       // munmap'd by wd_tensors_free
 *   wd_tensors_add(ts, "model.norm.weight", WD_DT_F32, 1, shape, ptr, nbytes);
 *   if (wd_tensors_index(ts, &dup)) ... duplicate name dup ...
 *
 * Names are copied. Lookup (wd_tensors_find) uses an open-addressing hash
 * table built by wd_tensors_index; call it after the last add. */
#ifndef WD_TENSORS_INTERNAL_H
#define WD_TENSORS_INTERNAL_H

#include "weights/weights.h"

wd_tensors *wd_tensors_new(void); /* NULL on allocation failure */
/* Returns 0, or -1 on allocation failure. */
int wd_tensors_add(wd_tensors *ts, const char *name, wd_dtype dt, int ndim,
                   const int64_t *shape, const void *data, size_t nbytes);
/* The store unmaps [base, base+len) when freed. Returns 0, or -1 (allocation
 * failure: the mapping is NOT taken over; the caller still owns it). */
int wd_tensors_keep_mapping(wd_tensors *ts, void *base, size_t len);
/* The store free()s p when freed (buffers of converted tensors). Same return rule. */
int wd_tensors_keep_buffer(wd_tensors *ts, void *p);
/* Builds the name index. Returns 0; 1 when two tensors share a name (*dup
 * then points at the second one's index); -1 on allocation failure. */
int wd_tensors_index(wd_tensors *ts, int *dup);

#endif
