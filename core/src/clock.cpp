#include "ringbus/clock.hpp"

#include <time.h>

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

Tsc::Calibration calibrate() noexcept {
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
  std::uint64_t t0 = 0, n0 = 0, t1 = 0, n1 = 0;
  pair(t0, n0);
  const std::uint64_t until = n0 + 20'000'000ull;
  while (clock_ns(CLOCK_MONOTONIC_RAW) < until) {
  }
  pair(t1, n1);
  if (t1 <= t0 || n1 <= n0) return c;
  c.source = Tsc::Source::tsc;
  c.ns_per_tick = static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0);
  c.mult = static_cast<std::uint64_t>(c.ns_per_tick * 4294967296.0);
#endif
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

const Tsc::Calibration& Tsc::calibration() noexcept {
  static const Calibration c = calibrate();
  return c;
}

namespace detail {

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
