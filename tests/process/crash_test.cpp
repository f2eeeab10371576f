// A producer process killed at each point of the claim/commit protocol (through the
// fault hook of ringbus::core_faults). Consumers must get past what it left behind,
// every committed event must arrive, and key_seq must stay contiguous once void
// records are counted.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "process_support.hpp"
#include "ringbus/consumer.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/detail/fault.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/robust_lock.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/tail_reader.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using detail::FaultPoint;
using test::reap;
using test::SharedBlock;
using test::spawn_child;

FaultPoint g_point = FaultPoint::count_;
int g_hits_left = 1;  // the hit of g_point that kills (before_frame is reached once a record)
void kill_at_point(FaultPoint p) noexcept {
  if (p == g_point && --g_hits_left == 0) ::raise(SIGKILL);
}

const char* point_name(FaultPoint p) {
  switch (p) {
    case FaultPoint::after_latch: return "after_latch";
    case FaultPoint::after_tail_cas: return "after_tail_cas";
    case FaultPoint::after_journal: return "after_journal";
    case FaultPoint::after_unlatch: return "after_unlatch";
    case FaultPoint::before_frame: return "before_frame";
    case FaultPoint::after_commit: return "after_commit";
    default: return "other";
  }
}

struct Case {
  FaultPoint point;
  bool keyed;
  bool wrap;       // the fatal claim crosses the end of the ring (padding + record)
  bool exclusive;  // the dead producer was attached exclusively (its claims store the tail)
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(point_name(info.param.point)) + (info.param.keyed ? "_keyed" : "_unkeyed") +
         (info.param.wrap ? "_wrapping" : "") + (info.param.exclusive ? "_exclusive" : "");
}

struct ChildReport {
  std::atomic<std::uint64_t> published{0};
};

constexpr std::uint32_t kPayload = 200;
constexpr std::uint64_t kFatal = 999'999;

std::uint64_t key_of_case(bool keyed) { return keyed ? 42 : 0; }

Status publish_n(Producer& p, std::uint64_t key, std::uint64_t n) {
  char buf[kPayload] = {};
  std::memcpy(buf, &n, 8);
  return p.publish(key, 1, std::as_bytes(std::span(buf)));
}

// Child: "crash-producer LOCATION KEYED WRAP POINT REPORT_FD EXCLUSIVE". Publishes 10
// events (and, with WRAP, up to the end of the ring), then one more with the fault hook
// armed at POINT.
const test::ChildRole crash_producer("crash-producer", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  const bool keyed = a.at(1) == "1";
  const bool wrap = a.at(2) == "1";
  SharedBlock<ChildReport> report(std::stoi(a.at(4)));
  Producer p = Producer::attach(s, {.exclusive = a.at(5) == "1"});
  const std::uint64_t key = key_of_case(keyed);
  std::uint64_t n = 0;
  for (; n < 10; ++n) publish_n(p, key, n);
  if (wrap) {
    const auto& r = s.refs();
    while ((s.was_tail() & r.mask) + record_bytes(kPayload) <= r.capacity) publish_n(p, key, n++);
  }
  report->published.store(n);
  g_point = static_cast<FaultPoint>(std::stoi(a.at(3)));
  detail::fault_hook = kill_at_point;
  publish_n(p, key, kFatal);
  return 9;  // the fault point was never reached
});

// Runs a crash-producer until it dies at `point`, and reaps it: its exit status.
int run_crash_producer(const test::TempSegment& seg, const Case& c, const SharedBlock<ChildReport>& report) {
  return reap(spawn_child("crash-producer",
                          {seg.location().name, c.keyed ? "1" : "0", c.wrap ? "1" : "0",
                           std::to_string(static_cast<int>(c.point)), report.fd_arg(), c.exclusive ? "1" : "0"}));
}

class ProducerDeath : public ::testing::TestWithParam<Case> {};

TEST_P(ProducerDeath, ConsumersPassWhatItLeftAndKeySeqStaysContiguous) {
  const Case c = GetParam();
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024, .key_slots = 64}, "crash");
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", {.unblock_after = std::chrono::milliseconds(100)});
  struct Seen {
    std::uint64_t n, key_seq;
  };
  std::vector<Seen> seen;
  std::atomic<std::uint64_t> delivered{0};
  g.start([&](const Event& e) {
    std::uint64_t n = 0;
    std::memcpy(&n, e.payload().data(), 8);
    seen.push_back({n, e.key_seq()});
    delivered.fetch_add(1);
  });

  const std::uint64_t key = key_of_case(c.keyed);
  SharedBlock<ChildReport> report;
  ASSERT_EQ(run_crash_producer(seg, c, report), 128 + SIGKILL)
      << "the producer did not die at " << point_name(c.point);
  const std::uint64_t before = report->published.load();

  // A dead exclusive producer holds nothing: another producer attaches at once.
  Producer p2 = Producer::attach(seg.segment());
  EXPECT_EQ(seg.segment().refs().control->exclusive.load(), 0u);
  for (std::uint64_t n = 0; n < 10; ++n) ASSERT_EQ(publish_n(p2, key, 1'000'000 + n), Status::ok);
  const bool fatal_committed = c.point == FaultPoint::after_commit;
  const std::uint64_t expected = before + 10 + (fatal_committed ? 1 : 0);
  ASSERT_TRUE(test::eventually([&] { return delivered.load() >= expected; }, std::chrono::seconds(30)))
      << "delivered " << delivered.load() << " of " << expected << ": the dead claim stalled the group";
  // Then nothing more may arrive, and the worker must be at the tail.
  ASSERT_TRUE(test::eventually([&] {
    const SegmentStats s = read_stats(seg.segment());
    return s.groups.at(0).cursor == s.tail;
  }));
  g.stop();

  ASSERT_EQ(seen.size(), expected);
  std::uint64_t i = 0;
  for (; i < before; ++i) EXPECT_EQ(seen[i].n, i);
  if (fatal_committed) EXPECT_EQ(seen[i++].n, kFatal);
  for (std::uint64_t n = 0; n < 10; ++n, ++i) EXPECT_EQ(seen[i].n, 1'000'000 + n);

  const SegmentStats stats = read_stats(seg.segment());
  const std::uint64_t voids = stats.groups.at(0).worker.at(0).voids;
  // A void record exists exactly when the dead claim's key_seq had been published
  // (latch released) but its record was not committed.
  const bool seq_published_uncommitted =
      c.keyed && (c.point == FaultPoint::after_unlatch || c.point == FaultPoint::before_frame);
  EXPECT_EQ(voids, seq_published_uncommitted ? 1u : 0u);
  if (c.keyed) {
    std::uint64_t last = 0;
    for (const Seen& s : seen) {
      EXPECT_GT(s.key_seq, last);
      last = s.key_seq;
    }
    EXPECT_EQ(last, seg.segment().was_last_key_seq(key));
    EXPECT_EQ(last, seen.size() + voids) << "key_seq 1..last is delivered or void";
  }
  if (!fatal_committed) {
    EXPECT_EQ(stats.producers_recovered, 1u);
    EXPECT_EQ(stats.holes_padded + stats.records_voided + stats.latches_released > 0, true);
  }
  // The stall the dead claim caused is bounded by unblock_after plus the ~1 ms stall
  // check; the margin absorbs a descheduled vCPU, not a missing recovery.
  EXPECT_LT(stats.longest_stall_ns, 2'000'000'000ull);
  std::printf("%s: delivered %zu, voids %llu, padded %llu, latches released %llu, longest stall %.1f ms\n",
              case_name({c, 0}).c_str(), seen.size(), static_cast<unsigned long long>(voids),
              static_cast<unsigned long long>(stats.holes_padded),
              static_cast<unsigned long long>(stats.latches_released), stats.longest_stall_ns / 1e6);
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (FaultPoint p : {FaultPoint::after_latch, FaultPoint::after_tail_cas, FaultPoint::after_journal,
                       FaultPoint::after_unlatch, FaultPoint::before_frame, FaultPoint::after_commit}) {
    for (bool keyed : {true, false}) {
      if (!keyed && p == FaultPoint::after_latch) continue;  // unkeyed claims take no latch
      for (bool wrap : {false, true}) {
        out.push_back({p, keyed, wrap, false});
        if (!wrap || p == FaultPoint::after_tail_cas) out.push_back({p, keyed, wrap, true});
      }
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(EveryPoint, ProducerDeath, ::testing::ValuesIn(all_cases()), case_name);

// A producer killed in the middle of a keyed batch claim. The records it did not commit
// become void records, each with its own key_seq and producer_seq, so key_seq stays
// gap-free and each (producer id, producer_seq) names one record; the producer id,
// attached again, continues after them.
struct BatchCase {
  FaultPoint point;
  int hit;  // the hit of the point that kills (before_frame is reached once a record)
};

struct BatchReport {
  std::atomic<std::uint32_t> producer_id{0};
  std::atomic<std::uint64_t> next_seq{0};
};

constexpr std::uint32_t kBatch = 3;

// Child: "crash-batch-producer LOCATION POINT HIT REPORT_FD". As producer id 77,
// publishes 10 events of key 42, then claims a batch of kBatch and commits it with the
// fault hook armed.
const test::ChildRole crash_batch_producer("crash-batch-producer", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  SharedBlock<BatchReport> report(std::stoi(a.at(3)));
  Producer p = Producer::attach(s, {.producer_id = 77});
  for (std::uint64_t n = 0; n < 10; ++n) publish_n(p, 42, n);
  report->producer_id.store(p.id());
  report->next_seq.store(p.next_seq());
  g_point = static_cast<FaultPoint>(std::stoi(a.at(1)));
  g_hits_left = std::stoi(a.at(2));
  detail::fault_hook = kill_at_point;
  Claim c;
  if (p.try_claim_batch(42, 1, kPayload, kBatch, c) != Status::ok) return 8;
  for (std::uint32_t i = 0; i < kBatch; ++i) {
    const std::uint64_t n = kFatal + i;
    std::memcpy(c.payload(i).data(), &n, 8);
  }
  c.commit();
  return 9;  // the fault point was never reached
});

class ProducerDeathInABatch : public ::testing::TestWithParam<BatchCase> {};

TEST_P(ProducerDeathInABatch, EachLostRecordKeepsItsOwnKeySeqAndProducerSeq) {
  const BatchCase c = GetParam();
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024, .key_slots = 64}, "crash");
  ConsumerGroup g =
      ConsumerGroup::join(seg.segment(), "g", {.deliver_voids = true, .unblock_after = std::chrono::milliseconds(100)});
  struct Seen {
    std::uint64_t n, key_seq, producer_seq;
    std::uint32_t producer_id;
    bool is_void;
  };
  std::vector<Seen> seen;
  std::atomic<std::uint64_t> delivered{0};
  g.start([&](const Event& e) {
    std::uint64_t n = 0;
    if (!e.is_void()) std::memcpy(&n, e.payload().data(), 8);
    seen.push_back({n, e.key_seq(), e.producer_seq(), e.producer_id(), e.is_void()});
    delivered.fetch_add(1);
  });
  SharedBlock<BatchReport> report;
  ASSERT_EQ(reap(spawn_child("crash-batch-producer", {seg.location().name, std::to_string(static_cast<int>(c.point)),
                                                      std::to_string(c.hit), report.fd_arg()})),
            128 + SIGKILL)
      << "the producer did not die at " << point_name(c.point);
  const std::uint32_t dead_id = report->producer_id.load();
  const std::uint64_t first_lost_seq = report->next_seq.load();

  // The dead producer's id, attached again, continues after the batch it claimed.
  Producer again = Producer::attach(seg.segment(), {.producer_id = dead_id});
  EXPECT_EQ(again.next_seq(), first_lost_seq + kBatch) << "a producer_seq of the dead batch would be used twice";
  ASSERT_EQ(publish_n(again, 42, 1'000'000), Status::ok);
  const std::uint64_t expected = 10 + kBatch + 1;
  ASSERT_TRUE(test::eventually([&] { return delivered.load() >= expected; }, std::chrono::seconds(30)))
      << "delivered " << delivered.load() << " of " << expected;
  g.stop();

  ASSERT_EQ(seen.size(), expected);
  const std::uint64_t committed = static_cast<std::uint64_t>(c.hit - 1);  // frames stored before the kill
  for (std::uint64_t i = 0; i < seen.size(); ++i) {
    const Seen& s = seen[i];
    EXPECT_EQ(s.key_seq, i + 1) << "record " << i << ": key_seq is 1, 2, 3... in log order";
    EXPECT_EQ(s.producer_id, dead_id) << "record " << i;
    EXPECT_EQ(s.producer_seq, first_lost_seq - 10 + i) << "record " << i << ": producer_seq is gap-free and unique";
    const bool lost = i >= 10 + committed && i < 10 + kBatch;
    EXPECT_EQ(s.is_void, lost) << "record " << i;
    if (!lost) EXPECT_EQ(s.n, i < 10 ? i : i < 10 + kBatch ? kFatal + (i - 10) : 1'000'000) << "record " << i;
  }
  const SegmentStats stats = read_stats(seg.segment());
  EXPECT_EQ(stats.producers_recovered, 1u);
  EXPECT_EQ(stats.records_voided, kBatch - committed);
}

INSTANTIATE_TEST_SUITE_P(Batch, ProducerDeathInABatch,
                         ::testing::Values(BatchCase{FaultPoint::after_unlatch, 1}, BatchCase{FaultPoint::before_frame, 1},
                                           BatchCase{FaultPoint::before_frame, 2}),
                         [](const ::testing::TestParamInfo<BatchCase>& info) {
                           return std::string(point_name(info.param.point)) + "_record_" +
                                  std::to_string(info.param.hit);
                         });

// A segment whose every producer slot is held: a new producer may take the slot of a
// dead one, and repairs what it left in the log (here a hole) before reusing it.
TEST(ProducerDeathWithAFullTable, AttachRepairsADeadProducersSlotAndTakesIt) {
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024, .max_producers = 1, .key_slots = 64}, "crash");
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g");
  std::atomic<std::uint64_t> delivered{0};
  g.start([&](const Event&) { delivered.fetch_add(1); });
  SharedBlock<ChildReport> report;
  ASSERT_EQ(run_crash_producer(seg, {FaultPoint::before_frame, false, false, false}, report), 128 + SIGKILL);
  {
    const SegmentStats s = read_stats(seg.segment());
    ASSERT_EQ(s.producers.size(), 1u);
    EXPECT_FALSE(s.producers[0].alive);
    EXPECT_EQ(s.producers_recovered, 0u);
  }
  Producer p = Producer::attach(seg.segment());
  const SegmentStats s = read_stats(seg.segment());
  ASSERT_EQ(s.producers.size(), 1u);
  EXPECT_EQ(s.producers[0].pid, detail::self_process().pid);
  EXPECT_EQ(s.producers[0].state, "active");
  EXPECT_EQ(s.producers_recovered, 1u);
  EXPECT_EQ(s.holes_padded, 1u);
  for (std::uint64_t n = 0; n < 10; ++n) ASSERT_EQ(publish_n(p, 0, n), Status::ok);
  const std::uint64_t expected = report->published.load() + 10;
  EXPECT_TRUE(test::eventually([&] { return delivered.load() >= expected; }, std::chrono::seconds(30)))
      << "delivered " << delivered.load() << " of " << expected;
  g.stop();
  EXPECT_EQ(delivered.load(), expected);
}

// With no consumer group, nothing else repairs a dead producer's hole: a TailReader
// (`ringbus tail`) waited at it for ever, and never showed what was published after it.
// It now repairs the claim once it has waited TailReader::kUnblockAfter at it, as a
// stalled worker does; a reader of a segment mapped read-only cannot, and waits, saying
// how long (held_at_claim).
TEST(ProducerDeathBeforeATailReader, TheReaderRepairsTheHoleUnlessItMayOnlyRead) {
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024, .key_slots = 64}, "crash");
  SharedBlock<ChildReport> report;
  ASSERT_EQ(run_crash_producer(seg, {FaultPoint::before_frame, true, false, false}, report), 128 + SIGKILL);
  const std::uint64_t before = report->published.load();
  Producer p2 = Producer::attach(seg.segment());
  for (std::uint64_t n = 0; n < 10; ++n) ASSERT_EQ(publish_n(p2, 42, 1'000'000 + n), Status::ok);

  OpenOptions ro_options;
  ro_options.read_only = true;
  const Segment ro = Segment::open(seg.location(), ro_options);
  TailReader only_reads = TailReader::open(ro, TailStart::earliest);
  std::vector<std::uint64_t> got_ro;
  ASSERT_TRUE(test::eventually(
      [&] {
        test::read_values(only_reads, got_ro);
        const auto held = only_reads.held_at_claim();
        return held && *held >= TailReader::kUnblockAfter + std::chrono::milliseconds(50);
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(got_ro.size(), before) << "the read-only reader passed the hole";
  EXPECT_EQ(read_stats(seg.segment()).producers_recovered, 0u);

  TailReader writer = TailReader::open(seg.segment(), TailStart::earliest);
  std::vector<std::uint64_t> got;
  ASSERT_TRUE(test::eventually(
      [&] {
        test::read_values(writer, got);
        return got.size() >= before + 10;
      },
      std::chrono::seconds(30)))
      << "read " << got.size() << " of " << before + 10 << ": the reader stayed at the hole";
  EXPECT_EQ(writer.voids(), 1u) << "keyed, the latch released: the lost event is a void record";
  EXPECT_FALSE(writer.held_at_claim().has_value());
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(s.producers_recovered, 1u);
  EXPECT_EQ(s.records_voided, 1u);
  EXPECT_GE(s.longest_stall_ns, 100'000'000u);
  for (std::uint64_t n = 0; n < 10; ++n) EXPECT_EQ(got.at(before + n), 1'000'000 + n);

  // Repaired by the other: the read-only reader goes on.
  test::read_values(only_reads, got_ro);
  EXPECT_EQ(got_ro, got);
  EXPECT_FALSE(only_reads.held_at_claim().has_value());
}

// A worker polled by the application's own loop, not run(), repairs a dead producer's
// claim as run() does: after unblock_after, from the polls that find nothing there.
// Single and batch delivery.
TEST(ProducerDeathBeforeAPolledWorker, TheWorkersOwnPollsRepairTheHole) {
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024, .key_slots = 64}, "crash");
  ConsumerGroup single = ConsumerGroup::join(seg.segment(), "single", {.start = StartFrom::earliest});
  ConsumerGroup batch = ConsumerGroup::join(seg.segment(), "batch", {.start = StartFrom::earliest});
  SharedBlock<ChildReport> report;
  ASSERT_EQ(run_crash_producer(seg, {FaultPoint::before_frame, true, false, false}, report), 128 + SIGKILL);
  const std::uint64_t before = report->published.load();
  Producer p2 = Producer::attach(seg.segment());
  for (std::uint64_t n = 0; n < 10; ++n) ASSERT_EQ(publish_n(p2, 42, 1'000'000 + n), Status::ok);

  std::vector<std::uint64_t> got_single, got_batch;
  auto value = [](const Event& e) {
    std::uint64_t v = 0;
    std::memcpy(&v, e.payload().data(), sizeof v);
    return v;
  };
  ASSERT_TRUE(test::eventually(
      [&] {
        single.worker(0).poll([&](const Event& e) { got_single.push_back(value(e)); });
        batch.worker(0).poll_batch(
            [&](std::span<const Event> events) {
              for (const Event& e : events) got_batch.push_back(value(e));
            },
            64);
        return got_single.size() == before + 10 && got_batch.size() == before + 10;
      },
      std::chrono::seconds(20)))
      << "single read " << got_single.size() << ", batch " << got_batch.size() << " of " << before + 10
      << ": stayed at the hole";
  EXPECT_EQ(got_single, got_batch);
  for (std::uint64_t n = 0; n < 10; ++n) EXPECT_EQ(got_single.at(before + n), 1'000'000 + n);
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(s.producers_recovered, 1u);
  EXPECT_EQ(s.records_voided, 1u);
}

// An application that polls its worker once a millisecond repairs a dead producer's
// claim after unblock_after too, within tens of its polls: a loop that slow checks at
// every poll that finds nothing. It took 512 polls or more (half a second at that
// pace), the checks coming every 256 such polls whatever their pace.
TEST(ProducerDeathBeforeAPolledWorker, ASlowPollingLoopRepairsTheHoleAfterUnblockAfter) {
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024, .key_slots = 64}, "crash");
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "slow",
                                        {.start = StartFrom::earliest, .unblock_after = std::chrono::milliseconds(10)});
  SharedBlock<ChildReport> report;
  ASSERT_EQ(run_crash_producer(seg, {FaultPoint::before_frame, true, false, false}, report), 128 + SIGKILL);
  const std::uint64_t before = report->published.load();
  Producer p2 = Producer::attach(seg.segment());
  for (std::uint64_t n = 0; n < 3; ++n) ASSERT_EQ(publish_n(p2, 42, 1'000'000 + n), Status::ok);
  std::uint64_t got = 0;
  int polls = 0;
  while (got < before + 3 && polls < 2'000) {
    got += g.worker(0).poll([](const Event&) {});
    ++polls;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(got, before + 3) << "stayed at the hole";
  EXPECT_LE(polls, 100) << "a 10 ms unblock_after took " << polls << " polls a millisecond apart";
  EXPECT_EQ(read_stats(seg.segment()).producers_recovered, 1u);
}

// A waiting thread that yields gives its CPU away for a whole time slice each time
// other threads want that CPU. The checks for a dead producer go by the clock, not by
// the number of idle polls or yields, so what a dead producer left is still repaired
// within the bound however long each yield takes: a hole, by the stalled worker after
// unblock_after; a key latch left held, by the next producer of that key at once.
class ProducerDeathOnABusyCpu : public ::testing::TestWithParam<FaultPoint> {};

TEST_P(ProducerDeathOnABusyCpu, WhatItLeftIsRepairedWithinTheBoundThoughEveryYieldIsSlow) {
  const FaultPoint point = GetParam();
  const bool keyed = point == FaultPoint::after_latch;
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024, .key_slots = 64}, "crash");
  test::BusyCpu busy(2);  // two threads that always want the worker's CPU
  const int cpu = busy.cpu();
  GroupOptions o;
  o.cpus = {cpu};
  o.wait = WaitStrategy::spin_yield(0);
  o.unblock_after = std::chrono::milliseconds(100);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  std::atomic<std::uint64_t> delivered{0};
  g.start([&](const Event&) { delivered.fetch_add(1); });
  SharedBlock<ChildReport> report;
  ASSERT_EQ(run_crash_producer(seg, {point, keyed, false, false}, report), 128 + SIGKILL);
  // The next producer runs on the busy CPU too: for a latch left held, it waits.
  std::uint64_t published = 0;
  std::chrono::nanoseconds publishing{0};
  std::thread next_producer([&] {
    pin_this_thread(cpu);
    Producer p = Producer::attach(seg.segment());
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t n = 0; n < 10; ++n) published += publish_n(p, key_of_case(keyed), n) == Status::ok;
    publishing = std::chrono::steady_clock::now() - t0;
  });
  next_producer.join();
  const std::uint64_t expected = report->published.load() + 10;
  const bool all = test::eventually([&] { return delivered.load() >= expected; }, std::chrono::seconds(120));
  g.stop();
  ASSERT_EQ(published, 10u);
  ASSERT_TRUE(all) << "delivered " << delivered.load() << " of " << expected;
  const SegmentStats stats = read_stats(seg.segment());
  // The bounds: unblock_after plus the ~1 ms check, and the ~1 ms check; the margin
  // absorbs the time slices of the threads spinning on that CPU.
  if (keyed) {
    EXPECT_EQ(stats.latches_released, 1u);
    EXPECT_LT(publishing, std::chrono::seconds(1)) << "the next producer of the key waited that long for the latch";
  } else {
    EXPECT_EQ(stats.holes_padded, 1u);
    EXPECT_GT(stats.longest_stall_ns, 0u) << "the worker, not a producer, repaired the hole";
    EXPECT_LT(stats.longest_stall_ns, 1'000'000'000ull);
  }
  std::printf("%s: the next producer published 10 in %.1f ms; longest stall %.1f ms; two threads spinning on cpu %d\n",
              point_name(point), static_cast<double>(publishing.count()) / 1e6, stats.longest_stall_ns / 1e6, cpu);
}

INSTANTIATE_TEST_SUITE_P(HoleAndLatch, ProducerDeathOnABusyCpu,
                         ::testing::Values(FaultPoint::before_frame, FaultPoint::after_latch),
                         [](const ::testing::TestParamInfo<FaultPoint>& info) { return std::string(point_name(info.param)); });

// A join between finding its group and taking the group's workers (FaultPoint::in_join)
// holds the registration lock that remove() takes. Without it, a remove in that gap
// freed the group, and the join then ran its workers in the freed slot: a group no
// producer was gated by, whose slot the next new group would reset under it.
std::atomic<int> g_join_stage{0};  // 1: a join is paused at in_join; 2: a remove returned or threw
void pause_in_join(FaultPoint p) noexcept {
  if (p != FaultPoint::in_join) return;
  g_join_stage.store(1);
  // Time for a remove that is not held off to finish; one held off waits for the join.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  while (g_join_stage.load() != 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
}

TEST(GroupRemoval, WaitsForAJoinThatFoundTheGroupToTakeItsWorkers) {
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024}, "rmjoin");
  ConsumerGroup::join(seg.segment(), "g");  // registered, then run by nobody
  g_join_stage.store(0);
  std::string refused;
  bool removed = false;
  std::thread remover([&] {
    while (g_join_stage.load() != 1) std::this_thread::yield();
    try {
      removed = ConsumerGroup::remove(seg.segment(), "g");
    } catch (const Error& e) {
      refused = e.what();
    }
    g_join_stage.store(2);
  });
  detail::fault_hook = pause_in_join;
  ConsumerGroup joined = ConsumerGroup::join(seg.segment(), "g");
  detail::fault_hook = nullptr;
  remover.join();
  EXPECT_FALSE(removed);
  EXPECT_NE(refused.find("run by live pid " + std::to_string(::getpid())), std::string::npos) << refused;
  // Still registered, run by this process: producers are gated by it.
  const SegmentStats stats = read_stats(seg.segment());
  ASSERT_EQ(stats.groups.size(), 1u);
  EXPECT_EQ(stats.groups[0].name, "g");
  ASSERT_FALSE(stats.groups[0].worker.empty());
  EXPECT_TRUE(stats.groups[0].worker[0].alive);
}

// Child: "die-in-join LOCATION". Joins group "g" and is killed at in_join, holding the
// registration lock.
const test::ChildRole die_in_join("die-in-join", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  g_point = FaultPoint::in_join;
  detail::fault_hook = kill_at_point;
  ConsumerGroup::join(s, "g");
  return 9;  // the fault point was never reached
});

TEST(GroupRemoval, AJoinKilledHoldingTheRegistrationLockHoldsUpNobody) {
  test::TempSegment seg({.capacity = 64 * 1024, .max_event = 1024}, "diejoin");
  ConsumerGroup::join(seg.segment(), "g");  // registered, then run by nobody
  ASSERT_EQ(reap(spawn_child("die-in-join", {seg.location().name})), 128 + SIGKILL);
  // The lock names a dead process: taken over at once, not after kStaleLockNs.
  const auto t0 = std::chrono::steady_clock::now();
  ConsumerGroup::join(seg.segment(), "other");
  EXPECT_TRUE(ConsumerGroup::remove(seg.segment(), "g"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::nanoseconds(detail::kStaleLockNs))
      << "waited for a dead process's lock to go stale";
}

// Child: "die-recording-redrive LOCATION": joins group "billing" with a deferred retry
// policy (1 ms, doubling) and refuses the dead letter redelivered to it; killed at
// in_redrive_failure of its second failed call: the call counted and the wait marked,
// the next call's time not yet written, the dead-letter ring's lock held.
const test::ChildRole die_recording_redrive("die-recording-redrive", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(
      s, "billing",
      {.retry = {.max_attempts = 5, .backoff = RetryPolicy::Backoff::deferred, .delay = std::chrono::milliseconds(1)}});
  g_point = FaultPoint::in_redrive_failure;
  g_hits_left = 2;
  detail::fault_hook = kill_at_point;
  (void)test::eventually([&] {
    g.worker(0).poll_redrives([](const Event&) { return Handled::fail; });
    return false;
  }, std::chrono::seconds(10));
  return 9;  // the fault point was never reached
});

// A worker killed while it records a redelivery's failed call leaves the entry's
// attempts exact: the call is counted once, by the worker, not again by the next join
// as a call cut short; and the dead-letter ring's lock it held holds up nobody.
TEST(RedeliveryDeath, WhileRecordingAFailedCallCountsItOnce) {
  test::TempSegment seg(test::TempSegment::small_options(), "dierec");
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "billing", {.retry = {.max_attempts = 1}});
    Producer p = Producer::attach(seg.segment());
    const std::uint64_t v = 7;
    ASSERT_EQ(p.publish(1, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    g.worker(0).poll([](const Event&) { return Handled::fail; });
  }
  DeadLetters dlq = DeadLetters::open(seg.segment(), "billing");
  ASSERT_EQ(dlq.request_redrive(), 1u);
  ASSERT_EQ(reap(spawn_child("die-recording-redrive", {seg.location().name})), 128 + SIGKILL);

  const auto t0 = std::chrono::steady_clock::now();
  const DeadLetter dead = dlq.list().at(0);
  EXPECT_EQ(dead.state, "delivering");
  EXPECT_EQ(dead.attempts, 3u) << "one call before it was parked, two redriven";
  EXPECT_EQ(dead.next_attempt_ns, 0u) << "the time of the next call was not written";
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "billing");
  const DeadLetter d = dlq.list().at(0);
  EXPECT_EQ(d.state, "redrive");
  EXPECT_EQ(d.attempts, 3u) << "the second failed call is not counted again";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::nanoseconds(detail::kStaleLockNs))
      << "waited for a dead process's lock to go stale";
  EXPECT_EQ(g.worker(0).poll_redrives([](const Event&) { return Handled::ok; }), 1u);
  EXPECT_TRUE(dlq.list().empty());
}

// Child: "die-after-parking LOCATION single|batch": joins group "g" (one attempt an
// event) and fails the event of value 1; killed at after_dead_letter, once the event
// is parked and before its cursor passes it.
const test::ChildRole die_after_parking("die-after-parking", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(s, "g", {.batch = 8, .retry = {.max_attempts = 1}});
  g_point = FaultPoint::after_dead_letter;
  detail::fault_hook = kill_at_point;
  const auto one = [](const Event& e) { return test::value_of(e) == 1 ? Handled::fail : Handled::ok; };
  if (a.at(1) == "batch") {
    g.worker(0).poll_batch(
        [&](std::span<const Event> batch) {
          for (const Event& e : batch) {
            if (one(e) == Handled::fail) return Handled::fail;
          }
          return Handled::ok;
        },
        8);
  } else {
    g.worker(0).poll(one, 8);
  }
  return 9;  // the fault point was never reached
});

// A worker killed after parking an event, its cursor not yet past it, leaves it in the
// dead-letter ring once: the next process of the group does not deliver it again
// (delivered one at a time or in batches, and with dead letters off too: it is in the
// ring all the same), nor, with max_deaths, park it again as the event its process died
// with.
TEST(ParkingDeath, AnEventParkedBeforeItsWorkerDiedIsNotDeliveredAgain) {
  struct Mode {
    const char* child_mode;
    bool batch;
    std::uint32_t max_deaths;
    bool dead_letters;
  };
  for (const Mode m : {Mode{"single", false, 0, true}, Mode{"batch", true, 0, true}, Mode{"single", false, 1, true},
                       Mode{"single", false, 0, false}}) {
    SCOPED_TRACE(std::string(m.child_mode) + (m.batch ? ", batches" : "") + ", max_deaths " +
                 std::to_string(m.max_deaths) + (m.dead_letters ? "" : ", dead letters off"));
    test::TempSegment seg(test::TempSegment::small_options(), "diepark");
    { ConsumerGroup::join(seg.segment(), "g"); }
    Producer p = Producer::attach(seg.segment());
    for (std::uint64_t v = 0; v < 3; ++v) ASSERT_EQ(p.publish(1 + v, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    ASSERT_EQ(reap(spawn_child("die-after-parking", {seg.location().name, m.child_mode})), 128 + SIGKILL);
    DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
    ASSERT_EQ(dlq.list().size(), 1u);
    const std::uint64_t parked_at = dlq.list()[0].position;
    ASSERT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).cursor, parked_at) << "died before the cursor moved";

    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g",
                                          {.batch = 8, .dead_letters = m.dead_letters, .max_deaths = m.max_deaths});
    std::vector<std::pair<std::uint64_t, bool>> got;
    const auto note = [&](const Event& e) { got.emplace_back(test::value_of(e), e.redelivered()); };
    if (m.batch) {
      while (g.worker(0).poll_batch([&](std::span<const Event> b) { std::for_each(b.begin(), b.end(), note); }, 8) != 0) {
      }
    } else {
      while (g.worker(0).poll(note, 8) != 0) {
      }
    }
    EXPECT_EQ(got, (std::vector<std::pair<std::uint64_t, bool>>{{2, false}})) << "value 1 is parked already";
    ASSERT_EQ(dlq.list().size(), 1u) << "parked once";
    EXPECT_EQ(dlq.list()[0].attempts, 1u);
    const SegmentStats st = read_stats(seg.segment());
    EXPECT_EQ(st.groups.at(0).cursor, st.tail);
    EXPECT_EQ(st.groups.at(0).worker.at(0).redelivered, 0u);
  }
}

}  // namespace
}  // namespace ringbus
