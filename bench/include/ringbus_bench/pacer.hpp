// Paces the sender of a latency run: wait() returns at the next send time, and two sends
// are never closer than the gap, also after a stall (a descheduled vCPU): the late send
// goes out at once and the one after it a full gap later, so a stall never turns into a
// burst that would measure queueing instead of latency.
#pragma once

#include <algorithm>
#include <cstdint>

#include "ringbus/clock.hpp"

namespace ringbus::bench {

class Pacer {
 public:
  explicit Pacer(std::uint64_t gap_ticks) noexcept : next_(Tsc::ticks()), gap_(gap_ticks) {}

  // Busy-waits on the TSC until the next send time; returns the TSC it released at.
  std::uint64_t wait() noexcept {
    std::uint64_t now = Tsc::ticks();
    while (now < next_) now = Tsc::ticks();
    next_ = std::max(next_, now) + gap_;
    return now;
  }

 private:
  std::uint64_t next_;
  std::uint64_t gap_;
};

}  // namespace ringbus::bench
