// The terminal table, the JSON file and the gnuplot spectrum of a benchmark report.
#include <fmt/format.h>
#include <spawn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "ringbus/clock.hpp"
#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/counters.hpp"
#include "ringbus_bench/git_commit.hpp"

extern char** environ;

namespace ringbus::bench {
namespace {

// A message on standard error. fputs, not fmt::print, which throws when standard error
// is closed (`2>&-`) and ended the tool by abort.
void say(const std::string& text) { std::fputs(text.c_str(), stderr); }

// A gnuplot single-quoted string holds a quote as two quotes.
std::string gnuplot_quoted(const std::string& s) {
  std::string out;
  for (const char c : s) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  return out;
}

// A ratio as the report prints it: two decimals, or two significant digits below 0.1
// (a p99 of 2 us against a peer's stall of 1 ms is 0.0024x, not 0.00x).
std::string times(double x) { return x >= 0.095 ? fmt::format("{:.2f}x", x) : fmt::format("{:.2g}x", x); }

const LatencyResult* find(const Report& r, const std::string& scenario, std::uint32_t bytes, const std::string& system) {
  for (const LatencyResult& l : r.latency) {
    if (l.scenario == scenario && l.event_bytes == bytes && l.system == system) return &l;
  }
  return nullptr;
}

// A system's figures in one placement ("near", "far"), or over all chunks ("").
const PlacementLatency* placed(const LatencyResult* l, const std::string& placement) {
  if (l == nullptr) return nullptr;
  for (const PlacementLatency& p : l->by_placement) {
    if (p.placement == placement) return &p;
  }
  return nullptr;
}
const LatencyStats* in(const LatencyResult* l, const std::string& placement) {
  if (placement.empty()) return l;
  return placed(l, placement);
}

// The placements a scenario is judged in: each one in which every system ran, for a
// scenario whose chunks ran in both; else all its chunks together ("").
std::vector<std::string> placements_of(const Report& r, const std::string& scenario, std::uint32_t bytes) {
  for (const LatencyResult& l : r.latency) {
    if (l.scenario != scenario || l.event_bytes != bytes || l.by_placement.empty()) continue;
    std::vector<std::string> out;
    for (const PlacementLatency& p : l.by_placement) out.push_back(p.placement);
    return out;
  }
  return {""};
}

// " [far, RTT/2 205 ns]" for a figure from one placement; " [placements mixed]" for one
// over all the chunks of a scenario that moved but could not be split.
std::string placement_label(const Report& r, const std::string& scenario, std::uint32_t bytes,
                            const std::string& placement) {
  if (placement.empty()) {
    const LatencyResult* l = find(r, scenario, bytes, "ringbus");
    return l != nullptr && l->moved ? " [placements mixed]" : "";
  }
  const PlacementLatency* p = placed(find(r, scenario, bytes, "floor"), placement);
  return p ? fmt::format(" [{}, RTT/2 {:.0f} ns]", placement, p->rtt_half_ns) : " [" + placement + "]";
}

// A peer queue: any system but ringbus's own rows, the floors and the throughput
// references.
bool is_peer(const std::string& system) {
  return system.rfind("ringbus", 0) != 0 && system.rfind("floor", 0) != 0 && system.rfind("stream", 0) != 0;
}

struct Peer {
  const LatencyResult* result = nullptr;
  const LatencyStats* stats = nullptr;
};

Peer best_peer(const Report& r, const std::string& scenario, std::uint32_t bytes, const std::string& placement,
               double LatencyStats::*stat) {
  Peer best;
  for (const LatencyResult& l : r.latency) {
    if (l.scenario != scenario || l.event_bytes != bytes || !is_peer(l.system)) continue;
    const LatencyStats* st = in(&l, placement);
    if (st != nullptr && (best.stats == nullptr || st->*stat < best.stats->*stat)) best = {&l, st};
  }
  return best;
}

const ThroughputResult* find_tput(const Report& r, const std::string& scenario, const std::string& system,
                                  std::uint32_t producers, std::uint32_t batch) {
  for (const ThroughputResult& t : r.throughput) {
    if (t.scenario == scenario && t.system == system && t.producers == producers && t.batch == batch) return &t;
  }
  return nullptr;
}

// "; one record at a time: stream 28.6, stream_claim 10.0 M/s": the scenario's
// references (throughput.cpp), over all runs (placement "") or in one placement; "" where
// neither was measured there.
std::string tput_references(const Report& r, const std::string& scenario, const std::string& placement) {
  std::string text;
  for (const char* reference : {"stream", "stream_claim"}) {
    const ThroughputResult* f = find_tput(r, scenario, reference, 1, 1);
    if (f == nullptr) continue;
    double rate = placement.empty() ? f->events_per_s : 0;
    for (const PlacementRate& p : f->by_placement) {
      if (!placement.empty() && p.placement == placement) rate = p.events_per_s;
    }
    if (rate <= 0) continue;
    text += fmt::format("{}{} {:.1f}", text.empty() ? "; one record at a time: " : ", ", reference, rate / 1e6);
  }
  return text.empty() ? text : text + " M/s";
}

struct Target {
  std::string what;
  bool met;
  std::string value;
  std::string placement;  // "near" or "far" when judged within one; empty: all chunks
};

std::vector<Target> targets(const Report& r) {
  std::vector<Target> out;
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  for (const std::string& at : placements_of(r, "thread", 64)) {
    const std::string where = placement_label(r, "thread", 64, at);
    const LatencyStats* rb = in(find(r, "thread", 64, "ringbus"), at);
    const LatencyStats* floor = in(find(r, "thread", 64, "floor"), at);
    const Peer peer50 = best_peer(r, "thread", 64, at, &LatencyStats::p50);
    const Peer peer99 = best_peer(r, "thread", 64, at, &LatencyStats::p99);
    if (rb && floor) {
      const double x = ratio(rb->p50, floor->p50);
      out.push_back({"thread p50 <= 1.10 x floor p50" + where, x <= 1.10, times(x), at});
    }
    if (rb && peer50.stats) {
      const double x = ratio(rb->p50, peer50.stats->p50);
      out.push_back({"thread p50 <= best peer p50 (" + peer50.result->system + ")" + where, x <= 1.0,
                     times(x), at});
    }
    if (rb && peer99.stats) {
      const double x = ratio(rb->p99, peer99.stats->p99);
      // With the samples over 1 us (events queued behind a VM stall) beside it: when they
      // pass 1%, they are what p99 measures.
      out.push_back({"thread p99 <= best peer p99 (" + peer99.result->system + ")" + where, x <= 1.0,
                     fmt::format("{} (over 1 us: ringbus {:.2f}%, {} {:.2f}%)", times(x), rb->over_1us_pct,
                                 peer99.result->system, peer99.stats->over_1us_pct),
                     at});
    }
    // p99 with the VM's bursts of stalls set apart: each system's median chunk p99.
    const Peer chunk99 = best_peer(r, "thread", 64, at, &LatencyStats::p99_chunk_median);
    if (rb && chunk99.stats && rb->p99_chunk_median > 0 && chunk99.stats->p99_chunk_median > 0) {
      const double x = ratio(rb->p99_chunk_median, chunk99.stats->p99_chunk_median);
      out.push_back({"(reference) thread median chunk p99 <= best peer (" + chunk99.result->system + ")" +
                         where,
                     x <= 1.0,
                     fmt::format("{} ({:.0f} against {:.0f} ns)", times(x), rb->p99_chunk_median,
                                 chunk99.stats->p99_chunk_median),
                     at});
    }
    if (const LatencyStats* one = in(find(r, "thread", 64, "floor_oneway"), at); rb && one) {
      const double x = ratio(rb->p50, one->p50);
      out.push_back(
          {"(reference) thread p50 / one-way one-line floor p50" + where, x <= 1.10, times(x), at});
    }
  }
  // Against the thread-to-thread configuration interleaved in the same scenario.
  for (const auto& [scenario, what, limit] : std::vector<std::tuple<std::string, std::string, double>>{
           {"process", "process p50 within 5% of thread p50", 1.05},
           {"fanout4", "4 gating groups p50 <= 1.15 x one group", 1.15},
           {"keys10k", "10,000-key sequencing p50 <= 1.10 x unkeyed", 1.10}}) {
    for (const std::string& at : placements_of(r, scenario, 64)) {
      const LatencyStats* x = in(find(r, scenario, 64, "ringbus"), at);
      const LatencyStats* ref = in(find(r, scenario, 64, "ringbus_thread"), at);
      if (x && ref) {
        const double v = ratio(x->p50, ref->p50);
        out.push_back({what + placement_label(r, scenario, 64, at), v <= limit, times(v), at});
      }
    }
  }
  // One producer; each rate with the placement it was measured in. Judged for the
  // group's default reader, for the trailing one (GroupOptions::trail_bytes) and for an
  // exclusive producer (ProducerOptions::exclusive) with the default reader.
  using TputTarget = std::tuple<std::string, std::uint32_t, std::string, std::string, double>;
  for (const auto& [scenario, batch, system, what, least] : std::vector<TputTarget>{
           {"tput64", 1, "ringbus", "64-byte events, 1 producer >= 40 M/s", 40e6},
           {"tput64", 1, "ringbus_trailing", "64-byte events, 1 producer, trailing reader >= 40 M/s", 40e6},
           {"tput8", 32, "ringbus", "8-byte events, 1 producer, batched >= 120 M/s", 120e6},
           {"tput8", 32, "ringbus_trailing", "8-byte events, 1 producer, batched, trailing reader >= 120 M/s", 120e6},
           {"tput64", 1, "ringbus_exclusive", "64-byte events, 1 exclusive producer >= 40 M/s", 40e6},
           {"tput8", 32, "ringbus_exclusive", "8-byte events, 1 exclusive producer, batched >= 120 M/s", 120e6}}) {
    const ThroughputResult* t = find_tput(r, scenario, system, 1, batch);
    if (t == nullptr) continue;
    if (t->by_placement.empty()) {
      out.push_back({what + (t->moved ? " [placements mixed]" : ""), t->events_per_s >= least,
                     fmt::format("{:.1f} M/s (RTT/2 {:.0f} ns{})", t->events_per_s / 1e6, t->rtt_half_ns,
                                 batch == 1 ? tput_references(r, scenario, "") : ""),
                     ""});
    }
    // Measured in both placements: judged in each, like a latency scenario that moved.
    for (const PlacementRate& p : t->by_placement) {
      out.push_back({fmt::format("{} [{}, RTT/2 {:.0f} ns]", what, p.placement, p.rtt_half_ns), p.events_per_s >= least,
                     fmt::format("{:.1f} M/s ({} of {} runs{})", p.events_per_s / 1e6, p.measurements, r.options.runs,
                                 batch == 1 ? tput_references(r, scenario, p.placement) : ""),
                     p.placement});
    }
  }
  return out;
}

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The smallest and largest of RTT/2 values, leaving out those not measured (0).
// The range in the 0.1 ns the JSON prints it with, so that moved() and what a reader
// recomputes from the JSON agree even at the 1.5x boundary (clock steps make exact
// ratios common).
PlacementRange range_of(const std::vector<double>& rtt_halves) {
  PlacementRange range;
  for (const double x : rtt_halves) {
    if (x <= 0) continue;
    range.min_ns = range.min_ns == 0 ? x : std::min(range.min_ns, x);
    range.max_ns = std::max(range.max_ns, x);
  }
  range.min_ns = std::round(range.min_ns * 10) / 10;
  range.max_ns = std::round(range.max_ns * 10) / 10;
  return range;
}

// "55" or "55-60": the RTT/2s a throughput row was probed at, in whole ns.
std::string rtt_span(const std::vector<double>& probed) {
  const PlacementRange row = range_of(probed);
  const std::string lo = fmt::format("{:.0f}", row.min_ns), hi = fmt::format("{:.0f}", row.max_ns);
  return lo == hi ? hi : lo + "-" + hi;
}

// The throughput rows, a row per scenario and system, cells for 1 and 2 producers,
// plain and batched: medians over all runs (placement ""), or over the runs probed in
// one placement (rows with no such run left out).
void print_tput_rows(std::FILE* out, const Report& r, const std::string& at) {
  std::string last;
  for (const ThroughputResult& t : r.throughput) {
    if (t.producers != 1 || t.batch != 1) continue;
    std::vector<double> probed;
    auto cell = [&](std::uint32_t producers, std::uint32_t batch) {
      const ThroughputResult* x = find_tput(r, t.scenario, t.system, producers, batch);
      if (x == nullptr) return std::string("-");
      if (at.empty()) {
        probed.push_back(x->rtt_half_ns);
        return fmt::format("{:.1f}", x->events_per_s / 1e6);
      }
      for (const PlacementRate& p : x->by_placement) {
        if (p.placement != at) continue;
        probed.push_back(p.rtt_half_ns);
        return fmt::format("{:.1f}", p.events_per_s / 1e6);
      }
      return std::string("-");
    };
    const std::string cells[] = {cell(1, 1), cell(1, 32), cell(2, 1), cell(2, 32)};
    if (probed.empty()) continue;
    const std::string label = at.empty() ? t.scenario : t.scenario + " " + at;
    const int label_width = at.empty() ? 8 : 13;  // the system column starts where the label ends
    fmt::print(out, "  {:<{}} {:<{}} {:>7} {:>8} {:>8} {:>8} {:>10}\n", label == last ? "" : label, label_width,
               t.system, 38 - label_width, cells[0], cells[1], cells[2], cells[3], rtt_span(probed));
    last = label;
  }
}

// ringbus's one-producer rates, plain and batched, as ratios to the fastest peer queue
// of each scenario (a peer moves one record at a time from one producer): medians over
// all runs, as the rows above, whose peers ran interleaved with ringbus.
void print_tput_against_peers(std::FILE* out, const Report& r) {
  for (const char* scenario : {"tput8", "tput64", "tput512"}) {
    const ThroughputResult* best = nullptr;
    for (const ThroughputResult& t : r.throughput) {
      const bool peer = is_peer(t.system) && t.producers == 1 && t.batch == 1;
      if (t.scenario == scenario && peer && (best == nullptr || t.events_per_s > best->events_per_s)) best = &t;
    }
    const ThroughputResult* plain = find_tput(r, scenario, "ringbus", 1, 1);
    if (best == nullptr || best->events_per_s <= 0 || plain == nullptr) continue;
    std::string ratios = "plain " + times(plain->events_per_s / best->events_per_s);
    if (const ThroughputResult* batched = find_tput(r, scenario, "ringbus", 1, 32)) {
      ratios += ", batch32 " + times(batched->events_per_s / best->events_per_s);
    }
    fmt::print(out, "  ringbus / best peer, {}: {} ({})\n", scenario, ratios, best->system);
  }
}

// The hardware counters per event of the one-producer cases, or why there are none.
void print_counters(std::FILE* out, const Report& r) {
  if (!r.machine.hardware_counters_why.empty()) {
    fmt::print(out, "\nhardware counters: none ({}): no cycles, instructions or cache misses per event\n",
               r.machine.hardware_counters_why);
    return;
  }
  const auto one_producer = [](const ThroughputResult& t) { return t.producers == 1; };
  if (std::none_of(r.throughput.begin(), r.throughput.end(), one_producer)) return;
  fmt::print(out, "\nper event, 1 producer (producer / consumer threads, over every run)\n");
  fmt::print(out, "                                        cycles          instructions     cache misses\n");
  std::string last;
  for (const ThroughputResult& t : r.throughput) {
    if (!one_producer(t)) continue;
    const std::string batch = t.batch == 1 ? "plain" : fmt::format("batch{}", t.batch);
    const std::string cells =
        t.counted ? fmt::format("{:>7.1f} /{:>6.1f}  {:>7.1f} /{:>6.1f}  {:>6.2f} /{:>5.2f}", t.producer.cycles,
                                t.consumer.cycles, t.producer.instructions, t.consumer.instructions,
                                t.producer.cache_misses, t.consumer.cache_misses)
                  : std::string("not counted (a thread could not open its counters)");
    fmt::print(out, "  {:<8} {:<18} {:<8} {}\n", t.scenario == last ? "" : t.scenario, t.system, batch, cells);
    last = t.scenario;
  }
}

}  // namespace

Machine describe_machine() {
  Machine m;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      m.cpu_model = line.substr(line.find(':') + 2);
      break;
    }
  }
  m.cores = std::thread::hardware_concurrency();
#if defined(__clang__)
  m.compiler = fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  m.compiler = fmt::format("gcc {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#endif
  m.commit = kGitCommit;
  m.date = now_iso();
  utsname u{};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release;
  m.invariant_tsc = Tsc::invariant();
  m.tsc_ghz = 1.0 / Tsc::ns_per_tick();
  // The clock's step: the most frequent advance between consecutive readings (a rare
  // advance of 1 tick happens when the hypervisor adjusts the TSC), and whether nearly
  // every advance is a multiple of it (the counter is quantized, not just slow to read).
  constexpr std::size_t kAdvances = 100'000;
  std::vector<std::uint64_t> advances;
  advances.reserve(kAdvances);
  std::uint64_t prev = Tsc::ticks();
  for (std::size_t reads = 0; advances.size() < kAdvances && reads < 100 * kAdvances; ++reads) {
    const std::uint64_t now = Tsc::ticks();
    if (now > prev) advances.push_back(now - prev);
    prev = now;
  }
  std::sort(advances.begin(), advances.end());
  std::uint64_t step = 0;
  std::size_t best = 0;
  for (std::size_t i = 0, j = 0; i < advances.size(); i = j) {
    while (j < advances.size() && advances[j] == advances[i]) ++j;
    if (j - i > best) best = j - i, step = advances[i];
  }
  const auto multiples =
      std::count_if(advances.begin(), advances.end(), [&](std::uint64_t a) { return step != 0 && a % step == 0; });
  m.clock_step_ns = static_cast<double>(step) * Tsc::ns_per_tick();
  m.clock_quantized = step > 1 && static_cast<double>(multiples) >= 0.99 * static_cast<double>(advances.size());
  m.hardware_counters_why = hardware_counters_unavailable();
  return m;
}

bool PlacementRange::moved() const noexcept { return min_ns > 0 && max_ns > kPlacementMoved * min_ns; }

std::vector<ChunkPlacement> split_placements(const std::vector<ChunkProbes>& chunks) {
  std::vector<double> all;
  for (const ChunkProbes& c : chunks) all.insert(all.end(), {c.before_ns, c.after_ns});
  for (double& x : all) x = std::round(x * 10) / 10;  // as the JSON prints them
  std::sort(all.begin(), all.end());
  // The widest gap between neighbouring probes, by ratio, over kPlacementMoved, with at
  // least kMinProbesPerPlacement probes on either side.
  double split = 0, widest = kPlacementMoved;
  for (std::size_t i = kMinProbesPerPlacement; i + kMinProbesPerPlacement <= all.size(); ++i) {
    const double below = all[i - 1], above = all[i];
    if (below > 0 && above > widest * below) {
      widest = above / below;
      split = std::sqrt(below * above);
    }
  }
  std::vector<ChunkPlacement> out(chunks.size(), ChunkPlacement::all);
  if (split == 0) return out;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const bool near_before = chunks[i].before_ns < split, near_after = chunks[i].after_ns < split;
    out[i] = near_before != near_after ? ChunkPlacement::mixed : near_before ? ChunkPlacement::near : ChunkPlacement::far;
  }
  return out;
}

PlacementRange placement_range(const Report& r) {
  std::vector<double> all{r.placement.start_ns, r.placement.before_tput_ns, r.placement.end_ns};
  for (const ThroughputResult& t : r.throughput) {
    all.push_back(t.rtt_half_ns);
    for (const PlacementRate& p : t.by_placement) all.push_back(p.rtt_half_ns);
  }
  for (const LatencyResult& l : r.latency) {
    if (l.system == "floor") all.push_back(l.scenario == "rtt" ? l.p50 / 2 : l.p50);
    for (const PlacementLatency& p : l.by_placement) all.push_back(p.rtt_half_ns);
  }
  return range_of(all);
}

void print_table(const Report& r, std::FILE* out) {
  const Options& o = r.options;
  fmt::print(out, "\nringbus bench ({}: {} samples x {} run{}, paced every {} ns, producer cpu {}, consumer cpu {})\n",
             o.mode, o.samples, o.runs, o.runs == 1 ? "" : "s", o.gap_ns, o.cpu_producer, o.cpu_consumer);
  fmt::print(out, "machine: {} ({} cores), {}, {}, commit {}, {}\n", r.machine.cpu_model, r.machine.cores,
             r.machine.compiler, r.machine.kernel, r.machine.commit, r.machine.date);
  fmt::print(out, "clock: {} at {:.3f} GHz, {}\n", Tsc::describe(Tsc::source()), r.machine.tsc_ghz,
             r.machine.clock_quantized
                 ? fmt::format("advancing in steps of {:.1f} ns: every one-way latency is a multiple of it",
                               r.machine.clock_step_ns)
                 : fmt::format("consecutive readings {:.1f} ns apart", r.machine.clock_step_ns));
  const std::string before_tput =
      r.placement.before_tput_ns > 0 ? fmt::format("{:.0f} ns before throughput, ", r.placement.before_tput_ns) : "";
  fmt::print(out,
             "placement: cache-line RTT/2 between the two CPUs {:.0f} ns at the start, {}"
             "{:.0f} ns at the end (around 230 = far apart, 70 = near)\n",
             r.placement.start_ns, before_tput, r.placement.end_ns);
  if (const PlacementRange range = placement_range(r); range.moved()) {
    fmt::print(out,
               "placement MOVED during the run: RTT/2 from {:.0f} to {:.0f} ns across the scenarios' floors and the "
               "probes.\n  Absolute figures of different scenarios, and throughput rows with different RTT/2, come "
               "from\n  different placements. A scenario that moved while it ran is marked * and judged placement by "
               "placement.\n",
               range.min_ns, range.max_ns);
  }
  if (r.elapsed.total_s > 0) {
    fmt::print(out, "time: {:.1f} s (latency scenarios {:.1f} s, throughput cases {:.1f} s)\n", r.elapsed.total_s,
               r.elapsed.latency_s, r.elapsed.throughput_s);
  }
  if (!r.latency.empty()) {
    // The ratio columns: only the scenario's own floor, in the same placement (another
    // scenario's floor may be from another placement).
    auto ratios = [](const LatencyResult& l, const LatencyStats& st, const LatencyStats* floor) {
      if (floor == nullptr || floor->p50 <= 0 || floor->p99 <= 0 || l.system == "floor") {
        return std::pair<std::string, std::string>{"-", "-"};
      }
      return std::pair{times(st.p50 / floor->p50), times(st.p99 / floor->p99)};
    };
    bool split = false, mixed = false;
    fmt::print(out, "\nlatency, ns (median of runs)    {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}  {:>9} {:>9} {:>8}\n", "p50",
               "p90", "p99", "p99.9", "p99.99", "max", "p50/floor", "p99/floor", ">1us %");
    std::string last;
    for (const LatencyResult& l : r.latency) {
      split = split || !l.by_placement.empty();
      mixed = mixed || (l.moved && l.by_placement.empty());
      const char* mark = !l.by_placement.empty() ? "*" : l.moved ? "~" : "";
      const std::string label = fmt::format("{} {} B{}", l.scenario, l.event_bytes, mark);
      const auto [r50, r99] = ratios(l, l, find(r, l.scenario, l.event_bytes, "floor"));
      fmt::print(out, "  {:<14} {:<15} {:>7.0f} {:>7.0f} {:>7.0f} {:>8.0f} {:>8.0f} {:>9.0f}  {:>9} {:>9} {:>8.2f}\n",
                 label == last ? "" : label, l.system, l.p50, l.p90, l.p99, l.p999, l.p9999, l.max, r50, r99,
                 l.over_1us_pct);
      last = label;
    }
    if (mixed) {
      fmt::print(out,
                 "  ~ the vCPUs changed placement while this scenario ran, and no placement had a chunk of every\n"
                 "    system: its medians mix near and far chunks in different shares per system, so its ratios\n"
                 "    and targets compare placements as much as systems (a longer run can split it).\n");
    }
    if (split) {
      fmt::print(out,
                 "  * the vCPUs changed placement while this scenario ran: its medians mix near and far chunks in\n"
                 "    different shares per system, so compare it by placement (below), not by these rows.\n");
      fmt::print(out,
                 "\nlatency by placement, ns (chunks sorted by the RTT/2 probed before and after each, pooled over runs)\n"
                 "                 RTT/2 ns                   chunks     p50     p90     p99    p99.9  {:>9} {:>9} {:>8}\n",
                 "p50/floor", "p99/floor", ">1us %");
      // Scenario by scenario (in the order of the table above), placement by placement.
      for (std::size_t i = 0; i < r.latency.size(); ++i) {
        const LatencyResult& head = r.latency[i];
        if (i > 0 && r.latency[i - 1].scenario == head.scenario && r.latency[i - 1].event_bytes == head.event_bytes) {
          continue;
        }
        bool first_row = true;
        for (const std::string& at : placements_of(r, head.scenario, head.event_bytes)) {
          if (at.empty()) break;
          bool first_of_placement = true;
          for (std::size_t j = i; j < r.latency.size() && r.latency[j].scenario == head.scenario &&
                                  r.latency[j].event_bytes == head.event_bytes;
               ++j) {
            const LatencyResult& l = r.latency[j];
            const PlacementLatency* p = placed(&l, at);
            if (p == nullptr) continue;
            const auto [r50, r99] = ratios(l, *p, in(find(r, l.scenario, l.event_bytes, "floor"), at));
            fmt::print(out, "  {:<14} {:<9} {:<15} {:>7} {:>7.0f} {:>7.0f} {:>7.0f} {:>8.0f}  {:>9} {:>9} {:>8.2f}\n",
                       first_row ? fmt::format("{} {} B", l.scenario, l.event_bytes) : "",
                       first_of_placement ? fmt::format("{} {:.0f}", at, p->rtt_half_ns) : "", l.system, p->chunks,
                       p->p50, p->p90, p->p99, p->p999, r50, r99, p->over_1us_pct);
            first_row = first_of_placement = false;
          }
        }
      }
    }
    for (const auto& [scenario, bytes] : std::vector<std::pair<std::string, std::uint32_t>>{
             {"thread", 64}, {"thread", 1024}, {"rtt", 64}}) {
      for (const std::string& at : placements_of(r, scenario, bytes)) {
        const LatencyStats* rb = in(find(r, scenario, bytes, "ringbus"), at);
        const Peer p50 = best_peer(r, scenario, bytes, at, &LatencyStats::p50);
        const Peer p99 = best_peer(r, scenario, bytes, at, &LatencyStats::p99);
        if (rb && p50.stats && p99.stats) {
          fmt::print(out, "  ringbus / best peer, {} {} B{}: p50 {} ({}), p99 {} ({})\n", scenario, bytes,
                     placement_label(r, scenario, bytes, at), times(rb->p50 / p50.stats->p50), p50.result->system,
                     times(rb->p99 / p99.stats->p99), p99.result->system);
        }
      }
    }
  }
  if (!r.throughput.empty()) {
    const std::uint64_t ring = r.options.tput_capacity;
    fmt::print(out, "\nthroughput, M events/s (median of runs; ringbus ring {}, peers {} messages)\n",
               ring >= (1u << 20) ? fmt::format("{} MiB", ring >> 20) : fmt::format("{} KiB", ring >> 10), kPeerSlots);
    fmt::print(out, "                                          1 producer        2 producers   RTT/2 ns\n");
    fmt::print(out, "                                          plain  batch32    plain  batch32   (probed)\n");
    print_tput_rows(out, r, "");
    print_tput_against_peers(out, r);
    if (r.throughput.front().moved) {
      fmt::print(out,
                 "\nthroughput by placement, M events/s (median of the runs probed in each; the vCPUs changed "
                 "placement\nduring the throughput cases, so the rows above mix near and far runs)\n");
      for (const char* at : {"near", "far"}) print_tput_rows(out, r, at);
    }
    print_counters(out, r);
  }
  const auto ts = targets(r);
  if (!ts.empty()) {
    fmt::print(out, "\ntargets\n");
    std::size_t width = 52;
    for (const Target& t : ts) width = std::max(width, t.what.size());
    for (const Target& t : ts) {
      fmt::print(out, "  {:<6} {:<{}} {}\n", t.met ? "met" : "MISSED", t.what, width, t.value);
    }
  }
  fmt::print(out, "\n");
}

void write_json(const Report& r, const std::string& path) {
  std::ostringstream j;
  const Machine& m = r.machine;
  const Options& o = r.options;
  j << fmt::format(
      "{{\n  \"machine\": {{\"cpu_model\": \"{}\", \"cores\": {}, \"compiler\": \"{}\", \"commit\": \"{}\", "
      "\"date\": \"{}\", \"kernel\": \"{}\", \"tsc_ghz\": {:.4f}, \"invariant_tsc\": {}, \"clock_step_ns\": {:.2f}, "
      "\"clock_quantized\": {}, \"hardware_counters\": {}, \"hardware_counters_why\": \"{}\"}},\n",
      json_escape(m.cpu_model), m.cores, json_escape(m.compiler), json_escape(m.commit), m.date, json_escape(m.kernel),
      m.tsc_ghz, m.invariant_tsc, m.clock_step_ns, m.clock_quantized, m.hardware_counters_why.empty(),
      json_escape(m.hardware_counters_why));
  j << fmt::format(
      "  \"config\": {{\"mode\": \"{}\", \"samples\": {}, \"warmup\": {}, \"gap_ns\": {}, \"runs\": {}, "
      "\"chunk\": {}, \"cpu_producer\": {}, \"cpu_consumer\": {}, \"tput_events\": {}, \"tput_capacity\": {}}},\n",
      o.mode, o.samples, o.warmup, o.gap_ns, o.runs, o.chunk, o.cpu_producer, o.cpu_consumer, o.tput_events,
      o.tput_capacity);
  // Not measured (no throughput case ran): null.
  const std::string before_tput =
      r.placement.before_tput_ns > 0 ? fmt::format("{:.1f}", r.placement.before_tput_ns) : "null";
  const PlacementRange range = placement_range(r);
  j << fmt::format("  \"placement\": {{\"rtt_half_start_ns\": {:.1f}, \"rtt_half_before_tput_ns\": {}, "
                   "\"rtt_half_end_ns\": {:.1f}, \"rtt_half_min_ns\": {:.1f}, \"rtt_half_max_ns\": {:.1f}, "
                   "\"moved\": {}}},\n",
                   r.placement.start_ns, before_tput, r.placement.end_ns, range.min_ns, range.max_ns, range.moved());
  j << fmt::format("  \"elapsed\": {{\"latency_s\": {:.3f}, \"throughput_s\": {:.3f}, \"total_s\": {:.3f}}},\n",
                   r.elapsed.latency_s, r.elapsed.throughput_s, r.elapsed.total_s);
  j << "  \"results\": [\n";
  bool first = true;
  for (const LatencyResult& l : r.latency) {
    j << (first ? "" : ",\n");
    first = false;
    j << fmt::format(
        "    {{\"system\": \"{}\", \"scenario\": \"{}\", \"event_bytes\": {}, \"p50_ns\": {:.1f}, \"p90_ns\": {:.1f}, "
        "\"p99_ns\": {:.1f}, \"p999_ns\": {:.1f}, \"p9999_ns\": {:.1f}, \"max_ns\": {:.1f}, \"samples\": {}, "
        "\"over_1us_pct\": {:.3f}, \"p99_chunk_median_ns\": {:.1f}, \"moved\": {}, \"by_placement\": [",
        l.system, l.scenario, l.event_bytes, l.p50, l.p90, l.p99, l.p999, l.p9999, l.max, l.samples, l.over_1us_pct,
        l.p99_chunk_median, l.moved);
    for (std::size_t i = 0; i < l.by_placement.size(); ++i) {
      const PlacementLatency& p = l.by_placement[i];
      j << fmt::format(
          "{}\n      {{\"placement\": \"{}\", \"rtt_half_ns\": {:.1f}, \"chunks\": {}, \"samples\": {}, "
          "\"p50_ns\": {:.1f}, \"p90_ns\": {:.1f}, \"p99_ns\": {:.1f}, \"p999_ns\": {:.1f}, \"p9999_ns\": {:.1f}, "
          "\"max_ns\": {:.1f}, \"over_1us_pct\": {:.3f}, \"p99_chunk_median_ns\": {:.1f}}}",
          i ? "," : "", p.placement, p.rtt_half_ns, p.chunks, p.samples, p.p50, p.p90, p.p99, p.p999, p.p9999, p.max,
          p.over_1us_pct, p.p99_chunk_median);
    }
    j << (l.by_placement.empty() ? "]}" : "\n    ]}");
  }
  for (const ThroughputResult& t : r.throughput) {
    j << (first ? "" : ",\n");
    first = false;
    j << fmt::format(
        "    {{\"system\": \"{}\", \"scenario\": \"{}\", \"event_bytes\": {}, \"producers\": {}, \"batch\": {}, "
        "\"events_per_s\": {:.0f}, \"rtt_half_ns\": {:.1f}, \"moved\": {}, \"by_placement\": [",
        t.system, t.scenario, t.event_bytes, t.producers, t.batch, t.events_per_s, t.rtt_half_ns, t.moved);
    for (std::size_t i = 0; i < t.by_placement.size(); ++i) {
      const PlacementRate& p = t.by_placement[i];
      j << fmt::format("{}{{\"placement\": \"{}\", \"rtt_half_ns\": {:.1f}, \"measurements\": {}, \"events_per_s\": {:.0f}}}",
                       i ? ", " : "", p.placement, p.rtt_half_ns, p.measurements, p.events_per_s);
    }
    const auto counts = [](const PerEvent& e) {
      return fmt::format("{{\"cycles\": {:.2f}, \"instructions\": {:.2f}, \"cache_misses\": {:.4f}}}", e.cycles,
                         e.instructions, e.cache_misses);
    };
    j << "], \"per_event\": "
      << (t.counted ? "{\"producer\": " + counts(t.producer) + ", \"consumer\": " + counts(t.consumer) + "}" : "null")
      << "}";
  }
  j << "\n  ],\n  \"targets\": [";
  first = true;
  for (const Target& t : targets(r)) {
    j << (first ? "\n" : ",\n");
    first = false;
    j << fmt::format("    {{\"target\": \"{}\", \"met\": {}, \"value\": \"{}\", \"placement\": {}}}",
                     json_escape(t.what), t.met, json_escape(t.value),
                     t.placement.empty() ? "null" : "\"" + t.placement + "\"");
  }
  j << "\n  ]\n}\n";
  // Closed before the check: a full disk shows when the buffer is written out.
  std::ofstream f(path);
  f << j.str();
  f.close();
  if (!f) throw std::runtime_error(fmt::format("cannot write {}: {}", path, std::strerror(errno)));
}

bool write_plot(const Report& r, const std::string& png_path) {
  const std::string script_path = png_path + ".gp";
  struct Panel {
    std::string title;
    std::vector<const LatencyResult*> lines;
  };
  // What a line draws: the result's spectrum or, for a scenario that moved while it ran,
  // that of the placement in which the scenario ran the most chunks (named beside it).
  struct Drawn {
    const std::vector<std::pair<double, double>>* spectrum;
    std::string placement;
  };
  auto drawn = [&](const LatencyResult* l) {
    const LatencyResult* floor = find(r, l->scenario, l->event_bytes, "floor");
    const PlacementLatency* most = nullptr;
    for (const PlacementLatency& p : (floor != nullptr ? floor : l)->by_placement) {
      if (most == nullptr || p.chunks > most->chunks) most = &p;
    }
    const PlacementLatency* mine = most != nullptr ? placed(l, most->placement) : nullptr;
    if (mine == nullptr) return Drawn{&l->spectrum, ""};
    return Drawn{&mine->spectrum, fmt::format("{}, RTT/2 {:.0f} ns", most->placement, most->rtt_half_ns)};
  };
  std::vector<Panel> panels;
  for (const auto& [scenario, bytes, title] : std::vector<std::tuple<std::string, std::uint32_t, std::string>>{
           {"thread", 64, "one-way, thread to thread, 64 B"},
           {"thread", 1024, "one-way, thread to thread, 1 KiB"},
           {"rtt", 64, "round trip, 64 B"}}) {
    Panel p{title, {}};
    for (const LatencyResult& l : r.latency) {
      if (l.scenario == scenario && l.event_bytes == bytes) p.lines.push_back(&l);
    }
    if (p.lines.empty()) continue;
    if (const std::string where = drawn(p.lines.front()).placement; !where.empty()) p.title += " (" + where + ")";
    panels.push_back(p);
  }
  Panel rb{"ringbus scenarios, 64 B", {}};
  for (const LatencyResult& l : r.latency) {
    if (l.system == "ringbus" && l.event_bytes == 64 && l.scenario != "rtt") rb.lines.push_back(&l);
  }
  if (!rb.lines.empty()) panels.push_back(rb);
  if (panels.empty()) {
    say("ringbus bench: no latency scenario ran, so there is no spectrum to plot\n");
    return false;
  }
  std::ofstream gp(script_path);
  if (!gp) {
    say(fmt::format("ringbus bench: cannot write {}: {}\n", script_path, std::strerror(errno)));
    return false;
  }

  int block = 0;
  std::map<const std::vector<std::pair<double, double>>*, int> blocks;
  for (const Panel& p : panels) {
    for (const LatencyResult* l : p.lines) {
      const auto* spectrum = drawn(l).spectrum;
      if (blocks.count(spectrum)) continue;
      blocks[spectrum] = block;
      gp << "$d" << block++ << " << EOD\n";
      for (const auto& [nines, ns] : *spectrum) gp << fmt::format("{:.3f} {:.1f}\n", nines, std::max(ns, 1.0));
      gp << "EOD\n";
    }
  }
  gp << "set terminal pngcairo size 1600,1100 font 'sans,10'\n";
  gp << "set output '" << gnuplot_quoted(png_path) << "'\n";
  gp << "set termoption noenhanced\nset logscale y\nset grid\nset key top left\n";
  // One tic a "nine", as far as the largest run reaches (a smoke run stops near 3.6).
  double top_nines = 1;
  for (const auto& [spectrum, b] : blocks) {
    if (!spectrum->empty()) top_nines = std::max(top_nines, spectrum->back().first);
  }
  const int tics = std::min(6, static_cast<int>(std::ceil(top_nines)));
  static constexpr const char* kTicLabels[] = {"0%%", "90%%", "99%%", "99.9%%", "99.99%%", "99.999%%", "99.9999%%"};
  gp << "set xrange [0:" << tics << "]\nset xtics (";
  for (int t = 0; t <= tics; ++t) gp << (t ? ", " : "") << "'" << kTicLabels[t] << "' " << t;
  gp << ")\n";
  gp << "set xlabel 'percentile'\nset ylabel 'latency (ns)'\n";
  gp << fmt::format("set multiplot layout 2,2 title 'ringbus bench {} - {} - commit {}'\n", r.options.mode,
                    gnuplot_quoted(r.machine.cpu_model), r.machine.commit);
  for (const Panel& p : panels) {
    gp << "set title '" << p.title << "'\nplot ";
    for (std::size_t i = 0; i < p.lines.size(); ++i) {
      const LatencyResult* l = p.lines[i];
      const Drawn d = drawn(l);
      std::string label = l->system;
      if (p.title.rfind("ringbus", 0) == 0) {
        label = l->scenario + (d.placement.empty() ? "" : " (" + d.placement.substr(0, d.placement.find(',')) + ")");
      }
      gp << (i ? ", " : "") << "$d" << blocks[d.spectrum] << " using 1:2 with lines lw 2 title '" << label << "'";
    }
    gp << "\n";
  }
  gp << "unset multiplot\n";
  gp.close();
  if (!gp) {
    say(fmt::format("ringbus bench: cannot write {}\n", script_path));
    return false;
  }
  // Run without a shell: the path reaches gnuplot as one argument, whatever it holds.
  pid_t pid = 0;
  char* const argv[] = {const_cast<char*>("gnuplot"), const_cast<char*>(script_path.c_str()), nullptr};
  if (const int e = ::posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv, environ); e != 0) {
    say(fmt::format("ringbus bench: cannot run gnuplot: {}; script left at {}\n", std::strerror(e), script_path));
    return false;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    say(fmt::format("ringbus bench: gnuplot failed (status {}); script left at {}\n", status, script_path));
    return false;
  }
  return true;
}

bool gnuplot_available() {
  const char* env = std::getenv("PATH");
  std::string_view dirs = env != nullptr ? env : "/usr/bin:/bin";
  for (;;) {
    const std::size_t colon = dirs.find(':');
    const std::string_view dir = dirs.substr(0, colon);
    const std::filesystem::path exe = std::filesystem::path(dir.empty() ? std::string_view(".") : dir) / "gnuplot";
    if (::access(exe.c_str(), X_OK) == 0) return true;
    if (colon == std::string_view::npos) return false;
    dirs.remove_prefix(colon + 1);
  }
}

}  // namespace ringbus::bench
