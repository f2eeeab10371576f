// Shared helpers of the test tiers.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ringbus/error.hpp"
#include "ringbus/event.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/status.hpp"
#include "ringbus/tail_reader.hpp"

namespace ringbus {
// gtest prints a Status by its name (found by argument-dependent lookup).
inline void PrintTo(Status s, std::ostream* os) { *os << to_string(s); }
}  // namespace ringbus

namespace ringbus::test {

// A name no other test process uses: prefix-pid-token-counter, the token random per process.
std::string unique_name(std::string_view prefix);

// The whole content of a file ("" if it cannot be read).
std::string read_file(const std::string& path);
// Reads descriptor `fd` (a pipe, say) until end of file or an error.
std::string read_to_end(int fd);

// The number in an event's first 8 payload bytes (fewer if the payload is shorter).
inline std::uint64_t value_of(const Event& e) {
  std::uint64_t v = 0;
  std::memcpy(&v, e.payload().data(), std::min<std::size_t>(8, e.payload().size()));
  return v;
}

// Appends value_of every event `reader` has ready.
inline void read_values(TailReader& reader, std::vector<std::uint64_t>& out) {
  Event e;
  while (reader.try_next(e)) out.push_back(value_of(e));
}

// Creates a shared-memory segment under a unique name and removes the name when done.
class TempSegment {
 public:
  explicit TempSegment(const SegmentOptions& options = small_options(), std::string_view prefix = "rbtest");
  ~TempSegment();
  TempSegment(const TempSegment&) = delete;
  TempSegment& operator=(const TempSegment&) = delete;

  [[nodiscard]] const Segment& segment() const noexcept { return seg_; }
  [[nodiscard]] const Location& location() const noexcept { return loc_; }
  static SegmentOptions small_options();

 private:
  Location loc_;
  Segment seg_;
};

// The watchdog: every test runs under a deadline (RINGBUS_TEST_TIMEOUT seconds, 300 by
// default, scaled by the caller for known-slow tests). A hung test aborts the whole
// binary with its name, so CI shows which one hung instead of timing out silently.
void set_deadline_scale(double scale);

// The CPUs this process may run on, in ascending order.
std::vector<int> allowed_cpus();

// Threads that spin on one CPU (the last this process may use) until destroyed. A
// thread pinned there too gives the CPU away for their whole time slices at each yield:
// waits that count yields instead of reading the clock are seconds long there.
class BusyCpu {
 public:
  explicit BusyCpu(int spinners);
  ~BusyCpu();
  BusyCpu(const BusyCpu&) = delete;
  BusyCpu& operator=(const BusyCpu&) = delete;
  [[nodiscard]] int cpu() const noexcept { return cpu_; }

 private:
  int cpu_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Runs `f` and returns the Error it throws (failing the test if it does not).
template <class F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no ringbus::Error was thrown";
  return Error(Errc::system, "none");
}

// Spins with yield until `pred` holds or `limit` passes (the watchdog is the real
// limit; this only bounds loops that would otherwise wait forever in a failing test).
template <class Pred>
bool eventually(Pred&& pred, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace ringbus::test
