/* Compiled inside the test root against the installed SDK: `gcc sdk_check.c $(pkg-config --cflags
 * --libs mltap)`. Opens a stream through libmltap.so.1, writes rows and checks that the ring took
 * them. Prints "sdk ok <rows>" and exits 0 on success. */
#include <stdio.h>
#include <string.h>

#include <mltap/mltap.h>

int main(void) {
  mltap_stream_options o;
  mltap_stream_options_init(&o);
  const char* names[] = {"x", "y"};
  o.component = "sdk-check";
  o.feature_names = names;
  o.feature_count = 2;
  o.ns = "sdkcheck";
  mltap_stream* s = NULL;
  char err[256] = "";
  if (mltap_stream_open("systemd-test/c-sdk", &o, &s, err, sizeof err) != 0) {
    fprintf(stderr, "mltap_stream_open: %s\n", err);
    return 1;
  }
  for (int i = 0; i < 100; ++i) {
    const float row[2] = {(float)i, 0.5f * (float)i};
    if (mltap_write_f32(s, row, 2, 1, (unsigned long long)i) < 0) {
      fprintf(stderr, "mltap_write_f32 failed at row %d\n", i);
      return 1;
    }
  }
  mltap_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  if (mltap_get_stats(s, &st) != 0 || st.rows_written != 100 || st.rows_no_ring != 0) {
    fprintf(stderr, "stats: written %llu, no ring %llu\n", (unsigned long long)st.rows_written,
            (unsigned long long)st.rows_no_ring);
    return 1;
  }
  printf("sdk ok %llu\n", (unsigned long long)st.rows_written);
  mltap_stream_close(s);
  return 0;
}
