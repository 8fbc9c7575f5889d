#include "core/log.hpp"

#include <spdlog/spdlog.h>

namespace mltap::core::log {
namespace {
spdlog::level::level_enum to_spdlog(Level level) noexcept {
  switch (level) {
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
    case Level::critical: return spdlog::level::critical;
  }
  return spdlog::level::critical;
}
}  // namespace

void vwrite(Level level, fmt::string_view format, fmt::format_args args) noexcept {
  const auto lvl = to_spdlog(level);
  if (!spdlog::should_log(lvl)) return;
  try {
    const auto line = fmt::vformat(format, args);
    spdlog::default_logger_raw()->log(lvl, spdlog::string_view_t(line.data(), line.size()));
  } catch (...) {  // out of memory while formatting, or a sink that throws: the line is lost
  }
}

}  // namespace mltap::core::log
