// How a consumer waits for data and a blocked producer waits for space.
//
//   busy_spin        never gives the CPU up; lowest latency, one core per waiter
//   spin_yield       spins, then sched_yield()s between polls
//   spin_park        spins, yields, then sleeps on a futex in the segment; the other
//                    side makes a wake-up syscall only while someone is parked
//   spin_sleep       spins, then sleeps a fixed interval between polls; the other side
//                    never makes a syscall (bounded extra latency, near-zero CPU); a
//                    stop, Producer::wake_waiting or a redrive ends the sleep
#pragma once

#include <chrono>
#include <cstdint>

namespace ringbus {

struct WaitStrategy {
  enum class Kind : std::uint8_t { busy_spin, spin_yield, spin_park, spin_sleep };
  Kind kind = Kind::spin_yield;
  std::uint32_t spins = 2000;       // polls before yielding (spin_yield, spin_park, spin_sleep)
  std::uint32_t yields = 200;       // yields before parking (spin_park)
  std::chrono::microseconds sleep{1000};  // park timeout (spin_park) or poll interval (spin_sleep); not negative

  static WaitStrategy busy_spin() { return {Kind::busy_spin, 0, 0, std::chrono::microseconds{0}}; }
  static WaitStrategy spin_yield(std::uint32_t spins = 2000) {
    return {Kind::spin_yield, spins, 0, std::chrono::microseconds{0}};
  }
  static WaitStrategy spin_park(std::uint32_t spins = 2000, std::uint32_t yields = 200,
                                std::chrono::microseconds timeout = std::chrono::milliseconds{10}) {
    return {Kind::spin_park, spins, yields, timeout};
  }
  static WaitStrategy spin_sleep(std::chrono::microseconds interval, std::uint32_t spins = 2000) {
    return {Kind::spin_sleep, spins, 0, interval};
  }
};

}  // namespace ringbus
