// Byte-level checks of the shared-memory formats: what another process (or another
// version of this library) reads must sit exactly where the layout says.
#include <gtest/gtest.h>

#include <cstring>

#include "ringbus/hash.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/record.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

template <class T>
T read_at(const void* base, std::size_t offset) {
  T v;
  std::memcpy(&v, static_cast<const std::byte*>(base) + offset, sizeof v);
  return v;
}

TEST(Layout, FrameWordBitsAreWhereTheFormatSaysTheyAre) {
  const std::uint64_t f = frame::make(RecordState::data, 0x12345, 0xabcd);
  EXPECT_EQ(f >> 62, 1u);
  EXPECT_EQ((f >> 32) & ((1u << 30) - 1), 0x12345u);
  EXPECT_EQ(f & 0xffffffffu, 0xabcdu);
  // The lap tag wraps at 2^30 laps; state and length are untouched by the wrap.
  const std::uint64_t w = frame::make(RecordState::padding, (std::uint64_t{1} << 30) + 7, 64);
  EXPECT_EQ(frame::tag(w), 7u);
  EXPECT_EQ(frame::state(w), RecordState::padding);
  EXPECT_EQ(frame::length(w), 64u);
  EXPECT_TRUE(frame::ready_for(w, 7));
  EXPECT_TRUE(frame::ready_for(w, (std::uint64_t{1} << 30) + 7));
  EXPECT_FALSE(frame::ready_for(w, 8));
  EXPECT_FALSE(frame::ready_for(frame::make(RecordState::none, 7, 64), 7));
}

TEST(Layout, RecordBytesRoundsPayloadToEightAndAddsTheHeader) {
  EXPECT_EQ(record_bytes(0), 64u);
  EXPECT_EQ(record_bytes(1), 72u);
  EXPECT_EQ(record_bytes(8), 72u);
  EXPECT_EQ(record_bytes(9), 80u);
  EXPECT_EQ(record_bytes(64), 128u);
}

TEST(Layout, KeySeqAndFlagsShareOneWord) {
  const std::uint64_t w = pack_key_seq_flags(kMaxKeySeq, 0xbeef);
  EXPECT_EQ(key_seq_of(w), kMaxKeySeq);
  EXPECT_EQ(flags_of(w), 0xbeef);
  EXPECT_EQ(key_seq_of(pack_key_seq_flags(kMaxKeySeq + 1, 0)), 0u) << "key_seq is 48 bits";
}

TEST(Layout, LatchWordPacksLockOwnerAndLastSeq) {
  using namespace layout::latch;
  const std::uint64_t w = make(true, 0x1234, 99);
  EXPECT_TRUE(locked(w));
  EXPECT_EQ(owner_slot(w), 0x1234u);
  EXPECT_EQ(last_seq(w), 99u);
  EXPECT_EQ(w >> 63, 1u);
  EXPECT_FALSE(locked(make(false, 5, 1)));
}

TEST(Layout, HashesAreStable) {
  // These values are part of the format (key table slots, worker routing).
  EXPECT_EQ(mix64(1), 0x5692161d100b05e5ull);
  EXPECT_EQ(key_of("order-42"), key_of(std::string("order-") + "42"));
  EXPECT_NE(key_of("a"), key_of("b"));
  EXPECT_EQ(route(0, 7, 1), 0u);
  for (std::uint64_t k = 1; k < 1000; ++k) EXPECT_LT(route(k, 0, 3), 3u);
}

TEST(Layout, CommittedRecordHasTheDocumentedBytes) {
  test::TempSegment seg;
  Producer p = Producer::attach(seg.segment(), {.producer_id = 77, .timestamps = Timestamps::none});
  Claim c;
  ASSERT_EQ(p.try_claim(0x1122334455667788ull, 0x0102, 5, c), Status::ok);
  std::memcpy(c.payload().data(), "hello", 5);
  c.set_correlation_id(0xc0ffee);
  c.set_schema_version(3);
  c.set_timestamp_ns(123456789);
  c.set_flags(record_flags::user_first);
  const std::uint64_t pos = c.position();
  c.commit();

  const auto& r = seg.segment().refs();
  const void* rec = r.record_at(pos);
  const auto f = read_at<std::uint64_t>(rec, 0);
  EXPECT_EQ(frame::state(f), RecordState::data);
  EXPECT_EQ(frame::tag(f), r.lap(pos));
  EXPECT_EQ(frame::length(f), 5u);
  EXPECT_EQ(read_at<std::uint64_t>(rec, 8), pos);
  EXPECT_EQ(read_at<std::uint64_t>(rec, 16), 0x1122334455667788ull);
  EXPECT_EQ(read_at<std::uint64_t>(rec, 24), pack_key_seq_flags(1, record_flags::user_first));
  EXPECT_EQ(read_at<std::uint64_t>(rec, 32), 1u);  // producer_seq
  EXPECT_EQ(read_at<std::uint32_t>(rec, 40), 77u);
  EXPECT_EQ(read_at<std::uint16_t>(rec, 44), 0x0102u);
  EXPECT_EQ(read_at<std::uint16_t>(rec, 46), 3u);
  EXPECT_EQ(read_at<std::uint64_t>(rec, 48), 123456789u);
  EXPECT_EQ(read_at<std::uint64_t>(rec, 56), 0xc0ffeeu);
  EXPECT_EQ(std::memcmp(static_cast<const std::byte*>(rec) + 64, "hello", 5), 0);
  // The next record starts 8-byte aligned after the payload.
  EXPECT_EQ(seg.segment().was_tail(), pos + 72);
}

TEST(Layout, SegmentHeaderFieldsAtFixedOffsets) {
  test::TempSegment seg;
  const auto* base = seg.segment().refs().base;
  EXPECT_EQ(read_at<std::uint64_t>(base, 0), layout::kMagic);
  EXPECT_EQ(std::memcmp(base, "RINGBUS", 8), 0) << "magic reads as text in a hex dump";
  EXPECT_EQ(read_at<std::uint32_t>(base, 8), layout::kVersionMajor);
  EXPECT_EQ(read_at<std::uint64_t>(base, 72), seg.segment().capacity());
  EXPECT_EQ(read_at<std::uint32_t>(base, 84), seg.segment().max_event());
  EXPECT_EQ(read_at<std::uint32_t>(base, 64), 0600u);
  // The regions sit inside the file, in order, without overlap; the log is page aligned.
  const auto& h = seg.segment().header();
  std::uint64_t end = layout::kPage;
  for (std::uint32_t i = 0; i < h.region_count; ++i) {
    EXPECT_GE(h.regions[i].offset, end);
    EXPECT_EQ(h.regions[i].size, h.regions[i].entry_size * h.regions[i].entry_count);
    end = h.regions[i].offset + h.regions[i].size;
  }
  EXPECT_LE(end, h.total_size);
  EXPECT_EQ(seg.segment().refs().log - base, static_cast<std::ptrdiff_t>(h.regions[h.region_count - 1].offset));
  EXPECT_EQ(h.regions[h.region_count - 1].offset % layout::kPage, 0u);
}

}  // namespace
}  // namespace ringbus
