// Consumer groups, workers and the tail reader, driven deterministically.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/detail/groups.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/recovery.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/error.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/tail_reader.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::TempSegment;
using test::value_of;

void publish_values(Producer& p, std::uint64_t key_mod, std::uint64_t from, std::uint64_t to) {
  for (std::uint64_t v = from; v < to; ++v) {
    const std::uint64_t key = key_mod == 0 ? 0 : 1 + v % key_mod;
    ASSERT_EQ(p.publish(key, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  }
}

// Polls every worker until none has anything left.
template <class H>
std::size_t drain_all(ConsumerGroup& g, H&& handler) {
  std::size_t total = 0;
  for (bool more = true; more;) {
    more = false;
    for (std::uint32_t i = 0; i < g.workers(); ++i) {
      const std::size_t n = g.worker(i).poll(handler, 1000);
      total += n;
      more = more || n != 0;
    }
  }
  return total;
}

TEST(ConsumerGroup, EveryEventGoesToExactlyOneWorkerAndKeysStayPut) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "orders", {.workers = 3});
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 17, 0, 300);
  std::map<std::uint64_t, std::uint32_t> worker_of_key;
  std::map<std::uint64_t, std::uint64_t> last_seq;
  std::set<std::uint64_t> values;
  for (std::uint32_t i = 0; i < 3; ++i) {
    g.worker(i).poll(
        [&](const Event& e) {
          auto [it, fresh] = worker_of_key.try_emplace(e.key(), i);
          EXPECT_EQ(it->second, i) << "key " << e.key() << " handled by two workers";
          EXPECT_EQ(e.key_seq(), last_seq[e.key()] + 1) << "per-key order";
          last_seq[e.key()] = e.key_seq();
          EXPECT_TRUE(values.insert(value_of(e)).second) << "delivered twice";
        },
        1000);
  }
  EXPECT_EQ(values.size(), 300u);
  std::set<std::uint32_t> used;
  for (auto& [k, w] : worker_of_key) used.insert(w);
  EXPECT_EQ(used.size(), 3u) << "17 keys spread over all 3 workers";
}

// A poll's maximum may be any number: one of 2^60 (or any multiple) made the bound on
// records examined wrap to 0, and the poll returned 0 with events ready, for ever.
TEST(ConsumerGroup, APollOfAnyMaximumDeliversWhatIsReady) {
  TempSegment seg;
  ConsumerGroup single = ConsumerGroup::join(seg.segment(), "single");
  ConsumerGroup batch = ConsumerGroup::join(seg.segment(), "batch");
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 3, 0, 5);
  for (const std::size_t most : {std::size_t{1} << 60, std::size_t{3} << 62, SIZE_MAX}) {
    SCOPED_TRACE(most);
    std::vector<std::uint64_t> got_single, got_batch;
    EXPECT_EQ(single.worker(0).poll([&](const Event& e) { got_single.push_back(value_of(e)); }, most), 5u);
    EXPECT_EQ(batch.worker(0).poll_batch(
                  [&](std::span<const Event> events) {
                    for (const Event& e : events) got_batch.push_back(value_of(e));
                  },
                  most),
              5u);
    EXPECT_EQ(got_single, (std::vector<std::uint64_t>{0, 1, 2, 3, 4}));
    EXPECT_EQ(got_batch, got_single);
    publish_values(p, 3, 0, 5);
  }
}

TEST(ConsumerGroup, EachGroupSeesEveryEvent) {
  TempSegment seg;
  ConsumerGroup a = ConsumerGroup::join(seg.segment(), "a");
  ConsumerGroup b = ConsumerGroup::join(seg.segment(), "b", {.workers = 2});
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 5, 0, 100);
  std::uint64_t sum_a = 0, sum_b = 0;
  EXPECT_EQ(drain_all(a, [&](const Event& e) { sum_a += value_of(e); }), 100u);
  EXPECT_EQ(drain_all(b, [&](const Event& e) { sum_b += value_of(e); }), 100u);
  EXPECT_EQ(sum_a, 99u * 100 / 2);
  EXPECT_EQ(sum_b, sum_a);
}

TEST(ConsumerGroup, ANewGroupStartsAtTheEndUnlessAskedForTheEarliest) {
  TempSegment seg;
  ConsumerGroup first = ConsumerGroup::join(seg.segment(), "first");
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 10);
  ConsumerGroup late = ConsumerGroup::join(seg.segment(), "late");
  ConsumerGroup replay = ConsumerGroup::join(seg.segment(), "replay", {.start = StartFrom::earliest});
  publish_values(p, 0, 10, 15);
  EXPECT_EQ(drain_all(late, [](const Event&) {}), 5u);
  EXPECT_EQ(drain_all(replay, [](const Event&) {}), 15u) << "from the slowest other group's cursor";
}

TEST(ConsumerGroup, ResumesFromItsCursorAfterLeaving) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "resume");
    publish_values(p, 3, 0, 50);
    std::uint64_t next = 0;
    EXPECT_EQ(g.worker(0).poll([&](const Event& e) { EXPECT_EQ(value_of(e), next++); }, 20), 20u);
  }
  publish_values(p, 3, 50, 60);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "resume");
  std::uint64_t next = 20;
  EXPECT_EQ(drain_all(g, [&](const Event& e) { EXPECT_EQ(value_of(e), next++); }), 40u);
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).resumes, 2u);
}

TEST(ConsumerGroup, ChangingTheWorkerCountRestartsFromTheSlowestCursor) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  std::uint64_t behind = 0;
  std::set<std::uint64_t> handled;  // by worker 0 before the change
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "scale", {.workers = 2});
    publish_values(p, 8, 0, 40);
    g.worker(0).poll([&](const Event& e) { handled.insert(value_of(e)); }, 1000);  // worker 1 stays behind
    behind = g.worker(1).position();
  }
  ASSERT_FALSE(handled.empty());
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "scale", {.workers = 4});
  std::set<std::uint64_t> values;
  std::set<std::uint64_t> marked;
  drain_all(g, [&](const Event& e) {
    values.insert(value_of(e));
    if (e.redelivered()) marked.insert(value_of(e));
  });
  EXPECT_EQ(values.size(), 40u) << "nothing lost when the key split changes (at-least-once)";
  for (std::uint32_t i = 0; i < 4; ++i) EXPECT_GE(g.worker(i).position(), behind);
  // Delivered again, by whichever worker their key moved to: each marked.
  for (const std::uint64_t v : handled) EXPECT_TRUE(marked.contains(v)) << "value " << v;
}

// Joining with fewer workers than the group had: the slots beyond the new count are
// checked like the others (a live process running one is not taken over) and left
// detached, so that the group can be removed once this process leaves it.
TEST(ConsumerGroup, FewerWorkersCheckAndReleaseTheSlotsBeyondThem) {
  TempSegment seg;
  { ConsumerGroup g = ConsumerGroup::join(seg.segment(), "shrink", {.workers = 2}); }
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint32_t slot = read_stats(seg.segment()).groups.at(0).slot;
  layout::WorkerSlot& second = r.groups[slot].worker[1];
  const std::uint64_t detached = second.owner.load();
  second.owner.store(layout::owner::make(layout::owner::active, detail::self_process().pid));
  second.owner_start.store(detail::self_process().start_ticks);
  try {
    (void)ConsumerGroup::join(seg.segment(), "shrink", {.workers = 1});
    ADD_FAILURE() << "took over a worker slot a live process runs";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::busy);
    EXPECT_NE(std::string(e.what()).find("worker 1"), std::string::npos) << e.what();
  }
  second.owner.store(detached);
  { ConsumerGroup g = ConsumerGroup::join(seg.segment(), "shrink", {.workers = 1}); }
  EXPECT_EQ(layout::owner::state(second.owner.load()), layout::owner::detached);
  EXPECT_TRUE(ConsumerGroup::remove(seg.segment(), "shrink"));
}

// A worker's counters continue where the previous owner of its slot left them.
TEST(ConsumerGroup, ConsumedCountsContinueAcrossARejoin) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "count");
    publish_values(p, 3, 0, 3);
    EXPECT_EQ(drain_all(g, [](const Event&) {}), 3u);
  }
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "count");
    publish_values(p, 3, 3, 5);
    EXPECT_EQ(drain_all(g, [](const Event&) {}), 2u);
    EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).consumed, 5u);
  }

  // And so does the count of void records passed over.
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint32_t slot = read_stats(seg.segment()).groups.at(0).slot;
  r.groups[slot].worker[0].voids_seen.store(5);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "count");
  const std::uint64_t pos = r.control->tail.fetch_add(record_bytes(8));
  detail::write_void(r, pos, 0, 0, record_flags::recovered, 1, 99, 1, 8);
  EXPECT_EQ(drain_all(g, [](const Event&) {}), 0u);
  EXPECT_EQ(g.worker(0).position(), pos + record_bytes(8));
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).voids, 6u);
}

// A reader held at a hole that recovery cannot end (here no journal names it, as only
// damaged memory leaves; a producer stopped mid-claim is the other case) is counted
// once in stalls_unresolved, however long it waits, and moves on once the hole is filled.
// A busy-spinning worker, which never gives its CPU up, checks as well.
class StallWait : public ::testing::TestWithParam<bool> {
 protected:
  // Joins a group that never unblocks a hole by itself, waiting the group's default way
  // (which gives the CPU up when idle) or by a busy spin.
  ConsumerGroup join(const char* name) {
    GroupOptions o;
    o.unblock_after = std::chrono::milliseconds{0};
    o.wait = GetParam() ? WaitStrategy::busy_spin() : GroupOptions{}.wait;
    return ConsumerGroup::join(seg.segment(), name, o);
  }
  // Publishes one event and waits until the group has handled it.
  void publish_one_and_await(const std::atomic<int>& handled) {
    Producer p = Producer::attach(seg.segment());
    const std::uint64_t v = 5;
    ASSERT_EQ(p.publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    ASSERT_TRUE(test::eventually([&] { return handled.load() == 1; }));
  }
  TempSegment seg;
};
INSTANTIATE_TEST_SUITE_P(ConsumerGroup, StallWait, ::testing::Bool(),
                         [](const auto& i) { return std::string(i.param ? "busy_spin" : "default_wait"); });

TEST_P(StallWait, AStallRecoveryCannotEndIsCountedOnce) {
  ConsumerGroup g = join("held");
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint64_t hole = r.control->tail.fetch_add(record_bytes(8));
  std::atomic<int> handled{0};
  g.start([&](const Event&) { handled.fetch_add(1); });
  ASSERT_TRUE(test::eventually([&] { return r.control->stalls_unresolved.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // about 20 more stall checks
  EXPECT_EQ(read_stats(seg.segment()).stalls_unresolved, 1u);
  EXPECT_EQ(g.worker(0).position(), hole);
  detail::write_void(r, hole, 0, 0, record_flags::recovered, 1, 1, 1, 8);
  publish_one_and_await(handled);
  g.stop();
  EXPECT_EQ(r.control->stalls_unresolved.load(), 1u);
}

// A worker with an event set aside for a retry yields instead of parking while it
// waits; held at a hole meanwhile, it still checks for the stall and counts it.
TEST(ConsumerGroup, AWorkerWaitingWithARetryDueChecksForStalls) {
  TempSegment seg;
  GroupOptions o;
  o.unblock_after = std::chrono::milliseconds{0};
  o.retry.backoff = RetryPolicy::Backoff::deferred;
  o.retry.delay = std::chrono::seconds{1};
  o.retry.max_attempts = 1000;  // set aside for the whole test
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "retrying", o);
  Producer p = Producer::attach(seg.segment());
  const std::uint64_t v = 5;
  ASSERT_EQ(p.publish(1, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint64_t hole = r.control->tail.fetch_add(record_bytes(8));
  std::atomic<int> attempts{0};
  g.start([&](const Event&) {
    attempts.fetch_add(1);
    return Handled::fail;
  });
  ASSERT_TRUE(test::eventually([&] { return r.control->stalls_unresolved.load() == 1; }))
      << "attempts " << attempts.load();
  g.stop();
  EXPECT_EQ(g.worker(0).position(), hole);                          // read up to the hole
  EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).cursor, 0u);  // on the event set aside
}

// A worker waiting at the tail is idle, not stalled: with nothing claimed beyond its
// position there is no hole to repair or count, however long it waits.
TEST_P(StallWait, AWorkerWaitingAtTheTailIsNotStalled) {
  ConsumerGroup g = join("idle");
  std::atomic<int> handled{0};
  g.start([&](const Event&) { handled.fetch_add(1); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // about 50 stall checks
  EXPECT_EQ(read_stats(seg.segment()).stalls_unresolved, 0u);
  publish_one_and_await(handled);
  g.stop();
  EXPECT_EQ(read_stats(seg.segment()).stalls_unresolved, 0u);
}

// Two threads joining one new group at the same moment register it once: the second
// registration waits for the first and then finds the group (here its worker is run by
// a live process, this one, so that join is refused with busy). Without the
// registration lock both registered it, each in its own slot, in about one round in 60.
TEST(ConsumerGroup, ConcurrentJoinsOfANewNameRegisterOneGroup) {
  for (int round = 0; round < 200; ++round) {
    TempSegment seg;
    std::atomic<int> ready{0};
    std::atomic<int> tried{0};
    std::atomic<int> joined{0};
    auto join = [&] {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      try {
        ConsumerGroup g = ConsumerGroup::join(seg.segment(), "race");
        joined.fetch_add(1);
        tried.fetch_add(1);
        while (tried.load() < 2) {  // hold the worker until both have tried
        }
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::busy) << e.what();
        tried.fetch_add(1);
      }
    };
    std::thread a(join), b(join);
    a.join();
    b.join();
    EXPECT_EQ(joined.load(), 1) << "round " << round;
    std::size_t named = 0;
    for (const GroupStats& gs : read_stats(seg.segment()).groups) named += gs.name == "race" ? 1 : 0;
    ASSERT_EQ(named, 1u) << "round " << round;
  }
}

TEST(ConsumerGroup, AWorkerRunByALiveProcessIsNotTakenOver) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "owned");
  try {
    ConsumerGroup::join(seg.segment(), "owned");
    FAIL() << "joined a group whose worker is running";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::busy);
    EXPECT_NE(std::string(e.what()).find("owned"), std::string::npos);
  }
  EXPECT_THROW(ConsumerGroup::remove(seg.segment(), "owned"), Error);
}

TEST(ConsumerGroup, RemovingAGroupStopsItGating) {
  TempSegment seg;
  { ConsumerGroup g = ConsumerGroup::join(seg.segment(), "gone"); }
  Producer p = Producer::attach(seg.segment());
  const std::string big(1000, 'x');
  Status s = Status::ok;
  for (int i = 0; i < 200 && s == Status::ok; ++i) s = p.try_publish(0, 1, std::as_bytes(std::span(big)));
  EXPECT_EQ(s, Status::full);
  EXPECT_TRUE(ConsumerGroup::remove(seg.segment(), "gone"));
  EXPECT_FALSE(ConsumerGroup::remove(seg.segment(), "gone"));
  for (int i = 0; i < 200; ++i) ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(big))), Status::ok);
}

// Skipping forward: past an event no handler accepts (a group without dead letters stops
// on it for good), or past a backlog. Only a group nobody runs, only forward, only to
// where a record starts.
TEST(ConsumerGroup, SkipToMovesTheCursorsOfAGroupNobodyRunsForward) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  std::vector<std::uint64_t> positions;  // of values 0..9
  std::vector<std::uint64_t> worker1_values;  // from value 4 on
  std::uint64_t cursor = 0;
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "skip", {.workers = 2});
    publish_values(p, 4, 0, 10);
    TailReader reader = TailReader::open(seg.segment(), TailStart::earliest);
    for (Event e; reader.try_next(e);) {
      positions.push_back(e.position());
      if (value_of(e) >= 4 && g.worker(1).routes_here(e)) worker1_values.push_back(value_of(e));
    }
    ASSERT_EQ(positions.size(), 10u);
    ASSERT_FALSE(worker1_values.empty());
    // Worker 0 handles what routes to it, and so passes every record; worker 1 stays at the start.
    g.worker(0).poll([](const Event&) {}, 1000);
    cursor = g.worker(1).position();
    ASSERT_LT(cursor, positions[4]);
    ASSERT_GT(g.worker(0).position(), positions[4]);
    try {
      (void)ConsumerGroup::skip_to(seg.segment(), "skip", positions[4]);
      FAIL() << "moved the cursors of a group this process runs";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::busy);
      EXPECT_NE(std::string(e.what()).find("run by live pid " + std::to_string(::getpid())), std::string::npos);
    }
  }
  EXPECT_FALSE(ConsumerGroup::skip_to(seg.segment(), "missing", positions[4]).has_value());
  auto refused = [&](std::uint64_t position, const std::string& says) {
    try {
      (void)ConsumerGroup::skip_to(seg.segment(), "skip", position);
      ADD_FAILURE() << "moved to " << position;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  refused(positions[4] + 8, "is inside the record at " + std::to_string(positions[4]));
  refused(positions[4] + 1, "is not a record position");
  refused(positions[9] + 4096, "is beyond the log's tail");

  const std::optional<ConsumerGroup::Skipped> skipped = ConsumerGroup::skip_to(seg.segment(), "skip", positions[4]);
  ASSERT_TRUE(skipped.has_value());
  EXPECT_EQ(skipped->from, cursor);
  EXPECT_EQ(skipped->to, positions[4]);
  refused(positions[2], "is behind " + std::to_string(positions[4]) + ", the group's cursor: cursors only move forward");
  {
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "skip", {.workers = 2});
    std::vector<std::uint64_t> handled[2];
    for (std::uint32_t w = 0; w < 2; ++w) {
      while (g.worker(w).poll([&](const Event& e) { handled[w].push_back(value_of(e)); }, 1000) != 0) {
      }
    }
    EXPECT_TRUE(handled[0].empty()) << "worker 0 was past the position already, and stays";
    EXPECT_EQ(handled[1], worker1_values) << "worker 1 starts at value 4";
  }
  // To the tail: nothing before it is delivered, what comes after is.
  publish_values(p, 4, 10, 12);
  const std::optional<ConsumerGroup::Skipped> to_end = ConsumerGroup::skip_to(seg.segment(), "skip", layout::kNoPosition);
  ASSERT_TRUE(to_end.has_value());
  EXPECT_EQ(to_end->to, p.segment().was_tail());
  publish_values(p, 4, 12, 13);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "skip", {.workers = 2});
  std::vector<std::uint64_t> values;
  drain_all(g, [&](const Event& e) { values.push_back(value_of(e)); });
  EXPECT_EQ(values, std::vector<std::uint64_t>{12});
}

// A new group that starts at a position, as a projection rebuilt from a snapshot starts
// where the snapshot folded up to: from the slowest cursor of the other groups (which
// keeps the records in the ring) to the tail, where a record starts.
TEST(ConsumerGroup, ANewGroupStartsAtAPositionTheOtherGroupsStillHold) {
  auto refused = [](const Segment& s, std::uint64_t position, const std::string& says) {
    const std::size_t groups = read_stats(s).groups.size();
    try {
      (void)ConsumerGroup::join(s, "snap", {.start = StartFrom::position, .start_position = position});
      ADD_FAILURE() << "started at " << position;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      EXPECT_NE(std::string(e.what()).find("group \"snap\": start_position " + std::to_string(position) + says),
                std::string::npos)
          << e.what();
    }
    EXPECT_EQ(read_stats(s).groups.size(), groups) << "a refused start registers nothing";
  };
  auto positions_of = [](const Segment& s) {
    std::vector<std::uint64_t> out;
    TailReader reader = TailReader::open(s, TailStart::earliest);
    for (Event e; reader.try_next(e);) out.push_back(e.position());
    return out;
  };
  {
    TempSegment seg;
    { const ConsumerGroup holder = ConsumerGroup::join(seg.segment(), "holder"); }  // gates from 0, run by nobody
    Producer p = Producer::attach(seg.segment());
    publish_values(p, 3, 0, 10);
    const std::vector<std::uint64_t> at = positions_of(seg.segment());
    ASSERT_EQ(at.size(), 10u);
    const std::uint64_t tail = seg.segment().was_tail();
    refused(seg.segment(), at[4] + 8, " is inside the record at " + std::to_string(at[4]));
    refused(seg.segment(), at[4] + 1, " is not a record position");
    refused(seg.segment(), tail + 4096, " is beyond the log's tail " + std::to_string(tail));
    ConsumerGroup snap =
        ConsumerGroup::join(seg.segment(), "snap", {.start = StartFrom::position, .start_position = at[4]});
    std::vector<std::uint64_t> values;
    drain_all(snap, [&](const Event& e) { values.push_back(value_of(e)); });
    EXPECT_EQ(values, (std::vector<std::uint64_t>{4, 5, 6, 7, 8, 9}));
  }
  // With no other group, producers may have overwritten anything behind the tail.
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 3, 0, 3);
  const std::vector<std::uint64_t> at = positions_of(seg.segment());
  const std::uint64_t tail = seg.segment().was_tail();
  refused(seg.segment(), at[1],
          " is behind " + std::to_string(tail) + ", the tail: with no other group to hold the records behind it");
  ConsumerGroup snap = ConsumerGroup::join(seg.segment(), "snap", {.start = StartFrom::position, .start_position = tail});
  publish_values(p, 3, 3, 4);
  std::vector<std::uint64_t> values;
  drain_all(snap, [&](const Event& e) { values.push_back(value_of(e)); });
  EXPECT_EQ(values, std::vector<std::uint64_t>{3});
}

TEST(ConsumerGroup, NamesAndOptionsAreValidated) {
  TempSegment seg;
  EXPECT_THROW(ConsumerGroup::join(seg.segment(), "bad/name"), Error);
  EXPECT_THROW(ConsumerGroup::join(seg.segment(), std::string(64, 'n')), Error);
  EXPECT_THROW(ConsumerGroup::join(seg.segment(), "w", {.workers = 0}), Error);
  EXPECT_THROW(ConsumerGroup::join(seg.segment(), "w", {.workers = layout::kMaxWorkers + 1}), Error);
  EXPECT_THROW(ConsumerGroup::join(seg.segment(), "w", {.workers = 2, .cpus = {0}}), Error);
  // More CPUs than workers is refused too (it was taken, the rest ignored): most likely
  // `workers` was forgotten.
  try {
    (void)ConsumerGroup::join(seg.segment(), "w", {.workers = 1, .cpus = {0, 1}});
    ADD_FAILURE() << "two cpus for one worker were taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_options);
    EXPECT_NE(std::string(e.what()).find("1 worker but 2 cpus given (one a worker, or none)"), std::string::npos)
        << e.what();
  }
  // A CPU its threads could never be pinned to is refused at the join, naming it, not
  // later by a worker thread that fails on start.
  for (const int cpu : {-1, CPU_SETSIZE}) {
    try {
      (void)ConsumerGroup::join(seg.segment(), "w", {.workers = 1, .cpus = {cpu}});
      ADD_FAILURE() << "cpu " << cpu << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      EXPECT_NE(std::string(e.what()).find("cpu " + std::to_string(cpu)), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(cpu_unavailable(-1), "cpu -1 is negative");
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(::sched_getaffinity(0, sizeof allowed, &allowed), 0);
  for (int c = 0; c < CPU_SETSIZE; ++c) EXPECT_EQ(cpu_unavailable(c).empty(), CPU_ISSET(c, &allowed) != 0) << c;
  EXPECT_NE(cpu_unavailable(CPU_SETSIZE).find("allowed: "), std::string::npos);
  auto refusal = [&](const GroupOptions& o) {
    try {
      (void)ConsumerGroup::join(seg.segment(), "w", o);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  // Each refusal names the option and its value.
  const std::string where = "segment " + seg.location().display() + " group \"w\": ";
  auto with = [](auto change) {
    GroupOptions o;
    change(o);
    return o;
  };
  const std::vector<std::pair<GroupOptions, std::string>> refused = {
      {with([](GroupOptions& o) { o.workers = 0; }), "workers is 0: it must be from 1 to 16"},
      {with([](GroupOptions& o) { o.workers = 17; }), "workers is 17: it must be from 1 to 16"},
      {with([](GroupOptions& o) { o.batch = 0; }), "batch is 0: it must be from 1 to 65536"},
      // A worker keeps room for a batch: 2^32 - 1 events asked for 96 GiB.
      {with([](GroupOptions& o) { o.batch = 65537; }), "batch is 65537: it must be from 1 to 65536"},
      {with([](GroupOptions& o) { o.batch = UINT32_MAX; }), "batch is 4294967295: it must be from 1 to 65536"},
      {with([](GroupOptions& o) { o.retry.max_attempts = 0; }), "retry.max_attempts is 0: it must be at least 1"},
      {with([](GroupOptions& o) { o.max_pending = 0; }), "max_pending is 0: it must be at least 1"},
      // The count lives in the low bits of a record position (layout::kInflightDeaths).
      {with([](GroupOptions& o) { o.max_deaths = 8; }), "max_deaths is 8: it must be from 0 (off) to 7"},
      {with([](GroupOptions& o) { o.start = static_cast<StartFrom>(3); }), "start is 3, not a StartFrom"},
      {with([](GroupOptions& o) { o.retry.backoff = static_cast<RetryPolicy::Backoff>(3); }),
       "retry.backoff is 3, not a RetryPolicy::Backoff"},
      {with([](GroupOptions& o) { o.retry.while_retrying = static_cast<RetryPolicy::KeyOrder>(2); }),
       "retry.while_retrying is 2, not a RetryPolicy::KeyOrder"},
      {with([](GroupOptions& o) { o.wait.kind = static_cast<WaitStrategy::Kind>(7); }),
       "wait.kind is 7, not a WaitStrategy::Kind"},
      // Negative durations would wrap to centuries once unsigned (a hole never repaired).
      {with([](GroupOptions& o) { o.retry.delay = std::chrono::nanoseconds{-1}; }),
       "retry.delay is -1 ns: it must not be negative"},
      {with([](GroupOptions& o) { o.wait = WaitStrategy::spin_sleep(std::chrono::microseconds{-5}); }),
       "wait.sleep is -5 us: it must not be negative"},
      {with([](GroupOptions& o) { o.unblock_after = std::chrono::milliseconds{-1}; }),
       "unblock_after is -1 ms: it must be from 0 to 24 h"},
      {with([](GroupOptions& o) { o.unblock_after = std::chrono::hours{25}; }),
       "unblock_after is 90000000 ms: it must be from 0 to 24 h"},
      // Trailing: at most a quarter of the 64 KiB log, a delay from 0 to 1 s.
      {with([](GroupOptions& o) { o.trail_bytes = 16 * 1024 + 1; }),
       "trail_bytes is 16385: it must be at most a quarter of the log's capacity (16384 bytes)"},
      {with([](GroupOptions& o) {
         o.trail_bytes = 64;
         o.trail_max_delay = std::chrono::microseconds{-1};
       }),
       "trail_max_delay is -1 us: it must be from 0 to 1 s"},
      {with([](GroupOptions& o) {
         o.trail_bytes = 64;
         o.trail_max_delay = std::chrono::seconds{2};
       }),
       "trail_max_delay is 2000000 us: it must be from 0 to 1 s"},
  };
  for (const auto& [o, why] : refused) EXPECT_EQ(refusal(o), where + why);
  EXPECT_EQ(refusal({.trail_bytes = 16 * 1024, .trail_max_delay = std::chrono::seconds{1}}), "accepted");
  GroupOptions day;
  day.unblock_after = std::chrono::hours{24};
  EXPECT_EQ(refusal(day), "accepted");
  EXPECT_EQ(refusal({.max_deaths = kMaxDeaths}), "accepted");
}

// A segment holds max_groups groups; one more is refused, naming the limit, and a group
// removed makes room again.
TEST(ConsumerGroup, AFullGroupTableRefusesAnotherGroup) {
  SegmentOptions o = TempSegment::small_options();
  o.max_groups = 2;
  TempSegment seg(o);
  { ConsumerGroup a = ConsumerGroup::join(seg.segment(), "a"); }
  ConsumerGroup b = ConsumerGroup::join(seg.segment(), "b");
  try {
    (void)ConsumerGroup::join(seg.segment(), "c");
    ADD_FAILURE() << "a third group joined a segment of two group slots";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_slot);
    EXPECT_NE(std::string(e.what()).find("all 2 group slots are in use"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(ConsumerGroup::join(seg.segment(), "a"));  // a group that left keeps its slot
  ConsumerGroup::remove(seg.segment(), "a");
  EXPECT_NO_THROW(ConsumerGroup::join(seg.segment(), "c"));
}

// A cursor in shared memory that cannot be a record position (not 8-byte aligned, or
// past the tail) is refused at join, naming the worker and the values; the join gives
// back what it took, so the group joins again once the cursor is sound.
TEST(ConsumerGroup, AJoinRefusesACursorThatCannotBeARecordPosition) {
  TempSegment seg;
  { ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", {.workers = 2}); }
  Producer p = Producer::attach(seg.segment());
  const std::uint64_t v = 9;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint64_t tail = r.control->tail.load();
  layout::GroupSlot* gs = nullptr;
  for (std::uint32_t i = 0; i < r.max_groups; ++i) {
    if (detail::group_name(r.groups[i]) == "g") gs = &r.groups[i];
  }
  ASSERT_NE(gs, nullptr);
  for (const std::uint64_t bad : {std::uint64_t{3}, tail + 8}) {
    gs->worker[1].cursor.store(bad);
    try {
      (void)ConsumerGroup::join(seg.segment(), "g", {.workers = 2});
      ADD_FAILURE() << "cursor " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt);
      EXPECT_NE(std::string(e.what()).find("worker 1 cursor " + std::to_string(bad) +
                                           " cannot be a record position (tail " + std::to_string(tail) + ")"),
                std::string::npos)
          << e.what();
    }
  }
  gs->worker[1].cursor.store(0);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g", {.workers = 2});
  std::uint64_t seen = 0;
  for (std::uint32_t w = 0; w < 2; ++w) g.worker(w).poll([&](const Event&) { ++seen; });
  EXPECT_EQ(seen, 3u);
}

// A slot a dead process left `registering` is taken by the next join that needs a slot,
// without waiting for a producer to clear it.
TEST(ConsumerGroup, ASlotLeftRegisteringByADeadProcessIsTakenOver) {
  SegmentOptions o = TempSegment::small_options();
  o.max_groups = 1;
  TempSegment seg(o);
  layout::GroupSlot& gs = seg.segment().refs().groups[0];
  gs.registrant_start.store(12345);
  gs.state.store(layout::owner::make(layout::owner::registering, 0x3ffffff0));  // above pid_max: never alive
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "after");
  EXPECT_EQ(layout::owner::state(gs.state.load()), layout::owner::active);
  EXPECT_EQ(layout::owner::pid(gs.state.load()), detail::self_process().pid);
  EXPECT_EQ(gs.registrant_start.load(), detail::self_process().start_ticks);
  Producer p = Producer::attach(seg.segment());
  const std::uint64_t v = 5;
  ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  std::uint64_t seen = 0;
  g.worker(0).poll([&](const Event&) { ++seen; });
  EXPECT_EQ(seen, 1u);

  // A live registrant's slot is not taken: the segment has no other.
  gs.registrant_start.store(detail::self_process().start_ticks);
  gs.state.store(layout::owner::make(layout::owner::registering, detail::self_process().pid));
  try {
    (void)ConsumerGroup::join(seg.segment(), "other");
    ADD_FAILURE() << "a live registrant's slot was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_slot) << e.what();
  }
}

// A join that finds another live process registering the same name waits for it by
// the clock (registration takes microseconds, but its process may be descheduled):
// it joins the group once registered, and gives up with busy only after a bound.
TEST(ConsumerGroup, AJoinWaitsForALiveRegistrantOfTheSameName) {
  TempSegment seg;
  { ConsumerGroup::join(seg.segment(), "same"); }
  layout::GroupSlot& gs = seg.segment().refs().groups[0];
  const detail::ProcessId& me = detail::self_process();
  const std::uint64_t active = gs.state.load();
  gs.registrant_start.store(me.start_ticks);
  gs.state.store(layout::owner::make(layout::owner::registering, me.pid));
  // The join must return only once the registrant has finished: it sets `finished`
  // before the state says so. (Timing the join against the registrant's sleep failed
  // under load: the sleep starts before the join's clock does.)
  std::atomic<bool> finished{false};
  std::thread registrant([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    finished.store(true);
    gs.state.store(active);
  });
  std::optional<ConsumerGroup> g;
  try {
    g.emplace(ConsumerGroup::join(seg.segment(), "same"));
  } catch (const Error& e) {
    ADD_FAILURE() << "the join did not wait for the registrant: " << e.what();
  }
  const bool waited = finished.load();
  registrant.join();
  ASSERT_TRUE(g.has_value());
  EXPECT_TRUE(waited) << "the join returned while the registrant was still registering";
  EXPECT_EQ(g->name(), "same");
  g.reset();

  // A registrant that never finishes (only damaged memory naming a live process): busy,
  // after the bound.
  gs.state.store(layout::owner::make(layout::owner::registering, me.pid));
  const auto t1 = std::chrono::steady_clock::now();
  const Error e = test::error_of([&] { (void)ConsumerGroup::join(seg.segment(), "same"); });
  EXPECT_GE(std::chrono::steady_clock::now() - t1, std::chrono::nanoseconds(detail::kRegistrationWaitNs));
  EXPECT_EQ(e.code(), Errc::busy);
  EXPECT_NE(std::string(e.what()).find("group \"same\": another live process is still registering this group after 2 s"),
            std::string::npos)
      << e.what();
  gs.state.store(active);
}

TEST(ConsumerGroup, AFailingHandlerStopsOnItsEventWithoutSkippingIt) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  int calls = 0;
  {
    GroupOptions o;
    o.retry.max_attempts = 3;
    o.dead_letters = false;
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "fails", o);
    publish_values(p, 0, 0, 5);
    std::vector<std::uint64_t> ok;
    try {
      g.worker(0).poll(
          [&](const Event& e) {
            if (value_of(e) == 2) {
              ++calls;
              return Handled::retry;
            }
            ok.push_back(value_of(e));
            return Handled::ok;
          },
          100);
      FAIL() << "no HandlerFailed";
    } catch (const HandlerFailed& f) {
      EXPECT_NE(std::string(f.what()).find("failed 3 times: handler asked for a retry"), std::string::npos)
          << f.what();
    }
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(ok, (std::vector<std::uint64_t>{0, 1}));
    EXPECT_EQ(read_stats(seg.segment()).groups.at(0).worker.at(0).handler_errors, 3u) << "three failed attempts";
  }
  GroupOptions again;
  again.dead_letters = false;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "fails", again);
  std::vector<std::uint64_t> rest;
  drain_all(g, [&](const Event& e) { rest.push_back(value_of(e)); });
  EXPECT_EQ(rest, (std::vector<std::uint64_t>{2, 3, 4})) << "the failed event is delivered again";
}

// Whatever a handler throws, one event at a time or a batch, is a failed attempt of
// that event (retried, parked or reported by policy): never an exception out of the
// worker that skips the policy.
TEST(ConsumerGroup, AnyThrownValueCountsAsFailureAlsoForBatchHandlers) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  o.dead_letters = false;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "throws", o);
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 1);
  auto failure_of = [&](auto&& run) -> std::string {
    try {
      run();
    } catch (const HandlerFailed& f) {
      EXPECT_EQ(f.position(), 0u);
      return f.what();
    } catch (...) {
      return "an exception other than HandlerFailed left the worker";
    }
    return "no failure";
  };
  const std::string single_std =
      failure_of([&] { g.worker(0).poll([](const Event&) { throw std::runtime_error("boom"); }, 10); });
  EXPECT_NE(single_std.find("boom"), std::string::npos) << single_std;
  const std::string single = failure_of([&] { g.worker(0).poll([](const Event&) { throw 42; }, 10); });
  EXPECT_NE(single.find("non-standard exception"), std::string::npos) << single;
  const std::string batch_std = failure_of(
      [&] { g.worker(0).poll_batch([](std::span<const Event>) { throw std::runtime_error("batch boom"); }, 10); });
  EXPECT_NE(batch_std.find("batch boom"), std::string::npos) << batch_std;
  const std::string batch_other =
      failure_of([&] { g.worker(0).poll_batch([](std::span<const Event>) { throw 42; }, 10); });
  EXPECT_NE(batch_other.find("non-standard exception"), std::string::npos) << batch_other;
}

TEST(ConsumerGroup, BatchDeliveryHandsOverEverythingReady) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "batch", {.workers = 2});
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 9, 0, 100);
  std::vector<std::size_t> sizes;
  std::set<std::uint64_t> values;
  for (std::uint32_t i = 0; i < 2; ++i) {
    while (g.worker(i).poll_batch(
               [&](std::span<const Event> batch) {
                 sizes.push_back(batch.size());
                 for (const Event& e : batch) values.insert(value_of(e));
               },
               32) != 0) {
    }
  }
  EXPECT_EQ(values.size(), 100u);
  EXPECT_GT(*std::max_element(sizes.begin(), sizes.end()), 1u);
  for (std::size_t n : sizes) EXPECT_LE(n, 32u);
}

// Publishes values from..to-1 as 64-byte events: 128-byte records.
void publish_records(Producer& p, std::uint64_t from, std::uint64_t to) {
  for (std::uint64_t v = from; v < to; ++v) {
    std::array<std::uint64_t, 8> payload{v};
    ASSERT_EQ(p.publish(0, 1, std::as_bytes(std::span(payload))), Status::ok);
  }
}
constexpr std::uint64_t kRecord = 128;

// Polls until `done` holds (the watchdog ends a hang), then a while longer; returns
// the values handed over, in order.
template <class Poll>
std::vector<std::uint64_t> poll_until(Poll&& poll, std::size_t want, std::size_t extra_polls) {
  std::vector<std::uint64_t> got;
  EXPECT_TRUE(test::eventually([&] {
    poll(got);
    return got.size() >= want;
  }));
  for (std::size_t i = 0; i < extra_polls; ++i) poll(got);
  return got;
}

TEST(ConsumerGroup, ATrailingWorkerReadsOnlyWhatLiesTrailBytesBehindTheTail) {
  TempSegment seg;
  const GroupOptions trailing{.trail_bytes = 32 * kRecord, .trail_max_delay = std::chrono::seconds{1}};
  ConsumerGroup one = ConsumerGroup::join(seg.segment(), "one-by-one", trailing);
  ConsumerGroup batched = ConsumerGroup::join(seg.segment(), "batched", trailing);
  Producer p = Producer::attach(seg.segment());
  auto poll_one = [&](std::vector<std::uint64_t>& got) {
    one.worker(0).poll([&](const Event& e) { got.push_back(value_of(e)); });
  };
  auto poll_batched = [&](std::vector<std::uint64_t>& got) {
    batched.worker(0).poll_batch(
        [&](std::span<const Event> b) {
          for (const Event& e : b) got.push_back(value_of(e));
        },
        256);
  };
  // A backlog of exactly trail_bytes waits (for the delay: a second here).
  publish_records(p, 0, 32);
  EXPECT_TRUE(poll_until(poll_one, 0, 2000).empty());
  EXPECT_TRUE(poll_until(poll_batched, 0, 2000).empty());
  // 8 records more: the 8 that start 32 records or more below the tail are read, the
  // rest keep waiting.
  publish_records(p, 32, 40);
  const std::vector<std::uint64_t> first8{0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(poll_until(poll_one, 8, 2000), first8);
  EXPECT_EQ(poll_until(poll_batched, 8, 2000), first8);
  EXPECT_EQ(one.worker(0).position(), 8 * kRecord);
}

TEST(ConsumerGroup, ATrailingWorkersShortBacklogIsReadAfterTheDelay) {
  TempSegment seg;
  constexpr auto kDelay = std::chrono::milliseconds{5};
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "trailing", {.trail_bytes = 32 * kRecord, .trail_max_delay = kDelay});
  Producer p = Producer::attach(seg.segment());
  auto poll = [&](std::vector<std::uint64_t>& got) {
    g.worker(0).poll([&](const Event& e) { got.push_back(value_of(e)); });
  };
  // Exactly trail_bytes, then fewer: each is read once it has waited the delay, never before.
  for (const auto& [from, to] : {std::pair<std::uint64_t, std::uint64_t>{0, 32}, {32, 33}, {33, 40}}) {
    publish_records(p, from, to);
    const auto published = std::chrono::steady_clock::now();
    const std::vector<std::uint64_t> got = poll_until(poll, to - from, 10);
    EXPECT_GE(std::chrono::steady_clock::now() - published, kDelay);
    ASSERT_EQ(got.size(), to - from);
    for (std::uint64_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], from + i);
  }
  // A short backlog that arrives before the worker has seen the log empty again waits a
  // delay of its own: the one just waited out does not carry over.
  for (std::uint64_t at = 40; at < 43; ++at) {
    publish_records(p, at, at + 1);
    const auto published = std::chrono::steady_clock::now();
    const std::vector<std::uint64_t> got = poll_until(poll, 1, 0);
    EXPECT_GE(std::chrono::steady_clock::now() - published, kDelay) << at;
    ASSERT_EQ(got, std::vector<std::uint64_t>{at});
  }
}

TEST(ConsumerGroup, ATrailingGroupsThreadsDeliverEverything) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(
      seg.segment(), "trailing",
      {.workers = 2, .wait = WaitStrategy::spin_park(100, 10, std::chrono::milliseconds(10)), .trail_bytes = 4096});
  std::atomic<std::uint64_t> count{0}, sum{0};
  g.start([&](const Event& e) {
    count.fetch_add(1);
    sum.fetch_add(value_of(e));
  });
  Producer p = Producer::attach(seg.segment());
  // More than the ring holds: the producer waits for the trailing readers too.
  publish_records(p, 0, 5000);
  ASSERT_TRUE(test::eventually([&] { return count.load() == 5000; }));
  g.stop();
  EXPECT_EQ(sum.load(), 4999u * 5000 / 2);
}

// Worker i runs on cpus[i]: each event is handled on the CPU of the worker its key
// routes to.
TEST(ConsumerGroup, ThreadsRunPinnedWorkersUntilStopped) {
  TempSegment seg;
  const std::vector<int> cpus = {1, 0};
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "threads", {.workers = 2, .cpus = cpus});
  std::atomic<std::uint64_t> count{0}, sum{0}, elsewhere{0};
  g.start([&](const Event& e) {
    count.fetch_add(1);
    sum.fetch_add(value_of(e));
    if (::sched_getcpu() != cpus[route(e.key(), e.producer_id(), 2)]) elsewhere.fetch_add(1);
  });
  EXPECT_TRUE(g.running());
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 31, 0, 5000);
  ASSERT_TRUE(test::eventually([&] { return count.load() == 5000; }));
  g.stop();
  EXPECT_FALSE(g.running());
  EXPECT_EQ(sum.load(), 4999u * 5000 / 2);
  EXPECT_EQ(elsewhere.load(), 0u) << "events handled on a CPU other than their worker's";
}

// start_batch(): worker i's thread, pinned to cpus[i], hands its handler spans of the
// events that route to it, each key's in key-sequence order, both a backlog waiting
// when it starts and events published while it runs (the workers park in between).
TEST(ConsumerGroup, BatchThreadsRunPinnedWorkersUntilStopped) {
  TempSegment seg;
  const std::vector<int> cpus = {1, 0};
  ConsumerGroup g = ConsumerGroup::join(
      seg.segment(), "batches",
      {.workers = 2, .cpus = cpus, .wait = WaitStrategy::spin_park(100, 10, std::chrono::milliseconds(10)), .batch = 64});
  Producer p = Producer::attach(seg.segment());
  constexpr std::uint64_t kKeys = 31;
  publish_values(p, kKeys, 0, 500);  // the backlog: fits in the ring, which the group gates
  std::array<std::atomic<std::uint64_t>, kKeys + 1> last_seq{};
  std::atomic<std::uint64_t> count{0}, sum{0}, elsewhere{0}, out_of_order{0}, largest{0}, too_large{0};
  g.start_batch([&](std::span<const Event> batch) {
    if (batch.size() > 64) too_large.fetch_add(1);
    std::uint64_t seen = largest.load();
    while (seen < batch.size() && !largest.compare_exchange_weak(seen, batch.size())) {
    }
    for (const Event& e : batch) {
      if (last_seq[e.key()].exchange(e.key_seq()) + 1 != e.key_seq()) out_of_order.fetch_add(1);
      if (::sched_getcpu() != cpus[route(e.key(), e.producer_id(), 2)]) elsewhere.fetch_add(1);
      sum.fetch_add(value_of(e));
    }
    count.fetch_add(batch.size());
  });
  EXPECT_TRUE(g.running());
  ASSERT_TRUE(test::eventually([&] { return count.load() == 500; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // long enough to park
  publish_values(p, kKeys, 500, 10000);  // more than the ring holds
  ASSERT_TRUE(test::eventually([&] { return count.load() == 10000; }));
  g.stop();
  EXPECT_FALSE(g.running());
  EXPECT_EQ(count.load(), 10000u);
  EXPECT_EQ(sum.load(), 9999u * 10000 / 2);
  EXPECT_EQ(out_of_order.load(), 0u) << "events of a key out of key-sequence order";
  EXPECT_EQ(elsewhere.load(), 0u) << "events handled on a CPU other than their worker's";
  EXPECT_GT(largest.load(), 1u) << "the backlog came one event at a time";
  EXPECT_EQ(too_large.load(), 0u) << "a span longer than GroupOptions::batch";
  for (std::uint64_t k = 1; k <= kKeys; ++k) EXPECT_EQ(last_seq[k].load(), 10000 / kKeys + (k <= 10000 % kKeys ? 1 : 0));
}

// A running batch worker: a span holding an event that fails is handed over again one
// event at a time, the failing event goes to the dead-letter ring and the others are
// handled; redriven by a tool while the worker idles, it comes back as a span of one,
// marked redriven, and leaves the ring once handled.
TEST(ConsumerGroup, ABatchWorkerThreadDeadLettersAFailureAndHandlesItsRedrive) {
  TempSegment seg;
  GroupOptions o;
  o.retry.max_attempts = 1;
  o.wait = WaitStrategy::spin_park(100, 10, std::chrono::milliseconds(10));
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "batches", o);
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 10);
  std::mutex m;
  std::set<std::uint64_t> handled;
  std::vector<std::vector<std::uint64_t>> redriven_spans;
  std::atomic<int> failed_spans{0};
  g.start_batch([&](std::span<const Event> batch) {
    std::lock_guard lock(m);
    std::vector<std::uint64_t> values;
    for (const Event& e : batch) {
      if (value_of(e) == 3 && !e.redriven()) {
        failed_spans.fetch_add(1);
        return Handled::fail;
      }
      values.push_back(value_of(e));
    }
    if (batch.size() >= 1 && batch[0].redriven()) redriven_spans.push_back(values);
    handled.insert(values.begin(), values.end());
    return Handled::ok;
  });
  DeadLetters dlq = DeadLetters::open(seg.segment(), "batches");
  ASSERT_TRUE(test::eventually([&] {
    std::lock_guard lock(m);
    return handled.size() == 9 && dlq.list().size() == 1;
  }));
  EXPECT_EQ(failed_spans.load(), 2) << "the span, then the event on its own";
  EXPECT_EQ(dlq.list().at(0).position, 3 * record_bytes(8));
  EXPECT_EQ(dlq.request_redrive(), 1u);
  ASSERT_TRUE(test::eventually([&] {
    std::lock_guard lock(m);
    return handled.size() == 10 && dlq.list().empty();
  }));
  g.stop();
  EXPECT_EQ(redriven_spans, (std::vector<std::vector<std::uint64_t>>{{3}}));
  EXPECT_EQ(failed_spans.load(), 2);
}

// A group whose worker thread stopped on the first event (one attempt, no dead letters).
struct FailedGroup {
  static GroupOptions options() {
    GroupOptions o;
    o.retry.max_attempts = 1;
    o.dead_letters = false;
    return o;
  }
  FailedGroup() {
    g.start([](const Event&) { return Handled::fail; });
    publish_values(p, 0, 0, 1);
    EXPECT_TRUE(test::eventually([&] { return !g.running(); }));
  }
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "dies", options());
  Producer p = Producer::attach(seg.segment());
};

TEST(ConsumerGroup, AWorkerThreadFailureIsReportedByStop) {
  FailedGroup f;
  EXPECT_THROW(f.g.stop(), HandlerFailed);
}

// A worker is run by one thread at a time: a second start() is refused while the
// threads run, and after stop() the group starts again and goes on from its cursors.
TEST(ConsumerGroup, AStartedGroupRefusesASecondStartAndStartsAgainAfterStop) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "twice", {.workers = 2});
  std::mutex m;
  std::multiset<std::uint64_t> seen;
  auto handler = [&](const Event& e) {
    std::lock_guard lock(m);
    seen.insert(value_of(e));
  };
  auto count = [&] {
    std::lock_guard lock(m);
    return seen.size();
  };
  g.start(handler);
  const Error again = test::error_of([&] { g.start(handler); });
  EXPECT_EQ(again.code(), Errc::busy);
  EXPECT_NE(std::string(again.what()).find("group \"twice\": already started, and stop() must end its threads"),
            std::string::npos)
      << again.what();
  EXPECT_EQ(test::error_of([&] { g.start_batch([](std::span<const Event>) {}); }).code(), Errc::busy);
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 7, 0, 500);
  ASSERT_TRUE(test::eventually([&] { return count() >= 500; }));
  g.stop();
  publish_values(p, 7, 500, 1000);
  g.start(handler);
  EXPECT_TRUE(g.running());
  ASSERT_TRUE(test::eventually([&] { return count() >= 1000; }));
  g.stop();
  std::lock_guard lock(m);
  EXPECT_EQ(seen.size(), 1000u);
  for (std::uint64_t v = 0; v < 1000; ++v) EXPECT_EQ(seen.count(v), 1u) << v;
}

// A group whose threads sleep between polls (spin_sleep, an hour here) stops at once:
// stop() wakes the sleep as it wakes a park.
TEST(ConsumerGroup, ASleepingGroupStopsAtOnce) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(
      seg.segment(), "g", {.workers = 2, .wait = WaitStrategy::spin_sleep(std::chrono::hours(1), 10)});
  std::atomic<int> handled{0};
  g.start([&](const Event&) { handled.fetch_add(1); });
  Producer p = Producer::attach(seg.segment());
  const std::uint64_t v = 1;
  ASSERT_EQ(p.publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // both asleep (it would still pass without)
  g.stop();  // before, each thread slept out its hour first
  EXPECT_FALSE(g.running());
  EXPECT_LE(handled.load(), 1);
}

// A handler that ends its own group (on a shutdown event, say): stop() on one of the
// group's threads asks the threads to stop and returns, where joining its own thread
// threw, and the event it was handling failed and was dead-lettered for it. The owner's
// stop() then joins the threads, and the group starts again.
TEST(ConsumerGroup, AHandlerStopsItsOwnGroup) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "stops", {.workers = 2, .retry = {.max_attempts = 2}});
  std::atomic<int> threw{0};
  std::atomic<std::uint64_t> handled{0};
  auto handler = [&](const Event& e) {
    if (value_of(e) == 99) {
      try {
        g.stop();
      } catch (...) {
        threw.fetch_add(1);
        throw;
      }
    }
    handled.fetch_add(1);
  };
  g.start(handler);
  Producer p = Producer::attach(seg.segment());
  for (const std::uint64_t v : {std::uint64_t{1}, std::uint64_t{99}}) {
    ASSERT_EQ(p.publish(v, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    ASSERT_TRUE(test::eventually([&] { return handled.load() == 1 || !g.running(); }));
  }
  ASSERT_TRUE(test::eventually([&] { return !g.running(); }));
  EXPECT_NO_THROW(g.stop());
  EXPECT_EQ(threw.load(), 0);
  EXPECT_EQ(handled.load(), 2u);
  EXPECT_TRUE(DeadLetters::open(seg.segment(), "stops").list().empty());
  g.start(handler);
  const std::uint64_t v = 5;
  ASSERT_EQ(p.publish(v, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  ASSERT_TRUE(test::eventually([&] { return handled.load() == 3; }));
  g.stop();
}

ConsumerGroup* g_stopped_by_signal = nullptr;

// request_stop() from a signal handler (SIGTERM's, say): the threads end, and the
// owner's stop() joins them. The handler leaves errno as it found it.
TEST(ConsumerGroup, ASignalHandlerAsksTheThreadsToStop) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "signalled", {.workers = 2});
  std::atomic<std::uint64_t> handled{0};
  g.start([&](const Event&) { handled.fetch_add(1); });
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 7, 0, 100);
  ASSERT_TRUE(test::eventually([&] { return handled.load() == 100; }));
  g_stopped_by_signal = &g;
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stopped_by_signal->request_stop(); };
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  errno = 0;
  ASSERT_EQ(::raise(SIGUSR1), 0);
  EXPECT_EQ(errno, 0) << "the handler kept errno";
  ::sigaction(SIGUSR1, &old, nullptr);
  g_stopped_by_signal = nullptr;
  EXPECT_FALSE(g.running());
  EXPECT_NO_THROW(g.stop());
  EXPECT_EQ(handled.load(), 100u);
}

// After a worker failed, start() says so until stop() has reported the failure; then
// the group runs again (running() says so) and delivers the event it stopped on.
TEST(ConsumerGroup, AFailedGroupStartsAgainOnceStopReportedTheFailure) {
  FailedGroup f;
  const Error early = test::error_of([&] { f.g.start([](const Event&) {}); });
  EXPECT_EQ(early.code(), Errc::busy);
  EXPECT_NE(std::string(early.what()).find("a worker failed; stop() reports why"), std::string::npos) << early.what();
  EXPECT_THROW(f.g.stop(), HandlerFailed);
  std::atomic<std::uint64_t> seen{0};
  f.g.start([&](const Event&) { seen.fetch_add(1); });
  EXPECT_TRUE(f.g.running());
  ASSERT_TRUE(test::eventually([&] { return seen.load() == 1; }));
  EXPECT_TRUE(f.g.running());
  f.g.stop();
}

// Three 8-byte records (values 0, 1, 2) in a fresh segment (published after `group`,
// if named, joined), with the frame word and header of the second at hand to damage,
// and the ways its frame can be damaged.
struct ThreeRecords {
  explicit ThreeRecords(std::string_view group = {}) {
    if (!group.empty()) g.emplace(ConsumerGroup::join(seg.segment(), group));
    publish_values(p, 0, 0, 3);
    good_frame = frame_word.load();
  }
  TempSegment seg;
  std::optional<ConsumerGroup> g;
  Producer p = Producer::attach(seg.segment());
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint64_t second = record_bytes(8);
  RecordHeader* h = r.record_at(second);
  std::atomic_ref<std::uint64_t> frame_word{h->frame};
  std::uint64_t good_frame = 0;
  // Frames no producer could have written there: {frame, a padding frame?}.
  [[nodiscard]] std::vector<std::pair<std::uint64_t, bool>> damaged_frames() const {
    const std::uint64_t lap = r.lap(second);
    return {{frame::make(RecordState::data, lap, r.max_event + 1), false},
            {frame::make(RecordState::padding, lap, 12), true},  // not 8-byte aligned
            {frame::make(RecordState::padding, lap, 0), true},
            {frame::make(RecordState::padding, lap, static_cast<std::uint32_t>(r.capacity)), true}};
  }
};

// A worker that meets a damaged record in the log stops on it, naming the group, the
// worker and the position; what came before was delivered once, the cursor stays on
// the damaged record, and once it is repaired the worker goes on from there.
TEST(ConsumerGroup, AWorkerStopsAtADamagedRecordNamingItsPosition) {
  ThreeRecords log("reader");
  ConsumerGroup& g = *log.g;
  const detail::SegmentRefs& r = log.r;
  const std::uint64_t second = log.second;
  std::vector<std::uint64_t> seen;
  auto handler = [&](const Event& e) { seen.push_back(value_of(e)); };
  const std::string at = "group \"reader\" worker 0: at position " + std::to_string(second) + ": ";
  const std::string record = "record whose length or position does not fit the ring";
  const std::string padding = "padding record with an impossible length";
  for (const auto& [bad, is_padding] : log.damaged_frames()) {
    log.frame_word.store(bad);
    const Error e = test::error_of([&] { (void)g.worker(0).poll(handler); });
    EXPECT_EQ(e.code(), Errc::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find(at + (is_padding ? padding : record)), std::string::npos) << e.what();
  }
  log.frame_word.store(log.good_frame);
  log.h->position = 8000;
  EXPECT_NE(std::string(test::error_of([&] { (void)g.worker(0).poll(handler); }).what()).find(at + record),
            std::string::npos);
  EXPECT_EQ(seen, std::vector<std::uint64_t>{0}) << "delivered once, before the damage; nothing after it";
  const std::uint32_t slot = detail::find_group(r, "reader");
  ASSERT_LT(slot, r.max_groups);
  EXPECT_EQ(r.groups[slot].worker[0].cursor.load(), second) << "the cursor stays on the damaged record";
  // On the group's threads the damage ends the group, and stop() reports it.
  g.start(handler);
  ASSERT_TRUE(test::eventually([&] { return !g.running(); }));
  const Error stopped = test::error_of([&] { g.stop(); });
  EXPECT_EQ(stopped.code(), Errc::corrupt);
  EXPECT_NE(std::string(stopped.what()).find(at + record), std::string::npos) << stopped.what();
  log.h->position = second;
  EXPECT_EQ(g.worker(0).poll(handler), 2u);
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{0, 1, 2}));
}

// A data record whose length is within max_event but would run past the end of the
// ring (records never cross it) is damage, reported at its position, not read.
// Fills the first lap of `seg` with records of max_event bytes and one small record in
// the space left, whose frame it then damages to say max_event bytes: a length within
// bounds that would run past the ring's end. Returns that record's position.
std::uint64_t damage_a_record_at_the_lap_end(const TempSegment& seg) {
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  const std::string big(r.max_event, 'b');
  std::uint64_t pos = 0;
  while (r.to_lap_end(pos) >= record_bytes(r.max_event) + record_bytes(8)) {
    EXPECT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(big))), Status::ok);
    pos += record_bytes(r.max_event);
  }
  const std::uint64_t v = 1;
  EXPECT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  EXPECT_LT(r.to_lap_end(pos), record_bytes(r.max_event));
  std::atomic_ref<std::uint64_t>(r.record_at(pos)->frame)
      .store(frame::make(RecordState::data, r.lap(pos), r.max_event));
  return pos;
}

TEST(ConsumerGroup, ARecordRunningPastTheEndOfTheRingIsDamage) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "reader");
  const std::uint64_t pos = damage_a_record_at_the_lap_end(seg);
  const detail::SegmentRefs& r = seg.segment().refs();
  std::uint64_t handled = 0;
  const Error e = test::error_of([&] {
    while (g.worker(0).poll([&](const Event&) { ++handled; }) != 0) {
    }
  });
  EXPECT_EQ(e.code(), Errc::corrupt);
  EXPECT_NE(std::string(e.what()).find("at position " + std::to_string(pos) +
                                       ": record whose length or position does not fit the ring"),
            std::string::npos)
      << e.what();
  EXPECT_EQ(handled, pos / record_bytes(r.max_event));
}

// Assigning over a group handle releases the group it held, even one whose worker
// thread failed (its error has nowhere to go then): its workers can be joined again.
TEST(ConsumerGroup, MoveAssignmentReleasesTheGroupItHeld) {
  FailedGroup f;
  const Segment& seg = f.seg.segment();
  EXPECT_EQ(test::error_of([&] { (void)ConsumerGroup::join(seg, "dies", FailedGroup::options()); }).code(), Errc::busy)
      << "held by f.g";
  f.g = ConsumerGroup::join(seg, "other");
  EXPECT_EQ(f.g.name(), "other");
  EXPECT_EQ(f.g.segment().location().name, f.seg.location().name);
  ConsumerGroup again = ConsumerGroup::join(seg, "dies", FailedGroup::options());
  std::uint64_t seen = 0;
  again.worker(0).poll([&](const Event&) {
    ++seen;
    return Handled::ok;
  });
  EXPECT_EQ(seen, 1u) << "the failed event is still there, not skipped";
}

// Publishes unkeyed events numbered from `from` until the log is full; returns how many.
std::uint64_t fill_log(Producer& p, std::uint64_t from = 0) {
  std::uint64_t v = from;
  while (p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))) == Status::ok) ++v;
  return v - from;
}

// Long enough that a wait that should have been refused is seen as a timeout, not a hang.
constexpr auto kWouldHaveWaited = std::chrono::seconds(5);

// A handler that publishes into the segment its group reads, when the log is full
// because of the handler's own worker: the worker cannot move past the event it is
// handling before the handler returns, so a blocking publish would wait for ever. It is
// told at once, by every blocking call, from a handle on this mapping or another, in
// single, batch and redrive delivery; nothing is published, and once the handler has
// returned the room is there.
TEST(ConsumerGroup, AHandlerPublishingIntoTheLogItsOwnWorkerHoldsFullIsToldAtOnce) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "loop", {.retry = {.max_attempts = 1}});
  Producer p = Producer::attach(seg.segment());
  const Segment again = Segment::open(seg.location());
  Producer other = Producer::attach(again);  // the same segment, mapped a second time
  ASSERT_GT(fill_log(p), 0u);
  const std::uint64_t tail = seg.segment().refs().control->tail.load();
  const std::uint64_t v = 7;
  const auto bytes = std::as_bytes(std::span(&v, 1));
  std::vector<Status> seen;
  EXPECT_EQ(g.worker(0).poll(
                [&](const Event&) {
                  seen.push_back(p.publish(0, 1, bytes, kWouldHaveWaited));
                  seen.push_back(other.publish(0, 1, bytes, kWouldHaveWaited));
                  seen.push_back(other.publish_expected(5, 0, 1, bytes, kWouldHaveWaited));
                  Claim c;
                  seen.push_back(other.claim_batch(0, 1, 8, 4, c, kWouldHaveWaited));
                  EXPECT_FALSE(c);
                  return Handled::ok;
                },
                1),
            1u);
  EXPECT_EQ(seen, std::vector<Status>(4, Status::would_deadlock));
  EXPECT_EQ(seg.segment().refs().control->tail.load(), tail) << "nothing was claimed";
  EXPECT_EQ(p.publish(0, 1, bytes, kWouldHaveWaited), Status::ok) << "the handled event made room";

  // Batch delivery: the span's first event holds the cursor.
  seen.clear();
  EXPECT_GT(g.worker(0).poll_batch(
                [&](std::span<const Event>) { seen.push_back(other.publish(0, 1, bytes, kWouldHaveWaited)); }, 8),
            0u);
  EXPECT_EQ(seen, std::vector<Status>{Status::would_deadlock});

  // A redriven dead letter: the cursor has moved on past it, and is what the full log waits for.
  while (g.worker(0).poll([](const Event&) { return Handled::ok; }, 1000) != 0) {
  }
  ASSERT_EQ(p.publish(0, 1, bytes), Status::ok);
  EXPECT_EQ(g.worker(0).poll([](const Event&) { return Handled::fail; }, 1), 1u);  // to the dead-letter ring
  DeadLetters dlq = DeadLetters::open(seg.segment(), "loop");
  ASSERT_EQ(dlq.list().size(), 1u);
  ASSERT_GT(fill_log(p), 0u);
  ASSERT_EQ(dlq.request_redrive(), 1u);
  seen.clear();
  EXPECT_EQ(g.worker(0).poll_redrives([&](const Event& e) {
    EXPECT_TRUE(e.redriven());
    seen.push_back(other.publish(0, 1, bytes, kWouldHaveWaited));
    return Handled::ok;
  }),
            1u);
  EXPECT_EQ(seen, std::vector<Status>{Status::would_deadlock});
  EXPECT_EQ(p.try_publish(0, 1, bytes), Status::full) << "a blocking call outside a handler waits; try_ says full";

  // The group's own threads (start): the worker's first handler call is told, and the
  // rest of the log drains.
  std::mutex m;
  std::vector<Status> on_thread;
  g.start([&](const Event&) {
    std::lock_guard lock(m);
    if (on_thread.empty()) on_thread.push_back(other.publish(0, 1, bytes, kWouldHaveWaited));
  });
  ASSERT_TRUE(test::eventually([&] {
    std::lock_guard lock(m);
    return !on_thread.empty() && read_stats(seg.segment()).groups.at(0).cursor == seg.segment().was_tail();
  }));
  g.stop();
  EXPECT_EQ(on_thread, std::vector<Status>{Status::would_deadlock});
}

// A handler that polls its own worker (single, batch or redrive delivery) is refused:
// the outer poll went on from the record it had read, past where the inner poll had
// moved the cursor, and skipped the event after them. Polling another worker from a
// handler is allowed. Every event is delivered once, in order.
TEST(ConsumerGroup, AWorkerPolledFromItsOwnHandlerIsRefused) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "self");
  ConsumerGroup other = ConsumerGroup::join(seg.segment(), "other");
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 6);
  std::vector<std::uint64_t> seen, seen_by_other;
  std::vector<std::string> refusals;
  auto refused = [&](auto&& poll_again) {
    try {
      poll_again();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::busy);
      refusals.emplace_back(e.what());
    }
  };
  auto record = [&](const Event& e) { seen.push_back(value_of(e)); };
  Worker& w = g.worker(0);
  EXPECT_EQ(w.poll(
                [&](const Event& e) {
                  refused([&] { (void)w.poll(record, 10); });
                  refused([&] { (void)w.poll_batch([&](std::span<const Event>) {}, 10); });
                  refused([&] { (void)w.poll_redrives(record); });
                  EXPECT_EQ(other.worker(0).poll([&](const Event& o) { seen_by_other.push_back(value_of(o)); }, 1), 1u);
                  record(e);
                },
                2),
            2u);
  EXPECT_EQ(w.poll_batch(
                [&](std::span<const Event> batch) {
                  refused([&] { (void)w.poll(record, 10); });
                  for (const Event& e : batch) record(e);
                },
                2),
            2u);
  while (w.poll(record, 10) != 0) {
  }
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(seen_by_other, (std::vector<std::uint64_t>{0, 1}));
  ASSERT_EQ(refusals.size(), 7u);
  for (const std::string& r : refusals) {
    EXPECT_EQ(r, "group \"self\" worker 0: polled from its own handler (a worker is polled by one caller at a time)");
  }
}

// A child forked inside a handler is not in it: its blocking claim into the log the
// parent's worker holds full waits (here until its timeout, as the parent waits for
// the child), where it took the parent's worker for its own and said would_deadlock.
TEST(ConsumerGroup, AChildForkedInAHandlerIsNotInTheHandler) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "forks");
  Producer p = Producer::attach(seg.segment());
  ASSERT_GT(fill_log(p), 0u);
  int child_code = -1;
  EXPECT_EQ(g.worker(0).poll(
                [&](const Event&) {
                  const pid_t child = ::fork();
                  if (child == 0) {
                    Producer mine = Producer::attach(seg.segment());
                    const std::uint64_t v = 1;
                    const Status s =
                        mine.publish(0, 1, std::as_bytes(std::span(&v, 1)), std::chrono::milliseconds(20));
                    ::_exit(s == Status::timeout ? 0 : s == Status::would_deadlock ? 2 : 3);
                  }
                  int status = 0;
                  while (::waitpid(child, &status, 0) < 0) {
                  }
                  child_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                },
                1),
            1u);
  EXPECT_EQ(child_code, 0) << "2: would_deadlock";
}

// While the group's threads run a worker, another thread's poll or run of it is refused:
// two callers on one worker delivered its events twice and raced on its cursor. Once
// stop() has joined the threads, the worker is anyone's again.
TEST(ConsumerGroup, AWorkerAThreadRunsIsRefusedToOtherThreads) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "owned");
  std::atomic<std::uint64_t> handled{0};
  g.start([&](const Event&) { handled.fetch_add(1); });
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 10);
  ASSERT_TRUE(test::eventually([&] { return handled.load() == 10; }));
  const std::string why =
      "group \"owned\" worker 0: polled while another thread runs it (ConsumerGroup::start, or Worker::run); a worker "
      "is polled by one caller at a time";
  const std::atomic<bool> stop_now{true};
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { (void)g.worker(0).poll([](const Event&) {}, 10); },
           [&] { (void)g.worker(0).poll_batch([](std::span<const Event>) {}, 10); },
           [&] { (void)g.worker(0).poll_redrives([](const Event&) {}); },
           [&] { g.worker(0).run([](const Event&) {}, stop_now); }}) {
    const Error e = test::error_of(call);
    EXPECT_EQ(e.code(), Errc::busy);
    EXPECT_EQ(std::string(e.what()), why);
  }
  g.stop();
  publish_values(p, 0, 10, 12);
  EXPECT_EQ(g.worker(0).poll([&](const Event&) { handled.fetch_add(1); }, 10), 2u);
  EXPECT_EQ(handled.load(), 12u);
}

// Where another group holds the room back, or the log is another segment's, a handler's
// blocking publish waits as any other does: the room can come while the handler runs.
TEST(ConsumerGroup, AHandlerWaitsForRoomThatItsOwnWorkerDoesNotHoldBack) {
  TempSegment seg;
  TempSegment elsewhere;
  ConsumerGroup slow = ConsumerGroup::join(seg.segment(), "slow");
  ConsumerGroup loop = ConsumerGroup::join(seg.segment(), "loop");
  ConsumerGroup gate = ConsumerGroup::join(elsewhere.segment(), "gate");
  Producer p = Producer::attach(seg.segment());
  Producer q = Producer::attach(elsewhere.segment());
  ASSERT_GT(fill_log(p), 8u);
  ASSERT_GT(fill_log(q), 0u);
  EXPECT_EQ(loop.worker(0).poll([](const Event&) { return Handled::ok; }, 8), 8u);  // ahead of "slow"
  std::atomic<bool> done{false};
  std::thread drainer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    while (!done.load()) {
      if (slow.worker(0).poll([](const Event&) { return Handled::ok; }, 1) == 0) std::this_thread::yield();
    }
  });
  const std::uint64_t v = 7;
  const auto bytes = std::as_bytes(std::span(&v, 1));
  std::vector<Status> seen;
  EXPECT_EQ(loop.worker(0).poll(
                [&](const Event&) {
                  seen.push_back(q.publish(0, 1, bytes, std::chrono::milliseconds(50)));  // another segment's gate
                  seen.push_back(p.publish(0, 1, bytes, std::chrono::minutes(5)));        // "slow" moves
                  return Handled::ok;
                },
                1),
            1u);
  done.store(true);
  drainer.join();
  EXPECT_EQ(seen, (std::vector<Status>{Status::timeout, Status::ok}));
}

TEST(TailReader, CountsWhatItMissedWhenLapped) {
  TempSegment seg;  // 64 KiB, no gating group
  TailReader t = TailReader::open(seg.segment(), TailStart::end);
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 10);
  Event e;
  for (std::uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(t.try_next(e));
    EXPECT_EQ(value_of(e), i);
  }
  // 72-byte records: 10,000 of them are 11 laps of a 64 KiB ring.
  publish_values(p, 0, 10, 10'010);
  std::uint64_t read = 0, last = 9;
  while (t.try_next(e)) {
    EXPECT_GT(value_of(e), last);
    last = value_of(e);
    ++read;
  }
  EXPECT_EQ(last, 10'009u);
  EXPECT_EQ(t.missed() + read, 10'000u) << "every event is either read or counted as missed";
  EXPECT_GT(t.missed_bytes(), 0u);
  EXPECT_GE(t.resyncs(), 1u);
}

// A void record (a claim aborted after a later claim of its key) used its producer's
// producer_seq: the reader passes over it as a void, not as an event it missed.
TEST(TailReader, AVoidIsNotCountedAsMissed) {
  TempSegment seg;
  TailReader t = TailReader::open(seg.segment(), TailStart::end);
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment());
  const std::uint64_t v = 5;
  ASSERT_EQ(a.publish(8, 1, std::as_bytes(std::span(&v, 1))), Status::ok);  // a: producer_seq 1
  Claim aborted;
  ASSERT_EQ(a.try_claim(8, 1, 8, aborted), Status::ok);  // producer_seq 2
  ASSERT_EQ(b.publish(8, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  aborted.abort();  // a void: b's claim of key 8 came after it
  ASSERT_EQ(a.publish(8, 1, std::as_bytes(std::span(&v, 1))), Status::ok);  // producer_seq 3
  Event e;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> read;
  while (t.try_next(e)) read.emplace_back(e.producer_id(), e.producer_seq());
  ASSERT_EQ(read.size(), 3u);
  EXPECT_EQ(read[2].second, 3u) << "the void took producer_seq 2";
  EXPECT_EQ(t.voids(), 1u);
  EXPECT_EQ(t.missed(), 0u) << "nothing was overwritten";
}

// A producer that re-attaches with a larger first_seq jumps its sequence forward on
// purpose: nothing was overwritten, and nothing is counted as missed (it counted 96).
// A lap after it still counts what it overwrote.
TEST(TailReader, AJumpForwardInAProducersSequenceIsNotCountedAsMissed) {
  TempSegment seg;  // 64 KiB, no gating group
  TailReader t = TailReader::open(seg.segment(), TailStart::end);
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 7});
    publish_values(p, 0, 0, 3);  // producer_seq 1..3
  }
  Producer p = Producer::attach(seg.segment(), {.producer_id = 7, .first_seq = 100});
  publish_values(p, 0, 3, 5);  // producer_seq 100, 101
  Event e;
  std::vector<std::uint64_t> seqs;
  while (t.try_next(e)) seqs.push_back(e.producer_seq());
  EXPECT_EQ(seqs, (std::vector<std::uint64_t>{1, 2, 3, 100, 101}));
  EXPECT_EQ(t.missed(), 0u);
  EXPECT_EQ(t.resyncs(), 0u);
  publish_values(p, 0, 5, 10'005);  // 72-byte records: 11 laps of the ring
  std::uint64_t read = 0;
  while (t.try_next(e)) ++read;
  EXPECT_GE(t.resyncs(), 1u);
  EXPECT_EQ(t.missed() + read, 10'000u) << "every event is either read or counted as missed";
}

// A record is overwritten only once the tail passes its position plus the capacity: with
// the tail exactly a lap ahead of the reader (the ring full to the byte), everything
// from the reader on is still there and is read, nothing counted as missed.
TEST(TailReader, ReadsARingFilledExactlyToItsPosition) {
  TempSegment seg;  // 64 KiB, no gating group
  const std::uint64_t capacity = seg.segment().refs().capacity;
  Producer p = Producer::attach(seg.segment());
  TailReader t = TailReader::open(seg.segment(), TailStart::end);
  std::array<std::uint64_t, 8> payload{};  // 64 bytes: 128-byte records, 512 to the lap
  const std::uint64_t records = capacity / record_bytes(sizeof payload);
  ASSERT_EQ(records * record_bytes(sizeof payload), capacity);
  for (std::uint64_t i = 0; i < records; ++i) {
    payload[0] = i;
    ASSERT_EQ(p.publish(0, 1, std::as_bytes(std::span(payload))), Status::ok);
  }
  ASSERT_EQ(seg.segment().was_tail(), capacity);
  Event e;
  for (std::uint64_t i = 0; i < records; ++i) {
    ASSERT_TRUE(t.try_next(e)) << "record " << i;
    EXPECT_EQ(value_of(e), i);
  }
  EXPECT_FALSE(t.try_next(e));
  EXPECT_EQ(t.missed(), 0u);
  EXPECT_EQ(t.missed_bytes(), 0u);
  EXPECT_EQ(t.resyncs(), 0u);
  // One record more and the first of the lap is gone: the next read starts a lap later.
  TailReader behind = TailReader::open_at(seg.segment(), 0);
  payload[0] = records;
  ASSERT_EQ(p.publish(0, 1, std::as_bytes(std::span(payload))), Status::ok);
  ASSERT_TRUE(behind.try_next(e));
  EXPECT_EQ(value_of(e), records);
  EXPECT_EQ(behind.missed_bytes(), capacity);
}

// The log is shared memory: a record whose frame or header is damaged is reported with
// its position, never read past or skipped, and the reader goes on once it is repaired.
TEST(TailReader, ADamagedRecordIsReportedByItsPositionNotSkipped) {
  ThreeRecords log;
  TempSegment& seg = log.seg;
  const std::uint64_t second = log.second;
  RecordHeader* h = log.h;
  std::atomic_ref<std::uint64_t>& frame_word = log.frame_word;
  const std::uint64_t good_frame = log.good_frame;
  ASSERT_EQ(frame::length(good_frame), 8u);
  auto error_at_second = [&] {
    TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
    Event e;
    EXPECT_TRUE(t.try_next(e));
    EXPECT_EQ(value_of(e), 0u);
    return test::error_of([&] { (void)t.try_next(e); });
  };
  const std::string at = "at position " + std::to_string(second) + ": ";
  const std::string no_fit = "record whose length does not fit the ring";
  for (const auto& damaged : log.damaged_frames()) {
    frame_word.store(damaged.first);
    const Error e = error_at_second();
    EXPECT_EQ(e.code(), Errc::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find(at + no_fit), std::string::npos) << e.what();
  }
  frame_word.store(good_frame);
  h->position = 8000;
  {
    const Error e = error_at_second();
    EXPECT_EQ(e.code(), Errc::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find(at + "record says it is at position 8000"), std::string::npos) << e.what();
  }
  h->position = second;
  TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
  Event e;
  for (std::uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(t.try_next(e));
    EXPECT_EQ(value_of(e), i);
  }
  EXPECT_FALSE(t.try_next(e));
}

TEST(TailReader, EarliestStartsAtTheSlowestGroupOrTheOldestLap) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 5);
  TailReader all = TailReader::open(seg.segment(), TailStart::earliest);
  Event e;
  ASSERT_TRUE(all.try_next(e));
  EXPECT_EQ(value_of(e), 0u) << "the ring has not wrapped: everything is there";
  TailReader end = TailReader::open(seg.segment(), TailStart::end);
  EXPECT_FALSE(end.try_next(e));
}

// The same damage stops a tail reader at the record, naming its position.
TEST(TailReader, ARecordRunningPastTheEndOfTheRingIsDamage) {
  TempSegment seg;
  TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
  const std::uint64_t pos = damage_a_record_at_the_lap_end(seg);
  std::uint64_t read = 0;
  Event e;
  const Error err = test::error_of([&] {
    while (t.try_next(e)) ++read;
  });
  EXPECT_EQ(err.code(), Errc::corrupt);
  EXPECT_NE(std::string(err.what()).find("at position " + std::to_string(pos) +
                                         ": record whose length does not fit the ring"),
            std::string::npos)
      << err.what();
  EXPECT_EQ(read, pos / record_bytes(seg.segment().refs().max_event));
}

// Records of a 64-byte payload (128 bytes each: they fill a ring without padding), each
// holding its number, from `next` on until the tail reaches `tail`.
constexpr std::uint32_t kFullPayload = 64;
void publish_records_to(Producer& p, std::uint64_t& next, std::uint64_t tail) {
  std::array<std::uint64_t, kFullPayload / 8> payload{};
  for (; next * record_bytes(kFullPayload) < tail; ++next) {
    payload[0] = next;
    ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(payload))), Status::ok) << next;
  }
}

// The first event an earliest reader of `seg` reads: (value, position). It starts on a
// record still in the ring, so it has nothing to skip and count as missed.
std::pair<std::uint64_t, std::uint64_t> first_of_earliest(const Segment& seg) {
  TailReader t = TailReader::open(seg, TailStart::earliest);
  Event e;
  if (!t.try_next(e)) return {~0ull, ~0ull};
  EXPECT_EQ(t.missed_bytes(), 0u);
  return {value_of(e), e.position()};
}

// open_at walks from a known boundary only over committed records: a record claimed but
// not yet committed before the position ends the check (its length is not known yet),
// and the position is taken as it is.
TEST(TailReader, OpenAtTakesAPositionBeyondARecordNotYetCommitted) {
  TempSegment seg;
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment());
  Claim held;
  ASSERT_EQ(a.try_claim(0, 1, 8, held), Status::ok);
  const std::uint64_t v = 7;
  ASSERT_EQ(b.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  const std::uint64_t second = record_bytes(8);
  TailReader t = TailReader::open_at(seg.segment(), second);
  Event e;
  ASSERT_TRUE(t.try_next(e));
  EXPECT_EQ(e.position(), second);
  EXPECT_EQ(value_of(e), 7u);
  held.commit();
}

// Without groups, earliest is the oldest lap still whole: from 0 while the ring has not
// wrapped (also when it is full to the byte), else the tail's lap start; a group's
// worker further back moves it there.
TEST(TailReader, EarliestStartsAtTheOldestLapOrAWorkerFurtherBack) {
  TempSegment seg;  // 64 KiB
  const std::uint64_t cap = seg.segment().refs().capacity;
  const std::uint64_t rec = record_bytes(kFullPayload);
  ASSERT_EQ(cap % rec, 0u);
  Producer p = Producer::attach(seg.segment());
  std::uint64_t next = 0;
  publish_records_to(p, next, cap);
  EXPECT_EQ(first_of_earliest(seg.segment()), std::make_pair(std::uint64_t{0}, std::uint64_t{0}));
  // There open_at still checks a position against the records from 0.
  EXPECT_EQ(test::error_of([&] { (void)TailReader::open_at(seg.segment(), rec + 8); }).code(), Errc::invalid_options);
  publish_records_to(p, next, 2 * cap + 5 * rec);
  EXPECT_EQ(first_of_earliest(seg.segment()), std::make_pair(2 * cap / rec, 2 * cap));
  // And once it has wrapped, against the records from the tail's lap start.
  EXPECT_EQ(test::error_of([&] { (void)TailReader::open_at(seg.segment(), 2 * cap + rec + 8); }).code(),
            Errc::invalid_options);

  // A group joins now, and its second worker is set back 10 records: earliest starts
  // there, at the slowest worker of any group, not at its first.
  GroupOptions two_workers;
  two_workers.workers = 2;
  ConsumerGroup two = ConsumerGroup::join(seg.segment(), "two", two_workers);
  const detail::SegmentRefs& r = seg.segment().refs();
  r.groups[detail::find_group(r, "two")].worker[1].cursor.store(2 * cap - 10 * rec);
  EXPECT_EQ(first_of_earliest(seg.segment()), std::make_pair(2 * cap / rec - 10, 2 * cap - 10 * rec));
}

// With groups, earliest starts where the oldest record anyone may still need begins:
// the slowest cursor of an active group that is at most a lap behind the tail (a
// removed group's cursor, or one damaged, is no one's), else the oldest lap.
TEST(TailReader, EarliestStartsAtTheSlowestActiveGroupWithinALap) {
  TempSegment seg;  // 64 KiB
  const detail::SegmentRefs& r = seg.segment().refs();
  const std::uint64_t rec = record_bytes(kFullPayload);
  Producer p = Producer::attach(seg.segment());
  std::uint64_t next = 0;
  std::optional<ConsumerGroup> gone(ConsumerGroup::join(seg.segment(), "gone"));
  ConsumerGroup slow = ConsumerGroup::join(seg.segment(), "slow");
  publish_records_to(p, next, r.capacity);
  auto consume = [](ConsumerGroup& g, std::uint64_t n) {
    for (std::uint64_t done = 0; done < n;) done += g.worker(0).poll([](const Event&) {}, n - done);
  };
  consume(*gone, 140);
  consume(slow, 150);
  gone.reset();
  ASSERT_TRUE(ConsumerGroup::remove(seg.segment(), "gone"));  // its cursor, 140 records in, stays behind
  publish_records_to(p, next, 640 * rec);  // a lap past 140 records in: 140 is still in the ring
  EXPECT_EQ(first_of_earliest(seg.segment()), std::make_pair(std::uint64_t{150}, 150 * rec))
      << "slow, not the removed group";

  publish_records_to(p, next, (150 * rec) + r.capacity);  // full again: slow exactly a lap behind
  EXPECT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&next, 1))), Status::full);
  EXPECT_EQ(first_of_earliest(seg.segment()), std::make_pair(std::uint64_t{150}, 150 * rec))
      << "a lap behind is still there";

  // Slow's cursor damaged to a position more than a lap behind, or to one that cannot
  // start a record: the oldest lap instead.
  std::atomic<std::uint64_t>& cursor = r.groups[detail::find_group(r, "slow")].worker[0].cursor;
  const std::uint64_t kept = cursor.load();
  for (const std::uint64_t damaged : {rec, kept + 4}) {
    cursor.store(damaged);
    EXPECT_EQ(first_of_earliest(seg.segment()), std::make_pair(r.capacity / rec, r.capacity)) << damaged;
  }
  cursor.store(kept);
}

// A position given to open_at (typed by a user of `ringbus tail --from`, or kept from an
// older segment) is checked: inside a record or beyond the tail is refused, naming the
// nearest records, instead of waiting forever on a word that is not a frame (or, past
// the tail, reading the current lap's records as its own once lap tags wrap).
TEST(TailReader, OpenAtRefusesAPositionInsideARecordOrBeyondTheTail) {
  TempSegment seg;  // 64 KiB
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 0, 0, 5);  // 72-byte records at 0, 72, ..., 288; the tail is 360
  const auto refused = [&](std::uint64_t position) {
    const Error e = test::error_of([&] { (void)TailReader::open_at(seg.segment(), position); });
    EXPECT_EQ(e.code(), Errc::invalid_options) << position << ": " << e.what();
    return std::string(e.what());
  };
  const auto first_value_at = [&](std::uint64_t position) {
    TailReader t = TailReader::open_at(seg.segment(), position);
    Event e;
    EXPECT_TRUE(t.try_next(e)) << position;
    EXPECT_EQ(e.position(), position);
    return value_of(e);
  };
  EXPECT_EQ(first_value_at(0), 0u);
  EXPECT_EQ(first_value_at(144), 2u);
  EXPECT_EQ(first_value_at(288), 4u);
  EXPECT_NE(refused(8).find("position 8 is inside the record at 0; records start at 0 and 72"), std::string::npos);
  EXPECT_NE(refused(296).find("inside the record at 288; records start at 288 and 360"), std::string::npos);
  EXPECT_NE(refused(368).find("position 368 is beyond the log's tail 360"), std::string::npos);
  // 2^62 aliases lap 0's tag in a 64 KiB ring: it used to read record 0 as "corrupt".
  EXPECT_NE(refused(layout::kMaxPosition).find("beyond the log's tail"), std::string::npos);
  {
    TailReader at_tail = TailReader::open_at(seg.segment(), 360);
    Event e;
    EXPECT_FALSE(at_tail.try_next(e));
    publish_values(p, 0, 5, 6);
    ASSERT_TRUE(at_tail.try_next(e));
    EXPECT_EQ(value_of(e), 5u);
  }

  // Wrapped: in the tail's lap its start is the known boundary; in the lap before, a
  // group cursor is (a gating group joined at 36,000 keeps its records in the ring).
  publish_values(p, 0, 6, 500);
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "held", {.workers = 1});
  publish_values(p, 0, 500, 1100);  // 910 records fill lap 0 (then 16 bytes of padding)
  const std::uint64_t lap1 = 65'536, second_in_lap1 = lap1 + 72;
  EXPECT_EQ(first_value_at(second_in_lap1), 911u);
  EXPECT_NE(refused(lap1 + 80).find("inside the record at 65608; records start at 65608 and 65680"),
            std::string::npos);
  EXPECT_EQ(first_value_at(36'000 + 3 * 72), 503u);
  EXPECT_NE(refused(36'008).find("inside the record at 36000; records start at 36000 and 36072"), std::string::npos);
  EXPECT_EQ(first_value_at(65'520 - 72), 909u) << "the last record of lap 0, before its padding";
  // Before the cursor in the lap before, no boundary is known: taken on trust.
  EXPECT_NO_THROW((void)TailReader::open_at(seg.segment(), 20'000));
}

// Percentiles of the latency histogram: the upper bound of the bucket holding the
// sample of rank round(n * p / 100) (at least 1), counted from the fastest.
TEST(Stats, LatencyPercentilesAreTheBucketOfTheRoundedRank) {
  GroupStats g;
  g.latency.assign(layout::kLatencyBuckets, 0);
  EXPECT_EQ(g.latency_percentile(50), 0u) << "no samples";
  g.latency[3] = 2;  // ranks 1-2
  g.latency[7] = 1;  // rank 3
  g.latency[9] = 7;  // ranks 4-10
  ASSERT_EQ(g.latency_samples(), 10u);
  const auto upper = [](std::uint32_t k) { return layout::latency_bucket_upper(k); };
  EXPECT_EQ(g.latency_percentile(0), upper(3)) << "rank 1 at least";
  EXPECT_EQ(g.latency_percentile(20), upper(3)) << "rank 2: the last sample of bucket 3";
  EXPECT_EQ(g.latency_percentile(25), upper(7)) << "rank 2.5 rounds to 3";
  EXPECT_EQ(g.latency_percentile(30), upper(7));
  EXPECT_EQ(g.latency_percentile(34), upper(7)) << "rank 3.4 rounds to 3";
  EXPECT_EQ(g.latency_percentile(35), upper(9)) << "rank 3.5 rounds to 4";
  EXPECT_EQ(g.latency_percentile(100), upper(9));
}

TEST(Stats, CountersAreReadableFromTheSegment) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "stats", {.workers = 2});
  Producer p = Producer::attach(seg.segment());
  publish_values(p, 4, 0, 30);
  g.worker(0).poll([](const Event&) {}, 1000);
  const SegmentStats s = read_stats(seg.segment());
  EXPECT_EQ(s.published, 30u);
  EXPECT_EQ(s.keys_used, 4u);
  ASSERT_EQ(s.producers.size(), 1u);
  EXPECT_TRUE(s.producers[0].alive);
  EXPECT_EQ(s.producers[0].next_seq, 31u);
  ASSERT_EQ(s.groups.size(), 1u);
  EXPECT_EQ(s.groups[0].name, "stats");
  EXPECT_EQ(s.groups[0].workers, 2u);
  EXPECT_EQ(s.groups[0].worker[0].lag_bytes, 0u);
  EXPECT_EQ(s.groups[0].lag_bytes, s.tail) << "worker 1 has not moved";
  EXPECT_EQ(s.groups[0].worker[0].consumed + s.groups[0].worker[1].consumed, s.groups[0].consumed);
}

}  // namespace
}  // namespace ringbus
