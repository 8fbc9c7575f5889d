// Detection delay of the real detector engine against Lorden's bound, and its false-alarm rate.
//
// Each run: a stream of `features` N(0,1) features; the engine pins its reference from the first
// pin_records records (the default configuration, except arl_records and what --mode changes);
// after a random number of further records (1,000..6,000: a random offset inside a window), one
// feature's mean moves by d sd. The delay is the number of records from the first changed record
// to the one at which the detector alarmed, inclusive (CUSUM: the finding's alarm_record; window
// drift: the last record of the fast look that opened the finding, its alarm_record, or the record
// that closed the window that opened it). Lorden's bound for the optimal CUSUM knowing d and
// which of k features: log(k * ARL0) / (d^2 / 2). `--mode both` (the default) measures CUSUM and
// window drift on the same streams and prints them side by side with the ratio.
//
// The false-alarm run: one long same-population stream; CUSUM alarms are counted from the
// sequential finding's alarm records (polled every 4,096 records), window drift from the drift
// findings opened; records per false alarm with an exact Poisson 95% interval. In window mode the
// sequential detectors are off; `--look-records 0` turns the fast looks off (windows decide only
// when they close: the behaviour before them).
//
//   cusum_delay [--mode both|cusum|window] [--runs 50] [--features 30] [--arl 1e6]
//               [--shifts 0.25,0.5,1] [--window-records 5000] [--look-records 16]
//               [--false-alarm-records 2e7] [--seed 1]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "agent/detectors/engine.hpp"
#include "tests/detectors/gaussian_stream.hpp"

using namespace mltap;
using namespace mltap::detectors;

namespace {

struct Options {
  std::string mode = "both";
  int runs = 50;
  std::size_t features = 30;
  double arl = 1e6;
  std::vector<double> shifts{0.25, 0.5, 1.0};
  std::uint64_t window_records = 5000;
  std::uint64_t look_records = DriftSettings{}.look_records;
  double false_alarm_records = 2e7;
  std::uint64_t seed = 1;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "cusum_delay: %s\n", why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    if (a == "--mode") {
      o.mode = v;
      if (o.mode != "cusum" && o.mode != "window" && o.mode != "both") usage("--mode is both, cusum or window");
    } else if (a == "--runs") {
      o.runs = std::atoi(v);
    } else if (a == "--features") {
      o.features = static_cast<std::size_t>(std::atoi(v));
    } else if (a == "--arl") {
      o.arl = std::strtod(v, &end);
    } else if (a == "--window-records") {
      o.window_records = static_cast<std::uint64_t>(std::strtod(v, &end));
    } else if (a == "--look-records") {
      o.look_records = static_cast<std::uint64_t>(std::strtod(v, &end));
    } else if (a == "--false-alarm-records") {
      o.false_alarm_records = std::strtod(v, &end);
    } else if (a == "--seed") {
      o.seed = static_cast<std::uint64_t>(std::strtod(v, &end));
    } else if (a == "--shifts") {
      o.shifts.clear();
      for (const char* p = v; *p;) {
        o.shifts.push_back(std::strtod(p, &end));
        if (end == p) usage("--shifts: numbers separated by commas");
        p = *end == ',' ? end + 1 : end;
      }
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (o.runs < 1 || o.features < 1 || !(o.arl >= 1e3) || o.window_records < 10) usage("bad value");
  return o;
}

EngineConfig config_for(const Options& o, const std::string& mode) {
  EngineConfig c;
  auto& st = c.defaults;
  st.window_time = std::chrono::nanoseconds(0);  // by records only: no clock in this bench
  st.staleness.enabled = false;
  st.throughput.enabled = false;
  st.sequential.arl_records = o.arl;
  st.drift.look_records = o.look_records;
  if (mode == "window") {
    st.sequential.enabled = false;
    st.window_records = o.window_records;
    st.min_window_records = std::min(st.min_window_records, o.window_records);
  }
  return c;
}

// Rows of N(0,1) features, the test's feeder (tests/detectors/gaussian_stream.hpp).
struct Stream : detectors::test::GaussianStream {
  Stream(const Options& o, const std::string& mode, std::uint64_t seed)
      : GaussianStream(config_for(o, mode), seed, o.features, "bench") {}
};

// Earliest alarm record >= from in the open finding of kind k, or max().
std::uint64_t first_alarm(const core::DetectorSnapshot& s, std::uint64_t from,
                          core::FindingKind k = core::FindingKind::sequential_change) {
  std::uint64_t best = std::numeric_limits<std::uint64_t>::max();
  for (const auto& f : s.open_findings) {
    if (f.kind != k) continue;
    for (const auto& t : f.top) {
      if (t.alarm_record >= from) best = std::min(best, t.alarm_record);
    }
  }
  return best;
}

bool has_open(const core::DetectorSnapshot& s, core::FindingKind k) {
  for (const auto& f : s.open_findings) {
    if (f.kind == k) return true;
  }
  return false;
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto i = static_cast<std::size_t>(pos);
  const double frac = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
}

// P(X <= x) for X ~ Poisson(lambda), each term in log space (no underflow for large lambda).
double poisson_cdf(int x, double lambda) {
  double sum = 0;
  for (int i = 0; i <= x; ++i) sum += std::exp(-lambda + i * std::log(lambda) - std::lgamma(i + 1.0));
  return sum;
}

// Exact (Garwood) 95% interval for a Poisson mean given x events.
std::pair<double, double> poisson_interval(int x) {
  auto solve = [](auto f) {  // f decreasing in lambda from >0 to <0
    double lo = 0, hi = 1;
    while (f(hi) > 0) hi *= 2;
    for (int i = 0; i < 100; ++i) {
      const double mid = 0.5 * (lo + hi);
      (f(mid) > 0 ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
  };
  const double upper = solve([&](double l) { return poisson_cdf(x, l) - 0.025; });
  const double lower = x == 0 ? 0 : solve([&](double l) { return 0.025 - (1 - poisson_cdf(x - 1, l)); });
  return {lower, upper};
}

struct ShiftResult {
  double d = 0, bound = 0, median = NAN, q1 = NAN, q3 = NAN;
  int missed = 0, early = 0;
};

struct FalseAlarms {
  double records = 0;
  int count = 0;
  std::uint64_t opened = 0;
};

// Delays of `mode` (cusum or window) at every shift; the seeds depend only on --seed, so that
// both modes see the same streams.
std::vector<ShiftResult> delays_of(const Options& o, const std::string& mode) {
  std::vector<ShiftResult> out;
  std::mt19937_64 seeds(o.seed);
  const std::uint64_t pin = config_for(o, mode).defaults.pin_records;
  const bool cusum = mode == "cusum";
  for (double d : o.shifts) {
    ShiftResult r;
    r.d = d;
    r.bound = std::log(static_cast<double>(o.features) * o.arl) / (d * d / 2);
    const std::uint64_t limit = static_cast<std::uint64_t>(std::max(50.0 * r.bound, 4.0 * static_cast<double>(o.window_records)));
    std::vector<double> delays;
    for (int run = 0; run < o.runs; ++run) {
      Stream s(o, mode, seeds());
      std::mt19937_64 g(seeds());
      const std::size_t changed = g() % o.features;
      const std::uint64_t start = pin + 1000 + g() % 5000;  // first changed record
      while (s.fed() < start) s.feed(std::min<std::uint64_t>(1000, start - s.fed()), changed, 0);
      const auto before = s.snapshot();
      if (has_open(*before, cusum ? core::FindingKind::sequential_change : core::FindingKind::drift)) ++r.early;
      double delay = -1;
      const std::size_t batch = 10;
      while (s.fed() - start < limit) {
        s.feed(batch, changed, d);
        const auto snap = s.snapshot();
        if (cusum) {
          const std::uint64_t a = first_alarm(*snap, start);
          if (a != std::numeric_limits<std::uint64_t>::max()) {
            delay = static_cast<double>(a - start + 1);
            break;
          }
        } else if (snap->counters.findings_opened > before->counters.findings_opened && has_open(*snap, core::FindingKind::drift)) {
          // A fast look names its last record; windows close on a record count that batches of
          // 10 hit exactly.
          const std::uint64_t a = first_alarm(*snap, start, core::FindingKind::drift);
          delay = a != std::numeric_limits<std::uint64_t>::max() ? static_cast<double>(a - start + 1)
                                                                 : static_cast<double>(s.fed() - start);
          break;
        }
      }
      if (delay < 0) ++r.missed;
      else delays.push_back(delay);
    }
    if (!delays.empty()) {
      r.median = quantile(delays, 0.5);
      r.q1 = quantile(delays, 0.25);
      r.q3 = quantile(delays, 0.75);
    }
    out.push_back(r);
  }
  return out;
}

FalseAlarms false_alarms_of(const Options& o, const std::string& mode) {
  FalseAlarms out;
  out.records = o.false_alarm_records;
  if (!(o.false_alarm_records > 0)) return out;
  std::mt19937_64 seeds(o.seed + 1000003);
  Stream s(o, mode, seeds());
  const std::uint64_t pin = config_for(o, mode).defaults.pin_records;
  const std::uint64_t total = pin + static_cast<std::uint64_t>(o.false_alarm_records);
  // An alarm is one (feature, method, alarm record) for CUSUM; Page-Hinkley alarms carry no
  // record: its statistic at the alarm tells them apart.
  std::set<std::tuple<std::string, std::uint64_t, double>> alarms;
  while (s.fed() < total) {
    s.feed(std::min<std::uint64_t>(4096, total - s.fed()), 0, 0);
    if (s.fed() <= pin) continue;
    const auto snap = s.snapshot();
    for (const auto& f : snap->open_findings) {
      if (f.kind != core::FindingKind::sequential_change) continue;
      for (const auto& t : f.top) alarms.emplace(t.feature + "/" + t.method, t.alarm_record, t.alarm_record ? 0.0 : t.score);
    }
    out.opened = snap->counters.findings_opened;
  }
  out.count = mode == "cusum" ? static_cast<int>(alarms.size()) : static_cast<int>(out.opened);
  return out;
}

std::string fmt_median(const ShiftResult& r) {
  if (std::isnan(r.median)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, "%.0f (%.0f-%.0f)", r.median, r.q1, r.q3);
  return b;
}

void print_false_alarms(const char* what, const FalseAlarms& f, double arl) {
  if (!(f.records > 0)) return;
  const auto [lo, hi] = poisson_interval(f.count);
  std::printf("false alarms, %s, on %.3g same-population records after the reference: %d (findings opened: %llu); "
              "records per false alarm: %s (95%% interval %.3g-%s; target %.3g)\n",
              what, f.records, f.count, static_cast<unsigned long long>(f.opened),
              f.count ? std::to_string(static_cast<long long>(f.records / f.count)).c_str() : "> run",
              f.records / hi, lo > 0 ? std::to_string(static_cast<long long>(f.records / lo)).c_str() : "inf", arl);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const std::uint64_t pin = config_for(o, o.mode).defaults.pin_records;
  std::printf("mode %s, %zu N(0,1) features, ARL0 %.3g records, %d runs per shift, pinned reference of %llu records",
              o.mode.c_str(), o.features, o.arl, o.runs, static_cast<unsigned long long>(pin));
  if (o.mode != "cusum") {
    std::printf(", window_records %llu, look_records %llu", static_cast<unsigned long long>(o.window_records),
                static_cast<unsigned long long>(o.look_records));
  }
  std::printf("\n\n");
  std::fflush(stdout);
  if (o.mode != "both") {
    const auto res = delays_of(o, o.mode);
    std::printf("| shift d (sd) | median delay | quartiles | Lorden bound | median / bound | not found | alarms before the change |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    for (const auto& r : res) {
      if (std::isnan(r.median)) {
        std::printf("| %g | - | - | %.0f | - | %d | %d |\n", r.d, r.bound, r.missed, r.early);
        continue;
      }
      std::printf("| %g | %.0f | %.0f-%.0f | %.0f | %.2f | %d | %d |\n", r.d, r.median, r.q1, r.q3, r.bound,
                  r.median / r.bound, r.missed, r.early);
    }
    std::printf("\n");
    print_false_alarms(o.mode == "cusum" ? "CUSUM (sequential alarms)" : "window drift (drift findings)",
                       false_alarms_of(o, o.mode), o.arl);
    return 0;
  }
  const auto cu = delays_of(o, "cusum");
  const auto wi = delays_of(o, "window");
  std::printf("| shift d (sd) | Lorden bound | CUSUM median (quartiles) | CUSUM / bound | window drift median (quartiles) | window / CUSUM | not found (CUSUM, window) | alarms before the change (CUSUM, window) |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (std::size_t i = 0; i < cu.size(); ++i) {
    const auto& c = cu[i];
    const auto& w = wi[i];
    std::printf("| %g | %.0f | %s | %.2f | %s | %.2f | %d, %d | %d, %d |\n", c.d, c.bound, fmt_median(c).c_str(),
                c.median / c.bound, fmt_median(w).c_str(), w.median / c.median, c.missed, w.missed, c.early, w.early);
  }
  std::printf("\n");
  std::fflush(stdout);
  print_false_alarms("CUSUM (sequential alarms)", false_alarms_of(o, "cusum"), o.arl);
  std::fflush(stdout);
  print_false_alarms("window drift (drift findings)", false_alarms_of(o, "window"), o.arl);
  return 0;
}
