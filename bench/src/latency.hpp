// Latency scenarios: each builds the systems it compares.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "harness.hpp"
#include "ringbus_bench/bench.hpp"

namespace ringbus::bench {

struct LatencyScenario {
  std::string name;          // JSON "scenario"
  std::uint32_t event_bytes;
  std::string title;
  std::size_t systems;  // how many make() returns (progress accounting; run() checks it)
  std::function<std::vector<std::unique_ptr<LatencySystem>>(const Options&)> make;
};

std::vector<LatencyScenario> latency_scenarios();

// Median RTT/2 (ns) of `samples` paced cache-line ping-pongs between the two CPUs.
double probe_floor(const Options& o, std::uint64_t samples);

}  // namespace ringbus::bench
