#include "agent/mltapd/service.hpp"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/log.hpp"

#include "core/config_reader.hpp"

namespace mltap::mltapd {
namespace {

using namespace std::chrono;

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

ServiceLoop::ServiceLoop(Agent& agent, ConfigLoader load, const sigset_t& signals)
    : agent_(agent), load_(std::move(load)), signals_(signals) {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) watchdog_ = microseconds(usec);
}

int ServiceLoop::run() {
  progress_at_ = steady_clock::now();
  last_progress_ = agent_.ingest_progress();
  if (watchdog_) {
    core::log::info("watchdog: WATCHDOG=1 every {} ms while the ingest loop runs",
                 duration_cast<milliseconds>(*watchdog_ / 4).count());
  }
  // Wake often enough to ping at a quarter of the watchdog period (systemd asks for at least
  // half), and at least once a second for STATUS=.
  const microseconds period =
      watchdog_ ? std::clamp<microseconds>(*watchdog_ / 4, milliseconds(50), seconds(1)) : seconds(1);
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(period.count() / 1'000'000);
  ts.tv_nsec = static_cast<long>(period.count() % 1'000'000 * 1000);
  for (;;) {
    tick(steady_clock::now());
    const int sig = ::sigtimedwait(&signals_, nullptr, &ts);
    if (sig < 0) {
      if (errno != EAGAIN && errno != EINTR)
        core::log::error("sigtimedwait: {}", std::strerror(errno));
      continue;
    }
    if (sig == SIGHUP) {
      reload();
      continue;
    }
    core::log::info("signal {} received, stopping", sig);
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    return sig;
  }
}

void ServiceLoop::reload() {
  sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
  core::log::info("reload: re-reading the configuration (SIGHUP)");
  try {
    const AgentConfig next = load_();
    const auto r = agent_.reload(next);
    reload_note_.clear();
    for (const auto& what : r.applied) core::log::info("reload: applied {}", what);
    if (!r.need_restart.empty()) {
      core::log::warn("reload: changed settings in {} take effect at the next restart "
                   "(`systemctl restart mltapd`)",
                   join(r.need_restart));
      reload_note_ = "; restart pending for " + join(r.need_restart);
    }
    if (r.applied.empty() && r.need_restart.empty())
      core::log::info("reload: {} unchanged", next.source);
    else
      core::log::info("reload: done; streams, findings and counters kept");
  } catch (const std::exception& e) {
    // The running configuration stays; systemctl reload already refused it (ExecReload runs
    // --check-config first) unless the signal came from elsewhere.
    core::log::error("reload refused, keeping the running configuration: {}", e.what());
    reload_note_ = "; last reload refused (configuration error, see the log)";
  }
  last_status_.clear();  // resend STATUS= with the note
  sd_notify(0, "READY=1");
}

void ServiceLoop::tick(steady_clock::time_point now) {
  const std::uint64_t progress = agent_.ingest_progress();
  if (progress != last_progress_) {
    last_progress_ = progress;
    progress_at_ = now;
    if (stalled_logged_) core::log::info("watchdog: the ingest loop runs again");
    stalled_logged_ = false;
  }
  if (watchdog_) {
    // The ingest thread publishes a snapshot (with its poll count) every 250 ms: no progress for
    // half the watchdog period means it is stuck, and systemd should restart mltapd.
    if (now - progress_at_ < *watchdog_ / 2) {
      sd_notify(0, "WATCHDOG=1");
    } else if (!stalled_logged_) {
      stalled_logged_ = true;
      core::log::error("watchdog: the ingest loop made no progress for {} ms; withholding WATCHDOG=1",
                    duration_cast<milliseconds>(now - progress_at_).count());
    }
  }
  std::string status = agent_.status_line() + reload_note_;
  if (status != last_status_) {
    last_status_ = status;
    sd_notify(0, ("STATUS=" + status).c_str());
  }
}

}  // namespace mltap::mltapd
