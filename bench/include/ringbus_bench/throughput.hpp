// Throughput scenarios: events per second through one segment (or one peer queue).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/counters.hpp"

namespace ringbus::bench {

struct ThroughputCase {
  std::string system;
  std::string scenario;  // tput8, tput64, tput512
  std::uint32_t event_bytes;
  std::uint32_t producers;
  std::uint32_t batch;
};

std::vector<ThroughputCase> throughput_cases();
// Events in one measurement of a case: Options::tput_events, a quarter of it for
// 512-byte events, which move at a third to half the rate of 8 and 64-byte ones (far,
// 7-19 against 15-100 M/s), so that each measurement takes about as long.
std::uint64_t events_for(const ThroughputCase& c, const Options& o);
// One measurement: its rate and, when it was asked to count and every thread could open
// its counters, what they counted from the start signal to the thread's end: the
// producer threads' counts summed, and the consumer's.
struct Measurement {
  double events_per_s = 0;
  bool counted = false;
  Counts producer{};
  Counts consumer{};
};
// One measurement of `events` events; each of its threads counts `counters` (none when
// empty, as where the machine has none: hardware_counters_unavailable()).
Measurement measure_throughput(const ThroughputCase& c, const Options& o, std::uint64_t events,
                               std::span<const CounterSpec> counters = {});

}  // namespace ringbus::bench
