/* mltap producer SDK: C ABI. Stable across SDK versions of the same MLTAP_C_ABI_VERSION; structs
 * carry their own size so they can grow. No function throws or aborts; writes never block.
 * libmltap.so exports exactly these functions (and the C++ API of stream.hpp), versioned
 * MLTAP_1.0. */
#ifndef MLTAP_H
#define MLTAP_H

#include <stddef.h>
#include <stdint.h>

#include "mltap/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MLTAP_C_ABI_VERSION 1

typedef struct mltap_stream mltap_stream;

typedef enum mltap_dtype {
  MLTAP_FLOAT32 = 1,
  MLTAP_FLOAT64 = 2,
  MLTAP_INT32 = 3,
  MLTAP_INT64 = 4,
  MLTAP_UINT8 = 5,
  MLTAP_BOOL = 6,
  MLTAP_FLOAT16 = 7,
  MLTAP_BFLOAT16 = 8,
  MLTAP_INT8 = 9,
  MLTAP_INT16 = 10,
  MLTAP_UINT16 = 11,
  MLTAP_UINT32 = 12,
  MLTAP_UINT64 = 13
} mltap_dtype;

typedef enum mltap_kind {
  MLTAP_KIND_FEATURES = 1,
  MLTAP_KIND_PREDICTIONS = 2,
  MLTAP_KIND_LABELS = 3,
  MLTAP_KIND_EMBEDDINGS = 4,
  MLTAP_KIND_RAW = 5
} mltap_kind;

/* Results of mltap_write (>= 0) and errors (< 0). */
enum {
  MLTAP_WRITTEN = 0,
  MLTAP_SAMPLED_OUT = 1,
  MLTAP_DROPPED = 2,
  MLTAP_ERR_INVALID = -1,  /* bad argument (e.g. duplicate feature names); errbuf says which */
  MLTAP_ERR_NOMEM = -2,
  MLTAP_ERR_ENVIRONMENT = -3 /* since 0.2: an invalid environment variable (MLTAP_NAMESPACE);
                                errbuf names it. No stream falls back to another namespace. */
};

/* What a predictions stream predicts (since 0.2, ABI 2.1). */
typedef enum mltap_task {
  MLTAP_TASK_NONE = 0,
  MLTAP_TASK_BINARY = 1,     /* one score per row, P(positive); or two, the second P(positive) */
  MLTAP_TASK_MULTICLASS = 2, /* one value per class (argmax), or the class index */
  MLTAP_TASK_REGRESSION = 3
} mltap_task;

typedef struct mltap_stream_options {
  uint32_t struct_size;            /* sizeof(mltap_stream_options); set by _init */
  const char* component;           /* NULL: program name */
  mltap_kind kind;
  const char* const* feature_names; /* distinct; they declare rows of feature_count values */
  uint32_t feature_count;
  uint32_t dtype;                  /* mltap_dtype, 0 = not declared */
  const uint32_t* row_shape;       /* declared row shape, NULL = from features or any */
  uint32_t row_ndim;
  uint32_t sampling_budget;        /* rows/s kept in full; 0 = unlimited */
  uint64_t ring_bytes;             /* per lane, power of two */
  uint32_t lanes;                  /* max threads writing at once */
  const char* ns;                  /* NULL: $MLTAP_NAMESPACE (must be valid) or "default" */
  const char* shm_dir;             /* NULL: $MLTAP_SHM_DIR or /dev/shm */
  int precise_clock;               /* nonzero: CLOCK_REALTIME timestamps (slower) */
  const char* shm_group;           /* NULL: $MLTAP_SHM_GROUP or none */
  /* Since 0.1 (ABI 1.1): files the stream's output depends on (absolute paths, at most 16). */
  const char* const* artifacts;
  uint32_t artifact_count;
  /* Since 0.2 (ABI 2.1), kind MLTAP_KIND_PREDICTIONS only: the task, and the stream (kind
   * labels) whose rows, joined by trace id, are these predictions' labels (NULL: none). */
  mltap_task task;
  const char* labels_stream;
} mltap_stream_options;

typedef struct mltap_stats {
  uint32_t struct_size;
  uint64_t rows_written;
  uint64_t rows_committed;
  uint64_t rows_sampled_out;
  uint64_t rows_too_large;
  uint64_t rows_bad_input;
  uint64_t rows_no_lane;
  uint64_t rows_no_ring;
} mltap_stats;

/* Fills `options` with the defaults (the same as the C++ SDK's). */
MLTAP_API void mltap_stream_options_init(mltap_stream_options* options);

/* Opens a stream. `options` may be NULL. On error returns MLTAP_ERR_* and writes a message into
 * errbuf (if not NULL). A stream whose ring cannot be created (no /dev/shm, a full one) still
 * opens, leaves no file behind and counts its rows as rows_no_ring (see mltap_has_ring). */
MLTAP_API int mltap_stream_open(const char* name, const mltap_stream_options* options,
                                mltap_stream** out, char* errbuf, size_t errbuf_len);
MLTAP_API void mltap_stream_close(mltap_stream* stream);

/* Writes `rows` rows, each a C-contiguous tensor of `row_shape` (ndim 1..6) with elements of
 * `dtype`. `trace_ids` is NULL or holds `rows` ids. Returns MLTAP_WRITTEN, MLTAP_SAMPLED_OUT or
 * MLTAP_DROPPED (counted in the stats; see the C++ SDK for causes: a row shape other than the
 * declared one is bad input). One row of one dimension takes the SDK's fast path. Zero rows:
 * MLTAP_WRITTEN, and nothing happens (no lane claimed, no counter moved). */
MLTAP_API int mltap_write(mltap_stream* stream, const void* data, mltap_dtype dtype,
                          const uint32_t* row_shape, uint32_t ndim, uint64_t rows,
                          const uint64_t* trace_ids);
/* Shorthand: one row of `count` float32 values, optional trace id (has_trace_id != 0). */
MLTAP_API int mltap_write_f32(mltap_stream* stream, const float* values, uint32_t count,
                              int has_trace_id, uint64_t trace_id);

/* Value of a flag set by mltapd's producer-flag reaction (0 when unset or on error). */
MLTAP_API uint32_t mltap_flag(const mltap_stream* stream, const char* name);
MLTAP_API int mltap_get_stats(const mltap_stream* stream, mltap_stats* out);
MLTAP_API int mltap_has_ring(const mltap_stream* stream);

#ifdef __cplusplus
}
#endif
#endif /* MLTAP_H */
