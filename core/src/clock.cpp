#include "ringbus/clock.hpp"

#include <time.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#if RINGBUS_HAVE_RDTSC
#include <cpuid.h>
#endif

namespace ringbus {
namespace {

std::uint64_t clock_ns(clockid_t id) noexcept {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

bool cpu_has_invariant_tsc() noexcept {
#if RINGBUS_HAVE_RDTSC
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0x80000000u, &a, &b, &c, &d) == 0 || a < 0x80000007u) return false;
  __get_cpuid(0x80000007u, &a, &b, &c, &d);
  return (d & (1u << 8)) != 0;  // EDX bit 8: invariant TSC
#else
  return false;
#endif
}

// What RINGBUS_CLOCK asks for.
enum class Setting : std::uint8_t { tsc, steady, invalid };
Setting clock_setting() noexcept {
  const char* v = std::getenv(Tsc::kEnvironment);
  if (v == nullptr || std::strcmp(v, "tsc") == 0) return Setting::tsc;
  return std::strcmp(v, "steady") == 0 ? Setting::steady : Setting::invalid;
}

constexpr double kFixedOne = 4294967296.0;  // 1.0 in 32.32 fixed point

// `shared` may be null (no segment at hand).
Tsc::Calibration calibrate(const std::atomic<std::uint64_t>* shared) noexcept {
  Tsc::Calibration c;
  if (clock_setting() == Setting::steady) {
    c.source = Tsc::Source::steady_chosen;
    return c;
  }
#if RINGBUS_HAVE_RDTSC
  if (!cpu_has_invariant_tsc()) return c;
  // Take the tightest (tsc, clock) pairs at both ends of a ~20 ms window: the pair
  // whose two rdtsc reads bracket clock_gettime most closely has the least error.
  auto pair = [](std::uint64_t& tsc, std::uint64_t& ns) {
    std::uint64_t best = ~std::uint64_t{0};
    for (int i = 0; i < 16; ++i) {
      const std::uint64_t a = __rdtsc();
      const std::uint64_t t = clock_ns(CLOCK_MONOTONIC_RAW);
      const std::uint64_t b = __rdtsc();
      if (b - a < best) {
        best = b - a;
        tsc = a + (b - a) / 2;
        ns = t;
      }
    }
  };
  auto wait_until = [](std::uint64_t ns) {
    while (clock_ns(CLOCK_MONOTONIC_RAW) < ns) {
    }
  };
  std::uint64_t t0 = 0, n0 = 0, t1 = 0, n1 = 0;
  pair(t0, n0);
  // A rate left in the segment is checked against the window's first 2 ms; if it
  // disagrees, the same window goes on to its full length.
  const std::uint64_t offered = shared != nullptr ? shared->load(std::memory_order_relaxed) : 0;
  if (offered != 0) {
    wait_until(n0 + Tsc::kSharedCheckNs);
    pair(t1, n1);
    if (t1 > t0 && n1 > n0 &&
        detail::shared_rate_agrees(offered, static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0))) {
      c.source = Tsc::Source::tsc;
      c.mult = offered;
      c.ns_per_tick = static_cast<double>(offered) / kFixedOne;
      c.adopted = true;
      return c;
    }
  }
  wait_until(n0 + 20'000'000ull);
  pair(t1, n1);
  if (t1 <= t0 || n1 <= n0) return c;
  c.source = Tsc::Source::tsc;
  c.ns_per_tick = static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0);
  c.mult = static_cast<std::uint64_t>(c.ns_per_tick * kFixedOne);
#else
  (void)shared;
#endif
  return c;
}

// The process's calibration, made by the first caller with what it passes.
const Tsc::Calibration& process_calibration(const std::atomic<std::uint64_t>* shared) noexcept {
  static const Tsc::Calibration c = calibrate(shared);
  return c;
}

}  // namespace

bool Tsc::setting_valid() noexcept { return clock_setting() != Setting::invalid; }

const char* Tsc::describe(Source s) noexcept {
  switch (s) {
    case Source::tsc:
      return "invariant TSC";
    case Source::steady_no_tsc:
      return "steady_clock (no invariant TSC)";
    case Source::steady_chosen:
      return "steady_clock (RINGBUS_CLOCK=steady)";
  }
  return "unknown clock";
}

const Tsc::Calibration& Tsc::calibration() noexcept { return process_calibration(nullptr); }

const Tsc::Calibration& Tsc::calibration(std::atomic<std::uint64_t>& shared) noexcept {
  const Calibration& c = process_calibration(&shared);
  if (c.source == Source::tsc) {
    // Leave this process's rate for the next one, unless an agreeing rate is there
    // already (processes that measured in full agree to a few ppm, so they do not
    // take turns overwriting each other).
    std::uint64_t seen = shared.load(std::memory_order_relaxed);
    if (!detail::shared_rate_agrees(seen, c.ns_per_tick)) {
      shared.compare_exchange_strong(seen, c.mult, std::memory_order_relaxed);
    }
  }
  return c;
}

namespace detail {

namespace {
// 0.05 to 20 ns a tick: a TSC between 50 MHz and 20 GHz.
bool plausible_mult(std::uint64_t m) noexcept {
  return m >= static_cast<std::uint64_t>(0.05 * kFixedOne) && m <= static_cast<std::uint64_t>(20 * kFixedOne);
}
}  // namespace

bool shared_rate_agrees(std::uint64_t shared_mult, double measured_ns_per_tick) noexcept {
  if (!plausible_mult(shared_mult) || !(measured_ns_per_tick > 0)) return false;  // `!(x > 0)`: also NaN
  const double shared = static_cast<double>(shared_mult) / kFixedOne;
  return std::fabs(shared - measured_ns_per_tick) <= Tsc::kSharedTolerance * measured_ns_per_tick;
}

std::uint64_t shared_tsc_hz(std::uint64_t shared_mult) noexcept {
  if (!plausible_mult(shared_mult)) return 0;
  return static_cast<std::uint64_t>(std::llround(1e9 * kFixedOne / static_cast<double>(shared_mult)));
}

std::uint64_t reanchor(ClockAnchor& a, std::uint64_t now_ticks) noexcept {
  const Tsc::Calibration& c = Tsc::calibration();
  const std::uint64_t ns = clock_ns(CLOCK_REALTIME);
  if (!Tsc::invariant()) {
    a = ClockAnchor{};  // refresh_ticks 0: every call reads the system clock
    return ns;
  }
  a.tsc = Tsc::ticks();
  a.ns = ns;
  a.mult = c.mult;
  a.refresh_ticks = std::uint64_t{1} << 28;  // ~128 ms at 2 GHz
  (void)now_ticks;
  return ns;
}

}  // namespace detail
}  // namespace ringbus
