// Counts of reaction decisions by reaction and result: the source of
// mltap_reactions_total{reaction,result}. Lock-free reads for the scrape path.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mltap::core {

enum class ReactionResult : std::uint8_t {
  ok,              // the action ran and succeeded
  failed,          // the action ran and failed (exit code != 0, ControlPlane error, I/O error)
  timeout,         // an exec reaction was killed at its timeout
  cooldown,        // skipped: the same reaction acted on the same stream too recently
  rate_limited,    // skipped: the reaction's rate limit is used up
  busy,            // skipped: too many programs running, or tracking tables full
  no_target,       // skipped: the alert has no stream label, or the stream has no producers
  already_active,  // a reversible reaction already applied for this stream; alert joined it
  undone,          // a reversible reaction was undone (alert resolved, or mltapd stopping)
  undo_failed,     // undoing failed
  refused,         // an exec reaction's program failed its run-time check (replaced, made writable)
};
inline constexpr std::size_t kReactionResultCount = 11;

constexpr std::string_view reaction_result_name(ReactionResult r) noexcept {
  switch (r) {
    case ReactionResult::ok: return "ok";
    case ReactionResult::failed: return "failed";
    case ReactionResult::timeout: return "timeout";
    case ReactionResult::cooldown: return "cooldown";
    case ReactionResult::rate_limited: return "rate_limited";
    case ReactionResult::busy: return "busy";
    case ReactionResult::no_target: return "no_target";
    case ReactionResult::already_active: return "already_active";
    case ReactionResult::undone: return "undone";
    case ReactionResult::undo_failed: return "undo_failed";
    case ReactionResult::refused: return "refused";
  }
  return "failed";
}

class ReactionCounters {
 public:
  explicit ReactionCounters(std::vector<std::string> reactions)
      : names_(std::move(reactions)),
        counts_(std::make_unique<std::atomic<std::uint64_t>[]>(names_.size() * kReactionResultCount)) {}

  void add(std::size_t reaction, ReactionResult r) noexcept {
    counts_[reaction * kReactionResultCount + static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  }
  std::uint64_t get(std::size_t reaction, ReactionResult r) const noexcept {
    return counts_[reaction * kReactionResultCount + static_cast<std::size_t>(r)].load(std::memory_order_relaxed);
  }
  const std::vector<std::string>& reactions() const noexcept { return names_; }

 private:
  std::vector<std::string> names_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
};

}  // namespace mltap::core
