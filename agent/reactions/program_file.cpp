#include "agent/reactions/program_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mltap::reactions {

namespace {

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

std::string rule(uid_t agent_uid) {
  std::string owners = "root";
  if (agent_uid != 0) owners += " or mltapd's uid " + std::to_string(agent_uid);
  return "a reaction program and every folder above it must be owned by " + owners +
         " and not writable by group or others";
}

// Empty when `st` (the object at `where`) passes the rule.
std::string check_one(const struct stat& st, const std::string& where, bool is_program, uid_t agent_uid) {
  const std::string what = is_program ? "program '" + where + "'" : "folder '" + where + "'";
  if (is_program && !S_ISREG(st.st_mode)) return what + " is not a regular file";
  if (!is_program && !S_ISDIR(st.st_mode)) return what + " is not a directory";
  if (st.st_uid != 0 && st.st_uid != agent_uid) {
    return what + " is owned by uid " + std::to_string(st.st_uid) + " (mode " + mode_text(st.st_mode) +
           "); " + rule(agent_uid);
  }
  // Others cannot rename or remove what they do not own in a sticky directory (/tmp); the entry
  // below it is checked in turn.
  const bool sticky_dir = !is_program && (st.st_mode & S_ISVTX);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_dir) {
    return what + " is writable by group or others (owner uid " + std::to_string(st.st_uid) + ", mode " +
           mode_text(st.st_mode) + "); " + rule(agent_uid);
  }
  if (is_program && !(st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH))) return what + " is not executable";
  return {};
}

// Walks `path` from / with O_NOFOLLOW, checking every component; returns an O_PATH descriptor of
// the program (invalid, with `error` set, on refusal).
core::UniqueFd walk(const std::string& path, uid_t agent_uid, std::string* error, struct stat* program_st) {
  if (path.empty() || path.front() != '/') {
    *error = "must be an absolute path, got '" + path + "'";
    return {};
  }
  char resolved_buf[PATH_MAX];
  if (!::realpath(path.c_str(), resolved_buf)) {
    const int err = errno;
    *error = err == ENOENT ? "'" + path + "' does not exist" : "'" + path + "': " + std::strerror(err);
    return {};
  }
  const std::string resolved = resolved_buf;
  core::UniqueFd dir(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) {
    *error = std::string("cannot open /: ") + std::strerror(errno);
    return {};
  }
  struct stat st {};
  if (::fstat(dir.get(), &st) != 0 || !(*error = check_one(st, "/", false, agent_uid)).empty()) {
    if (error->empty()) *error = std::string("cannot stat /: ") + std::strerror(errno);
    return {};
  }
  std::string so_far;
  std::size_t pos = 1;
  while (pos <= resolved.size()) {
    const std::size_t slash = resolved.find('/', pos);
    const std::size_t end = slash == std::string::npos ? resolved.size() : slash;
    const std::string name = resolved.substr(pos, end - pos);
    pos = end + 1;
    if (name.empty()) continue;
    so_far += "/" + name;
    const bool last = end == resolved.size();
    core::UniqueFd next(::openat(dir.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      const int err = errno;
      *error = "'" + so_far + "': " + std::strerror(err) + (err == ELOOP ? " (changed into a symbolic link)" : "");
      return {};
    }
    dir = std::move(next);
    if (::fstat(dir.get(), &st) != 0) {
      *error = "'" + so_far + "': " + std::strerror(errno);
      return {};
    }
    if (!(*error = check_one(st, so_far, last, agent_uid)).empty()) {
      if (so_far != path && last) *error += " (resolved from '" + path + "')";
      return {};
    }
  }
  if (!S_ISREG(st.st_mode)) {  // the path was "/"
    *error = "program '" + path + "' is not a regular file";
    return {};
  }
  *program_st = st;
  return dir;
}

}  // namespace

std::shared_ptr<const ProgramFile> ProgramFile::open(const std::string& path, uid_t agent_uid, std::string* error) {
  struct stat st {};
  core::UniqueFd fd = walk(path, agent_uid, error, &st);
  if (!fd.valid()) return nullptr;
  return std::shared_ptr<const ProgramFile>(new ProgramFile(path, agent_uid, std::move(fd), st.st_dev, st.st_ino));
}

std::string ProgramFile::recheck() const {
  std::string error;
  struct stat now {};
  if (!walk(path_, agent_uid_, &error, &now).valid()) return error;
  if (now.st_dev != dev_ || now.st_ino != ino_) {
    return "program '" + path_ + "' was replaced since the configuration was loaded (inode " +
           std::to_string(ino_) + ", now " + std::to_string(now.st_ino) +
           "); reload mltapd to accept the new file";
  }
  // The inode we hold (the one the path names) may have been chmod-ed or chown-ed since load.
  struct stat held {};
  if (::fstat(fd_.get(), &held) != 0) return "program '" + path_ + "': " + std::strerror(errno);
  return check_one(held, path_, true, agent_uid_);
}

}  // namespace mltap::reactions
