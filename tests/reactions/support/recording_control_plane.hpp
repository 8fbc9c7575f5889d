// A ControlPlane for tests: the real one (ring segments) belongs to the ingest layer. It records
// every call and keeps flag/sampling state per stream like a control block would; producers are
// whatever the test registers (real child processes in the signal tests).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/control_plane.hpp"
#include "pid_signaller.hpp"

namespace mltap::reactions::testing {

class RecordingControlPlane : public core::ControlPlane {
 public:
  struct FlagCall {
    std::string stream, flag;
    std::uint32_t value;
  };
  struct BoostCall {
    std::string stream;
    std::uint32_t permille;
    std::uint64_t until_unix_ns;
  };

  void add_producer(const std::string& stream, core::ProducerId id) {
    std::lock_guard l(mu_);
    producers_[stream].push_back(id);
  }
  void add_record(const std::string& stream, core::RetainedRecord r) {
    std::lock_guard l(mu_);
    records_[stream].push_back(std::move(r));
  }
  void fail_with(std::string error) {
    std::lock_guard l(mu_);
    fail_ = std::move(error);
  }

  std::vector<core::ProducerId> producers(const std::string& stream) const override {
    std::lock_guard l(mu_);
    auto it = producers_.find(stream);
    return it == producers_.end() ? std::vector<core::ProducerId>{} : it->second;
  }
  core::SignalReport signal_producers(const std::string& stream, int signal) override {
    return mltap::testing::signal_by_pid(producers(stream), signal);
  }
  core::ControlResult set_flag(const std::string& stream, const std::string& flag, std::uint32_t value) override {
    std::lock_guard l(mu_);
    flag_calls_.push_back({stream, flag, value});
    if (!fail_.empty()) return {false, fail_, 0};
    flags_[stream][flag] = value;
    return {true, "", 1};
  }
  core::ControlResult boost_sampling(const std::string& stream, std::uint32_t permille,
                               std::uint64_t until_unix_ns) override {
    std::lock_guard l(mu_);
    boost_calls_.push_back({stream, permille, until_unix_ns});
    if (!fail_.empty()) return {false, fail_, 0};
    boost_[stream] = permille;
    return {true, "", 1};
  }
  std::vector<core::RetainedRecord> recent_records(const std::string& stream, std::size_t max_records,
                                             std::size_t max_bytes) const override {
    std::lock_guard l(mu_);
    std::vector<core::RetainedRecord> out;
    auto it = records_.find(stream);
    if (it == records_.end()) return out;
    std::size_t bytes = 0;
    // Newest last: take from the end, then restore order.
    for (auto r = it->second.rbegin(); r != it->second.rend() && out.size() < max_records; ++r) {
      if (bytes + r->payload.size() > max_bytes) break;
      bytes += r->payload.size();
      out.push_back(*r);
    }
    return {out.rbegin(), out.rend()};
  }

  std::uint32_t flag(const std::string& stream, const std::string& name) const {
    std::lock_guard l(mu_);
    auto s = flags_.find(stream);
    if (s == flags_.end()) return 0;
    auto f = s->second.find(name);
    return f == s->second.end() ? 0 : f->second;
  }
  std::uint32_t boost(const std::string& stream) const {
    std::lock_guard l(mu_);
    auto it = boost_.find(stream);
    return it == boost_.end() ? 0 : it->second;
  }
  std::vector<FlagCall> flag_calls() const {
    std::lock_guard l(mu_);
    return flag_calls_;
  }
  std::vector<BoostCall> boost_calls() const {
    std::lock_guard l(mu_);
    return boost_calls_;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::vector<core::ProducerId>> producers_;
  std::map<std::string, std::vector<core::RetainedRecord>> records_;
  std::map<std::string, std::map<std::string, std::uint32_t>> flags_;
  std::map<std::string, std::uint32_t> boost_;
  std::vector<FlagCall> flag_calls_;
  std::vector<BoostCall> boost_calls_;
  std::string fail_;
};

}  // namespace mltap::reactions::testing
