#include "bpf/src/file_watch.hpp"

#include "bpf/src/proc.hpp"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#ifndef AT_HANDLE_FID
#define AT_HANDLE_FID AT_REMOVEDIR /* 6.5+: a handle for identification only */
#endif

namespace mltap::bpf {
namespace {

std::string errno_text(int e) { return std::strerror(e); }

// fsid + handle type + handle bytes: how fanotify identifies a directory.
std::string handle_key(const void* fsid, std::size_t fsid_len, int type, const unsigned char* bytes,
                       std::size_t n) {
  std::string k(static_cast<const char*>(fsid), fsid_len);
  k.append(reinterpret_cast<const char*>(&type), sizeof(type));
  k.append(reinterpret_cast<const char*>(bytes), n);
  return k;
}

}  // namespace

FileWatch::~FileWatch() {
  if (fd_ >= 0) ::close(fd_);
}

bool FileWatch::open(std::string& error) {
  if (fd_ >= 0) return true;
  const unsigned base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME;
  fd_ = fanotify_init(base, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (fd_ < 0) {
    error = "fanotify_init(FAN_REPORT_DFID_NAME): " + errno_text(errno) +
            (errno == EPERM ? " (needs CAP_SYS_ADMIN, or kernel >= 5.13 for unprivileged use)"
                            : errno == EINVAL ? " (kernel < 5.9 lacks FAN_REPORT_DFID_NAME)" : "");
    return false;
  }
  // Without CAP_SYS_ADMIN the group is "unprivileged": other processes' pids read as 0.
  const auto eff = proc::read_cap_mask("/proc/self/status", "CapEff");
  privileged_ = eff && (*eff & (std::uint64_t{1} << 21 /* CAP_SYS_ADMIN */));
  mask_ = FAN_CLOSE_WRITE | FAN_DELETE | FAN_RENAME | FAN_EVENT_ON_CHILD;
  rename_events_ = true;
  return true;
}

bool FileWatch::add_dir(const std::string& dir, std::string& error) {
  std::lock_guard lk(mu_);
  if (fd_ < 0) {
    error = "file watch is not open";
    return false;
  }
  int r = fanotify_mark(fd_, FAN_MARK_ADD | FAN_MARK_ONLYDIR, mask_, AT_FDCWD, dir.c_str());
  if (r < 0 && errno == EINVAL && rename_events_) {
    // Kernels before 5.17 have no FAN_RENAME: report both halves of a move instead.
    mask_ = FAN_CLOSE_WRITE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_EVENT_ON_CHILD;
    rename_events_ = false;
    r = fanotify_mark(fd_, FAN_MARK_ADD | FAN_MARK_ONLYDIR, mask_, AT_FDCWD, dir.c_str());
  }
  if (r < 0) {
    error = "fanotify_mark(" + dir + "): " + errno_text(errno);
    return false;
  }
  struct statfs sfs {};
  if (statfs(dir.c_str(), &sfs) < 0) {
    error = "statfs(" + dir + "): " + errno_text(errno);
    return false;
  }
  bool any = false;
  for (int flags : {0, AT_HANDLE_FID}) {
    std::vector<unsigned char> storage(sizeof(file_handle) + MAX_HANDLE_SZ);
    auto* fh = reinterpret_cast<file_handle*>(storage.data());
    fh->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    if (name_to_handle_at(AT_FDCWD, dir.c_str(), fh, &mount_id, flags) < 0) continue;
    dirs_[handle_key(&sfs.f_fsid, sizeof(sfs.f_fsid), fh->handle_type, fh->f_handle,
                     fh->handle_bytes)] = dir;
    any = true;
  }
  if (!any) {
    error = "name_to_handle_at(" + dir + "): " + errno_text(errno) +
            " (the file system cannot identify directories)";
    return false;
  }
  return true;
}

std::string FileWatch::dir_of(const void* info, std::size_t len) const {
  const auto* fid = static_cast<const fanotify_event_info_fid*>(info);
  if (len < sizeof(*fid) + sizeof(file_handle)) return {};
  const auto* fh = reinterpret_cast<const file_handle*>(fid->handle);
  if (fh->handle_bytes > len - sizeof(*fid) - sizeof(file_handle)) return {};
  const std::string key =
      handle_key(&fid->fsid, sizeof(fid->fsid), fh->handle_type, fh->f_handle, fh->handle_bytes);
  std::lock_guard lk(mu_);
  auto it = dirs_.find(key);
  return it == dirs_.end() ? std::string() : it->second;
}

std::size_t FileWatch::dir_count() const {
  std::lock_guard lk(mu_);
  std::set<std::string> unique;
  for (const auto& [k, d] : dirs_) unique.insert(d);
  return unique.size();
}

std::uint64_t FileWatch::parse(const char* buf, std::size_t len,
                               const std::function<void(const RawFileEvent&)>& on_event) const {
  std::uint64_t overflows = 0;
  std::size_t off = 0;
  while (len - off >= sizeof(fanotify_event_metadata)) {
    fanotify_event_metadata meta;
    std::memcpy(&meta, buf + off, sizeof(meta));
    if (meta.event_len < sizeof(meta) || meta.event_len > len - off) break;
    if (meta.vers != FANOTIFY_METADATA_VERSION) break;
    const char* ev = buf + off;
    const std::size_t ev_len = meta.event_len;
    off += ev_len;
    if (meta.fd >= 0) ::close(meta.fd);  // not expected with FID reporting
    if (meta.mask & FAN_Q_OVERFLOW) {
      ++overflows;
      continue;
    }
    RawFileEvent out;
    out.mask = meta.mask;
    out.pid = meta.pid > 0 ? static_cast<std::uint32_t>(meta.pid) : 0;
    std::size_t ioff = meta.metadata_len;
    bool ok = meta.metadata_len >= sizeof(meta);
    while (ok && ev_len - ioff >= sizeof(fanotify_event_info_header) && ioff < ev_len) {
      fanotify_event_info_header hdr;
      std::memcpy(&hdr, ev + ioff, sizeof(hdr));
      if (hdr.len < sizeof(hdr) || hdr.len > ev_len - ioff) {
        ok = false;
        break;
      }
      const char* info = ev + ioff;
      const std::size_t info_len = hdr.len;
      ioff += info_len;
      if (hdr.info_type != FAN_EVENT_INFO_TYPE_DFID_NAME &&
          hdr.info_type != FAN_EVENT_INFO_TYPE_OLD_DFID_NAME &&
          hdr.info_type != FAN_EVENT_INFO_TYPE_NEW_DFID_NAME) {
        continue;
      }
      if (info_len < sizeof(fanotify_event_info_fid) + sizeof(file_handle)) {
        ok = false;
        break;
      }
      // Copy to an aligned buffer before looking inside.
      std::vector<unsigned char> aligned(info, info + info_len);
      const auto* fid = reinterpret_cast<const fanotify_event_info_fid*>(aligned.data());
      const auto* fh = reinterpret_cast<const file_handle*>(fid->handle);
      const std::size_t handle_room = info_len - sizeof(*fid) - sizeof(file_handle);
      if (fh->handle_bytes > handle_room) {
        ok = false;
        break;
      }
      const char* name = reinterpret_cast<const char*>(fh->f_handle) + fh->handle_bytes;
      const std::size_t name_room = handle_room - fh->handle_bytes;
      const std::size_t name_len = strnlen(name, name_room);
      if (name_len == name_room) {  // no terminating NUL inside the record
        ok = false;
        break;
      }
      std::string dir = dir_of(aligned.data(), info_len);
      std::string nm(name, name_len);
      if (hdr.info_type == FAN_EVENT_INFO_TYPE_NEW_DFID_NAME) {
        out.new_dir = std::move(dir);
        out.new_name = std::move(nm);
      } else {
        out.dir = std::move(dir);
        out.name = std::move(nm);
      }
    }
    if (ok && (!out.name.empty() || !out.new_name.empty())) on_event(out);
  }
  return overflows;
}

std::uint64_t FileWatch::drain(const std::function<void(const RawFileEvent&)>& on_event) {
  if (fd_ < 0) return 0;
  alignas(fanotify_event_metadata) char buf[16384];
  std::uint64_t overflows = 0;
  for (int round = 0; round < 64; ++round) {
    const ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n <= 0) break;
    overflows += parse(buf, static_cast<std::size_t>(n), on_event);
  }
  return overflows;
}

}  // namespace mltap::bpf
