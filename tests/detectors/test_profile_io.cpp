// Profiles (build, two-phase pinning, round trip, corrupted files), .npy/.csv readers with
// hostile inputs, and the detectors: configuration section.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "agent/detectors/array_io.hpp"
#include "agent/detectors/binning.hpp"
#include "agent/detectors/config.hpp"
#include "agent/detectors/profile.hpp"
#include "agent/detectors/noise.hpp"
#include "core/config_reader.hpp"

using namespace mltap::detectors;
using namespace mltap::core;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir() {
  auto p = fs::temp_directory_path() / ("mltap-det-" + std::to_string(::getpid()));
  fs::create_directories(p);
  return p;
}

std::vector<double> random_rows(std::size_t n, std::size_t cols, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  std::vector<double> v(n * cols);
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t c = 0; c < cols; ++c) {
      v[r * cols + c] = c == 2 ? static_cast<double>(g() % 4) : d(g) * (c + 1);
    }
  }
  return v;
}

std::string npy_header(const std::string& dict, int version = 1) {
  std::string h = dict;
  const std::size_t pre = version == 1 ? 10 : 12;
  h.append((64 - (pre + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(version) + '\0';
  if (version == 1) {
    out += static_cast<char>(h.size() & 0xff);
    out += static_cast<char>(h.size() >> 8);
  } else {
    for (int k = 0; k < 4; ++k) out += static_cast<char>((h.size() >> (8 * k)) & 0xff);
  }
  return out + h;
}

template <typename T>
std::string raw(std::initializer_list<T> v, bool big = false) {
  std::string s;
  for (T x : v) {
    char b[sizeof(T)];
    std::memcpy(b, &x, sizeof(T));
    if (big) std::reverse(b, b + sizeof(T));
    s.append(b, sizeof(T));
  }
  return s;
}

}  // namespace

TEST(Profile, BuildExactBinsAndKinds) {
  const auto rows = random_rows(10000, 4, 1);
  ProfileOptions o;
  const auto p = build_profile(rows, 4, {"a", "b", "c", "d"}, o);
  ASSERT_EQ(p.features.size(), 4u);
  EXPECT_EQ(p.features[0].kind, FeatureKind::numeric);
  EXPECT_EQ(p.features[2].kind, FeatureKind::categorical);  // integer-valued, 4 distinct values
  EXPECT_EQ(p.features[2].categories.size(), 4u);
  EXPECT_TRUE(p.features[2].exhaustive);
  const auto& f = p.features[0];
  EXPECT_EQ(f.edges.size(), 257u);
  std::uint64_t sum = 0;
  for (auto c : f.counts) sum += c;
  EXPECT_EQ(sum, 10000u);
  EXPECT_EQ(f.edges.front(), f.min);
  EXPECT_EQ(f.edges.back(), f.max);
  for (std::size_t i = 0; i + 1 < f.counts.size(); ++i) EXPECT_NEAR(static_cast<double>(f.counts[i]), 10000.0 / 256, 2);
  // Forcing kinds, and errors.
  ProfileOptions forced;
  forced.numeric = {"c"};
  EXPECT_EQ(build_profile(rows, 4, {"a", "b", "c", "d"}, forced).features[2].kind, FeatureKind::numeric);
  forced.numeric = {"zz"};
  EXPECT_THROW(build_profile(rows, 4, {"a", "b", "c", "d"}, forced), ProfileError);
  EXPECT_THROW(build_profile(rows, 4, {"a", "a", "c", "d"}, o), ProfileError);
  EXPECT_THROW(build_profile(rows, 4, {"a", "b"}, o), ProfileError);
  EXPECT_THROW(build_profile(rows, 3, {}, o), ProfileError);  // 40000 % 3 != 0
  EXPECT_THROW(build_profile({}, 4, {}, o), ProfileError);
}

TEST(Profile, AtomsNanAndConstantColumns) {
  std::vector<double> v;
  for (int i = 0; i < 1000; ++i) {
    v.push_back(i % 10 == 0 ? NAN : 1.5);            // constant with NaNs
    v.push_back(i < 900 ? 0.0 : 0.5 + i / 1000.0);   // a big atom at 0
  }
  // A constant float is low-cardinality (categorical) by default; forced numeric, it is binned.
  EXPECT_EQ(build_profile(v, 2, {}, ProfileOptions{}).features[0].kind, mltap::core::FeatureKind::categorical);
  ProfileOptions o;
  o.numeric = {"f0"};
  const auto p = build_profile(v, 2, {}, o);
  EXPECT_EQ(p.features[0].nan, 100u);
  EXPECT_EQ(p.features[0].edges.size(), 2u);
  EXPECT_EQ(p.features[0].edges[0], p.features[0].edges[1]);
  EXPECT_EQ(p.features[1].atoms[0], 1);  // bin [0, next) holds only zeros
  EXPECT_EQ(p.features[1].counts[0], 900u);
}

// Above 65,536 finite values the edges come from a stratified sample (no full sort): the counts
// must still be exact for the edges chosen, the ends the exact minimum and maximum, every bin's
// share within [0.5, 1.5] / bins (docs/profile-format.md), and a heavy value a bin of its own with
// its exact count, as the full-sort rule gives it.
TEST(Profile, LargeBuildsCountExactlyAtSampledEdges) {
  const std::size_t n = 300000;
  std::mt19937_64 g(77);
  std::normal_distribution<double> z;
  std::vector<double> v(n * 2);
  std::size_t heavy = 0;
  for (std::size_t r = 0; r < n; ++r) {
    v[2 * r] = std::exp(z(g));  // skewed, continuous
    // 3% exactly 0.25 amid continuous values, 30% exactly 0: heavy values (atoms)
    const double u = std::uniform_real_distribution<double>(0, 1)(g);
    v[2 * r + 1] = u < 0.30 ? 0.0 : (u < 0.33 ? 0.25 : z(g));
    heavy += v[2 * r + 1] == 0.25;
  }
  ProfileOptions o;
  const auto p = build_profile(v, 2, {"skewed", "atoms"}, o);
  for (std::size_t j = 0; j < 2; ++j) {
    const auto& f = p.features[j];
    ASSERT_EQ(f.kind, FeatureKind::numeric);
    std::vector<double> col(n);
    for (std::size_t r = 0; r < n; ++r) col[r] = v[2 * r + j];
    std::sort(col.begin(), col.end());
    EXPECT_EQ(f.edges.front(), col.front());
    EXPECT_EQ(f.edges.back(), col.back());
    std::uint64_t total = 0;
    double largest = 0, smallest = 1;
    for (std::size_t b = 0; b + 1 < f.edges.size(); ++b) {
      const auto lo = std::lower_bound(col.begin(), col.end(), f.edges[b]);
      const auto hi = b + 2 == f.edges.size() ? col.end() : std::lower_bound(col.begin(), col.end(), f.edges[b + 1]);
      ASSERT_EQ(f.counts[b], static_cast<std::uint64_t>(hi - lo)) << f.name << " bin " << b;
      const bool atom = lo != hi && *lo == f.edges[b] && *(hi - 1) == f.edges[b];
      EXPECT_EQ(f.atoms[b] == 1, atom) << f.name << " bin " << b;
      total += f.counts[b];
      if (!atom) {
        largest = std::max(largest, static_cast<double>(f.counts[b]) / n);
        smallest = std::min(smallest, static_cast<double>(f.counts[b]) / n);
      }
    }
    EXPECT_EQ(total, n);
    EXPECT_LE(largest, 1.5 / o.bins) << f.name;
    if (j == 0) {
      EXPECT_GE(smallest, 0.5 / o.bins) << f.name;
    }
    EXPECT_EQ(p.rank_error, 0.0);
  }
  const auto& a = p.features[1];
  for (double atom_value : {0.0, 0.25}) {
    const auto it = std::find(a.edges.begin(), a.edges.end(), atom_value);
    ASSERT_NE(it, a.edges.end()) << atom_value << " has no edge";
    const auto b = static_cast<std::size_t>(it - a.edges.begin());
    EXPECT_EQ(a.atoms[b], 1) << atom_value << " has no bin of its own";
    if (atom_value == 0.25) {
      EXPECT_EQ(a.counts[b], heavy);
    }
  }
  // The same data gives the same profile (the sample is seeded).
  const auto q = build_profile(v, 2, {"skewed", "atoms"}, o);
  EXPECT_EQ(q.features[0].edges, p.features[0].edges);
  EXPECT_EQ(q.features[1].counts, p.features[1].counts);
}

TEST(Profile, RoundTripIsExact) {
  const auto rows = random_rows(5000, 4, 2);
  ProfileOptions o;
  o.layout = ProfileLayout::predictions;
  const auto p = build_profile(rows, 4, {}, o);
  const auto path = tmpdir() / "p.profile";
  save_profile(p, path.string());
  const auto q = load_profile(path.string());
  EXPECT_EQ(profile_to_json_text(p), profile_to_json_text(q));
  ASSERT_EQ(q.features.size(), 5u);
  EXPECT_EQ(q.features[4].name, "class");
  EXPECT_EQ(q.features[0].edges, p.features[0].edges);  // bit-exact doubles
  ProfileOptions e;
  e.layout = ProfileLayout::embeddings;
  e.embedding_projections = 4;
  const auto emb = build_profile(random_rows(500, 8, 3), 8, {}, e);
  save_profile(emb, path.string());
  EXPECT_EQ(profile_to_json_text(load_profile(path.string())), profile_to_json_text(emb));
}

TEST(Profile, CorruptedFilesGiveClearErrors) {
  const auto p = build_profile(random_rows(2000, 2, 4), 2, {"x", "y"}, ProfileOptions{});
  const std::string good = profile_to_json_text(p);
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    try {
      profile_from_json_text(text, "bad.profile");
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const ProfileError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.profile"), std::string::npos) << e.what();
    }
  };
  auto edit = [&](const std::string& from, const std::string& to) {
    auto s = good;
    const auto k = s.find(from);
    EXPECT_NE(k, std::string::npos) << from;
    return s.replace(k, from.size(), to);
  };
  expect_error("", "JSON");
  expect_error(good.substr(0, good.size() / 2), "JSON");
  expect_error("[1,2,3]", "object");
  expect_error(edit("\"mltap-profile\"", "\"other\""), "not an mltap profile");
  expect_error(edit("\"version\": 2", "\"version\": 3"), "unsupported profile version 3");
  expect_error(edit("\"version\": 2", "\"version\": 0"), "unsupported profile version 0");
  expect_error(edit("\"layout\": \"features\"", "\"layout\": \"cubes\""), "layout");
  expect_error(edit("\"kind\": \"numeric\"", "\"kind\": \"text\""), "kind");
  expect_error(edit("\"finite\": 2000", "\"finite\": -5"), "non-negative");
  expect_error(edit("\"finite\": 2000", "\"finite\": 1999"), "nan + inf + finite");
  expect_error(edit("\"name\": \"y\"", "\"name\": \"x\""), "duplicate feature");
  expect_error(edit("\"min\":", "\"minimum\":"), "missing field 'min'");
  expect_error(edit("\"mean\":", "\"mean\": \"NaN\", \"x\":"), "expected a number");
  {
    // Swap two edges: not increasing.
    auto j = nlohmann::json::parse(good);
    std::swap(j["features"][0]["edges"][3], j["features"][0]["edges"][4]);
    expect_error(j.dump(), "strictly increasing");
    j = nlohmann::json::parse(good);
    j["features"][0]["counts"][0] = 1000000;
    expect_error(j.dump(), "exceeds");
    j = nlohmann::json::parse(good);
    j["features"][0]["atoms"].push_back(1);
    expect_error(j.dump(), "sizes disagree");
    j = nlohmann::json::parse(good);
    j["features"][0]["edges"] = std::vector<double>(5000, 1.0);
    expect_error(j.dump(), "too many");
    j = nlohmann::json::parse(good);
    j["features"][0]["noise"]["methods"]["wasserstein"]["sd"].push_back(0.1);
    expect_error(j.dump(), "one mean and one sd per window size");
    j = nlohmann::json::parse(good);
    j["features"][0]["noise"]["methods"]["psi"]["mean"][0] = -1;
    expect_error(j.dump(), "must be >= 0");
    j = nlohmann::json::parse(good);
    j["features"][0]["noise"]["windows"][1] = 1;
    expect_error(j.dump(), "increasing");
  }
  EXPECT_THROW(load_profile((tmpdir() / "missing.profile").string()), ProfileError);
  EXPECT_THROW(load_profile(tmpdir().string()), ProfileError);
}

TEST(Profile, PinnedTwoPhaseCountsExactlyAndExtendsRange) {
  std::mt19937_64 g(5);
  std::normal_distribution<double> d;
  PinnedOptions o;
  PinnedFeatureBuilder b(o);
  std::vector<double> a(5000), rest(15000);
  for (auto& x : a) x = d(g);
  for (auto& x : rest) x = 1.2 * d(g);  // wider: values beyond phase A's range
  rest[7] = NAN;
  b.add(a.data(), a.size(), 1);
  b.fit();
  b.add(rest.data(), rest.size(), 1);
  const auto f = b.finish("x");
  EXPECT_EQ(f.values, 20000u);
  EXPECT_EQ(f.nan, 1u);
  std::uint64_t sum = 0;
  for (auto c : f.counts) sum += c;
  EXPECT_EQ(sum, 14999u);  // phase B, exactly
  for (std::size_t i = 1; i < f.edges.size(); ++i) ASSERT_GT(f.edges[i], f.edges[i - 1]);
  EXPECT_LE(f.edges.front(), *std::min_element(rest.begin() + 8, rest.end()));
  ReferenceProfile p;
  p.columns = {"x"};
  p.features = {f};
  EXPECT_NO_THROW(validate_profile(p, "pinned"));
  // Exact counts at the edges: every phase-B value lands in the bin the edges say.
  const auto nr = compile_numeric(f, 16, 0);
  NumericWindow w;
  w.reset(nr.lookup.bins());
  std::vector<double> finite_rest;
  for (double x : rest) if (x == x) finite_rest.push_back(x);
  add_numeric(nr, w, finite_rest.data(), finite_rest.size(), 1);
  EXPECT_EQ(w.counts.front(), 0u);
  EXPECT_EQ(w.counts.back(), 0u);
  for (std::size_t i = 0; i < f.counts.size(); ++i) EXPECT_EQ(w.counts[i + 1], f.counts[i]) << i;
}

TEST(Npy, ReadsEveryDtypeOrderAndEndianness) {
  const auto dir = tmpdir();
  Matrix m;
  m.rows = 3;
  m.cols = 2;
  m.values = {1, 2, 3, 4, 5, NAN};
  write_npy((dir / "a.npy").string(), m);
  const auto r = read_npy((dir / "a.npy").string());
  EXPECT_EQ(r.rows, 3u);
  EXPECT_EQ(r.cols, 2u);
  EXPECT_EQ(r.values[4], 5);
  EXPECT_TRUE(std::isnan(r.values[5]));
  // big-endian int32, version 2 header
  auto b = parse_npy(npy_header("{'descr': '>i4', 'fortran_order': False, 'shape': (2, 2), }", 2) +
                         raw<std::int32_t>({1, -2, 3, 4}, true), "be");
  EXPECT_EQ(b.values, (std::vector<double>{1, -2, 3, 4}));
  EXPECT_EQ(b.dtype, "int32");
  // Fortran order 2x3: memory holds columns.
  auto f = parse_npy(npy_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }") +
                         raw<float>({1, 4, 2, 5, 3, 6}), "f");
  EXPECT_EQ(f.values, (std::vector<double>{1, 2, 3, 4, 5, 6}));
  // 3-D Fortran: element (i,j,k) at i + 2*(j + 2*k).
  auto f3 = parse_npy(npy_header("{'descr': '<u1', 'fortran_order': True, 'shape': (2, 2, 2), }") +
                          std::string("\x00\x04\x02\x06\x01\x05\x03\x07", 8), "f3");
  EXPECT_EQ(f3.values, (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(f3.cols, 4u);
  EXPECT_EQ(f3.row_shape, (std::vector<std::uint32_t>{2, 2}));
  auto h = parse_npy(npy_header("{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }") +
                         raw<std::uint16_t>({0x3c00, 0xc000, 0x7e00}), "h");
  EXPECT_EQ(h.values[0], 1.0);
  EXPECT_EQ(h.values[1], -2.0);
  EXPECT_TRUE(std::isnan(h.values[2]));
  EXPECT_EQ(h.cols, 1u);
  auto bo = parse_npy(npy_header("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }") + std::string("\x01\x00", 2), "b");
  EXPECT_EQ(bo.values, (std::vector<double>{1, 0}));
}

TEST(Npy, HostileFilesAreRejectedWithReasons) {
  auto expect = [](const std::string& bytes, const std::string& needle) {
    try {
      parse_npy(bytes, "evil.npy");
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const ArrayError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string ok = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }";
  const std::string data = raw<double>({1, 2, 3, 4});
  expect("", "bad magic");
  expect("PK\x03\x04 not numpy at all", "bad magic");
  expect(std::string("\x93NUMPY\x09\x00\x10\x00", 10), "version 9");
  expect(std::string("\x93NUMPY\x01\x00\xff\xff", 10), "header length");
  expect(npy_header("{'descr': '<c16', 'fortran_order': False, 'shape': (2, 2), }") + data, "unsupported dtype");
  expect(npy_header("{'descr': '|O', 'fortran_order': False, 'shape': (2, 2), }") + data, "unsupported dtype");
  expect(npy_header("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,), }") + data, "structured");
  expect(npy_header("{'descr': '<f8', 'shape': (2, 2), }") + data, "lacks");
  expect(npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 2), }") + data, "non-negative");
  expect(npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }") + data, "too large");
  expect(npy_header(ok) + data.substr(0, 20), "truncated");
  expect(npy_header(ok) + data + "xx", "trailing");
  expect(npy_header("{'descr': '<f8, 'fortran_order': False}") + data, "header");
  expect(npy_header("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (2, 2), }") + data, "True or False");
  expect(npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (), }"), "0-d");
  expect(npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), 'evil': 1}") + data, "unknown key");
  EXPECT_THROW(read_npy("/nonexistent/x.npy"), ArrayError);
  EXPECT_THROW(read_array("/etc/hostname.parquet"), ArrayError);
}

TEST(Csv, HeaderTokensQuotesAndErrors) {
  auto m = parse_csv("a,b,\"c, d\"\r\n1,2,3\r\n4,NaN,inf\n\n-5,,\"7\"\n", "t.csv");
  EXPECT_EQ(m.names, (std::vector<std::string>{"a", "b", "c, d"}));
  EXPECT_EQ(m.rows, 3u);
  EXPECT_TRUE(std::isnan(m.values[4]));
  EXPECT_TRUE(std::isinf(m.values[5]));
  EXPECT_TRUE(std::isnan(m.values[7]));
  EXPECT_EQ(m.values[8], 7);
  auto n = parse_csv("\xEF\xBB\xBF" "1;2\n3;4\n", "s.csv", CsvOptions{';', CsvOptions::Header::automatic, 0});
  EXPECT_TRUE(n.names.empty());
  EXPECT_EQ(n.values, (std::vector<double>{1, 2, 3, 4}));
  auto expect = [](const std::string& text, const std::string& needle) {
    try {
      parse_csv(text, "bad.csv");
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const ArrayError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect("a,b\n1,2\n3\n", "bad.csv:3: 1 fields, expected 2");
  expect("a,b\n1,2\n3,x7\n", "bad.csv:3: field 2 is not a number: 'x7'");
  expect("a,b\n1,\"2\n", "unterminated");
  expect("", "empty");
  expect("1,2\n1e999,2\n", "not a number");
}

TEST(Config, DefaultsOverridesAndErrorsWithLineAndColumn) {
  using mltap::core::ConfigError;
  using mltap::core::ConfigSection;
  auto parse = [](const std::string& yaml) {
    auto root = mltap::core::load_text(yaml, "cfg.yaml");
    ConfigSection top(root, "cfg.yaml", "");
    auto sec = top.child("detectors");
    return parse_engine_config(sec);
  };
  const auto d = parse("other: 1\n");
  EXPECT_EQ(d.defaults.window_records, 5000u);
  EXPECT_EQ(d.defaults.drift.psi, 0.2);
  // The embedded defaults document parses to the built-in defaults.
  auto root = mltap::core::load_text(default_config_yaml(), "defaults");
  ConfigSection top(root, "defaults", "");
  auto sec = top.child("detectors");
  const auto e = parse_engine_config(sec);
  EXPECT_EQ(e.defaults.window_records, d.defaults.window_records);
  EXPECT_EQ(e.defaults.embedding.seed, d.defaults.embedding.seed);
  EXPECT_EQ(e.defaults.sequential.arl_records, d.defaults.sequential.arl_records);
  EXPECT_EQ(e.defaults.sequential.shifts, d.defaults.sequential.shifts);
  EXPECT_EQ(e.defaults.sequential.clip, d.defaults.sequential.clip);
  EXPECT_EQ(e.snapshot_interval, d.snapshot_interval);

  const auto c = parse(R"(detectors:
  window_records: 2000
  drift:
    thresholds: {psi: 0.3}
  streams:
    fraud:
      reference: /tmp/f.profile
      window_seconds: 5s
      min_window_records: 100
      quality: {nan_rate: 0.02}
)");
  EXPECT_EQ(c.defaults.window_records, 2000u);
  const auto& f = c.settings_for("fraud");
  EXPECT_EQ(f.reference, "/tmp/f.profile");
  EXPECT_EQ(f.window_records, 2000u);  // inherited
  EXPECT_EQ(f.drift.psi, 0.3);         // inherited
  EXPECT_EQ(f.window_time, std::chrono::seconds(5));
  EXPECT_EQ(f.quality.nan_rate, 0.02);
  EXPECT_EQ(c.settings_for("other").reference, "");

  auto expect = [&](const std::string& yaml, const std::string& needle, int line, int col) {
    try {
      parse(yaml);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(e.line(), line) << e.what();
      EXPECT_EQ(e.column(), col) << e.what();
    }
  };
  expect("detectors:\n  windw_records: 5\n", "unknown key 'windw_records'", 2, 3);
  expect("detectors:\n  streams:\n    s1:\n      drift:\n        thresholds: {psi: -1}\n", "psi", 5, 27);
  expect("detectors:\n  drift:\n    numeric_methods: [ks, magic]\n", "unknown method 'magic'", 3, 22);
  expect("detectors:\n  reference: x.profile\n", "per stream", 2, 14);
  expect("detectors:\n  window_records: many\n", "expected an integer", 2, 19);
  expect("detectors:\n  window_records: 100\n  min_window_records: 200\n", "must not exceed", 3, 23);
  expect("detectors:\n  sequential: {method: adwin}\n", "must be one of", 2, 24);
  expect("detectors:\n  sequential: {shifts: [0.5, big]}\n", "'big' is not a shift", 2, 24);
  expect("detectors:\n  sequential: {shifts: [0.5, 0.5]}\n", "listed twice", 2, 24);
  expect("detectors:\n  sequential: {shifts: []}\n", "1 to 8 shifts", 2, 24);
  expect("detectors:\n  sequential: {clip: 0.5}\n", "clip", 2, 22);
}

// A version-1 profile (written before noise estimates existed; tests/detectors/fixtures) still
// loads, and the engine estimates its noise when it uses it: the same decision levels as a
// version-2 profile of the same data.
TEST(Profile, VersionOneFixtureStillLoads) {
  const auto v1 = load_profile(std::string(MLTAP_FIXTURES) + "/profile_v1.json");
  EXPECT_EQ(v1.version, 1);
  ASSERT_EQ(v1.features.size(), 2u);
  for (const auto& f : v1.features) EXPECT_TRUE(f.noise.empty()) << f.name;
  const auto est = mltap::detectors::estimate_noise(v1.features[0], mltap::detectors::NoiseOptions{});
  ASSERT_FALSE(est.empty());
  mltap::detectors::NoiseMoments m;
  ASSERT_TRUE(mltap::detectors::noise_moments(est, "wasserstein", 2000, 5000, m));
  EXPECT_GT(m.mean, 0.0);
  EXPECT_LT(m.mean, 0.2);
  // Saved again, it is a version-2 document (what this build writes) that reads back.
  auto copy = v1;
  copy.version = mltap::detectors::kProfileVersion;
  const auto again = profile_from_json_text(profile_to_json_text(copy), "v2");
  EXPECT_EQ(again.version, 2);
}

// estimate_profile_noise with its helper thread (every other feature) gives exactly the estimates
// of one thread: each feature has its own seed, and each thread writes only its own features.
TEST(Profile, NoiseEstimatesDoNotDependOnTheHelperThread) {
  const auto rows = random_rows(5000, 5, 7);
  ProfileOptions o;
  auto one = build_profile(rows, 5, {"a", "b", "c", "d", "e"}, o);
  auto two = one;
  mltap::detectors::NoiseOptions no;
  no.helper_thread = false;
  mltap::detectors::estimate_profile_noise(one, no);
  no.helper_thread = true;
  mltap::detectors::estimate_profile_noise(two, no);
  ASSERT_EQ(one.features.size(), two.features.size());
  for (std::size_t i = 0; i < one.features.size(); ++i) {
    const auto& a = one.features[i].noise;
    const auto& b = two.features[i].noise;
    ASSERT_FALSE(a.empty()) << one.features[i].name;
    ASSERT_EQ(a.methods.size(), b.methods.size()) << one.features[i].name;
    for (std::size_t m = 0; m < a.methods.size(); ++m) {
      EXPECT_EQ(a.methods[m].method, b.methods[m].method);
      EXPECT_EQ(a.methods[m].mean, b.methods[m].mean) << one.features[i].name << " " << a.methods[m].method;
      EXPECT_EQ(a.methods[m].sd, b.methods[m].sd) << one.features[i].name << " " << a.methods[m].method;
    }
  }
}
