#include "core/detector_state.hpp"

#include <cstdio>

namespace mltap::core {
namespace {

// Reference values a method would need for its noise floor to fall to its threshold, at this
// window size (the floor falls like 1/sqrt(n_eff)); 0 when no reference size reaches it.
double reference_needed(double floor, double threshold, double n_ref, double n_window) {
  if (!(floor > threshold) || !(n_ref > 0) || !(n_window > 0)) return 0;
  const double x = std::sqrt(1 / n_ref + 1 / n_window) * threshold / floor;
  const double inv = x * x - 1 / n_window;
  return inv > 0 ? std::ceil(1 / inv) : 0;
}

}  // namespace

std::string format_number(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string power_note(const FeatureResult& r) {
  std::string notes;
  bool any_decides = false, any_powered = false;
  for (const auto& ms : r.scores) {
    if (!(ms.threshold > 0) || !ms.decides) continue;
    any_decides = true;
    any_powered = any_powered || ms.powered;
    if (!(ms.noise_floor > ms.threshold)) continue;
    const double need = reference_needed(ms.noise_floor, ms.threshold, r.noise_reference, r.noise_window);
    if (!notes.empty()) notes += "; ";
    notes += ms.method;
    notes += ms.powered ? " decides only above " : " cannot decide (floor ";
    notes += format_number(ms.noise_floor);
    notes += ms.powered ? " (noise floor; threshold " : " > " + format_number(r.max_floor_ratio) + "x threshold ";
    notes += format_number(ms.threshold) + ")";
    notes += need > 0 ? ", about " + format_number(need) + " reference values would reach the threshold"
                      : ", larger windows needed too";
  }
  if (!(any_decides && !any_powered) && notes.empty()) return {};
  const std::string size = "reference of " + format_number(r.noise_reference) + " values vs window of " + format_number(r.noise_window);
  if (any_decides && !any_powered) return size + ": too small to decide drift on this feature (" + notes + ")";
  return size + ": " + notes;
}

}  // namespace mltap::core
