// Runs the scenarios: systems of a latency scenario take turns chunk by chunk (the
// first system of each turn rotates), so that all of them see the same machine; each
// run gives percentiles per system; the report keeps the median over runs.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <sys/sysinfo.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <span>
#include <stdexcept>
#include <utility>

#include "latency.hpp"
#include "ringbus/consumer.hpp"
#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/summary.hpp"
#include "ringbus_bench/throughput.hpp"

namespace ringbus::bench {
namespace {

// Ping-pongs of the placement probe before each throughput measurement (about 5 ms
// paced every 2 us): enough for a median that tells the placements apart (about 70
// against 230 ns on our VMs), small beside the measurement.
constexpr std::uint64_t kCaseProbeSamples = 2'000;
// Ping-pongs of the probe between two latency chunks (about 1 ms far; a chunk of the
// full mode takes 100 ms): enough for a median that tells the placements apart.
constexpr std::uint64_t kChunkProbeSamples = 500;

bool wanted(const Options& o, const std::string& scenario) {
  return o.scenarios.empty() || std::find(o.scenarios.begin(), o.scenarios.end(), scenario) != o.scenarios.end();
}

std::vector<std::pair<double, double>> spectrum_of(const Histogram& h, double ns_per_tick) {
  std::vector<std::pair<double, double>> out;
  const double top = std::log10(static_cast<double>(std::max<std::uint64_t>(h.count(), 10)));
  for (double nines = 0; nines <= top + 1e-9; nines += 0.05) {
    const double p = 100.0 * (1.0 - std::pow(10.0, -nines));
    out.emplace_back(nines, static_cast<double>(h.percentile(std::max(p, 1e-9))) * ns_per_tick);
  }
  out.emplace_back(top, static_cast<double>(h.max()) * ns_per_tick);
  return out;
}

// The two placements split_placements sorts chunks and measurements into, as reported.
constexpr std::pair<ChunkPlacement, const char*> kPlacements[] = {{ChunkPlacement::near, "near"},
                                                                   {ChunkPlacement::far, "far"}};

// True if split_placements found the probes in both placements.
bool moved(const std::vector<ChunkPlacement>& where) {
  return std::any_of(where.begin(), where.end(), [](ChunkPlacement c) { return c != ChunkPlacement::all; });
}

// What a case's measurements counted, summed, and the events they moved.
struct CaseCounts {
  bool counted = true;  // every measurement was
  Counts producer{};
  Counts consumer{};
  std::uint64_t events = 0;

  void add(const Measurement& m, std::uint64_t moved) {
    counted = counted && m.counted;
    for (std::size_t k = 0; k < kMaxCounters; ++k) {
      producer[k] += m.producer[k];
      consumer[k] += m.consumer[k];
    }
    events += moved;
  }
  // Sets t's counts per event, if every measurement was counted.
  void set(ThroughputResult& t) const {
    t.counted = counted && events > 0;
    if (!t.counted) return;
    static_assert(kHardwareCounters.size() == 3 && kHardwareCounters[0].config == PERF_COUNT_HW_CPU_CYCLES &&
                  kHardwareCounters[1].config == PERF_COUNT_HW_INSTRUCTIONS &&
                  kHardwareCounters[2].config == PERF_COUNT_HW_CACHE_MISSES);
    const auto n = static_cast<double>(events);
    const auto per_event = [n](const Counts& c) {
      return PerEvent{static_cast<double>(c[0]) / n, static_cast<double>(c[1]) / n, static_cast<double>(c[2]) / n};
    };
    t.producer = per_event(producer);
    t.consumer = per_event(consumer);
  }
};

}  // namespace

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

LatencyStats stats_of(const Histogram& h, double ns_per_tick) {
  const auto one_us = static_cast<std::uint64_t>(1000.0 / ns_per_tick);
  const double n = static_cast<double>(h.count());
  LatencyStats st;
  st.p50 = static_cast<double>(h.percentile(50)) * ns_per_tick;
  st.p90 = static_cast<double>(h.percentile(90)) * ns_per_tick;
  st.p99 = static_cast<double>(h.percentile(99)) * ns_per_tick;
  st.p999 = static_cast<double>(h.percentile(99.9)) * ns_per_tick;
  st.p9999 = static_cast<double>(h.percentile(99.99)) * ns_per_tick;
  st.max = static_cast<double>(h.max()) * ns_per_tick;
  st.over_1us_pct = n > 0 ? 100.0 * static_cast<double>(h.count_above(one_us)) / n : 0;
  return st;
}

LatencyResult summarize_runs(const std::vector<Histogram>& runs, double ns_per_tick) {
  std::vector<LatencyStats> stats;
  for (const Histogram& h : runs) stats.push_back(stats_of(h, ns_per_tick));
  LatencyResult res;
  res.samples = runs.empty() ? 0 : runs[0].count();
  auto med = [&](double LatencyStats::*f) {
    std::vector<double> v;
    for (const LatencyStats& x : stats) v.push_back(x.*f);
    return median(v);
  };
  for (double LatencyStats::*f : {&LatencyStats::p50, &LatencyStats::p90, &LatencyStats::p99, &LatencyStats::p999,
                                  &LatencyStats::p9999, &LatencyStats::max, &LatencyStats::over_1us_pct}) {
    res.*f = med(f);
  }
  if (runs.empty()) return res;
  std::size_t mid = 0;
  for (std::size_t r = 0; r < stats.size(); ++r) {
    if (std::abs(stats[r].p50 - res.p50) < std::abs(stats[mid].p50 - res.p50)) mid = r;
  }
  res.spectrum = spectrum_of(runs[mid], ns_per_tick);
  return res;
}

void add_placements(std::span<LatencyResult> results, const std::vector<ChunkRecord>& chunks,
                    const std::vector<ChunkProbes>& probes, double ns_per_tick) {
  const std::vector<ChunkPlacement> where = split_placements(probes);
  // Each system's chunk p99s, of the chunks `in` accepts.
  auto chunk_p99s = [&](auto in) {
    std::vector<std::vector<double>> p99s(results.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      if (!in(where[i])) continue;
      p99s[chunks[i].system].push_back(static_cast<double>(chunks[i].hist->percentile(99)) * ns_per_tick);
    }
    return p99s;
  };
  const auto all_p99s = chunk_p99s([](ChunkPlacement) { return true; });
  for (std::size_t s = 0; s < results.size(); ++s) {
    results[s].moved = moved(where);
    results[s].p99_chunk_median = median(all_p99s[s]);
  }
  for (const auto& [side, name] : kPlacements) {
    std::vector<Histogram> pooled(results.size());
    std::vector<std::uint64_t> count(results.size(), 0);
    std::vector<double> around;
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      if (where[i] != side) continue;
      pooled[chunks[i].system].merge(*chunks[i].hist);
      ++count[chunks[i].system];
      around.insert(around.end(), {probes[i].before_ns, probes[i].after_ns});
    }
    if (std::find(count.begin(), count.end(), 0u) != count.end()) continue;
    const auto side_p99s = chunk_p99s([side = side](ChunkPlacement c) { return c == side; });
    for (std::size_t s = 0; s < results.size(); ++s) {
      PlacementLatency p;
      static_cast<LatencyStats&>(p) = stats_of(pooled[s], ns_per_tick);
      p.p99_chunk_median = median(side_p99s[s]);
      p.placement = name;
      p.rtt_half_ns = median(around);
      p.chunks = count[s];
      p.samples = pooled[s].count();
      p.spectrum = spectrum_of(pooled[s], ns_per_tick);
      results[s].by_placement.push_back(std::move(p));
    }
  }
}

void add_rates(std::span<ThroughputResult> results, const std::vector<std::pair<std::size_t, double>>& measured,
               const std::vector<ChunkProbes>& around) {
  const std::vector<ChunkPlacement> where = split_placements(around);
  for (std::size_t i = 0; i < results.size(); ++i) {
    ThroughputResult& t = results[i];
    // Case i's rates in the placements `in` accepts, with the probe before each (and the
    // one after, when both_sides).
    auto of_case = [&](auto in, std::vector<double>& rates, std::vector<double>& probed, bool both_sides) {
      for (std::size_t m = 0; m < measured.size(); ++m) {
        if (measured[m].first != i || !in(where[m])) continue;
        rates.push_back(measured[m].second);
        probed.push_back(around[m].before_ns);
        if (both_sides) probed.push_back(around[m].after_ns);
      }
    };
    std::vector<double> rates, before;
    of_case([](ChunkPlacement) { return true; }, rates, before, false);
    t.events_per_s = median(rates);
    t.rtt_half_ns = median(before);
    t.moved = moved(where);
    for (const auto& [side, name] : kPlacements) {
      std::vector<double> in_side, probed;
      of_case([side = side](ChunkPlacement c) { return c == side; }, in_side, probed, true);
      if (!in_side.empty()) {
        t.by_placement.push_back({name, median(probed), static_cast<std::uint32_t>(in_side.size()), median(in_side)});
      }
    }
  }
}

Options options_for(const std::string& mode) {
  Options o;
  o.mode = mode;
  o.tput_events = 10'000'000;
  if (mode == "quick") {
    o.samples = 60'000;
    o.runs = 3;
    o.tput_events = 1'500'000;
  } else if (mode == "smoke") {
    o.samples = 4'000;
    o.warmup = 400;
    o.chunk = 2'000;
    o.runs = 1;
    o.tput_events = 100'000;
  }
  return o;
}

std::vector<std::string> scenario_names() {
  std::vector<std::string> names;
  const auto add = [&](const std::string& n) {
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  for (const LatencyScenario& sc : latency_scenarios()) add(sc.name);
  for (const ThroughputCase& c : throughput_cases()) add(c.scenario);
  return names;
}

bool selects_latency(const Options& o) {
  const auto scenarios = latency_scenarios();
  return std::any_of(scenarios.begin(), scenarios.end(), [&](const LatencyScenario& sc) { return wanted(o, sc.name); });
}

// Memory the throughput ring may take: the kernel's MemAvailable estimate (free memory
// and what it can reclaim without swapping), else free memory.
std::uint64_t available_memory() {
  std::ifstream meminfo("/proc/meminfo");
  std::string field;
  std::uint64_t kib = 0;
  while (meminfo >> field >> kib) {
    if (field == "MemAvailable:") return kib << 10;
    meminfo.ignore(64, '\n');
  }
  struct sysinfo si {};
  return ::sysinfo(&si) == 0 ? std::uint64_t{si.freeram} * si.mem_unit : ~0ull;
}

bool selects_throughput(const Options& o) {
  const auto cases = throughput_cases();
  return std::any_of(cases.begin(), cases.end(), [&](const ThroughputCase& c) { return wanted(o, c.scenario); });
}

std::string check_cpus(int producer, int consumer) {
  for (const int cpu : {producer, consumer}) {
    if (std::string why = cpu_unavailable(cpu); !why.empty()) return why;
  }
  if (producer == consumer) {
    return fmt::format("the producer and the consumer need two different CPUs (both are {})", producer);
  }
  return {};
}

std::string check(const Options& o) {
  if (std::string why = check_cpus(o.cpu_producer, o.cpu_consumer); !why.empty()) return why;
  // Upper bounds keep the chunking arithmetic of run() from overflowing; a run at either
  // bound would take days.
  constexpr std::uint64_t kMaxSamples = 1'000'000'000'000;
  if (o.samples == 0) return "samples must be at least 1";
  if (o.samples > kMaxSamples) return fmt::format("samples must be at most {}", kMaxSamples);
  if (o.runs < 1) return "runs must be at least 1";
  if (o.chunk == 0) return "chunk must be at least 1";
  if (o.chunk > kMaxSamples) return fmt::format("chunk must be at most {}", kMaxSamples);
  if (o.gap_ns == 0) return "the pacing gap must be at least 1 ns";
  if (o.gap_ns > kMaxGapNs) return fmt::format("the pacing gap must be at most {} ns (1 s)", kMaxGapNs);
  const std::vector<std::string> known = scenario_names();
  for (const std::string& s : o.scenarios) {
    if (std::find(known.begin(), known.end(), s) == known.end()) {
      return fmt::format("unknown scenario \"{}\" (known: {})", s, fmt::join(known, ","));
    }
  }
  const std::uint64_t ring = o.tput_capacity;
  if (!std::has_single_bit(ring) || ring < layout::kMinCapacity || ring > layout::kMaxCapacity) {
    return fmt::format("the throughput ring's capacity must be a power of two from {} KiB to {} TiB, not {} bytes",
                       layout::kMinCapacity >> 10, layout::kMaxCapacity >> 40, ring);
  }
  if (selects_throughput(o)) {
    // A batched case claims `batch` records at once, and one claim takes at most a
    // quarter of the ring (Status::too_large otherwise): name the capacity that fits.
    for (const ThroughputCase& c : throughput_cases()) {
      const std::uint64_t claim = record_bytes(c.event_bytes) * c.batch;
      if (wanted(o, c.scenario) && claim > ring / 4) {
        return fmt::format(
            "the throughput ring of {} KiB is too small for {}: a batch of {} records takes {} bytes and one claim "
            "takes at most a quarter of the ring ({} bytes); use --capacity {}K or more",
            ring >> 10, c.scenario, c.batch, claim, ring / 4, std::bit_ceil(claim * 4) >> 10);
      }
    }
    // The ring is an anonymous segment: memory, not /dev/shm's size, bounds it.
    if (const std::uint64_t available = available_memory(); ring >= available) {
      return fmt::format("the throughput ring of {} MiB does not fit in memory ({} MiB available)", ring >> 20,
                         available >> 20);
    }
  }
  return {};
}

Report run(const Options& o) {
  if (const std::string why = check(o); !why.empty()) throw std::invalid_argument(why);
  const auto started = std::chrono::steady_clock::now();
  const auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  Report report;
  report.options = o;
  report.machine = describe_machine();
  report.placement.start_ns = probe_floor(o, 20'000);
  const double ns_per_tick = Tsc::ns_per_tick();
  const std::uint64_t chunks = std::max<std::uint64_t>(1, (o.samples + o.chunk - 1) / o.chunk);
  const std::uint64_t per_chunk = (o.samples + chunks - 1) / chunks;
  const std::uint64_t warm_per_chunk = std::max<std::uint64_t>(100, o.warmup / chunks);
  const std::uint64_t gap_ticks = Tsc::from_ns(o.gap_ns);

  const auto scenarios = latency_scenarios();
  const auto cases = throughput_cases();
  // Progress: one unit per chunk of one system, ten per throughput measurement.
  double total = 0, done = 0;
  for (const auto& sc : scenarios) {
    if (wanted(o, sc.name)) total += static_cast<double>(static_cast<std::uint64_t>(o.runs) * chunks * sc.systems);
  }
  for (const auto& c : cases) {
    if (wanted(o, c.scenario)) total += 10.0 * o.runs;
  }
  auto tick = [&](double units, const std::string& what) {
    done += units;
    if (o.progress) o.progress(total > 0 ? done / total : 1.0, what);
  };

  const auto latency_started = std::chrono::steady_clock::now();
  for (const LatencyScenario& sc : scenarios) {
    if (!wanted(o, sc.name)) continue;
    auto systems = sc.make(o);
    if (systems.size() != sc.systems) throw std::logic_error("latency scenario " + sc.name + ": wrong system count");
    std::vector<std::vector<Histogram>> hist(systems.size(), std::vector<Histogram>(static_cast<std::size_t>(o.runs)));
    // Every chunk keeps its own histogram and the probes around it, to be sorted by
    // placement once the scenario has run. A probe runs between every two chunks.
    std::vector<ChunkRecord> chunk_records;
    std::vector<ChunkProbes> chunk_probes;
    double probe = probe_floor(o, kChunkProbeSamples);
    for (int r = 0; r < o.runs; ++r) {
      for (std::uint64_t k = 0; k < chunks; ++k) {
        for (std::size_t j = 0; j < systems.size(); ++j) {
          const std::size_t s = (j + k) % systems.size();
          Chunk c{o.cpu_producer, o.cpu_consumer, per_chunk + warm_per_chunk, warm_per_chunk, gap_ticks};
          auto h = std::make_unique<Histogram>();
          systems[s]->run_chunk(c, *h);
          hist[s][static_cast<std::size_t>(r)].merge(*h);
          const double after = probe_floor(o, kChunkProbeSamples);
          chunk_probes.push_back({probe, after});
          chunk_records.push_back({s, std::move(h)});
          probe = after;
          tick(1, sc.name + " " + std::to_string(sc.event_bytes) + " B: " + systems[s]->name());
        }
      }
    }
    for (std::size_t s = 0; s < systems.size(); ++s) {
      LatencyResult res = summarize_runs(hist[s], ns_per_tick);
      res.system = systems[s]->name();
      res.scenario = sc.name;
      res.event_bytes = sc.event_bytes;
      report.latency.push_back(std::move(res));
    }
    add_placements(std::span(report.latency).last(systems.size()), chunk_records, chunk_probes, ns_per_tick);
  }

  // A part that did not run took 0 s exactly, not the microseconds of finding so (a
  // stall of the VM in them could show as milliseconds).
  if (selects_latency(o)) report.elapsed.latency_s = seconds_since(latency_started);

  // Throughput cases take turns too (one measurement of each per run): the placement
  // of the two vCPUs changes over seconds and moves every system's rate together, so
  // each measurement is preceded by a short placement probe, reported with its rate.
  std::vector<const ThroughputCase*> picked;
  for (const ThroughputCase& c : cases) {
    if (wanted(o, c.scenario)) picked.push_back(&c);
  }
  // Every measurement in order, with the probes around it: the probe before the next
  // measurement is the one after this.
  std::vector<std::pair<std::size_t, double>> measured;  // (case, rate)
  std::vector<ChunkProbes> around;
  // The counts of each case, over its measurements, and the events they moved.
  std::vector<CaseCounts> counted(picked.size());
  const std::span<const CounterSpec> counters =
      report.machine.hardware_counters_why.empty() ? std::span<const CounterSpec>(kHardwareCounters)
                                                   : std::span<const CounterSpec>();
  const auto throughput_started = std::chrono::steady_clock::now();
  if (!picked.empty()) {
    report.placement.before_tput_ns = probe_floor(o, 20'000);
    double probe = probe_floor(o, kCaseProbeSamples);
    for (int r = 0; r < o.runs; ++r) {
      for (std::size_t i = 0; i < picked.size(); ++i) {
        const std::uint64_t events = events_for(*picked[i], o);
        const Measurement m = measure_throughput(*picked[i], o, events, counters);
        const double after = probe_floor(o, kCaseProbeSamples);
        measured.emplace_back(i, m.events_per_s);
        counted[i].add(m, events);
        around.push_back({probe, after});
        probe = after;
        tick(10, picked[i]->scenario + ": " + picked[i]->system);
      }
    }
  }
  for (std::size_t i = 0; i < picked.size(); ++i) {
    const ThroughputCase* c = picked[i];
    report.throughput.push_back({c->system, c->scenario, c->event_bytes, c->producers, c->batch});
    counted[i].set(report.throughput.back());
  }
  add_rates(report.throughput, measured, around);
  if (!picked.empty()) report.elapsed.throughput_s = seconds_since(throughput_started);
  report.placement.end_ns = probe_floor(o, 20'000);
  report.elapsed.total_s = seconds_since(started);
  return report;
}

}  // namespace ringbus::bench
