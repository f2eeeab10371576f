// Retries, dead letters, redrive, consumer-group dedup, redelivery marks, voids.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/detail/robust_lock.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/error.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "process_support.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::TempSegment;
using test::value_of;

void publish(Producer& p, std::uint64_t key, std::uint64_t v) {
  ASSERT_EQ(p.publish(key, 7, std::as_bytes(std::span(&v, 1))), Status::ok);
}

template <class H>
std::size_t drain(Worker& w, H&& h) {
  std::size_t n = 0, got = 0;
  do {
    got = w.poll(h, 1000);
    n += got;
  } while (got != 0 || w.pending() != 0);
  return n;
}

const WorkerStats& worker_stats(const SegmentStats& s, std::size_t g = 0, std::size_t w = 0) {
  return s.groups.at(g).worker.at(w);
}

// Deferred retries: up to `max_attempts` handler calls, the first retry `delay` later.
GroupOptions deferred_retries(std::uint32_t max_attempts, std::chrono::nanoseconds delay) {
  GroupOptions o;
  o.retry.max_attempts = max_attempts;
  o.retry.backoff = RetryPolicy::Backoff::deferred;
  o.retry.delay = delay;
  return o;
}

// Group `group` of `seg`, whose handler gave up at once on each of three events (values
// 0, 1 and 2 under keys 10, 11 and 12): dead letters 1, 2 and 3.
ConsumerGroup three_dead_letters(const TempSegment& seg, const char* group) {
  GroupOptions o;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), group, o);
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 3; ++v) publish(p, 10 + v, v);
  drain(g.worker(0), [](const Event&) { return Handled::fail; });
  return g;
}

TEST(DeadLetters, AFailingEventIsParkedWithItsErrorAndTheWorkerMovesOn) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 2;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "orders", o);
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 5; ++v) publish(p, 10 + v, v);
  std::vector<std::uint64_t> ok;
  int calls_on_2 = 0;
  drain(g.worker(0), [&](const Event& e) {
    if (value_of(e) == 2) {
      ++calls_on_2;
      throw std::runtime_error("price feed unavailable");
    }
    ok.push_back(value_of(e));
  });
  EXPECT_EQ(ok, (std::vector<std::uint64_t>{0, 1, 3, 4})) << "the failing event does not block the others";
  EXPECT_EQ(calls_on_2, 2);

  DeadLetters dlq = DeadLetters::open(seg.segment(), "orders");
  const auto letters = dlq.list();
  ASSERT_EQ(letters.size(), 1u);
  const DeadLetter& d = letters[0];
  EXPECT_EQ(d.id, 1u);
  EXPECT_EQ(d.state, "ready");
  EXPECT_EQ(d.attempts, 2u);
  EXPECT_EQ(d.worker, 0u);
  EXPECT_EQ(d.message, "price feed unavailable");
  EXPECT_EQ(d.header.key, 12u);
  EXPECT_EQ(d.header.type_id, 7u);
  EXPECT_EQ(key_seq_of(d.header.key_seq_flags), 1u);
  ASSERT_EQ(d.payload.size(), 8u);
  std::uint64_t v = 0;
  std::memcpy(&v, d.payload.data(), 8);
  EXPECT_EQ(v, 2u);
  EXPECT_GT(d.first_failure_ns, 0u);
  EXPECT_GE(d.last_failure_ns, d.first_failure_ns);
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(worker_stats(s).dead_lettered, 1u);
  EXPECT_EQ(worker_stats(s).consumed, 4u);
  EXPECT_EQ(worker_stats(s).retries, 1u);
  EXPECT_EQ(s.groups.at(0).dead_letters, 1u);
  EXPECT_EQ(s.groups.at(0).cursor, s.tail) << "the cursor passed the parked event";
}

// A dead-letter ring whose bounds in shared memory are damaged cannot take the event:
// the worker stops on it (HandlerFailed, naming why), never skips it or drops it.
TEST(DeadLetters, ADamagedRingStopsTheWorkerOnTheEventInsteadOfDroppingIt) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "orders", o);
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 3; ++v) publish(p, 10 + v, v);
  layout::DlqControl& c = *seg.segment().refs().dlq_control(0);
  c.head.store(64);
  c.tail.store(8);  // behind the head: no ring looks like this
  std::vector<std::uint64_t> ok;
  auto handler = [&](const Event& e) {
    if (value_of(e) == 1) throw std::runtime_error("no stock service");
    ok.push_back(value_of(e));
  };
  try {
    drain(g.worker(0), handler);
    ADD_FAILURE() << "the event was neither parked nor reported";
  } catch (const HandlerFailed& f) {
    EXPECT_NE(std::string(f.what()).find("no stock service"), std::string::npos) << f.what();
    EXPECT_NE(std::string(f.what()).find("cannot be parked in the dead-letter ring (corrupt)"), std::string::npos)
        << f.what();
  }
  EXPECT_EQ(ok, (std::vector<std::uint64_t>{0}));
  // Repaired, the same event is parked and the worker goes on.
  c.head.store(0);
  c.tail.store(0);
  drain(g.worker(0), handler);
  EXPECT_EQ(ok, (std::vector<std::uint64_t>{0, 2}));
  const auto letters = DeadLetters::open(seg.segment(), "orders").list();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].header.key, 11u);
}

// Shared memory is untrusted: listing a dead-letter ring whose bounds or entries are
// damaged names what is wrong and where, instead of showing a ring cut short; purging
// such a ring stops at the damage, never looping on it or moving the head past the tail.
TEST(DeadLetters, ListingADamagedRingNamesTheDamage) {
  TempSegment seg;
  ConsumerGroup g = three_dead_letters(seg, "orders");
  const DeadLetters dlq = DeadLetters::open(seg.segment(), "orders");
  ASSERT_EQ(dlq.list().size(), 3u);

  namespace st = layout::dlq_state;
  const detail::SegmentRefs& r = seg.segment().refs();
  layout::DlqControl& c = *r.dlq_control(0);
  const std::uint64_t cap = r.dlq_capacity;
  auto entry_at = [&](std::uint64_t pos) {
    return reinterpret_cast<layout::DlqEntry*>(r.dlq_ring(0) + (pos & (cap - 1)));
  };
  const std::uint64_t tail = c.tail.load();
  const std::uint64_t second = st::bytes(entry_at(0)->state_bytes.load());  // where the second entry starts
  const std::uint64_t word = entry_at(second)->state_bytes.load();
  auto list_error = [&]() -> std::string {
    try {
      (void)dlq.list();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt);
      return e.what();
    }
    return "no error";
  };
  const std::string damaged = "segment " + seg.location().display() + " group \"orders\": dead-letter ring damaged: ";
  const std::string bounds = " bytes (head 0, tail " + std::to_string(tail) + ", capacity " + std::to_string(cap) + ")";

  c.tail.store(tail + 4);
  EXPECT_EQ(list_error(), damaged + "head 0 and tail " + std::to_string(tail + 4) + " cannot bound a ring of " +
                              std::to_string(cap) + " bytes");
  c.tail.store(tail);
  // A size not a multiple of 8, one running past the tail, one too small for an entry.
  for (const std::uint64_t bytes : {st::bytes(word) + 4, tail - second + 8, std::uint64_t{8}}) {
    entry_at(second)->state_bytes.store(st::make(st::ready, bytes));
    EXPECT_EQ(list_error(), damaged + "the entry at ring position " + std::to_string(second) + " says it takes " +
                                std::to_string(bytes) + bounds);
  }
  entry_at(second)->state_bytes.store(word);
  // Lengths that do not add up to the entry's size.
  const std::uint32_t message_len = entry_at(second)->message_len;
  entry_at(second)->message_len = message_len + 8;
  EXPECT_EQ(list_error(), damaged + "the entry at ring position " + std::to_string(second) +
                              " (id 2) holds a payload of 8 bytes and a message of " +
                              std::to_string(message_len + 8) + " bytes, which do not make its " +
                              std::to_string(st::bytes(word)) + " bytes");
  entry_at(second)->message_len = message_len;
  EXPECT_EQ(dlq.list().size(), 3u) << "repaired, the ring lists as before";

  // A removed entry of no bytes, or of more than the ring holds, at the head.
  const std::uint64_t first = entry_at(0)->state_bytes.load();
  DeadLetters purging = DeadLetters::open(seg.segment(), "orders");
  for (const std::uint64_t bytes : {std::uint64_t{0}, tail + 64}) {
    entry_at(0)->state_bytes.store(st::make(st::removed, bytes));
    EXPECT_EQ(purging.purge(), 0u);
    EXPECT_EQ(c.head.load(), 0u);
    EXPECT_EQ(purging.stats().bytes_used, tail);
  }
  entry_at(0)->state_bytes.store(first);

  // Marked for redelivery, an entry whose lengths are damaged is left where it is; the
  // worker delivers the others.
  EXPECT_EQ(DeadLetters::open(seg.segment(), "orders").request_redrive(), 3u);
  entry_at(second)->message_len = message_len + 8;
  std::vector<std::uint64_t> redriven;
  g.worker(0).poll_redrives([&](const Event& e) {
    redriven.push_back(value_of(e));
    return Handled::ok;
  });
  EXPECT_EQ(redriven, (std::vector<std::uint64_t>{0, 2}));
  entry_at(second)->message_len = message_len;
  const auto left = dlq.list();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id, 2u);
  EXPECT_EQ(left[0].state, "redrive");

  // An entry that would run past the ring's end: 128 bytes starting 16 before it.
  c.head.store(cap - 16);
  c.tail.store(cap - 16 + 128);
  entry_at(cap - 16)->state_bytes.store(st::make(st::ready, 128));
  EXPECT_EQ(list_error(), damaged + "the entry at ring position " + std::to_string(cap - 16) +
                              " says it takes 128 bytes (head " + std::to_string(cap - 16) + ", tail " +
                              std::to_string(cap + 112) + ", capacity " + std::to_string(cap) + ")");
}

// An entry that fits exactly before the ring's end goes there, with no filler: the next
// one starts the next lap.
TEST(DeadLetters, AnEntryThatFitsTheLapsEndExactlyTakesIt) {
  TempSegment seg;
  ConsumerGroup g = three_dead_letters(seg, "g");
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  layout::DlqControl& c = *seg.segment().refs().dlq_control(0);
  const std::uint64_t cap = seg.segment().refs().dlq_capacity;
  const std::uint64_t entry = c.tail.load() / 3;  // three entries of one size
  ASSERT_EQ(dlq.purge(), 3u);
  ASSERT_EQ(dlq.stats().bytes_used, 0u);
  c.head.store(2 * cap - entry);  // an empty ring whose next entry ends exactly at a lap's end
  c.tail.store(2 * cap - entry);
  Producer p = Producer::attach(seg.segment());
  publish(p, 20, 20);
  drain(g.worker(0), [](const Event&) { return Handled::fail; });
  EXPECT_EQ(c.tail.load(), 2 * cap);
  EXPECT_EQ(dlq.stats().bytes_used, entry) << "no filler";
  publish(p, 21, 21);
  drain(g.worker(0), [](const Event&) { return Handled::fail; });
  EXPECT_EQ(dlq.stats().bytes_used, 2 * entry);
  const auto letters = dlq.list();
  ASSERT_EQ(letters.size(), 2u);
  EXPECT_EQ(letters[0].header.key, 20u);
  EXPECT_EQ(letters[1].header.key, 21u);
}

// A segment whose dead-letter ring holds a few of the twelve 500-byte events published
// into it (keys 1 to 12), and a group of one worker whose handler fails each once.
struct SmallDeadLetterRing {
  static SegmentOptions options() {
    SegmentOptions so = TempSegment::small_options();
    so.max_event = 512;
    so.dlq_capacity = 4096;  // a few dead letters of 1 KiB
    return so;
  }
  static constexpr int kEvents = 12;
  TempSegment seg{options()};
  void publish_all() {
    Producer p = Producer::attach(seg.segment());
    const std::string big(500, 'x');
    for (int i = 0; i < kEvents; ++i) ASSERT_EQ(p.publish(1 + i, 1, std::as_bytes(std::span(big))), Status::ok);
  }
};

TEST(DeadLetters, AFullRingHoldsTheWorkerInsteadOfDroppingTheEvent) {
  SmallDeadLetterRing ring;
  TempSegment& seg = ring.seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  ring.publish_all();
  std::size_t handled = 0;
  auto fail_all = [&](const Event&) -> Handled {
    ++handled;
    return Handled::fail;
  };
  while (g.worker(0).poll(fail_all, 100) != 0) {
  }
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  const std::size_t parked = dlq.list().size();
  EXPECT_GE(parked, 3u);
  EXPECT_LT(parked, 12u) << "the ring must have filled";
  EXPECT_GE(g.worker(0).pending(), 1u) << "the event that did not fit waits";
  EXPECT_GT(dlq.stats().full_waits, 0u);
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_LT(s.groups.at(0).cursor, s.tail) << "the cursor holds at the waiting event";
  // Room again: everything ends up parked, nothing dropped.
  std::size_t total = parked;
  for (int round = 0; round < 20 && total < 12; ++round) {
    EXPECT_GT(dlq.purge(), 0u);
    drain(g.worker(0), fail_all);
    total += dlq.list().size();
  }
  EXPECT_EQ(total, 12u);
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).cursor, read_stats(seg.segment()).tail);
}

// While the ring stays full, each waiting event is tried again a millisecond after its
// last try, however often the worker is polled: not at each poll, taking the ring's lock.
TEST(DeadLetters, AFullRingIsTriedAgainAMillisecondAfterEachTry) {
  using std::chrono::steady_clock;
  SmallDeadLetterRing ring;
  GroupOptions o;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(ring.seg.segment(), "g", o);
  ring.publish_all();
  auto fail_all = [](const Event&) { return Handled::fail; };
  while (g.worker(0).poll(fail_all, 100) != 0) {
  }
  DeadLetters dlq = DeadLetters::open(ring.seg.segment(), "g");
  const std::uint64_t before = dlq.stats().full_waits;
  ASSERT_GT(before, 0u) << "the ring filled";
  const std::uint64_t waiting = g.worker(0).pending();
  ASSERT_GE(waiting, 1u);
  const auto t0 = steady_clock::now();
  std::uint64_t polls = 0;
  while (dlq.stats().full_waits - before < 20 * waiting) {
    EXPECT_EQ(g.worker(0).poll(fail_all, 100), 0u);
    ++polls;
    ASSERT_LT(steady_clock::now() - t0, std::chrono::seconds(30)) << "not tried again";
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - t0).count();
  const std::uint64_t tries = dlq.stats().full_waits - before;
  EXPECT_LE(tries, waiting * (static_cast<std::uint64_t>(ms) + 1)) << polls << " polls in " << ms << " ms";
  EXPECT_EQ(g.worker(0).pending(), waiting);
  // Room again: parked at the next try, a millisecond at most after the last.
  const std::size_t parked = dlq.list().size();
  EXPECT_EQ(dlq.purge(), parked);
  EXPECT_TRUE(test::eventually([&] {
    g.worker(0).poll(fail_all, 100);
    return g.worker(0).pending() == 0;
  })) << "not parked once there was room";
  EXPECT_EQ(dlq.list().size(), static_cast<std::size_t>(SmallDeadLetterRing::kEvents) - parked);
}

// A group's thread does not spin while its event waits for room: it idles by its wait
// strategy until the next try is due.
TEST(DeadLetters, AGroupThreadWaitingForRoomIdlesBetweenTries) {
  using std::chrono::steady_clock;
  SmallDeadLetterRing ring;
  const GroupOptions o{.wait = WaitStrategy::spin_park(10, 1, std::chrono::hours(1)), .retry = {.max_attempts = 1}};
  ConsumerGroup g = ConsumerGroup::join(ring.seg.segment(), "g", o);
  std::atomic<int> calls{0};
  g.start([&](const Event&) {
    calls.fetch_add(1);
    return Handled::fail;
  });
  ring.publish_all();
  DeadLetters dlq = DeadLetters::open(ring.seg.segment(), "g");
  ASSERT_TRUE(test::eventually([&] { return dlq.stats().full_waits > 0; })) << "the ring did not fill";
  // Once the thread has read all it can, its events wait, each tried once a millisecond.
  std::uint64_t waiting = 0;
  ASSERT_TRUE(test::eventually([&] {
    const std::uint64_t now = worker_stats(read_stats(ring.seg.segment())).pending;
    const bool settled = now != 0 && now == waiting;
    waiting = now;
    if (!settled) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return settled;
  }));
  const std::uint64_t before = dlq.stats().full_waits;
  const auto t0 = steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::uint64_t tries = dlq.stats().full_waits - before;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - t0).count();
  EXPECT_LE(tries, waiting * (static_cast<std::uint64_t>(ms) + 1))
      << waiting << " events tried again " << tries << " times in " << ms << " ms";
  // Room again: the thread parks the waiting event and reads on.
  std::size_t total = 0;
  EXPECT_TRUE(test::eventually([&] {
    for (const DeadLetter& d : dlq.list()) total += dlq.remove(d.id) ? 1 : 0;
    return total == SmallDeadLetterRing::kEvents;
  })) << total << " of " << SmallDeadLetterRing::kEvents << " parked";
  EXPECT_EQ(calls.load(), SmallDeadLetterRing::kEvents) << "one call each: waiting for room calls no handler";
  g.stop();
}

TEST(DeadLetters, RedriveRedeliversToTheWorkerAndRemovesOnlyWhenAccepted) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  o.workers = 2;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 6; ++v) publish(p, 100 + v, v);
  bool healthy = false;
  std::vector<std::uint64_t> redriven;
  auto handler = [&](const Event& e) -> Handled {
    if (e.redriven()) {
      if (!healthy) return Handled::fail;
      redriven.push_back(value_of(e));
      return Handled::ok;
    }
    return value_of(e) % 2 == 0 ? Handled::fail : Handled::ok;
  };
  for (std::uint32_t w = 0; w < 2; ++w) drain(g.worker(w), handler);
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  ASSERT_EQ(dlq.list().size(), 3u);
  const std::uint64_t first_id = dlq.list()[0].id;

  EXPECT_EQ(dlq.request_redrive(first_id), 1u);
  EXPECT_EQ(dlq.get(first_id)->state, "redrive");
  for (std::uint32_t w = 0; w < 2; ++w) g.worker(w).poll_redrives(handler);  // still failing
  ASSERT_TRUE(dlq.get(first_id).has_value()) << "not accepted: stays";
  EXPECT_EQ(dlq.get(first_id)->state, "ready");
  EXPECT_EQ(dlq.get(first_id)->attempts, 2u);

  healthy = true;
  EXPECT_EQ(dlq.request_redrive(), 3u);
  std::size_t n = 0;
  for (std::uint32_t w = 0; w < 2; ++w) n += g.worker(w).poll_redrives(handler);
  EXPECT_EQ(n, 3u);
  EXPECT_TRUE(dlq.list().empty());
  std::sort(redriven.begin(), redriven.end());
  EXPECT_EQ(redriven, (std::vector<std::uint64_t>{0, 2, 4}));
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(worker_stats(s, 0, 0).redriven + worker_stats(s, 0, 1).redriven, 3u);
}

// A redriven event gets the group's retry policy: up to max_attempts handler calls
// before it goes back to the ring.
TEST(DeadLetters, ARedriveIsTriedUpToMaxAttemptsTimes) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 3;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  publish(p, 1, 7);
  int calls = 0;
  int redrive_failures_left = 2;
  auto handler = [&](const Event& e) -> Handled {
    ++calls;
    if (!e.redriven()) return Handled::fail;
    return redrive_failures_left-- > 0 ? Handled::fail : Handled::ok;
  };
  drain(g.worker(0), handler);
  EXPECT_EQ(calls, 3);
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  ASSERT_EQ(dlq.request_redrive(), 1u);
  EXPECT_EQ(g.worker(0).poll_redrives(handler), 1u) << "accepted on its third call";
  EXPECT_EQ(calls, 6);
  EXPECT_TRUE(dlq.list().empty());
}

// A redrive keeps the policy's backoff: `spin` waits its delay between the calls, and
// `deferred` makes one call a poll, the next when its wait is over, the entry staying
// the worker's (`delivering`) meanwhile. A redrive that fails throughout adds its calls
// to the entry's attempts. Before, every call came at once, whatever the policy.
TEST(DeadLetters, ARedriveKeepsTheBackoffOfTheRetryPolicy) {
  using namespace std::chrono_literals;
  for (const auto backoff : {RetryPolicy::Backoff::spin, RetryPolicy::Backoff::deferred}) {
    SCOPED_TRACE(static_cast<int>(backoff));
    TempSegment seg;
    const RetryPolicy policy{.max_attempts = 3, .backoff = backoff, .delay = 20ms};
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", {.retry = policy});
    Producer p = Producer::attach(seg.segment());
    publish(p, 1, 7);
    publish(p, 2, 8);
    std::vector<std::uint64_t> call_ns;  // the redriven calls of value 7
    int accept_on = 3;                   // of value 7's redriven calls
    auto handler = [&](const Event& e) -> Handled {
      if (!e.redriven()) return Handled::fail;
      if (value_of(e) == 8) return Handled::fail;
      call_ns.push_back(detail::monotonic_ns());
      return static_cast<int>(call_ns.size()) == accept_on ? Handled::ok : Handled::fail;
    };
    Worker& w = g.worker(0);
    while (w.poll(handler) != 0 || w.pending() != 0) {
    }
    DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
    ASSERT_EQ(dlq.list().size(), 2u);
    const std::uint64_t seven = dlq.list()[0].id;
    const std::uint64_t eight = dlq.list()[1].id;
    ASSERT_EQ(dlq.get(seven)->attempts, 3u);
    ASSERT_EQ(dlq.request_redrive(), 2u);
    if (backoff == RetryPolicy::Backoff::spin) {
      EXPECT_EQ(w.poll_redrives(handler), 1u) << "accepted on its third call";
    } else {
      EXPECT_EQ(w.poll_redrives(handler), 0u) << "one call each, both failed";
      ASSERT_EQ(call_ns.size(), 1u);
      EXPECT_EQ(dlq.get(seven)->state, "delivering") << "kept for its next attempt";
      EXPECT_EQ(w.poll_redrives(handler), 0u);
      EXPECT_EQ(call_ns.size(), 1u) << "called again before its wait was over";
      std::size_t accepted = 0;
      ASSERT_TRUE(test::eventually([&] {
        accepted += w.poll_redrives(handler);
        return accepted != 0;
      }));
      EXPECT_EQ(accepted, 1u);
    }
    ASSERT_EQ(call_ns.size(), 3u);
    // deferred_wait(1) = 20 ms, then deferred_wait(2) = 40 ms.
    const std::uint64_t second_wait = backoff == RetryPolicy::Backoff::spin ? 20'000'000 : 40'000'000;
    EXPECT_GE(call_ns[1] - call_ns[0], 20'000'000u);
    EXPECT_GE(call_ns[2] - call_ns[1], second_wait);
    EXPECT_FALSE(dlq.get(seven).has_value()) << "accepted: removed";
    // Value 8 failed its three redriven calls: back in the ring with them counted.
    if (backoff == RetryPolicy::Backoff::deferred) {
      ASSERT_TRUE(test::eventually([&] {
        w.poll_redrives(handler);
        return dlq.get(eight)->state == "ready";
      }));
    }
    EXPECT_EQ(dlq.get(eight)->state, "ready");
    EXPECT_EQ(dlq.get(eight)->attempts, 6u);
    // Every failed call is a handler error: six before the redrive, two and three in it.
    EXPECT_EQ(worker_stats(read_stats(seg.segment()), 0, 0).handler_errors, 11u);
    EXPECT_EQ(worker_stats(read_stats(seg.segment()), 0, 0).redriven, 1u);
    EXPECT_EQ(w.poll_redrives(handler), 0u) << "nothing kept, nothing requested";
  }
}

// A model of redrives: dead letters marked for redelivery (all, or one at a time), a
// handler that accepts a redriven event at random, the group let go of and joined
// again, under every backoff and one or two workers. Each dead letter is accepted
// exactly once in the end, and after every step its attempts are its three calls before
// it was parked plus every redriven call that failed: none is lost or counted twice,
// whether the call came at once, after a spin, or from the list of kept redrives that
// a group let go of hands back, and whether a worker keeps it (shown as `delivering`,
// with the time of its next call) or not.
TEST(DeadLetters, RandomRedrivesAccountForEveryDeadLetter) {
  using Backoff = RetryPolicy::Backoff;
  constexpr std::uint64_t kLetters = 40;
  constexpr std::uint32_t kAttempts = 3;
  for (const Backoff backoff : {Backoff::immediate, Backoff::spin, Backoff::deferred}) {
    for (const std::uint32_t workers : {1u, 2u}) {
      SCOPED_TRACE("backoff " + std::to_string(static_cast<int>(backoff)) + ", workers " + std::to_string(workers));
      SegmentOptions so = TempSegment::small_options();
      so.dlq_capacity = 1u << 20;
      TempSegment seg(so);
      const GroupOptions parking{.workers = workers, .retry = {.max_attempts = kAttempts}};
      const GroupOptions o{.workers = workers,
                           .retry = {.max_attempts = kAttempts,
                                     .backoff = backoff,
                                     .delay = backoff == Backoff::deferred ? std::chrono::nanoseconds(300'000)
                                                                           : std::chrono::nanoseconds(2'000)}};
      {
        ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", parking);
        Producer p = Producer::attach(seg.segment());
        for (std::uint64_t v = 1; v <= kLetters; ++v) publish(p, v, v);
        for (std::uint32_t w = 0; w < workers; ++w) drain(g.worker(w), [](const Event&) { return Handled::fail; });
      }
      DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
      ASSERT_EQ(dlq.list().size(), kLetters);
      std::map<std::uint64_t, std::uint32_t> failed_calls;  // value -> redriven calls refused
      std::map<std::uint64_t, std::uint32_t> accepted;      // value -> redriven calls accepted
      std::uint64_t rng = 0x9e3779b97f4a7c15ULL * (static_cast<std::uint64_t>(backoff) * 2 + workers);
      auto next = [&](std::uint64_t n) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng % n;
      };
      auto handler = [&](const Event& e) -> Handled {
        EXPECT_TRUE(e.redriven());
        const std::uint64_t v = value_of(e);
        EXPECT_EQ(accepted[v], 0u) << "value " << v << " redelivered after it was accepted";
        if (next(10) < 3) {
          ++accepted[v];
          return Handled::ok;
        }
        ++failed_calls[v];
        return Handled::fail;
      };
      std::optional<ConsumerGroup> g(ConsumerGroup::join(seg.segment(), "g", o));
      // Between polls, an entry being delivered is one a worker keeps for a deferred call.
      auto check_attempts = [&](bool released) {
        for (const DeadLetter& d : dlq.list()) {
          std::uint64_t v = 0;
          std::memcpy(&v, d.payload.data(), sizeof v);
          const bool kept = d.state == "delivering";
          EXPECT_FALSE(kept && (released || backoff != Backoff::deferred)) << "value " << v;
          EXPECT_EQ(d.next_attempt_ns != 0, kept) << "value " << v;
          EXPECT_EQ(accepted[v], 0u) << "value " << v << " accepted but still in the ring";
          EXPECT_EQ(d.attempts, kAttempts + failed_calls[v]) << "value " << v;
        }
      };
      for (int round = 0; round < 60; ++round) {
        switch (next(5)) {
          case 0:
            dlq.request_redrive();
            break;
          case 1: {
            const std::vector<DeadLetter> all = dlq.list();
            if (!all.empty()) dlq.request_redrive(all[next(all.size())].id);
            break;
          }
          case 2:
            g.reset();
            check_attempts(true);
            g.emplace(ConsumerGroup::join(seg.segment(), "g", o));
            break;
          case 3:
            std::this_thread::sleep_for(std::chrono::microseconds(next(1500)));
            break;
          default:
            break;
        }
        for (std::uint32_t w = 0; w < workers; ++w) g->worker(w).poll_redrives(handler);
        check_attempts(false);
      }
      g.reset();
      check_attempts(true);
      // Every dead letter left is accepted once the handler always accepts.
      g.emplace(ConsumerGroup::join(seg.segment(), "g", o));
      ASSERT_TRUE(test::eventually([&] {
        dlq.request_redrive();
        for (std::uint32_t w = 0; w < workers; ++w) {
          g->worker(w).poll_redrives([&](const Event& e) {
            ++accepted[value_of(e)];
            return Handled::ok;
          });
        }
        return dlq.list().empty();
      }));
      for (std::uint64_t v = 1; v <= kLetters; ++v) EXPECT_EQ(accepted[v], 1u) << "value " << v;
    }
  }
}

// A group's thread makes a kept redrive's deferred attempts while it idles, parked
// by its strategy until the next one is due; a group let go of with a redrive kept
// hands it to the group's next worker.
TEST(DeadLetters, AKeptRedriveIsRetriedByTheGroupsThreadOrHandedOn) {
  using namespace std::chrono_literals;
  TempSegment seg;
  // Twenty attempts: value 8's waits add up to seconds, value 7 is accepted on its third.
  const GroupOptions o{.wait = WaitStrategy::spin_park(10, 1, std::chrono::hours(1)),
                       .retry = {.max_attempts = 20, .backoff = RetryPolicy::Backoff::deferred, .delay = 10ms}};
  {
    ConsumerGroup first = ConsumerGroup::join(seg.segment(), "g", {.retry = {.max_attempts = 1}});
    Producer p = Producer::attach(seg.segment());
    publish(p, 1, 7);
    publish(p, 2, 8);
    drain(first.worker(0), [](const Event&) { return Handled::fail; });
  }
  std::atomic<int> redriven_calls{0};
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
    g.start([&](const Event& e) -> Handled {
      if (!e.redriven()) return Handled::fail;
      if (value_of(e) == 8) return Handled::fail;  // kept until the group is let go of
      redriven_calls.fetch_add(1);
      return redriven_calls.load() == 3 ? Handled::ok : Handled::fail;
    });
    DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
    ASSERT_EQ(dlq.list().size(), 2u);
    const std::uint64_t seven = dlq.list()[0].id;
    ASSERT_EQ(dlq.request_redrive(), 2u);
    EXPECT_TRUE(test::eventually([&] { return !dlq.get(seven).has_value(); }, std::chrono::seconds(10)))
        << "the parked thread did not make the deferred attempts";
    EXPECT_EQ(redriven_calls.load(), 3);
    ASSERT_EQ(dlq.list().size(), 1u);
    EXPECT_EQ(dlq.list()[0].state, "delivering");
  }
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  ASSERT_EQ(dlq.list().size(), 1u);
  EXPECT_EQ(dlq.list()[0].state, "redrive") << "handed on";
  EXPECT_GE(dlq.list()[0].attempts, 2u) << "its call before the redrive, and at least one in it";
  ConsumerGroup next = ConsumerGroup::join(seg.segment(), "g", o);
  std::vector<std::uint64_t> got;
  ASSERT_TRUE(test::eventually([&] {
    next.worker(0).poll_redrives([&](const Event& e) {
      got.push_back(value_of(e));
      return Handled::ok;
    });
    return !got.empty();
  }));
  EXPECT_EQ(got, std::vector<std::uint64_t>{8});
  EXPECT_TRUE(dlq.list().empty());
}

// A group's thread takes entries marked for redelivery while the log keeps it busy:
// here every event it handles publishes the next, so no poll ever comes up empty.
TEST(DeadLetters, ARedriveReachesAWorkerTheLogKeepsBusy) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", {.retry = {.max_attempts = 1}});
  Producer p = Producer::attach(seg.segment());
  Producer feeder = Producer::attach(seg.segment());  // the group's thread's
  publish(p, 1, 999);
  for (std::uint64_t v = 1000; v < 1008; ++v) publish(p, 2, v);  // eight chains, none reaching 999
  std::atomic<bool> redriven{false};
  std::atomic<bool> feed{true};
  std::atomic<std::uint64_t> handled{0};
  g.start([&](const Event& e) -> Handled {
    if (e.redriven()) {
      redriven = true;
      return Handled::ok;
    }
    if (value_of(e) == 999) return Handled::fail;
    handled.fetch_add(1);
    const std::uint64_t next = value_of(e) + 1;
    if (feed.load()) EXPECT_EQ(feeder.try_publish(2, 7, std::as_bytes(std::span(&next, 1))), Status::ok);
    return Handled::ok;
  });
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  ASSERT_TRUE(test::eventually([&] { return dlq.stats().entries == 1 && handled.load() > 1000; }));
  ASSERT_EQ(dlq.request_redrive(), 1u);
  EXPECT_TRUE(test::eventually([&] { return redriven.load(); }, std::chrono::seconds(10)))
      << "the busy worker never took the redrive";
  feed = false;
  g.stop();
  EXPECT_EQ(dlq.stats().entries, redriven.load() ? 0u : 1u);
}

// A redrive wakes a worker parked on a quiet log, rather than waiting for its park to
// time out (an hour here), and one sleeping between polls (spin_sleep, an hour).
TEST(DeadLetters, ARedriveWakesAParkedWorker) {
  for (const WaitStrategy wait : {WaitStrategy::spin_park(10, 1, std::chrono::hours(1)),
                                  WaitStrategy::spin_sleep(std::chrono::hours(1), 10)}) {
    SCOPED_TRACE(static_cast<int>(wait.kind));
    TempSegment seg;
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", {.wait = wait, .retry = {.max_attempts = 1}});
    Producer p = Producer::attach(seg.segment());
    publish(p, 1, 999);
    std::atomic<bool> redriven{false};
    g.start([&](const Event& e) { return e.redriven() ? (redriven = true, Handled::ok) : Handled::fail; });
    DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
    const layout::ControlBlock& control = *seg.segment().refs().control;
    ASSERT_TRUE(test::eventually([&] {
      // Parked (a sleeper is not counted: it has had time to fall asleep).
      return dlq.stats().entries == 1 &&
             (wait.kind == WaitStrategy::Kind::spin_sleep || control.data_waiters.load() != 0);
    }));
    if (wait.kind == WaitStrategy::Kind::spin_sleep) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_EQ(dlq.request_redrive(), 1u);
    EXPECT_TRUE(test::eventually([&] { return redriven.load(); }, std::chrono::seconds(10)))
        << "the idle worker was not woken for the redrive";
    g.stop();  // woken too, asleep or parked
  }
}

TEST(DeadLetters, RepublishPutsTheEventBackInTheLogForEveryGroup) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  ConsumerGroup other = ConsumerGroup::join(seg.segment(), "other");
  Producer p = Producer::attach(seg.segment());
  {
    Claim c;
    ASSERT_EQ(p.try_claim(5, 7, 8, c), Status::ok);
    const std::uint64_t v = 42;
    std::memcpy(c.payload().data(), &v, 8);
    c.set_correlation_id(77);
    c.set_schema_version(3);
    c.set_timestamp_ns(1'700'000'000'123'456'789);
    c.commit();
  }
  drain(g.worker(0), [](const Event&) { return Handled::fail; });
  drain(other.worker(0), [](const Event&) {});
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  // Not through another segment's producer: its registry's type ids are other types.
  TempSegment elsewhere;
  Producer stranger = Producer::attach(elsewhere.segment());
  try {
    dlq.republish(stranger);
    ADD_FAILURE() << "republished into another segment";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_options);
    EXPECT_NE(std::string(e.what()).find("cannot republish dead letters through a producer of segment " +
                                         elsewhere.location().display()),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(dlq.list().size(), 1u) << "nothing removed";
  EXPECT_EQ(read_stats(elsewhere.segment()).tail, 0u) << "nothing published there";
  Producer tool = Producer::attach(seg.segment());
  Status last = Status::invalid;
  EXPECT_EQ(dlq.republish(tool, std::nullopt, &last), 1u);
  EXPECT_EQ(last, Status::ok);
  EXPECT_TRUE(dlq.list().empty());
  for (ConsumerGroup* grp : {&g, &other}) {
    std::vector<Event> got;
    drain(grp->worker(0), [&](const Event& e) {
      EXPECT_EQ(value_of(e), 42u);
      EXPECT_EQ(e.key(), 5u);
      EXPECT_EQ(e.key_seq(), 2u) << "a new record of the key";
      EXPECT_EQ(e.type(), 7u);
      EXPECT_EQ(e.correlation_id(), 77u);
      EXPECT_EQ(e.schema_version(), 3u);
      EXPECT_EQ(e.timestamp_ns(), 1'700'000'000'123'456'789u) << "the event's time, not the redrive's";
      EXPECT_NE(e.flags() & record_flags::redriven, 0);
      got.push_back(e);
    });
    EXPECT_EQ(got.size(), 1u);
  }
}

// An entry a worker is delivering (state delivering) is neither marked for redelivery
// again nor republished nor removed by a tool; one marked for redelivery can still be
// removed.
TEST(DeadLetters, AToolLeavesAnEntryBeingDeliveredAlone) {
  TempSegment seg;
  ConsumerGroup g = three_dead_letters(seg, "g");
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  EXPECT_EQ(dlq.request_redrive(1), 1u);
  // The worker takes entry 1 and, before it finishes, a tool acts on the ring.
  layout::DlqEntry* taken = detail::dlq_take_redrive(seg.segment().refs(), 0, 0, 1);
  ASSERT_NE(taken, nullptr);
  EXPECT_EQ(taken->id, 1u);
  EXPECT_EQ(dlq.request_redrive(), 2u) << "entries 2 and 3";
  EXPECT_EQ(dlq.request_redrive(), 0u) << "each is marked once";
  EXPECT_FALSE(dlq.remove(1));
  EXPECT_TRUE(dlq.remove(2)) << "marked for redelivery, not taken";
  Producer tool = Producer::attach(seg.segment());
  EXPECT_EQ(dlq.republish(tool), 0u) << "entry 3 is marked for redelivery, entry 1 being delivered";
  EXPECT_EQ(dlq.purge(), 1u) << "entry 3";
  const auto left = dlq.list();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id, 1u);
  EXPECT_EQ(left[0].state, "delivering");
  detail::dlq_finish_redrive(seg.segment().refs(), 0, taken, detail::RedriveEnd::accepted);
  EXPECT_TRUE(dlq.list().empty());
}

// An entry's attempts word keeps its top bit for "the worker waits between calls"
// (layout::kDlqWaiting): counts saturate below it, and the bit never shows as a count.
TEST(DeadLetters, AttemptsSaturateBelowTheWaitingBit) {
  TempSegment seg;
  ConsumerGroup g = three_dead_letters(seg, "g");
  const detail::SegmentRefs& r = seg.segment().refs();
  const RecordHeader h{};
  ASSERT_EQ(detail::dlq_append(r, 0, h, 0, 0, UINT32_MAX, 0, 1, "failed a great many times"), Status::ok);
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  const std::uint64_t id = dlq.list().back().id;
  EXPECT_EQ(dlq.get(id)->attempts, layout::kMaxDlqAttempts);
  ASSERT_EQ(dlq.request_redrive(id), 1u);
  layout::DlqEntry* e = detail::dlq_take_redrive(r, 0, 0, 1);
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(e->id, id);
  detail::dlq_redrive_failed_call(r, 0, e, 12345);
  EXPECT_EQ(e->attempts, layout::kMaxDlqAttempts | layout::kDlqWaiting) << "saturated, and waiting";
  EXPECT_EQ(dlq.get(id)->attempts, layout::kMaxDlqAttempts);
  EXPECT_EQ(dlq.get(id)->next_attempt_ns, 12345u);
  detail::dlq_redrive_call(r, 0, e);
  EXPECT_EQ(dlq.get(id)->next_attempt_ns, 0u) << "a call runs";
  detail::dlq_finish_redrive(r, 0, e, detail::RedriveEnd::failed);
  const DeadLetter d = *dlq.get(id);
  EXPECT_EQ(d.state, "ready");
  EXPECT_EQ(d.attempts, layout::kMaxDlqAttempts);
  EXPECT_EQ(e->attempts, layout::kMaxDlqAttempts) << "the bit is cleared";
}

TEST(DeadLetters, RemovePurgeAndOpenErrors) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 4; ++v) publish(p, 1, v);
  drain(g.worker(0), [](const Event&) { return Handled::fail; });
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  auto ids = dlq.list();
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_TRUE(dlq.remove(ids[1].id));
  EXPECT_FALSE(dlq.remove(ids[1].id));
  EXPECT_EQ(dlq.list().size(), 3u);
  EXPECT_EQ(dlq.purge(), 3u);
  EXPECT_TRUE(dlq.list().empty());
  EXPECT_EQ(dlq.stats().bytes_used, 0u) << "space reclaimed";
  EXPECT_THROW(DeadLetters::open(seg.segment(), "nope"), Error);
  SegmentOptions none = TempSegment::small_options();
  none.dlq_capacity = 0;
  TempSegment bare(none);
  ConsumerGroup h = ConsumerGroup::join(bare.segment(), "h");
  EXPECT_THROW(DeadLetters::open(bare.segment(), "h"), Error);
}

// A handle opened before its group was removed refuses to act: the slot, and its ring,
// may be another group's since. It purged, listed and redrove that group's dead letters.
TEST(DeadLetters, AHandleOutlivingItsGroupActsOnNoOtherGroupsRing) {
  TempSegment seg;
  { ConsumerGroup gone = three_dead_letters(seg, "gone"); }
  DeadLetters stale = DeadLetters::open(seg.segment(), "gone");
  ASSERT_EQ(stale.list().size(), 3u);
  ASSERT_TRUE(ConsumerGroup::remove(seg.segment(), "gone"));
  ConsumerGroup next = three_dead_letters(seg, "next");  // the slot "gone" left
  ASSERT_EQ(read_stats(seg.segment()).groups.at(0).slot, 0u);
  auto refuses = [](auto&& call) {
    try {
      call();
      ADD_FAILURE() << "acted on the ring of the group in the slot now";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::not_found);
      EXPECT_NE(std::string(e.what()).find("group \"gone\": removed since its dead letters were opened"),
                std::string::npos)
          << e.what();
    }
  };
  refuses([&] { (void)stale.list(); });
  refuses([&] { (void)stale.get(1); });
  refuses([&] { (void)stale.stats(); });
  refuses([&] { (void)stale.request_redrive(); });
  refuses([&] { (void)stale.remove(1); });
  refuses([&] { (void)stale.purge(); });
  Producer p = Producer::attach(seg.segment());
  refuses([&] { (void)stale.republish(p); });
  const std::vector<DeadLetter> kept = DeadLetters::open(seg.segment(), "next").list();
  ASSERT_EQ(kept.size(), 3u);
  for (const DeadLetter& d : kept) EXPECT_EQ(d.state, "ready");
  EXPECT_THROW(DeadLetters::open(seg.segment(), "gone"), Error);
}

// A group registered in the slot of a removed one empties the slot's ring under the
// ring's lock: a tool at work on the old group's dead letters finishes first, instead of
// having the ring emptied under it (and its next call is refused, as above).
TEST(DeadLetters, ANewGroupInTheSlotWaitsForAToolAtWorkOnTheOldRing) {
  TempSegment seg;
  { ConsumerGroup gone = three_dead_letters(seg, "gone"); }
  const std::uint32_t slot = read_stats(seg.segment()).groups.at(0).slot;
  layout::DlqControl& c = *seg.segment().refs().dlq_control(slot);
  std::atomic<bool> joined{false};
  std::thread joiner;
  {
    const detail::RobustLock tool(c.lock, c.lock_start);  // a tool in the middle of a call
    ASSERT_TRUE(ConsumerGroup::remove(seg.segment(), "gone"));
    joiner = std::thread([&] {
      const ConsumerGroup next = ConsumerGroup::join(seg.segment(), "next");
      joined.store(true);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(joined.load()) << "registered, and emptied the ring, while the tool held it";
    EXPECT_EQ(c.entries.load(), 3u);
  }
  joiner.join();
  EXPECT_TRUE(joined.load());
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).slot, slot);
  EXPECT_EQ(c.entries.load(), 0u);
  EXPECT_TRUE(DeadLetters::open(seg.segment(), "next").list().empty());
}

// The ring wraps: an entry that does not fit before the end of the ring is preceded by a
// filler to the end and goes at the start. Room is counted with the filler, so an entry
// never lands on the live entries at the start; removed entries and fillers are
// reclaimed, so the ring is reused lap after lap; `entries` and `bytes_used` follow.
TEST(DeadLetters, TheRingWrapsWithoutOverwritingLiveEntriesAndIsReusedLapAfterLap) {
  SegmentOptions so = TempSegment::small_options();
  so.max_event = 512;
  so.dlq_capacity = 4096;
  TempSegment seg(so);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g");
  const detail::SegmentRefs& r = seg.segment().refs();
  struct alignas(8) Letter {
    RecordHeader h{};
    std::array<std::byte, 1024> payload{};
  };
  // The payload length whose entry (no message) takes `bytes` of the ring.
  const auto len_for = [](std::uint64_t bytes) {
    const std::uint64_t len = bytes - layout::dlq_entry_bytes(0, 0);
    EXPECT_EQ(layout::dlq_entry_bytes(static_cast<std::uint32_t>(len), 0), bytes);
    return static_cast<std::uint32_t>(len);
  };
  std::uint64_t appended = 0;
  const auto append = [&](std::uint64_t bytes) {
    Letter l;
    l.h.key = ++appended;  // names the entry
    std::memset(l.payload.data(), static_cast<int>(appended & 0xff), l.payload.size());
    return detail::dlq_append(r, 0, l.h, len_for(bytes), appended * 8, 1, 0, 1, "");
  };
  // Every entry listed is whole: its payload is still its own fill byte.
  const auto keys_listed = [&] {
    std::vector<std::uint64_t> keys;
    for (const DeadLetter& d : DeadLetters::open(seg.segment(), "g").list()) {
      for (std::byte b : d.payload) EXPECT_EQ(b, static_cast<std::byte>(d.header.key & 0xff)) << "entry " << d.id;
      keys.push_back(d.header.key);
    }
    return keys;
  };
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");

  // [0, 200): entry 1; [200, 3480): entries 2-6 of 656 bytes each. 616 bytes to the end.
  ASSERT_EQ(append(200), Status::ok);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(append(656), Status::ok);
  ASSERT_EQ(dlq.stats().bytes_used, 3480u);
  ASSERT_TRUE(dlq.remove(1));
  EXPECT_EQ(dlq.stats().entries, 5u);
  EXPECT_EQ(dlq.stats().bytes_used, 3280u) << "the head moved past entry 1";
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).dlq_bytes, 3280u) << "what `ringbus stat` shows";
  // 640 bytes: 616 of filler and 640 at the start would end at 640, past the head (200).
  EXPECT_EQ(append(640), Status::full) << "the filler counts";
  EXPECT_EQ(keys_listed(), (std::vector<std::uint64_t>{2, 3, 4, 5, 6}));
  ASSERT_TRUE(dlq.remove(2));  // head 856: now it fits
  EXPECT_EQ(append(640), Status::ok);
  EXPECT_EQ(keys_listed(), (std::vector<std::uint64_t>{3, 4, 5, 6, 8}));
  EXPECT_EQ(dlq.stats().entries, 5u);
  EXPECT_EQ(dlq.stats().bytes_used, 3280 - 656 + 616 + 640u);

  EXPECT_EQ(dlq.purge(), 5u);
  EXPECT_EQ(dlq.stats().entries, 0u);
  EXPECT_EQ(dlq.stats().bytes_used, 0u) << "the filler at the end was reclaimed too";
  // Many laps of entries that never divide the ring evenly: each one fits once the one
  // before it is removed.
  for (int i = 0; i < 300; ++i) {
    ASSERT_EQ(append(i % 2 == 0 ? 616 : 552), Status::ok) << "entry " << appended;
    EXPECT_EQ(dlq.stats().entries, 1u);
    ASSERT_EQ(keys_listed(), std::vector<std::uint64_t>{appended});
    ASSERT_TRUE(dlq.remove(dlq.list().at(0).id));
  }
  EXPECT_EQ(dlq.stats().bytes_used, 0u);
  EXPECT_EQ(dlq.stats().appended, 307u);
  EXPECT_EQ(dlq.stats().removed, 307u);
}

TEST(Retry, ImmediateAndSpinRetryInPlace) {
  for (auto backoff : {RetryPolicy::Backoff::immediate, RetryPolicy::Backoff::spin}) {
    TempSegment seg;
    GroupOptions o;
    o.retry.max_attempts = 4;
    o.retry.backoff = backoff;
    o.retry.delay = std::chrono::microseconds(50);
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
    Producer p = Producer::attach(seg.segment());
    for (std::uint64_t v = 0; v < 3; ++v) publish(p, 1, v);
    std::map<std::uint64_t, int> calls;
    std::vector<std::uint64_t> order;
    drain(g.worker(0), [&](const Event& e) {
      const int n = ++calls[value_of(e)];
      if (value_of(e) == 1 && n < 3) return Handled::retry;
      order.push_back(value_of(e));
      return Handled::ok;
    });
    EXPECT_EQ(order, (std::vector<std::uint64_t>{0, 1, 2}));
    EXPECT_EQ(calls[1], 3);
    EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).retries, 2u);
  }
}

// Key 1's events 10, 11 and 12 interleaved with key 2's 20 and 21.
void publish_two_keys(Producer& p) {
  for (const auto& [key, v] : {std::pair{1, 10}, {2, 20}, {1, 11}, {2, 21}, {1, 12}}) publish(p, key, v);
}

TEST(Retry, DeferredHoldsTheKeyWhileOtherKeysProceed) {
  TempSegment seg;
  GroupOptions o = deferred_retries(5, std::chrono::milliseconds(2));
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  publish_two_keys(p);  // 10 fails twice
  int failures_left = 2;
  std::vector<std::uint64_t> order;
  std::uint64_t last_key1_seq = 0;
  auto handler = [&](const Event& e) {
    if (value_of(e) == 10 && failures_left > 0) {
      --failures_left;
      return Handled::fail;
    }
    if (e.key() == 1) {
      EXPECT_EQ(e.key_seq(), last_key1_seq + 1) << "key 1 stays in order";
      last_key1_seq = e.key_seq();
    }
    order.push_back(value_of(e));
    return Handled::ok;
  };
  g.worker(0).poll(handler, 100);
  EXPECT_EQ(order, (std::vector<std::uint64_t>{20, 21})) << "key 2 went ahead; key 1 waits behind its failure";
  EXPECT_EQ(g.worker(0).pending(), 3u);
  EXPECT_LT(read_stats(seg.segment()).groups.at(0).cursor, read_stats(seg.segment()).tail);
  ASSERT_TRUE(test::eventually([&] {
    g.worker(0).poll(handler, 100);
    return g.worker(0).pending() == 0;
  }));
  EXPECT_EQ(order, (std::vector<std::uint64_t>{20, 21, 10, 11, 12}));
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(s.groups.at(0).cursor, s.tail);
  EXPECT_EQ(worker_stats(s).retries, 2u);
  EXPECT_EQ(worker_stats(s).consumed, 5u);
}

// A worker stops reading ahead once max_pending events are set aside (deferred retries
// and the events held behind them); what it has not read stays in the log for later.
TEST(Retry, AWorkerReadsNoFurtherThanMaxPendingEventsSetAside) {
  TempSegment seg;
  GroupOptions o = deferred_retries(2, std::chrono::hours(1));
  o.max_pending = 4;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 10; ++v) publish(p, 100 + v, v);  // ten keys
  std::uint64_t calls = 0;
  for (int i = 0; i < 5; ++i) {
    g.worker(0).poll(
        [&](const Event&) {
          ++calls;
          return Handled::fail;
        },
        100);
  }
  EXPECT_EQ(g.worker(0).pending(), 4u);
  EXPECT_EQ(calls, 4u) << "events past the fourth were not read";
}

// A key stays held while any of its events is set aside: after its first failure is
// handled and the next one fails too, an event of the key published then still waits
// behind both.
TEST(Retry, DeferredHoldsTheKeyUntilEveryEventSetAsideIsDone) {
  TempSegment seg;
  GroupOptions o = deferred_retries(5, std::chrono::milliseconds(1));
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  publish(p, 1, 10);
  publish(p, 1, 11);
  publish(p, 1, 12);
  std::set<std::uint64_t> failed_once;
  std::vector<std::uint64_t> order;
  auto handler = [&](const Event& e) {
    if ((value_of(e) == 10 || value_of(e) == 11) && failed_once.insert(value_of(e)).second) return Handled::fail;
    order.push_back(value_of(e));
    return Handled::ok;
  };
  g.worker(0).poll(handler, 100);  // 10 fails; 11 and 12 wait behind it
  EXPECT_EQ(worker_stats(read_stats(seg.segment())).pending, 3u) << "what `ringbus stat` shows as set aside";
  ASSERT_TRUE(test::eventually([&] {
    g.worker(0).poll(handler, 100);
    return failed_once.count(11) == 1;  // 10 handled, then 11 failed
  }));
  EXPECT_EQ(order, std::vector<std::uint64_t>{10});
  EXPECT_EQ(worker_stats(read_stats(seg.segment())).pending, 2u);
  publish(p, 1, 13);
  ASSERT_TRUE(test::eventually([&] {
    g.worker(0).poll(handler, 100);
    return order.size() == 4;
  }));
  EXPECT_EQ(order, (std::vector<std::uint64_t>{10, 11, 12, 13}));
  EXPECT_EQ(worker_stats(read_stats(seg.segment())).pending, 0u);
}

TEST(Retry, DeferredReleaseLetsTheKeysLaterEventsThrough) {
  TempSegment seg;
  GroupOptions o = deferred_retries(3, std::chrono::milliseconds(1));
  o.retry.while_retrying = RetryPolicy::KeyOrder::release;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  publish(p, 1, 10);
  publish(p, 1, 11);
  bool failed_once = false;
  std::vector<std::uint64_t> order;
  auto handler = [&](const Event& e) {
    if (value_of(e) == 10 && !failed_once) {
      failed_once = true;
      return Handled::fail;
    }
    order.push_back(value_of(e));
    return Handled::ok;
  };
  g.worker(0).poll(handler, 100);
  EXPECT_EQ(order, (std::vector<std::uint64_t>{11}));
  ASSERT_TRUE(test::eventually([&] {
    g.worker(0).poll(handler, 100);
    return g.worker(0).pending() == 0;
  }));
  EXPECT_EQ(order, (std::vector<std::uint64_t>{11, 10}));
}

// Batch delivery with events set aside: a failed batch is delivered again one event at
// a time, a deferred failure holds its key, and the next batch calls retry what was set
// aside (in key order) instead of reading the held key's events as a batch again.
TEST(Retry, BatchDeliveryRetriesWhatWasSetAsideBeforeReadingOn) {
  TempSegment seg;
  GroupOptions o = deferred_retries(5, std::chrono::milliseconds(1));
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  publish_two_keys(p);
  int failures_left = 2;  // the first batch, then 10 on its own
  std::vector<std::uint64_t> order;
  std::vector<std::size_t> sizes;
  auto handler = [&](std::span<const Event> batch) {
    sizes.push_back(batch.size());
    for (const Event& e : batch) {
      if (value_of(e) == 10 && failures_left > 0) {
        --failures_left;
        return Handled::fail;
      }
    }
    for (const Event& e : batch) order.push_back(value_of(e));
    return Handled::ok;
  };
  EXPECT_EQ(g.worker(0).poll_batch(handler, 100), 5u);
  EXPECT_EQ(order, (std::vector<std::uint64_t>{20, 21})) << "key 2 went ahead; key 1 waits behind its failure";
  EXPECT_EQ(sizes, (std::vector<std::size_t>{5, 1, 1, 1})) << "the failed batch, then 10, 20 and 21 one at a time";
  EXPECT_EQ(g.worker(0).pending(), 3u);
  ASSERT_TRUE(test::eventually([&] {
    g.worker(0).poll_batch(handler, 100);
    return g.worker(0).pending() == 0;
  }));
  EXPECT_EQ(order, (std::vector<std::uint64_t>{20, 21, 10, 11, 12})) << "each once, key 1 in order";
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(s.groups.at(0).cursor, s.tail);
  EXPECT_EQ(worker_stats(s).consumed, 5u);
}

// Deferred retries back off exponentially: attempt k+1 comes no sooner than
// delay * 2^(k-1) after attempt k. Only lower bounds are checked (a retry may come
// late on a busy machine, never early).
TEST(Retry, DeferredBackoffDoublesEachAttempt) {
  TempSegment seg;
  GroupOptions o = deferred_retries(4, std::chrono::milliseconds(20));
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  publish(p, 1, 1);
  std::vector<std::chrono::steady_clock::time_point> calls;
  auto handler = [&](const Event&) {
    calls.push_back(std::chrono::steady_clock::now());
    return calls.size() < 4 ? Handled::fail : Handled::ok;
  };
  ASSERT_TRUE(test::eventually([&] {
    g.worker(0).poll(handler, 100);
    return calls.size() == 4 && g.worker(0).pending() == 0;
  }));
  for (std::size_t k = 1; k < calls.size(); ++k) {
    EXPECT_GE(calls[k] - calls[k - 1], o.retry.delay * (1 << (k - 1))) << "attempt " << k + 1 << " came too soon";
  }
  EXPECT_EQ(worker_stats(read_stats(seg.segment())).consumed, 1u);
}

// A group's thread waiting for a deferred retry idles as its wait strategy says, and
// no longer than the retry: it sleeps or parks (a park of an hour, as the strategy
// allows) only until the retry is due, instead of yielding in a loop the whole time (a
// core's worth of CPU for a strategy chosen to save it). A sleep is not woken by stop():
// the sleeping strategy's interval here is half a second.
TEST(Retry, AThreadWaitingForADeferredRetrySleepsOrParksUntilItIsDue) {
  using std::chrono::milliseconds;
  for (const WaitStrategy wait : {WaitStrategy::spin_park(100, 10, std::chrono::hours(1)),
                                  WaitStrategy::spin_sleep(milliseconds(500), 100)}) {
    SCOPED_TRACE(static_cast<int>(wait.kind));
    TempSegment seg;
    GroupOptions o = deferred_retries(2, milliseconds(300));
    o.wait = wait;
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
    Producer p = Producer::attach(seg.segment());
    publish(p, 1, 1);
    auto thread_cpu_ns = [] {
      timespec ts{};
      ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
      return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
    };
    std::vector<std::pair<std::chrono::steady_clock::time_point, std::int64_t>> calls;  // wall, thread CPU
    std::mutex m;
    g.start([&](const Event&) {
      const std::lock_guard lock(m);
      calls.emplace_back(std::chrono::steady_clock::now(), thread_cpu_ns());
      return calls.size() == 1 ? Handled::fail : Handled::ok;
    });
    const bool retried = test::eventually([&] {
      const std::lock_guard lock(m);
      return calls.size() == 2;
    }, std::chrono::seconds(20));
    g.stop();
    ASSERT_TRUE(retried) << "the retry waited for the strategy's hour";
    const auto wall = calls[1].first - calls[0].first;
    const auto cpu = std::chrono::nanoseconds(calls[1].second - calls[0].second);
    EXPECT_GE(wall, milliseconds(300));
    EXPECT_LT(cpu, milliseconds(100)) << "the thread used " << cpu.count() / 1'000'000 << " ms of CPU in "
                                      << std::chrono::duration_cast<milliseconds>(wall).count()
                                      << " ms waiting for the retry";
  }
}

// Each wait doubles up to a second and stays there, however many attempts follow; a
// delay longer than a second is kept as asked.
TEST(Retry, DeferredWaitsDoubleToASecondAndStayThere) {
  using std::chrono::milliseconds;
  using std::chrono::nanoseconds;
  using std::chrono::seconds;
  const RetryPolicy ms{.backoff = RetryPolicy::Backoff::deferred, .delay = milliseconds(1)};
  EXPECT_EQ(ms.deferred_wait(1), milliseconds(1));
  EXPECT_EQ(ms.deferred_wait(2), milliseconds(2));
  EXPECT_EQ(ms.deferred_wait(10), milliseconds(512));
  EXPECT_EQ(ms.deferred_wait(11), seconds(1));
  for (std::uint32_t failures : {12u, 39u, 40u, 41u, 64u, 65u, 1000u, UINT32_MAX}) {
    EXPECT_EQ(ms.deferred_wait(failures), seconds(1)) << failures << " failures";
  }
  const RetryPolicy ns{.backoff = RetryPolicy::Backoff::deferred, .delay = nanoseconds(7)};
  nanoseconds before{0};
  for (std::uint32_t failures = 1; failures <= 200; ++failures) {
    const nanoseconds wait = ns.deferred_wait(failures);
    EXPECT_GE(wait, before) << failures << " failures";
    EXPECT_LE(wait, seconds(1)) << failures << " failures";
    before = wait;
  }
  EXPECT_EQ(before, seconds(1));
  EXPECT_EQ((RetryPolicy{.delay = seconds(5)}.deferred_wait(3)), seconds(5));
  const nanoseconds long_delay(std::int64_t{1} << 40);
  EXPECT_EQ((RetryPolicy{.delay = long_delay}.deferred_wait(25)), long_delay);
  EXPECT_EQ(RetryPolicy{}.deferred_wait(9), nanoseconds(0));
}

// Handler failures at random under each retry policy and key order, delivered one at a
// time and in batches, through a log and a dead-letter ring small enough to fill: every
// event is accepted once or dead-lettered once after max_attempts failed calls, never
// both and never neither; where per-key order is kept (every policy but deferred with
// release), each key's accepted events come in key_seq order.
TEST(Retry, RandomFailuresAccountForEveryEventAndKeepEachKeysOrder) {
  using Backoff = RetryPolicy::Backoff;
  using KeyOrder = RetryPolicy::KeyOrder;
  constexpr std::uint64_t kEvents = 2000;
  constexpr std::uint32_t kAttempts = 3;
  struct Case {
    Backoff backoff;
    std::chrono::nanoseconds delay;
    KeyOrder order;
    bool batch;
    std::uint32_t max_pending;
  };
  std::vector<Case> cases;
  for (bool batch : {false, true}) {
    cases.push_back({Backoff::immediate, {}, KeyOrder::hold, batch, 4096});
    cases.push_back({Backoff::spin, std::chrono::nanoseconds(200), KeyOrder::hold, batch, 4096});
    for (KeyOrder order : {KeyOrder::hold, KeyOrder::release}) {
      for (std::uint32_t max_pending : {2u, 4096u}) {
        cases.push_back({Backoff::deferred, std::chrono::microseconds(20), order, batch, max_pending});
      }
    }
  }
  for (const Case& c : cases) {
    const std::string label = std::string(c.batch ? "batch" : "single") + ", backoff " +
                              std::to_string(static_cast<int>(c.backoff)) + ", order " +
                              std::to_string(static_cast<int>(c.order)) + ", max_pending " +
                              std::to_string(c.max_pending);
    SCOPED_TRACE(label);
    SegmentOptions so = TempSegment::small_options();
    so.max_event = 64;
    so.dlq_capacity = std::bit_ceil(2 * layout::dlq_entry_bytes(so.max_event, layout::kMaxDlqMessage));
    TempSegment seg(so);
    GroupOptions o = deferred_retries(kAttempts, c.delay);
    o.retry.backoff = c.backoff;
    o.retry.while_retrying = c.order;
    o.max_pending = c.max_pending;
    o.batch = 16;
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
    Producer p = Producer::attach(seg.segment());
    DeadLetters dlq = DeadLetters::open(seg.segment(), "g");

    // Whether call `n` (0, 1, ...) of event `v` fails: about one call in three.
    auto fails = [](std::uint64_t v, std::uint32_t n) { return mix64(v * 8 + n + 1) % 3 == 0; };
    std::vector<std::uint32_t> calls(kEvents, 0);
    std::vector<std::uint32_t> accepted(kEvents, 0);
    std::vector<std::uint32_t> parked(kEvents, 0);
    std::map<std::uint64_t, std::vector<std::uint64_t>> key_seqs;  // accepted, per key
    auto accept = [&](const Event& e) {
      ++accepted.at(value_of(e));
      if (e.key() != 0) key_seqs[e.key()].push_back(e.key_seq());
    };
    auto one = [&](const Event& e) {
      const std::uint64_t v = value_of(e);
      if (fails(v, calls.at(v)++)) return Handled::fail;
      accept(e);
      return Handled::ok;
    };
    // A batch is accepted whole or not at all: the worker delivers a failed one again
    // one event at a time.
    auto many = [&](std::span<const Event> batch) {
      bool ok = true;
      for (const Event& e : batch) ok = !fails(value_of(e), calls.at(value_of(e))++) && ok;
      if (!ok) return Handled::fail;
      for (const Event& e : batch) accept(e);
      return Handled::ok;
    };
    auto collect = [&] {
      for (const DeadLetter& d : dlq.list()) {
        std::uint64_t v = 0;
        ASSERT_EQ(d.payload.size(), sizeof v);
        std::memcpy(&v, d.payload.data(), sizeof v);
        ++parked.at(v);
        EXPECT_EQ(d.attempts, kAttempts) << "event " << v;
        EXPECT_TRUE(dlq.remove(d.id));
      }
    };
    std::uint64_t published = 0;
    std::uint64_t round = 0;
    std::uint64_t full_waits = 0;
    auto settled = [&] {
      for (std::uint64_t v = 0; v < kEvents; ++v) {
        if (accepted[v] + parked[v] == 0) return false;
      }
      return true;
    };
    while (published < kEvents || !settled()) {
      ASSERT_LT(++round, 10'000'000u) << "stuck: " << published << " published";
      for (int i = 0; i < 40 && published < kEvents; ++i) {
        const std::uint64_t key = published % 5 == 0 ? 0 : 1 + published % 7;  // 7 keys and unkeyed
        if (p.try_publish(key, 7, std::as_bytes(std::span(&published, 1))) != Status::ok) break;
        ++published;
      }
      if (c.batch) {
        g.worker(0).poll_batch(many, o.batch);
      } else {
        g.worker(0).poll(one, o.batch);
      }
      // Emptied once the worker found it full (and waited), and now and then at the end.
      const std::uint64_t waits = dlq.stats().full_waits;
      if (waits != full_waits || (published == kEvents && round % 4096 == 0)) {
        full_waits = waits;
        collect();
      }
    }
    collect();
    for (std::uint64_t v = 0; v < kEvents; ++v) {
      ASSERT_EQ(accepted[v] + parked[v], 1u) << "event " << v << ": accepted " << accepted[v] << ", parked "
                                             << parked[v] << ", " << calls[v] << " calls";
      if (parked[v] == 1) EXPECT_GE(calls[v], kAttempts) << "event " << v;
    }
    EXPECT_GT(full_waits, 2u) << "the ring filled, and the worker waited for room";
    if (c.backoff != Backoff::deferred || c.order == KeyOrder::hold) {
      for (const auto& [key, seqs] : key_seqs) {
        EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end())) << "key " << key;
      }
    }
    EXPECT_EQ(g.worker(0).pending(), 0u);
    const SegmentStats st = read_stats(seg.segment());
    EXPECT_EQ(worker_stats(st).dead_lettered, static_cast<std::uint64_t>(std::count(parked.begin(), parked.end(), 1u)));
  }
}

TEST(Retry, DeferredRetriesEndInTheDeadLetterRing) {
  TempSegment seg;
  GroupOptions o = deferred_retries(3, std::chrono::microseconds(200));
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  publish(p, 1, 1);
  publish(p, 1, 2);
  int calls = 0;
  std::vector<std::uint64_t> ok;
  auto handler = [&](const Event& e) {
    if (value_of(e) == 1) {
      ++calls;
      return Handled::fail;
    }
    ok.push_back(value_of(e));
    return Handled::ok;
  };
  ASSERT_TRUE(test::eventually([&] {
    g.worker(0).poll(handler, 100);
    return g.worker(0).pending() == 0 && !ok.empty();
  }));
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(ok, (std::vector<std::uint64_t>{2}));
  const auto letters = DeadLetters::open(seg.segment(), "g").list();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].attempts, 3u);
  // The first failure is that of the first attempt: the retries waited 200 + 400 us.
  EXPECT_GE(letters[0].last_failure_ns - letters[0].first_failure_ns, 600'000u);
}

// A dead letter names the worker whose handler failed on it.
TEST(DeadLetters, ADeadLetterNamesTheWorkerThatParkedIt) {
  TempSegment seg;
  GroupOptions o;
  o.workers = 2;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t key = 1; key <= 8; ++key) publish(p, key, key);
  std::map<std::uint64_t, std::uint32_t> worker_of;  // key -> the worker that failed on it
  for (std::uint32_t w = 0; w < 2; ++w) {
    drain(g.worker(w), [&](const Event& e) {
      worker_of[e.key()] = w;
      return Handled::fail;
    });
  }
  const auto letters = DeadLetters::open(seg.segment(), "g").list();
  ASSERT_EQ(letters.size(), 8u);
  std::set<std::uint32_t> workers;
  for (const DeadLetter& d : letters) {
    EXPECT_EQ(d.worker, worker_of.at(d.header.key)) << "key " << d.header.key;
    workers.insert(d.worker);
  }
  EXPECT_EQ(workers, (std::set<std::uint32_t>{0, 1})) << "both workers parked some";

  // Redriven, each goes back to the worker its key routes to; once all are accepted the
  // ring's space is free again.
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  EXPECT_EQ(dlq.request_redrive(), 8u);
  for (std::uint32_t w = 0; w < 2; ++w) {
    std::size_t delivered = 0;
    g.worker(w).poll_redrives([&](const Event& e) {
      EXPECT_EQ(worker_of.at(e.key()), w) << "key " << e.key();
      ++delivered;
      return Handled::ok;
    });
    EXPECT_EQ(delivered, static_cast<std::size_t>(std::count_if(worker_of.begin(), worker_of.end(),
                                                                  [&](const auto& kw) { return kw.second == w; })));
  }
  EXPECT_TRUE(dlq.list().empty());
  EXPECT_EQ(dlq.stats().bytes_used, 0u);
}

// A payload whose size is not a multiple of 8 and the error after it are parked whole.
TEST(DeadLetters, AnOddSizedPayloadAndItsMessageAreKeptWhole) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  Producer p = Producer::attach(seg.segment());
  const std::string payload = "hello";
  ASSERT_EQ(p.publish(1, 7, std::as_bytes(std::span(payload))), Status::ok);
  drain(g.worker(0), [](const Event&) { throw std::runtime_error("cannot greet"); });
  const auto letters = DeadLetters::open(seg.segment(), "g").list();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(letters[0].payload.data()), letters[0].payload.size()), payload);
  EXPECT_EQ(letters[0].message, "cannot greet");
}

TEST(GroupDedup, RepublishedEventsAreDroppedBeforeTheHandler) {
  TempSegment seg;
  GroupOptions o;
  o.dedup = true;
  o.workers = 2;
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
    Producer p = Producer::attach(seg.segment(), {.producer_id = 9});
    for (std::uint64_t v = 1; v <= 50; ++v) publish(p, v % 7 + 1, v);
    std::set<std::uint64_t> seen;
    for (std::uint32_t w = 0; w < 2; ++w) drain(g.worker(w), [&](const Event& e) { EXPECT_TRUE(seen.insert(value_of(e)).second); });
    EXPECT_EQ(seen.size(), 50u);
  }
  // The producer restarts and replays its outbox from seq 31, then continues.
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 9, .first_seq = 31});
    for (std::uint64_t v = 31; v <= 60; ++v) publish(p, v % 7 + 1, v);
  }
  // The consumer restarts too: its windows come back from the segment.
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  std::vector<std::uint64_t> fresh;
  for (std::uint32_t w = 0; w < 2; ++w) drain(g.worker(w), [&](const Event& e) { fresh.push_back(value_of(e)); });
  std::sort(fresh.begin(), fresh.end());
  std::vector<std::uint64_t> expect;
  for (std::uint64_t v = 51; v <= 60; ++v) expect.push_back(v);
  EXPECT_EQ(fresh, expect);
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(worker_stats(s, 0, 0).dup_dropped + worker_stats(s, 0, 1).dup_dropped, 20u);
}

// Batch delivery drops redelivered events before the handler too, and marks the
// windows, so that a later replay of the same events is dropped again.
TEST(GroupDedup, BatchDeliveryDropsRepublishedEvents) {
  TempSegment seg;
  GroupOptions o;
  o.dedup = true;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  std::vector<std::uint64_t> got;
  auto take = [&](std::span<const Event> batch) {
    for (const Event& e : batch) got.push_back(value_of(e));
  };
  auto drain_batches = [&] {
    while (g.worker(0).poll_batch(take, 100) != 0) {
    }
  };
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 9});
    for (std::uint64_t v = 1; v <= 5; ++v) publish(p, v, v);
  }
  drain_batches();
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 9, .first_seq = 3});  // replays 3..5
    for (std::uint64_t v = 3; v <= 7; ++v) publish(p, v, v);
  }
  drain_batches();
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 9, .first_seq = 6});  // replays 6 and 7
    for (std::uint64_t v = 6; v <= 7; ++v) publish(p, v, v);
  }
  drain_batches();
  EXPECT_EQ(got, (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7}));
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(worker_stats(s).dup_dropped, 5u);
  EXPECT_EQ(worker_stats(s).consumed, 7u);
  EXPECT_EQ(s.groups.at(0).cursor, s.tail);
}

TEST(GroupDedup, TooOldAndWindowsSurviveAChangeOfWorkerCount) {
  SegmentOptions so = TempSegment::small_options();
  so.dedup_window = 64;  // small window: 64 (+1 word of slack) sequence numbers
  TempSegment seg(so);
  GroupOptions o;
  o.dedup = true;
  o.workers = 2;
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
    Producer p = Producer::attach(seg.segment(), {.producer_id = 3});
    for (std::uint64_t v = 1; v <= 400; ++v) publish(p, v % 11 + 1, v);
    for (std::uint32_t w = 0; w < 2; ++w) drain(g.worker(w), [](const Event&) {});
  }
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 3, .first_seq = 1});
    for (std::uint64_t v = 1; v <= 400; ++v) publish(p, v % 11 + 1, v);  // everything again
  }
  o.workers = 3;  // keys move between workers
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  std::size_t delivered = 0;
  for (std::uint32_t w = 0; w < 3; ++w) drain(g.worker(w), [&](const Event&) { ++delivered; });
  EXPECT_EQ(delivered, 0u) << "every replayed event is a duplicate or too old";
  const SegmentStats s = read_stats(seg.segment());
  std::uint64_t dup = 0, old = 0;
  for (const auto& w : s.groups.at(0).worker) {
    dup += w.dup_dropped;
    old += w.too_old_dropped;
  }
  EXPECT_GT(dup, 0u);
  EXPECT_GT(old, 0u);
  EXPECT_EQ(dup + old, 400u);
}

TEST(GroupDedup, MoreProducersThanWindowsEvictsTheLeastRecent) {
  SegmentOptions so = TempSegment::small_options();
  so.dedup_producers = 2;
  TempSegment seg(so);
  GroupOptions o;
  o.dedup = true;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  for (std::uint32_t id = 1; id <= 3; ++id) {
    Producer p = Producer::attach(seg.segment(), {.producer_id = id});
    publish(p, 1, id);
  }
  std::size_t delivered = 0;
  drain(g.worker(0), [&](const Event&) { ++delivered; });
  EXPECT_EQ(delivered, 3u);
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).dedup_evictions, 1u);

  // Which one goes: producers x, y, then x again, then 3, new; y is the least recent.
  // Whether x's replay of its first event is still dropped says whether its window was
  // kept. Both orders of 1 and 2, so that the answer cannot come from where the windows
  // lie in the table.
  auto replay_after = [&](std::uint32_t x, std::uint32_t y) {
    TempSegment s2(so);
    ConsumerGroup g2 = ConsumerGroup::join(s2.segment(), "g", o);
    {
      Producer px = Producer::attach(s2.segment(), {.producer_id = x});
      Producer py = Producer::attach(s2.segment(), {.producer_id = y});
      Producer pz = Producer::attach(s2.segment(), {.producer_id = 3});
      publish(px, 1, 1);
      publish(py, 1, 2);
      publish(px, 1, 3);
      publish(pz, 1, 4);
    }
    Producer again = Producer::attach(s2.segment(), {.producer_id = x, .first_seq = 1});
    publish(again, 1, 5);
    std::vector<std::uint64_t> got;
    drain(g2.worker(0), [&](const Event& e) { got.push_back(value_of(e)); });
    return got;
  };
  EXPECT_EQ(replay_after(1, 2), (std::vector<std::uint64_t>{1, 2, 3, 4})) << "1, the most recent, was evicted";
  EXPECT_EQ(replay_after(2, 1), (std::vector<std::uint64_t>{1, 2, 3, 4})) << "2, the most recent, was evicted";
  EXPECT_THROW(ConsumerGroup::join(TempSegment({.capacity = 1 << 16, .max_event = 256, .dedup_window = 0}).segment(),
                                   "x", o),
               Error)
      << "dedup needs a dedup region";
}

// A group registered in a slot another group used before starts with nothing of it:
// no dead letters (and ids from 1), no latency samples, no counters, no resumes but its
// own, and no dedup windows (the old group's producer_seqs are fresh to the new one).
TEST(GroupSlot, AGroupInAReusedSlotStartsClean) {
  SegmentOptions so = TempSegment::small_options();
  so.max_groups = 1;
  TempSegment seg(so);
  GroupOptions o;
  o.dedup = true;
  o.record_latency = true;
  o.retry.max_attempts = 1;
  {
    ConsumerGroup old = ConsumerGroup::join(seg.segment(), "old", o);
    Producer p = Producer::attach(seg.segment(), {.producer_id = 4});
    for (std::uint64_t v = 1; v <= 3; ++v) publish(p, 1, v);
    drain(old.worker(0), [](const Event& e) { return value_of(e) == 2 ? Handled::fail : Handled::ok; });
    const SegmentStats s = read_stats(seg.segment());
    ASSERT_EQ(s.groups.at(0).dead_letters, 1u);
    ASSERT_GT(s.groups.at(0).latency_samples(), 0u);
    const detail::SegmentRefs& r = seg.segment().refs();
    r.groups[0].worker[0].voids_seen.store(5);
    r.groups[0].worker[0].redelivered.store(6);
    r.dlq_control(0)->full_waits.store(7);
    ASSERT_EQ(DeadLetters::open(seg.segment(), "old").stats().appended, 1u);
  }
  ASSERT_TRUE(ConsumerGroup::remove(seg.segment(), "old"));

  ConsumerGroup fresh = ConsumerGroup::join(seg.segment(), "new", o);
  {
    Producer again = Producer::attach(seg.segment(), {.producer_id = 4, .first_seq = 1});
    for (std::uint64_t v = 1; v <= 3; ++v) publish(again, 1, v);  // the same producer_seqs 1..3
  }
  const SegmentStats before = read_stats(seg.segment());
  const GroupStats& g = before.groups.at(0);
  EXPECT_EQ(g.name, "new");
  EXPECT_EQ(g.resumes, 1u);
  EXPECT_EQ(g.dead_letters, 0u);
  EXPECT_EQ(g.dlq_bytes, 0u);
  EXPECT_EQ(g.latency_samples(), 0u);
  EXPECT_EQ(g.worker.at(0).voids, 0u);
  EXPECT_EQ(g.worker.at(0).redelivered, 0u);
  EXPECT_TRUE(DeadLetters::open(seg.segment(), "new").list().empty());
  EXPECT_EQ(g.dlq_full_waits, 0u);
  const DeadLetterStats ring = DeadLetters::open(seg.segment(), "new").stats();
  EXPECT_EQ(ring.appended, 0u);
  EXPECT_EQ(ring.full_waits, 0u);

  std::vector<std::uint64_t> handled;
  drain(fresh.worker(0), [&](const Event& e) {
    handled.push_back(value_of(e));
    return value_of(e) == 3 ? Handled::fail : Handled::ok;
  });
  EXPECT_EQ(handled, (std::vector<std::uint64_t>{1, 2, 3})) << "the old group's dedup windows were kept";
  const auto letters = DeadLetters::open(seg.segment(), "new").list();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].id, 1u);
}

// When a change of worker count merges the dedup windows and there are more producers
// than a table holds, the most recently used producers are kept: a producer's recency
// is the latest position any old worker saw of it. The kept windows keep that recency:
// a producer new to the table then evicts the least recent of them.
TEST(GroupDedup, AMergeKeepsTheProducersUsedMostRecentlyByAnyWorker) {
  SegmentOptions so = TempSegment::small_options();
  so.dedup_producers = 2;
  TempSegment seg(so);
  GroupOptions o;
  o.dedup = true;
  o.workers = 2;
  // A key for each of the two workers.
  std::uint64_t key_of[2] = {0, 0};
  for (std::uint64_t k = 1; key_of[0] == 0 || key_of[1] == 0; ++k) {
    if (key_of[route(k, 0, 2)] == 0) key_of[route(k, 0, 2)] = k;
  }
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
    Producer a = Producer::attach(seg.segment(), {.producer_id = 1});
    Producer b = Producer::attach(seg.segment(), {.producer_id = 2});
    Producer c = Producer::attach(seg.segment(), {.producer_id = 3});
    publish(a, key_of[1], 1);  // A on worker 1, first
    publish(b, key_of[1], 2);  // B on worker 1
    publish(c, key_of[0], 3);  // C on worker 0
    publish(a, key_of[0], 4);  // A on worker 0, last of all
    for (std::uint32_t w = 0; w < 2; ++w) drain(g.worker(w), [](const Event&) {});
  }
  o.workers = 1;  // one table of two windows for three producers: B, used least recently, goes
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  // D, new, takes C's window (C was used before A's last event). The merge put A, the
  // most recent, in the table's first window; D's search starts there (a window search
  // starts at mix64(producer id + 1) mod the windows), so a merge that lost the recency
  // of its windows would evict A, the first of two alike.
  std::uint32_t d_id = 4;
  while (mix64(std::uint64_t{d_id} + 1) % 2 != 0) ++d_id;
  {
    Producer d = Producer::attach(seg.segment(), {.producer_id = d_id});
    publish(d, key_of[0], 10);
    Producer a = Producer::attach(seg.segment(), {.producer_id = 1, .first_seq = 1});
    publish(a, key_of[0], 11);
    publish(a, key_of[0], 12);
  }
  std::vector<std::uint64_t> delivered;
  drain(g.worker(0), [&](const Event& e) { delivered.push_back(value_of(e)); });
  EXPECT_EQ(delivered, std::vector<std::uint64_t>{10}) << "A's window was evicted in the merge or by D";
  const WorkerStats w0 = read_stats(seg.segment()).groups.at(0).worker.at(0);
  EXPECT_EQ(w0.dup_dropped, 2u);
  EXPECT_EQ(w0.dedup_evictions, 1u);  // C's, for D
}

// Child: "die-in-handler LOCATION": joins group g and dies inside the handler of value 2.
const test::ChildRole die_in_handler("die-in-handler", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(s, "g");
  g.worker(0).poll(
      [](const Event& e) {
        if (value_of(e) == 2) ::raise(SIGKILL);
      },
      100);
  return 0;
});

enum class Drain { one_at_a_time, batches, batches_first_fails };

// Five events of key 1 for group g, whose process (the ChildRole `child`) died inside
// its handler. The next process of g drains them (one at a time, in batches, or in
// batches whose first handler call fails, so that the worker delivers that batch again
// one event at a time): each event it handled, with its redelivered() mark.
std::vector<std::pair<std::uint64_t, bool>> after_a_death_in_the_handler(const TempSegment& seg, const char* child,
                                                                          Drain how) {
  { ConsumerGroup::join(seg.segment(), "g"); }
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 5; ++v) publish(p, 1, v);
  EXPECT_EQ(test::reap(test::spawn_child(child, {seg.location().name})), 128 + SIGKILL);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g");
  std::vector<std::pair<std::uint64_t, bool>> got;
  const auto note = [&](const Event& e) { got.emplace_back(value_of(e), e.redelivered()); };
  if (how == Drain::one_at_a_time) {
    drain(g.worker(0), note);
    return got;
  }
  bool fail_next = how == Drain::batches_first_fails;
  const auto note_all = [&](std::span<const Event> batch) {
    if (std::exchange(fail_next, false)) return Handled::fail;
    std::for_each(batch.begin(), batch.end(), note);
    return Handled::ok;
  };
  while (g.worker(0).poll_batch(note_all, 100) != 0) {
  }
  return got;
}

TEST(Redelivery, TheEventInFlightWhenAProcessDiedIsMarked) {
  TempSegment seg;
  EXPECT_EQ(after_a_death_in_the_handler(seg, "die-in-handler", Drain::one_at_a_time),
            (std::vector<std::pair<std::uint64_t, bool>>{{2, true}, {3, false}, {4, false}}));
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).redelivered, 1u);
}

// Child: "die-in-batch-handler LOCATION": joins group g, handles batches of two, and
// dies inside the batch holding value 2.
const test::ChildRole die_in_batch_handler("die-in-batch-handler", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(s, "g");
  for (int i = 0; i < 3; ++i) {
    g.worker(0).poll_batch(
        [](std::span<const Event> batch) {
          for (const Event& e : batch) {
            if (value_of(e) == 2) ::raise(SIGKILL);
          }
        },
        2);
  }
  return 0;  // value 2 never came
});

// With batch delivery the whole batch in flight is redelivered, each event marked and
// counted once, also when the batch fails and is delivered again one event at a time.
TEST(Redelivery, TheBatchInFlightWhenAProcessDiedIsMarked) {
  for (const Drain how : {Drain::batches, Drain::batches_first_fails}) {
    TempSegment seg;
    EXPECT_EQ(after_a_death_in_the_handler(seg, "die-in-batch-handler", how),
              (std::vector<std::pair<std::uint64_t, bool>>{{2, true}, {3, true}, {4, false}}));
    EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).redelivered, 2u)
        << (how == Drain::batches ? "batches" : "a failed batch, then one at a time");
  }
}

// Joins group g of `seg` with `o` and drains worker 0: each event handled, with its
// redelivered() mark.
std::vector<std::pair<std::uint64_t, bool>> drain_marked(const TempSegment& seg, const GroupOptions& o = {}) {
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  std::vector<std::pair<std::uint64_t, bool>> got;
  drain(g.worker(0), [&](const Event& e) { got.emplace_back(value_of(e), e.redelivered()); });
  return got;
}

// A process that dies while it delivers again an event of the window its predecessor
// left (events perhaps handled) leaves the whole window to the next: the events after
// the one it died with are still marked, though they were not reached again.
TEST(Redelivery, ADeathWhileRedeliveringKeepsTheRestOfTheWindowMarked) {
  TempSegment seg;
  { ConsumerGroup::join(seg.segment(), "g"); }
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 0; v < 5; ++v) publish(p, 1, v);
  // Dies in the batch [2, 3]; the next dies in 2, delivered again one event at a time.
  ASSERT_EQ(test::reap(test::spawn_child("die-in-batch-handler", {seg.location().name})), 128 + SIGKILL);
  ASSERT_EQ(test::reap(test::spawn_child("die-in-handler", {seg.location().name})), 128 + SIGKILL);
  EXPECT_EQ(drain_marked(seg), (std::vector<std::pair<std::uint64_t, bool>>{{2, true}, {3, true}, {4, false}}))
      << "3 may have been handled by the first process";
}

// Child: "die-in-retry LOCATION": joins group g with deferred retries; the handler fails
// the first call of value 0, accepts value 1, and kills the process in value 0's retry.
const test::ChildRole die_in_retry("die-in-retry", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(s, "g", deferred_retries(3, std::chrono::milliseconds(1)));
  int calls_of_0 = 0;
  (void)test::eventually(
      [&] {
        g.worker(0).poll(
            [&](const Event& e) {
              if (value_of(e) != 0) return Handled::ok;
              if (calls_of_0++ == 0) return Handled::fail;
              ::raise(SIGKILL);
              return Handled::fail;
            },
            100);
        return false;
      },
      std::chrono::seconds(10));
  return 9;  // the retry never came
});

// A death in a deferred retry counts against the event retried, not the last event
// delivered the first time (handled, after it): with max_deaths 1 the event retried is
// parked, and the other is delivered again, marked.
// Values 0 (key 1) and 1 (key 2) for group g, whose process (the ChildRole `child`)
// is then killed.
void two_events_then_a_death(const TempSegment& seg, const char* child) {
  { ConsumerGroup::join(seg.segment(), "g"); }
  Producer p = Producer::attach(seg.segment());
  publish(p, 1, 0);
  publish(p, 2, 1);
  ASSERT_EQ(test::reap(test::spawn_child(child, {seg.location().name})), 128 + SIGKILL);
}

TEST(Redelivery, ADeathInADeferredRetryCountsAgainstTheEventRetried) {
  TempSegment seg;
  ASSERT_NO_FATAL_FAILURE(two_events_then_a_death(seg, "die-in-retry"));
  EXPECT_EQ(drain_marked(seg, {.max_deaths = 1}), (std::vector<std::pair<std::uint64_t, bool>>{{1, true}}));
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  ASSERT_EQ(dlq.list().size(), 1u);
  EXPECT_EQ(dlq.list()[0].header.key, 1u) << "value 0's key";
}

// Child: "die-in-redrive LOCATION": joins group g with deferred retries an hour apart;
// the handler fails value 0, accepts value 1, and kills the process in the call of the
// dead letter redriven to it (value 2).
const test::ChildRole die_in_redrive("die-in-redrive", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(s, "g", deferred_retries(3, std::chrono::hours(1)));
  const auto handler = [](const Event& e) {
    if (e.redriven()) ::raise(SIGKILL);
    return value_of(e) == 0 ? Handled::fail : Handled::ok;
  };
  g.worker(0).poll(handler, 100);  // value 0 set aside for an hour, value 1 handled
  g.worker(0).poll_redrives(handler);
  return 9;  // the redrive never came
});

// A death in a redriven dead letter's call counts against the dead letter (its entry
// counts the call cut short), not against the event last delivered from the log, which
// an event set aside kept in the redelivery window: with max_deaths 1 that event was
// parked though handled.
TEST(Redelivery, ADeathInARedriveCountsAgainstNoEventOfTheLog) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", {.retry = {.max_attempts = 1}});
    publish(p, 3, 2);
    drain(g.worker(0), [](const Event&) { return Handled::fail; });
  }
  DeadLetters dlq = DeadLetters::open(seg.segment(), "g");
  ASSERT_EQ(dlq.request_redrive(), 1u);
  publish(p, 1, 0);
  publish(p, 2, 1);
  ASSERT_EQ(test::reap(test::spawn_child("die-in-redrive", {seg.location().name})), 128 + SIGKILL);
  EXPECT_EQ(drain_marked(seg, {.max_deaths = 1}),
            (std::vector<std::pair<std::uint64_t, bool>>{{0, true}, {1, true}}));
  ASSERT_EQ(dlq.list().size(), 1u) << "value 1 was not parked";
  EXPECT_EQ(dlq.list()[0].header.key, 3u);
  EXPECT_EQ(dlq.list()[0].state, "redrive");
  EXPECT_EQ(dlq.list()[0].attempts, 2u) << "the call cut short counts";
}

// Child: "die-while-a-retry-waits LOCATION": joins group g with deferred retries an hour
// apart; the handler fails value 0 and accepts value 1; the process is then killed
// outside any handler call, value 0 still waiting.
const test::ChildRole die_while_a_retry_waits("die-while-a-retry-waits", [](const std::vector<std::string>& a) {
  const Segment s = Segment::open(Location::shm(a.at(0)));
  ConsumerGroup g = ConsumerGroup::join(s, "g", deferred_retries(3, std::chrono::hours(1)));
  g.worker(0).poll([](const Event& e) { return value_of(e) == 0 ? Handled::fail : Handled::ok; }, 100);
  ::raise(SIGKILL);
  return 9;
});

// A death while an event waits for its deferred retry, after a later event was handled
// (the cursor kept below it by the one waiting), counts against no event: with
// max_deaths 1 the handled event was parked unhandled as a poison event. Both come again
// marked: the first process called the handler with each.
TEST(Redelivery, ADeathAfterAnEventHandledBehindAWaitingRetryCountsAgainstNoEvent) {
  TempSegment seg;
  ASSERT_NO_FATAL_FAILURE(two_events_then_a_death(seg, "die-while-a-retry-waits"));
  EXPECT_EQ(drain_marked(seg, {.max_deaths = 1}),
            (std::vector<std::pair<std::uint64_t, bool>>{{0, true}, {1, true}}));
  EXPECT_TRUE(DeadLetters::open(seg.segment(), "g").list().empty()) << "value 1 was parked as a poison event";
}

// Key 8: a void record (key_seq 1: a claim aborted after a later claim of the key, so
// it cannot be given back), then event 99 (key_seq 2).
void publish_after_a_void(const TempSegment& seg) {
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment());
  Claim first;
  ASSERT_EQ(a.try_claim(8, 1, 8, first), Status::ok);
  publish(b, 8, 99);
  first.abort();
}

// A batch-delivering worker counts the void records it passes, as a single-event one does.
TEST(Voids, AreCountedByBatchDelivery) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g");
  publish_after_a_void(seg);
  std::vector<std::uint64_t> got;
  while (g.worker(0).poll_batch(
             [&](std::span<const Event> batch) {
               for (const Event& e : batch) got.push_back(value_of(e));
             },
             100) != 0) {
  }
  EXPECT_EQ(got, std::vector<std::uint64_t>{99});
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(worker_stats(s).voids, 1u);
  EXPECT_EQ(s.groups.at(0).cursor, s.tail);
}

TEST(Voids, AreDeliveredWhenAskedWithTheirKeySeq) {
  TempSegment seg;
  GroupOptions o;
  o.deliver_voids = true;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  publish_after_a_void(seg);
  std::vector<std::pair<std::uint64_t, bool>> got;
  drain(g.worker(0), [&](const Event& e) { got.emplace_back(e.key_seq(), e.is_void()); });
  EXPECT_EQ(got, (std::vector<std::pair<std::uint64_t, bool>>{{1, true}, {2, false}}));
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(worker_stats(s).voids, 1u) << "a void delivered is counted as one passed over";
  EXPECT_EQ(worker_stats(s).consumed, 2u) << "consumed counts what the handler accepted, the void included";
}

// Asked to deliver voids, a batch-delivering worker hands each one over (one at a
// time, like every event then) in its place in the log.
TEST(Voids, AreDeliveredToBatchHandlersWhenAsked) {
  TempSegment seg;
  GroupOptions o;
  o.deliver_voids = true;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", o);
  publish_after_a_void(seg);
  std::vector<std::pair<std::uint64_t, bool>> got;
  while (g.worker(0).poll_batch(
             [&](std::span<const Event> batch) {
               for (const Event& e : batch) got.emplace_back(e.key_seq(), e.is_void());
             },
             100) != 0) {
  }
  EXPECT_EQ(got, (std::vector<std::pair<std::uint64_t, bool>>{{1, true}, {2, false}}));
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(worker_stats(s).voids, 1u);
  EXPECT_EQ(s.groups.at(0).cursor, s.tail);
}

}  // namespace
}  // namespace ringbus
