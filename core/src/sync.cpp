#include "ringbus/detail/sync.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <string>

#include "ringbus/detail/waiter.hpp"

namespace ringbus::detail {

std::string wait_problem(const WaitStrategy& w, std::string_view field) {
  const std::string name(field);
  if (w.kind > WaitStrategy::Kind::spin_sleep) {
    return name + ".kind is " + std::to_string(static_cast<int>(w.kind)) + ", not a WaitStrategy::Kind";
  }
  if (w.sleep.count() < 0) return name + ".sleep is " + std::to_string(w.sleep.count()) + " us: it must not be negative";
  return {};
}

namespace {

// -1 = not tried, 0 = unavailable, 1 = registered.
std::atomic<int> g_registered{-1};

long membarrier(int cmd) noexcept { return ::syscall(__NR_membarrier, cmd, 0, 0); }

}  // namespace

bool register_fast_side() noexcept {
  int state = g_registered.load(std::memory_order_acquire);
  if (state >= 0) return state == 1;
  const long query = membarrier(MEMBARRIER_CMD_QUERY);
  const bool supported = query > 0 && (query & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0 &&
                         membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
  g_registered.store(supported ? 1 : 0, std::memory_order_release);
  return supported;
}

bool asymmetric_fences() noexcept { return g_registered.load(std::memory_order_relaxed) == 1; }

void heavy_fence() noexcept {
  // Pairs with light_fence() in every registered process. If the kernel refuses,
  // registered fast sides may miss this waiter; the waiter's bounded sleep covers it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  static const bool usable = [] {
    const long query = membarrier(MEMBARRIER_CMD_QUERY);
    return query > 0 && (query & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0;
  }();
  if (usable) membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
}

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t timeout_ns) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000ull);
  ts.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000ull);
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void wake_all(std::atomic<std::uint32_t>& seq) noexcept {
  const int saved_errno = errno;
  seq.fetch_add(1, std::memory_order_release);
  futex_wake_all(seq);
  errno = saved_errno;
}

}  // namespace ringbus::detail
