// How a run's measurements become the report's figures: medians over runs, latency
// chunks pooled by the placement probed around them, throughput rates by placement.
// run() measures; these functions only count, so that tests can check them on
// measurements made up to order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/histogram.hpp"

namespace ringbus::bench {

// The median of `v`: the middle value, or the mean of the middle two; 0 for none.
double median(std::vector<double> v);

// The percentiles of a histogram of clock ticks, in ns, and the share of its samples
// over 1 us (in percent).
LatencyStats stats_of(const Histogram& h, double ns_per_tick);

// One system's result in one scenario from its histogram of each run: each figure the
// median over the runs, `samples` those of one run, the spectrum that of the run whose
// p50 is nearest the median p50. System, scenario and size are left to the caller.
LatencyResult summarize_runs(const std::vector<Histogram>& runs, double ns_per_tick);

// One latency chunk of one system, kept until its scenario has run.
struct ChunkRecord {
  std::size_t system;  // index in the scenario
  std::unique_ptr<Histogram> hist;
};

// Fills the by_placement of `results` (one per system of a scenario; chunks[i] was
// measured between the probes `probes[i]`): within each placement split_placements
// finds, every system's chunks pooled over the runs, with the median of the probes
// before and after them as the placement's RTT/2; a placement is left out unless every
// system ran a chunk in it. Sets each result's `moved`, and the p99_chunk_median of
// each result (over all its chunks) and of each placement (over the chunks in it).
void add_placements(std::span<LatencyResult> results, const std::vector<ChunkRecord>& chunks,
                    const std::vector<ChunkProbes>& probes, double ns_per_tick);

// Fills the rates of each throughput case: results[i] is case i, measured[m] is (case,
// events/s) of the run's m-th measurement, around[m] the probes before and after it.
// A case's events_per_s is the median of its rates and rtt_half_ns that of the probes
// before them; moved says whether the run's measurements fell in both placements, and
// by_placement (empty before) gets the case's median rate in each placement it was
// measured in, with the median of the probes before and after those measurements.
void add_rates(std::span<ThroughputResult> results, const std::vector<std::pair<std::size_t, double>>& measured,
               const std::vector<ChunkProbes>& around);

}  // namespace ringbus::bench
