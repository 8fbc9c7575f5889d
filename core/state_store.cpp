#include "core/state_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <nlohmann/json.hpp>

#include "core/time.hpp"
#include "core/unique_fd.hpp"

namespace mltap::core {
namespace {

constexpr const char* kFormat = "mltap-state";
constexpr const char* kSuffix = ".json";
// A state document is small (references are a few hundred KiB at most): a larger file is not one.
constexpr off_t kMaxBytes = 64 << 20;

std::string errno_text(int err) { return std::strerror(err); }

bool write_fully(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// mkdir -p with mode 0700 for what it creates.
bool make_dirs(const std::string& dir, std::string& error) {
  std::string path;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    path = dir.substr(0, pos);
    if (path.empty()) continue;
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      error = "cannot create state directory " + path + ": mkdir: " + errno_text(errno);
      return false;
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    error = "state directory " + dir + " is not a directory";
    return false;
  }
  return true;
}

bool fsync_dir(const std::string& dir, std::string& error) {
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0 || ::fsync(d.get()) != 0) {
    error = "cannot fsync state directory " + dir + ": " + errno_text(errno);
    return false;
  }
  return true;
}

}  // namespace

StateStore::StateStore(std::string dir) : dir_(std::move(dir)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

bool StateStore::valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 64 || name == "." || name == "..") return false;
  if (name.front() == '.') return false;  // no hidden files, no "..x" that reads like a parent
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
  });
}

bool StateStore::prepare(std::string& error) const { return make_dirs(dir_, error); }

bool StateStore::write(const StateDocument& doc, std::string& error) const {
  if (!valid_name(doc.name)) {
    error = "invalid state document name '" + doc.name + "'";
    return false;
  }
  nlohmann::json j;
  j["format"] = kFormat;
  j["name"] = doc.name;
  j["version"] = doc.version;
  j["written_unix_ns"] = unix_now_ns();
  try {
    j["data"] = nlohmann::json::parse(doc.data);
  } catch (const nlohmann::json::exception& e) {
    error = "state document '" + doc.name + "' is not JSON: " + e.what();
    return false;
  }
  if (!make_dirs(dir_, error)) return false;
  const std::string path = dir_ + "/" + doc.name + kSuffix;
  const std::string tmp = dir_ + "/." + doc.name + kSuffix + ".tmp";
  const std::string text = j.dump() + "\n";
  {
    UniqueFd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (f.get() < 0) {
      error = "cannot write " + tmp + ": open: " + errno_text(errno);
      return false;
    }
    if (!write_fully(f.get(), text)) {
      error = "cannot write " + tmp + ": write: " + errno_text(errno);
      ::unlink(tmp.c_str());
      return false;
    }
    if (::fsync(f.get()) != 0) {
      error = "cannot write " + tmp + ": fsync: " + errno_text(errno);
      ::unlink(tmp.c_str());
      return false;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    error = "cannot replace " + path + ": rename: " + errno_text(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  // The rename is durable only once the directory is.
  return fsync_dir(dir_, error);
}

std::size_t StateStore::write_all(const std::vector<StateDocument>& docs,
                                  std::vector<std::string>& errors) const {
  std::size_t n = 0;
  for (const auto& d : docs) {
    std::string err;
    if (write(d, err)) {
      ++n;
    } else {
      errors.push_back(std::move(err));
    }
  }
  return n;
}

StateReadResult StateStore::read(std::string_view name, std::uint32_t max_version) const {
  StateReadResult r;
  if (!valid_name(name)) {
    r.status = StateReadResult::Status::unusable;
    r.detail = "invalid state document name '" + std::string(name) + "'";
    return r;
  }
  const std::string path = dir_ + "/" + std::string(name) + kSuffix;
  std::string reason;
  {
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (f.get() < 0) {
      if (errno == ENOENT) return r;  // missing
      reason = "open: " + errno_text(errno);
    } else {
      struct stat st {};
      std::string text;
      if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        reason = "not a regular file";
      } else if (st.st_size > kMaxBytes) {
        reason = "larger than " + std::to_string(kMaxBytes) + " bytes";
      } else {
        text.resize(static_cast<std::size_t>(st.st_size));
        std::size_t off = 0;
        while (off < text.size()) {
          const ssize_t n = ::read(f.get(), text.data() + off, text.size() - off);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) break;
          off += static_cast<std::size_t>(n);
        }
        text.resize(off);
        try {
          const auto j = nlohmann::json::parse(text);
          if (!j.is_object() || !j.contains("format") || j["format"] != kFormat) {
            reason = "not an mltap state document (no \"format\": \"mltap-state\")";
          } else if (!j.contains("name") || !j["name"].is_string() || j["name"] != name) {
            reason = "the document's name is not '" + std::string(name) + "'";
          } else if (!j.contains("version") || !j["version"].is_number_unsigned() ||
                     j["version"].get<std::uint64_t>() == 0) {
            reason = "no valid \"version\"";
          } else if (j["version"].get<std::uint64_t>() > max_version) {
            reason = "version " + std::to_string(j["version"].get<std::uint64_t>()) +
                     " is newer than this mltapd reads (up to " + std::to_string(max_version) + ")";
          } else if (!j.contains("data")) {
            reason = "no \"data\"";
          } else {
            r.status = StateReadResult::Status::ok;
            r.version = j["version"].get<std::uint32_t>();
            r.data = j["data"].dump();
            return r;
          }
        } catch (const nlohmann::json::exception& e) {
          reason = std::string("not valid JSON: ") + e.what();
        }
      }
    }
  }
  r.status = StateReadResult::Status::unusable;
  const std::string aside =
      path + ".unusable-" + std::to_string(static_cast<long long>(std::time(nullptr)));
  if (::rename(path.c_str(), aside.c_str()) == 0) {
    std::string ignored;
    fsync_dir(dir_, ignored);
    r.detail = path + ": " + reason + "; moved aside to " + aside;
  } else {
    r.detail = path + ": " + reason + "; could not move it aside to " + aside + ": " +
               errno_text(errno);
  }
  return r;
}

bool StateStore::remove(std::string_view name, std::string& error) const {
  if (!valid_name(name)) {
    error = "invalid state document name '" + std::string(name) + "'";
    return false;
  }
  const std::string path = dir_ + "/" + std::string(name) + kSuffix;
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    error = "cannot remove " + path + ": " + errno_text(errno);
    return false;
  }
  std::string ignored;
  fsync_dir(dir_, ignored);  // removed either way; durability of the removal is best effort
  return true;
}

std::vector<std::string> StateStore::list(std::string_view prefix) const {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return out;
  const std::string_view suffix = kSuffix;
  while (const dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n.size() <= suffix.size() || n.substr(n.size() - suffix.size()) != suffix) continue;
    n.remove_suffix(suffix.size());
    if (n.substr(0, prefix.size()) != prefix || !valid_name(n)) continue;
    out.emplace_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace mltap::core
