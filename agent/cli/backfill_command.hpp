// `mltap backfill STREAM --config FILE`: runs a detectors configuration (one added after the
// fact, or changed thresholds) over a stream's retained rows of a past interval, in this process,
// and prints what it would have found: each closed window (drifted features) and every finding
// with its onset (docs/lineage.md, "Backfill"). Reads GET /api/v1/retained; changes nothing in
// the agent.
#pragma once

#include <CLI/CLI.hpp>

namespace mltap::cli {
void add_backfill_command(CLI::App& app, int& exit_code);
}  // namespace mltap::cli
