// The ringbus benchmark suite: publish-to-handle latency and throughput, with the raw
// cache-line floor and well-known queues measured in the same run. `ringbus bench` is
// its command line; bench/README.md documents the method and the JSON schema.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ringbus/segment.hpp"

namespace ringbus::bench {

struct Options {
  std::string mode = "full";            // full, quick or smoke
  int cpu_producer = 0;
  int cpu_consumer = 1;
  std::uint64_t samples = 1'000'000;    // latency samples per system, scenario and run (after warm-up)
  std::uint64_t warmup = 10'000;        // per system, scenario and run
  std::uint64_t gap_ns = 2000;          // pacing of latency runs
  std::uint64_t chunk = 50'000;         // samples per interleaved turn of one system
  int runs = 3;                         // results are medians over runs
  std::uint64_t tput_events = 10'000'000;  // events per throughput measurement (512-byte: a quarter; events_for)
  // Log bytes of ringbus's segment in the throughput cases (a power of two): by default
  // the capacity a segment gets when none is asked for. Which ring moves the most depends
  // on the CPU and the placement of the two vCPUs (bench/RESULTS.md, "Ring size").
  std::uint64_t tput_capacity = SegmentOptions{}.capacity;
  std::vector<std::string> scenarios;   // empty: all
  std::function<void(double fraction, const std::string& what)> progress;
};

// How many events every queue measured holds: the peers have this many slots, the
// one-way floor this many lines, and a latency scenario's ringbus ring the power of two
// nearest to the bytes of this many records (latency.cpp, ring_for).
inline constexpr std::size_t kPeerSlots = 4096;

// Options for a mode: "full" (1M samples x 3 runs), "quick" (60k x 3, 1.5M throughput events, about 30 s),
// "smoke" (a few seconds, for CI).
Options options_for(const std::string& mode);

// Percentiles of one system in one scenario, ns.
struct LatencyStats {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, p9999 = 0, max = 0;
  // The share of samples over 1 us, in percent. No one-way handoff of a 64-byte event
  // between two cores takes that long; on our VMs such samples are events queued behind
  // a descheduled vCPU, and once they pass 1% they set p99. (A 1 KiB event or a round
  // trip can take about 1 us without any stall.)
  double over_1us_pct = 0;
  // The median over the system's chunks (the interleaved turns of `Options::chunk`
  // samples) of each chunk's p99. VM stalls come in bursts: one that puts 1% of a run's
  // samples over 1 us sets the run's p99 whatever the queue does, but moves only the
  // chunks it fell in. Set by add_placements; 0 where no chunks were kept.
  double p99_chunk_median = 0;
};

// One system's samples from the chunks of a scenario that ran in one placement of the
// two vCPUs, pooled over the runs. Present only for a scenario whose chunks ran in both
// placements (see split_placements), and only for a placement in which every system of
// the scenario ran at least one chunk: within it, ratios compare like with like.
struct PlacementLatency : LatencyStats {
  std::string placement;    // "near" or "far"
  double rtt_half_ns = 0;   // median of the RTT/2 probes around its chunks
  std::uint64_t chunks = 0;
  std::uint64_t samples = 0;
  std::vector<std::pair<double, double>> spectrum;  // of these samples, for the plot
};

struct LatencyResult : LatencyStats {  // medians over runs
  std::string system;
  std::string scenario;
  std::uint32_t event_bytes = 0;
  std::uint64_t samples = 0;  // per run
  // The percentile spectrum of the median run, for the plot: (nines, ns) pairs.
  std::vector<std::pair<double, double>> spectrum;
  // True when the scenario's chunks ran in both placements. by_placement then holds
  // "near" and/or "far", each where every system ran a chunk; it stays empty when
  // neither placement had a chunk of every system (a short run), and the figures above
  // then mix the placements in different shares per system.
  bool moved = false;
  std::vector<PlacementLatency> by_placement;
};

// The placement of each chunk of a latency scenario, from the RTT/2 probed just before
// and just after it. The placement of two vCPUs can change every few seconds, several
// times within one scenario; the median of a mixture of near and far chunks then
// depends on how many of each a system happened to get, and a ratio of two such
// medians compares two placements. The placements are two clusters of probes more than
// kPlacementMoved apart (RTT/2 55-75 and 195-260 ns on our VMs); a probe or two well
// above the rest (one run while a vCPU was held up) is not a placement. So the probes
// of a scenario, as the JSON prints them, are split at the widest gap between two
// neighbouring values, by ratio, that is over kPlacementMoved and leaves at least
// kMinProbesPerPlacement values on either side (each probe between two chunks counts
// twice: after one, before the next), at the geometric mean of its two ends. A chunk with
// both probes below it ran near, with both at or above it far, and one whose two probes
// disagree moved while it ran and belongs to neither. Without such a gap, nothing moved.
enum class ChunkPlacement { all, near, far, mixed };
inline constexpr std::size_t kMinProbesPerPlacement = 3;
struct ChunkProbes {
  double before_ns = 0;
  double after_ns = 0;
};
std::vector<ChunkPlacement> split_placements(const std::vector<ChunkProbes>& chunks);

// A throughput case's measurements that ran in one placement. Each measurement is known
// by the RTT/2 probed just before and just after it, sorted as latency chunks are
// (split_placements, over every probe of the run's throughput cases).
struct PlacementRate {
  std::string placement;    // "near" or "far"
  double rtt_half_ns = 0;   // median of the probes around its measurements
  std::uint32_t measurements = 0;
  double events_per_s = 0;  // median of those measurements
};

// Hardware counts per event: cycles, instructions and cache misses (`cache-misses`)
// (counters.hpp, kHardwareCounters).
struct PerEvent {
  double cycles = 0;
  double instructions = 0;
  double cache_misses = 0;
};

struct ThroughputResult {
  std::string system;
  std::string scenario;  // tput8, tput64, tput512
  std::uint32_t event_bytes = 0;
  std::uint32_t producers = 1;
  std::uint32_t batch = 1;  // records per claim and per handler call; 1 = none
  double events_per_s = 0;  // median over runs
  // Median RTT/2 of the placement probes taken just before each of its runs: which
  // placement of the two vCPUs the rate was measured in.
  double rtt_half_ns = 0;
  // True when the run's throughput measurements ran in both placements; by_placement then
  // holds this case's rate in each placement it was measured in.
  bool moved = false;
  std::vector<PlacementRate> by_placement{};
  // What the hardware counters counted over all of the case's measurements, divided by
  // the events they moved: the producer threads' counts together, and the consumer's.
  // counted is false where the machine has no counters (Machine::hardware_counters_why).
  bool counted = false;
  PerEvent producer{};
  PerEvent consumer{};
};

struct Machine {
  std::string cpu_model;
  unsigned cores = 0;
  std::string compiler;
  std::string commit;
  std::string date;
  std::string kernel;
  double tsc_ghz = 0;
  bool invariant_tsc = false;
  // The most frequent advance of the clock between two consecutive readings: no latency
  // is resolved finer than this (on our VMs the TSC moves in steps of 21 ticks, 10 ns).
  double clock_step_ns = 0;
  bool clock_quantized = false;  // 99% of advances are multiples of the step
  // Why the throughput cases cannot read cycles, instructions and cache misses here (the
  // counter the kernel refused, and its error), or "" when they can. describe_machine()
  // probes it.
  std::string hardware_counters_why = "not probed";
};

// RTT/2 of one cache line between the two CPUs (median of a short probe), taken at the
// start, before the throughput cases, and at the end: the placement of two vCPUs
// changes over time and sets every result's scale.
struct Placement {
  double start_ns = 0;
  double before_tput_ns = 0;
  double end_ns = 0;
};

// Every RTT/2 a report measured: its three probes, the probe before each throughput
// case, the floor of each latency scenario (half the round-trip floor) and the RTT/2 of
// each placement a scenario was split into. When the largest is more than
// kPlacementMoved times the smallest, the vCPUs moved during the run: absolute figures
// of different scenarios come from different placements (within a scenario that moved
// while it ran, see split_placements).
struct PlacementRange {
  double min_ns = 0;
  double max_ns = 0;
  [[nodiscard]] bool moved() const noexcept;
};
inline constexpr double kPlacementMoved = 1.5;

// Wall time of a run, seconds: the latency scenarios, the throughput cases (0 for a
// part that did not run) and the whole run, probes and set-up included.
struct Elapsed {
  double latency_s = 0;
  double throughput_s = 0;
  double total_s = 0;
};

struct Report {
  Machine machine;
  Placement placement;
  Elapsed elapsed;
  Options options;
  std::vector<LatencyResult> latency;
  std::vector<ThroughputResult> throughput;
};

// Why `options` cannot run, or empty if they can: two distinct CPUs this process may
// run on, 1 .. 10^12 samples and samples per chunk, at least one run, a pacing gap of
// 1 ns .. 1 s, scenarios that exist, a throughput ring that is a valid segment capacity
// and, when a throughput case runs, fits in the memory available. run() throws
// std::invalid_argument with this text, before any thread starts.
std::string check(const Options& options);
// The longest pacing gap between latency events: 1 s.
inline constexpr std::uint64_t kMaxGapNs = 1'000'000'000;
// Why a producer on `producer` and a consumer on `consumer` cannot be pinned for a
// measurement, or empty: both CPUs this process may run on, and two different ones (a
// busy-spinning pair sharing one CPU measures the scheduler's time slice).
std::string check_cpus(int producer, int consumer);
// The scenario names --scenarios accepts, in report order.
std::vector<std::string> scenario_names();
// True if `options` select at least one latency scenario (what --plot draws).
bool selects_latency(const Options& options);
// True if `options` select at least one throughput scenario (what --capacity sizes).
bool selects_throughput(const Options& options);

Report run(const Options& options);
PlacementRange placement_range(const Report& report);
Machine describe_machine();

void print_table(const Report& report, std::FILE* out);
void write_json(const Report& report, const std::string& path);
// Writes a gnuplot script and data next to `png_path` and runs gnuplot. Returns false
// (with a message on stderr) if gnuplot is missing or fails.
bool write_plot(const Report& report, const std::string& png_path);
// True if a gnuplot executable is on PATH (checked before a run that will plot).
bool gnuplot_available();

}  // namespace ringbus::bench
