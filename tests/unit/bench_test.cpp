// The benchmark's own machinery: the latency histogram, the sender's pacing, the
// checks of a run's options and what the report makes of the vCPUs' placement.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "ringbus/clock.hpp"
#include "ringbus/layout.hpp"
#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/histogram.hpp"
#include "ringbus_bench/pacer.hpp"
#include "support.hpp"

namespace {

using ringbus::Tsc;
using ringbus::bench::Histogram;
using ringbus::bench::Pacer;

TEST(Histogram, BucketsTileTheRangeWithRelativeWidthUnderOnePart128) {
  for (std::size_t i = 0; i + 1 < Histogram::kBuckets; ++i) {
    ASSERT_LE(Histogram::lower(i), Histogram::upper(i)) << i;
    ASSERT_EQ(Histogram::upper(i) + 1, Histogram::lower(i + 1)) << i;
    ASSERT_LE(Histogram::upper(i) - Histogram::lower(i) + 1, std::max<std::uint64_t>(1, Histogram::lower(i) / 128))
        << i;
  }
  EXPECT_EQ(Histogram::lower(0), 0u);
  EXPECT_EQ(Histogram::upper(Histogram::kBuckets - 1), ~std::uint64_t{0});
}

TEST(Histogram, EveryValueFallsInTheBucketThatHoldsIt) {
  std::mt19937_64 rng(7);
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 0; v < (1u << 16); ++v) values.push_back(v);
  for (int i = 0; i < 100'000; ++i) values.push_back(rng() >> (rng() % 64));
  values.push_back(~std::uint64_t{0});
  for (const std::uint64_t v : values) {
    const std::size_t i = Histogram::index(v);
    ASSERT_LT(i, Histogram::kBuckets) << v;
    ASSERT_LE(Histogram::lower(i), v) << v;
    ASSERT_GE(Histogram::upper(i), v) << v;
  }
  for (std::uint64_t v = 0; v < 128; ++v) EXPECT_EQ(Histogram::upper(Histogram::index(v)), v);
}

TEST(Histogram, PercentilesOfAKnownDistribution) {
  Histogram h;
  EXPECT_EQ(h.percentile(50), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.min(), 0u);
  for (std::uint64_t v = 1000; v >= 1; --v) h.record(v);  // order must not matter
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 1000u);
  EXPECT_EQ(h.percentile(10), 100u);  // below 128: exact
  for (const double p : {50.0, 90.0, 99.0, 99.9}) {
    const auto exact = static_cast<std::uint64_t>(p * 10);
    const std::uint64_t got = h.percentile(p);
    EXPECT_GE(got, exact) << p;  // the upper edge of the bucket holding the exact value
    EXPECT_LE(got, exact + exact / 128) << p;
  }
  EXPECT_EQ(h.percentile(100), 1000u);
  EXPECT_EQ(h.percentile(0.0001), 1u);  // the lowest rank is the smallest value
}

TEST(Histogram, CountAboveCountsTheBucketsWhollyAboveTheValue) {
  Histogram h;
  EXPECT_EQ(h.count_above(0), 0u);
  for (std::uint64_t v = 1; v <= 1000; ++v) h.record(v);
  EXPECT_EQ(h.count_above(0), 1000u);
  EXPECT_EQ(h.count_above(99), 901u);   // below 128: exact
  EXPECT_EQ(h.count_above(899), 101u);  // 899 ends its bucket [896, 899]: exact
  EXPECT_EQ(h.count_above(900), 97u);   // 900..903 share 900's bucket and are left out
  EXPECT_EQ(h.count_above(1000), 0u);
  h.record(5'000'000);
  EXPECT_EQ(h.count_above(1000), 1u);
}

TEST(Histogram, OneOutlierMovesOnlyTheTopPercentiles) {
  Histogram h;
  for (int i = 0; i < 9'999; ++i) h.record(300);
  h.record(5'000'000);
  EXPECT_EQ(h.percentile(99.99), 300u + 1);  // 300 shares a bucket of width 2 with 301
  EXPECT_EQ(h.percentile(100), 5'000'000u);
  EXPECT_EQ(h.max(), 5'000'000u);
}

TEST(Histogram, MergeEqualsRecordingEverythingInOne) {
  std::mt19937_64 rng(11);
  Histogram a;
  Histogram b;
  Histogram all;
  for (int i = 0; i < 50'000; ++i) {
    const std::uint64_t v = 200 + rng() % 5000;
    (i % 3 == 0 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (const double p : {1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) EXPECT_EQ(a.percentile(p), all.percentile(p)) << p;
  a.reset();
  EXPECT_EQ(a.count(), 0u);
  EXPECT_EQ(a.percentile(50), 0u);
}

// Not a timing assertion: wait() spins until the TSC has advanced, so the gaps between
// the times it released at are lower bounds by construction, however slow the machine.
TEST(Pacer, SendsAreNeverCloserThanTheGapAlsoAfterAStall) {
  const auto gap = static_cast<std::uint64_t>(20'000 / Tsc::ns_per_tick());  // 20 us
  Pacer pace(gap);
  std::vector<std::uint64_t> sent;
  for (int i = 0; i < 20; ++i) {
    if (i == 5 || i == 12) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // a stall
    sent.push_back(pace.wait());
  }
  for (std::size_t i = 1; i < sent.size(); ++i) EXPECT_GE(sent[i] - sent[i - 1], gap) << "send " << i;
}

// Every way a run's options can be unusable is named before any thread starts.
TEST(BenchOptions, CheckNamesWhatIsWrongAndRunRefusesIt) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(::sched_getaffinity(0, sizeof allowed, &allowed), 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  ringbus::bench::Options good = ringbus::bench::options_for("smoke");
  good.cpu_producer = cpus[0];
  good.cpu_consumer = cpus[1];
  good.scenarios = {"thread", "tput64"};
  EXPECT_EQ(ringbus::bench::check(good), "");
  EXPECT_TRUE(ringbus::bench::selects_latency(good));

  const auto why = [&](auto change) {
    ringbus::bench::Options o = good;
    change(o);
    return ringbus::bench::check(o);
  };
  using O = ringbus::bench::Options;
  EXPECT_NE(why([&](O& o) { o.cpu_consumer = o.cpu_producer; }).find("two different CPUs"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.cpu_consumer = CPU_SETSIZE; }).find("cpu " + std::to_string(CPU_SETSIZE)),
            std::string::npos);
  EXPECT_NE(why([](O& o) { o.cpu_producer = -1; }).find("negative"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.samples = 0; }).find("samples"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.runs = 0; }).find("runs"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.chunk = 0; }).find("chunk"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.gap_ns = 0; }).find("gap"), std::string::npos);
  // Values whose chunking would overflow (a run with 0 samples that "succeeds").
  EXPECT_NE(why([](O& o) { o.samples = ~std::uint64_t{0}; }).find("samples must be at most"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.chunk = ~std::uint64_t{0}; }).find("chunk must be at most"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.gap_ns = ~std::uint64_t{0}; }).find("gap must be at most"), std::string::npos);
  // The throughput ring: a segment capacity, and one that /dev/shm has room for.
  EXPECT_NE(why([](O& o) { o.tput_capacity = 3u << 20; }).find("capacity must be a power of two"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.tput_capacity = 32u << 10; }).find("capacity must be a power of two"), std::string::npos);
  EXPECT_NE(why([](O& o) { o.tput_capacity = std::uint64_t{1} << 41; }).find("capacity must be a power of two"),
            std::string::npos);
  EXPECT_EQ(why([](O& o) { o.tput_capacity = 64u << 10; }), "");
  struct statvfs shm {};
  ASSERT_EQ(::statvfs("/dev/shm", &shm), 0);
  const std::uint64_t too_big = std::bit_ceil(std::uint64_t{shm.f_bavail} * shm.f_frsize + 1);
  if (too_big <= ringbus::layout::kMaxCapacity) {
    EXPECT_NE(why([&](O& o) { o.tput_capacity = too_big; }).find("does not fit in /dev/shm"), std::string::npos);
    // Latency scenarios alone never create the throughput ring.
    EXPECT_EQ(why([&](O& o) {
                o.tput_capacity = too_big;
                o.scenarios = {"thread"};
              }),
              "");
  }
  const std::string unknown = why([](O& o) { o.scenarios = {"thread", "tput7"}; });
  EXPECT_NE(unknown.find("\"tput7\""), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("keys10k"), std::string::npos) << unknown;  // lists what exists

  ringbus::bench::Options same = good;
  same.cpu_consumer = same.cpu_producer;
  EXPECT_THROW(ringbus::bench::run(same), std::invalid_argument);

  ringbus::bench::Options tput_only = good;
  tput_only.scenarios = {"tput8"};
  EXPECT_FALSE(ringbus::bench::selects_latency(tput_only));
  EXPECT_TRUE(ringbus::bench::selects_throughput(tput_only));
  EXPECT_TRUE(ringbus::bench::selects_throughput(good));  // thread and tput64
  ringbus::bench::Options latency_only = good;
  latency_only.scenarios = {"thread", "rtt"};
  EXPECT_FALSE(ringbus::bench::selects_throughput(latency_only));
  const auto names = ringbus::bench::scenario_names();
  for (const char* n : {"thread", "process", "fanout4", "keys10k", "rtt", "tput8", "tput64", "tput512"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
}

// Every percentile of `st` at `ns`.
void flat(ringbus::bench::LatencyStats& st, double ns) { st.p50 = st.p90 = st.p99 = st.p999 = st.p9999 = st.max = ns; }

ringbus::bench::LatencyResult flat_result(const char* scenario, const char* system, double ns,
                                          std::uint64_t samples) {
  ringbus::bench::LatencyResult l;
  l.system = system;
  l.scenario = scenario;
  l.event_bytes = 64;
  l.samples = samples;
  flat(l, ns);
  return l;
}

// A report as a run leaves it: latency scenarios with their floors, throughput rows
// with the RTT/2 probed before them.
ringbus::bench::Report report_with_floors(double thread_floor, double process_floor, double rtt_floor,
                                          double tput_probe) {
  ringbus::bench::Report r;
  r.options = ringbus::bench::options_for("smoke");
  r.placement = {thread_floor, tput_probe, tput_probe};
  auto lat = [&](const char* scenario, const char* system, double p50) {
    r.latency.push_back(flat_result(scenario, system, p50, 1000));
  };
  lat("thread", "floor", thread_floor);
  lat("thread", "ringbus", thread_floor * 1.4);
  lat("process", "floor", process_floor);
  lat("process", "ringbus", process_floor * 1.5);
  lat("process", "ringbus_thread", process_floor * 1.5);
  lat("rtt", "floor", rtt_floor);  // a round trip: twice RTT/2
  r.throughput.push_back({"ringbus", "tput64", 64, 1, 1, 15e6, tput_probe});
  return r;
}

std::string table_of(const ringbus::bench::Report& r) {
  char* buf = nullptr;
  std::size_t len = 0;
  std::FILE* f = ::open_memstream(&buf, &len);
  EXPECT_NE(f, nullptr);
  if (f == nullptr) return {};
  ringbus::bench::print_table(r, f);
  std::fclose(f);
  std::string out(buf, len);
  std::free(buf);
  return out;
}

TEST(BenchReport, PlacementRangeCoversProbesFloorsAndThroughputProbes) {
  // Far throughout: every RTT/2 within 1.5x of the others.
  const auto far = ringbus::bench::placement_range(report_with_floors(230, 241, 2 * 250, 226));
  EXPECT_DOUBLE_EQ(far.min_ns, 226);
  EXPECT_DOUBLE_EQ(far.max_ns, 250);  // the round trip's floor counts as half
  EXPECT_FALSE(far.moved());
  // Near for the first scenario, far for the next: moved.
  const auto moved = ringbus::bench::placement_range(report_with_floors(75, 246, 2 * 241, 85));
  EXPECT_DOUBLE_EQ(moved.min_ns, 75);
  EXPECT_DOUBLE_EQ(moved.max_ns, 246);
  EXPECT_TRUE(moved.moved());
  // A probe that did not run (0) is not a placement.
  ringbus::bench::Report r = report_with_floors(230, 230, 460, 230);
  r.placement.before_tput_ns = 0;
  r.throughput.clear();
  EXPECT_DOUBLE_EQ(ringbus::bench::placement_range(r).min_ns, 230);
  // At the boundary the verdict is that of the range as the JSON prints it (0.1 ns):
  // 64.96 and 97.46 print as 65.0 and 97.5, exactly 1.5x, so not moved.
  const auto edge = ringbus::bench::placement_range(report_with_floors(64.96, 97.46, 2 * 97.46, 97.46));
  EXPECT_DOUBLE_EQ(edge.min_ns, 65.0);
  EXPECT_DOUBLE_EQ(edge.max_ns, 97.5);
  EXPECT_EQ(edge.moved(), edge.max_ns > 1.5 * edge.min_ns);
  EXPECT_FALSE(edge.moved());
}

TEST(BenchReport, TableWarnsWhenPlacementMovedAndRatesEachScenarioByItsOwnFloor) {
  const std::string moved = table_of(report_with_floors(75, 246, 2 * 241, 85));
  EXPECT_NE(moved.find("placement MOVED during the run: RTT/2 from 75 to 246 ns"), std::string::npos) << moved;
  // process's ringbus (369 ns) against process's floor (246): 1.50x, not 4.92x against
  // the thread scenario's near floor.
  EXPECT_NE(moved.find("1.50x"), std::string::npos) << moved;
  EXPECT_EQ(moved.find("4.92x"), std::string::npos) << moved;
  // A scenario without its own floor gets no ratio, rather than one to another
  // scenario's floor from another placement.
  ringbus::bench::Report no_floor = report_with_floors(75, 246, 2 * 241, 85);
  ringbus::bench::LatencyResult keyed = no_floor.latency[1];
  keyed.scenario = "keys10k";
  flat(keyed, 300);
  no_floor.latency.push_back(keyed);
  const std::string unrated = table_of(no_floor);
  EXPECT_EQ(unrated.find("4.00x"), std::string::npos) << unrated;  // 300 / the thread floor's 75
  const std::string row = "keys10k 64 B   ringbus             300     300     300      300      300       300";
  EXPECT_NE(unrated.find(row + "          -         -     0.00\n"), std::string::npos) << unrated;
  // The throughput row and target say which placement their rate is from.
  EXPECT_NE(moved.find("15.0 M/s (RTT/2 85 ns)"), std::string::npos) << moved;

  const std::string steady = table_of(report_with_floors(230, 241, 2 * 235, 226));
  EXPECT_EQ(steady.find("MOVED"), std::string::npos) << steady;
}

TEST(BenchReport, P99TargetShowsTheShareOfSamplesOverOneMicrosecond) {
  ringbus::bench::Report r = report_with_floors(230, 230, 460, 230);
  ringbus::bench::LatencyResult peer = r.latency[1];  // thread, 64 B
  peer.system = "boost_spsc";
  peer.p99 = 2000;
  peer.over_1us_pct = 1.2;
  r.latency[1].over_1us_pct = 0.4;  // ringbus, p99 322
  r.latency.push_back(peer);
  const std::string table = table_of(r);
  EXPECT_NE(table.find("met    thread p99 <= best peer p99 (boost_spsc)"), std::string::npos) << table;
  EXPECT_NE(table.find("0.16x (over 1 us: ringbus 0.40%, boost_spsc 1.20%)"), std::string::npos) << table;
  EXPECT_NE(table.find("     1.20\n"), std::string::npos) << table;  // the peer's row

  // A ratio below 0.1 keeps two significant digits instead of printing as 0.00x.
  r.latency.back().p99 = 1'000'000;
  const std::string tiny = table_of(r);
  EXPECT_NE(tiny.find("met    thread p99 <= best peer p99 (boost_spsc)"), std::string::npos) << tiny;
  EXPECT_NE(tiny.find(" 0.00032x (over 1 us"), std::string::npos) << tiny;  // 322 / 1,000,000
  EXPECT_EQ(tiny.find("0.00x"), std::string::npos) << tiny;
}

TEST(BenchReport, ChunksAreSortedByThePlacementProbedAroundThem) {
  using ringbus::bench::ChunkPlacement;
  using ringbus::bench::split_placements;
  // Probes within 1.5x of each other: one placement, nothing split.
  EXPECT_EQ(split_placements({{220, 231}, {231, 240}, {240, 226}}),
            (std::vector<ChunkPlacement>{ChunkPlacement::all, ChunkPlacement::all, ChunkPlacement::all}));
  EXPECT_TRUE(split_placements({}).empty());
  // Near (55-60) and far (200-210): split at the geometric mean of 55 and 210 (107.5).
  // A chunk whose two probes disagree moved while it ran and belongs to neither.
  EXPECT_EQ(split_placements({{55, 60}, {60, 205}, {205, 210}, {210, 200}, {200, 55}, {55, 56}}),
            (std::vector<ChunkPlacement>{ChunkPlacement::near, ChunkPlacement::mixed, ChunkPlacement::far,
                                         ChunkPlacement::far, ChunkPlacement::mixed, ChunkPlacement::near}));
  // Both sides of the geometric mean, whatever the scale: 100 and 400 split at 200.
  EXPECT_EQ(split_placements({{100, 199.9}, {200, 400}}),
            (std::vector<ChunkPlacement>{ChunkPlacement::near, ChunkPlacement::far}));
  // The 1.5x test is that of the placement range, on the probes as the JSON prints them:
  // 64.96 and 97.46 print as 65.0 and 97.5, exactly 1.5x, so not split.
  EXPECT_EQ(split_placements({{64.96, 97.46}}), std::vector<ChunkPlacement>{ChunkPlacement::all});
  EXPECT_EQ(split_placements({{64.9, 97.46}}), std::vector<ChunkPlacement>{ChunkPlacement::mixed});
}

// A file's text, removing the file; empty if it cannot be read.
std::string slurp(const std::string& path) {
  std::string text;
  if (std::FILE* f = std::fopen(path.c_str(), "r")) {
    for (int c; (c = std::fgetc(f)) != EOF;) text += static_cast<char>(c);
    std::fclose(f);
  }
  std::remove(path.c_str());
  return text;
}

std::string json_of(const ringbus::bench::Report& r) {
  // A name of its own: ctest runs each test in its own process, several at once.
  const std::string path = ::testing::TempDir() + ringbus::test::unique_name("bench-report") + ".json";
  ringbus::bench::write_json(r, path);
  return slurp(path);
}

// The thread scenario of a run in which the vCPUs moved: near, ringbus beats every peer
// and far it loses to one; over all chunks (medians mixing both) nothing is judged.
ringbus::bench::Report report_split_by_placement() {
  ringbus::bench::Report r;
  r.options = ringbus::bench::options_for("smoke");
  r.placement = {50, 0, 200};
  auto lat = [&](const char* system, double mixed, double near_p50, double far_p50) {
    ringbus::bench::LatencyResult l = flat_result("thread", system, mixed, 4000);
    l.moved = true;
    for (const auto& [where, rtt, p50] : {std::tuple{"near", 60.0, near_p50}, std::tuple{"far", 200.0, far_p50}}) {
      ringbus::bench::PlacementLatency p;
      p.placement = where;
      p.rtt_half_ns = rtt;
      p.chunks = std::string_view(where) == "far" ? 3 : 2;
      p.samples = 4000;
      flat(p, p50);
      p.spectrum = {{0.0, p50}, {1.0, p50 + 1}};
      l.by_placement.push_back(p);
    }
    r.latency.push_back(l);
  };
  lat("floor", 50, 60, 200);
  lat("floor_oneway", 300, 80, 300);
  lat("ringbus", 100, 100, 330);
  lat("boost_spsc", 360, 120, 360);
  lat("atomic_queue", 330, 130, 300);
  return r;
}

TEST(BenchReport, AScenarioThatMovedIsJudgedWithinEachPlacement) {
  const std::string table = table_of(report_split_by_placement());
  EXPECT_NE(table.find("thread 64 B*"), std::string::npos) << table;
  EXPECT_NE(table.find("latency by placement"), std::string::npos) << table;
  // Rows by placement, each rated by the floor of its own placement: ringbus 330 against
  // the far floor's 200.
  EXPECT_NE(table.find("far 200   floor"), std::string::npos) << table;
  EXPECT_NE(table.find("ringbus               3     330     330     330      330      1.65x     1.65x"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("thread p50 <= best peer p50 (boost_spsc) [near, RTT/2 60 ns]"), std::string::npos) << table;
  EXPECT_NE(table.find("0.83x"), std::string::npos) << table;  // 100 / 120
  EXPECT_NE(table.find("MISSED thread p50 <= best peer p50 (atomic_queue) [far, RTT/2 200 ns]"), std::string::npos)
      << table;
  EXPECT_NE(table.find("1.10x"), std::string::npos) << table;  // 330 / 300
  EXPECT_NE(table.find("met    (reference) thread p50 / one-way one-line floor p50 [far, RTT/2 200 ns]"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("ringbus / best peer, thread 64 B [near, RTT/2 60 ns]: p50 0.83x (boost_spsc)"),
            std::string::npos)
      << table;
  // Not judged on the mixed medians (ringbus 100 against a floor of 50: 2.00x).
  const std::string judged = table.substr(table.find("\ntargets\n"));
  EXPECT_EQ(judged.find("thread p50 <= 1.10 x floor p50 "), judged.find("thread p50 <= 1.10 x floor p50 [")) << judged;
  EXPECT_EQ(judged.find("2.00x"), std::string::npos) << judged;

  // The JSON carries each placement's figures and says where each target was judged.
  const std::string json = json_of(report_split_by_placement());
  EXPECT_NE(json.find("\"moved\": true, \"by_placement\": [\n      {\"placement\": \"near\", \"rtt_half_ns\": 60.0, \"chunks\": 2, "
                      "\"samples\": 4000, \"p50_ns\": 100.0"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"value\": \"1.10x\", \"placement\": \"far\"}"), std::string::npos) << json;
  EXPECT_EQ(json.find("\"placement\": null"), std::string::npos) << json;  // no latency target over all chunks

  // The plot draws the placement in which the scenario ran the most chunks, and says so.
  const std::string png = ::testing::TempDir() + ringbus::test::unique_name("bench-split") + ".png";
  (void)ringbus::bench::write_plot(report_split_by_placement(), png);  // false without gnuplot
  const std::string script = slurp(png + ".gp");
  std::remove(png.c_str());
  EXPECT_NE(script.find("set title 'one-way, thread to thread, 64 B (far, RTT/2 200 ns)'"), std::string::npos)
      << script;
  EXPECT_NE(script.find("0.000 330.0\n1.000 331.0\n"), std::string::npos) << script;  // ringbus, far
  EXPECT_EQ(script.find("0.000 100.0\n"), std::string::npos) << script;              // not its near or mixed figures
  EXPECT_NE(script.find("title 'thread (far)'"), std::string::npos) << script;        // the ringbus panel

  // A scenario that moved but could not be split (no placement had a chunk of every
  // system) is marked, and its targets say that they compare mixed placements.
  ringbus::bench::Report unsplit = report_split_by_placement();
  for (ringbus::bench::LatencyResult& l : unsplit.latency) l.by_placement.clear();
  const std::string mixed = table_of(unsplit);
  EXPECT_NE(mixed.find("thread 64 B~"), std::string::npos) << mixed;
  EXPECT_NE(mixed.find("  ~ the vCPUs changed placement while this scenario ran, and no placement"), std::string::npos)
      << mixed;
  EXPECT_NE(mixed.find("MISSED thread p50 <= 1.10 x floor p50 [placements mixed]"), std::string::npos) << mixed;
  EXPECT_NE(mixed.find("ringbus / best peer, thread 64 B [placements mixed]: p50"), std::string::npos) << mixed;
  EXPECT_EQ(mixed.find("latency by placement"), std::string::npos) << mixed;
  EXPECT_NE(json_of(unsplit).find("\"moved\": true, \"by_placement\": []"), std::string::npos);

  // A scenario that stayed in one placement has no such rows and is judged as a whole.
  const std::string steady = table_of(report_with_floors(230, 241, 2 * 235, 226));
  EXPECT_EQ(steady.find("by placement"), std::string::npos) << steady;
  EXPECT_EQ(steady.find("RTT/2 230 ns]"), std::string::npos) << steady;
  EXPECT_NE(steady.find("thread p50 <= 1.10 x floor p50  "), std::string::npos) << steady;
}

// Throughput measurements probed in both placements are reported and judged in each.
TEST(BenchReport, ThroughputThatMovedIsJudgedWithinEachPlacement) {
  ringbus::bench::Report r = report_with_floors(60, 60, 120, 60);
  r.options.runs = 3;
  r.throughput.clear();
  auto rate = [&](const char* scenario, std::uint32_t batch, double mixed, double near, double far) {
    ringbus::bench::ThroughputResult t{"ringbus", scenario, 64, 1, batch, mixed, 60};
    t.moved = true;
    t.by_placement = {{"near", 60, 2, near}, {"far", 210, 1, far}};
    r.throughput.push_back(t);
  };
  rate("tput64", 1, 44e6, 45e6, 15e6);
  rate("tput8", 32, 100e6, 130e6, 50e6);
  const std::string table = table_of(r);
  EXPECT_NE(table.find("throughput by placement"), std::string::npos) << table;
  EXPECT_NE(table.find("tput64 near   ringbus                      45.0"), std::string::npos) << table;
  EXPECT_NE(table.find("tput64 far    ringbus                      15.0"), std::string::npos) << table;
  EXPECT_NE(table.find("met    64-byte events, 1 producer >= 40 M/s [near, RTT/2 60 ns]"), std::string::npos) << table;
  EXPECT_NE(table.find("45.0 M/s (2 of 3 runs)"), std::string::npos) << table;
  EXPECT_NE(table.find("MISSED 64-byte events, 1 producer >= 40 M/s [far, RTT/2 210 ns]"), std::string::npos) << table;
  EXPECT_NE(table.find("met    8-byte events, 1 producer, batched >= 120 M/s [near, RTT/2 60 ns]"), std::string::npos)
      << table;
  // Not judged on the median that mixes them (44 M/s would have met the target).
  EXPECT_EQ(table.find("44.0 M/s"), std::string::npos) << table;
  const std::string json = json_of(r);
  EXPECT_NE(json.find("\"moved\": true, \"by_placement\": [{\"placement\": \"near\", \"rtt_half_ns\": 60.0, "
                      "\"measurements\": 2, \"events_per_s\": 45000000}, {\"placement\": \"far\""),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"value\": \"15.0 M/s (1 of 3 runs)\", \"placement\": \"far\""), std::string::npos) << json;
  EXPECT_DOUBLE_EQ(ringbus::bench::placement_range(r).max_ns, 210);

  // All measured in one placement: one row each, judged as before.
  const std::string steady = table_of(report_with_floors(230, 241, 2 * 235, 226));
  EXPECT_EQ(steady.find("throughput by placement"), std::string::npos) << steady;
  EXPECT_NE(steady.find("MISSED 64-byte events, 1 producer >= 40 M/s "), std::string::npos) << steady;
}

TEST(BenchReport, TheTrailingReaderHasItsOwnRowsAndTargets) {
  ringbus::bench::Report r = report_with_floors(60, 60, 120, 60);
  r.throughput.clear();
  for (const char* system : {"ringbus", "ringbus_trailing"}) {
    const bool trailing = std::string(system) == "ringbus_trailing";
    r.throughput.push_back({system, "tput64", 64, 1, 1, trailing ? 55e6 : 22e6, 60});
    r.throughput.push_back({system, "tput64", 64, 1, 32, trailing ? 80e6 : 50e6, 60});
    r.throughput.push_back({system, "tput8", 8, 1, 32, trailing ? 125e6 : 110e6, 60});
  }
  const std::string table = table_of(r);
  EXPECT_NE(table.find("tput64   ringbus                           22.0     50.0"), std::string::npos) << table;
  EXPECT_NE(table.find("         ringbus_trailing                  55.0     80.0"), std::string::npos) << table;
  EXPECT_NE(table.find("MISSED 64-byte events, 1 producer >= 40 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("met    64-byte events, 1 producer, trailing reader >= 40 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("MISSED 8-byte events, 1 producer, batched >= 120 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("met    8-byte events, 1 producer, batched, trailing reader >= 120 M/s "), std::string::npos)
      << table;
  const std::string json = json_of(r);
  EXPECT_NE(json.find("{\"system\": \"ringbus_trailing\", \"scenario\": \"tput64\""), std::string::npos) << json;
}

}  // namespace
