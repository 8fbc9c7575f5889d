// The engine end to end on synthetic streams: pinning, windows, every finding kind and its
// lifecycle, caps, file references, snapshots read concurrently, JSON and Prometheus output
// (served by a real prometheus-cpp Exposer on loopback and checked with promtool).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <chrono>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "agent/api/detector_json.hpp"
#include "agent/detectors/engine.hpp"
#include "exporters/metrics/detector_metrics.hpp"
#include "engine_feed.hpp"

using namespace mltap;
using namespace mltap::detectors;
using namespace mltap::core;
using namespace mltap::detectors::test;
using mltap::api::to_json;
namespace fs = std::filesystem;


TEST(Engine, PinsReferenceThenStaysQuietOnIdenticalData) {
  DetectorEngine e(small_config());
  Feed f(e, "s", 5);
  std::mt19937_64 g(1);
  std::normal_distribution<double> d;
  auto gen = [&](double* r) { for (int c = 0; c < 5; ++c) r[c] = d(g) * (c + 1) + c; };
  f.run(3000, 1, gen);
  e.flush(f.now);
  auto s = e.snapshot();
  ASSERT_EQ(s->streams.size(), 1u);
  EXPECT_EQ(s->streams[0]->reference, ReferenceSource::pending);
  EXPECT_EQ(s->streams[0]->pin_progress, 3000u);
  f.run(1000 + 20 * 2000, 37, gen);
  e.flush(f.now);
  s = e.snapshot();
  const auto& st = *s->streams[0];
  EXPECT_EQ(st.reference, ReferenceSource::pinned);
  EXPECT_EQ(st.windows_closed, 20u);
  EXPECT_EQ(st.records_total, 44000u);
  EXPECT_EQ(count_open(*s), 0u) << to_json(*s).dump(1);
  ASSERT_EQ(st.features->size(), 5u);
  for (const auto& r : *st.features) {
    EXPECT_FALSE(r.drifted);
    EXPECT_EQ(r.values, 2000u);
    EXPECT_LT(r.max_ratio, 0.6) << r.name;
    EXPECT_FALSE(r.previous.empty());
  }
  EXPECT_GT(st.memory_bytes, 0u);
}

TEST(Engine, MeanShiftOpensDriftNamingTheFeatureAndClosesAfterRecovery) {
  DetectorEngine e(small_config());
  Feed f(e, "s", 6);
  std::mt19937_64 g(2);
  std::normal_distribution<double> d;
  double shift = 0;
  auto gen = [&](double* r) {
    for (int c = 0; c < 6; ++c) r[c] = d(g);
    r[3] += shift;
  };
  f.run(8000, 64, gen);
  shift = 0.5;
  f.run(4000, 64, gen);
  auto s = e.snapshot();
  const Finding* fd = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(fd, nullptr) << to_json(*s).dump(1);
  ASSERT_FALSE(fd->top.empty());
  EXPECT_EQ(fd->top[0].feature, "f3");
  EXPECT_GT(fd->top[0].score, fd->top[0].threshold);
  EXPECT_TRUE(s->streams[0]->drift_detected);
  const std::uint64_t id = fd->id;
  shift = 0;
  f.run(6000, 64, gen);
  s = e.snapshot();
  EXPECT_EQ(open_finding(*s, "s", FindingKind::drift), nullptr);
  bool closed = false;
  for (const auto& c : s->closed_findings) closed |= c.id == id && !c.open() && c.closed_unix_ns >= c.opened_unix_ns;
  EXPECT_TRUE(closed);
}

TEST(Engine, DataQualityNanOutOfRangeAndConstant) {
  DetectorEngine e(small_config());
  Feed f(e, "q", 3);
  std::mt19937_64 g(3);
  std::normal_distribution<double> d;
  std::uniform_real_distribution<double> u;
  int mode = 0;
  auto gen = [&](double* r) {
    r[0] = d(g);
    r[1] = d(g);
    r[2] = d(g);
    if (mode == 1 && u(g) < 0.02) r[0] = NAN;
    if (mode == 2 && u(g) < 0.05) r[1] = 100;
    if (mode == 3) r[2] = 0.5;
  };
  f.run(6000, 16, gen);
  EXPECT_EQ(count_open(*e.snapshot()), 0u);
  for (int m : {1, 2, 3}) {
    mode = m;
    f.run(4128, 16, gen);  // at least one whole window in this mode
    auto s = e.snapshot();
    const Finding* q = open_finding(*s, "q", FindingKind::data_quality);
    ASSERT_NE(q, nullptr) << m;
    bool seen = false;
    const char* want = m == 1 ? "nan_rate" : m == 2 ? "out_of_range" : "constant";
    for (const auto& t : q->top) seen |= t.method == want;
    EXPECT_TRUE(seen) << want << " " << to_json(*q).dump(1);
    mode = 0;
    f.run(6192, 16, gen);  // at least two whole clean windows
    EXPECT_EQ(open_finding(*e.snapshot(), "q", FindingKind::data_quality), nullptr) << m;
  }
  const auto& feats = *e.snapshot()->streams[0]->features;
  EXPECT_EQ(feats[0].nan_ratio, 0);
}

TEST(Engine, CategoricalShareShiftAndUnseenCategories) {
  DetectorEngine e(small_config());
  Feed f(e, "c", 2);
  std::mt19937_64 g(4);
  std::normal_distribution<double> d;
  std::discrete_distribution<int> base({0.3, 0.3, 0.2, 0.1, 0.1}), shifted({0.2, 0.3, 0.2, 0.2, 0.1}), novel({0.25, 0.25, 0.2, 0.1, 0.1, 0.1});
  int mode = 0;
  auto gen = [&](double* r) {
    r[0] = d(g);
    r[1] = mode == 0 ? base(g) : mode == 1 ? shifted(g) : novel(g);
  };
  f.run(8000, 8, gen);
  auto s = e.snapshot();
  EXPECT_EQ(count_open(*s), 0u);
  EXPECT_EQ((*s->streams[0]->features)[1].kind, FeatureKind::categorical);
  mode = 1;
  f.run(2064, 8, gen);
  s = e.snapshot();
  const Finding* fd = open_finding(*s, "c", FindingKind::drift);
  ASSERT_NE(fd, nullptr);
  EXPECT_EQ(fd->top[0].feature, "f1");
  EXPECT_EQ(fd->top[0].method, "linf");
  EXPECT_NE(fd->top[0].detail.find("share of"), std::string::npos);
  mode = 2;
  f.run(2000, 8, gen);
  const Finding* q = open_finding(*e.snapshot(), "c", FindingKind::data_quality);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->top[0].method, "unseen_category");
  EXPECT_NE(q->top[0].detail.find("5"), std::string::npos);  // names the new value
}

TEST(Engine, SchemaChangesAreFindings) {
  DetectorEngine e(small_config());
  Feed f(e, "sc", 4);
  std::mt19937_64 g(5);
  std::normal_distribution<double> d;
  auto gen = [&](double* r) { for (std::size_t c = 0; c < f.cols; ++c) r[c] = d(g); };
  f.run(6000, 32, gen);
  f.dtype = format::DType::float32;
  f.run(10, 1, gen);
  auto s = e.snapshot();
  const Finding* sc = open_finding(*s, "sc", FindingKind::schema_change);
  ASSERT_NE(sc, nullptr);
  EXPECT_EQ(sc->reason, "dtype");
  f.dtype = format::DType::float64;
  f.cols = 5;
  f.run(100, 10, gen);
  s = e.snapshot();
  sc = open_finding(*s, "sc", FindingKind::schema_change);
  ASSERT_NE(sc, nullptr);
  EXPECT_EQ(sc->reason, "feature_count");
  EXPECT_EQ(sc->severity, Severity::critical);
  EXPECT_EQ(s->streams[0]->records_rejected, 100u);
  f.cols = 4;
  f.run(8000, 32, gen);
  EXPECT_EQ(open_finding(*e.snapshot(), "sc", FindingKind::schema_change), nullptr);
}

TEST(Engine, StalenessAndThroughput) {
  auto c = small_config();
  c.defaults.staleness.enabled = true;
  c.defaults.staleness.min_silence = std::chrono::seconds(10);
  c.defaults.throughput.enabled = true;
  c.defaults.throughput.period = std::chrono::seconds(10);
  DetectorEngine e(c);
  Feed f(e, "t", 2);
  f.rate = 100;
  std::mt19937_64 g(6);
  std::normal_distribution<double> d;
  auto gen = [&](double* r) { r[0] = d(g); r[1] = d(g); };
  f.run(10000, 10, gen);  // 100 s at 100 rows/s, a batch every 0.1 s
  EXPECT_EQ(count_open(*e.snapshot()), 0u) << to_json(*e.snapshot()).dump(1);
  f.idle(9);
  EXPECT_EQ(open_finding(*e.snapshot(), "t", FindingKind::staleness), nullptr);
  f.idle(3);
  const Finding* st = open_finding(*e.snapshot(), "t", FindingKind::staleness);
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->reason, "silent");
  f.run(10, 10, gen);
  EXPECT_EQ(open_finding(*e.snapshot(), "t", FindingKind::staleness), nullptr);
  // Ten times the usual rate.
  f.rate = 1000;
  f.run(15000, 10, gen);
  const Finding* tp = open_finding(*e.snapshot(), "t", FindingKind::throughput);
  ASSERT_NE(tp, nullptr);
  EXPECT_EQ(tp->reason, "spike");
}

TEST(Engine, TimeWindowsCapsPredictionsAndEmbeddings) {
  auto c = small_config();
  c.max_streams = 3;
  c.max_features_per_stream = 3;
  c.defaults.window_records = 100000;
  c.defaults.window_time = std::chrono::seconds(5);
  DetectorEngine e(c);
  std::mt19937_64 g(7);
  std::normal_distribution<double> d;
  Feed wide(e, "wide", 5);
  wide.run(12000, 50, [&](double* r) { for (int k = 0; k < 5; ++k) r[k] = d(g); });
  auto s = e.snapshot();
  EXPECT_EQ(s->streams[0]->features_cut, 2u);
  EXPECT_EQ(s->streams[0]->features->size(), 3u);
  EXPECT_GE(s->streams[0]->windows_closed, 1u);  // closed by time (8 s of data at 1000/s)
  // Predictions: probabilities of 3 classes; the class share moves.
  Feed p(e, "pred", 3, format::StreamKind::predictions);
  p.now = wide.now;  // one agent clock
  double tilt = 0;
  std::uniform_real_distribution<double> u;
  auto pgen = [&](double* r) {
    double a = u(g), b = u(g), cc = u(g) + tilt, t = a + b + cc;
    r[0] = a / t;
    r[1] = b / t;
    r[2] = cc / t;
  };
  p.run(8000, 20, pgen);
  EXPECT_EQ(open_finding(*e.snapshot(), "pred", FindingKind::prediction_drift), nullptr);
  tilt = 0.5;
  p.run(8000, 20, pgen);
  s = e.snapshot();
  EXPECT_NE(open_finding(*s, "pred", FindingKind::prediction_drift), nullptr) << to_json(*s).dump(1);
  // A fourth stream is over max_streams: counted, not analyzed.
  Feed x(e, "extra", 2);
  Feed y(e, "extra2", 2);
  x.now = y.now = p.now;
  y.run(10, 10, [&](double* r) { r[0] = r[1] = 1; });
  x.run(10, 10, [&](double* r) { r[0] = r[1] = 1; });
  e.flush(x.now);
  s = e.snapshot();
  EXPECT_EQ(s->streams.size(), 3u);
  EXPECT_EQ(s->counters.streams_cut, 1u);
  EXPECT_EQ(s->counters.records_cut, 10u);
  EXPECT_GE(s->counters.features_cut, 2u);
}

TEST(Engine, EmbeddingsDriftThroughProjectionsAndMeanVector) {
  auto c = small_config();
  DetectorEngine e(c);
  const std::size_t dims = 300;  // wider than embedding.min_width: analyzed as embeddings
  Feed f(e, "emb", dims);
  std::mt19937_64 g(8);
  std::normal_distribution<double> d;
  std::vector<double> center(dims);
  for (auto& v : center) v = d(g);
  double scale = 1.0, offset = 0;
  auto gen = [&](double* r) {
    for (std::size_t k = 0; k < dims; ++k) r[k] = center[k] + scale * d(g) + offset;
  };
  f.run(12000, 100, gen);
  auto s = e.snapshot();
  EXPECT_EQ(s->streams[0]->layout, "embeddings");
  EXPECT_EQ(s->streams[0]->features->size(), 17u);
  EXPECT_EQ(count_open(*s), 0u) << to_json(*s).dump(1);
  EXPECT_LT(s->streams[0]->embedding_mean_shift, 0.05);
  scale = 1.3;
  offset = 0.3;
  f.run(4000, 100, gen);
  s = e.snapshot();
  const Finding* fd = open_finding(*s, "emb", FindingKind::embedding_drift);
  ASSERT_NE(fd, nullptr) << to_json(*s).dump(1);
  EXPECT_GT(s->streams[0]->embedding_mean_shift, 0.1);
}

TEST(Engine, FileReferenceFromConfigWithNamePermutation) {
  const auto dir = tmpdir();
  std::mt19937_64 g(9);
  std::normal_distribution<double> d;
  std::vector<double> rows(20000 * 3);
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = d(g) + static_cast<double>(i % 3) * 10;
  const auto p = build_profile(rows, 3, {"a", "b", "c"}, ProfileOptions{});
  save_profile(p, (dir / "ref.profile").string());
  auto c = small_config();
  auto st = c.defaults;
  st.reference = (dir / "ref.profile").string();
  c.streams.emplace_back("fs", st);
  DetectorEngine e(c);
  Feed f(e, "fs", 3);
  f.info.feature_names = {"c", "a", "b"};  // same names, other order: mapped by name
  f.run(6000, 100, [&](double* r) { r[0] = d(g) + 20; r[1] = d(g); r[2] = d(g) + 10; });
  auto s = e.snapshot();
  EXPECT_EQ(s->streams[0]->reference, ReferenceSource::file);
  EXPECT_EQ(s->streams[0]->windows_closed, 3u);  // no pinning
  EXPECT_EQ(count_open(*s), 0u) << to_json(*s).dump(1);
  auto bad = small_config();
  auto bst = bad.defaults;
  bst.reference = (dir / "missing.profile").string();
  bad.streams.emplace_back("x", bst);
  try {
    DetectorEngine never(bad);
    ADD_FAILURE();
  } catch (const ProfileError& ex) {
    EXPECT_NE(std::string(ex.what()).find("detectors.streams.x.reference"), std::string::npos);
  }
}

TEST(Engine, SnapshotsAreReadConcurrentlyWithoutBlockingTheWriter) {
  auto c = small_config();
  c.snapshot_interval = std::chrono::milliseconds(1);
  DetectorEngine e(c);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0};
  std::thread reader([&] {
    metrics::DetectorCollector collector([&e] { return e.snapshot(); });
    while (!stop.load()) {
      auto s = e.snapshot();
      ASSERT_NE(s, nullptr);
      const auto j = to_json(*s);
      (void)collector.Collect();
      for (const auto& st : s->streams) ASSERT_NE(st->features, nullptr);
      reads.fetch_add(1);
    }
  });
  // The reader must be running while the writer works (on a loaded machine the writer could
  // otherwise finish before the reader thread is first scheduled).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (reads.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  std::mt19937_64 g(10);
  std::normal_distribution<double> d;
  Feed f(e, "cc", 8);
  f.rate = 1e6;
  double shift = 0;
  f.run(30000, 16, [&](double* r) { for (int k = 0; k < 8; ++k) r[k] = d(g) + (k == 2 ? shift : 0); });
  shift = 1;
  f.run(30000, 16, [&](double* r) { for (int k = 0; k < 8; ++k) r[k] = d(g) + (k == 2 ? shift : 0); });
  stop = true;
  reader.join();
  EXPECT_GT(reads.load(), 0u);
  EXPECT_GT(e.snapshot()->sequence, 5u);
}

TEST(Exposition, PrometheusServesBoundedDetectorFamiliesThatPromtoolAccepts) {
  auto c = small_config();
  DetectorEngine e(c);
  std::mt19937_64 g(11);
  std::normal_distribution<double> d;
  Feed f(e, "wide", 40);
  double shift = 0;
  auto gen = [&](double* r) { for (int k = 0; k < 40; ++k) r[k] = d(g) + (k % 7 == 0 ? shift : 0); };
  f.run(6000, 50, gen);
  shift = 1;
  f.run(2000, 50, gen);
  e.flush(f.now);
  auto registry = std::make_shared<prometheus::Registry>();
  auto collector = std::make_shared<metrics::DetectorCollector>([&e] { return e.snapshot(); },
                                                                  metrics::DetectorCollectorOptions{5});
  prometheus::Exposer exposer("127.0.0.1:0");
  exposer.RegisterCollectable(collector);
  const auto ports = exposer.GetListeningPorts();
  ASSERT_FALSE(ports.empty());
  httplib::Client cli("127.0.0.1", ports.front());
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const std::string& body = res->body;
  for (const char* name : {"mltap_stream_finding_active", "mltap_stream_finding_info", "mltap_stream_drift_detected",
                           "mltap_feature_drift_score", "mltap_feature_drift_detected", "mltap_feature_quality_ratio",
                           "mltap_stream_reference_info", "mltap_detector_features_aggregated"}) {
    EXPECT_NE(body.find(std::string("# TYPE ") + name), std::string::npos) << name;
  }
  EXPECT_NE(body.find("mltap_stream_finding_active{stream=\"wide\",component=\"test\",kind=\"drift\",severity=\"critical\",finding_id=\""),
            std::string::npos) << body.substr(0, 3000);
  EXPECT_NE(body.find("mltap_stream_reference_info{stream=\"wide\",source=\"pinned\"} 1"), std::string::npos);
  EXPECT_NE(body.find("mltap_detector_features_aggregated{stream=\"wide\"} 35"), std::string::npos);
  EXPECT_NE(body.find("feature=\"_other\""), std::string::npos);
  // Bounded: 5 features + _other for the drift detected family.
  std::size_t detected = 0;
  for (std::size_t k = body.find("mltap_feature_drift_detected{"); k != std::string::npos; k = body.find("mltap_feature_drift_detected{", k + 1)) ++detected;
  EXPECT_EQ(detected, 6u);
  // The drifted features (f0, f7, ..., f35: six) fill the five individually exported slots (which
  // five depends on their score over decision level, noise floors included).
  std::size_t drifted_exported = 0;
  for (int k = 0; k < 40; k += 7) {
    drifted_exported += body.find("mltap_feature_drift_detected{stream=\"wide\",feature=\"f" + std::to_string(k) + "\"} 1") !=
                        std::string::npos;
  }
  EXPECT_EQ(drifted_exported, 5u);
  if (fs::exists(MLTAP_PROMTOOL)) {
    const auto path = tmpdir() / "metrics.txt";
    std::ofstream(path) << body;
    const std::string cmd = std::string(MLTAP_PROMTOOL) + " check metrics < " + path.string() + " > " + (tmpdir() / "promtool.out").string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream out(tmpdir() / "promtool.out");
    std::string text((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
    EXPECT_EQ(rc, 0) << text;
  }
}

TEST(Json, FindingAndSnapshotShapes) {
  Finding f;
  f.id = 7;
  f.stream = "s";
  f.kind = FindingKind::staleness;
  f.top.push_back({"x", "psi", 0.3, 0.2, NAN, "d"});
  const auto j = to_json(f);
  EXPECT_EQ(j["kind"], "staleness");
  EXPECT_EQ(j["open"], true);
  EXPECT_TRUE(j["top"][0]["p_value"].is_null());
  DetectorEngine e(small_config());
  const auto s = to_json(*e.snapshot());
  EXPECT_TRUE(s["streams"].is_array());
  EXPECT_TRUE(s["counters"].contains("streams_cut"));
}

TEST(Engine, RawStreamsAndMalformedBatchesAreNotAnalyzed) {
  DetectorEngine e(small_config());
  Feed raw(e, "raw", 8, format::StreamKind::raw);
  raw.run(5000, 10, [](double* r) { for (int k = 0; k < 8; ++k) r[k] = k; });
  auto s = e.snapshot();
  ASSERT_EQ(s->streams.size(), 1u);
  EXPECT_EQ(s->streams[0]->records_total, 5000u);
  EXPECT_EQ(s->streams[0]->features_analyzed, 0u);
  EXPECT_LT(s->streams[0]->memory_bytes, 64u * 1024u);
  // A batch whose span is shorter than rows x cols is ignored, not read past its end.
  core::StreamInfo info;
  info.name = "short";
  std::vector<double> v(10, 1.0);
  core::DecodedBatch b;
  b.stream = &info;
  b.rows = 5;
  b.cols = 4;
  b.values = v;
  e.on_batch(b);
  e.publish_now();
  EXPECT_EQ(e.snapshot()->streams.size(), 1u);
}

namespace {

// Checkpoints through a real StateStore, as mltapd keeps them, and read back as it restores them.
std::vector<std::pair<std::string, StateReadResult>> store_and_reload(DetectorEngine& e,
                                                                      const fs::path& dir) {
  StateStore store(dir.string());
  std::vector<std::string> errors;
  const auto docs = e.checkpoint();
  EXPECT_EQ(store.write_all(docs, errors), docs.size());
  EXPECT_TRUE(errors.empty()) << errors.front();
  std::vector<std::pair<std::string, StateReadResult>> out;
  for (const auto& n : store.list(e.state_prefix())) out.emplace_back(n, store.read(n, e.state_version()));
  return out;
}

}  // namespace

// A restart during an incident: the new engine gets the pinned reference and the open finding
// back (same id, same onset) and keeps detecting the shift, where an engine without the state
// pins the shifted data as normal.
TEST(EngineState, RestoreKeepsReferenceAndOpenFindingsAcrossRestart) {
  const fs::path dir = tmpdir() / "restore";
  fs::remove_all(dir);
  std::mt19937_64 g(11);
  std::normal_distribution<double> d;
  double shift = 0;
  auto gen = [&](double* r) {
    for (int c = 0; c < 4; ++c) r[c] = d(g);
    r[2] += shift;
  };
  std::uint64_t id = 0, opened = 0, now = 0;
  {
    DetectorEngine a(small_config());
    Feed f(a, "s", 4);
    f.run(8000, 64, gen);
    shift = 0.6;
    f.run(4000, 64, gen);
    const auto s = a.snapshot();
    const Finding* fd = open_finding(*s, "s", FindingKind::drift);
    ASSERT_NE(fd, nullptr) << to_json(*s).dump(1);
    id = fd->id;
    opened = fd->opened_unix_ns;
    now = f.now;
    const auto docs = a.checkpoint();
    EXPECT_EQ(docs.size(), 3u);  // the stream, its pinned reference and the engine's next id
    EXPECT_TRUE(a.checkpoint().empty()) << "nothing changed since the last checkpoint";
    a.on_tick(f.now + kSec);
    EXPECT_TRUE(a.checkpoint().empty());
    // Written again (and again nothing after that) once a window changes the finding.
    f.run(2000, 64, gen);
    EXPECT_EQ(a.checkpoint().size(), 1u);
    fs::create_directories(dir);
    StateStore store(dir.string());
    std::vector<std::string> errors;
    for (auto& doc : docs) ASSERT_TRUE(store.write(doc, errors.emplace_back())) << errors.back();
  }
  StateStore store(dir.string());
  std::vector<std::pair<std::string, StateReadResult>> stored;
  for (const auto& n : store.list("detectors.")) stored.emplace_back(n, store.read(n, 1));
  ASSERT_EQ(stored.size(), 3u);

  DetectorEngine b(small_config());
  EXPECT_TRUE(b.restore(stored).empty());
  auto s = b.snapshot();
  ASSERT_EQ(s->streams.size(), 1u);
  EXPECT_EQ(s->streams[0]->reference, ReferenceSource::pinned);
  EXPECT_EQ(s->streams[0]->reference_rows, 4000u);
  const Finding* fd = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(fd, nullptr) << "the finding is open right after the restart";
  EXPECT_EQ(fd->id, id);
  EXPECT_EQ(fd->opened_unix_ns, opened);
  EXPECT_EQ(fd->component, "test");
  ASSERT_FALSE(fd->top.empty());
  EXPECT_EQ(fd->top[0].feature, "f2");

  Feed f(b, "s", 4);
  // Records analyzed before the restart are not given again: ingest resumes each ring at its
  // saved read position (tests/ring/discovery_test.cpp, integration_state_restart).
  f.now = now + 60 * kSec;
  f.run(8000, 64, gen);  // still shifted: more than pin_records, the reference is not re-pinned
  s = b.snapshot();
  EXPECT_EQ(s->streams[0]->reference, ReferenceSource::pinned);
  EXPECT_EQ(s->streams[0]->reference_rows, 4000u);
  EXPECT_GE(s->streams[0]->windows_closed, 3u);
  fd = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(fd, nullptr) << to_json(*s).dump(1);
  EXPECT_EQ(fd->id, id);
  EXPECT_EQ(fd->opened_unix_ns, opened);
  EXPECT_GT(fd->updated_unix_ns, opened);
  // Back to normal against the restored reference: it closes; a new incident gets a new id.
  shift = 0;
  f.run(8000, 64, gen);
  EXPECT_EQ(open_finding(*b.snapshot(), "s", FindingKind::drift), nullptr);
  shift = 0.6;
  f.run(4000, 64, gen);
  fd = open_finding(*b.snapshot(), "s", FindingKind::drift);
  ASSERT_NE(fd, nullptr);
  EXPECT_GT(fd->id, id);

  // Without the state, the same shifted data is pinned as normal: the incident is lost.
  DetectorEngine c(small_config());
  Feed fc(c, "s", 4);
  fc.run(16000, 64, gen);
  // (Judged on f2, the shifted feature: another one may cross its threshold by chance.)
  const auto sc = c.snapshot();
  const Finding* fc_drift = open_finding(*sc, "s", FindingKind::drift);
  if (fc_drift) {
    for (const auto& t : fc_drift->top) EXPECT_NE(t.feature, "f2") << to_json(*sc).dump(1);
  }
  bool seen = false;
  for (const auto& r : *sc->streams[0]->features) {
    if (r.name != "f2") continue;
    seen = true;
    EXPECT_FALSE(r.drifted);
  }
  EXPECT_TRUE(seen);
  fs::remove_all(dir);
}

// Finding ids never repeat after a restart, even for findings that closed before it.
TEST(EngineState, FindingIdsContinueAfterRestore) {
  const fs::path dir = tmpdir() / "ids";
  fs::remove_all(dir);
  std::mt19937_64 g(12);
  std::normal_distribution<double> d;
  double shift = 0;
  auto gen = [&](double* r) { r[0] = d(g) + shift; r[1] = d(g); };
  std::uint64_t last_id = 0;
  std::vector<std::pair<std::string, StateReadResult>> stored;
  {
    DetectorEngine a(small_config());
    Feed f(a, "t", 2);
    f.run(8000, 64, gen);
    shift = 1;
    f.run(4000, 64, gen);
    shift = 0;
    f.run(8000, 64, gen);
    const auto s = a.snapshot();
    ASSERT_TRUE(s->open_findings.empty()) << to_json(*s).dump(1);
    ASSERT_FALSE(s->closed_findings.empty());
    for (const auto& c : s->closed_findings) last_id = std::max(last_id, c.id);
    stored = store_and_reload(a, dir);
  }
  DetectorEngine b(small_config());
  EXPECT_TRUE(b.restore(stored).empty());
  Feed f(b, "t", 2);
  f.now += 3600 * kSec;  // after the restart: newer than every record analyzed before it
  shift = 1;
  f.run(4000, 64, gen);
  const auto s = b.snapshot();
  ASSERT_FALSE(s->open_findings.empty()) << to_json(*s).dump(1);
  for (const auto& o : s->open_findings) EXPECT_GT(o.id, last_id);
  fs::remove_all(dir);
}

// Documents that cannot be used are reported and skipped; the engine starts and pins afresh.
TEST(EngineState, UnusableDocumentsAreReportedNotFatal) {
  std::vector<std::pair<std::string, StateReadResult>> stored;
  StateReadResult unusable;
  unusable.status = StateReadResult::Status::unusable;
  unusable.detail = "/x/detectors.stream-1.json: not valid JSON; moved aside";
  stored.emplace_back("detectors.stream-1", unusable);
  StateReadResult wrong;
  wrong.status = StateReadResult::Status::ok;
  wrong.version = 1;
  wrong.data = R"({"stream": "other", "component": "c", "kind": "features"})";
  stored.emplace_back("detectors.stream-0000000000000000", wrong);
  StateReadResult bad_finding;
  bad_finding.status = StateReadResult::Status::ok;
  bad_finding.version = 1;
  bad_finding.data = R"({"next_finding_id": "many"})";
  stored.emplace_back("detectors.engine", bad_finding);
  DetectorEngine e(small_config());
  const auto problems = e.restore(stored);
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_NE(problems[0].find("moved aside"), std::string::npos) << problems[0];
  EXPECT_NE(problems[1].find("does not match"), std::string::npos) << problems[1];
  EXPECT_NE(problems[2].find("detectors.engine"), std::string::npos) << problems[2];
  EXPECT_TRUE(e.snapshot()->streams.empty());
  Feed f(e, "s", 2);
  std::mt19937_64 g(13);
  std::normal_distribution<double> d;
  f.run(5000, 64, [&](double* r) { r[0] = d(g); r[1] = d(g); });
  EXPECT_EQ(e.snapshot()->streams[0]->reference, ReferenceSource::pinned);
}

// Reload (SIGHUP) as mltapd does it: reload() from another thread while the writer thread keeps
// ticking; new thresholds and re-read reference files apply between two batches, the open
// finding keeps its id and the counters continue.
namespace {

std::vector<std::string> reload_now(DetectorEngine& e, Feed& f, const EngineConfig& next) {
  auto done = std::async(std::launch::async, [&] { return e.reload(next, std::chrono::seconds(20)); });
  while (done.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready) e.on_tick(f.now);
  auto report = done.get();
  EXPECT_TRUE(report.has_value());
  return report.value_or(std::vector<std::string>{});
}

bool mentions(const std::vector<std::string>& lines, const std::string& what) {
  for (const auto& l : lines) {
    if (l.find(what) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST(EngineReload, ThresholdsAndReferenceFilesChangeWhileFindingsAndCountersStay) {
  const auto dir = tmpdir() / "reload";
  fs::create_directories(dir);
  const std::string ref = (dir / "ref.profile").string();
  std::mt19937_64 g(21);
  std::normal_distribution<double> d;
  std::vector<double> rows(20000 * 3);
  for (auto& v : rows) v = d(g);
  save_profile(build_profile(rows, 3, {"a", "b", "c"}, ProfileOptions{}), ref);
  auto c = small_config();
  auto st = c.defaults;
  st.reference = ref;
  st.sequential.enabled = false;
  st.drift.numeric_methods = {"wasserstein"};
  c.streams.emplace_back("rs", st);
  DetectorEngine e(c);
  Feed f(e, "rs", 3);
  auto shifted = [&](double* r) { r[0] = d(g); r[1] = d(g) + 1.0; r[2] = d(g); };
  f.run(6000, 100, shifted);
  auto s = e.snapshot();
  const Finding* fd = open_finding(*s, "rs", FindingKind::drift);
  ASSERT_NE(fd, nullptr) << to_json(*s).dump(1);
  const std::uint64_t id = fd->id;

  // A reference file that does not load: refused whole, nothing staged.
  const std::string bad = (dir / "bad.profile").string();
  std::ofstream(bad) << "{\"version\": 1, \"layout\": ";
  auto broken = c;
  broken.streams[0].second.reference = bad;
  try {
    e.reload(broken, std::chrono::milliseconds(0));
    ADD_FAILURE() << "a broken reference file was accepted";
  } catch (const ProfileError& ex) {
    EXPECT_NE(std::string(ex.what()).find("detectors.streams.rs.reference"), std::string::npos) << ex.what();
  }

  // Same reference, unchanged settings: nothing to say.
  EXPECT_TRUE(reload_now(e, f, c).empty());

  // A threshold no shift reaches: the open finding stays (same id) and clears by the new rule.
  auto lax = c;
  lax.streams[0].second.drift.wasserstein = 100;
  auto report = reload_now(e, f, lax);
  EXPECT_TRUE(mentions(report, "stream 'rs': settings changed; applied to the open windows"))
      << testing::PrintToString(report);
  s = e.snapshot();
  fd = open_finding(*s, "rs", FindingKind::drift);
  ASSERT_NE(fd, nullptr);
  EXPECT_EQ(fd->id, id);
  EXPECT_EQ(s->streams[0]->records_total, 6000u);
  // Coarser PSI bins are compiled into the reference: recompiled from the file, windows restart.
  auto coarse = lax;
  coarse.streams[0].second.drift.coarse_bins = 8;
  report = reload_now(e, f, coarse);
  EXPECT_TRUE(mentions(report, "stream 'rs': settings changed; windows and sequential detectors restart"))
      << testing::PrintToString(report);
  lax = coarse;
  f.run(6000, 100, shifted);
  s = e.snapshot();
  EXPECT_EQ(open_finding(*s, "rs", FindingKind::drift), nullptr) << to_json(*s).dump(1);

  // The file rebuilt in place from the shifted population, thresholds back: the new reference is
  // used (no drift on shifted data), the configuration text being the same.
  std::vector<double> moved(15000 * 3);
  for (std::size_t i = 0; i < moved.size(); ++i) moved[i] = d(g) + (i % 3 == 1 ? 1.0 : 0.0);
  save_profile(build_profile(moved, 3, {"a", "b", "c"}, ProfileOptions{}), ref);
  report = reload_now(e, f, c);
  EXPECT_TRUE(mentions(report, "reference " + ref + " reloaded (15000 rows)")) << testing::PrintToString(report);
  f.run(6000, 100, shifted);
  s = e.snapshot();
  EXPECT_EQ(s->streams[0]->reference_rows, 15000u);
  EXPECT_EQ(open_finding(*s, "rs", FindingKind::drift), nullptr) << to_json(*s).dump(1);

  // A reference of another width: not used, and said so; the running one stays.
  std::vector<double> wide(5000 * 4);
  for (auto& v : wide) v = d(g);
  save_profile(build_profile(wide, 4, {"a", "b", "c", "d"}, ProfileOptions{}), ref);
  report = reload_now(e, f, c);
  EXPECT_TRUE(mentions(report, "not used: it has 4 columns, the stream 3")) << testing::PrintToString(report);
  f.run(2000, 100, shifted);
  s = e.snapshot();
  EXPECT_EQ(s->streams[0]->reference_rows, 15000u);
  EXPECT_EQ(s->streams[0]->records_total, 20000u);
}
