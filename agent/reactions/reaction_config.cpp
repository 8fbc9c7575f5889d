#include "agent/reactions/reaction_config.hpp"

#include <csignal>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <set>

namespace mltap::reactions {

using core::LabelSet;

namespace {

bool name_chars_ok(std::string_view s, std::size_t max) noexcept {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

struct SignalName {
  const char* name;
  int number;
};
constexpr SignalName kSignals[] = {
    {"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT}, {"SIGUSR1", SIGUSR1},
    {"SIGUSR2", SIGUSR2}, {"SIGTERM", SIGTERM}, {"SIGKILL", SIGKILL}, {"SIGCONT", SIGCONT},
    {"SIGSTOP", SIGSTOP},
};

std::shared_ptr<const ProgramFile> check_executable(core::ConfigSection& s, const std::string& path) {
  if (path.empty() || path.front() != '/') s.fail("path", "must be an absolute path, got '" + path + "'");
  // Owner and mode of the program and of every folder above it: a program others can replace
  // would let them run code as mltapd.
  std::string error;
  auto program = ProgramFile::open(path, ::geteuid(), &error);
  if (!program) s.fail("path", error);
  if (::access(path.c_str(), X_OK) != 0) s.fail("path", "'" + path + "' is not executable by mltapd");
  return program;
}

ExecAction parse_exec(core::ConfigSection& s) {
  ExecAction a;
  auto path = s.get_string("path");
  if (!path) s.fail("", "type exec needs 'path'");
  a.program = check_executable(s, *path);
  a.path = *path;
  if (auto args = s.get_string_list("args")) {
    if (args->size() > 64) s.fail("args", "at most 64 arguments");
    for (const auto& arg : *args) {
      if (arg.size() > 4096) s.fail("args", "an argument is longer than 4096 bytes");
      if (arg.find('\0') != std::string::npos) s.fail("args", "an argument contains a NUL byte");
    }
    a.args = std::move(*args);
  }
  if (auto labels = s.get_string_list("env_labels")) {
    std::set<std::string> seen;
    for (const auto& l : *labels) {
      if (!valid_label_name(l)) s.fail("env_labels", "'" + l + "' is not a label name");
      if (!seen.insert(l).second) s.fail("env_labels", "'" + l + "' is listed twice");
    }
    a.env_labels = std::move(*labels);
  }
  if (auto env = s.get_string_list("env")) {
    for (const auto& e : *env) {
      const auto eq = e.find('=');
      const std::string name = eq == std::string::npos ? e : e.substr(0, eq);
      bool ok = eq != std::string::npos && !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0]));
      for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
      if (!ok) s.fail("env", "'" + e + "' is not NAME=value");
      if (name.starts_with("MLTAP_")) s.fail("env", "'" + name + "': MLTAP_* variables are set by mltapd");
      if (e.find('\0') != std::string::npos || e.size() > 4096) s.fail("env", "'" + name + "' is too long or has a NUL");
    }
    a.env = std::move(*env);
  }
  if (auto t = s.get_duration("timeout", 10ms, 1h)) a.timeout = *t;
  if (auto g = s.get_duration("kill_grace", 0ms, 1min)) a.kill_grace = *g;
  if (auto m = s.get_bytes("max_output", 0, 16ull << 20)) a.max_output_bytes = *m;
  if (auto r = s.get_bool("on_resolved")) a.on_resolved = *r;
  if (auto wd = s.get_string("working_dir")) {
    if (wd->empty() || wd->front() != '/') s.fail("working_dir", "must be an absolute path");
    a.working_dir = *wd;
  }
  return a;
}

SignalAction parse_signal(core::ConfigSection& s) {
  SignalAction a;
  auto name = s.get_string("signal");
  if (!name) s.fail("", "type signal needs 'signal' (e.g. SIGUSR1)");
  auto number = parse_signal_name(*name);
  if (!number) {
    std::string list;
    for (const auto& sig : kSignals) list += (list.empty() ? "" : ", ") + std::string(sig.name);
    s.fail("signal", "'" + *name + "' is not one of " + list);
  }
  a.signal = *number;
  a.signal_name = name->starts_with("SIG") ? *name : "SIG" + *name;
  return a;
}

FlagAction parse_flag(core::ConfigSection& s) {
  FlagAction a;
  auto flag = s.get_string("flag");
  if (!flag) s.fail("", "type producer-flag needs 'flag'");
  if (!valid_flag_name(*flag)) s.fail("flag", "'" + *flag + "' must match [A-Za-z0-9_.-]{1,31}");
  a.flag = *flag;
  if (auto v = s.get_int("value", 1, 0xFFFFFFFFll)) a.value = static_cast<std::uint32_t>(*v);
  return a;
}

SamplingAction parse_sampling(core::ConfigSection& s) {
  SamplingAction a;
  if (auto p = s.get_int("permille", 1, 1000)) a.permille = static_cast<std::uint32_t>(*p);
  if (auto d = s.get_duration("duration", 1s, 24h)) a.duration = *d;
  return a;
}

SnapshotAction parse_snapshot(core::ConfigSection& s) {
  SnapshotAction a;
  auto dir = s.get_string("directory");
  if (!dir) s.fail("", "type snapshot needs 'directory'");
  if (dir->empty() || dir->front() != '/') s.fail("directory", "must be an absolute path");
  if (*dir == "/") s.fail("directory", "must not be /");
  a.directory = *dir;
  if (auto v = s.get_int("max_records", 0, 1000000)) a.max_records = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_bytes("max_record_bytes", 0, 1ull << 34)) a.max_record_bytes = *v;
  if (auto v = s.get_bytes("max_json_bytes", 1024, 1ull << 30)) a.max_json_bytes = *v;
  if (auto v = s.get_bytes("max_total_bytes", 1ull << 20, 1ull << 40)) a.max_total_bytes = *v;
  if (auto v = s.get_int("max_bundles", 1, 100000)) a.max_bundles = static_cast<std::uint32_t>(*v);
  // One bundle must fit: raw records + three JSON documents + manifest.
  const std::uint64_t one = a.max_record_bytes + 3 * a.max_json_bytes + (1ull << 20);
  if (one > a.max_total_bytes) {
    s.fail("max_total_bytes", "must hold one bundle: max_record_bytes + 3 * max_json_bytes + 1MiB = " +
                                  std::to_string(one) + " bytes");
  }
  return a;
}

ReactionSpec parse_reaction(const std::string& name, core::ConfigSection s) {
  ReactionSpec r;
  if (!valid_reaction_name(name)) s.fail("", "reaction names must match [A-Za-z0-9_.-]{1,64}");
  r.name = name;
  auto type = s.get_enum("type", {"exec", "signal", "producer-flag", "sampling", "snapshot"});
  if (!type) s.fail("", "needs 'type' (exec, signal, producer-flag, sampling or snapshot)");
  if (auto matchers = s.get_string_list("matchers")) {
    for (const auto& text : *matchers) {
      std::string error;
      auto m = LabelMatcher::parse(text, &error);
      if (!m) s.fail("matchers", error);
      r.matchers.push_back(std::move(*m));
    }
  }
  if (r.matchers.empty()) {
    s.fail("matchers", "every reaction needs at least one matcher (e.g. 'alertname = \"MltapStreamDrift\"')");
  }
  if (auto c = s.get_duration("cooldown", 0ns, 7 * 24h)) r.cooldown = *c;
  auto rl = s.child("rate_limit");
  if (auto m = rl.get_int("max", 0, 1000000)) r.rate_limit.max = static_cast<std::uint32_t>(*m);
  if (auto p = rl.get_duration("per", 1s, 7 * 24h)) r.rate_limit.per = *p;
  rl.finish();
  if (auto l = s.get_string("stream_label")) {
    if (!valid_label_name(*l)) s.fail("stream_label", "'" + *l + "' is not a label name");
    r.stream_label = *l;
  }
  if (*type == "exec") r.action = parse_exec(s);
  else if (*type == "signal") r.action = parse_signal(s);
  else if (*type == "producer-flag") r.action = parse_flag(s);
  else if (*type == "sampling") r.action = parse_sampling(s);
  else r.action = parse_snapshot(s);
  s.finish();
  return r;
}

}  // namespace

bool valid_reaction_name(std::string_view name) noexcept { return name_chars_ok(name, 64); }
bool valid_flag_name(std::string_view name) noexcept { return name_chars_ok(name, 31); }

std::optional<int> parse_signal_name(std::string_view name) {
  for (const auto& s : kSignals) {
    const std::string_view full = s.name;
    if (name == full || name == full.substr(3)) return s.number;
  }
  return std::nullopt;
}

bool ReactionSpec::matches(const LabelSet& labels) const {
  for (const auto& m : matchers) {
    if (!m.matches(labels)) return false;
  }
  return true;
}

const ReactionSpec* ReactionsConfig::find(std::string_view name) const noexcept {
  for (const auto& r : actions) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

ReactionsConfig parse_reactions_config(core::ConfigSection s) {
  ReactionsConfig c;
  if (auto e = s.get_bool("enabled")) c.enabled = *e;
  if (auto q = s.get_int("queue_capacity", 1, 1 << 20)) c.queue_capacity = static_cast<std::uint32_t>(*q);
  if (auto m = s.get_int("max_concurrent_exec", 1, 256)) c.max_concurrent_exec = static_cast<std::uint32_t>(*m);
  if (auto a = s.get_string("audit_log")) {
    if (a->empty() || a->front() != '/') s.fail("audit_log", "must be an absolute path");
    c.audit_log = *a;
  }
  if (auto m = s.get_bytes("audit_log_max_bytes", 4096, 1ull << 40)) c.audit_log_max_bytes = *m;
  if (auto k = s.get_int("audit_log_keep", 0, 100)) c.audit_log_keep = static_cast<std::uint32_t>(*k);
  if (auto l = s.get_string("request_label")) {
    if (!valid_label_name(*l)) s.fail("request_label", "'" + *l + "' is not a label name");
    c.request_label = *l;
  }
  if (auto u = s.get_bool("undo_on_stop")) c.undo_on_stop = *u;
  for (auto& [name, section] : s.child_map("actions")) {
    if (c.actions.size() == kMaxReactions) {
      section.fail("", "at most " + std::to_string(kMaxReactions) + " reactions");
    }
    c.actions.push_back(parse_reaction(name, section));
  }
  s.finish();
  return c;
}

}  // namespace mltap::reactions
