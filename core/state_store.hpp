// The agent's state directory: what users rely on across restarts, upgrades and kill -9 (pinned
// references, open findings, per-stream counters and read positions, pending labels) is kept
// there as versioned JSON documents, one file per document, each replaced atomically.
//
// Why this shape: a document is written to a temporary file in the same directory, fsync'ed,
// renamed over the old one and the directory fsync'ed, so a reader (the next agent) sees either
// the old or the new document, whole, whatever moment the writer was killed at. A document that
// cannot be used (truncated by a full disk before this scheme existed, edited by hand, written
// by a newer mltapd) is moved aside as <name>.json.unusable-<unix seconds> with the reason, so
// nothing is silently lost and the agent still starts.
//
// Components never touch files: they turn their state into a document (`Checkpointable`) on the
// thread that owns that state, and the composition root hands the documents to a StateStore,
// usually on a writer thread so that fsyncs never stall the ingest thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mltap::core {

// A document as stored: {"format": "mltap-state", "name": ..., "version": N,
// "written_unix_ns": ..., "data": <the component's document>}.
struct StateDocument {
  std::string name;             // [a-z0-9_.-]{1,64}; the file is <dir>/<name>.json
  std::uint32_t version = 1;    // the component's schema version of `data`
  std::string data;             // serialized JSON (nlohmann::json::dump()) of the component
};

struct StateReadResult {
  enum class Status { missing, ok, unusable } status = Status::missing;
  std::uint32_t version = 0;
  std::string data;             // serialized JSON of `data` when ok
  std::string detail;           // why unusable, and where it was moved
};

// What the writer of the state directory reports (metrics mltap_state_*): documents written and
// attempts that failed (full, read-only, removed directory), documents held in memory waiting
// to be written, and whether the last attempt failed.
struct StateWriteCounts {
  std::uint64_t written = 0;
  std::uint64_t failed = 0;
  std::uint64_t pending = 0;
  bool failing = false;
};

class StateStore {
 public:
  // `dir` is created (mode 0700, parents too) on first write if missing. Nothing is done here.
  explicit StateStore(std::string dir);

  const std::string& dir() const noexcept { return dir_; }

  // Creates the directory if missing, so that a path that cannot be used is reported at start
  // rather than at the first checkpoint. False with `error` naming the path.
  bool prepare(std::string& error) const;

  // Replaces <dir>/<name>.json atomically and durably. False with `error` naming the path and
  // the failing call (ENOSPC, EROFS...); the previous document then stays as it was.
  bool write(const StateDocument& doc, std::string& error) const;
  // Several documents; each atomic on its own. Returns the number written; errors appended.
  std::size_t write_all(const std::vector<StateDocument>& docs, std::vector<std::string>& errors) const;

  // Reads <dir>/<name>.json. A file that does not parse, is not a state document of this name,
  // or has a version above `max_version` is moved aside (see above) and reported `unusable`.
  StateReadResult read(std::string_view name, std::uint32_t max_version) const;

  // Removes <dir>/<name>.json if present (a stream that is gone for good). True if absent after.
  bool remove(std::string_view name, std::string& error) const;

  // Names of the stored documents starting with `prefix` (sorted; unusable ones included, so
  // that read() can report and move them aside).
  std::vector<std::string> list(std::string_view prefix) const;

  static bool valid_name(std::string_view name) noexcept;

 private:
  std::string dir_;
};

// Implemented by a component whose state must survive a restart. Called on the thread that owns
// the state (for ingest and the detectors: the ingest thread).
class Checkpointable {
 public:
  virtual ~Checkpointable() = default;
  // The documents to store now (may be empty when nothing changed since the last call).
  virtual std::vector<StateDocument> checkpoint() = 0;
  // Every document it stores is named "<state_prefix()><something>" (e.g. "detectors.<id>").
  virtual std::string state_prefix() const = 0;
  // The highest version of its documents it reads; newer ones are moved aside by the store.
  virtual std::uint32_t state_version() const = 0;
  // Gives back, once and before the component starts working, every stored document with its
  // prefix (`unusable` ones too, so the component can say what it starts without). Returns what
  // it could not use and why, for the caller to log.
  virtual std::vector<std::string> restore(
      const std::vector<std::pair<std::string, StateReadResult>>& stored) = 0;
};

}  // namespace mltap::core
