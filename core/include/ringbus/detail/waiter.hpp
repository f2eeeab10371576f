// The idle loop of a WaitStrategy, shared by consumers (waiting for data) and blocked
// producers (waiting for space). See detail/sync.hpp for the park protocol.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringbus/detail/process.hpp"
#include "ringbus/detail/sync.hpp"
#include "ringbus/wait_strategy.hpp"

namespace ringbus::detail {

// What is wrong with a WaitStrategy given as an option, named as `field` (e.g. "wait")
// with its value; "" if nothing. Its sleep becomes unsigned nanoseconds: a negative one
// would sleep for centuries.
std::string wait_problem(const WaitStrategy& w, std::string_view field);

class Waiter {
 public:
  explicit Waiter(const WaitStrategy& s) noexcept : s_(s) {}

  void reset() noexcept { n_ = 0; }

  // One idle step. `ready` re-checks the awaited condition after this thread has
  // announced itself in `waiters` (spin_park only). Returns true if it gave the CPU up
  // (a yield, a sleep or a park): one such step may take a whole time slice of another
  // thread, so a caller that checks something by the clock checks it after each. A sleep
  // or park lasts at most `max_ns` (a caller with something due by the clock).
  template <class Ready>
  bool idle(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& seq, Ready&& ready,
            std::uint64_t max_ns = UINT64_MAX) noexcept {
    switch (s_.kind) {
      case WaitStrategy::Kind::busy_spin:
        return false;
      case WaitStrategy::Kind::spin_yield:
        if (n_ < s_.spins) {
          ++n_;
          cpu_relax();
          return false;
        }
        ::sched_yield();
        return true;
      case WaitStrategy::Kind::spin_sleep:
        if (n_ < s_.spins) {
          ++n_;
          cpu_relax();
          return false;
        }
        nap(seq, ready, std::min(static_cast<std::uint64_t>(s_.sleep.count()) * 1000, max_ns));
        return true;
      case WaitStrategy::Kind::spin_park:
        if (n_ < s_.spins) {
          ++n_;
          cpu_relax();
          return false;
        }
        if (n_ < s_.spins + s_.yields) {
          ++n_;
          ::sched_yield();
          return true;
        }
        park(waiters, seq, ready, max_ns);
        return true;
    }
    return false;
  }

  // spin_sleep's sleep: a wait on `seq` for `ns`, not counted in the waiters, so the
  // other side's hot path never wakes it, while a wake_all (a stop, wake_waiting, a
  // redrive) ends it. A bump after `observed` was read makes the wait return at once.
  template <class Ready>
  static void nap(std::atomic<std::uint32_t>& seq, Ready&& ready, std::uint64_t ns) noexcept {
    const std::uint32_t observed = seq.load(std::memory_order_acquire);
    if (!ready()) futex_wait(seq, observed, ns);
  }

  // Parks on `seq` unless `ready` holds once this waiter is visible to the other side.
  template <class Ready>
  void park(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& seq, Ready&& ready,
            std::uint64_t max_ns = UINT64_MAX) noexcept {
    const std::uint32_t observed = seq.load(std::memory_order_acquire);
    waiters.fetch_add(1, std::memory_order_seq_cst);
    heavy_fence();  // pairs with light_fence() in wake_if_parked()
    if (!ready()) {
      const std::uint64_t timeout = s_.sleep.count() > 0 ? static_cast<std::uint64_t>(s_.sleep.count()) * 1000
                                                         : 10'000'000ull;
      futex_wait(seq, observed, std::min(timeout, max_ns));
    }
    waiters.fetch_sub(1, std::memory_order_release);
  }

 private:
  WaitStrategy s_;
  std::uint32_t n_ = 0;
};

// The wait for something a holder may have died with (a key latch, a robust lock):
// spins, then yields, and says when to check the holder: right after the spins, then
// once a millisecond by the clock. A yield may last another thread's whole time slice,
// so a count of yields could put the checks seconds apart on a busy CPU.
class HolderWait {
 public:
  explicit HolderWait(std::uint32_t spins) noexcept : spins_(spins) {}

  // One step of waiting. True when the holder is due a check.
  bool step() noexcept {
    if (n_ < spins_) {
      ++n_;
      cpu_relax();
      return false;
    }
    ::sched_yield();
    const std::uint64_t t = monotonic_ns();
    if (checked_ != 0 && t - checked_ < 1'000'000) return false;
    checked_ = t;
    return true;
  }
  // How long, as of the last check, the awaited word has held `w` (never 0: a held
  // word names its holder), for holders judged by staleness. forget() starts again.
  std::uint64_t held_for(std::uint64_t w) noexcept {
    if (w != seen_) {
      seen_ = w;
      seen_since_ = checked_;
    }
    return checked_ - seen_since_;
  }
  void forget() noexcept { seen_ = 0; }

 private:
  std::uint32_t spins_;
  std::uint32_t n_ = 0;
  std::uint64_t checked_ = 0;
  std::uint64_t seen_ = 0;
  std::uint64_t seen_since_ = 0;
};

// The other side of Waiter::park: call after publishing what a waiter waits for.
inline void wake_if_parked(std::atomic<std::uint32_t>& waiters, std::atomic<std::uint32_t>& seq) noexcept {
  light_fence();  // pairs with heavy_fence() in Waiter::park
  if (waiters.load(std::memory_order_relaxed) != 0) [[unlikely]] wake_all(seq);
}

}  // namespace ringbus::detail
