/* The C ABI compiled as C: open, write every way, read stats, close. Exit code = failures. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mltap/mltap.h"

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                     \
    }                                                                 \
  } while (0)

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : "/dev/shm";
  mltap_stream_options o;
  mltap_stream_options_init(&o);
  const char* names[] = {"a", "b", "c"};
  o.feature_names = names;
  o.feature_count = 3;
  o.component = "c-test";
  o.shm_dir = dir;
  o.ns = "cabi";
  o.sampling_budget = 0;
  o.ring_bytes = 1 << 16;
  mltap_stream* s = NULL;
  char err[256] = {0};
  CHECK(mltap_stream_open("c/stream", &o, &s, err, sizeof err) == 0);
  CHECK(s != NULL);
  CHECK(mltap_has_ring(s) == 1);

  const float row[3] = {1.0f, 2.0f, NAN};
  CHECK(mltap_write_f32(s, row, 3, 0, 0) == MLTAP_WRITTEN);
  CHECK(mltap_write_f32(s, row, 3, 1, 42) == MLTAP_WRITTEN);
  const double batch[6] = {1, 2, 3, 4, 5, 6};
  const uint32_t shape[1] = {3};
  const uint64_t ids[2] = {7, 8};
  CHECK(mltap_write(s, batch, MLTAP_FLOAT64, shape, 1, 2, ids) == MLTAP_WRITTEN);
  CHECK(mltap_write(s, batch, MLTAP_FLOAT64, NULL, 0, 1, NULL) == MLTAP_DROPPED);
  CHECK(mltap_write(NULL, batch, MLTAP_FLOAT64, shape, 1, 1, NULL) == MLTAP_ERR_INVALID);
  CHECK(mltap_flag(s, "nothing") == 0);

  mltap_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK(mltap_get_stats(s, &st) == 0);
  CHECK(st.rows_written == 5);
  CHECK(st.rows_committed == 4);
  CHECK(st.rows_bad_input == 1);

  /* Errors are reported, not thrown or aborted. */
  mltap_stream* bad = NULL;
  CHECK(mltap_stream_open("bad name", &o, &bad, err, sizeof err) == MLTAP_ERR_INVALID);
  CHECK(bad == NULL);
  CHECK(strstr(err, "invalid stream name") != NULL);
  mltap_stream_options wrong = o;
  wrong.struct_size = 3;
  CHECK(mltap_stream_open("c/x", &wrong, &bad, err, sizeof err) == MLTAP_ERR_INVALID);
  CHECK(mltap_stream_open(NULL, &o, &bad, err, sizeof err) == MLTAP_ERR_INVALID);

  /* Since 0.2 (ABI 2.1): a predictions stream names its labels stream and task; refused on
   * another kind. A caller built before the fields (smaller struct_size) still opens. */
  mltap_stream_options p;
  mltap_stream_options_init(&p);
  p.shm_dir = dir;
  p.ns = "cabi";
  p.ring_bytes = 1 << 16;
  p.kind = MLTAP_KIND_PREDICTIONS;
  p.task = MLTAP_TASK_BINARY;
  p.labels_stream = "c/labels";
  mltap_stream* ps = NULL;
  CHECK(mltap_stream_open("c/predictions", &p, &ps, err, sizeof err) == 0);
  mltap_stream_close(ps);
  p.kind = MLTAP_KIND_FEATURES;
  CHECK(mltap_stream_open("c/predictions2", &p, &bad, err, sizeof err) == MLTAP_ERR_INVALID);
  p.kind = MLTAP_KIND_PREDICTIONS;
  p.task = (mltap_task)7;
  CHECK(mltap_stream_open("c/predictions3", &p, &bad, err, sizeof err) == MLTAP_ERR_INVALID);
  mltap_stream_options old;
  mltap_stream_options_init(&old);
  old.struct_size = (uint32_t)offsetof(mltap_stream_options, task);
  old.shm_dir = dir;
  old.ns = "cabi";
  old.ring_bytes = 1 << 16;
  old.task = MLTAP_TASK_REGRESSION; /* beyond the old size: ignored */
  mltap_stream* os = NULL;
  CHECK(mltap_stream_open("c/old", &old, &os, err, sizeof err) == 0);
  mltap_stream_close(os);

  mltap_stream_close(s);
  mltap_stream_close(NULL);
  if (failures) fprintf(stderr, "%d failures\n", failures);
  return failures;
}
