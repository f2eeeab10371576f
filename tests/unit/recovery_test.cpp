// Crash recovery's decisions on journals written into producer slots by hand: states a
// process leaves only when it dies in a window a few instructions wide, which the
// crash and kill tiers reach by chance at best.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

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
  Event e;
  while (t.try_next(e)) {
    std::uint64_t v = 0;
    std::memcpy(&v, e.payload().data(), 8);
    out.push_back(v);
  }
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
  const std::uint64_t dead_owner = layout::owner::make(layout::owner::active, kDeadPid);
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
  const std::uint64_t first = 7;
  ASSERT_EQ(p.try_publish(0, 1, std::as_bytes(std::span(&first, 1))), Status::ok);
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

}  // namespace
}  // namespace ringbus
