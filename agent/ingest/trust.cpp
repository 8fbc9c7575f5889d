#include "agent/ingest/trust.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/pidfd.hpp"
#include "mltap/naming.hpp"

namespace mltap::ingest {

namespace {

// Reads a whole (small, procfs) file; nullopt and errno set on failure.
std::optional<std::string> read_text(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      errno = e;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > (256u << 20)) break;  // a maps file of 256 MiB is not a producer we judge
  }
  ::close(fd);
  return out;
}

std::optional<std::uint32_t> parse_u32(std::string_view s) {
  std::uint32_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (r.ec != std::errc{} || r.ptr == s.data()) return std::nullopt;
  return v;
}

// The numbers after `key` on its line of /proc/<pid>/status ("Uid:\t0\t0\t0\t0").
std::vector<std::uint32_t> status_numbers(const std::string& status, std::string_view key) {
  std::vector<std::uint32_t> out;
  std::size_t pos = 0;
  while (pos < status.size()) {
    const std::size_t end = std::min(status.find('\n', pos), status.size());
    std::string_view line(status.data() + pos, end - pos);
    if (line.substr(0, key.size()) == key) {
      std::istringstream in{std::string(line.substr(key.size()))};
      std::string tok;
      while (in >> tok) {
        if (auto v = parse_u32(tok)) out.push_back(*v);
      }
      return out;
    }
    pos = end + 1;
  }
  return out;
}

// The pid a pidfd refers to, from the agent's own /proc/self/fdinfo (-1 once it exited).
std::optional<long> pidfd_pid(int pidfd) {
  auto text = read_text("/proc/self/fdinfo/" + std::to_string(pidfd));
  if (!text) return std::nullopt;
  const auto at = text->find("\nPid:");
  if (at == std::string::npos) return std::nullopt;
  std::istringstream in(text->substr(at + 5));
  long pid = 0;
  if (!(in >> pid)) return std::nullopt;
  return pid;
}

bool allowed(const ProcessCredentials& who, const struct stat& st, mode_t owner_bits) {
  if (who.uid == 0) return true;  // root reads through DAC (a root producer can read anything)
  const mode_t group_bits = owner_bits >> 3, other_bits = owner_bits >> 6;
  if (st.st_uid == who.uid) return (st.st_mode & owner_bits) == owner_bits;
  bool in_group = st.st_gid == who.gid;
  for (auto g : who.groups) in_group = in_group || st.st_gid == g;
  if (in_group) return (st.st_mode & group_bits) == group_bits;
  return (st.st_mode & other_bits) == other_bits;
}

}  // namespace

namespace {

// Calls fn(dev, ino) for each line of /proc/<pid>/maps text with a well-formed device and inode
// ("address perms offset dev inode [path]": the 4th and 5th fields); stops when fn returns true.
template <class Fn>
bool for_each_mapped_inode(std::string_view maps, Fn&& fn) {
  std::size_t pos = 0;
  while (pos < maps.size()) {
    const std::size_t end = std::min(maps.find('\n', pos), maps.size());
    const std::string_view line = maps.substr(pos, end - pos);
    pos = end + 1;
    std::size_t f = 0, i = 0;
    std::string_view fields[5];
    while (f < 5 && i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      const std::size_t s = i;
      while (i < line.size() && line[i] != ' ') ++i;
      if (i > s) fields[f++] = line.substr(s, i - s);
    }
    if (f < 5) continue;
    const std::string_view d = fields[3];
    const std::size_t colon = d.find(':');
    if (colon == std::string_view::npos) continue;
    unsigned maj = 0, min = 0;
    std::uint64_t inode = 0;
    if (std::from_chars(d.data(), d.data() + colon, maj, 16).ec != std::errc{} ||
        std::from_chars(d.data() + colon + 1, d.data() + d.size(), min, 16).ec != std::errc{} ||
        std::from_chars(fields[4].data(), fields[4].data() + fields[4].size(), inode, 10).ec != std::errc{}) {
      continue;
    }
    if (fn(static_cast<std::uint64_t>(makedev(maj, min)), inode)) return true;
  }
  return false;
}

}  // namespace

bool maps_text_maps_inode(std::string_view maps, std::uint64_t dev, std::uint64_t ino) {
  const unsigned want_major = major(static_cast<dev_t>(dev));
  const unsigned want_minor = minor(static_cast<dev_t>(dev));
  return for_each_mapped_inode(maps, [&](std::uint64_t d, std::uint64_t inode) {
    return inode == ino && major(static_cast<dev_t>(d)) == want_major &&
           minor(static_cast<dev_t>(d)) == want_minor;
  });
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> maps_text_inodes(std::string_view maps) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for_each_mapped_inode(maps, [&](std::uint64_t d, std::uint64_t inode) {
    if (inode != 0) out.emplace_back(d, inode);
    return false;
  });
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

MapsCache::Answer MapsCache::maps(std::uint32_t pid, std::uint64_t start_ticks, std::uint64_t dev,
                                  std::uint64_t ino, std::uint64_t opened_ns, const std::string& proc_dir,
                                  int& error) {
  const std::pair<std::uint32_t, std::uint64_t> key{pid, start_ticks};
  const std::pair<std::uint64_t, std::uint64_t> want{dev, ino};
  auto it = std::find_if(by_process_.begin(), by_process_.end(), [&](const auto& e) { return e.first == key; });
  if (it != by_process_.end()) {
    const Parse& p = it->second;
    if (std::binary_search(p.inodes.begin(), p.inodes.end(), want)) return Answer::mapped;
    if (p.read_ns > opened_ns) return Answer::not_mapped;  // read after the file was opened
  }
  // No parse yet, or one older than the file that does not list it: read afresh.
  Parse fresh;
  fresh.read_ns = monotonic_ns();
  auto text = read_text(proc_dir + "/" + std::to_string(pid) + "/maps");
  ++reads_;
  if (!text) {
    error = errno;
    if (it != by_process_.end()) by_process_.erase(it);
    return error == ENOENT || error == ESRCH ? Answer::gone : Answer::unreadable;
  }
  fresh.inodes = maps_text_inodes(*text);
  const bool found = std::binary_search(fresh.inodes.begin(), fresh.inodes.end(), want);
  if (it != by_process_.end()) {
    it->second = std::move(fresh);
  } else {
    by_process_.emplace_back(key, std::move(fresh));
  }
  return found ? Answer::mapped : Answer::not_mapped;
}

bool path_is_under(const std::string& path, const std::string& dir) {
  if (dir.empty() || path.empty()) return false;
  if (dir == "/") return path[0] == '/';
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  if (path.compare(0, d.size(), d) != 0) return false;
  return path.size() == d.size() || path[d.size()] == '/';
}

bool credentials_can_read_dir(const ProcessCredentials& who, const std::string& dir) {
  if (dir.empty() || dir[0] != '/') return false;
  std::string prefix;
  std::size_t pos = 1;
  struct stat st {};
  if (::stat("/", &st) != 0 || !allowed(who, st, S_IXUSR)) return false;
  while (pos <= dir.size()) {
    std::size_t end = dir.find('/', pos);
    if (end == std::string::npos) end = dir.size();
    if (end > pos) {
      prefix += "/" + dir.substr(pos, end - pos);
      // lstat: the caller passes a resolved path, so a symlink here was swapped in since.
      if (::lstat(prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
      if (!allowed(who, st, S_IXUSR)) return false;
    }
    pos = end + 1;
  }
  return allowed(who, st, S_IRUSR | S_IXUSR);
}

Verification verify_producer(const FileFacts& file, const core::SegmentIdentity& id,
                             std::uint64_t agent_pid_ns, const std::string& proc_dir, MapsCache* maps,
                             std::uint64_t opened_ns) {
  Verification v;
  auto fail = [&](TrustFailure f, std::string detail) {
    v.failure = f;
    v.detail = std::move(detail);
    v.pidfd = UniqueFd();
    return std::move(v);
  };
  const std::uint32_t pid = id.producer.pid;
  const std::string pid_text = std::to_string(pid);
  // A pid is only meaningful in the namespace it was taken in: a producer in a container with its
  // own pid namespace names a pid that is another process (or none) here.
  if (id.pid_ns_inode == 0 || id.pid_ns_inode != agent_pid_ns) {
    return fail(TrustFailure::foreign_pid_ns,
                "pid namespace " + std::to_string(id.pid_ns_inode) + " is not the agent's (" +
                    std::to_string(agent_pid_ns) + ")");
  }
  if (pid == 0) return fail(TrustFailure::process_gone, "pid 0");
  auto ticks = naming::process_start_ticks(pid, proc_dir);
  if (!ticks || *ticks != id.producer.start_ticks) {
    return fail(TrustFailure::process_gone,
                "pid " + pid_text + (ticks ? " started at " + std::to_string(*ticks) + ", header says " +
                                                 std::to_string(id.producer.start_ticks)
                                           : " does not exist"));
  }
  auto status = read_text(proc_dir + "/" + pid_text + "/status");
  if (!status) return fail(TrustFailure::process_gone, "pid " + pid_text + " has no status");
  const auto uids = status_numbers(*status, "Uid:");
  const auto gids = status_numbers(*status, "Gid:");
  if (uids.empty() || gids.empty()) {
    return fail(TrustFailure::process_gone, "pid " + pid_text + ": no Uid/Gid in status");
  }
  v.credentials.uid = uids[0];
  v.credentials.gid = gids[0];
  v.credentials.groups = status_numbers(*status, "Groups:");
  if (file.uid != v.credentials.uid || id.uid != file.uid) {
    return fail(TrustFailure::owner_mismatch,
                "file owner uid " + std::to_string(file.uid) + ", header uid " + std::to_string(id.uid) +
                    ", pid " + pid_text + " runs as uid " + std::to_string(v.credentials.uid));
  }
  // maps, not map_files: following map_files links needs CAP_SYS_ADMIN; maps needs only
  // PTRACE_MODE_READ (same uid, or CAP_SYS_PTRACE) and names device and inode of each mapping.
  MapsCache once;  // without a cache: a fresh read (opened_ns 0: any parse is newer)
  MapsCache& cache = maps ? *maps : once;
  int error = 0;
  switch (cache.maps(pid, id.producer.start_ticks, file.dev, file.ino, maps ? opened_ns : 0, proc_dir, error)) {
    case MapsCache::Answer::mapped: break;
    case MapsCache::Answer::gone: return fail(TrustFailure::process_gone, "pid " + pid_text + " exited");
    case MapsCache::Answer::unreadable:
      return fail(TrustFailure::proc_unreadable,
                  "cannot read " + proc_dir + "/" + pid_text + "/maps: " + std::strerror(error));
    case MapsCache::Answer::not_mapped:
      return fail(TrustFailure::not_mapped, "pid " + pid_text + " does not map this file");
  }
  take_pidfd(pid, id.producer.start_ticks, proc_dir, v);
  return v;
}

void take_pidfd(std::uint32_t pid, std::uint64_t start_ticks, const std::string& proc_dir,
                Verification& v) {
  const std::string pid_text = std::to_string(pid);
  auto fail = [&](TrustFailure f, std::string detail) {
    v.failure = f;
    v.detail = std::move(detail);
    v.pidfd = UniqueFd();
  };
  const int pidfd = core::sys::pidfd_open(static_cast<pid_t>(pid), 0);
  if (pidfd < 0) {
    if (errno == ESRCH) return fail(TrustFailure::process_gone, "pid " + pid_text + " exited");
    return fail(TrustFailure::pidfd_failed, std::string("pidfd_open: ") + std::strerror(errno));
  }
  v.pidfd = UniqueFd(pidfd);
  // The pid may have been reused between the checks before and pidfd_open: the start time read
  // now, with the pidfd held, is the start time of the process the pidfd refers to.
  const auto ticks = naming::process_start_ticks(pid, proc_dir);
  if (!ticks || *ticks != start_ticks) {
    return fail(TrustFailure::process_gone, "pid " + pid_text + " was reused during verification");
  }
  const auto held = pidfd_pid(pidfd);
  if (!held || *held != static_cast<long>(pid)) {
    return fail(TrustFailure::process_gone, "the pidfd of pid " + pid_text + " refers to no live process");
  }
}

}  // namespace mltap::ingest
