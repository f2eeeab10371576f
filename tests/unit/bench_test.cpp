// The benchmark's own machinery: the latency histogram, the sender's pacing, the
// checks of a run's options and what the report makes of the vCPUs' placement.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "ringbus/clock.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/counters.hpp"
#include "ringbus_bench/histogram.hpp"
#include "ringbus_bench/pacer.hpp"
#include "ringbus_bench/publish.hpp"
#include "ringbus_bench/summary.hpp"
#include "ringbus_bench/throughput.hpp"
#include "process_support.hpp"
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

// Smoke options on the first two CPUs this process may use; none with fewer.
std::optional<ringbus::bench::Options> smoke_on_two_cpus() {
  const std::vector<int> cpus = ringbus::test::allowed_cpus();
  if (cpus.size() < 2) return std::nullopt;
  ringbus::bench::Options o = ringbus::bench::options_for("smoke");
  o.cpu_producer = cpus[0];
  o.cpu_consumer = cpus[1];
  return o;
}

// `o` sized for a short run: 2,000 samples per system, in chunks of 1,000.
ringbus::bench::Options short_run(ringbus::bench::Options o) {
  o.samples = 2'000;
  o.warmup = 100;
  o.chunk = 1'000;
  return o;
}

// Every way a run's options can be unusable is named before any thread starts.
TEST(BenchOptions, CheckNamesWhatIsWrongAndRunRefusesIt) {
  const std::optional<ringbus::bench::Options> two = smoke_on_two_cpus();
  if (!two) GTEST_SKIP() << "needs two CPUs";
  ringbus::bench::Options good = *two;
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
  // A batch claim takes at most a quarter of the ring: tput512's 32 records of 576
  // bytes do not fit in 64 KiB, and the message names the capacity that does.
  const std::string small = why([](O& o) {
    o.tput_capacity = 64u << 10;
    o.scenarios = {"tput512"};
  });
  EXPECT_NE(small.find("too small for tput512"), std::string::npos) << small;
  EXPECT_NE(small.find("takes 18432 bytes"), std::string::npos) << small;
  EXPECT_NE(small.find("(16384 bytes)"), std::string::npos) << small;
  EXPECT_NE(small.find("--capacity 128K or more"), std::string::npos) << small;
  EXPECT_EQ(why([](O& o) {
              o.tput_capacity = 128u << 10;
              o.scenarios = {"tput512"};
            }),
            "");
  struct sysinfo si {};
  ASSERT_EQ(::sysinfo(&si), 0);
  // More than all the memory there is: more than any MemAvailable.
  const std::uint64_t too_big = std::bit_ceil(std::uint64_t{si.totalram} * si.mem_unit + 1);
  if (too_big <= ringbus::layout::kMaxCapacity) {
    EXPECT_NE(why([&](O& o) { o.tput_capacity = too_big; }).find("does not fit in memory ("), std::string::npos);
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

// Every case of 8 or 64-byte events measures tput_events events; every 512-byte case a
// quarter, in each mode.
TEST(BenchThroughput, A512ByteMeasurementMovesAQuarterOfTheEvents) {
  for (const char* mode : {"full", "quick", "smoke"}) {
    const ringbus::bench::Options o = ringbus::bench::options_for(mode);
    int sized = 0;
    for (const ringbus::bench::ThroughputCase& c : ringbus::bench::throughput_cases()) {
      const std::uint64_t want = c.event_bytes == 512 ? o.tput_events / 4 : o.tput_events;
      EXPECT_EQ(ringbus::bench::events_for(c, o), want) << mode << " " << c.system << " " << c.scenario;
      sized += c.event_bytes == 512 ? 1 : 0;
    }
    EXPECT_GT(sized, 0) << mode;
  }
}

// A short run of every scenario but `process` runs every system end to end: each latency
// system records every sample asked for, and every throughput case reports a rate. In
// the ThreadSanitizer build this puts every thread of the benchmark's own code, and of
// the peer queues, under it. (`process` forks a producer, which this test process, with
// its watchdog thread, must not do: the next test runs it in a process of its own.)
TEST(BenchRun, EverySystemOfEveryScenarioRunsAShortRun) {
  const std::optional<ringbus::bench::Options> two = smoke_on_two_cpus();
  if (!two) GTEST_SKIP() << "needs two CPUs";
  ringbus::bench::Options o = short_run(*two);
  o.tput_events = 20'000;
  for (const std::string& name : ringbus::bench::scenario_names()) {
    if (name != "process") o.scenarios.push_back(name);
  }
  const ringbus::bench::Report r = ringbus::bench::run(o);
  std::set<std::string> latency, throughput, thread_systems;
  for (const ringbus::bench::LatencyResult& l : r.latency) {
    latency.insert(l.scenario);
    if (l.scenario == "thread" && l.event_bytes == 64) thread_systems.insert(l.system);
    EXPECT_EQ(l.samples, o.samples) << l.system << " " << l.scenario << " " << l.event_bytes;
    EXPECT_GT(l.p50, 0) << l.system << " " << l.scenario;
    EXPECT_LE(l.p50, l.max) << l.system << " " << l.scenario;
  }
  for (const ringbus::bench::ThroughputResult& t : r.throughput) {
    throughput.insert(t.scenario);
    EXPECT_GT(t.events_per_s, 0) << t.system << " " << t.scenario << " " << t.producers << "x" << t.batch;
  }
  EXPECT_EQ(latency, (std::set<std::string>{"thread", "fanout4", "keys10k", "rtt"}));
  EXPECT_EQ(throughput, (std::set<std::string>{"tput8", "tput64", "tput512"}));
  EXPECT_EQ(thread_systems, (std::set<std::string>{"floor", "floor_oneway", "ringbus", "boost_spsc", "moodycamel_rwq",
                                                   "atomic_queue"}));
}

// Child: "bench-process CPU CPU": a short run of the process scenario, in a process of
// its own that has no other thread when the scenario forks its producer process. Exits 0
// when floor, ringbus and ringbus_thread each recorded every sample asked for.
const ringbus::test::ChildRole bench_process_role("bench-process", [](const std::vector<std::string>& a) {
  ringbus::bench::Options o = short_run(ringbus::bench::options_for("smoke"));
  o.cpu_producer = std::stoi(a.at(0));
  o.cpu_consumer = std::stoi(a.at(1));
  o.scenarios = {"process"};
  std::set<std::string> complete;
  std::string seen;
  for (const ringbus::bench::LatencyResult& l : ringbus::bench::run(o).latency) {
    if (l.samples == o.samples && l.scenario == "process") complete.insert(l.system);
    seen += " " + l.scenario + "/" + l.system + ":" + std::to_string(l.samples);
  }
  if (complete == std::set<std::string>{"floor", "ringbus", "ringbus_thread"}) return 0;
  std::fprintf(stderr, "bench-process: samples per system:%s\n", seen.c_str());
  return 1;
});

// The process scenario end to end, its producer process forked and killed with the run's
// end: in the ThreadSanitizer build this covers the scenario's consumer and reaper
// threads, which the short run above leaves out.
TEST(BenchRun, TheProcessScenarioRunsAShortRunInAProcessOfItsOwn) {
  const std::optional<ringbus::bench::Options> two = smoke_on_two_cpus();
  if (!two) GTEST_SKIP() << "needs two CPUs";
  const pid_t child = ringbus::test::spawn_child(
      "bench-process", {std::to_string(two->cpu_producer), std::to_string(two->cpu_consumer)});
  EXPECT_EQ(ringbus::test::reap(child), 0);
}

// Software counters stand in for the hardware ones, which VMs without a PMU refuse: the
// same perf_event_open group, started and stopped the same way.
constexpr ringbus::bench::CounterSpec kPageFaults{PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS, "page-faults"};
constexpr ringbus::bench::CounterSpec kTaskClock{PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK, "task-clock"};
constexpr ringbus::bench::CounterSpec kNoSuchCounter{PERF_TYPE_SOFTWARE, 0x7777, "no-such-counter"};

// Faults in `pages` new 4 KiB pages (no huge page: one fault each).
void touch_new_pages(std::size_t pages) {
  const std::size_t bytes = pages * 4096;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ::madvise(p, bytes, MADV_NOHUGEPAGE);
  for (std::size_t i = 0; i < pages; ++i) static_cast<volatile char*>(p)[i * 4096] = 1;
  ::munmap(p, bytes);
}

// A thread's counters count what it does between start() and stop(), from zero each time.
TEST(BenchCounters, CountWhatTheThreadDoesBetweenStartAndStop) {
  const ringbus::bench::CounterSpec specs[] = {kPageFaults, kTaskClock};
  ringbus::bench::ThreadCounters c(specs);
  if (!c.ok()) GTEST_SKIP() << "perf_event_open refused here: " << c.why();
  EXPECT_EQ(c.why(), "");
  // A sanitizer's shadow memory adds faults of its own, at most a few per page touched:
  // the pages outside start..stop outnumber those inside ten to one.
  touch_new_pages(1000);  // before start: not counted
  c.start();
  touch_new_pages(100);
  const ringbus::bench::Counts first = c.stop();
  touch_new_pages(1000);  // after stop: not counted
  EXPECT_GE(first[0], 100u);
  EXPECT_LT(first[0], 1000u) << "faults outside start..stop counted";
  EXPECT_GT(first[1], 0u) << "task-clock, ns";
  EXPECT_EQ(first[2], 0u) << "no third counter";
  c.start();
  touch_new_pages(10);
  const ringbus::bench::Counts second = c.stop();
  EXPECT_GE(second[0], 10u);
  EXPECT_LT(second[0], 100u) << "start() did not zero the counts";
}

// A counter the kernel refuses leaves the group closed and says which and why; a
// refused group counts nothing.
TEST(BenchCounters, ARefusedCounterIsNamedWithTheKernelsError) {
  const ringbus::bench::CounterSpec specs[] = {kTaskClock, kNoSuchCounter};
  ringbus::bench::ThreadCounters c(specs);
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.why().rfind("no-such-counter: perf_event_open: ", 0), 0u) << c.why();
  c.start();
  EXPECT_EQ(c.stop(), ringbus::bench::Counts{});
  EXPECT_FALSE(ringbus::bench::ThreadCounters().ok());
  // Whatever this machine has, the probe and a group of the hardware counters agree.
  const std::string why = ringbus::bench::hardware_counters_unavailable();
  EXPECT_EQ(ringbus::bench::ThreadCounters(ringbus::bench::kHardwareCounters).ok(), why.empty()) << why;
  EXPECT_TRUE(why.empty() || why.find("perf_event_open: ") != std::string::npos) << why;
}

// Every thread of every system's throughput measurement counts from the start signal:
// the producer threads' counts are summed, the consumer's kept apart; a measurement any
// of whose threads could not open its counters says so; one that counts nothing has none.
TEST(BenchThroughput, EveryThreadOfAMeasurementCountsIntoItsSide) {
  const std::optional<ringbus::bench::Options> two = smoke_on_two_cpus();
  if (!two) GTEST_SKIP() << "needs two CPUs";
  const ringbus::bench::CounterSpec clock[] = {kTaskClock};
  if (!ringbus::bench::ThreadCounters(clock).ok()) GTEST_SKIP() << "perf_event_open refused here";
  const ringbus::bench::CounterSpec refused[] = {kNoSuchCounter};
  int cases = 0;
  for (const ringbus::bench::ThroughputCase& c : ringbus::bench::throughput_cases()) {
    if (c.scenario != "tput64" || c.batch != 1) continue;
    ++cases;
    const std::string what = c.system + " x" + std::to_string(c.producers);
    const ringbus::bench::Measurement m = ringbus::bench::measure_throughput(c, *two, 20'000, clock);
    EXPECT_TRUE(m.counted) << what;
    EXPECT_GT(m.events_per_s, 0.0) << what;
    EXPECT_GT(m.producer[0], 0u) << what << ": producer task-clock";
    EXPECT_GT(m.consumer[0], 0u) << what << ": consumer task-clock";
    EXPECT_EQ(m.producer[1] + m.consumer[1], 0u) << what;
    const ringbus::bench::Measurement none = ringbus::bench::measure_throughput(c, *two, 20'000);
    EXPECT_FALSE(none.counted) << what;
    EXPECT_EQ(none.producer, ringbus::bench::Counts{}) << what;
    const ringbus::bench::Measurement failed = ringbus::bench::measure_throughput(c, *two, 20'000, refused);
    EXPECT_FALSE(failed.counted) << what;
    EXPECT_EQ(failed.consumer, ringbus::bench::Counts{}) << what;
  }
  EXPECT_EQ(cases, 10) << "ringbus and ringbus_trailing x 1 and 2 producers, exclusive, 2 references, 3 peers";
}

// A claim the ring refuses for good (here a batch over a quarter of it, which check()
// keeps a run from asking for) ends the measurement with the status named, where a
// retry loop would spin forever; the same case in a ring it fits moves every event.
TEST(BenchThroughput, AClaimRefusedForAnyReasonButFullEndsTheRunNamingTheStatus) {
  const std::optional<ringbus::bench::Options> two = smoke_on_two_cpus();
  if (!two) GTEST_SKIP() << "needs two CPUs";
  ringbus::bench::Options o = *two;
  for (const char* system : {"ringbus", "ringbus_trailing", "ringbus_exclusive"}) {
    for (const std::uint32_t producers : {1u, 2u}) {
      if (producers == 2 && std::string(system) == "ringbus_exclusive") continue;  // one producer only
      const ringbus::bench::ThroughputCase c{system, "tput512", 512, producers, 32};
      o.tput_capacity = 64u << 10;
      try {
        (void)ringbus::bench::measure_throughput(c, o, 2000).events_per_s;
        ADD_FAILURE() << system << " x" << producers << ": a refused claim returned a rate";
      } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("32 record(s) of 512 bytes in a 64 KiB ring returned too_large"), std::string::npos)
            << what;
      }
      o.tput_capacity = 128u << 10;
      EXPECT_GT(ringbus::bench::measure_throughput(c, o, 2000).events_per_s, 0.0) << system << " x" << producers;
    }
  }
}

// Every percentile of `st` at `ns`.
void flat(ringbus::bench::LatencyStats& st, double ns) {
  st.p50 = st.p90 = st.p99 = st.p999 = st.p9999 = st.max = st.p99_chunk_median = ns;
}

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
  // Nor is one after the smallest: 200 stays the smallest whatever follows it.
  r.placement.start_ns = 200;
  r.throughput.push_back({"ringbus", "tput8", 8, 1, 1, 1e6, 0});
  EXPECT_DOUBLE_EQ(ringbus::bench::placement_range(r).min_ns, 200);
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
  EXPECT_NE(table.find("met    (reference) thread median chunk p99 <= best peer (boost_spsc)"), std::string::npos)
      << table;
  // Without chunk medians (a result no chunks were kept for) there is no such reference.
  ringbus::bench::Report without = r;
  without.latency[1].p99_chunk_median = 0;
  EXPECT_EQ(table_of(without).find("median chunk p99"), std::string::npos);
  without = r;
  without.latency.back().p99_chunk_median = 0;
  EXPECT_EQ(table_of(without).find("median chunk p99"), std::string::npos);

  // A ratio below 0.1 keeps two significant digits instead of printing as 0.00x.
  r.latency.back().p99 = 1'000'000;
  const std::string tiny = table_of(r);
  EXPECT_NE(tiny.find("met    thread p99 <= best peer p99 (boost_spsc)"), std::string::npos) << tiny;
  EXPECT_NE(tiny.find(" 0.00032x (over 1 us"), std::string::npos) << tiny;  // 322 / 1,000,000
  EXPECT_EQ(tiny.find("0.00x"), std::string::npos) << tiny;
}

// One latency result of scenario `scenario` per (system, p50, p99).
void add_results(ringbus::bench::Report& r, const char* scenario,
                 std::initializer_list<std::tuple<const char*, double, double>> systems) {
  for (const auto& [system, p50, p99] : systems) {
    ringbus::bench::LatencyResult l = flat_result(scenario, system, p50, 1000);
    l.p99 = l.p99_chunk_median = p99;
    r.latency.push_back(l);
  }
}

// The report's verdict on the target whose text is `what` (followed by spaces): "met"
// or "MISSED", then the value it shows; "absent" if there is no such target.
std::string verdict(const ringbus::bench::Report& r, const std::string& what) {
  const std::string table = table_of(r);
  const std::size_t targets = table.find("\ntargets\n");
  if (targets == std::string::npos) return "absent";
  for (const std::string v : {"met   ", "MISSED"}) {
    const std::size_t at = table.find("\n  " + v + " " + what + " ", targets);
    if (at == std::string::npos) continue;
    const std::size_t from = table.find_first_not_of(' ', at + 4 + v.size() + 1 + what.size());
    const std::string word = v.substr(0, v.find(' '));
    return word + " " + table.substr(from, table.find('\n', from) - from);
  }
  return "absent";
}

// Every target is met at its limit exactly and missed just beyond it, and each compares
// ringbus with what its text names: the floor of the thread scenario, the best peer
// (the lowest p50, the lowest p99, never the floor or a ringbus configuration), the
// thread-to-thread configuration interleaved in the same scenario, the rate of one
// producer in the named configuration.
TEST(BenchReport, EachTargetIsMetAtItsLimitAndMissedBeyondIt) {
  auto at_limits = [](double over) {
    ringbus::bench::Report r;
    r.options = ringbus::bench::options_for("smoke");
    r.placement = {100, 100, 100};
    add_results(r, "thread", {{"floor", 100, 100},
                              {"floor_oneway", 100 / over, 100},
                              {"ringbus", 110 * over, 300 * over},
                              {"atomic_queue", 110, 500},  // the best p50, not the best p99
                              {"boost_spsc", 120, 300},    // the best p99
                              {"moodycamel_rwq", 130, 400}});
    add_results(r, "process", {{"floor", 100, 100}, {"ringbus", 105 * over, 1}, {"ringbus_thread", 100, 1}});
    add_results(r, "fanout4", {{"floor", 100, 100}, {"ringbus", 115 * over, 1}, {"ringbus_thread", 100, 1}});
    add_results(r, "keys10k", {{"floor", 100, 100}, {"ringbus", 220 * over, 1}, {"ringbus_thread", 200, 1}});
    for (const char* system : {"ringbus", "ringbus_trailing", "ringbus_exclusive"}) {
      r.throughput.push_back({system, "tput64", 64, 1, 1, 40e6 / over, 100});
      r.throughput.push_back({system, "tput64", 64, 1, 32, 1e6, 100});    // batched: not a target
      r.throughput.push_back({system, "tput64", 64, 2, 1, 1e9, 100});     // 2 producers: not a target
      r.throughput.push_back({system, "tput8", 8, 1, 1, 1e9, 100});       // unbatched: not a target
      r.throughput.push_back({system, "tput8", 8, 1, 32, 120e6 / over, 100});
    }
    // The best median chunk p99 is moodycamel_rwq's, though its p99 is not the best.
    for (ringbus::bench::LatencyResult& l : r.latency) {
      if (l.system == "moodycamel_rwq") l.p99_chunk_median = 250;
      if (l.system == "ringbus" && l.scenario == "thread") l.p99_chunk_median = 250 * over;
    }
    return r;
  };
  const ringbus::bench::Report exact = at_limits(1.0), beyond = at_limits(1.01);
  const std::string p99_value = " (over 1 us: ringbus 0.00%, boost_spsc 0.00%)";
  // Each target: the value it shows at the limit (met), and 1% beyond it (MISSED).
  for (const auto& [what, at_limit, past_it] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"thread p50 <= 1.10 x floor p50", "1.10x", "1.11x"},
           {"thread p50 <= best peer p50 (atomic_queue)", "1.00x", "1.01x"},
           {"thread p99 <= best peer p99 (boost_spsc)", "1.00x" + p99_value, "1.01x" + p99_value},
           {"(reference) thread p50 / one-way one-line floor p50", "1.10x", "1.12x"},
           {"(reference) thread median chunk p99 <= best peer (moodycamel_rwq)", "1.00x (250 against 250 ns)",
            "1.01x (252 against 250 ns)"},
           {"process p50 within 5% of thread p50", "1.05x", "1.06x"},
           {"4 gating groups p50 <= 1.15 x one group", "1.15x", "1.16x"},
           {"10,000-key sequencing p50 <= 1.10 x unkeyed", "1.10x", "1.11x"},
           {"64-byte events, 1 producer >= 40 M/s", "40.0 M/s (RTT/2 100 ns)", "39.6 M/s (RTT/2 100 ns)"},
           {"64-byte events, 1 producer, trailing reader >= 40 M/s", "40.0 M/s (RTT/2 100 ns)",
            "39.6 M/s (RTT/2 100 ns)"},
           {"8-byte events, 1 producer, batched >= 120 M/s", "120.0 M/s (RTT/2 100 ns)", "118.8 M/s (RTT/2 100 ns)"},
           {"8-byte events, 1 producer, batched, trailing reader >= 120 M/s", "120.0 M/s (RTT/2 100 ns)",
            "118.8 M/s (RTT/2 100 ns)"},
           {"64-byte events, 1 exclusive producer >= 40 M/s", "40.0 M/s (RTT/2 100 ns)", "39.6 M/s (RTT/2 100 ns)"},
           {"8-byte events, 1 exclusive producer, batched >= 120 M/s", "120.0 M/s (RTT/2 100 ns)",
            "118.8 M/s (RTT/2 100 ns)"}}) {
    EXPECT_EQ(verdict(exact, what), "met " + at_limit);
    EXPECT_EQ(verdict(beyond, what), "MISSED " + past_it);
  }

  // Rates whose runs were measured in both placements but none in one placement alone
  // (each probe pair disagreed) are judged on the median of all, and say so.
  ringbus::bench::Report mixed = at_limits(1.0);
  for (ringbus::bench::ThroughputResult& t : mixed.throughput) t.moved = true;
  EXPECT_EQ(verdict(mixed, "64-byte events, 1 producer >= 40 M/s [placements mixed]"),
            "met 40.0 M/s (RTT/2 100 ns)");
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
  // At the widest gap, whatever the scale: 100-110 and 390-400 split at the geometric
  // mean of 110 and 390 (about 207).
  EXPECT_EQ(split_placements({{100, 110}, {110, 105}, {105, 400}, {400, 400}, {400, 390}}),
            (std::vector<ChunkPlacement>{ChunkPlacement::near, ChunkPlacement::near, ChunkPlacement::mixed,
                                         ChunkPlacement::far, ChunkPlacement::far}));
  EXPECT_EQ(split_placements({{100, 110}, {110, 105}, {105, 206}, {206, 206}, {206, 400}, {400, 390}, {390, 400}}),
            (std::vector<ChunkPlacement>{ChunkPlacement::near, ChunkPlacement::near, ChunkPlacement::near,
                                         ChunkPlacement::near, ChunkPlacement::mixed, ChunkPlacement::far,
                                         ChunkPlacement::far}))
      << "206 -> 390 (1.89x) is wider than 110 -> 206 (1.87x)";
  // The 1.5x test is that of the placement range, on the probes as the JSON prints them:
  // 64.96 and 97.46 print as 65.0 and 97.5, exactly 1.5x, so not split.
  const std::vector<ringbus::bench::ChunkProbes> edge{{64.96, 64.96}, {64.96, 97.46}, {97.46, 97.46}};
  EXPECT_EQ(split_placements(edge), std::vector<ChunkPlacement>(3, ChunkPlacement::all));
  EXPECT_EQ(split_placements({{64.9, 64.9}, {64.9, 97.46}, {97.46, 97.46}}),
            (std::vector<ChunkPlacement>{ChunkPlacement::near, ChunkPlacement::mixed, ChunkPlacement::far}));
  // A probe well above the rest is not a placement: a scenario that ran far, probed at
  // 196-286 ns, with one probe at 421 (measured: a vCPU held up while it ran) did not
  // move. It was once split at the geometric mean of 196 and 421 (287 ns), and its far
  // chunks were reported as near.
  std::vector<ringbus::bench::ChunkProbes> far_run;
  for (const double probe : {196.0, 231.0, 286.0, 421.0, 225.0, 210.0, 276.0, 246.0}) {
    far_run.push_back({far_run.empty() ? 221.0 : far_run.back().after_ns, probe});
  }
  EXPECT_EQ(split_placements(far_run), std::vector<ChunkPlacement>(far_run.size(), ChunkPlacement::all));
  // Nor are two such probes (they count four times: before and after two chunks, less
  // one where they meet), nor one below the rest.
  EXPECT_EQ(split_placements({{220, 231}, {231, 900}, {900, 240}, {240, 226}}),
            std::vector<ChunkPlacement>(4, ChunkPlacement::all));
  EXPECT_EQ(split_placements({{220, 231}, {231, 60}, {60, 240}, {240, 226}}),
            std::vector<ChunkPlacement>(4, ChunkPlacement::all));
  // The gap between near and far still splits with such a probe above them: it is the
  // widest that leaves three probes either side.
  EXPECT_EQ(split_placements({{55, 60}, {60, 58}, {58, 210}, {210, 205}, {205, 900}, {900, 212}, {212, 208}}),
            (std::vector<ChunkPlacement>{ChunkPlacement::near, ChunkPlacement::near, ChunkPlacement::mixed,
                                         ChunkPlacement::far, ChunkPlacement::far, ChunkPlacement::far,
                                         ChunkPlacement::far}));
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
  // Every scenario that moved was split: no footnote for one that could not be.
  EXPECT_EQ(table.find("  ~ the vCPUs changed placement"), std::string::npos) << table;

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
  EXPECT_NE(script.find("set xrange [0:1]\n"), std::string::npos) << script;  // the spectra reach 1 nine
  // The ringbus panel shows one-way scenarios only: a round trip is not on their scale.
  ringbus::bench::Report with_rtt = report_split_by_placement();
  with_rtt.latency.push_back(flat_result("rtt", "floor", 120, 4000));
  with_rtt.latency.push_back(flat_result("rtt", "ringbus", 200, 4000));
  for (ringbus::bench::LatencyResult& l : with_rtt.latency) l.spectrum = {{0.0, l.p50}, {3.6, l.max}};
  (void)ringbus::bench::write_plot(with_rtt, png);
  const std::string with_rtt_script = slurp(png + ".gp");
  std::remove(png.c_str());
  EXPECT_NE(with_rtt_script.find("set title 'round trip, 64 B'"), std::string::npos) << with_rtt_script;
  EXPECT_EQ(with_rtt_script.find("title 'rtt"), std::string::npos) << with_rtt_script;
  EXPECT_NE(with_rtt_script.find("set xrange [0:4]\n"), std::string::npos) << with_rtt_script;

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

// A run in which the vCPUs moved: `thread` split by placement (report_split_by_placement),
// `process` moved but without a placement that every system ran in, `keys10k` steady,
// and throughput measured in both placements.
ringbus::bench::Report report_that_moved() {
  ringbus::bench::Report r = report_split_by_placement();
  r.options.runs = 3;
  r.options.tput_capacity = std::uint64_t{1} << 20;
  r.placement = {50, 45, 60};  // 45: the smallest RTT/2 of the run
  r.latency[0].by_placement[1].rtt_half_ns = 230;  // the floor's far chunks: the largest
  add_results(r, "process", {{"floor", 80, 90}, {"ringbus", 120, 200}, {"ringbus_thread", 110, 150}});
  for (std::size_t i = r.latency.size() - 3; i < r.latency.size(); ++i) r.latency[i].moved = true;
  add_results(r, "keys10k", {{"floor", 60, 70}, {"ringbus", 121, 140}, {"ringbus_thread", 110, 130}});
  auto rate = [&](const char* system, std::uint32_t producers, std::uint32_t batch, double mixed, double near,
                  double far) {
    ringbus::bench::ThroughputResult t{system, "tput64", 64, producers, batch, mixed, 55};
    t.moved = true;
    t.by_placement = {{"near", 55, 2, near}};
    if (far > 0) t.by_placement.push_back({"far", 210, 1, far});
    r.throughput.push_back(t);
  };
  rate("ringbus", 1, 1, 30e6, 35e6, 10e6);
  rate("ringbus", 1, 32, 60e6, 70e6, 20e6);
  rate("ringbus", 2, 1, 25e6, 28e6, 0);
  rate("ringbus", 2, 32, 40e6, 45e6, 15e6);
  r.throughput.back().by_placement[0].rtt_half_ns = 58;
  rate("boost_spsc", 1, 1, 16e6, 17e6, 0);
  r.throughput.back().rtt_half_ns = 60;
  r.throughput.back().by_placement[0].rtt_half_ns = 60;
  return r;
}

// The whole table of such a run, from the latency rows on: each scenario rated by its
// own floor (the floor rows by none), `*` and `~` where a scenario moved, the rows by
// placement each rated by the floor of that placement, the MOVED range taken from the
// probes, the floors and the placements' RTT/2 (45 and 230 appear nowhere else), the
// throughput rows one a system with the RTT/2s they were probed at, and the targets.
TEST(BenchReport, TheTableOfARunThatMovedReadsInFull) {
  const std::string table = table_of(report_that_moved());
  EXPECT_NE(table.find("placement MOVED during the run: RTT/2 from 45 to 230 ns"), std::string::npos) << table;
  const std::size_t rows = table.find("latency, ns (median of runs)");
  ASSERT_NE(rows, std::string::npos) << table;
  EXPECT_EQ(table.substr(rows), R"TABLE(latency, ns (median of runs)        p50     p90     p99    p99.9   p99.99       max  p50/floor p99/floor   >1us %
  thread 64 B*   floor                50      50      50       50       50        50          -         -     0.00
                 floor_oneway        300     300     300      300      300       300      6.00x     6.00x     0.00
                 ringbus             100     100     100      100      100       100      2.00x     2.00x     0.00
                 boost_spsc          360     360     360      360      360       360      7.20x     7.20x     0.00
                 atomic_queue        330     330     330      330      330       330      6.60x     6.60x     0.00
  process 64 B~  floor                80      80      90       80       80        80          -         -     0.00
                 ringbus             120     120     200      120      120       120      1.50x     2.22x     0.00
                 ringbus_thread      110     110     150      110      110       110      1.38x     1.67x     0.00
  keys10k 64 B   floor                60      60      70       60       60        60          -         -     0.00
                 ringbus             121     121     140      121      121       121      2.02x     2.00x     0.00
                 ringbus_thread      110     110     130      110      110       110      1.83x     1.86x     0.00
  ~ the vCPUs changed placement while this scenario ran, and no placement had a chunk of every
    system: its medians mix near and far chunks in different shares per system, so its ratios
    and targets compare placements as much as systems (a longer run can split it).
  * the vCPUs changed placement while this scenario ran: its medians mix near and far chunks in
    different shares per system, so compare it by placement (below), not by these rows.

latency by placement, ns (chunks sorted by the RTT/2 probed before and after each, pooled over runs)
                 RTT/2 ns                   chunks     p50     p90     p99    p99.9  p50/floor p99/floor   >1us %
  thread 64 B    near 60   floor                 2      60      60      60       60          -         -     0.00
                           floor_oneway          2      80      80      80       80      1.33x     1.33x     0.00
                           ringbus               2     100     100     100      100      1.67x     1.67x     0.00
                           boost_spsc            2     120     120     120      120      2.00x     2.00x     0.00
                           atomic_queue          2     130     130     130      130      2.17x     2.17x     0.00
                 far 230   floor                 3     200     200     200      200          -         -     0.00
                           floor_oneway          3     300     300     300      300      1.50x     1.50x     0.00
                           ringbus               3     330     330     330      330      1.65x     1.65x     0.00
                           boost_spsc            3     360     360     360      360      1.80x     1.80x     0.00
                           atomic_queue          3     300     300     300      300      1.50x     1.50x     0.00
  ringbus / best peer, thread 64 B [near, RTT/2 60 ns]: p50 0.83x (boost_spsc), p99 0.83x (boost_spsc)
  ringbus / best peer, thread 64 B [far, RTT/2 230 ns]: p50 1.10x (atomic_queue), p99 1.10x (atomic_queue)

throughput, M events/s (median of runs; ringbus ring 1 MiB, peers 4096 messages)
                                          1 producer        2 producers   RTT/2 ns
                                          plain  batch32    plain  batch32   (probed)
  tput64   ringbus                           30.0     60.0     25.0     40.0         55
           boost_spsc                        16.0        -        -        -         60
  ringbus / best peer, tput64: plain 1.88x, batch32 3.75x (boost_spsc)

throughput by placement, M events/s (median of the runs probed in each; the vCPUs changed placement
during the throughput cases, so the rows above mix near and far runs)
  tput64 near   ringbus                      35.0     70.0     28.0     45.0      55-58
                boost_spsc                   17.0        -        -        -         60
  tput64 far    ringbus                      10.0     20.0        -     15.0        210

hardware counters: none (not probed): no cycles, instructions or cache misses per event

targets
  MISSED thread p50 <= 1.10 x floor p50 [near, RTT/2 60 ns]                                  1.67x
  met    thread p50 <= best peer p50 (boost_spsc) [near, RTT/2 60 ns]                        0.83x
  met    thread p99 <= best peer p99 (boost_spsc) [near, RTT/2 60 ns]                        0.83x (over 1 us: ringbus 0.00%, boost_spsc 0.00%)
  met    (reference) thread median chunk p99 <= best peer (boost_spsc) [near, RTT/2 60 ns]   0.83x (100 against 120 ns)
  MISSED (reference) thread p50 / one-way one-line floor p50 [near, RTT/2 60 ns]             1.25x
  MISSED thread p50 <= 1.10 x floor p50 [far, RTT/2 230 ns]                                  1.65x
  MISSED thread p50 <= best peer p50 (atomic_queue) [far, RTT/2 230 ns]                      1.10x
  MISSED thread p99 <= best peer p99 (atomic_queue) [far, RTT/2 230 ns]                      1.10x (over 1 us: ringbus 0.00%, atomic_queue 0.00%)
  MISSED (reference) thread median chunk p99 <= best peer (atomic_queue) [far, RTT/2 230 ns] 1.10x (330 against 300 ns)
  met    (reference) thread p50 / one-way one-line floor p50 [far, RTT/2 230 ns]             1.10x
  MISSED process p50 within 5% of thread p50 [placements mixed]                              1.09x
  met    10,000-key sequencing p50 <= 1.10 x unkeyed                                         1.10x
  MISSED 64-byte events, 1 producer >= 40 M/s [near, RTT/2 55 ns]                            35.0 M/s (2 of 3 runs)
  MISSED 64-byte events, 1 producer >= 40 M/s [far, RTT/2 210 ns]                            10.0 M/s (1 of 3 runs)

)TABLE");
}

// The JSON of such a run: every percentile in its own field (at the top and per
// placement), a probe that did not run as null, and strings escaped as JSON requires.
TEST(BenchReport, TheJsonKeepsEachFigureInItsFieldAndEscapesStrings) {
  ringbus::bench::Report r = report_that_moved();
  ringbus::bench::LatencyResult& ringbus_thread = r.latency[2];  // ringbus, in the thread scenario
  ASSERT_EQ(ringbus_thread.system, "ringbus");
  std::tie(ringbus_thread.p50, ringbus_thread.p90, ringbus_thread.p99, ringbus_thread.p999, ringbus_thread.p9999,
           ringbus_thread.max) = std::tuple{101.0, 102.0, 103.0, 104.0, 105.0, 106.0};
  ringbus_thread.over_1us_pct = 0.25;
  ringbus_thread.p99_chunk_median = 107.0;
  ringbus::bench::PlacementLatency& near = ringbus_thread.by_placement.at(0);
  std::tie(near.p50, near.p90, near.p99, near.p999, near.p9999, near.max) =
      std::tuple{91.0, 92.0, 93.0, 94.0, 95.0, 96.0};
  near.over_1us_pct = 0.5;
  near.p99_chunk_median = 97.0;
  r.machine.cpu_model = "AMD \"EPYC\" \\ 9004\t(2 vCPUs)\x1b";
  std::string json = json_of(r);
  EXPECT_NE(json.find("\"p50_ns\": 101.0, \"p90_ns\": 102.0, \"p99_ns\": 103.0, \"p999_ns\": 104.0, "
                      "\"p9999_ns\": 105.0, \"max_ns\": 106.0, \"samples\": 4000, \"over_1us_pct\": 0.250, "
                      "\"p99_chunk_median_ns\": 107.0,"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"p50_ns\": 91.0, \"p90_ns\": 92.0, \"p99_ns\": 93.0, \"p999_ns\": 94.0, "
                      "\"p9999_ns\": 95.0, \"max_ns\": 96.0, \"over_1us_pct\": 0.500, \"p99_chunk_median_ns\": 97.0}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"cpu_model\": \"AMD \\\"EPYC\\\" \\\\ 9004\\u0009(2 vCPUs)\\u001b\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"rtt_half_before_tput_ns\": 45.0,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"rtt_half_min_ns\": 45.0, \"rtt_half_max_ns\": 230.0, \"moved\": true"), std::string::npos)
      << json;
  // Per placement, a throughput case's own rate and probes.
  EXPECT_NE(json.find("\"by_placement\": [{\"placement\": \"near\", \"rtt_half_ns\": 58.0, \"measurements\": 2, "
                      "\"events_per_s\": 45000000}, {\"placement\": \"far\", \"rtt_half_ns\": 210.0, "
                      "\"measurements\": 1, \"events_per_s\": 15000000}]"),
            std::string::npos)
      << json;
  r.placement.before_tput_ns = 0;  // no throughput case ran
  r.throughput.clear();
  json = json_of(r);
  EXPECT_NE(json.find("\"rtt_half_before_tput_ns\": null,"), std::string::npos) << json;
  r.elapsed = {12.5, 15.3, 28.125};
  json = json_of(r);
  EXPECT_NE(json.find("\n  \"elapsed\": {\"latency_s\": 12.500, \"throughput_s\": 15.300, \"total_s\": 28.125},\n"),
            std::string::npos)
      << json;
}

// A report that cannot be written in full (here a full disk) throws, naming the file and
// why: the data is written out when the file is closed, after the last `<<` succeeded.
TEST(BenchReport, AJsonFileThatCannotBeWrittenInFullIsAnError) {
  try {
    ringbus::bench::write_json(report_that_moved(), "/dev/full");
    FAIL() << "writing to /dev/full succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "cannot write /dev/full: No space left on device");
  }
}

// The table's header says how long the run and each part took, when it was timed (a
// report put together by hand, as in these tests, was not).
TEST(BenchReport, TheTableSaysHowLongTheRunTook) {
  ringbus::bench::Report r = report_with_floors(230, 241, 2 * 235, 226);
  EXPECT_EQ(table_of(r).find("time:"), std::string::npos) << table_of(r);
  r.elapsed = {12.5, 15.3, 28.125};
  const std::string table = table_of(r);
  EXPECT_NE(table.find("far apart, 70 = near)\ntime: 28.1 s (latency scenarios 12.5 s, throughput cases 15.3 s)\n"),
            std::string::npos)
      << table;
}

// ringbus's one-producer rates are rated against the fastest peer queue of each
// scenario, whichever it is, never against a reference or another ringbus row; a
// scenario without a peer, or without a plain ringbus row, has no line.
TEST(BenchReport, ThroughputIsRatedAgainstTheFastestPeerOfEachScenario) {
  ringbus::bench::Report r = report_with_floors(230, 241, 2 * 235, 226);  // ringbus tput64 plain: 15 M/s
  r.throughput.push_back({"ringbus", "tput64", 64, 1, 32, 45e6, 226});
  r.throughput.push_back({"ringbus_trailing", "tput64", 64, 1, 1, 90e6, 226});
  r.throughput.push_back({"stream", "tput64", 64, 1, 1, 80e6, 226});
  r.throughput.push_back({"boost_spsc", "tput64", 64, 1, 1, 20e6, 226});
  r.throughput.push_back({"moodycamel_rwq", "tput64", 64, 1, 1, 30e6, 226});
  r.throughput.push_back({"atomic_queue", "tput64", 64, 1, 1, 6e6, 226});
  r.throughput.push_back({"ringbus", "tput8", 8, 1, 1, 12e6, 226});  // plain only
  r.throughput.push_back({"boost_spsc", "tput8", 8, 1, 1, 48e6, 226});
  r.throughput.push_back({"ringbus", "tput512", 512, 1, 1, 9e6, 226});  // no peer
  r.throughput.push_back({"boost_spsc", "tput512", 512, 1, 32, 5e6, 226});  // not a peer's row: none is batched
  r.throughput.push_back({"moodycamel_rwq", "tput512", 512, 1, 1, 0, 226});  // no rate
  const std::string table = table_of(r);
  EXPECT_NE(table.find("\n  ringbus / best peer, tput8: plain 0.25x (boost_spsc)\n"), std::string::npos) << table;
  EXPECT_NE(table.find("\n  ringbus / best peer, tput64: plain 0.50x, batch32 1.50x (moodycamel_rwq)\n"),
            std::string::npos)
      << table;
  EXPECT_EQ(table.find("best peer, tput512"), std::string::npos) << table;
}

// Where the machine has hardware counters the table shows them per event for the
// one-producer cases, and where it has none it says why; the JSON keeps each in its field.
TEST(BenchReport, CountsPerEventAreShownWhereTheMachineHasCountersAndWhyNotWhereNot) {
  ringbus::bench::Report r = report_with_floors(230, 241, 2 * 235, 226);
  r.throughput.push_back({"ringbus", "tput64", 64, 1, 32, 50e6, 226});
  r.throughput.push_back({"ringbus", "tput64", 64, 2, 1, 20e6, 226});
  r.throughput.push_back({"boost_spsc", "tput64", 64, 1, 1, 20e6, 226});
  r.machine.hardware_counters_why = "cycles: perf_event_open: No such file or directory";
  std::string table = table_of(r);
  EXPECT_NE(table.find("\nhardware counters: none (cycles: perf_event_open: No such file or directory): no cycles, "
                       "instructions or cache misses per event\n"),
            std::string::npos)
      << table;
  std::string json = json_of(r);
  EXPECT_NE(json.find("\"hardware_counters\": false, \"hardware_counters_why\": \"cycles: perf_event_open: No such "
                      "file or directory\"}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"per_event\": null}"), std::string::npos) << json;
  EXPECT_EQ(json.find("\"per_event\": {"), std::string::npos) << json;

  r.machine.hardware_counters_why = "";
  r.throughput[0].counted = true;
  r.throughput[0].producer = {120.5, 200.25, 1.5};
  r.throughput[0].consumer = {80, 150, 0.75};
  r.throughput[1].counted = true;
  r.throughput[1].producer = {20, 30, 0.125};
  r.throughput[1].consumer = {10, 12, 0.0625};
  r.throughput[2].counted = true;  // two producers: in the JSON only
  r.throughput[2].producer = {7, 8, 9};
  table = table_of(r);
  EXPECT_EQ(table.find("hardware counters: none"), std::string::npos) << table;
  EXPECT_NE(table.find("per event, 1 producer (producer / consumer threads, over every run)\n"
                       "                                        cycles          instructions     cache misses\n"
                       "  tput64   ringbus            plain      120.5 /  80.0    200.2 / 150.0    1.50 / 0.75\n"
                       "           ringbus            batch32     20.0 /  10.0     30.0 /  12.0    0.12 / 0.06\n"
                       "           boost_spsc         plain    not counted (a thread could not open its counters)\n"),
            std::string::npos)
      << table;
  json = json_of(r);
  EXPECT_NE(json.find("\"hardware_counters\": true, \"hardware_counters_why\": \"\"}"), std::string::npos) << json;
  EXPECT_NE(json.find("\"per_event\": {\"producer\": {\"cycles\": 120.50, \"instructions\": 200.25, "
                      "\"cache_misses\": 1.5000}, \"consumer\": {\"cycles\": 80.00, \"instructions\": 150.00, "
                      "\"cache_misses\": 0.7500}}}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"producers\": 2, \"batch\": 1, \"events_per_s\": 20000000, \"rtt_half_ns\": 226.0, \"moved\": "
                      "false, \"by_placement\": [], \"per_event\": {\"producer\": {\"cycles\": 7.00,"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"system\": \"boost_spsc\", \"scenario\": \"tput64\", \"event_bytes\": 64, \"producers\": 1, "
                      "\"batch\": 1, \"events_per_s\": 20000000, \"rtt_half_ns\": 226.0, \"moved\": false, "
                      "\"by_placement\": [], \"per_event\": null}"),
            std::string::npos)
      << json;
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

// The trailing reader and the exclusive producer each have their own rows (one producer
// only, for the exclusive one) and their own targets, judged apart from the default's.
TEST(BenchReport, TheTrailingReaderAndTheExclusiveProducerHaveTheirOwnRowsAndTargets) {
  ringbus::bench::Report r = report_with_floors(60, 60, 120, 60);
  r.throughput.clear();
  for (const char* system : {"ringbus", "ringbus_trailing"}) {
    const bool trailing = std::string(system) == "ringbus_trailing";
    r.throughput.push_back({system, "tput64", 64, 1, 1, trailing ? 55e6 : 22e6, 60});
    r.throughput.push_back({system, "tput64", 64, 1, 32, trailing ? 80e6 : 50e6, 60});
    r.throughput.push_back({system, "tput8", 8, 1, 32, trailing ? 125e6 : 110e6, 60});
  }
  r.throughput.push_back({"ringbus_exclusive", "tput64", 64, 1, 1, 39e6, 60});
  r.throughput.push_back({"ringbus_exclusive", "tput64", 64, 1, 32, 90e6, 60});
  r.throughput.push_back({"ringbus_exclusive", "tput8", 8, 1, 32, 121e6, 60});
  const std::string table = table_of(r);
  EXPECT_NE(table.find("tput64   ringbus                           22.0     50.0"), std::string::npos) << table;
  EXPECT_NE(table.find("         ringbus_trailing                  55.0     80.0"), std::string::npos) << table;
  EXPECT_NE(table.find("         ringbus_exclusive                 39.0     90.0        -        -"), std::string::npos)
      << table;
  EXPECT_NE(table.find("MISSED 64-byte events, 1 exclusive producer >= 40 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("met    8-byte events, 1 exclusive producer, batched >= 120 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("MISSED 64-byte events, 1 producer >= 40 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("met    64-byte events, 1 producer, trailing reader >= 40 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("MISSED 8-byte events, 1 producer, batched >= 120 M/s "), std::string::npos) << table;
  EXPECT_NE(table.find("met    8-byte events, 1 producer, batched, trailing reader >= 120 M/s "), std::string::npos)
      << table;
  const std::string json = json_of(r);
  EXPECT_NE(json.find("{\"system\": \"ringbus_trailing\", \"scenario\": \"tput64\""), std::string::npos) << json;
}

// An unbatched throughput target names its scenario's one-record-at-a-time references
// (`stream`, `stream_claim`), in the placement it is judged in; a batched one does not,
// since they bound no batched claim.
TEST(BenchReport, AnUnbatchedThroughputTargetNamesItsScenariosStreamReferences) {
  ringbus::bench::Report r = report_with_floors(60, 60, 120, 60);
  r.throughput.clear();
  r.throughput.push_back({"ringbus", "tput64", 64, 1, 1, 22e6, 60});
  r.throughput.push_back({"ringbus", "tput8", 8, 1, 32, 110e6, 60});
  r.throughput.push_back({"stream", "tput64", 64, 1, 1, 45e6, 60});
  r.throughput.push_back({"stream_claim", "tput64", 64, 1, 1, 12e6, 60});
  r.throughput.push_back({"stream", "tput8", 8, 1, 1, 60e6, 60});
  r.throughput.push_back({"stream_claim", "tput8", 8, 1, 1, 11e6, 60});
  const std::string table = table_of(r);
  EXPECT_NE(table.find("         stream                            45.0        -        -        -         60"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("         stream_claim                      12.0        -"), std::string::npos) << table;
  EXPECT_NE(table.find("MISSED 64-byte events, 1 producer >= 40 M/s"), std::string::npos) << table;
  EXPECT_NE(table.find("22.0 M/s (RTT/2 60 ns; one record at a time: stream 45.0, stream_claim 12.0 M/s)\n"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("110.0 M/s (RTT/2 60 ns)\n"), std::string::npos) << table;
  EXPECT_EQ(table.find("stream 60.0"), std::string::npos) << table;
  const std::string json = json_of(r);
  EXPECT_NE(json.find("{\"system\": \"stream_claim\", \"scenario\": \"tput64\", \"event_bytes\": 64"),
            std::string::npos)
      << json;

  // Measured in both placements: each judgement names the references measured in its
  // own placement, and leaves out one not measured there.
  r.options.runs = 3;
  r.throughput.clear();
  auto rate = [&](const char* system, double mixed, std::vector<ringbus::bench::PlacementRate> at) {
    ringbus::bench::ThroughputResult t{system, "tput64", 64, 1, 1, mixed, 60};
    t.moved = true;
    t.by_placement = std::move(at);
    r.throughput.push_back(t);
  };
  rate("ringbus", 30e6, {{"near", 60, 2, 31e6}, {"far", 210, 1, 14e6}});
  rate("stream", 40e6, {{"near", 60, 2, 46e6}, {"far", 210, 1, 28e6}});
  rate("stream_claim", 13e6, {{"near", 60, 3, 13e6}});
  const std::string moved = table_of(r);
  EXPECT_NE(moved.find("31.0 M/s (2 of 3 runs; one record at a time: stream 46.0, stream_claim 13.0 M/s)\n"),
            std::string::npos)
      << moved;
  EXPECT_NE(moved.find("14.0 M/s (1 of 3 runs; one record at a time: stream 28.0 M/s)\n"), std::string::npos)
      << moved;
}

TEST(BenchSummary, TheMedianIsTheMiddleValueOrTheMeanOfTheMiddleTwo) {
  EXPECT_EQ(ringbus::bench::median({}), 0.0);
  EXPECT_EQ(ringbus::bench::median({7}), 7.0);
  EXPECT_EQ(ringbus::bench::median({3, 1, 2}), 2.0);
  EXPECT_EQ(ringbus::bench::median({4, 1, 3, 2}), 2.5);
}

// A histogram holding `n` samples of `ticks` each.
Histogram filled(std::uint64_t ticks, int n) {
  Histogram h;
  for (int i = 0; i < n; ++i) h.record(ticks);
  return h;
}

// Figures are in ns whatever the clock's tick; the share over 1 us counts the samples
// above 1,000 ns (here 500 ticks of 2 ns).
TEST(BenchSummary, StatsAreInNanosecondsWithTheShareOfSamplesOverOneMicrosecond) {
  Histogram h = filled(50, 2);  // 100 ns
  h.record(750);                // 1,500 ns
  h.record(2500);               // 5,000 ns
  const ringbus::bench::LatencyStats st = ringbus::bench::stats_of(h, 2.0);
  EXPECT_EQ(st.p50, 100.0);
  EXPECT_NEAR(st.max, 5000.0, 5000.0 / Histogram::kSub);
  EXPECT_EQ(st.over_1us_pct, 50.0);
  EXPECT_EQ(ringbus::bench::stats_of(Histogram{}, 2.0).over_1us_pct, 0.0);
}

// Each figure of a result is the median over the runs; its spectrum (the plot's line)
// is that of the run whose p50 is the median, not of a run at either end.
TEST(BenchSummary, EachFigureIsTheMedianOverRunsAndTheSpectrumThatOfTheMedianRun) {
  std::vector<Histogram> runs{filled(100, 10), filled(120, 10), filled(110, 10)};
  runs[2].record(1000);  // that run's max and its share over 1 us
  const ringbus::bench::LatencyResult res = ringbus::bench::summarize_runs(runs, 1.0);
  EXPECT_EQ(res.p50, 110.0);
  EXPECT_EQ(res.p99, 120.0);  // the median of 100, 120 and 1,000 (the third run's 11th sample)
  EXPECT_EQ(res.samples, 10u);
  ASSERT_FALSE(res.spectrum.empty());
  EXPECT_EQ(res.spectrum.front().second, 110.0);
  EXPECT_NEAR(res.spectrum.back().second, 1000.0, 1000.0 / Histogram::kSub);  // the median run's max
}

// Chunks pooled by placement: each system's chunks in it (the number kept per system),
// the placement's RTT/2 the median of the probes before and after them, a chunk whose
// probes disagree in neither; a placement in which a system ran no chunk is left out.
TEST(BenchSummary, LatencyChunksArePooledByThePlacementProbedAroundThem) {
  auto chunk = [](std::size_t system, std::uint64_t ticks) {
    return ringbus::bench::ChunkRecord{system, std::make_unique<Histogram>(filled(ticks, 4))};
  };
  std::vector<ringbus::bench::ChunkRecord> chunks;
  chunks.push_back(chunk(0, 100));
  chunks.push_back(chunk(1, 120));
  chunks.push_back(chunk(0, 300));
  chunks.push_back(chunk(1, 330));
  chunks.push_back(chunk(1, 340));
  chunks.push_back(chunk(0, 999));
  const std::vector<ringbus::bench::ChunkProbes> probes{{55, 60}, {60, 58}, {205, 210}, {210, 200}, {200, 206}, {206, 57}};
  std::vector<ringbus::bench::LatencyResult> results(2);
  ringbus::bench::add_placements(results, chunks, probes, 1.0);
  for (const ringbus::bench::LatencyResult& l : results) {
    EXPECT_TRUE(l.moved);
    ASSERT_EQ(l.by_placement.size(), 2u);
    EXPECT_EQ(l.by_placement[0].placement, "near");
    EXPECT_EQ(l.by_placement[0].rtt_half_ns, 59.0);  // 55, 58, 60, 60
    EXPECT_EQ(l.by_placement[1].placement, "far");
    EXPECT_EQ(l.by_placement[1].rtt_half_ns, 205.5);  // 200, 200, 205, 206, 210, 210
  }
  EXPECT_EQ(results[0].by_placement[0].p50, 100.0);
  EXPECT_EQ(results[1].by_placement[0].p50, 120.0);
  EXPECT_EQ(results[0].by_placement[1].chunks, 1u);
  EXPECT_EQ(results[0].by_placement[1].max, 300.0);  // not the mixed chunk's 999
  EXPECT_EQ(results[1].by_placement[1].chunks, 2u);
  EXPECT_EQ(results[1].by_placement[1].samples, 8u);
  EXPECT_NEAR(results[1].by_placement[1].max, 340.0, 340.0 / Histogram::kSub);

  // System 1 never ran near: near is left out for both.
  chunks.erase(chunks.begin() + 1);
  std::vector<ringbus::bench::ChunkProbes> fewer = probes;
  fewer.erase(fewer.begin() + 1);
  std::vector<ringbus::bench::LatencyResult> partial(2);
  ringbus::bench::add_placements(partial, chunks, fewer, 1.0);
  for (const ringbus::bench::LatencyResult& l : partial) {
    ASSERT_EQ(l.by_placement.size(), 1u);
    EXPECT_EQ(l.by_placement[0].placement, "far");
  }
}

// Each system's median chunk p99: every chunk's own p99, then the median over its chunks,
// in all and within each placement. A chunk whose top 4% queued behind a stall sets the
// pooled p99 but is one chunk of several here; a chunk whose probes disagree counts only
// in the figure over all chunks.
TEST(BenchSummary, TheMedianChunkP99SetsABurstOfStallsApart) {
  auto chunk = [](std::uint64_t ticks, int stalled) {
    auto h = std::make_unique<Histogram>(filled(ticks, 100 - stalled));
    for (int i = 0; i < stalled; ++i) h->record(20'000);
    return ringbus::bench::ChunkRecord{0, std::move(h)};
  };
  std::vector<ringbus::bench::ChunkRecord> chunks;
  chunks.push_back(chunk(100, 0));
  chunks.push_back(chunk(100, 4));  // stalled: its p99 is the stall's
  chunks.push_back(chunk(110, 0));
  chunks.push_back(chunk(300, 0));
  chunks.push_back(chunk(900, 0));  // moved while it ran
  const std::vector<ringbus::bench::ChunkProbes> probes{{55, 60}, {60, 58}, {58, 57}, {205, 210}, {210, 57}};
  std::vector<ringbus::bench::LatencyResult> results(1);
  ringbus::bench::add_placements(results, chunks, probes, 2.0);  // in ns: twice the ticks
  EXPECT_EQ(results[0].p99_chunk_median, 600.0);                 // of 200, 220, 600, 1,800 and the stall
  ASSERT_EQ(results[0].by_placement.size(), 2u);
  EXPECT_EQ(results[0].by_placement[0].p99_chunk_median, 220.0);  // near: 200, 220 and the stall
  EXPECT_NEAR(results[0].by_placement[0].p99, 40'000.0, 40'000.0 / Histogram::kSub);  // pooled: the stall's
  EXPECT_EQ(results[0].by_placement[1].p99_chunk_median, 600.0);  // far: the one chunk

  // Without placements (every probe alike), over all the chunks.
  std::vector<ringbus::bench::LatencyResult> still(1);
  ringbus::bench::add_placements(still, chunks, std::vector<ringbus::bench::ChunkProbes>(5, {60, 60}), 2.0);
  EXPECT_TRUE(still[0].by_placement.empty());
  EXPECT_EQ(still[0].p99_chunk_median, 600.0);
}

// A throughput case's rate is the median of its measurements, with the probes before
// them; by placement, the median of its measurements in each, with the probes before
// and after those; measurements whose probes disagree count only in the overall median.
TEST(BenchSummary, RatesAreSortedByThePlacementProbedAroundThem) {
  const std::vector<std::pair<std::size_t, double>> measured{{0, 10e6}, {1, 7e6}, {0, 4e6}, {1, 9e6}, {0, 12e6}};
  const std::vector<ringbus::bench::ChunkProbes> around{{55, 58}, {58, 205}, {205, 210}, {210, 56}, {56, 61}};
  std::vector<ringbus::bench::ThroughputResult> cases(2);
  ringbus::bench::add_rates(cases, measured, around);
  const ringbus::bench::ThroughputResult& t = cases[0];
  EXPECT_EQ(t.events_per_s, 10e6);
  EXPECT_EQ(t.rtt_half_ns, 56.0);  // 55, 205, 56
  EXPECT_TRUE(t.moved);
  ASSERT_EQ(t.by_placement.size(), 2u);
  EXPECT_EQ(t.by_placement[0].placement, "near");
  EXPECT_EQ(t.by_placement[0].rtt_half_ns, 57.0);  // 55, 56, 58, 61
  EXPECT_EQ(t.by_placement[0].measurements, 2u);
  EXPECT_EQ(t.by_placement[0].events_per_s, 11e6);
  EXPECT_EQ(t.by_placement[1].placement, "far");
  EXPECT_EQ(t.by_placement[1].rtt_half_ns, 207.5);
  EXPECT_EQ(t.by_placement[1].events_per_s, 4e6);
  const ringbus::bench::ThroughputResult& mixed = cases[1];
  EXPECT_EQ(mixed.events_per_s, 8e6);
  EXPECT_TRUE(mixed.moved);
  EXPECT_TRUE(mixed.by_placement.empty());
}

// The latency scenarios publish through publish_copy: a claim refused for any reason but
// a full ring ends the process naming the reason, where retrying it would spin forever.
TEST(BenchPublish, AClaimRefusedForGoodEndsTheProcessNamingWhy) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the test support's watchdog is a thread
  ringbus::test::TempSegment seg({.capacity = 64 * 1024, .max_event = 64});
  // The death test's child runs this test again up to the statement and exits there,
  // past every destructor: the segment's name goes now, so neither process leaves it.
  ringbus::Segment::remove(seg.location());
  ringbus::Producer p = ringbus::Producer::attach(seg.segment());
  std::array<std::byte, 128> big{};
  // The watchdog does not run in a death test's child: the alarm bounds it instead (a
  // publish_copy that retried the refusal would spin until then, and fail the test).
  EXPECT_EXIT(
      {
        ::alarm(30);
        ringbus::bench::publish_copy(p, 0, big);
      },
      ::testing::ExitedWithCode(1), "claim of 128 bytes was refused \\(too_large\\)");
  std::array<std::byte, 64> fits{};
  fits[0] = std::byte{7};
  ringbus::bench::publish_copy(p, 3, fits);
  const ringbus::SegmentStats stats = ringbus::read_stats(seg.segment());
  EXPECT_EQ(stats.published, 1u);
}

}  // namespace
