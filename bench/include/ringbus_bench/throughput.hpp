// Throughput scenarios: events per second through one segment (or one peer queue).
#pragma once

#include <string>
#include <vector>

#include "ringbus_bench/bench.hpp"

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
// Events per second of one measurement of `events` events.
double measure_throughput(const ThroughputCase& c, const Options& o, std::uint64_t events);

}  // namespace ringbus::bench
