// Producers and consumers in separate processes on one segment; consumers killed with
// SIGKILL and restarted. Children never use GoogleTest: they report through a shared
// block and their exit code.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "process_support.hpp"
#include "ringbus/clock.hpp"
#include "ringbus/consumer.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/tail_reader.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::reap;
using test::SharedBlock;
using test::spawn_child;
using test::Stamp;
using test::stamp_check;

constexpr std::uint32_t kMaxProducers = 4;
constexpr std::uint64_t kMaxPerProducer = 400'000;

struct Results {
  std::atomic<std::uint8_t> count[2][kMaxProducers * kMaxPerProducer];  // per group, per event
  std::atomic<std::uint64_t> handled[2];
  std::atomic<std::uint64_t> order_errors;
  std::atomic<std::uint64_t> bad_payload;
  std::atomic<int> quit;
};

void produce(const Location& loc, std::uint32_t index, std::uint64_t n, std::uint64_t keys) {
  const Segment seg = Segment::open(loc);
  Producer p = Producer::attach(seg);
  std::mt19937_64 rng(index + 1);
  for (std::uint64_t i = 0; i < n; ++i) {
    const Stamp s{index, 0, i, stamp_check(index, i)};
    if (p.publish(1 + rng() % keys, 1, std::as_bytes(std::span(&s, 1))) != Status::ok) throw std::runtime_error("publish");
  }
}

// Runs group `name` until results.quit, counting each event into results.count[g].
// Per-key order is checked within this process's life (a restart may redeliver).
void consume(const Location& loc, const char* name, int g, std::uint32_t workers, Results* r,
             std::uint64_t work_ns = 0) {
  const Segment seg = Segment::open(loc);
  ConsumerGroup group = ConsumerGroup::join(seg, name, {.workers = workers, .wait = WaitStrategy::spin_yield(64)});
  std::vector<std::unordered_map<std::uint64_t, std::uint64_t>> last(workers);
  group.start([&, r, g, workers, work_ns](const Event& e) {
    if (work_ns != 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(work_ns);
      while (std::chrono::steady_clock::now() < until) {
      }
    }
    Stamp s{};
    std::memcpy(&s, e.payload().data(), sizeof s);
    if (e.payload().size() != sizeof s || s.check != stamp_check(s.producer, s.n) || s.producer >= kMaxProducers ||
        s.n >= kMaxPerProducer) {
      r->bad_payload.fetch_add(1);
      return;
    }
    std::uint64_t& l = last[route(e.key(), e.producer_id(), workers)][e.key()];
    if (e.key_seq() <= l) r->order_errors.fetch_add(1);
    l = e.key_seq();
    r->count[g][s.producer * kMaxPerProducer + s.n].fetch_add(1);
    r->handled[g].fetch_add(1);
  });
  while (r->quit.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  group.stop();
}

// Child roles: "producer LOCATION INDEX EVENTS KEYS" and
// "consumer LOCATION GROUP SLOT WORKERS RESULTS_FD WORK_NS".
const test::ChildRole producer_role("producer", [](const std::vector<std::string>& a) {
  produce(Location::shm(a.at(0)), static_cast<std::uint32_t>(std::stoul(a.at(1))), std::stoull(a.at(2)),
          std::stoull(a.at(3)));
  return 0;
});
const test::ChildRole consumer_role("consumer", [](const std::vector<std::string>& a) {
  SharedBlock<Results> r(std::stoi(a.at(4)));
  consume(Location::shm(a.at(0)), a.at(1).c_str(), std::stoi(a.at(2)), static_cast<std::uint32_t>(std::stoul(a.at(3))),
          &*r, std::stoull(a.at(5)));
  return 0;
});

pid_t start_producer(const Location& loc, std::uint32_t index, std::uint64_t n, std::uint64_t keys) {
  return spawn_child("producer", {loc.name, std::to_string(index), std::to_string(n), std::to_string(keys)});
}
pid_t start_consumer(const Location& loc, const char* group, int slot, std::uint32_t workers,
                     const SharedBlock<Results>& r, std::uint64_t work_ns = 0) {
  return spawn_child("consumer", {loc.name, group, std::to_string(slot), std::to_string(workers), r.fd_arg(),
                                  std::to_string(work_ns)});
}

// Child: "redrive-dies LOCATION": joins group "billing" and is killed inside the handler
// of the first dead letter redelivered to it.
const test::ChildRole redrive_dies("redrive-dies", [](const std::vector<std::string>& a) {
  const Segment seg = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(seg, "billing");
  g.worker(0).poll_redrives([](const Event&) {
    ::raise(SIGKILL);
    return Handled::ok;
  });
  return 3;  // nothing was redelivered
});

// Child: "redrive-kept-dies LOCATION": joins group "billing" with a deferred retry policy
// (1 ms, doubling), refuses the first dead letter redelivered to it three times, so that
// its worker keeps the entry for a fourth call, and is killed while it waits.
const test::ChildRole redrive_kept_dies("redrive-kept-dies", [](const std::vector<std::string>& a) {
  const Segment seg = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(
      seg, "billing",
      {.retry = {.max_attempts = 5, .backoff = RetryPolicy::Backoff::deferred, .delay = std::chrono::milliseconds(1)}});
  int calls = 0;
  if (!test::eventually([&] {
        g.worker(0).poll_redrives([&](const Event&) {
          ++calls;
          return Handled::fail;
        });
        return calls >= 3;
      })) {
    return 3;
  }
  if (calls != 3) return 4;
  ::raise(SIGKILL);
  return 5;
});

// Child: "calibrate LOCATION RESULTS_FD ROLE": reads the segment's shared TSC rate
// word, attaches a producer (ROLE "producer") or joins group "clock" (ROLE "group"),
// and reports its process's calibration and the word after.
// Plain fields: the parent reads them after reaping the child.
struct ClockReport {
  std::uint64_t word_before = 0;
  std::uint64_t word_after = 0;
  std::uint64_t mult = 0;
  int source = -1;
  int adopted = -1;
};
const test::ChildRole calibrate_role("calibrate", [](const std::vector<std::string>& a) {
  SharedBlock<ClockReport> r(std::stoi(a.at(1)));
  const Segment seg = Segment::open(Location::shm(a.at(0)));
  std::atomic<std::uint64_t>& word = seg.refs().control->tsc_mult;
  r->word_before = word.load();
  if (a.at(2) == "producer") {
    Producer p = Producer::attach(seg);
  } else {
    ConsumerGroup g = ConsumerGroup::join(seg, "clock");
  }
  const Tsc::Calibration& c = Tsc::calibration();
  r->mult = c.mult;
  r->source = static_cast<int>(c.source);
  r->adopted = c.adopted ? 1 : 0;
  r->word_after = word.load();
  return 0;
});

// Runs a "calibrate" child on `seg` and returns its report.
ClockReport calibrate_in_child(const test::TempSegment& seg, const char* role) {
  SharedBlock<ClockReport> r;
  EXPECT_EQ(reap(spawn_child("calibrate", {seg.location().name, r.fd_arg(), role})), 0);
  return *r;
}

bool rates_agree(std::uint64_t a, std::uint64_t b) {
  return detail::shared_rate_agrees(a, static_cast<double>(b) / 4294967296.0);
}

// The first process to calibrate on a segment (a producer's attach) leaves its TSC
// rate in the segment; the next (a group's join) adopts exactly that rate.
TEST(Process, TheTscRateIsSharedThroughTheSegment) {
  if (Tsc::source() != Tsc::Source::tsc) GTEST_SKIP() << "no invariant TSC: " << Tsc::describe(Tsc::source());
  test::TempSegment seg(test::TempSegment::small_options(), "clock");
  const ClockReport first = calibrate_in_child(seg, "producer");
  EXPECT_EQ(first.word_before, 0u);
  EXPECT_EQ(first.adopted, 0) << "nothing to adopt: measured in full";
  EXPECT_EQ(first.source, static_cast<int>(Tsc::Source::tsc));
  EXPECT_EQ(first.word_after, first.mult) << "the measured rate is left for the next process";
  EXPECT_TRUE(rates_agree(first.mult, Tsc::calibration().mult)) << "the child measured a rate unlike this process's";
  EXPECT_EQ(read_stats(seg.segment()).tsc_hz, detail::shared_tsc_hz(first.mult));
  EXPECT_NE(read_stats(seg.segment()).tsc_hz, 0u);

  const ClockReport second = calibrate_in_child(seg, "group");
  EXPECT_EQ(second.word_before, first.mult);
  EXPECT_EQ(second.adopted, 1);
  EXPECT_EQ(second.mult, first.mult) << "adopted as it was";
  EXPECT_EQ(second.word_after, first.mult) << "an agreeing rate is left alone";
}

// The word is untrusted: a rate that is implausible, or disagrees with what the first
// 2 ms measure, is not adopted; the full measurement runs and replaces it. One that
// agrees within the tolerance is adopted. RINGBUS_CLOCK=steady neither reads nor writes it.
TEST(Process, ASharedTscRateIsCheckedBeforeItIsAdopted) {
  if (Tsc::source() != Tsc::Source::tsc) GTEST_SKIP() << "no invariant TSC: " << Tsc::describe(Tsc::source());
  test::TempSegment seg(test::TempSegment::small_options(), "clock");
  std::atomic<std::uint64_t>& word = seg.segment().refs().control->tsc_mult;
  const std::uint64_t ours = Tsc::calibration().mult;
  const std::uint64_t one = 1, all = ~std::uint64_t{0};
  for (const std::uint64_t bad : {ours * 2, ours + ours / 1000, ours - ours / 1000, one, all}) {
    SCOPED_TRACE("shared word " + std::to_string(bad) + ", this process's rate " + std::to_string(ours));
    word.store(bad);
    const ClockReport r = calibrate_in_child(seg, bad == one ? "group" : "producer");
    EXPECT_EQ(r.word_before, bad);
    EXPECT_EQ(r.adopted, 0);
    EXPECT_TRUE(rates_agree(r.mult, ours)) << "measured in full";
    EXPECT_EQ(r.word_after, r.mult) << "the bad rate is replaced";
  }
  EXPECT_EQ(read_stats(seg.segment()).tsc_hz, detail::shared_tsc_hz(word.load()));
  word.store(all);
  EXPECT_EQ(read_stats(seg.segment()).tsc_hz, 0u) << "an implausible word reads as no rate";

  const std::uint64_t close = ours + ours / 200'000;  // 5 ppm off: within the 20 ppm tolerance
  word.store(close);
  const ClockReport near = calibrate_in_child(seg, "producer");
  EXPECT_EQ(near.adopted, 1);
  EXPECT_EQ(near.mult, close);
  EXPECT_EQ(near.word_after, close);

  ::setenv(Tsc::kEnvironment, "steady", 1);
  for (const std::uint64_t w : {std::uint64_t{0}, close}) {
    word.store(w);
    const ClockReport steady = calibrate_in_child(seg, "producer");
    EXPECT_EQ(steady.source, static_cast<int>(Tsc::Source::steady_chosen));
    EXPECT_EQ(steady.adopted, 0);
    EXPECT_EQ(steady.word_after, w) << "a process on steady_clock leaves the word alone";
  }
  ::unsetenv(Tsc::kEnvironment);
}

// A worker killed while a redriven dead letter is in its handler, or while it keeps one
// for a deferred attempt, leaves the entry `delivering`. The next join of the group (it
// then holds every worker slot, so no live process can be delivering it) puts the entry
// back to `redrive`, and it is delivered again: never stuck where no tool could redrive
// or purge it. Every failed call is counted once: the call cut short by the death, or
// the three the worker made before it died waiting (written to the entry as they failed).
class RedeliveryCutShort : public ::testing::TestWithParam<const char*> {};

TEST_P(RedeliveryCutShort, ByDeathIsDeliveredAgain) {
  test::TempSegment seg(test::TempSegment::small_options(), "proc");
  {
    GroupOptions o;
    o.retry.max_attempts = 1;
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "billing", o);
    Producer p = Producer::attach(seg.segment());
    const std::uint64_t v = 7;
    ASSERT_EQ(p.publish(1, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    g.worker(0).poll([](const Event&) { return Handled::fail; });
  }
  DeadLetters dlq = DeadLetters::open(seg.segment(), "billing");
  ASSERT_EQ(dlq.list().size(), 1u);
  ASSERT_EQ(dlq.request_redrive(dlq.list()[0].id), 1u);
  ASSERT_EQ(reap(spawn_child(GetParam(), {seg.location().name})), 128 + SIGKILL);
  const bool waited = std::string(GetParam()) == "redrive-kept-dies";
  const DeadLetter dead = dlq.list().at(0);
  ASSERT_EQ(dead.state, "delivering") << "the child died delivering it";
  EXPECT_EQ(dead.attempts, waited ? 4u : 1u) << "the calls that failed before the death";
  EXPECT_EQ(dead.next_attempt_ns != 0, waited) << "it shows whether the worker waited for its next call";

  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "billing");
  const DeadLetter d = dlq.list().at(0);
  EXPECT_EQ(d.state, "redrive");
  EXPECT_EQ(d.attempts, waited ? 4u : 2u) << "a delivery cut short in the handler counts as an attempt";
  EXPECT_EQ(d.next_attempt_ns, 0u);
  std::uint64_t redriven = 0;
  g.worker(0).poll_redrives([&](const Event& e) {
    EXPECT_TRUE(e.redriven());
    std::uint64_t got = 0;
    std::memcpy(&got, e.payload().data(), sizeof got);
    EXPECT_EQ(got, 7u);
    ++redriven;
    return Handled::ok;
  });
  EXPECT_EQ(redriven, 1u);
  EXPECT_TRUE(dlq.list().empty());
}

INSTANTIATE_TEST_SUITE_P(Process, RedeliveryCutShort, ::testing::Values("redrive-dies", "redrive-kept-dies"),
                         [](const ::testing::TestParamInfo<const char*>& p) {
                           return std::string(p.param) == "redrive-dies" ? std::string("InTheHandler")
                                                                         : std::string("WhileKeptForARetry");
                         });

// Redrives under random SIGKILL: what the children's handlers did, by the dead letter's
// value (1, 2, ... as published).
constexpr std::uint64_t kRedriveLetters = 1u << 16;  // values at most
struct RedriveLedger {
  std::atomic<std::uint32_t> started[kRedriveLetters + 1];   // handler calls begun
  std::atomic<std::uint32_t> accepted[kRedriveLetters + 1];  // calls that returned ok
  std::atomic<int> joined;                                   // the child's group is joined
};

// Child: "redrive-random LOCATION LEDGER_FD SEED": joins group "billing" with a retry
// policy the seed picks (backoff, attempts, one or two workers) and, until it is killed,
// marks every parked dead letter for redelivery and delivers what its workers take,
// accepting about one call in twenty.
const test::ChildRole redrive_random("redrive-random", [](const std::vector<std::string>& a) -> int {
  const Segment seg = Segment::open(Location::shm(a.at(0)));
  SharedBlock<RedriveLedger> ledger(std::stoi(a.at(1)));
  std::mt19937_64 rng(std::stoull(a.at(2)));
  const auto backoff = static_cast<RetryPolicy::Backoff>(rng() % 3);
  const GroupOptions o{
      .workers = static_cast<std::uint32_t>(1 + rng() % 2),
      .retry = {.max_attempts = static_cast<std::uint32_t>(1 + rng() % 4),
                .backoff = backoff,
                .delay = backoff == RetryPolicy::Backoff::deferred ? std::chrono::microseconds(200)
                                                                   : std::chrono::microseconds(20)}};
  ConsumerGroup g = ConsumerGroup::join(seg, "billing", o);
  DeadLetters dlq = DeadLetters::open(seg, "billing");
  ledger->joined.store(1);
  auto handler = [&](const Event& e) {
    std::uint64_t v = 0;
    std::memcpy(&v, e.payload().data(), sizeof v);
    if (v == 0 || v > kRedriveLetters) std::abort();
    ledger->started[v].fetch_add(1);
    if (rng() % 20 != 0) return Handled::fail;
    ledger->accepted[v].fetch_add(1);
    return Handled::ok;
  };
  for (;;) {
    dlq.request_redrive();
    for (std::uint32_t w = 0; w < o.workers; ++w) g.worker(w).poll_redrives(handler);
  }
});

// Workers killed at random moments while they redeliver dead letters (in a handler, in
// a spin or deferred wait, holding the dead-letter ring's lock or not) lose none and
// miscount none. After each death, once a join has resumed what the dead worker was
// delivering: every dead letter is in the ring or was accepted; each in the ring counts
// at least its call before it was parked plus every redriven call begun, and at most one
// more per death (a death between taking an entry and calling the handler counts as a
// call cut short). At the end all are accepted, each at least once, and at most once
// more per death (accepted, then killed before the entry was removed).
TEST(Process, RedrivesKilledAtRandomLoseAndMiscountNothing) {
  // RINGBUS_KILL_ITERATIONS and RINGBUS_KILL_SEED override the deaths (100) and the seed.
  const char* n_env = std::getenv("RINGBUS_KILL_ITERATIONS");
  const char* seed_env = std::getenv("RINGBUS_KILL_SEED");
  const int iterations = n_env != nullptr ? std::atoi(n_env) : 100;
  test::TempSegment seg(test::TempSegment::small_options(), "redrivekill");
  Producer p = Producer::attach(seg.segment());
  std::uint64_t published = 0;
  // `n` more events (while the ring holds fewer than 150 dead letters: it has room for
  // about 2,000), dead-lettered by a join whose handler refuses them. The join also
  // resumes what a dead worker was delivering.
  auto dead_letter_more = [&](std::uint64_t n) {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "billing", {.retry = {.max_attempts = 1}});
    if (DeadLetters::open(seg.segment(), "billing").list().size() >= 150 || published + n > kRedriveLetters) return;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t v = ++published;
      ASSERT_EQ(p.publish(1 + v % 64, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    }
    while (g.worker(0).poll([](const Event&) { return Handled::fail; }) != 0) {
    }
  };
  dead_letter_more(100);
  DeadLetters dlq = DeadLetters::open(seg.segment(), "billing");
  ASSERT_EQ(dlq.list().size(), 100u);
  SharedBlock<RedriveLedger> ledger;
  std::mt19937_64 rng(seed_env != nullptr ? std::strtoull(seed_env, nullptr, 0) : 20261207);
  auto check = [&](int deaths) {
    std::vector<bool> in_ring(kRedriveLetters + 1, false);
    std::uint64_t extra = 0;
    for (const DeadLetter& d : dlq.list()) {
      std::uint64_t v = 0;
      std::memcpy(&v, d.payload.data(), sizeof v);
      ASSERT_TRUE(v >= 1 && v <= published) << v;
      EXPECT_FALSE(in_ring[v]) << "value " << v << " twice in the ring";
      in_ring[v] = true;
      EXPECT_NE(d.state, "delivering") << "value " << v << ": resumed by the join";
      const std::uint32_t counted = 1 + ledger->started[v].load();
      EXPECT_GE(d.attempts, counted) << "value " << v;
      extra += d.attempts - std::min(d.attempts, counted);
    }
    EXPECT_LE(extra, static_cast<std::uint64_t>(deaths)) << "attempts beyond the calls begun";
    for (std::uint64_t v = 1; v <= published; ++v) {
      EXPECT_TRUE(in_ring[v] || ledger->accepted[v].load() != 0) << "value " << v << " lost";
    }
  };
  int deaths = 0;
  for (int i = 0; i < iterations && !::testing::Test::HasFailure(); ++i) {
    if (rng() % 2 == 0) {
      dlq.request_redrive();
    } else {
      for (const DeadLetter& d : dlq.list()) {
        if (rng() % 2 == 0) dlq.request_redrive(d.id);
      }
    }
    ledger->joined.store(0);
    const pid_t child = spawn_child("redrive-random", {seg.location().name, ledger.fd_arg(), std::to_string(rng())});
    ASSERT_TRUE(test::eventually([&] { return ledger->joined.load() != 0; })) << "the child did not join";
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    ::kill(child, SIGKILL);
    ASSERT_EQ(reap(child), 128 + SIGKILL);
    ++deaths;
    dead_letter_more(20);
    check(deaths);
  }
  // Every dead letter left is accepted once a handler always accepts.
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "billing");
  ASSERT_TRUE(test::eventually([&] {
    dlq.request_redrive();
    g.worker(0).poll_redrives([&](const Event& e) {
      std::uint64_t v = 0;
      std::memcpy(&v, e.payload().data(), sizeof v);
      ledger->accepted[v].fetch_add(1);
      return Handled::ok;
    });
    return dlq.list().empty();
  }));
  std::uint64_t twice = 0;
  for (std::uint64_t v = 1; v <= published; ++v) {
    EXPECT_GE(ledger->accepted[v].load(), 1u) << "value " << v;
    twice += ledger->accepted[v].load() - std::min<std::uint32_t>(ledger->accepted[v].load(), 1);
  }
  EXPECT_LE(twice, static_cast<std::uint64_t>(deaths)) << "accepted again beyond one per death";
}

// Retries under random SIGKILL: what the children's handlers did, by the event's value
// (1, 2, ... as published).
constexpr std::uint64_t kRetryEvents = 1u << 14;  // values at most
struct RetryLedger {
  std::atomic<std::uint32_t> calls[kRetryEvents + 1];    // handler calls that had the event
  std::atomic<std::uint32_t> applied[kRetryEvents + 1];  // effects applied
  std::atomic<std::uint64_t> unmarked_again;  // an effect applied again, the event not marked redelivered
  std::atomic<int> joined;                    // the child's group is joined
};
// Value v's handler call fails always (v % 13 == 0: parked in the end), or in its first
// call over every process (v % 3 == 0), or never.
bool retry_call_fails(std::uint64_t v, std::uint32_t calls_before) {
  return v % 13 == 0 || (v % 3 == 0 && calls_before == 0);
}
// The handlers' effect: counted, and an effect applied again must come with the mark.
void apply_retry_effect(RetryLedger& ledger, const Event& e, std::uint64_t v) {
  if (ledger.applied[v].fetch_add(1) != 0 && !e.redelivered()) ledger.unmarked_again.fetch_add(1);
}
std::uint64_t retry_value(const Event& e) {
  std::uint64_t v = 0;
  std::memcpy(&v, e.payload().data(), sizeof v);
  if (v == 0 || v > kRetryEvents) std::abort();
  return v;
}

// Child: "retry-random LOCATION LEDGER_FD SEED": joins group "orders" with a retry
// policy the seed picks (backoff, attempts, key order, one or two workers, one event or
// batches at a time) and polls its workers until it is killed.
const test::ChildRole retry_random("retry-random", [](const std::vector<std::string>& a) -> int {
  const Segment seg = Segment::open(Location::shm(a.at(0)));
  SharedBlock<RetryLedger> ledger(std::stoi(a.at(1)));
  std::mt19937_64 rng(std::stoull(a.at(2)));
  const auto backoff = static_cast<RetryPolicy::Backoff>(rng() % 3);
  const GroupOptions o{
      .workers = static_cast<std::uint32_t>(1 + rng() % 2),
      .batch = static_cast<std::uint32_t>(1 + rng() % 8),
      .retry = {.max_attempts = static_cast<std::uint32_t>(1 + rng() % 4),
                .backoff = backoff,
                .delay = backoff == RetryPolicy::Backoff::deferred ? std::chrono::microseconds(300)
                                                                   : std::chrono::microseconds(20),
                .while_retrying = rng() % 2 == 0 ? RetryPolicy::KeyOrder::hold : RetryPolicy::KeyOrder::release}};
  const bool batches = rng() % 2 == 0;
  ConsumerGroup g = ConsumerGroup::join(seg, "orders", o);
  ledger->joined.store(1);
  auto one = [&](const Event& e) {
    const std::uint64_t v = retry_value(e);
    if (retry_call_fails(v, ledger->calls[v].fetch_add(1))) return Handled::fail;
    apply_retry_effect(*ledger, e, v);
    return Handled::ok;
  };
  // A batch fails as a whole, before any effect, if one of its events fails.
  auto many = [&](std::span<const Event> batch) {
    bool fails = false;
    for (const Event& e : batch) {
      const std::uint64_t v = retry_value(e);
      fails = retry_call_fails(v, ledger->calls[v].fetch_add(1)) || fails;
    }
    if (fails) return Handled::fail;
    for (const Event& e : batch) apply_retry_effect(*ledger, e, retry_value(e));
    return Handled::ok;
  };
  for (;;) {
    for (std::uint32_t w = 0; w < o.workers; ++w) {
      if (batches) {
        g.worker(w).poll_batch(many, o.batch);
      } else {
        g.worker(w).poll(one, o.batch);
      }
    }
  }
});

// Workers killed at random moments while they retry, set aside, hold and park events
// (the seed's policies, keys moving between one and two workers) never apply an
// effect twice without the event marked redelivered, lose nothing, and park nothing
// twice. The group has no dedup: the mark is all a handler has.
TEST(Process, RetriesKilledAtRandomDeliverNothingAgainUnmarked) {
  // RINGBUS_KILL_ITERATIONS and RINGBUS_KILL_SEED override the deaths (100) and the seed.
  const char* n_env = std::getenv("RINGBUS_KILL_ITERATIONS");
  const char* seed_env = std::getenv("RINGBUS_KILL_SEED");
  const int iterations = n_env != nullptr ? std::atoi(n_env) : 100;
  SegmentOptions so = test::TempSegment::small_options();
  so.capacity = 4 << 20;
  so.dlq_capacity = 1 << 20;
  test::TempSegment seg(so, "retrykill");
  { ConsumerGroup::join(seg.segment(), "orders"); }
  Producer p = Producer::attach(seg.segment());
  SharedBlock<RetryLedger> ledger;
  std::mt19937_64 rng(seed_env != nullptr ? std::strtoull(seed_env, nullptr, 0) : 20261207);
  std::uint64_t published = 0;
  for (int i = 0; i < iterations && !::testing::Test::HasFailure(); ++i) {
    for (int k = 0; k < 40 && published < kRetryEvents; ++k) {
      const std::uint64_t v = ++published;
      ASSERT_EQ(p.publish(1 + v % 16, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    }
    ledger->joined.store(0);
    const pid_t child = spawn_child("retry-random", {seg.location().name, ledger.fd_arg(), std::to_string(rng())});
    ASSERT_TRUE(test::eventually([&] { return ledger->joined.load() != 0; })) << "the child did not join";
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 4000));
    ::kill(child, SIGKILL);
    ASSERT_EQ(reap(child), 128 + SIGKILL);
    EXPECT_EQ(ledger->unmarked_again.load(), 0u) << "after death " << i + 1;
  }
  // The rest, by a process that is not killed: one call an event.
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "orders", {.retry = {.max_attempts = 1}});
  const auto last = [&](const Event& e) {
    const std::uint64_t v = retry_value(e);
    if (retry_call_fails(v, ledger->calls[v].fetch_add(1))) return Handled::fail;
    apply_retry_effect(*ledger, e, v);
    return Handled::ok;
  };
  ASSERT_TRUE(test::eventually([&] {
    while (g.worker(0).poll(last, 1000) != 0) {
    }
    const SegmentStats st = read_stats(seg.segment());
    return g.worker(0).pending() == 0 && st.groups.at(0).cursor == st.tail;
  })) << "not drained";
  EXPECT_EQ(ledger->unmarked_again.load(), 0u) << "an effect applied again without the mark";
  std::vector<std::uint32_t> parked(published + 1, 0);
  for (const DeadLetter& d : DeadLetters::open(seg.segment(), "orders").list()) {
    std::uint64_t v = 0;
    std::memcpy(&v, d.payload.data(), sizeof v);
    ASSERT_TRUE(v >= 1 && v <= published) << v;
    EXPECT_EQ(++parked[v], 1u) << "value " << v << " parked twice";
  }
  for (std::uint64_t v = 1; v <= published; ++v) {
    EXPECT_TRUE(ledger->applied[v].load() != 0 || parked[v] != 0) << "value " << v << " lost";
    if (v % 13 == 0) EXPECT_EQ(parked[v], 1u) << "value " << v << " always fails";
  }
}

// Poison events: what the handlers of successive processes did, by value (1..20).
struct PoisonLedger {
  std::atomic<std::uint32_t> calls[21];    // handler calls that had the event
  std::atomic<std::uint32_t> handled[21];  // ... and returned
};
constexpr std::uint64_t kPoison = 13;

// Child: "poison LOCATION LEDGER_FD MODE MAX_DEATHS": joins group "billing" (batches of
// 8, max_deaths MAX_DEATHS) and polls until nothing is ready. Its handler kills the
// process when it gets event 13: always (MODE "single", or "batch": poll_batch), or only
// in its first CRASHES calls of it over every process (MODE "recovers-CRASHES").
const test::ChildRole poison_role("poison", [](const std::vector<std::string>& a) {
  const Segment seg = Segment::open(Location::shm(a.at(0)));
  SharedBlock<PoisonLedger> ledger(std::stoi(a.at(1)));
  const std::string mode = a.at(2);
  const std::uint32_t crashes =
      mode.starts_with("recovers-") ? static_cast<std::uint32_t>(std::stoul(mode.substr(9))) : UINT32_MAX;
  ConsumerGroup g = ConsumerGroup::join(
      seg, "billing", {.batch = 8, .max_deaths = static_cast<std::uint32_t>(std::stoul(a.at(3)))});
  auto one = [&](const Event& e) {
    std::uint64_t v = 0;
    std::memcpy(&v, e.payload().data(), sizeof v);
    if (v == 0 || v > 20) std::abort();
    const std::uint32_t call = ledger->calls[v].fetch_add(1) + 1;
    if (v == kPoison && call <= crashes) ::raise(SIGKILL);
    ledger->handled[v].fetch_add(1);
  };
  if (mode == "batch") {
    while (g.worker(0).poll_batch([&](std::span<const Event> events) {
      for (const Event& e : events) one(e);
    }, 8) != 0) {
    }
  } else {
    while (g.worker(0).poll(one) != 0) {
    }
  }
  return 0;
});

struct PoisonCase {
  const char* mode;
  std::uint32_t max_deaths;
  int deaths;           // processes killed before one got past event 13
  bool dead_lettered;   // event 13 ends in the dead-letter ring, not handled
};

void PrintTo(const PoisonCase& c, std::ostream* os) {
  *os << c.mode << ", max_deaths " << c.max_deaths << ", " << c.deaths << " deaths";
}

class PoisonEvent : public ::testing::TestWithParam<PoisonCase> {};

// An event whose handler kills its process is delivered again to the next process,
// which is told it was in flight (Event::redelivered()); with max_deaths N, after N
// deaths in a row it is parked in the dead-letter ring without another call, so that a
// crash loop ends with every other event handled. A death in a batch is counted against
// the batch's last event, and the batch is then delivered one event at a time: the
// deaths that follow count against event 13. An event that stops crashing before the
// limit is handled, and so is every event of a group without max_deaths.
TEST_P(PoisonEvent, IsDeadLetteredAfterMaxDeathsInARow) {
  const PoisonCase c = GetParam();
  test::TempSegment seg(test::TempSegment::small_options(), "poison");
  ConsumerGroup::join(seg.segment(), "billing");  // registered: it sees every event below
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 1; v <= 20; ++v) ASSERT_EQ(p.publish(v, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  SharedBlock<PoisonLedger> ledger;
  int deaths = 0;
  for (int code = -1; code != 0 && deaths <= 10;) {
    code = reap(spawn_child("poison", {seg.location().name, ledger.fd_arg(), c.mode, std::to_string(c.max_deaths)}));
    if (code == 128 + SIGKILL) {
      ++deaths;
      // `ringbus info` shows the deaths the joins counted: every one before this.
      const WorkerStats w = read_stats(seg.segment()).groups.at(0).worker.at(0);
      if (std::string(c.mode) != "batch") {  // (with max_deaths 0 too)
        EXPECT_EQ(w.deaths_in_flight, static_cast<std::uint64_t>(deaths - 1));
        if (deaths > 1) EXPECT_EQ(w.died_at, (kPoison - 1) * record_bytes(8));
      }
    } else {
      ASSERT_EQ(code, 0);
    }
  }
  EXPECT_EQ(deaths, c.deaths);
  EXPECT_EQ(ledger->calls[kPoison].load(), static_cast<std::uint32_t>(c.deaths + (c.dead_lettered ? 0 : 1)))
      << "no call after the last death when it is dead-lettered";
  for (std::uint64_t v = 1; v <= 20; ++v) {
    if (v != kPoison) EXPECT_GE(ledger->handled[v].load(), 1u) << "value " << v;
  }
  EXPECT_EQ(ledger->handled[kPoison].load(), c.dead_lettered ? 0u : 1u);
  const std::vector<DeadLetter> dead = DeadLetters::open(seg.segment(), "billing").list();
  ASSERT_EQ(dead.size(), c.dead_lettered ? 1u : 0u);
  if (c.dead_lettered) {
    std::uint64_t v = 0;
    std::memcpy(&v, dead[0].payload.data(), sizeof v);
    EXPECT_EQ(v, kPoison);
    EXPECT_EQ(dead[0].attempts, c.max_deaths);
    EXPECT_NE(dead[0].message.find("its process died " + std::to_string(c.max_deaths) +
                                   (c.max_deaths == 1 ? " time" : " times") + " in a row while the handler had it"),
              std::string::npos)
        << dead[0].message;
  }
}

INSTANTIATE_TEST_SUITE_P(Process, PoisonEvent,
                         ::testing::Values(PoisonCase{"single", 3, 3, true}, PoisonCase{"batch", 3, 4, true},
                                           PoisonCase{"single", 1, 1, true}, PoisonCase{"recovers-2", 3, 2, false},
                                           PoisonCase{"recovers-4", 0, 4, false}),
                         [](const ::testing::TestParamInfo<PoisonCase>& i) {
                           std::string mode = i.param.mode;
                           std::replace(mode.begin(), mode.end(), '-', '_');
                           return mode + "_max_deaths_" + std::to_string(i.param.max_deaths);
                         });

// Child: "anonymous RESULTS_FD": creates an anonymous segment and forks a producer
// process that publishes kAnonymousEvents through the mapping it inherits, after
// Segment::touch_pages; reads them back and reports. The child runs in a process of its
// own with no other thread, so that the fork is safe under every sanitizer.
constexpr std::uint64_t kAnonymousEvents = 10'000;  // fit in the ring, which no group gates
constexpr std::uint64_t kAnonymousKeys = 100;
struct AnonymousReport {
  std::uint64_t pages = 0;         // of the segment
  std::int64_t touch_faults = -1;  // the forked producer's, during touch_pages()
  std::int64_t read_faults = -1;   // the forked producer's, reading every page after it
  int producer_exit = -1;
  int named = -1;  // whether /dev/shm held the label
  std::uint64_t received = 0;
  std::uint64_t wrong = 0;  // payload, producer or key_seq not as published
};
std::int64_t minor_faults() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}
const test::ChildRole anonymous_role("anonymous", [](const std::vector<std::string>& a) {
  SharedBlock<AnonymousReport> r(std::stoi(a.at(0)));
  const std::string label = test::unique_name("anon");
  const Segment seg =
      Segment::create(Location::anonymous(label), {.capacity = 1 << 20, .max_event = 256, .key_slots = 4096});
  r->pages = seg.refs().total_size / layout::kPage;
  r->named = std::filesystem::exists("/dev/shm/" + label) ? 1 : 0;
  const pid_t producer = ::fork();
  if (producer < 0) return 4;
  if (producer == 0) {
    const std::int64_t before = minor_faults();
    seg.touch_pages();
    const std::int64_t touched = minor_faults();
    for (std::uint64_t off = 0; off < seg.refs().total_size; off += layout::kPage) {
      (void)*static_cast<volatile const std::byte*>(seg.refs().base + off);
    }
    r->read_faults = minor_faults() - touched;
    r->touch_faults = touched - before;
    try {
      Producer p = Producer::attach(seg);
      for (std::uint64_t i = 0; i < kAnonymousEvents; ++i) {
        const Stamp st{0, 0, i, stamp_check(0, i)};
        if (p.publish(1 + i % kAnonymousKeys, 1, std::as_bytes(std::span(&st, 1))) != Status::ok) ::_exit(5);
      }
    } catch (...) {
      ::_exit(6);
    }
    ::_exit(0);
  }
  r->producer_exit = reap(producer);
  TailReader tail = TailReader::open(seg, TailStart::earliest);
  std::vector<std::uint64_t> last(kAnonymousKeys + 1, 0);
  Event e;
  while (tail.try_next(e)) {
    Stamp st{};
    std::memcpy(&st, e.payload().data(), std::min(sizeof st, e.payload().size()));
    const std::uint64_t key = 1 + r->received % kAnonymousKeys;
    if (e.payload().size() != sizeof st || st.n != r->received || st.check != stamp_check(0, st.n) ||
        e.key() != key || e.key_seq() != last[key] + 1) {
      ++r->wrong;
    }
    last[key] = e.key_seq();
    ++r->received;
  }
  return 0;
});

// An anonymous segment is shared with a process forked after its creation, through the
// mapping the child inherits: every event the child publishes arrives, in key order,
// and /dev/shm never holds it. The child's inherited mapping starts without page table
// entries, so its first access to each page faults (in the guest; on our VMs the
// hypervisor traps too, about 5 us a page); Segment::touch_pages() takes those faults
// up front, so that the first lap of a producer or reader pays none.
TEST(Process, AnAnonymousSegmentIsSharedWithAForkedChildAndLeavesNoName) {
  SharedBlock<AnonymousReport> r;
  ASSERT_EQ(reap(spawn_child("anonymous", {r.fd_arg()})), 0);
  EXPECT_EQ(r->named, 0);
  EXPECT_EQ(r->producer_exit, 0);
  EXPECT_EQ(r->received, kAnonymousEvents);
  EXPECT_EQ(r->wrong, 0u);
  EXPECT_GT(r->pages, 256u);
  // Fault-around may map up to 16 pages a fault. Reading after the touch faults only
  // where the stack grows, or (under ThreadSanitizer) where the reads' shadow memory is
  // new: a few faults, against the touch's hundreds.
  EXPECT_GE(r->touch_faults, static_cast<std::int64_t>(r->pages / 16)) << r->pages << " pages";
  EXPECT_LT(r->read_faults * 4, r->touch_faults) << r->read_faults << " faults reading after the touch";
}

// Child: "inherited RESULTS_FD": holds a producer with an open claim, an idle group and
// a running one, and forks a child that destroys its copies of all four. Reports what
// the child's exit was, whether the producer and worker slots read the same before the
// fork and after the child, and what the running group handled of the claim committed
// afterwards.
struct InheritedReport {
  int child_exit = -1;
  int slots_unchanged = -1;
  std::uint64_t handled = 0;
  std::uint64_t value = 0;
};
// Who holds each producer and worker slot: "p<slot>:<pid>:<state>" and "w<group>.<index>:<pid>:<state>".
std::string slot_owners(const Segment& seg) {
  const SegmentStats s = read_stats(seg);
  std::string out;
  for (const ProducerStats& p : s.producers) {
    out += " p" + std::to_string(p.slot) + ":" + std::to_string(p.pid) + ":" + p.state;
  }
  for (const GroupStats& g : s.groups) {
    for (const WorkerStats& w : g.worker) {
      out += " w" + g.name + "." + std::to_string(w.index) + ":" + std::to_string(w.pid) + ":" + w.state;
    }
  }
  return out;
}
const test::ChildRole inherited_role("inherited", [](const std::vector<std::string>& a) {
  SharedBlock<InheritedReport> r(std::stoi(a.at(0)));
  const Segment seg = Segment::create(Location::anonymous(test::unique_name("inherited")),
                                      {.capacity = 1 << 20, .max_event = 256, .key_slots = 4096});
  std::optional<Producer> producer(Producer::attach(seg));
  std::optional<ConsumerGroup> idle(ConsumerGroup::join(seg, "idle"));
  std::optional<ConsumerGroup> running(ConsumerGroup::join(seg, "running"));
  std::atomic<std::uint64_t> handled{0}, value{0};
  running->start([&](const Event& e) {
    std::uint64_t v = 0;
    std::memcpy(&v, e.payload().data(), sizeof v);
    value.store(v);
    handled.fetch_add(1);
  });
  std::optional<Claim> claim(std::in_place);
  if (producer->try_claim(7, 1, sizeof(std::uint64_t), *claim) != Status::ok) return 4;
  const std::string before = slot_owners(seg);
  const pid_t child = ::fork();
  if (child < 0) return 5;
  if (child == 0) {  // async-signal-safe from here: this process had other threads
    claim.reset();
    producer.reset();
    idle.reset();
    running.reset();
    ::_exit(0);
  }
  r->child_exit = reap(child);
  const std::string after = slot_owners(seg);
  r->slots_unchanged = before == after ? 1 : 0;
  if (before != after) {
    std::fprintf(stderr, "inherited: before the fork%s\nafter the child%s\n", before.c_str(), after.c_str());
  }
  const std::uint64_t v = 42;
  std::memcpy(claim->payload().data(), &v, sizeof v);
  claim->commit();
  (void)test::eventually([&] { return handled.load() >= 1; }, std::chrono::seconds(30));
  running->stop();
  r->handled = handled.load();
  r->value = value.load();
  return 0;
});

// A forked child that destroys the producer, claim and group handles it inherited
// leaves the parent's slots alone (they are the parent's, which goes on using them) and
// does not end on the parent's worker threads, which do not exist in it: the parent's
// open claim then commits and its running group handles it.
TEST(Process, HandlesAForkedChildInheritedAreLetGoWithoutTouchingTheParents) {
  SharedBlock<InheritedReport> r;
  ASSERT_EQ(reap(spawn_child("inherited", {r.fd_arg()})), 0);
  EXPECT_EQ(r->child_exit, 0);
  EXPECT_EQ(r->slots_unchanged, 1);
  EXPECT_EQ(r->handled, 1u);
  EXPECT_EQ(r->value, 42u);
}

TEST(Process, ForkedProducersAndGroupsDeliverExactlyOnce) {
  test::set_deadline_scale(2);
  constexpr std::uint32_t kProducers = 3;
  constexpr std::uint64_t kEach = 200'000;
  test::TempSegment seg({.capacity = 1 << 20, .max_event = 256, .key_slots = 4096}, "proc");
  SharedBlock<Results> r;
  // Register both groups before any event exists, so that they see all of them.
  { ConsumerGroup::join(seg.segment(), "a", {.workers = 2}); }
  { ConsumerGroup::join(seg.segment(), "b"); }
  const pid_t ca = start_consumer(seg.location(), "a", 0, 2, r);
  const pid_t cb = start_consumer(seg.location(), "b", 1, 1, r);
  std::vector<pid_t> producers;
  for (std::uint32_t i = 0; i < kProducers; ++i) producers.push_back(start_producer(seg.location(), i, kEach, 500));
  for (pid_t p : producers) EXPECT_EQ(reap(p), 0);
  ASSERT_TRUE(test::eventually(
      [&] { return r->handled[0].load() >= kProducers * kEach && r->handled[1].load() >= kProducers * kEach; },
      std::chrono::minutes(5)));
  r->quit.store(1);
  EXPECT_EQ(reap(ca), 0);
  EXPECT_EQ(reap(cb), 0);
  for (int g = 0; g < 2; ++g) {
    std::uint64_t wrong = 0;
    for (std::uint32_t p = 0; p < kProducers; ++p) {
      for (std::uint64_t n = 0; n < kEach; ++n) wrong += r->count[g][p * kMaxPerProducer + n].load() != 1;
    }
    EXPECT_EQ(wrong, 0u) << "group " << g << ": events not delivered exactly once";
    EXPECT_EQ(r->handled[g].load(), kProducers * kEach);
  }
  EXPECT_EQ(r->order_errors.load(), 0u);
  EXPECT_EQ(r->bad_payload.load(), 0u);
  EXPECT_EQ(read_stats(seg.segment()).published, kProducers * kEach);
}

TEST(Process, KilledConsumerResumesFromItsCursorWithNothingLost) {
  test::set_deadline_scale(2);
  constexpr std::uint64_t kEvents = 300'000;
  constexpr std::uint32_t kWorkers = 2;
  test::TempSegment seg({.capacity = 256 * 1024, .max_event = 256, .key_slots = 4096}, "kill");
  SharedBlock<Results> r;
  { ConsumerGroup::join(seg.segment(), "g", {.workers = kWorkers}); }
  const pid_t producer = start_producer(seg.location(), 0, kEvents, 300);

  std::mt19937 rng(12345);
  int kills = 0;
  // About 50 kills land in an unsanitized build. Under TSan an incarnation handles a few
  // hundred events before its kill, which without a cap made about 1,000 kills and two
  // minutes; after the last kill the rest drains through the last incarnation.
  constexpr int kMaxKills = 60;
  // Handlers take ~2 us, so that the kills land while events are being handled.
  pid_t consumer = start_consumer(seg.location(), "g", 0, kWorkers, r, 2000);
  while (r->handled[0].load() < kEvents * 9 / 10 && kills < kMaxKills) {
    // Kill only once this incarnation has handled something (a slow start, e.g. under a
    // sanitizer, must not turn into a loop of kills before any progress), then at a
    // random moment.
    const std::uint64_t before = r->handled[0].load();
    while (r->handled[0].load() == before && r->handled[0].load() < kEvents * 9 / 10) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 20000));
    ::kill(consumer, SIGKILL);
    EXPECT_EQ(reap(consumer), 128 + SIGKILL);
    ++kills;
    // A new process takes over the dead one's workers and resumes from their cursors.
    consumer = start_consumer(seg.location(), "g", 0, kWorkers, r, 2000);
  }
  EXPECT_EQ(reap(producer), 0);
  ASSERT_TRUE(test::eventually(
      [&] {
        const SegmentStats s = read_stats(seg.segment());
        return s.groups.at(0).cursor == s.tail;
      },
      std::chrono::minutes(5)));
  r->quit.store(1);
  EXPECT_EQ(reap(consumer), 0);

  std::uint64_t lost = 0, duplicated = 0;
  for (std::uint64_t n = 0; n < kEvents; ++n) {
    const std::uint8_t c = r->count[0][n].load();
    lost += c == 0;
    duplicated += c > 1 ? c - 1 : 0;
  }
  EXPECT_GE(kills, 20);
  EXPECT_EQ(lost, 0u) << "after " << kills << " kills";
  // The cursor moves after each event: a kill redelivers at most the event each worker
  // was handling.
  EXPECT_LE(duplicated, static_cast<std::uint64_t>(kills) * kWorkers);
  EXPECT_EQ(r->order_errors.load(), 0u);
  EXPECT_EQ(r->bad_payload.load(), 0u);
  std::printf("consumer killed %d times: %llu events, lost %llu, redelivered %llu\n", kills,
              static_cast<unsigned long long>(kEvents), static_cast<unsigned long long>(lost),
              static_cast<unsigned long long>(duplicated));
}

// The test harness: a child never outlives its parent.
struct ChildPid {
  std::atomic<int> pid;
};

// Child: "loop-forever LEDGER_FD": says its pid, then spins until killed.
const test::ChildRole loop_forever("loop-forever", [](const std::vector<std::string>& a) -> int {
  SharedBlock<ChildPid> said(std::stoi(a.at(0)));
  said->pid.store(::getpid());
  for (;;) {
  }
});

// Child: "spawn-and-exit LEDGER_FD": spawns a loop-forever child, waits for its pid,
// and exits without reaping or killing it.
const test::ChildRole spawn_and_exit("spawn-and-exit", [](const std::vector<std::string>& a) -> int {
  SharedBlock<ChildPid> said(std::stoi(a.at(0)));
  spawn_child("loop-forever", {a.at(0)});
  return test::eventually([&] { return said->pid.load() != 0; }, std::chrono::seconds(30)) ? 0 : 9;
});

// A test process killed (by the watchdog, or by hand) takes its children with it: a
// child left spinning would take a CPU from what runs next.
TEST(TestHarness, AChildDiesWithItsParent) {
  SharedBlock<ChildPid> said;
  ASSERT_EQ(reap(spawn_child("spawn-and-exit", {said.fd_arg()})), 0);
  const pid_t orphan = said->pid.load();
  ASSERT_GT(orphan, 0);
  // Gone, or a zombie its new parent has not reaped yet.
  const auto gone = [&] {
    std::ifstream stat("/proc/" + std::to_string(orphan) + "/stat");
    std::string pid, comm, state;
    return !(stat >> pid >> comm >> state) || state == "Z";
  };
  EXPECT_TRUE(test::eventually(gone, std::chrono::seconds(10))) << "pid " << orphan << " outlived its parent";
  if (!gone()) ::kill(orphan, SIGKILL);
}

}  // namespace
}  // namespace ringbus
