// Cheap timestamps for the publish path and the benchmark.
//
// `Tsc` reads the invariant time-stamp counter (about 11 ns on our VMs, against 28 ns
// for clock_gettime) and converts ticks to nanoseconds with a rate calibrated once per
// process against CLOCK_MONOTONIC_RAW, or adopted from a segment where another process
// left its rate and a short measurement agrees with it. Without an invariant TSC it
// falls back to steady_clock and the conversion is the identity. The environment variable
// RINGBUS_CLOCK chooses: unset or `tsc`, the TSC wherever it is invariant; `steady`,
// steady_clock always (for hosts whose TSC is flagged invariant but not kept in step,
// such as VMs that migrate live). The library treats any other value as unset; the
// `ringbus` tool refuses it (Tsc::setting_valid()).
//
// `wall_clock_ns()` is a Unix-epoch time built on it: each thread anchors the TSC to
// CLOCK_REALTIME and re-anchors every ~128 ms, so its error stays within a few hundred
// nanoseconds of the system clock while costing one rdtsc and a multiply per call.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define RINGBUS_HAVE_RDTSC 1
#else
#define RINGBUS_HAVE_RDTSC 0
#endif

namespace ringbus {

class Tsc {
 public:
  // Where ticks() come from.
  enum class Source : std::uint8_t {
    tsc,            // the invariant TSC
    steady_no_tsc,  // steady_clock nanoseconds: this CPU has no invariant TSC
    steady_chosen,  // steady_clock nanoseconds: RINGBUS_CLOCK=steady
  };
  static constexpr const char* kEnvironment = "RINGBUS_CLOCK";

  // True when ticks() reads an invariant TSC (else steady_clock nanoseconds).
  static bool invariant() noexcept { return calibration().source == Source::tsc; }
  static Source source() noexcept { return calibration().source; }
  // The source in words, for reports: "invariant TSC", "steady_clock (no invariant
  // TSC)" or "steady_clock (RINGBUS_CLOCK=steady)".
  static const char* describe(Source s) noexcept;
  // False when RINGBUS_CLOCK is set to something other than `tsc` or `steady`.
  static bool setting_valid() noexcept;

  static std::uint64_t ticks() noexcept {
#if RINGBUS_HAVE_RDTSC
    if (invariant()) return __rdtsc();
#endif
    return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }

  // As ticks(), but read only after every earlier load has completed (rdtscp). Use it
  // to end a measured interval: a plain rdtsc may execute before the load that
  // observed the awaited data, and under-report the interval.
  static std::uint64_t ticks_after_loads() noexcept {
#if RINGBUS_HAVE_RDTSC
    if (invariant()) {
      unsigned aux = 0;
      return __rdtscp(&aux);
    }
#endif
    return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }

  static double ns_per_tick() noexcept { return calibration().ns_per_tick; }

  static std::uint64_t to_ns(std::uint64_t ticks_delta) noexcept {
    return static_cast<std::uint64_t>(static_cast<double>(ticks_delta) * calibration().ns_per_tick);
  }
  // The ticks that make `ns` nanoseconds (a pacing gap, a deadline in ticks).
  static std::uint64_t from_ns(std::uint64_t ns) noexcept {
    return static_cast<std::uint64_t>(static_cast<double>(ns) / calibration().ns_per_tick);
  }

  struct Calibration {
    Source source = Source::steady_no_tsc;
    double ns_per_tick = 1.0;
    std::uint64_t mult = std::uint64_t{1} << 32;  // ns_per_tick in 32.32 fixed point
    bool adopted = false;  // the rate came from a segment's shared word (checked), not a full measurement
  };
  // Measured on first use (about 20 ms), then constant for the life of the process.
  static const Calibration& calibration() noexcept;
  // As calibration(), where a segment is at hand. `shared` is the segment's word for
  // the rate (`mult` above; 0 = none yet), written by whichever process measured first.
  // If this is the process's first calibration and `shared` holds a rate, it is adopted
  // when the first kSharedCheckNs of the measurement agree with it within
  // kSharedTolerance; otherwise the measurement runs its full 20 ms. Afterwards a
  // `shared` that is 0, or disagrees with the process's rate by more than that, is set
  // to it. The word is untrusted: any value is safe to find there.
  static const Calibration& calibration(std::atomic<std::uint64_t>& shared) noexcept;
  static constexpr std::uint64_t kSharedCheckNs = 2'000'000;
  static constexpr double kSharedTolerance = 20e-6;
};

namespace detail {
struct ClockAnchor {
  std::uint64_t tsc = 0;
  std::uint64_t ns = 0;
  std::uint64_t mult = 0;
  std::uint64_t refresh_ticks = 0;  // 0 forces a re-anchor on the next call
};
std::uint64_t reanchor(ClockAnchor& a, std::uint64_t now_ticks) noexcept;
// True when `shared_mult` (a rate in 32.32 fixed point, read from a segment) is a TSC
// rate between 50 MHz and 20 GHz that agrees with `measured_ns_per_tick` within
// Tsc::kSharedTolerance.
bool shared_rate_agrees(std::uint64_t shared_mult, double measured_ns_per_tick) noexcept;
// The rate `shared_mult` stands for, in ticks a second; 0 when it is outside that range.
std::uint64_t shared_tsc_hz(std::uint64_t shared_mult) noexcept;
}  // namespace detail

// Nanoseconds since the Unix epoch, from the TSC (see above).
inline std::uint64_t wall_clock_ns() noexcept {
  thread_local detail::ClockAnchor anchor;
  const std::uint64_t t = Tsc::ticks();
  const std::uint64_t elapsed = t - anchor.tsc;
  if (elapsed >= anchor.refresh_ticks) [[unlikely]] return detail::reanchor(anchor, t);
  return anchor.ns + ((elapsed * anchor.mult) >> 32);
}

}  // namespace ringbus
