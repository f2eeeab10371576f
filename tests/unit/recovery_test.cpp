// Crash recovery's decisions on journals written into producer slots by hand: states a
// process leaves only when it dies in a window a few instructions wide, which the
// crash and kill tiers reach by chance at best.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ringbus/detail/key_table.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/recovery.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/tail_reader.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::TempSegment;

constexpr std::uint32_t kDeadPid = 0x3ffffff0;  // above pid_max: never a live process
constexpr std::uint64_t kDeadOwner = layout::owner::make(layout::owner::active, kDeadPid);

// Publishes one 8-byte event of value 7: the record before the holes the tests make.
Status publish_seven(Producer& p, std::uint64_t key = 0) {
  const std::uint64_t v = 7;
  return p.try_publish(key, 1, std::as_bytes(std::span(&v, 1)));
}

// Writes the journal of a one-record, 8-byte, unkeyed claim from `begin` into `slot`,
// owned by `owner` (an owner:: word).
void journal(layout::ProducerSlot& slot, std::uint64_t owner, std::uint64_t phase, std::uint64_t begin) {
  slot.producer_id.store(99);
  slot.owner_start.store(1);
  slot.claim_shape.store(record_bytes(8) | (std::uint64_t{1} << 32));
  slot.claim_meta.store(1 | (std::uint64_t{8} << 16));
  slot.claim_seq.store(1);
  slot.claim_key_index.store(0);
  slot.claim.store(layout::claim_phase::make(phase, begin));
  slot.owner.store(owner);
}

std::vector<std::uint64_t> values(const Segment& seg) {
  std::vector<std::uint64_t> out;
  TailReader t = TailReader::open(seg, TailStart::earliest);
  test::read_values(t, out);
  return out;
}

bool frame_there(const detail::SegmentRefs& r, std::uint64_t pos) {
  return frame::ready_for(std::atomic_ref<std::uint64_t>(r.record_at(pos)->frame).load(), r.lap(pos));
}

// A dead producer journaled `claiming` from the position a live one is claiming from
// too: either may have won the tail CAS, so nothing is repaired until the live one
// journals `claimed`; then the dead one is known to have lost, its slot is freed and
// nothing is written where the live one's record goes.
TEST(Recovery, ADeadClaimantRacingALiveOneWaitsUntilTheWinnerIsKnown) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(p.slot_index(), 0u);
  Claim c;
  ASSERT_EQ(p.try_claim(0, 1, 8, c), Status::ok);
  ASSERT_EQ(c.position(), 0u);
  layout::ProducerSlot& live = r.producers[0];
  const std::uint64_t claimed = live.claim.load();
  ASSERT_EQ(layout::claim_phase::phase(claimed), layout::claim_phase::claimed);
  // The live producer between its tail CAS and journaling `claimed`.
  live.claim.store(layout::claim_phase::make(layout::claim_phase::claiming, 0));
  layout::ProducerSlot& dead = r.producers[1];
  const std::uint64_t dead_owner = kDeadOwner;
  journal(dead, dead_owner, layout::claim_phase::claiming, 0);

  EXPECT_FALSE(detail::recover_producer(r, 1)) << "undecided: the live claimant may be the winner";
  EXPECT_FALSE(detail::unblock(r, 0));
  EXPECT_EQ(dead.owner.load(), dead_owner) << "left for a later stall check";
  EXPECT_FALSE(frame_there(r, 0));
  EXPECT_EQ(r.control->holes_padded.load() + r.control->records_voided.load(), 0u);

  live.claim.store(claimed);
  EXPECT_TRUE(detail::recover_producer(r, 1));
  EXPECT_EQ(layout::owner::state(dead.owner.load()), layout::owner::detached);
  EXPECT_EQ(layout::claim_phase::phase(dead.claim.load()), layout::claim_phase::idle);
  EXPECT_FALSE(frame_there(r, 0)) << "the live claim's bytes are untouched";
  EXPECT_EQ(r.control->holes_padded.load() + r.control->records_voided.load(), 0u);
  EXPECT_EQ(r.control->producers_recovered.load(), 1u);

  const std::uint64_t v = 42;
  std::memcpy(c.payload().data(), &v, 8);
  c.commit();
  EXPECT_EQ(values(seg.segment()), std::vector<std::uint64_t>{42});
}

// A slot left `recovering` by a recoverer that died is recovered by the next one; one
// whose recoverer lives is left to it.
TEST(Recovery, ARecovererThatDiedIsReplacedAndALiveOneIsLeftAlone) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(publish_seven(p), Status::ok);
  // A dead producer's claim of the next record: the tail moved past it, no frame.
  const std::uint64_t hole = record_bytes(8);
  ASSERT_EQ(r.control->tail.load(), hole);
  layout::ProducerSlot& dead = r.producers[1];
  const std::uint64_t by_live_recoverer = layout::owner::make(layout::owner::recovering, detail::self_process().pid);
  journal(dead, by_live_recoverer, layout::claim_phase::claimed, hole);
  r.control->tail.store(2 * hole);

  EXPECT_FALSE(detail::recover_producer(r, 1)) << "a live process is recovering it";
  EXPECT_FALSE(detail::unblock(r, hole));
  EXPECT_EQ(dead.owner.load(), by_live_recoverer);
  EXPECT_FALSE(frame_there(r, hole));

  dead.owner.store(layout::owner::make(layout::owner::recovering, kDeadPid));
  EXPECT_TRUE(detail::unblock(r, hole));
  EXPECT_EQ(layout::owner::state(dead.owner.load()), layout::owner::detached);
  EXPECT_EQ(r.control->holes_padded.load(), 1u);
  const std::uint64_t next = 8;
  ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&next, 1))), Status::ok);
  EXPECT_EQ(values(seg.segment()), (std::vector<std::uint64_t>{7, 8})) << "the hole became padding";
}

// The journal is in shared memory: a shape no producer could have claimed (damaged
// memory, a foreign writer) is not acted on. The slot is released, and nothing is
// written into the log from it; the same hole with a sane journal is padded.
TEST(Recovery, AJournalNoProducerCouldHaveWrittenIsNotActedOn) {
  struct Case {
    const char* what;
    std::uint64_t shape;  // record bytes | count << 32
    std::uint32_t len;
    std::uint64_t offset;  // from the hole
    std::uint64_t key_index;
  };
  const std::uint64_t rec = record_bytes(8);
  const std::uint64_t too_many = 64 * 1024 / 4 / rec + 1;  // capacity / 4 of small_options
  const std::vector<Case> cases = {
      {"no records", rec, 8, 0, 0},
      {"record bytes not those of the length", (rec + 8) | (std::uint64_t{1} << 32), 8, 0, 0},
      {"length above max_event", record_bytes(4104) | (std::uint64_t{1} << 32), 4104, 0, 0},
      {"more than capacity / 4", rec | (too_many << 32), 8, 0, 0},
      {"unaligned begin", rec | (std::uint64_t{1} << 32), 8, 4, 0},
      {"key index past the table", rec | (std::uint64_t{1} << 32), 8, 0, 1024 + 1},
      {"sane (control)", rec | (std::uint64_t{1} << 32), 8, 0, 0},
  };
  for (const Case& c : cases) {
    TempSegment seg;
    const detail::SegmentRefs& r = seg.segment().refs();
    Producer p = Producer::attach(seg.segment());
    ASSERT_EQ(publish_seven(p), Status::ok);
    const std::uint64_t hole = r.control->tail.load();
    layout::ProducerSlot& dead = r.producers[1];
    journal(dead, kDeadOwner, layout::claim_phase::claimed, hole + c.offset);
    dead.claim_shape.store(c.shape);
    dead.claim_meta.store(1 | (std::uint64_t{c.len} << 16));
    dead.claim_key_index.store(c.key_index);
    r.control->tail.store(hole + 2 * rec);
    const bool sane = std::string(c.what) == "sane (control)";

    EXPECT_TRUE(detail::recover_producer(r, 1)) << c.what;
    EXPECT_EQ(layout::owner::state(dead.owner.load()), layout::owner::detached) << c.what;
    EXPECT_EQ(r.control->holes_padded.load(), sane ? 1u : 0u) << c.what;
    EXPECT_EQ(r.control->records_voided.load(), 0u) << c.what;
    EXPECT_EQ(frame_there(r, hole), sane) << c.what;
  }
}

// A claim journaled `claiming` from the tail itself: the tail CAS never happened, so
// nothing of the log is the dead producer's. Its slot is released and nothing written.
TEST(Recovery, AClaimFromTheTailThatNeverMovedWritesNothing) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(publish_seven(p), Status::ok);
  const std::uint64_t tail = r.control->tail.load();
  layout::ProducerSlot& dead = r.producers[1];
  journal(dead, kDeadOwner, layout::claim_phase::claiming, tail);
  EXPECT_TRUE(detail::recover_producer(r, 1));
  EXPECT_EQ(layout::owner::state(dead.owner.load()), layout::owner::detached);
  EXPECT_EQ(r.control->holes_padded.load() + r.control->records_voided.load(), 0u);
  EXPECT_FALSE(frame_there(r, tail));
  EXPECT_EQ(r.control->tail.load(), tail);
}

// A journal more than a lap behind the tail names bytes that later records own now:
// recovering it writes nothing there.
TEST(Recovery, AClaimMoreThanALapBehindTheTailWritesNothing) {
  TempSegment seg;  // no group: the ring laps freely
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  for (std::uint64_t v = 1; r.control->tail.load() < r.capacity + 4 * record_bytes(8); ++v) {
    ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  }
  const std::vector<std::uint64_t> before = values(seg.segment());
  ASSERT_FALSE(before.empty());
  layout::ProducerSlot& dead = r.producers[1];
  journal(dead, kDeadOwner, layout::claim_phase::claimed, 0);
  EXPECT_TRUE(detail::recover_producer(r, 1));
  EXPECT_EQ(r.control->holes_padded.load() + r.control->records_voided.load(), 0u);
  EXPECT_EQ(values(seg.segment()), before) << "a later lap's records were overwritten";
}

// A recoverer that died after padding the hole but before releasing the slot: the next
// one finds the padding and stops there, counting nothing twice and leaving the slot's
// next producer_seq where the first left it (no producer_seq was used by the hole).
TEST(Recovery, ARecoveryRepeatedAfterThePaddingWasWrittenChangesNothing) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(publish_seven(p), Status::ok);
  const std::uint64_t hole = r.control->tail.load();
  r.control->tail.store(hole + record_bytes(8));
  layout::ProducerSlot& dead = r.producers[1];
  journal(dead, kDeadOwner, layout::claim_phase::claimed, hole);
  ASSERT_TRUE(detail::recover_producer(r, 1));
  ASSERT_EQ(r.control->holes_padded.load(), 1u);
  const std::uint64_t next_seq = dead.next_seq.load();

  journal(dead, layout::owner::make(layout::owner::recovering, kDeadPid), layout::claim_phase::claimed, hole);
  EXPECT_TRUE(detail::recover_producer(r, 1));
  EXPECT_EQ(r.control->holes_padded.load(), 1u);
  EXPECT_EQ(r.control->records_voided.load(), 0u);
  EXPECT_EQ(dead.next_seq.load(), next_seq);
}

// The dead producer's key latch is held by another slot: it had released it, so its
// key_seq was published, and the hole becomes a void record carrying that key_seq.
// The other slot's latch is left alone.
TEST(Recovery, AKeyedHoleWhoseLatchAnotherSlotHoldsBecomesAVoid) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(p.slot_index(), 0u);
  constexpr std::uint64_t kKey = 77;
  ASSERT_EQ(publish_seven(p, kKey), Status::ok);
  const std::uint64_t index = detail::find_key(r, kKey);
  ASSERT_NE(index, detail::kNoEntry);
  const std::uint64_t hole = r.control->tail.load();
  r.control->tail.store(hole + record_bytes(8));
  layout::ProducerSlot& dead = r.producers[1];
  journal(dead, kDeadOwner, layout::claim_phase::claimed, hole);
  dead.claim_key_index.store(index + 1);
  dead.claim_key_seq.store(2);
  const std::uint64_t held_by_live = layout::latch::make(true, 0, 2);
  r.keys[index].latch.store(held_by_live);

  EXPECT_TRUE(detail::recover_producer(r, 1));
  EXPECT_EQ(r.control->records_voided.load(), 1u);
  EXPECT_EQ(r.control->holes_padded.load(), 0u);
  const RecordHeader* h = r.record_at(hole);
  EXPECT_EQ(frame::state(std::atomic_ref<std::uint64_t>(r.record_at(hole)->frame).load()), RecordState::void_);
  EXPECT_EQ(h->key, kKey);
  EXPECT_EQ(key_seq_of(h->key_seq_flags), 2u);
  EXPECT_EQ(r.keys[index].latch.load(), held_by_live);
}

// unblock() is asked about a position: one inside a record, or between two records
// of dead producers, is answered for that position alone.
TEST(Recovery, UnblockRepairsTheOwnerOfThePositionAskedAbout) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  Producer p = Producer::attach(seg.segment());
  ASSERT_EQ(publish_seven(p), Status::ok);
  const std::uint64_t rec = record_bytes(8);
  const std::uint64_t hole = r.control->tail.load();
  r.control->tail.store(hole + 2 * rec);
  layout::ProducerSlot& a = r.producers[1];
  layout::ProducerSlot& b = r.producers[2];
  const std::uint64_t dead = kDeadOwner;
  journal(a, dead, layout::claim_phase::claimed, hole);
  journal(b, dead, layout::claim_phase::claimed, hole + rec);

  EXPECT_FALSE(detail::unblock(r, hole + 4)) << "not a record boundary";
  EXPECT_EQ(a.owner.load(), dead);
  EXPECT_EQ(r.control->holes_padded.load(), 0u);

  EXPECT_TRUE(detail::unblock(r, hole + rec)) << "the second hole is b's, repaired at once";
  EXPECT_EQ(b.owner.load(), layout::owner::make(layout::owner::detached, kDeadPid));
  EXPECT_EQ(a.owner.load(), dead) << "a's claim ends where the position asked about begins";
  EXPECT_TRUE(detail::unblock(r, hole));
  EXPECT_EQ(r.control->holes_padded.load(), 2u);
}

// While a slot is `attaching`, its start time may still be the previous owner's: the
// owner is then judged by its pid alone, so a live process attaching is never taken for
// dead because of a start time that is not its own.
TEST(Recovery, AnAttachingOwnerIsJudgedByItsPidAlone) {
  const std::uint32_t me = detail::self_process().pid;
  const std::uint64_t stale_start = detail::self_process().start_ticks + 1;
  EXPECT_FALSE(detail::owner_dead(layout::owner::make(layout::owner::attaching, me), stale_start));
  EXPECT_TRUE(detail::owner_dead(layout::owner::make(layout::owner::active, me), stale_start));
  EXPECT_TRUE(detail::owner_dead(layout::owner::make(layout::owner::attaching, kDeadPid), 0));
}

TEST(Recovery, ASlotIndexPastTheTableIsRefused) {
  TempSegment seg;
  const detail::SegmentRefs& r = seg.segment().refs();
  EXPECT_FALSE(detail::recover_producer(r, r.max_producers));
  EXPECT_FALSE(detail::recover_producer(r, ~0u));
}

}  // namespace
}  // namespace ringbus
