// Event counters of one thread from perf_event_open(2), what `perf stat` counts: the
// throughput cases read cycles, instructions and cache misses of the producer
// and consumer threads and report them per event (bench/README.md, "Hardware counters"),
// so that a rate comes with what the CPUs did for it. A machine whose kernel exposes no
// PMU (a VM that does not pass one through) refuses to open them; the report then says
// so, and why.
#pragma once

#include <linux/perf_event.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace ringbus::bench {

// One counter: perf_event_attr's type and config, and the name `perf stat` gives it.
struct CounterSpec {
  std::uint32_t type = 0;
  std::uint64_t config = 0;
  const char* name = "";
};

// At most this many counters a group (three: the hardware set below).
inline constexpr std::size_t kMaxCounters = 3;
using Counts = std::array<std::uint64_t, kMaxCounters>;  // in the order of the specs; 0 past them

// What a throughput measurement counts, in this order.
inline constexpr std::array<CounterSpec, 3> kHardwareCounters = {{
    {PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES, "cycles"},
    {PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS, "instructions"},
    {PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_MISSES, "cache-misses"},
}};

// Counters of the calling thread, user space only, opened as one group (counted over the
// same time), disabled until start(). The thread that opens them is the one counted,
// wherever it runs.
class ThreadCounters {
 public:
  ThreadCounters() = default;  // counts nothing
  explicit ThreadCounters(std::span<const CounterSpec> specs);
  ThreadCounters(const ThreadCounters&) = delete;
  ThreadCounters& operator=(const ThreadCounters&) = delete;
  ~ThreadCounters();

  // True when every counter asked for is open.
  [[nodiscard]] bool ok() const noexcept { return count_ > 0; }
  // Why they are not ("" when they are): the counter refused and the kernel's errno.
  [[nodiscard]] const std::string& why() const noexcept { return why_; }
  // Zeroes the counters and starts them. Does nothing unless ok().
  void start() noexcept;
  // Stops them and reads them. A value is scaled by enabled / running time when the
  // kernel had to share the PMU among more counters than it has; all are 0 when the
  // group never ran, or unless ok().
  Counts stop() noexcept;

 private:
  void close() noexcept;
  std::array<int, kMaxCounters> fd_{-1, -1, -1};
  std::size_t count_ = 0;
  std::string why_;
};

// Why kHardwareCounters cannot be counted on this machine, or "" when they can (they are
// opened once, on the calling thread, and closed).
std::string hardware_counters_unavailable();

}  // namespace ringbus::bench
