// Fuzz target: the reference-profile loader of agent/detectors (profile_from_json_text, which
// ends in validate_profile): the files `mltap profile` and mltap.Profile write, which mltapd loads
// from /etc/mltap/profiles and from its state folder.
//
// Properties: a bad file is refused with ProfileError naming the origin, nothing else escapes; a
// profile that loads passes validate_profile again and survives a save/load round trip
// unchanged (same JSON text), and the engine's row transform can be built from it.
#include <string>
#include <vector>

#include "agent/detectors/profile.hpp"
#include "fuzz_support.hpp"

using namespace mltap::detectors;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string origin = "fuzz.json";
  ReferenceProfile p;
  try {
    p = profile_from_json_text(text, origin);
  } catch (const ProfileError& e) {
    FUZZ_CHECK(std::string(e.what()).find(origin) != std::string::npos, "error not naming the origin: %s", e.what());
    return 0;
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, "profile refused by %s instead of ProfileError: %s", typeid(e).name(), e.what());
  }
  try {
    validate_profile(p, origin);
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, "a loaded profile fails validation: %s", e.what());
  }
  std::string again;
  try {
    const std::string saved = profile_to_json_text(p);
    const ReferenceProfile q = profile_from_json_text(saved, origin);
    again = profile_to_json_text(q);
    FUZZ_CHECK(again == saved, "save/load round trip changed the profile");
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, "a loaded profile does not survive save/load: %s", e.what());
  }
  // The engine's transform from the profile's shape (as engine_reference does for embeddings and
  // predictions); bounded so a legal 2^20-dims embedding profile does not dominate the run.
  if (p.column_count() <= 4096) {
    ProfileOptions o;
    o.layout = p.layout;
    o.class_threshold = p.class_threshold;
    if (p.embedding) {
      o.embedding_projections = p.embedding->projections;
      o.embedding_seed = p.embedding->seed;
    }
    try {
      RowTransform t(p.layout, p.column_count(), o);
      std::vector<double> row(t.in_columns(), 0.5), out(t.out_columns());
      t.apply(row.data(), out.data());
    } catch (const ProfileError&) {
      // options the builder refuses (e.g. zero projections) are refused, not crashed on
    }
  }
  return 0;
}
