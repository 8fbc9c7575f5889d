// What the SDK refuses, and how it says so: duplicate feature names and an invalid
// MLTAP_NAMESPACE at open (C++ exceptions, C error codes, both naming the culprit), rows of
// another shape than the declared one at write (counted as bad input, never written).
#include <stdlib.h>

#include <cstring>
#include <string>

#include "mltap/mltap.h"
#include "ring_fixture.hpp"

namespace mltap::test {
namespace {

using format::DType;

std::string what_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

// Sets an environment variable for the test's duration.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(SdkChecks, DuplicateFeatureNamesAreRefusedNamingThem) {
  TempShmDir dir;
  auto o = small_options(dir.path());
  o.features = {"age", "amount", "age"};
  EXPECT_EQ(what_of([&] { Stream("t/dup", o); }),
            "mltap: duplicate feature name 'age' (features 0 and 2)");
  EXPECT_TRUE(dir.files().empty());

  mltap_stream_options co;
  mltap_stream_options_init(&co);
  const char* names[] = {"a", "b", "b"};
  co.feature_names = names;
  co.feature_count = 3;
  co.shm_dir = dir.path().c_str();
  co.ns = "t";
  mltap_stream* s = nullptr;
  char err[256] = {};
  EXPECT_EQ(mltap_stream_open("t/dup", &co, &s, err, sizeof err), MLTAP_ERR_INVALID);
  EXPECT_EQ(s, nullptr);
  EXPECT_STREQ(err, "mltap: duplicate feature name 'b' (features 1 and 2)");
}

TEST(SdkChecks, AnInvalidNamespaceVariableIsAnErrorThatNamesIt) {
  TempShmDir dir;
  auto o = small_options(dir.path());
  o.ns.clear();  // from the environment
  for (const char* bad : {"a/b", "../../etc", "Upper", "0123456789012345678901234567890123"}) {
    ScopedEnv env("MLTAP_NAMESPACE", bad);
    EXPECT_EQ(what_of([&] { Stream("t/ns", o); }),
              std::string("mltap: MLTAP_NAMESPACE='") + bad +
                  "' is not a valid namespace: [a-z0-9_-]{1,31}");
    mltap_stream_options co;
    mltap_stream_options_init(&co);
    co.shm_dir = dir.path().c_str();
    mltap_stream* s = nullptr;
    char err[256] = {};
    EXPECT_EQ(mltap_stream_open("t/ns", &co, &s, err, sizeof err), MLTAP_ERR_ENVIRONMENT);
    EXPECT_EQ(s, nullptr);
    EXPECT_NE(std::strstr(err, "MLTAP_NAMESPACE"), nullptr) << err;
    EXPECT_NE(std::strstr(err, bad), nullptr) << err;
  }
  EXPECT_TRUE(dir.files().empty()) << "no fall-back into namespace 'default'";
  {
    ScopedEnv env("MLTAP_NAMESPACE", "a/b");
    auto given = o;
    given.ns = "given";  // an explicit namespace does not read the variable
    Stream s("t/ns", given);
    EXPECT_NE(s.segment_path().find("/mltap.given."), std::string::npos);
  }
  {
    ScopedEnv env("MLTAP_NAMESPACE", "");  // set but empty: the default
    Stream s("t/ns", o);
    EXPECT_NE(s.segment_path().find("/mltap.default."), std::string::npos);
  }
}

// A write of zero rows does nothing and says `written`, the same with or without a ring and on
// every entry point: no lane is claimed for it (a thread that only ever writes empty batches
// does not use up a lane) and no counter moves.
TEST(SdkChecks, AWriteOfZeroRowsDoesNothingAndIsWritten) {
  TempShmDir dir;
  StreamOptions o = small_options(dir.path(), 3);
  o.lanes = 1;
  Stream s("t/empty", o);
  ASSERT_TRUE(s.has_ring());
  const float v[3] = {1, 2, 3};
  const std::uint32_t three = 3;
  EXPECT_EQ(s.write_batch(v, 0, 3), WriteResult::written);
  EXPECT_EQ(s.write_tensor(v, DType::float32, std::span<const std::uint32_t>(&three, 1), 0, {}),
            WriteResult::written);
  auto st = s.stats();
  EXPECT_EQ(st.rows_written, 0u);
  {
    auto r = open_reader(s.segment_path());
    ASSERT_TRUE(r);
    const auto pc = r->producer_counters();
    ASSERT_TRUE(pc);
    EXPECT_EQ(pc->lanes_used, 0u) << "a write of no rows claimed a lane";
  }
  EXPECT_EQ(s.write(std::span<const float>(v)), WriteResult::written);
  st = s.stats();
  EXPECT_EQ(st.rows_written, 1u);
  EXPECT_EQ(st.rows_committed, 1u);

  // Without a ring (its file system refuses the file): the same answer, nothing counted.
  StreamOptions none = small_options("/proc/self", 3);
  Stream ringless("t/ringless", none);
  ASSERT_FALSE(ringless.has_ring());
  EXPECT_EQ(ringless.write_batch(v, 0, 3), WriteResult::written);
  EXPECT_EQ(ringless.stats().rows_written, 0u);
  EXPECT_EQ(ringless.stats().rows_no_ring, 0u);

  // The C ABI.
  mltap_stream_options co;
  mltap_stream_options_init(&co);
  const char* names[] = {"a", "b", "c"};
  co.feature_names = names;
  co.feature_count = 3;
  co.shm_dir = dir.path().c_str();
  co.ns = "t";
  mltap_stream* cs = nullptr;
  char err[256] = {};
  ASSERT_EQ(mltap_stream_open("t/cempty", &co, &cs, err, sizeof err), 0) << err;
  EXPECT_EQ(mltap_write(cs, v, MLTAP_FLOAT32, &three, 1, 0, nullptr), MLTAP_WRITTEN);
  mltap_stats cst{};
  cst.struct_size = sizeof cst;
  ASSERT_EQ(mltap_get_stats(cs, &cst), 0);
  EXPECT_EQ(cst.rows_written, 0u);
  mltap_stream_close(cs);
}

TEST(SdkChecks, RowsOfAnotherShapeThanDeclaredAreBadInput) {
  TempShmDir dir;
  Stream s("t/width", small_options(dir.path(), 3));  // declares rows of 3 values
  const float v[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const std::uint64_t id = 7;
  EXPECT_EQ(s.write(std::span<const float>(v, 3)), WriteResult::written);
  EXPECT_EQ(s.write(std::span<const float>(v, 4)), WriteResult::dropped);  // wider
  EXPECT_EQ(s.write(std::span<const float>(v, 2), TraceId{id}), WriteResult::dropped);  // narrower
  EXPECT_EQ(s.write_batch(v, 3, 4), WriteResult::dropped);  // 3 rows of 4
  const std::uint32_t shape34[2] = {3, 1};
  EXPECT_EQ(s.write_tensor(v, DType::float32, shape34, 2, {}), WriteResult::dropped);  // 2-D rows
  EXPECT_EQ(s.write_batch(v, 4, 3), WriteResult::written);
  EXPECT_EQ(s.write(std::span<const float>(v, 3)), WriteResult::written);  // the fast path again

  mltap_stream_options co;
  mltap_stream_options_init(&co);
  const char* names[] = {"a", "b", "c"};
  co.feature_names = names;
  co.feature_count = 3;
  co.shm_dir = dir.path().c_str();
  co.ns = "t";
  co.sampling_budget = 0;
  mltap_stream* cs = nullptr;
  char err[256] = {};
  ASSERT_EQ(mltap_stream_open("t/cwidth", &co, &cs, err, sizeof err), 0) << err;
  EXPECT_EQ(mltap_write_f32(cs, v, 3, 0, 0), MLTAP_WRITTEN);
  EXPECT_EQ(mltap_write_f32(cs, v, 5, 1, 9), MLTAP_DROPPED);
  const std::uint32_t five = 5;
  EXPECT_EQ(mltap_write(cs, v, MLTAP_FLOAT32, &five, 1, 2, nullptr), MLTAP_DROPPED);
  mltap_stats cst{};
  cst.struct_size = sizeof cst;
  ASSERT_EQ(mltap_get_stats(cs, &cst), 0);
  EXPECT_EQ(cst.rows_bad_input, 3u);
  EXPECT_EQ(cst.rows_committed, 1u);
  mltap_stream_close(cs);

  const auto st = s.stats();
  EXPECT_EQ(st.rows_bad_input, 1u + 1u + 3u + 2u);
  EXPECT_EQ(st.rows_committed, 1u + 4u + 1u);
  EXPECT_EQ(st.rows_written, st.rows_committed + st.rows_bad_input);
  auto r = open_reader(s.segment_path());
  ASSERT_TRUE(r);
  Collector c;
  r->poll(c);
  ASSERT_EQ(c.records.size(), 3u);
  for (const auto& rec : c.records) EXPECT_EQ(rec.shape, std::vector<std::uint32_t>{3});
  EXPECT_EQ(c.rows, 6u);
}

}  // namespace
}  // namespace mltap::test
