// Names shared by producers and the agent: namespaces, stream names, segment files, and the
// process identity (pid + start time) that decides whether a segment's producer is alive.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mltap::naming {

inline constexpr std::string_view kDefaultNamespace = "default";
inline constexpr std::string_view kDefaultShmDir = "/dev/shm";

// [a-z0-9_-], 1..31 chars: it becomes part of a file name.
bool valid_namespace(std::string_view ns) noexcept;
// Printable ASCII without spaces, quotes, backslash or control characters, 1..127 chars; may
// contain '/', '.', ':', '-', '_' so users can write "shop/features".
bool valid_stream_name(std::string_view name) noexcept;
// Like a stream name but 1..63 chars.
bool valid_component(std::string_view name) noexcept;
// A feature or flag name: printable ASCII without quotes, backslash or control chars, 1..max.
bool valid_label_text(std::string_view text, std::size_t max) noexcept;

// An artifact path: absolute, printable ASCII, no "." or ".." components, < kArtifactPathMax.
bool valid_artifact_path(std::string_view path) noexcept;

// "mltap.<ns>." — every segment of the namespace starts with it.
std::string segment_prefix(std::string_view ns);
// "mltap.<ns>.<pid>.<n>"
std::string segment_file_name(std::string_view ns, std::uint32_t pid, std::uint64_t n);

// "mltap.<ns>.agent": the agent's presence file, touched every second while it runs. A producer
// closing its stream leaves the ring to a present agent to drain and remove.
std::string agent_presence_file_name(std::string_view ns);
// True if `name` is a segment file name of namespace `ns` (mltap.<ns>.<pid>.<n>).
bool is_segment_file_name(std::string_view ns, std::string_view name) noexcept;

// (No namespace_from_env: an invalid MLTAP_NAMESPACE must be an error, never a silent fall back
// to "default"; the one reader of the variable is stream.cpp's resolve_namespace, which throws.)
// Directory from MLTAP_SHM_DIR, else /dev/shm.
std::string shm_dir_from_env();

// The fields of /proc/<pid>/stat that producers and the agent read. The one parser of that file:
// comm (field 2) may hold spaces and parentheses, so the fields resume after the LAST ')'.
struct ProcStat {
  std::string comm;
  char state = '?';               // field 3: R, S, D, Z, X, ...
  std::uint32_t ppid = 0;         // field 4
  std::uint64_t start_ticks = 0;  // field 22: start time in clock ticks after boot
};
// Parses the text of /proc/<pid>/stat ("pid (comm) S ppid ..."); nullopt when malformed.
std::optional<ProcStat> parse_proc_stat(std::string_view text);
// Reads and parses /proc/<pid>/stat; nullopt if the process does not exist or the file is
// malformed. `proc_root` is injectable for tests ("/proc").
std::optional<ProcStat> read_proc_stat(std::uint32_t pid, const std::string& proc_root = "/proc");
// Field 22 of /proc/<pid>/stat (read_proc_stat(pid, proc_root)->start_ticks).
std::optional<std::uint64_t> process_start_ticks(std::uint32_t pid,
                                                 const std::string& proc_root = "/proc");
// Inode of /proc/<pid>/ns/pid (0 when unknown).
std::uint64_t pid_namespace_inode(const std::string& proc_root = "/proc",
                                  std::string_view pid = "self");

}  // namespace mltap::naming
