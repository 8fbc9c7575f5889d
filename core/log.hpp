// The agent's log calls. A call formats its message with fmt (format strings checked at compile
// time) and hands the finished line to spdlog, whose logger and sinks are set up by the
// composition roots (mltapd, tools) as before.
//
// Why not spdlog::warn(...) at every call site: spdlog's logging template instantiates its whole
// formatting path in each translation unit that calls it: measured with g++ 12, one call costs
// 11.7 s of compile time under ASan+UBSan (-O1 -g1) and 5.5 s in a -O2 -g build, against 1.0 s
// for the same call through here (fmt::vformat is compiled once, in libfmt). With ~30 such files
// and four builds in CI (main, ASan+UBSan, TSan, libFuzzer), that was about a fifth of CI's time.
#pragma once

#include <fmt/core.h>


namespace mltap::core::log {

enum class Level { debug, info, warn, error, critical };

// Formats and writes one line at `level` when spdlog's current level lets it through (checked
// before formatting: a disabled debug line costs no formatting). Never throws: a line that cannot
// be formatted (out of memory) or written (a failing sink) is lost, the caller goes on.
void vwrite(Level level, fmt::string_view format, fmt::format_args args) noexcept;

template <class... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) noexcept {
  vwrite(Level::debug, format, fmt::make_format_args(args...));
}
template <class... Args>
void info(fmt::format_string<Args...> format, Args&&... args) noexcept {
  vwrite(Level::info, format, fmt::make_format_args(args...));
}
template <class... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) noexcept {
  vwrite(Level::warn, format, fmt::make_format_args(args...));
}
template <class... Args>
void error(fmt::format_string<Args...> format, Args&&... args) noexcept {
  vwrite(Level::error, format, fmt::make_format_args(args...));
}
template <class... Args>
void critical(fmt::format_string<Args...> format, Args&&... args) noexcept {
  vwrite(Level::critical, format, fmt::make_format_args(args...));
}

}  // namespace mltap::core::log
