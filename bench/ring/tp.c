/* Instantiates the probes of tp.h inside the benchmark binary (lttng-ust(3): "static linking"). */
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "tp.h"
