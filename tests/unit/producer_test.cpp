// Producer behaviour, single-threaded and deterministic.
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/detail/key_table.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/error.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/tail_reader.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::TempSegment;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::string text(const Event& e) {
  return std::string(reinterpret_cast<const char*>(e.payload().data()), e.payload().size());
}

// Everything currently readable, in log order, as copies.
struct Drained {
  std::uint64_t position, key, key_seq, producer_seq;
  std::uint32_t producer_id;
  std::uint16_t type, flags;
  std::string payload;
};
std::vector<Drained> drain(const Segment& seg, std::uint64_t from = 0) {
  std::vector<Drained> out;
  TailReader t = TailReader::open_at(seg, from);
  Event e;
  while (t.try_next(e)) {
    out.push_back({e.position(), e.key(), e.key_seq(), e.producer_seq(), e.producer_id(), e.type(), e.flags(), text(e)});
  }
  return out;
}

// Names as the enumerators are spelled, one each: tools and messages print them.
TEST(Status, EveryStatusAndErrorCodeHasItsOwnName) {
  const std::vector<std::pair<Status, std::string_view>> statuses = {
      {Status::ok, "ok"},           {Status::full, "full"},       {Status::too_large, "too_large"},
      {Status::conflict, "conflict"}, {Status::keys_full, "keys_full"}, {Status::busy, "busy"},
      {Status::timeout, "timeout"},   {Status::corrupt, "corrupt"},   {Status::invalid, "invalid"},
      {Status::types_full, "types_full"}, {Status::stopped, "stopped"}, {Status::would_deadlock, "would_deadlock"}};
  for (const auto& [s, name] : statuses) EXPECT_EQ(to_string(s), name);
  const std::vector<std::pair<Errc, std::string_view>> codes = {
      {Errc::invalid_name, "invalid_name"},   {Errc::invalid_options, "invalid_options"},
      {Errc::exists, "exists"},               {Errc::not_found, "not_found"},
      {Errc::permission, "permission"},       {Errc::foreign, "foreign"},
      {Errc::truncated, "truncated"},         {Errc::version_mismatch, "version_mismatch"},
      {Errc::not_initialised, "not_initialised"}, {Errc::corrupt, "corrupt"},
      {Errc::owner_mismatch, "owner_mismatch"}, {Errc::mode_widened, "mode_widened"},
      {Errc::no_space, "no_space"},           {Errc::no_slot, "no_slot"},
      {Errc::busy, "busy"},                   {Errc::system, "system"},
      {Errc::pid_namespace, "pid_namespace"}};
  for (const auto& [e, name] : codes) EXPECT_EQ(to_string(e), name);
  // Every value with a name is one of those above (none left out, none named twice).
  std::set<std::string_view> status_names, code_names;
  for (int v = 0; v < 256; ++v) {
    if (const std::string_view n = to_string(static_cast<Status>(v)); n != "unknown") {
      EXPECT_TRUE(status_names.insert(n).second) << n;
    }
    if (const std::string_view n = to_string(static_cast<Errc>(v)); n != "unknown") {
      EXPECT_TRUE(code_names.insert(n).second) << n;
    }
  }
  EXPECT_EQ(status_names.size(), statuses.size());
  EXPECT_EQ(code_names.size(), codes.size());
}

TEST(Producer, AnApplicationIdOutOfRangeIsRefused) {
  TempSegment seg;
  for (const std::uint32_t id : {0x8000'0000u, 0xffff'ffffu}) {
    try {
      (void)Producer::attach(seg.segment(), {.producer_id = id});
      ADD_FAILURE() << "producer id " << id << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      EXPECT_NE(std::string(e.what()).find("producer id " + std::to_string(id) + " is out of range"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_NO_THROW((void)Producer::attach(seg.segment(), {.producer_id = 0x7fff'ffffu}));
}

// A negative wait interval is refused at attach, as ConsumerGroup::join refuses one: it
// was taken, and a spin_sleep producer that found the log full slept for centuries. So
// is a value no enumerator has (a cast, or memory never set), named with the value.
TEST(Producer, ANegativeWaitIntervalOrAnUnknownEnumeratorIsRefused) {
  TempSegment seg;
  auto refusal = [&](const ProducerOptions& o) {
    try {
      (void)Producer::attach(seg.segment(), o);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const std::string where = "segment " + seg.location().display() + ": ";
  EXPECT_EQ(refusal({.wait = WaitStrategy::spin_sleep(std::chrono::microseconds(-5))}),
            where + "wait.sleep is -5 us: it must not be negative");
  EXPECT_EQ(refusal({.wait = WaitStrategy::spin_park(1, 1, std::chrono::microseconds(-1))}),
            where + "wait.sleep is -1 us: it must not be negative");
  WaitStrategy unknown;
  unknown.kind = static_cast<WaitStrategy::Kind>(4);
  EXPECT_EQ(refusal({.wait = unknown}), where + "wait.kind is 4, not a WaitStrategy::Kind");
  EXPECT_EQ(refusal({.timestamps = static_cast<Timestamps>(2)}), where + "timestamps is 2, not a Timestamps");
  EXPECT_EQ(refusal({.wait = WaitStrategy::spin_sleep(std::chrono::microseconds(0))}), "accepted");
  EXPECT_EQ(refusal({.timestamps = Timestamps::none}), "accepted");
}

// A group slot in `registering` holds every producer's limit where it is (the group's
// start position is not known yet), and a registrant found dead is cleared by the next
// limit refresh, its start time first (DESIGN.md section 6).
TEST(Producer, AGroupBeingRegisteredHoldsTheLimitUntilItsRegistrantIsGone) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());  // limit: one lap ahead
  layout::GroupSlot& gs = r.groups[0];
  const detail::ProcessId& me = detail::self_process();
  gs.registrant_start.store(me.start_ticks);
  gs.state.store(layout::owner::make(layout::owner::registering, me.pid));
  const std::uint64_t v = 1;
  std::uint64_t published = 0;
  Status s = Status::ok;
  while ((s = p.try_publish(0, 1, std::as_bytes(std::span(&v, 1)))) == Status::ok) ++published;
  EXPECT_EQ(s, Status::full);
  const std::uint64_t rec = record_bytes(sizeof v);
  EXPECT_LE(published * rec, r.capacity);  // the lap it had, and not one record less
  EXPECT_GT((published + 1) * rec, r.capacity);
  // The registrant (this process, alive) is still registering: no further.
  EXPECT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::full);

  // Now the registrant is a process that no longer exists, with a start time recorded.
  gs.registrant_start.store(12345);
  gs.state.store(layout::owner::make(layout::owner::registering, 0x3ffffff0));  // above pid_max: never alive
  EXPECT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  EXPECT_EQ(layout::owner::state(gs.state.load()), layout::owner::free);
  EXPECT_EQ(gs.registrant_start.load(), 0u);
  for (std::uint64_t i = 0; i < 2 * published; ++i) {  // no group gates: laps freely again
    ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  }
}

TEST(Producer, PublishedEventsCarryTheirFieldsInOrder) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(p.try_publish(5, 1, bytes_of("a")), Status::ok);
  ASSERT_EQ(p.try_publish(6, 2, bytes_of("bb")), Status::ok);
  ASSERT_EQ(p.try_publish(5, 3, bytes_of("ccc")), Status::ok);
  ASSERT_EQ(p.try_publish(0, 4, bytes_of("")), Status::ok);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].payload, "a");
  EXPECT_EQ(seen[1].payload, "bb");
  EXPECT_EQ(seen[2].payload, "ccc");
  EXPECT_EQ(seen[3].payload, "");
  EXPECT_EQ(seen[0].key_seq, 1u);
  EXPECT_EQ(seen[1].key_seq, 1u);
  EXPECT_EQ(seen[2].key_seq, 2u);
  EXPECT_EQ(seen[3].key_seq, 0u) << "unkeyed events have no key sequence";
  for (std::size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].producer_seq, i + 1);
    EXPECT_EQ(seen[i].producer_id, p.id());
    EXPECT_EQ(seen[i].type, i + 1);
    if (i > 0) EXPECT_GT(seen[i].position, seen[i - 1].position);
  }
}

TEST(Producer, ZeroCopyClaimThenCommit) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  Claim c;
  ASSERT_EQ(p.try_claim(9, 1, 4, c), Status::ok);
  EXPECT_EQ(c.key_seq(), 1u);
  EXPECT_TRUE(drain(seg.segment()).empty()) << "nothing visible before commit";
  std::memcpy(c.payload().data(), "abcd", 4);
  Claim other;
  EXPECT_EQ(p.try_claim(9, 1, 4, other), Status::busy) << "one open claim per producer";
  c.commit();
  EXPECT_FALSE(c);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].payload, "abcd");
}

TEST(Producer, TooLargeIsRefusedAndNothingIsWritten) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  const std::string big(seg.segment().max_event() + 1, 'x');
  EXPECT_EQ(p.try_publish(1, 1, bytes_of(big)), Status::too_large);
  EXPECT_EQ(seg.segment().was_tail(), 0u);
  const std::string max(seg.segment().max_event(), 'y');
  EXPECT_EQ(p.try_publish(1, 1, bytes_of(max)), Status::ok);
  EXPECT_EQ(drain(seg.segment()).at(0).payload, max);
  EXPECT_EQ(drain(seg.segment()).at(0).key_seq, 1u) << "the refused event did not use a key_seq";
}

TEST(Producer, ExpectedSequenceAppendsOrConflicts) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  EXPECT_EQ(p.try_publish_expected(42, 0, 1, bytes_of("created")), Status::ok);
  EXPECT_EQ(p.try_publish_expected(42, 0, 1, bytes_of("created again")), Status::conflict);
  EXPECT_EQ(p.try_publish_expected(42, 1, 1, bytes_of("updated")), Status::ok);
  EXPECT_EQ(p.try_publish_expected(42, 1, 1, bytes_of("stale writer")), Status::conflict);
  EXPECT_EQ(p.try_publish_expected(0, 0, 1, bytes_of("no key")), Status::invalid);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].payload, "created");
  EXPECT_EQ(seen[1].payload, "updated");
  EXPECT_EQ(seen[1].key_seq, 2u);
  EXPECT_EQ(seen[1].producer_seq, 2u) << "conflicts do not use producer sequences";
}

TEST(Producer, AbortGivesBackTheKeySeqWhenNothingFollowed) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  {
    Claim c;
    ASSERT_EQ(p.try_claim(7, 1, 16, c), Status::ok);
    EXPECT_EQ(c.key_seq(), 1u);
    c.abort();
  }
  {
    Claim c;
    ASSERT_EQ(p.try_claim(7, 1, 16, c), Status::ok);
    // Destroying an open claim aborts it too.
  }
  ASSERT_EQ(p.try_publish(7, 1, bytes_of("kept")), Status::ok);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].key_seq, 1u);
  EXPECT_EQ(seen[0].producer_seq, 1u);
  EXPECT_GT(seen[0].position, 0u) << "the aborted claims became padding before it";
}

TEST(Producer, AbortAfterALaterClaimOfTheKeyLeavesAVoidRecord) {
  TempSegment seg;
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment());
  Claim first;
  ASSERT_EQ(a.try_claim(3, 1, 8, first), Status::ok);
  ASSERT_EQ(b.try_publish(3, 1, bytes_of("second")), Status::ok);  // key_seq 2
  first.abort();
  ASSERT_EQ(a.try_publish(3, 1, bytes_of("third")), Status::ok);
  TailReader t = TailReader::open_at(seg.segment(), 0);
  Event e;
  ASSERT_TRUE(t.try_next(e));
  EXPECT_EQ(text(e), "second");
  EXPECT_EQ(e.key_seq(), 2u);
  ASSERT_TRUE(t.try_next(e));
  EXPECT_EQ(text(e), "third");
  EXPECT_EQ(e.key_seq(), 3u);
  EXPECT_EQ(t.voids(), 1u) << "key_seq 1 is accounted for by a void record";
}

TEST(Producer, BatchClaimAssignsConsecutiveSequences) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  Claim c;
  ASSERT_EQ(p.try_claim_batch(11, 2, 8, 5, c), Status::ok);
  for (std::uint32_t i = 0; i < 5; ++i) {
    const std::uint64_t v = 100 + i;
    std::memcpy(c.payload(i).data(), &v, 8);
  }
  c.commit();
  Claim none;
  EXPECT_EQ(p.try_claim_batch(11, 2, 8, 0, none), Status::invalid);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 5u);
  for (std::uint32_t i = 0; i < 5; ++i) {
    std::uint64_t v = 0;
    std::memcpy(&v, seen[i].payload.data(), 8);
    EXPECT_EQ(v, 100 + i);
    EXPECT_EQ(seen[i].key_seq, i + 1);
    EXPECT_EQ(seen[i].producer_seq, i + 1);
  }
}

// With Timestamps::clock (the default) the header carries the wall-clock time at which
// the record was claimed, not committed: the stamp is read before the payload is
// written (DESIGN.md, "Claim and commit"). A batch shares its claim's stamp; a stamp set
// on the claim replaces it, and 0 leaves the record unstamped.
TEST(Producer, TheHeaderTimestampIsTheClaimsTime) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  constexpr std::uint64_t kSlack = 5'000'000;  // the per-thread clock anchor's error is far below this
  const auto held_open = [&](std::uint32_t count, bool unstamp) {
    Claim c;
    const std::uint64_t before = wall_clock_ns();
    EXPECT_EQ(p.try_claim_batch(0, 1, 8, count, c), Status::ok);
    const std::uint64_t claimed = wall_clock_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(60));  // a slow writer of the payload
    if (unstamp) c.set_timestamp_ns(0);
    c.commit();
    return std::pair{before, claimed};
  };
  const auto [before, claimed] = held_open(1, false);
  const auto [batch_before, batch_claimed] = held_open(3, false);
  (void)held_open(1, true);
  const std::uint64_t committed_by = wall_clock_ns();

  TailReader t = TailReader::open_at(seg.segment(), 0);
  Event e;
  ASSERT_TRUE(t.try_next(e));
  EXPECT_GE(e.timestamp_ns() + kSlack, before);
  EXPECT_LE(e.timestamp_ns(), claimed + kSlack);  // 60 ms before its commit
  std::uint64_t batch_stamp = 0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(t.try_next(e)) << i;
    if (i == 0) batch_stamp = e.timestamp_ns();
    EXPECT_EQ(e.timestamp_ns(), batch_stamp) << i;
  }
  EXPECT_GE(batch_stamp + kSlack, batch_before);
  EXPECT_LE(batch_stamp, batch_claimed + kSlack);
  EXPECT_LT(batch_stamp + 50'000'000, committed_by);
  ASSERT_TRUE(t.try_next(e));
  EXPECT_EQ(e.timestamp_ns(), 0u);

  // Timestamps::none: unstamped unless set.
  Producer quiet = Producer::attach(seg.segment(), {.timestamps = Timestamps::none});
  Claim c;
  ASSERT_EQ(quiet.try_claim(0, 1, 8, c), Status::ok);
  c.commit();
  ASSERT_TRUE(t.try_next(e));
  EXPECT_EQ(e.timestamp_ns(), 0u);
}

// A TSC rate read from a segment (32.32 fixed point ns a tick) is used only when it is
// a plausible TSC (50 MHz - 20 GHz) and agrees with a measurement within 20 ppm. The
// processes that share it are in tests/process (Process.*Tsc*).
TEST(Clock, ASharedRateIsUsedOnlyWhenPlausibleAndAgreeing) {
  constexpr double kOne = 4294967296.0;
  const auto mult = [&](double ns_per_tick) { return static_cast<std::uint64_t>(ns_per_tick * kOne); };
  const double rate = 1.0 / 2.6;  // 2.6 GHz
  EXPECT_TRUE(detail::shared_rate_agrees(mult(rate), rate));
  EXPECT_TRUE(detail::shared_rate_agrees(mult(rate * (1 + 15e-6)), rate));
  EXPECT_TRUE(detail::shared_rate_agrees(mult(rate * (1 - 15e-6)), rate));
  EXPECT_FALSE(detail::shared_rate_agrees(mult(rate * (1 + 30e-6)), rate));
  EXPECT_FALSE(detail::shared_rate_agrees(mult(rate * (1 - 30e-6)), rate));
  EXPECT_FALSE(detail::shared_rate_agrees(mult(rate * 2), rate));
  EXPECT_FALSE(detail::shared_rate_agrees(0, rate)) << "0: no rate";
  EXPECT_FALSE(detail::shared_rate_agrees(mult(rate), 0.0));
  EXPECT_FALSE(detail::shared_rate_agrees(mult(rate), -rate));
  EXPECT_FALSE(detail::shared_rate_agrees(mult(rate), std::nan("")));
  // Outside 50 MHz - 20 GHz, even when the measurement says the same.
  EXPECT_TRUE(detail::shared_rate_agrees(mult(0.05), 0.05));
  EXPECT_TRUE(detail::shared_rate_agrees(mult(20.0), 20.0));
  EXPECT_FALSE(detail::shared_rate_agrees(mult(0.049), 0.049));
  EXPECT_FALSE(detail::shared_rate_agrees(mult(20.1), 20.1));
  EXPECT_FALSE(detail::shared_rate_agrees(~std::uint64_t{0}, 1.0));

  // 32.32 fixed point resolves a 2.6 GHz rate to about 2 Hz.
  EXPECT_NEAR(static_cast<double>(detail::shared_tsc_hz(mult(rate))), 2.6e9, 2.0);
  EXPECT_EQ(detail::shared_tsc_hz(mult(1.0)), 1'000'000'000u);
  EXPECT_EQ(detail::shared_tsc_hz(0), 0u);
  EXPECT_EQ(detail::shared_tsc_hz(mult(0.049)), 0u);
  EXPECT_EQ(detail::shared_tsc_hz(~std::uint64_t{0}), 0u);
}

// The claim's setters apply to every record of a batch, keyed or not, and neither the
// flags nor the schema disturb key_seq, which runs on across batches of one key.
TEST(Producer, BatchHeadersCarryTheClaimsFieldsOnEveryRecord) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment(), {.timestamps = Timestamps::none});
  std::vector<std::uint64_t> positions;
  const auto batch = [&](std::uint64_t key, std::uint16_t flags, std::uint16_t schema) {
    Claim c;
    ASSERT_EQ(p.try_claim_batch(key, 0xbeef, 16, 3, c), Status::ok);
    c.set_flags(flags);
    c.set_schema_version(schema);
    c.set_correlation_id(0xc0ffee);
    c.set_timestamp_ns(42);
    for (std::uint32_t i = 0; i < 3; ++i) {
      EXPECT_EQ(c.key_seq(i), key != 0 ? c.key_seq() + i : 0);
      positions.push_back(c.position(i));
    }
    c.commit();
  };
  batch(5, record_flags::user_first, 7);
  batch(0, record_flags::user_first | (record_flags::user_first << 1), 8);
  batch(5, 0, 0xffff);

  TailReader t = TailReader::open_at(seg.segment(), 0);
  Event e;
  const std::uint64_t want_key_seq[] = {1, 2, 3, 0, 0, 0, 4, 5, 6};
  const std::uint16_t want_flags[] = {record_flags::user_first, 3 * record_flags::user_first, 0};
  const std::uint16_t want_schema[] = {7, 8, 0xffff};
  for (std::size_t i = 0; i < 9; ++i) {
    ASSERT_TRUE(t.try_next(e)) << i;
    EXPECT_EQ(e.position(), positions[i]);
    EXPECT_EQ(e.key(), i / 3 == 1 ? 0u : 5u);
    EXPECT_EQ(e.key_seq(), want_key_seq[i]) << i;
    EXPECT_EQ(e.flags(), want_flags[i / 3]) << i;
    EXPECT_EQ(e.schema_version(), want_schema[i / 3]) << i;
    EXPECT_EQ(e.type(), 0xbeef);
    EXPECT_EQ(e.producer_seq(), i + 1);
    EXPECT_EQ(e.correlation_id(), 0xc0ffeeu);
    EXPECT_EQ(e.timestamp_ns(), 42u);
  }
  EXPECT_FALSE(t.try_next(e));
}

TEST(Producer, AbortedKeyedBatchBehindALaterClaimLeavesOneVoidARecord) {
  TempSegment seg;
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment());
  ASSERT_EQ(a.try_publish(9, 1, bytes_of("zero")), Status::ok);  // another key first
  Claim batch;
  ASSERT_EQ(a.try_claim_batch(3, 1, 8, 4, batch), Status::ok);  // key_seq 1..4
  ASSERT_EQ(b.try_publish(3, 1, bytes_of("after")), Status::ok);  // key_seq 5
  batch.abort();
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].payload, "after");
  EXPECT_EQ(seen[1].key_seq, 5u);
  TailReader t = TailReader::open_at(seg.segment(), 0);
  Event e;
  while (t.try_next(e)) {
  }
  EXPECT_EQ(t.voids(), 4u) << "key_seq 1..4 are accounted for by void records";
  // Each void record names the key_seq and producer_seq its record would have had.
  const detail::SegmentRefs& r = seg.segment().refs();
  std::uint64_t pos = seen[0].position + record_bytes(4);
  for (std::uint64_t i = 0; i < 4; ++i, pos += record_bytes(8)) {
    const RecordHeader* h = r.record_at(pos);
    EXPECT_EQ(frame::state(std::atomic_ref<std::uint64_t>(r.record_at(pos)->frame).load()), RecordState::void_) << i;
    EXPECT_EQ(h->key, 3u) << i;
    EXPECT_EQ(key_seq_of(h->key_seq_flags), i + 1) << i;
    EXPECT_EQ(h->producer_seq, i + 2) << i;
  }
  // The latch of key 3 was released: the next claim of it continues at 6.
  Claim c;
  ASSERT_EQ(a.try_claim(3, 1, 8, c), Status::ok);
  EXPECT_EQ(c.key_seq(), 6u);
}

TEST(Producer, WrapAroundPadsTheEndOfTheRing) {
  TempSegment seg;  // 64 KiB ring, no gating groups: the ring is overwritten freely
  Producer p = Producer::attach(seg.segment());
  const std::string payload(1000, 'w');  // record of 1064 bytes: does not divide 64 KiB
  std::uint64_t wraps = 0, last_pos = 0;
  const auto& r = seg.segment().refs();
  for (int i = 0; i < 200; ++i) {
    Claim c;
    ASSERT_EQ(p.try_claim(0, 1, 1000, c), Status::ok);
    const std::uint64_t pos = c.position();
    EXPECT_LE((pos & r.mask) + record_bytes(1000), r.capacity) << "a record never crosses the end";
    if (i > 0 && r.lap(pos) != r.lap(last_pos)) {
      ++wraps;
      EXPECT_EQ(pos & r.mask, 0u) << "after a wrap the record starts the lap";
      // The rest of the previous lap is one padding record.
      const std::uint64_t pad_at = last_pos + record_bytes(1000);
      const std::uint64_t f = std::atomic_ref<std::uint64_t>(r.record_at(pad_at)->frame).load();
      EXPECT_EQ(frame::state(f), RecordState::padding);
      EXPECT_EQ(frame::length(f), pos - pad_at);
    }
    std::memcpy(c.payload().data(), payload.data(), payload.size());
    c.commit();
    last_pos = pos;
  }
  EXPECT_GE(wraps, 2u);
  // A reader that follows from the start of the current lap sees whole records.
  const std::uint64_t lap_start = (seg.segment().was_tail() >> r.shift) << r.shift;
  for (const auto& s : drain(seg.segment(), lap_start)) EXPECT_EQ(s.payload, payload);
}

// Records that divide the ring fill it to the last byte: the one that ends exactly at
// the end of the lap goes there, and no padding is written.
TEST(Producer, ARecordThatFitsExactlyBeforeTheEndOfTheRingEndsTheLap) {
  TempSegment seg;  // 64 KiB ring, no gating groups
  Producer p = Producer::attach(seg.segment());
  const std::uint64_t rec = record_bytes(64);
  const std::uint64_t per_lap = seg.segment().refs().capacity / rec;
  ASSERT_EQ(per_lap * rec, seg.segment().refs().capacity);
  for (std::uint64_t i = 0; i < 2 * per_lap + 1; ++i) {
    Claim c;
    ASSERT_EQ(p.try_claim(0, 1, 64, c), Status::ok);
    ASSERT_EQ(c.position(), i * rec) << "record " << i;
    c.commit();
  }
}

// key_seq is 48 bits: a key whose sequence would pass 2^48 - 1 is refused with
// keys_full, and its last key_seq is 2^48 - 1 exactly.
TEST(Producer, AKeysSequenceEndsAtItsLargestValue) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(p.try_publish(5, 1, bytes_of("first")), Status::ok);
  const auto& r = seg.segment().refs();
  layout::KeyEntry* entry = nullptr;
  for (std::uint64_t i = 0; i <= r.key_mask; ++i) {
    if (r.keys[i].key.load() == 5) entry = &r.keys[i];
  }
  ASSERT_NE(entry, nullptr);
  entry->latch.store(layout::latch::make(false, 0, kMaxKeySeq - 2));  // a key published 2^48 - 3 times
  Claim c;
  ASSERT_EQ(p.try_claim_batch(5, 1, 8, 2, c), Status::ok);
  c.commit();
  EXPECT_EQ(p.try_publish(5, 1, bytes_of("one more")), Status::keys_full);
  EXPECT_EQ(p.try_claim_batch(5, 1, 8, 2, c), Status::keys_full);
  EXPECT_EQ(p.try_publish(6, 1, bytes_of("other key")), Status::ok) << "other keys are unaffected";
  EXPECT_EQ(seg.segment().was_last_key_seq(5), kMaxKeySeq);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[1].key_seq, kMaxKeySeq - 1);
  EXPECT_EQ(seen[2].key_seq, kMaxKeySeq);
}

TEST(Producer, FullWhenAGatingGroupHasNotConsumed) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "slow");
  Producer p = Producer::attach(seg.segment());
  const std::string payload(1000, 'f');
  int published = 0;
  Status s = Status::ok;
  while ((s = p.try_publish(0, 1, bytes_of(payload))) == Status::ok) ++published;
  EXPECT_EQ(s, Status::full);
  // No more than one lap, and nearly all of it.
  EXPECT_LE(published * record_bytes(1000), seg.segment().capacity());
  EXPECT_GE((published + 2) * record_bytes(1000), seg.segment().capacity());
  EXPECT_EQ(p.publish(0, 1, bytes_of(payload), std::chrono::milliseconds(20)), Status::timeout);
  // Consuming some frees room again, and the consumer saw every event.
  int handled = 0;
  handled += static_cast<int>(g.worker(0).poll([&](const Event& e) { EXPECT_EQ(text(e), payload); }, 10));
  EXPECT_EQ(handled, 10);
  EXPECT_EQ(p.try_publish(0, 1, bytes_of(payload)), Status::ok);
  while (g.worker(0).poll([&](const Event&) { ++handled; }, 1000) != 0) {
  }
  EXPECT_EQ(handled, published + 1);
}

// A blocking claim on a full log ends when the producer's stop flag is set, from another
// thread (or a signal handler), with Status::stopped and nothing published, whatever its
// timeout and wait strategy; a flag already set ends it at once. Before, only the
// timeout ended it (`ringbus publish` waited in 50 ms slices to see Ctrl-C).
TEST(Producer, ABlockingClaimEndsWhenItsStopFlagIsSet) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "slow");
  for (const WaitStrategy wait : {WaitStrategy::spin_yield(), WaitStrategy::spin_park(), WaitStrategy::busy_spin()}) {
    std::atomic<bool> stop{false};
    Producer p = Producer::attach(seg.segment(), {.wait = wait, .stop = &stop});
    const std::string payload(1000, 'f');
    while (p.try_publish(0, 1, bytes_of(payload)) == Status::ok) {
    }
    const std::uint64_t published = read_stats(seg.segment()).published;
    std::atomic<bool> waiting{false};
    std::thread stopper([&] {
      while (!waiting.load()) std::this_thread::yield();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // into the wait (it would still pass without)
      stop.store(true);
    });
    waiting.store(true);
    EXPECT_EQ(p.publish(0, 1, bytes_of(payload)), Status::stopped) << "with no timeout: only the flag ends it";
    stopper.join();
    Claim c;
    EXPECT_EQ(p.claim(0, 1, 1000, c, std::chrono::hours(1)), Status::stopped) << "already set";
    EXPECT_EQ(c.count(), 0u) << "nothing claimed";
    EXPECT_EQ(read_stats(seg.segment()).published, published);
    // Room again: the flag ends waits only, not claims that find room.
    while (g.worker(0).poll([](const Event&) {}, 1000) != 0) {
    }
    EXPECT_EQ(p.publish(0, 1, bytes_of(payload), std::chrono::hours(1)), Status::ok);
    while (g.worker(0).poll([](const Event&) {}, 1000) != 0) {
    }
  }
}

// A producer parked for an hour on a full log ends its wait as soon as its stop flag is
// set and Producer::wake_waiting() is called (from a signal handler, here): before,
// nothing could wake it, and it saw the flag only when its park timed out. A hang is the
// watchdog's to catch.
std::atomic<bool> g_stop_and_wake{false};
const Segment* g_wake_segment = nullptr;

TEST(Producer, AParkedProducerIsWokenToSeeItsStopFlag) {
  const std::string payload(1000, 'f');
  // A sleeping one (spin_sleep) too: its sleep is a futex wait the wake ends.
  for (const WaitStrategy wait : {WaitStrategy::spin_sleep(std::chrono::hours(1), 0)}) {
    TempSegment seg;
    ConsumerGroup g = ConsumerGroup::join(seg.segment(), "slow");
    Producer p = Producer::attach(seg.segment(), {.wait = wait, .stop = &g_stop_and_wake});
    while (p.try_publish(0, 1, bytes_of(payload)) == Status::ok) {
    }
    std::thread waker([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // into the sleep
      g_stop_and_wake.store(true);
      Producer::wake_waiting(seg.segment());
    });
    EXPECT_EQ(p.publish(0, 1, bytes_of(payload)), Status::stopped);
    waker.join();
    g_stop_and_wake.store(false);
  }
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "slow");
  Producer p = Producer::attach(
      seg.segment(), {.wait = WaitStrategy::spin_park(0, 0, std::chrono::hours(1)), .stop = &g_stop_and_wake});
  while (p.try_publish(0, 1, bytes_of(payload)) == Status::ok) {
  }
  g_wake_segment = &seg.segment();
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    g_stop_and_wake.store(true);
    Producer::wake_waiting(*g_wake_segment);
  };
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  const pthread_t waiter = ::pthread_self();
  std::atomic<bool> waiting{false};
  std::thread signaller([&] {
    while (!waiting.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // into the park (it would still pass without)
    g_stop_and_wake.store(true);
    Producer::wake_waiting(seg.segment());
  });
  waiting.store(true);
  EXPECT_EQ(p.publish(0, 1, bytes_of(payload)), Status::stopped);
  signaller.join();
  // From a signal handler, with errno kept.
  g_stop_and_wake.store(false);
  errno = 0;
  ASSERT_EQ(::pthread_kill(waiter, SIGUSR2), 0);
  EXPECT_EQ(errno, 0);
  EXPECT_TRUE(g_stop_and_wake.load());
  ::sigaction(SIGUSR2, &old, nullptr);
  Producer::wake_waiting(Segment{});  // no segment: nothing
}

// A keyed claim refused after its latch was taken (the log full, or a tail no producer
// could have left) gives the latch back unchanged: the next claim of the key, by any
// producer, continues its sequence without waiting for a latch recovery.
TEST(Producer, ARefusedKeyedClaimLeavesItsKeyFree) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  constexpr std::uint64_t kKey = 5;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "slow");
  Producer p = Producer::attach(seg.segment());
  const std::string payload(1000, 'f');
  std::uint64_t published = 0;
  Status s = Status::ok;
  while ((s = p.try_publish(kKey, 1, bytes_of(payload))) == Status::ok) ++published;
  ASSERT_EQ(s, Status::full);
  const std::uint64_t index = detail::find_key(r, kKey);
  ASSERT_NE(index, detail::kNoEntry);
  auto latch_is_free_at = [&](std::uint64_t last) {
    const std::uint64_t w = r.keys[index].latch.load();
    return !layout::latch::locked(w) && layout::latch::last_seq(w) == last;
  };
  auto journal_is_idle = [&] {
    const layout::ProducerSlot& slot = r.producers[p.slot_index()];
    return layout::claim_phase::phase(slot.claim.load()) == layout::claim_phase::idle &&
           slot.claim_key_index.load() == 0;
  };
  ASSERT_TRUE(latch_is_free_at(published)) << "after Status::full";
  ASSERT_TRUE(journal_is_idle()) << "after Status::full";

  const std::uint64_t tail = r.control->tail.load();
  r.control->tail.store(tail + 4);  // no record starts there
  EXPECT_EQ(p.try_publish(kKey, 1, bytes_of(payload)), Status::corrupt);
  ASSERT_TRUE(latch_is_free_at(published)) << "after Status::corrupt";
  ASSERT_TRUE(journal_is_idle()) << "after Status::corrupt";
  r.control->tail.store(tail);

  while (g.worker(0).poll([](const Event&) {}, 1000) != 0) {
  }
  Producer other = Producer::attach(seg.segment());
  ASSERT_EQ(other.try_publish(kKey, 1, bytes_of("next")), Status::ok);
  EXPECT_EQ(drain(seg.segment(), tail).at(0).key_seq, published + 1);
  EXPECT_EQ(r.control->latches_released.load(), 0u) << "no latch had to be taken back";
}

// One claim may take a quarter of the ring, and no more.
TEST(Producer, AClaimTakesAtMostAQuarterOfTheRing) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  const std::uint64_t quarter = seg.segment().capacity() / 4;
  constexpr std::uint32_t kLen = 64;  // 128-byte records
  ASSERT_EQ(quarter % record_bytes(kLen), 0u);
  const auto count = static_cast<std::uint32_t>(quarter / record_bytes(kLen));
  Claim c;
  EXPECT_EQ(p.try_claim_batch(0, 1, kLen, count + 1, c), Status::too_large);
  ASSERT_EQ(p.try_claim_batch(0, 1, kLen, count, c), Status::ok);
  c.commit();
  EXPECT_EQ(drain(seg.segment()).size(), count);
}

// A claim object used again starts from nothing the previous claim set.
TEST(Producer, AReusedClaimCarriesNothingOfThePreviousOne) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  Claim c;
  ASSERT_EQ(p.try_claim(7, 3, 4, c), Status::ok);
  c.set_correlation_id(77);
  c.set_schema_version(2);
  std::memcpy(c.payload().data(), "abcd", 4);
  c.commit();
  ASSERT_EQ(p.try_claim(7, 3, 4, c), Status::ok);
  std::memcpy(c.payload().data(), "efgh", 4);
  c.commit();
  TailReader t = TailReader::open(seg.segment(), TailStart::earliest);
  Event e;
  ASSERT_TRUE(t.try_next(e));
  EXPECT_EQ(e.correlation_id(), 77u);
  EXPECT_EQ(e.schema_version(), 2u);
  ASSERT_TRUE(t.try_next(e));
  EXPECT_EQ(text(e), "efgh");
  EXPECT_EQ(e.correlation_id(), 0u);
  EXPECT_EQ(e.schema_version(), 0u);
}

// A claim object given to another producer's claim gives up the claim it held: that
// producer may claim again, and the bytes it had claimed become padding.
TEST(Producer, AClaimObjectReusedByAnotherProducerAbortsItsOpenClaim) {
  TempSegment seg;
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment());
  Claim c;
  ASSERT_EQ(a.try_claim(0, 1, 8, c), Status::ok);
  ASSERT_EQ(b.try_claim(0, 1, 8, c), Status::ok);
  std::memcpy(c.payload().data(), "from b..", 8);
  c.commit();
  ASSERT_EQ(a.try_publish(0, 1, bytes_of("from a..")), Status::ok);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].payload, "from b..");
  EXPECT_EQ(seen[0].position, record_bytes(8)) << "a's first claim became padding";
  EXPECT_EQ(seen[1].payload, "from a..");
  EXPECT_EQ(seen[1].producer_seq, 1u) << "the aborted claim used no producer_seq";
}

// A payload of 4 GiB or more is refused whole, never cut to its low 32 bits. (The span's
// bytes are never read: it is refused before the copy. The size is volatile so that the
// compiler does not warn of the copy it cannot see is never reached.)
TEST(Producer, APayloadOf4GiBOrMoreIsRefusedNotTruncated) {
  TempSegment seg;
  Producer p = Producer::attach(seg.segment());
  const std::byte small[8] = {};
  const volatile std::uint64_t size = (std::uint64_t{1} << 32) + 8;
  const std::span<const std::byte> huge(small, size);
  EXPECT_EQ(p.try_publish(0, 1, huge), Status::too_large);
  EXPECT_EQ(p.publish(0, 1, huge), Status::too_large);
  EXPECT_EQ(seg.segment().was_tail(), 0u);
}

// A slot keeps its counters and epoch across reattaching the same id, and starts them
// again when another id takes it over.
TEST(Producer, ASlotKeepsItsCountersForItsIdAndStartsCleanForAnother) {
  SegmentOptions o = TempSegment::small_options();
  o.max_producers = 1;
  TempSegment seg(o);
  const detail::SegmentRefs& r = seg.segment().refs();
  auto stats = [&] { return read_stats(seg.segment()).producers.at(0); };
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 5});
    ASSERT_EQ(p.try_publish(0, 1, bytes_of("one")), Status::ok);
    ASSERT_EQ(p.try_publish(0, 1, bytes_of("two")), Status::ok);
    Claim c;
    ASSERT_EQ(p.try_claim(0, 1, 8, c), Status::ok);
    c.abort();
    r.producers[0].full_count.store(3);
  }
  ProducerStats s = stats();
  EXPECT_EQ(s.epoch, 1u);
  EXPECT_EQ(s.published, 2u);
  EXPECT_EQ(s.aborted, 1u);
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 5});
    s = stats();
    EXPECT_EQ(s.epoch, 2u);
    EXPECT_EQ(s.published, 2u);
    EXPECT_EQ(s.aborted, 1u);
    EXPECT_EQ(s.full, 3u);
    EXPECT_EQ(p.next_seq(), 3u);
  }
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 6});
    s = stats();
    EXPECT_EQ(s.producer_id, 6u);
    EXPECT_EQ(s.epoch, 1u);
    EXPECT_EQ(s.published, 0u);
    EXPECT_EQ(s.aborted, 0u);
    EXPECT_EQ(s.full, 0u);
    EXPECT_EQ(p.next_seq(), 1u);
  }
  // A retained sequence of 0 (damaged memory: every id starts at 1) starts again at 1.
  r.producers[0].next_seq.store(0);
  Producer p = Producer::attach(seg.segment(), {.producer_id = 6});
  EXPECT_EQ(p.next_seq(), 1u);
}

// Latches that damaged memory leaves locked are taken back (and counted): one naming
// the claiming producer's own slot at once, since it cannot hold a latch while it
// claims; one naming a slot whose live owner is not `active` (no producer holds a latch
// in any other state) after two seconds.
TEST(Producer, ALatchNoProducerCanHoldIsTakenBack) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(p.try_publish(1, 1, bytes_of("first of key 1")), Status::ok);
  ASSERT_EQ(p.try_publish(2, 1, bytes_of("first of key 2")), Status::ok);
  const std::uint64_t own = detail::find_key(r, 1);
  r.keys[own].latch.store(layout::latch::make(true, p.slot_index(), 1));
  ASSERT_EQ(p.try_publish(1, 1, bytes_of("second of key 1")), Status::ok);
  EXPECT_EQ(r.control->latches_released.load(), 1u);

  const std::uint32_t other = p.slot_index() + 1;
  r.producers[other].owner.store(layout::owner::make(layout::owner::attaching, detail::self_process().pid));
  r.producers[other].owner_start.store(detail::self_process().start_ticks);
  const std::uint64_t stale = detail::find_key(r, 2);
  r.keys[stale].latch.store(layout::latch::make(true, other, 1));
  ASSERT_EQ(p.try_publish(2, 1, bytes_of("second of key 2")), Status::ok);
  EXPECT_EQ(r.control->latches_released.load(), 2u);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[2].key_seq, 2u);
  EXPECT_EQ(seen[3].key_seq, 2u);
}

// A gating group whose worker count reads 0 (damaged memory) still gates with its first
// worker's cursor.
TEST(Producer, AGroupWhoseWorkerCountReadsZeroStillGates) {
  TempSegment seg;
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "slow");
  const std::uint32_t slot = read_stats(seg.segment()).groups.at(0).slot;
  seg.segment().refs().groups[slot].workers.store(0);
  Producer p = Producer::attach(seg.segment());
  const std::string payload(1000, 'f');
  Status s = Status::ok;
  std::uint64_t published = 0;
  while ((s = p.try_publish(0, 1, bytes_of(payload))) == Status::ok && published <= 1000) ++published;
  EXPECT_EQ(s, Status::full);
  EXPECT_LE(published * record_bytes(1000), seg.segment().capacity());
}

// Moving a producer, or detaching it, with a claim open aborts the claim: its bytes
// become padding, so readers are not held at them, and the claim object is empty.
TEST(Producer, MovingOrDetachingAProducerAbortsItsOpenClaim) {
  TempSegment seg;
  Producer a = Producer::attach(seg.segment(), {.producer_id = 3});
  Claim c;
  ASSERT_EQ(a.try_claim(4, 1, 8, c), Status::ok);
  Producer b = std::move(a);
  EXPECT_FALSE(c) << "moving aborted the claim";
  ASSERT_EQ(b.try_publish(4, 1, bytes_of("after a move")), Status::ok);
  ASSERT_EQ(b.try_claim(4, 1, 8, c), Status::ok);
  b.detach();
  EXPECT_FALSE(c) << "detaching aborted the claim";
  Producer again = Producer::attach(seg.segment(), {.producer_id = 3});
  ASSERT_EQ(again.try_publish(4, 1, bytes_of("after a detach")), Status::ok);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].payload, "after a move");
  EXPECT_EQ(seen[0].key_seq, 1u);
  EXPECT_EQ(seen[0].producer_seq, 1u);
  EXPECT_EQ(seen[1].payload, "after a detach");
  EXPECT_EQ(seen[1].key_seq, 2u);
  EXPECT_EQ(seen[1].producer_seq, 2u);
}

TEST(Producer, KeyTableFullRefusesOnlyNewKeys) {
  SegmentOptions o = TempSegment::small_options();
  o.key_slots = 16;
  TempSegment seg(o);
  Producer p = Producer::attach(seg.segment());
  std::uint64_t accepted = 0;
  std::uint64_t key = 1;
  for (; key < 100; ++key) {
    const Status s = p.try_publish(key, 1, bytes_of("k"));
    if (s == Status::keys_full) break;
    ASSERT_EQ(s, Status::ok);
    ++accepted;
  }
  EXPECT_EQ(accepted, 16u);
  EXPECT_EQ(p.try_publish(key + 1, 1, bytes_of("new")), Status::keys_full);
  EXPECT_EQ(p.try_publish(1, 1, bytes_of("old key")), Status::ok) << "known keys keep working";
  EXPECT_EQ(p.try_publish(0, 1, bytes_of("unkeyed")), Status::ok);
}

// The probe bound fills before the table does; it must not fill much before. Keys 1..N,
// keys 65,536 apart (a hash that kept low bits would pile them on one slot) and random
// keys each fill at least three quarters of 65,536 slots before the first refusal
// (measured: 79.0%, 79.2%, 83.9%). DESIGN.md, "When the table fills".
TEST(Producer, KeyTableTakesThreeQuartersOfItsSlotsBeforeItRefusesAKey) {
  constexpr std::uint32_t kSlots = 1u << 16;
  for (int pattern = 0; pattern < 3; ++pattern) {
    SegmentOptions o = TempSegment::small_options();
    o.key_slots = kSlots;
    TempSegment seg(o);
    Producer p = Producer::attach(seg.segment());
    std::mt19937_64 rng(pattern);
    std::uint64_t accepted = 0;
    for (std::uint64_t n = 1; n <= kSlots; ++n) {
      const std::uint64_t key = pattern == 0 ? n : pattern == 1 ? n << 16 : (rng() | 1);
      const Status s = p.try_publish(key, 1, bytes_of("k"));
      if (s == Status::keys_full) break;
      ASSERT_EQ(s, Status::ok);
      ++accepted;
    }
    EXPECT_GE(accepted, kSlots / 4 * 3) << "pattern " << pattern;
    EXPECT_EQ(read_stats(seg.segment()).keys_used, accepted);
  }
}

TEST(Producer, ReattachingWithTheSameIdContinuesItsSequence) {
  TempSegment seg;
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 500});
    for (int i = 0; i < 3; ++i) ASSERT_EQ(p.try_publish(0, 1, bytes_of("x")), Status::ok);
    EXPECT_THROW(Producer::attach(seg.segment(), {.producer_id = 500}), Error) << "an id is attached once";
  }
  Producer again = Producer::attach(seg.segment(), {.producer_id = 500});
  EXPECT_EQ(again.next_seq(), 4u);
  Producer replay = Producer::attach(seg.segment(), {.producer_id = 501, .first_seq = 40});
  EXPECT_EQ(replay.next_seq(), 40u);
  Producer fresh = Producer::attach(seg.segment());
  EXPECT_GE(fresh.id(), 0x80000000u) << "assigned ids never collide with application ids";
  EXPECT_EQ(fresh.next_seq(), 1u);
}

// A producer_seq never wraps: from 2^64 - 1 it went on at 0 and 1, numbers every dedup
// window has passed, so consumers with dedup dropped those events as too old.
TEST(Producer, ASequenceThatWouldWrapIsRefused) {
  TempSegment seg;
  for (const std::uint64_t first : {~std::uint64_t{0}, kMaxFirstSeq + 1}) {
    try {
      (void)Producer::attach(seg.segment(), {.producer_id = 502, .first_seq = first});
      ADD_FAILURE() << "attached with first_seq " << first;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_options);
      EXPECT_NE(std::string(e.what()).find("first_seq " + std::to_string(first) + " is more than 2^62"),
                std::string::npos)
          << e.what();
    }
  }
  std::uint32_t slot = 0;
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 502, .first_seq = kMaxFirstSeq});
    EXPECT_EQ(p.next_seq(), kMaxFirstSeq);
    slot = p.slot_index();
  }
  // A retained sequence beyond it is damage: refused, the slot left as it was.
  seg.segment().refs().producers[slot].next_seq.store(~std::uint64_t{0} - 1);
  try {
    (void)Producer::attach(seg.segment(), {.producer_id = 502, .exclusive = true});
    ADD_FAILURE() << "continued a sequence about to wrap";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
    EXPECT_NE(std::string(e.what()).find("producer id 502 would continue from sequence"), std::string::npos) << e.what();
  }
  // Nothing is left held: not the slot, not the exclusive word.
  Producer other = Producer::attach(seg.segment(), {.exclusive = true});
  EXPECT_NE(other.slot_index(), slot);
}

// An id whose slot another process is repairing (its owner died; a consumer stalled on
// its hole got there first) is attached once the repair is done, in that slot and
// continuing its sequence: not in another slot from 1, which would use each of its
// producer_seqs twice. A repair that never ends is refused with busy, naming it.
TEST(Producer, AttachingAnIdWhoseSlotIsBeingRecoveredWaitsForTheRecovery) {
  TempSegment seg;
  std::uint32_t slot = 0;
  {
    Producer p = Producer::attach(seg.segment(), {.producer_id = 500});
    for (int i = 0; i < 3; ++i) ASSERT_EQ(p.try_publish(0, 1, bytes_of("x")), Status::ok);
    slot = p.slot_index();
  }
  layout::ProducerSlot& s = seg.segment().refs().producers[slot];
  s.owner_start.store(1);  // the start time of the owner that died, not ours
  std::atomic<std::uint64_t>& owner = s.owner;
  const std::uint64_t detached = owner.load();
  ASSERT_EQ(layout::owner::state(detached), layout::owner::detached);
  // What a live process (this one) holds while it repairs the slot.
  const std::uint64_t recovering = layout::owner::make(layout::owner::recovering, detail::self_process().pid);
  owner.store(recovering);
  std::atomic<bool> attached{false};
  std::uint64_t next_seq = 0;
  std::uint32_t attached_slot = ~0u;
  std::thread attacher([&] {
    try {
      Producer again = Producer::attach(seg.segment(), {.producer_id = 500});
      next_seq = again.next_seq();
      attached_slot = again.slot_index();
    } catch (const Error& e) {
      ADD_FAILURE() << e.what();
    }
    attached = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(attached.load()) << "attached while its slot was being recovered";
  owner.store(detached);  // the repair is done
  attacher.join();
  EXPECT_EQ(attached_slot, slot);
  EXPECT_EQ(next_seq, 4u);

  owner.store(recovering);
  const Error e = test::error_of([&] { (void)Producer::attach(seg.segment(), {.producer_id = 500}); });
  EXPECT_EQ(e.code(), Errc::busy);
  EXPECT_NE(std::string(e.what()).find("producer id 500 is being recovered by pid " +
                                       std::to_string(detail::self_process().pid)),
            std::string::npos)
      << e.what();
  owner.store(detached);
}

TEST(Producer, SlotsRunOutWithAClearError) {
  SegmentOptions o = TempSegment::small_options();
  o.max_producers = 2;
  TempSegment seg(o);
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment());
  try {
    Producer::attach(seg.segment());
    FAIL() << "a third producer attached to two slots";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_slot);
    EXPECT_NE(std::string(e.what()).find(seg.location().display()), std::string::npos);
  }
  b.detach();
  EXPECT_NO_THROW(Producer::attach(seg.segment()));
}

TEST(Producer, MovingAProducerKeepsItsSlotAndSequence) {
  TempSegment seg;
  Producer a = Producer::attach(seg.segment());
  ASSERT_EQ(a.try_publish(0, 1, bytes_of("1")), Status::ok);
  Producer b = std::move(a);
  EXPECT_FALSE(a);
  ASSERT_EQ(b.try_publish(0, 1, bytes_of("2")), Status::ok);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].producer_seq, 2u);
}

// An exclusive producer has the segment to itself: it is refused while another producer
// is attached, every attach is refused while it is attached, and both messages name
// who holds the segment. Detaching either way makes room for the other.
TEST(Producer, AnExclusiveProducerAndAnyOtherAreNeverAttachedTogether) {
  TempSegment seg;
  const std::string pid = std::to_string(detail::self_process().pid);
  std::optional<Producer> shared(Producer::attach(seg.segment(), {.producer_id = 9}));
  EXPECT_FALSE(shared->exclusive());
  ASSERT_EQ(shared->try_publish(0, 1, bytes_of("s")), Status::ok);
  Error e = test::error_of([&] { (void)Producer::attach(seg.segment(), {.exclusive = true}); });
  EXPECT_EQ(e.code(), Errc::busy);
  EXPECT_NE(std::string(e.what()).find("producer slot " + std::to_string(shared->slot_index()) +
                                       " is attached by pid " + pid + " (producer id 9)"),
            std::string::npos)
      << e.what();
  EXPECT_EQ(seg.segment().refs().control->exclusive.load(), 0u) << "a refused attach leaves the word free";
  shared.reset();

  Producer only = Producer::attach(seg.segment(), {.exclusive = true});
  EXPECT_TRUE(only.exclusive());
  for (const ProducerOptions& o : {ProducerOptions{}, ProducerOptions{.producer_id = 9}, ProducerOptions{.exclusive = true}}) {
    e = test::error_of([&] { (void)Producer::attach(seg.segment(), o); });
    EXPECT_EQ(e.code(), Errc::busy);
    EXPECT_NE(std::string(e.what()).find("the exclusive producer (slot " + std::to_string(only.slot_index()) +
                                         ", pid " + pid + ") is attached"),
              std::string::npos)
        << e.what();
  }
  ASSERT_EQ(only.try_publish(0, 1, bytes_of("x")), Status::ok);
  // A refused attach gives back the slot it took: every slot is still free for later.
  const SegmentStats stats = read_stats(seg.segment());
  std::size_t attached = 0;
  for (const auto& p : stats.producers) attached += p.state == "active" ? 1 : 0;
  EXPECT_EQ(attached, 1u);

  Producer moved = std::move(only);
  EXPECT_TRUE(moved.exclusive());
  moved.detach();
  EXPECT_EQ(seg.segment().refs().control->exclusive.load(), 0u);
  Producer a = Producer::attach(seg.segment());
  Producer b = Producer::attach(seg.segment(), {.producer_id = 9});
  ASSERT_EQ(b.try_publish(0, 1, bytes_of("y")), Status::ok);
  const auto seen = drain(seg.segment());
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[1].payload, "x");
  EXPECT_EQ(seen[2].producer_seq, 2u) << "producer id 9 continued its sequence";
}

// The exclusive word is shared memory: one naming a holder that is gone (its slot
// detached, attached by another process, owned by a dead process, or no such slot)
// holds nothing, and the next attach takes it back.
TEST(Producer, AnExclusiveWordWhoseHolderIsGoneIsTakenBack) {
  constexpr std::uint32_t kDeadPid = 0x3ffffff0;  // above pid_max: never a live process
  TempSegment seg;
  std::atomic<std::uint64_t>& word = seg.segment().refs().control->exclusive;
  const std::uint32_t pid = detail::self_process().pid;
  std::uint32_t slot = 0;
  {
    Producer p = Producer::attach(seg.segment(), {.exclusive = true});
    slot = p.slot_index();
    EXPECT_EQ(word.load(), layout::exclusive::make(slot, pid));
  }
  EXPECT_EQ(word.load(), 0u) << "detach gives the word back";
  Producer keep = Producer::attach(seg.segment());  // a slot attached by this process
  for (const std::uint64_t stale : {layout::exclusive::make(slot, pid),                   // detached
                                    layout::exclusive::make(keep.slot_index(), kDeadPid),  // another's now
                                    layout::exclusive::make(40'000, pid)}) {               // no such slot
    word.store(stale);
    Producer p = Producer::attach(seg.segment());
    EXPECT_EQ(word.load(), 0u) << std::hex << stale;
    EXPECT_EQ(p.try_publish(0, 1, bytes_of("x")), Status::ok);
  }
  keep.detach();
  // A holder whose process died while attached.
  Producer p = Producer::attach(seg.segment());
  layout::ProducerSlot& s = seg.segment().refs().producers[p.slot_index()];
  const std::uint64_t mine = s.owner.load();
  s.owner.store(layout::owner::make(layout::owner::active, kDeadPid));
  word.store(layout::exclusive::make(p.slot_index(), kDeadPid));
  {
    Producer q = Producer::attach(seg.segment(), {.exclusive = true});
    EXPECT_EQ(word.load(), layout::exclusive::make(q.slot_index(), pid));
  }
  s.owner.store(mine);
  // And the same slot alive again: its word holds.
  word.store(layout::exclusive::make(p.slot_index(), pid));
  EXPECT_EQ(test::error_of([&] { (void)Producer::attach(seg.segment()); }).code(), Errc::busy);
  word.store(0);
}

// An exclusive producer's claims advance the tail by a store: what it publishes is the
// same log a shared producer writes, across laps with padding, keyed and in batches.
TEST(Producer, AnExclusiveProducerWritesTheSameLogAsASharedOne) {
  auto publish_all = [](const Segment& s, bool exclusive) {
    Producer p = Producer::attach(s, {.producer_id = 3, .timestamps = Timestamps::none, .exclusive = exclusive});
    for (std::uint64_t i = 0; i < 1000; ++i) {
      const std::string payload(10 + (i * 37) % 900, static_cast<char>('a' + i % 26));
      if (i % 50 == 7) {
        Claim c;
        EXPECT_EQ(p.try_claim_batch(i % 3, 2, 16, 4, c), Status::ok);
        for (std::uint32_t k = 0; k < 4; ++k) std::memset(c.payload(k).data(), 'b', 16);
        c.commit();
      } else {
        EXPECT_EQ(p.try_publish(i % 3, 1, bytes_of(payload)), Status::ok);
      }
    }
    return s.was_tail();
  };
  TempSegment shared_seg, exclusive_seg;
  const std::uint64_t tail = publish_all(shared_seg.segment(), false);
  ASSERT_EQ(publish_all(exclusive_seg.segment(), true), tail);
  ASSERT_GT(tail, 3 * shared_seg.segment().refs().capacity) << "the log wrapped";
  // Timestamps off, the same producer id: the two rings hold the same bytes.
  const auto& ra = shared_seg.segment().refs();
  const auto& rb = exclusive_seg.segment().refs();
  ASSERT_EQ(ra.capacity, rb.capacity);
  EXPECT_EQ(std::memcmp(ra.log, rb.log, ra.capacity), 0);
  const std::uint64_t lap_start = (tail >> ra.shift) << ra.shift;
  const auto seen = drain(exclusive_seg.segment(), lap_start);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().producer_seq, 1000u + 20 * 3) << "every claim got its own producer_seq";
}

}  // namespace
}  // namespace ringbus
