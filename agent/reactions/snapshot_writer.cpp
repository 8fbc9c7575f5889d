#include "agent/reactions/snapshot_writer.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "agent/reactions/audit_log.hpp"
#include "core/time.hpp"

namespace mltap::reactions {

using core::alert_status_name;
using core::AlertEvent;
using core::ControlPlane;

namespace fs = std::filesystem;

namespace {

constexpr const char* kTempPrefix = ".tmp-";
constexpr const char* kFormat = "mltap-incident/1";

std::string dump(const nlohmann::json& j) {
  return j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Writes `data` to `path`; returns bytes written or throws.
std::uint64_t write_file(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
  return data.size();
}

std::uint64_t tree_bytes(const fs::path& dir) {
  std::uint64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2)) total += it->file_size(e2);
  }
  return total;
}

}  // namespace

bool is_bundle_name(const std::string& name) {
  // YYYYMMDDTHHMMSS.mmmZ-NNNNNN-<reaction name>
  static constexpr std::string_view kShape = "ddddddddTdddddd.dddZ-dddddd-";
  if (name.size() <= kShape.size() || name.size() > kShape.size() + 64) return false;
  for (std::size_t i = 0; i < kShape.size(); ++i) {
    const bool ok = kShape[i] == 'd' ? std::isdigit(static_cast<unsigned char>(name[i])) != 0 : name[i] == kShape[i];
    if (!ok) return false;
  }
  return valid_reaction_name(std::string_view(name).substr(kShape.size()));
}

SnapshotWriter::SnapshotWriter(SnapshotAction spec, std::string reaction)
    : spec_(std::move(spec)), reaction_(std::move(reaction)) {}

std::string SnapshotWriter::prepare() {
  std::error_code ec;
  fs::create_directories(spec_.directory, ec);
  if (ec) return "cannot create '" + spec_.directory + "': " + ec.message();
  fs::permissions(spec_.directory, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec,
                  fs::perm_options::replace, ec);
  for (fs::directory_iterator it(spec_.directory, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.starts_with(kTempPrefix) && is_bundle_name(name.substr(5))) {
      std::error_code e2;
      fs::remove_all(it->path(), e2);
    }
  }
  return ec ? "cannot list '" + spec_.directory + "': " + ec.message() : std::string();
}

SnapshotResult SnapshotWriter::write(const AlertEvent& alert, const std::string& stream,
                                     ControlPlane& control, const SnapshotProviders& providers) {
  SnapshotResult result;
  char seq[32];
  std::snprintf(seq, sizeof seq, "%06llu", static_cast<unsigned long long>(++seq_ % 1000000));
  const std::string name = core::format_utc(core::unix_now_ns(), core::UtcStyle::basic) + "-" + seq + "-" + reaction_;
  const fs::path final_dir = fs::path(spec_.directory) / name;
  const fs::path temp_dir = fs::path(spec_.directory) / (kTempPrefix + name);
  try {
    std::error_code ec;
    fs::create_directories(spec_.directory, ec);
    if (!fs::create_directory(temp_dir, ec) || ec) {
      throw std::runtime_error("cannot create " + temp_dir.string() + ": " + ec.message());
    }
    nlohmann::json files = nlohmann::json::array();
    nlohmann::json errors = nlohmann::json::array();
    nlohmann::json truncated = nlohmann::json::object();

    // Raw records.
    const auto records = control.recent_records(stream, spec_.max_records, spec_.max_record_bytes);
    std::string index;
    std::string payloads;
    for (const auto& r : records) {
      if (payloads.size() + r.payload.size() > spec_.max_record_bytes) {
        truncated["records"] = "max_record_bytes reached";
        break;
      }
      nlohmann::json line = {
          {"producer", {{"pid", r.producer.pid}, {"start_ticks", r.producer.start_ticks}}},
          {"seq", r.seq},
          {"timestamp_ns", r.timestamp_ns},
          {"dtype", r.dtype},
          {"row_shape", r.row_shape},
          {"rows", r.rows},
          {"trace_ids", r.trace_ids},
          {"offset", payloads.size()},
          {"bytes", r.payload.size()},
      };
      index += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      index += '\n';
      payloads.append(reinterpret_cast<const char*>(r.payload.data()), r.payload.size());
      ++result.records;
    }
    files.push_back({{"name", "records.jsonl"}, {"bytes", write_file(temp_dir / "records.jsonl", index)}});
    files.push_back({{"name", "records.bin"}, {"bytes", write_file(temp_dir / "records.bin", payloads)}});

    // Provider documents.
    const std::pair<const char*, const JsonProvider*> docs[] = {
        {"detector_state", &providers.detector_state},
        {"finding", &providers.finding},
        {"timeline", &providers.timeline},
        {"retained", &providers.retained},
    };
    for (const auto& [doc, provider] : docs) {
      if (!*provider) continue;
      std::string text;
      try {
        text = dump((*provider)(stream, alert));
      } catch (const std::exception& e) {
        errors.push_back({{"file", std::string(doc) + ".json"}, {"error", e.what()}});
        continue;
      }
      if (text.size() > spec_.max_json_bytes) {
        truncated[doc] = "document of " + std::to_string(text.size()) + " bytes > max_json_bytes";
        text = dump({{"truncated", true}, {"bytes", text.size()}});
      }
      const std::string file = std::string(doc) + ".json";
      files.push_back({{"name", file}, {"bytes", write_file(temp_dir / file, text)}});
    }

    nlohmann::json manifest = {
        {"format", kFormat},
        {"created", core::format_utc(core::unix_now_ns())},
        {"reaction", reaction_},
        {"stream", stream},
        {"alert",
         {{"fingerprint", alert.fingerprint},
          {"status", alert_status_name(alert.status)},
          {"startsAt", alert.starts_at},
          {"labels", alert.labels},
          {"annotations", alert.annotations},
          {"generatorURL", alert.generator_url}}},
        {"records", result.records},
        {"files", files},
        {"truncated", truncated},
        {"errors", errors},
    };
    write_file(temp_dir / "manifest.json", dump(manifest));
    fs::rename(temp_dir, final_dir);
    result.ok = true;
    result.bundle = final_dir.string();
    result.bytes = tree_bytes(final_dir);
    enforce_limits(name, result);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(temp_dir, ec);
    result.ok = false;
    result.error = e.what();
  }
  return result;
}

void SnapshotWriter::enforce_limits(const std::string& keep, SnapshotResult& result) const {
  struct Bundle {
    std::string name;
    std::uint64_t bytes;
  };
  std::vector<Bundle> bundles;
  std::error_code ec;
  for (fs::directory_iterator it(spec_.directory, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code e2;
    if (!is_bundle_name(name) || !it->is_directory(e2) || it->is_symlink(e2)) continue;
    bundles.push_back({name, tree_bytes(it->path())});
  }
  std::sort(bundles.begin(), bundles.end(), [](const Bundle& a, const Bundle& b) { return a.name < b.name; });
  std::uint64_t total = 0;
  for (const auto& b : bundles) total += b.bytes;
  std::size_t count = bundles.size();
  for (const auto& b : bundles) {
    if (count <= spec_.max_bundles && total <= spec_.max_total_bytes) break;
    if (b.name == keep) continue;
    std::error_code e2;
    fs::remove_all(fs::path(spec_.directory) / b.name, e2);
    if (e2) continue;
    --count;
    total -= b.bytes;
    ++result.removed_bundles;
  }
}

}  // namespace mltap::reactions
