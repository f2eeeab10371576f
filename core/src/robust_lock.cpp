#include "ringbus/detail/robust_lock.hpp"

#include <sched.h>

#include "ringbus/detail/process.hpp"
#include "ringbus/detail/waiter.hpp"

namespace ringbus::detail {

RobustLock::RobustLock(std::atomic<std::uint64_t>& word, std::atomic<std::uint64_t>& start) noexcept
    : word_(word), start_(start) {
  const ProcessId& me = self_process();
  HolderWait wait(64);
  for (;;) {
    std::uint64_t w = word_.load(std::memory_order_acquire);
    // Acquire pairs with the release in ~RobustLock: the previous holder's writes are visible.
    if (w == 0 && word_.compare_exchange_weak(w, me.pid, std::memory_order_acquire, std::memory_order_relaxed)) {
      start_.store(me.start_ticks, std::memory_order_relaxed);
      return;
    }
    if (w == 0 || !wait.step()) continue;
    // The holder is checked by pid and start time (a recycled or unrelated pid is not the
    // holder). The start time is stored just after the CAS, and cleared before release:
    // 0 means "check the pid alone", never a stale value that would make a holder look dead.
    if (process_dead(static_cast<std::uint32_t>(w), start_.load(std::memory_order_relaxed)) ||
        wait.held_for(w) > kStaleLockNs) {
      word_.compare_exchange_strong(w, 0, std::memory_order_acq_rel);
      wait.forget();
    }
  }
}

RobustLock::~RobustLock() {
  start_.store(0, std::memory_order_relaxed);
  word_.store(0, std::memory_order_release);
}

}  // namespace ringbus::detail
