// `mltap profile build` and `mltap drift`: the detector engine on files, for CI pipelines and
// notebooks. Exit codes: 0 ok, 1 error, 3 drift found with --fail-on-drift.
#pragma once

#include <CLI/CLI.hpp>

namespace mltap::cli {

inline constexpr int kExitDrift = 3;

void add_detector_commands(CLI::App& app, int& exit_code);

}  // namespace mltap::cli
