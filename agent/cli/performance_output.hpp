// What `mltap performance` prints for the agent's JSON of one stream: per window the realized
// metrics, then the label-free estimates. No CLI11 here: the tests link it without the commands.
#pragma once

#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

namespace mltap::cli {
void print_performance(const nlohmann::json& doc, std::ostream& out, const std::string& slice = "");
}  // namespace mltap::cli
