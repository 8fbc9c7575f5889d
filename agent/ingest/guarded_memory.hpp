// Reading memory that another process can truncate under us. A producer (buggy or hostile) may
// shrink its segment file while mltapd has it mapped; touching the lost pages raises SIGBUS. Every
// read of a mapped segment goes through these functions, which turn that SIGBUS into `false`.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mltap::ingest {

// Installs the SIGBUS handler (idempotent, thread-safe). Called by SegmentReader::open.
void install_sigbus_guard();

// memcpy that returns false instead of crashing when `src` is no longer backed by the file.
// Deliberately racy with the producer: callers validate what they copied (FORMAT.md).
bool guarded_copy(void* dst, const void* src, std::size_t n) noexcept;

// Acquire load of a 64-bit word in the mapping.
bool guarded_load(const std::uint64_t* p, std::uint64_t& out,
                  std::memory_order order = std::memory_order_acquire) noexcept;
// Relaxed store of a word into the mapping (control block).
bool guarded_store(std::uint64_t* p, std::uint64_t v) noexcept;
bool guarded_store32(std::uint32_t* p, std::uint32_t v) noexcept;

// How many SIGBUS faults were caught (for tests and metrics).
std::uint64_t sigbus_caught() noexcept;

}  // namespace mltap::ingest
