// The benchmark's own machinery: the latency histogram, the sender's pacing and the
// checks of a run's options.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "ringbus/clock.hpp"
#include "ringbus/layout.hpp"
#include "ringbus_bench/bench.hpp"
#include "ringbus_bench/histogram.hpp"
#include "ringbus_bench/pacer.hpp"

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

}  // namespace
