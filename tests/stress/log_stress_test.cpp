// N producers x M consumer workers on one segment, under ThreadSanitizer in CI.
// Every test checks exactly-once delivery per group, per-key order with gap-free
// key_seq, and payload checksums. RINGBUS_STRESS_EVENTS scales the event count.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/error.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/tail_reader.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::TempSegment;

std::uint64_t stress_events(std::uint64_t fallback) {
  if (const char* env = std::getenv("RINGBUS_STRESS_EVENTS")) return std::strtoull(env, nullptr, 10);
  return fallback;
}

struct Payload {
  std::uint32_t producer;
  std::uint32_t tag;  // test-specific
  std::uint64_t n;
  std::uint64_t check;
};

std::uint64_t check_of(std::uint32_t producer, std::uint64_t n) { return mix64((std::uint64_t{producer} << 40) ^ n); }

struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// What one worker saw. A key always routes to the same worker, so each checker is
// used by one thread only.
struct Checker {
  std::unordered_map<std::uint64_t, std::uint64_t> last_seq;
  std::uint64_t count = 0;
  std::uint64_t checksum = 0;
  std::uint64_t out_of_order = 0;  // key_seq not greater than the last one
  std::uint64_t gaps = 0;          // key_seq skipped (only allowed where voids exist)
  std::uint64_t bad_payload = 0;

  void on(const Event& e) {
    Payload p{};
    if (e.payload().size() != sizeof p) {
      ++bad_payload;
      return;
    }
    std::memcpy(&p, e.payload().data(), sizeof p);
    if (p.check != check_of(p.producer, p.n)) ++bad_payload;
    ++count;
    checksum += p.check;
    if (e.key() != 0) {
      std::uint64_t& last = last_seq[e.key()];
      if (e.key_seq() <= last) ++out_of_order;
      if (e.key_seq() > last + 1) gaps += e.key_seq() - last - 1;
      last = e.key_seq();
    }
  }
};

struct GroupRun {
  ConsumerGroup group;
  std::vector<std::unique_ptr<Checker>> checkers;
  std::atomic<std::uint64_t> delivered{0};

  GroupRun(const Segment& seg, const char* name, std::uint32_t workers, WaitStrategy wait,
           std::uint32_t trail_bytes = 0)
      : group(ConsumerGroup::join(seg, name, {.workers = workers, .wait = wait, .trail_bytes = trail_bytes})) {
    for (std::uint32_t i = 0; i < workers; ++i) checkers.push_back(std::make_unique<Checker>());
  }
  void start() {
    const std::uint32_t n = group.workers();
    group.start([this, n](const Event& e) {
      checkers[route(e.key(), e.producer_id(), n)]->on(e);
      delivered.fetch_add(1, std::memory_order_relaxed);
    });
  }
  Checker total() const {
    Checker t;
    for (const auto& c : checkers) {
      t.count += c->count;
      t.checksum += c->checksum;
      t.out_of_order += c->out_of_order;
      t.gaps += c->gaps;
      t.bad_payload += c->bad_payload;
      for (auto& [k, s] : c->last_seq) {
        EXPECT_EQ(t.last_seq.count(k), 0u) << "key " << k << " was handled by two workers";
        t.last_seq[k] = s;
      }
    }
    return t;
  }
};

// What the producer threads of a test published: events per key (0: unkeyed) and the
// sum of their checks, each thread's tally merged once it is done.
struct Published {
  explicit Published(std::uint64_t keys) : per_key(keys + 1, 0) {}
  void add(const std::vector<std::uint64_t>& mine, std::uint64_t sum) {
    std::lock_guard lock(mu);
    check_sum += sum;
    for (std::size_t k = 0; k < per_key.size(); ++k) per_key[k] += mine[k];
  }
  [[nodiscard]] std::uint64_t events() const {
    return std::accumulate(per_key.begin(), per_key.end(), std::uint64_t{0});
  }

  std::mutex mu;
  std::vector<std::uint64_t> per_key;
  std::uint64_t check_sum = 0;
};

TEST(Stress, ProducersKeysGroupsWorkersExactlyOnceInKeyOrder) {
  test::set_deadline_scale(3);
  const std::uint64_t total = stress_events(1'000'000);
  constexpr std::uint32_t kProducers = 3;
  constexpr std::uint64_t kKeys = 1000;
  SegmentOptions o;
  o.capacity = 256 * 1024;  // small: wraps often and exercises back-pressure
  o.max_event = 1024;
  o.key_slots = 4096;
  TempSegment seg(o, "stress");
  GroupRun a(seg.segment(), "a", 2, WaitStrategy::spin_yield(64));
  // b trails the tail by 8 KiB (GroupOptions::trail_bytes): the same guarantees.
  GroupRun b(seg.segment(), "b", 2, WaitStrategy::spin_yield(64), 8 * 1024);
  a.start();
  b.start();

  Published tally(kKeys);
  std::vector<std::thread> producers;
  for (std::uint32_t t = 0; t < kProducers; ++t) {
    producers.emplace_back([&, t] {
      Producer p = Producer::attach(seg.segment(), {.wait = WaitStrategy::spin_yield(64)});
      Rng rng{0x9e3779b97f4a7c15ull * (t + 1)};
      std::vector<std::uint64_t> mine(kKeys + 1, 0);
      std::uint64_t sum = 0;
      const std::uint64_t n = total / kProducers + (t < total % kProducers ? 1 : 0);
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint64_t key = 1 + rng.next() % kKeys;
        const Payload pl{t, 0, i, check_of(t, i)};
        if (i % 64 == 63) {
          // Now and then a batch of 4 under one claim, same key.
          Claim c;
          ASSERT_EQ(p.claim_batch(key, 1, sizeof pl, 4, c), Status::ok);
          for (std::uint32_t k = 0; k < 4; ++k) {
            const Payload bp{t, 1, (1ull << 40) + i * 4 + k, check_of(t, (1ull << 40) + i * 4 + k)};
            std::memcpy(c.payload(k).data(), &bp, sizeof bp);
            sum += bp.check;
          }
          c.commit();
          mine[key] += 4;
          continue;
        }
        ASSERT_EQ(p.publish(key, 1, std::as_bytes(std::span(&pl, 1))), Status::ok);
        sum += pl.check;
        ++mine[key];
      }
      tally.add(mine, sum);
    });
  }
  for (auto& t : producers) t.join();
  const std::uint64_t published = tally.events();

  ASSERT_TRUE(test::eventually([&] { return a.delivered.load() >= published && b.delivered.load() >= published; },
                               std::chrono::minutes(10)));
  a.group.stop();
  b.group.stop();
  for (GroupRun* g : {&a, &b}) {
    const Checker t = g->total();
    EXPECT_EQ(t.count, published) << "each event exactly once per group";
    EXPECT_EQ(t.checksum, tally.check_sum);
    EXPECT_EQ(t.bad_payload, 0u);
    EXPECT_EQ(t.out_of_order, 0u);
    EXPECT_EQ(t.gaps, 0u);
    for (std::uint64_t k = 1; k <= kKeys; ++k) {
      const auto it = t.last_seq.find(k);
      const std::uint64_t last = it == t.last_seq.end() ? 0 : it->second;
      ASSERT_EQ(last, tally.per_key[k]) << "key " << k << ": last key_seq seen vs events published";
      ASSERT_EQ(seg.segment().was_last_key_seq(k), tally.per_key[k]);
    }
  }
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(s.published, published);
  EXPECT_GT(s.back_pressure, 0u) << "a 256 KiB ring should have pushed back";
}

// Threads attach, publish a turn and detach, over and over, each time exclusively or not
// at random. An exclusive producer moves the tail with a plain store, so one attached
// beside any other producer would overwrite its claims. The attach protocol (a Dekker
// pair on the slot and the exclusive word) must keep them apart: an exclusive holder
// finds no other producer counted as attached, and every event arrives exactly once with
// key_seq gap-free across the hand-overs.
TEST(Stress, ExclusiveAndSharedProducersTakeTurnsAndNothingIsLost) {
  test::set_deadline_scale(2);
  const std::uint64_t total = stress_events(1'000'000) / 8;
  constexpr std::uint32_t kThreads = 4;
  constexpr std::uint64_t kKeys = 8;
  constexpr std::uint64_t kTurn = 64;  // events a turn
  TempSegment seg({.capacity = 128 * 1024, .max_event = 256, .key_slots = 64}, "exclusive");
  GroupRun g(seg.segment(), "g", 2, WaitStrategy::spin_yield(64));
  g.start();

  std::atomic<std::uint32_t> attached_now{0};
  std::atomic<std::uint64_t> exclusive_turns{0}, shared_turns{0}, refused{0}, overlaps{0};
  Published tally(kKeys);
  std::vector<std::thread> threads;
  for (std::uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng{0x2545f4914f6cdd1dull * (t + 1)};
      std::vector<std::uint64_t> mine(kKeys + 1, 0);
      std::uint64_t sum = 0;
      std::uint64_t i = 0;
      const std::uint64_t n = total / kThreads;
      while (i < n) {
        const bool exclusive = rng.next() % 2 == 0;
        Producer p;
        try {
          p = Producer::attach(seg.segment(), {.wait = WaitStrategy::spin_yield(64), .exclusive = exclusive});
        } catch (const Error& e) {
          ASSERT_EQ(e.code(), Errc::busy) << e.what();
          refused.fetch_add(1, std::memory_order_relaxed);
          std::this_thread::yield();
          continue;
        }
        const std::uint32_t others = attached_now.fetch_add(1);
        if (exclusive && others != 0) overlaps.fetch_add(1);
        for (std::uint64_t k = 0; k < kTurn && i < n; ++k, ++i) {
          const std::uint64_t key = rng.next() % (kKeys + 1);  // 0: unkeyed
          const Payload pl{t, 0, i, check_of(t, i)};
          ASSERT_EQ(p.publish(key, 1, std::as_bytes(std::span(&pl, 1))), Status::ok);
          sum += pl.check;
          ++mine[key];
        }
        const std::uint32_t now = attached_now.fetch_sub(1);
        if (exclusive && now != 1) overlaps.fetch_add(1);
        (exclusive ? exclusive_turns : shared_turns).fetch_add(1, std::memory_order_relaxed);
      }
      tally.add(mine, sum);
    });
  }
  for (auto& t : threads) t.join();
  const std::uint64_t published = tally.events();
  ASSERT_TRUE(test::eventually([&] { return g.delivered.load() >= published; }, std::chrono::minutes(10)));
  g.group.stop();

  EXPECT_EQ(overlaps.load(), 0u) << "an exclusive producer was attached beside another";
  EXPECT_GT(exclusive_turns.load(), 0u);
  EXPECT_GT(shared_turns.load(), 0u);
  const Checker c = g.total();
  EXPECT_EQ(c.count, published) << "each event exactly once";
  EXPECT_EQ(c.checksum, tally.check_sum);
  EXPECT_EQ(c.bad_payload, 0u);
  EXPECT_EQ(c.out_of_order, 0u);
  EXPECT_EQ(c.gaps, 0u);
  for (std::uint64_t k = 1; k <= kKeys; ++k) EXPECT_EQ(seg.segment().was_last_key_seq(k), tally.per_key[k]) << k;
  EXPECT_EQ(seg.segment().refs().control->exclusive.load(), 0u);
  std::printf("exclusive turns %llu, shared turns %llu, attaches refused %llu\n",
              static_cast<unsigned long long>(exclusive_turns.load()),
              static_cast<unsigned long long>(shared_turns.load()), static_cast<unsigned long long>(refused.load()));
}

TEST(Stress, AbortedClaimsKeepKeySeqGapFree) {
  test::set_deadline_scale(2);
  const std::uint64_t total = stress_events(1'000'000) / 4;
  constexpr std::uint64_t kKeys = 50;  // few keys: aborts race with other producers' claims
  TempSegment seg({.capacity = 128 * 1024, .max_event = 256, .key_slots = 256}, "abort");
  GroupRun g(seg.segment(), "g", 2, WaitStrategy::spin_yield(64));
  g.start();
  std::atomic<std::uint64_t> committed{0}, aborted{0};
  std::vector<std::thread> producers;
  for (std::uint32_t t = 0; t < 3; ++t) {
    producers.emplace_back([&, t] {
      Producer p = Producer::attach(seg.segment());
      Rng rng{77 + t};
      for (std::uint64_t i = 0; i < total / 3; ++i) {
        const std::uint64_t key = 1 + rng.next() % kKeys;
        Claim c;
        ASSERT_EQ(p.claim(key, 1, sizeof(Payload), c), Status::ok);
        const Payload pl{t, 0, i, check_of(t, i)};
        std::memcpy(c.payload().data(), &pl, sizeof pl);
        if (rng.next() % 50 == 0) {
          c.abort();
          aborted.fetch_add(1);
        } else {
          c.commit();
          committed.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : producers) t.join();
  ASSERT_TRUE(test::eventually([&] { return g.delivered.load() >= committed.load(); }, std::chrono::minutes(5)));
  // Let the workers pass the trailing void records too.
  ASSERT_TRUE(test::eventually([&] {
    const SegmentStats s = read_stats(seg.segment());
    return s.groups.at(0).worker.at(0).cursor == s.tail && s.groups.at(0).worker.at(1).cursor == s.tail;
  }));
  g.group.stop();
  const Checker t = g.total();
  EXPECT_EQ(t.count, committed.load());
  EXPECT_EQ(t.out_of_order, 0u);
  std::uint64_t last_sum = 0;
  for (std::uint64_t k = 1; k <= kKeys; ++k) last_sum += seg.segment().was_last_key_seq(k);
  const SegmentStats s = read_stats(seg.segment());
  const std::uint64_t voids = s.groups.at(0).worker.at(0).voids + s.groups.at(0).worker.at(1).voids;
  EXPECT_EQ(t.gaps, voids) << "every key_seq the handlers did not see is a void record";
  EXPECT_EQ(last_sum, t.count + voids) << "key_seq 1..last is handled or void, for every key";
  EXPECT_LE(voids, aborted.load());
}

TEST(Stress, ExpectedSequenceAppendsUnderContention) {
  test::set_deadline_scale(2);
  const std::uint64_t attempts = stress_events(1'000'000) / 20;
  constexpr std::uint64_t kKeys = 20;
  TempSegment seg({.capacity = 256 * 1024, .max_event = 256, .key_slots = 256}, "expect");
  GroupRun g(seg.segment(), "g", 2, WaitStrategy::spin_yield(64));
  // Each event records the key_seq it expected; it must land at expected + 1.
  std::atomic<std::uint64_t> mismatched{0};
  const std::uint32_t n = g.group.workers();
  g.group.start([&](const Event& e) {
    Payload p{};
    std::memcpy(&p, e.payload().data(), sizeof p);
    if (p.n + 1 != e.key_seq()) mismatched.fetch_add(1);
    g.checkers[route(e.key(), e.producer_id(), n)]->on(e);
    g.delivered.fetch_add(1);
  });
  std::vector<std::atomic<std::uint64_t>> wins(kKeys + 1);
  std::atomic<std::uint64_t> conflicts{0};
  std::vector<std::thread> writers;
  // On two CPUs a writer can finish its share within one time slice, before another
  // starts: the writers start together, and each goes on past its share (up to 50
  // times it) until some append has met a conflict, so that the conflict path runs.
  constexpr std::uint32_t kWriters = 4;
  std::atomic<std::uint32_t> started{0};
  for (std::uint32_t t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      Producer p = Producer::attach(seg.segment());
      Rng rng{1234 + t};
      started.fetch_add(1);
      while (started.load() < kWriters) std::this_thread::yield();
      const std::uint64_t share = attempts / kWriters;
      for (std::uint64_t i = 0; i < share || (conflicts.load() == 0 && i < 50 * share); ++i) {
        const std::uint64_t key = 1 + rng.next() % kKeys;
        const std::uint64_t expected = seg.segment().was_last_key_seq(key);
        const Payload pl{t, 0, expected, check_of(t, expected)};
        const Status s = p.publish_expected(key, expected, 1, std::as_bytes(std::span(&pl, 1)));
        if (s == Status::ok) {
          wins[key].fetch_add(1);
        } else {
          ASSERT_EQ(s, Status::conflict);
          conflicts.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  std::uint64_t won = 0;
  for (std::uint64_t k = 1; k <= kKeys; ++k) {
    EXPECT_EQ(seg.segment().was_last_key_seq(k), wins[k].load());
    won += wins[k].load();
  }
  ASSERT_TRUE(test::eventually([&] { return g.delivered.load() >= won; }, std::chrono::minutes(5)));
  g.group.stop();
  const Checker t = g.total();
  EXPECT_EQ(t.count, won);
  EXPECT_EQ(t.gaps, 0u);
  EXPECT_EQ(t.out_of_order, 0u);
  EXPECT_EQ(mismatched.load(), 0u) << "an append landed at a key_seq other than expected + 1";
  EXPECT_GT(conflicts.load(), 0u) << "four writers on twenty keys should have conflicted";
}

// Producer and workers waiting with `wait` on a 64 KiB ring: `bursts` bursts after an
// idle pause (long enough for the workers to wait), every `big_every`-th one of 2000
// records, about twice the ring, so that the producer waits for the workers as well.
// Every event is delivered once, in key order.
void bursts_through_a_small_ring(const char* prefix, WaitStrategy wait, std::uint32_t workers, std::uint64_t bursts,
                                 std::uint64_t big_every, std::chrono::microseconds idle_before_big,
                                 std::chrono::microseconds idle_before_small) {
  TempSegment seg({.capacity = 64 * 1024, .max_event = 256}, prefix);
  GroupRun g(seg.segment(), "g", workers, wait);
  g.start();
  std::uint64_t sent = 0;
  {
    Producer p = Producer::attach(seg.segment(), {.wait = wait});
    for (std::uint64_t burst = 0; burst < bursts; ++burst) {
      const bool big = burst % big_every == 0;
      std::this_thread::sleep_for(big ? idle_before_big : idle_before_small);
      const std::uint64_t n = big ? 2000 : 3;
      for (std::uint64_t i = 0; i < n; ++i, ++sent) {
        const Payload pl{0, 0, sent, check_of(0, sent)};
        ASSERT_EQ(p.publish(1 + sent % 7, 1, std::as_bytes(std::span(&pl, 1))), Status::ok);
      }
      ASSERT_TRUE(test::eventually([&] { return g.delivered.load() == sent; }, std::chrono::minutes(2)));
    }
  }
  g.group.stop();
  const Checker t = g.total();
  EXPECT_EQ(t.count, sent);
  EXPECT_EQ(t.gaps + t.out_of_order + t.bad_payload, 0u);
}

// Consumers and producers that park on futexes in the segment. Park timeouts are
// 30 s: a lost wake-up shows up as a hang that the watchdog reports, not as a pass.
// A tail reader that a producer laps over and over (no group gates it) returns only whole
// events: each one's payload is that of the event its header names, byte for byte (a
// copy torn by the producer overwriting the record is detected and skipped, counted as
// missed), in order, and a record overwritten while it is read is never taken for
// damage (try_next would throw).
TEST(Stress, ALappedTailReaderReturnsOnlyWholeEvents) {
  TempSegment seg;  // 64 KiB: a lap is a few hundred events
  const std::uint64_t total = stress_events(1'000'000) * 2;
  std::atomic<bool> done{false}, first_read{false};
  TailReader t = TailReader::open(seg.segment(), TailStart::end);  // before the first event
  std::thread producer([&] {
    Producer p = Producer::attach(seg.segment());
    std::array<std::uint64_t, 15> words{};  // a 120-byte payload: the event's number in every word
    for (std::uint64_t n = 1; n <= total; ++n) {
      words.fill(n);
      while (p.try_publish(0, 1, std::as_bytes(std::span(words))) != Status::ok) {
      }
      // A gap is counted from the first event read of a producer on: that one is read.
      while (n == 1 && !first_read.load(std::memory_order_acquire)) {
      }
    }
    done.store(true, std::memory_order_release);
  });
  std::uint64_t read = 0, torn = 0, out_of_order = 0, last = 0;
  std::string error;  // what try_next threw, if anything: the producer is joined all the same
  Event e;
  for (;;) {
    const bool finished = done.load(std::memory_order_acquire);
    bool got = false;
    try {
      got = t.try_next(e);
    } catch (const std::exception& x) {
      error = x.what();
      break;
    }
    if (!got) {
      if (finished) break;
      continue;
    }
    std::array<std::uint64_t, 15> words{};
    ASSERT_EQ(e.payload().size(), sizeof words);
    std::memcpy(words.data(), e.payload().data(), sizeof words);
    if (std::any_of(words.begin(), words.end(), [&](std::uint64_t w) { return w != e.producer_seq(); })) ++torn;
    if (e.producer_seq() <= last) ++out_of_order;
    last = e.producer_seq();
    first_read.store(true, std::memory_order_release);
    // Now and then the reader waits until the producer is two laps ahead, so that it is
    // lapped, often while it copies a record.
    if (++read % 1000 == 0) {
      const std::uint64_t ahead = e.position() + 2 * seg.segment().refs().capacity;
      while (!done.load(std::memory_order_acquire) &&
             seg.segment().refs().control->tail.load(std::memory_order_acquire) < ahead) {
      }
    }
  }
  producer.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(torn, 0u);
  EXPECT_EQ(out_of_order, 0u);
  EXPECT_EQ(last, total) << "the last event is read";
  EXPECT_EQ(read + t.missed(), total) << "every event is read or counted as missed";
  EXPECT_GT(t.resyncs(), 0u) << "the reader was lapped";
}

TEST(Stress, ParkedConsumersAndBlockedProducersAreWoken) {
  test::set_deadline_scale(2);
  bursts_through_a_small_ring("park", WaitStrategy::spin_park(50, 5, std::chrono::seconds(30)), 2, 300, 10,
                              std::chrono::microseconds(2000), std::chrono::microseconds(200));
}

// The other strategies, on both sides: workers idle (busy, yielding or sleeping) between
// bursts, and bursts bigger than the ring hold the producer until the workers make room.
TEST(Stress, EveryWaitStrategyDeliversEverythingAndUnblocksTheProducer) {
  test::set_deadline_scale(2);
  const std::vector<std::pair<const char*, WaitStrategy>> strategies = {
      {"busy_spin", WaitStrategy::busy_spin()},
      {"spin_yield", WaitStrategy::spin_yield(50)},
      {"spin_sleep", WaitStrategy::spin_sleep(std::chrono::microseconds(200), 50)},
  };
  for (const auto& [name, wait] : strategies) {
    SCOPED_TRACE(name);
    // One busy-spinning worker beside the producer fills the two CPUs; more would only
    // take turns with it.
    bursts_through_a_small_ring("wait", wait, wait.kind == WaitStrategy::Kind::busy_spin ? 1 : 2, 40, 4,
                                std::chrono::microseconds(500), std::chrono::microseconds(500));
  }
}

SegmentOptions dead_letter_room() {
  SegmentOptions so = TempSegment::small_options();
  so.dlq_capacity = 1u << 20;
  return so;
}

// Group "g" (one worker, one attempt) with `letters` events in its dead-letter ring:
// key n + 1, payload n (8 bytes), for n < letters.
ConsumerGroup group_with_dead_letters(const TempSegment& seg, std::uint64_t letters) {
  GroupOptions o;
  o.retry.max_attempts = 1;
  o.start = StartFrom::earliest;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  std::uint64_t published = 0;
  {
    Producer p = Producer::attach(seg.segment());
    for (; published < letters; ++published) {
      Claim c;
      const Status s = p.try_claim(published + 1, 7, sizeof published, c);
      if (s != Status::ok) {
        ADD_FAILURE() << "claim refused: " << to_string(s);
        break;
      }
      std::memcpy(c.payload().data(), &published, sizeof published);
      c.commit();
    }
  }
  std::uint64_t failed = 0;
  while (failed < published) failed += g.worker(0).poll([](const Event&) { return Handled::fail; });
  return g;
}

// Two tools republish a group's dead letters at once, and a third marks them for
// redelivery while they do: each dead letter goes back once, by one of them. Republished, it is in
// the log once; marked, it waits for the group's workers and is in the log no more.
TEST(Stress, DeadLettersRepublishedAndRedrivenAtOnceGoBackOnceEach) {
  constexpr std::uint64_t kLetters = 200;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    TempSegment seg(dead_letter_room());
    ConsumerGroup g = group_with_dead_letters(seg, kLetters);
    const std::uint64_t end_of_originals = seg.segment().refs().control->tail.load();
    std::atomic<int> ready{0};
    std::array<std::size_t, 3> done{};
    std::vector<std::thread> tools;
    for (int t = 0; t < 3; ++t) {
      tools.emplace_back([&, t] {
        DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
        Producer p = Producer::attach(seg.segment());
        ready.fetch_add(1);
        while (ready.load() < 3) {
        }
        if (t < 2) {
          done[static_cast<std::size_t>(t)] = dlq.republish(p);
          return;
        }
        // Marks while the republishing is under way: once its first event is in the log.
        while (seg.segment().refs().control->tail.load() == end_of_originals) {
        }
        done[2] = dlq.request_redrive();
      });
    }
    for (std::thread& t : tools) t.join();
    EXPECT_EQ(done[0] + done[1] + done[2], kLetters)
        << "republished " << done[0] << " and " << done[1] << ", marked " << done[2];
    std::vector<int> in_log(kLetters, 0);
    TailReader r = TailReader::open_at(seg.segment(), end_of_originals);
    for (Event e; r.try_next(e);) {
      std::uint64_t n = 0;
      std::memcpy(&n, e.payload().data(), sizeof n);
      ASSERT_LT(n, kLetters);
      ++in_log[n];
    }
    const std::uint64_t republished = std::count(in_log.begin(), in_log.end(), 1);
    EXPECT_EQ(std::count_if(in_log.begin(), in_log.end(), [](int k) { return k > 1; }), 0) << "republished twice";
    EXPECT_EQ(republished, done[0] + done[1]);
    const std::vector<DeadLetter> left = DeadLetters::open(seg.segment(), "g").list();
    EXPECT_EQ(left.size(), done[2]);
    for (const DeadLetter& d : left) {
      std::uint64_t n = 0;
      std::memcpy(&n, d.payload.data(), sizeof n);
      EXPECT_EQ(d.state, "redrive");
      EXPECT_EQ(in_log[n], 0) << "dead letter " << n << " both marked and republished";
    }
  }
}

// A tool lists a group's dead letters, and marks them for redelivery, while the group's
// thread redelivers them and the handler refuses: each listing sees whole entries, and
// every failed call ends up in the attempts. (Under TSan: a failed redelivery's
// attempts and failure time are written under the ring's lock, which a listing holds.)
TEST(Stress, DeadLettersListedWhileTheirRedrivesFail) {
  constexpr std::uint64_t kLetters = 50;
  TempSegment seg(dead_letter_room());
  ConsumerGroup g = group_with_dead_letters(seg, kLetters);
  std::atomic<std::uint64_t> calls{0};
  g.start([&](const Event& e) {
    if (e.redriven()) {
      calls.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(20));  // a listing meanwhile
    }
    return Handled::fail;
  });
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  std::atomic<bool> marking{true};
  std::thread lister([&] {
    const DeadLetters tool = DeadLetters::open(seg.segment(), "g");
    while (marking.load()) {
      for (const DeadLetter& d : tool.list()) {
        std::uint64_t n = 0;
        ASSERT_EQ(d.payload.size(), sizeof n);
        std::memcpy(&n, d.payload.data(), sizeof n);
        ASSERT_LT(n, kLetters);
        ASSERT_GE(d.attempts, 1u);
        ASSERT_GE(d.last_failure_ns, d.first_failure_ns);
      }
    }
  });
  std::uint64_t marked = 0;
  for (int round = 0; round < 200; ++round) {
    marked += dlq.request_redrive();
    std::this_thread::yield();
  }
  marking = false;
  lister.join();
  // Every marked entry is tried once and returned: then the attempts add up.
  ASSERT_TRUE(test::eventually([&] {
    const std::vector<DeadLetter> all = dlq.list();
    return std::all_of(all.begin(), all.end(), [](const DeadLetter& d) { return d.state == "ready"; });
  }));
  g.stop();
  std::uint64_t attempts = 0;
  for (const DeadLetter& d : dlq.list()) attempts += d.attempts;
  EXPECT_EQ(dlq.list().size(), kLetters);
  EXPECT_EQ(calls.load(), marked);
  EXPECT_EQ(attempts, kLetters + marked);
}

}  // namespace
}  // namespace ringbus
