/* LTTng-UST tracepoint provider of the ring benchmarks: the events a user would emit instead of
 * an mltap write. LTTng-UST 2.13 has no float array/sequence field type, so a float tensor
 * travels as a sequence of 32-bit words holding the float bit patterns: the same bytes, copied
 * with one memcpy, as an mltap record payload. */
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER mltap_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "./tp.h"

#if !defined(MLTAP_BENCH_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define MLTAP_BENCH_TP_H

#include <stdint.h>

#include <lttng/tracepoint.h>

/* One row of float32 features (enabled by bench/ring/run.sh in a small-subbuffer channel). */
LTTNG_UST_TRACEPOINT_EVENT(
    mltap_bench, row,
    LTTNG_UST_TP_ARGS(const uint32_t *, words, uint32_t, n),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_sequence(uint32_t, values, words, uint32_t, n)
    )
)

/* The same event, never enabled by any session: the cost of a dormant tracepoint. */
LTTNG_UST_TRACEPOINT_EVENT(
    mltap_bench, row_dormant,
    LTTNG_UST_TP_ARGS(const uint32_t *, words, uint32_t, n),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_sequence(uint32_t, values, words, uint32_t, n)
    )
)

/* A whole tensor (enabled in a channel whose subbuffers can hold 1 MiB). */
LTTNG_UST_TRACEPOINT_EVENT(
    mltap_bench, tensor,
    LTTNG_UST_TP_ARGS(const uint32_t *, words, uint32_t, n),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_sequence(uint32_t, values, words, uint32_t, n)
    )
)

/* A whole tensor sent to a channel with LTTng's default subbuffer size. */
LTTNG_UST_TRACEPOINT_EVENT(
    mltap_bench, tensor_default_channel,
    LTTNG_UST_TP_ARGS(const uint32_t *, words, uint32_t, n),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_sequence(uint32_t, values, words, uint32_t, n)
    )
)

#endif /* MLTAP_BENCH_TP_H */

#include <lttng/tracepoint-event.h>
