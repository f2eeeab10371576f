// The record format of a ringbus log: a 64-byte header followed by the payload,
// 8-byte aligned, never crossing the end of the ring (padding records fill the gap).
//
// The first word of every record is its frame word. It alone says whether the
// record is there for a reader at a given position:
//
//   bits 63..62  state   0 = nothing written, 1 = data, 2 = padding, 3 = void
//   bits 61..32  lap tag (position >> log2(capacity)) mod 2^30
//   bits 31..0   length  data/void: payload bytes; padding: total bytes of the padding record
//
// A reader at position P waits until (state != 0 && tag == lap(P)); stale words of
// earlier laps never match, so the ring is never zeroed. The frame is the last word
// a producer writes (release) and the first a reader loads (acquire); the protocol
// is described in DESIGN.md, "Claim and commit".
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ringbus {

enum class RecordState : std::uint32_t {
  none = 0,     // nothing written at this position in this lap
  data = 1,     // a committed event
  padding = 2,  // filler: the tail of a lap, or an aborted / reclaimed record
  void_ = 3,    // a key_seq was assigned but the event was lost (abort or dead producer)
};

// Flags of RecordHeader (16 bits, stored above the 48-bit key_seq).
namespace record_flags {
inline constexpr std::uint16_t aborted = 1u << 0;    // void: the producer aborted the claim
inline constexpr std::uint16_t recovered = 1u << 1;  // void: reclaimed from a dead producer
inline constexpr std::uint16_t redriven = 1u << 2;   // republished from a dead-letter ring
inline constexpr std::uint16_t envelope = 1u << 3;   // payload is an encoded JSON envelope
inline constexpr std::uint16_t user_first = 1u << 8; // bits 8..15 are the application's
}  // namespace record_flags

struct RecordHeader {
  std::uint64_t frame;            // 0  see above; accessed atomically only
  std::uint64_t position;         // 8  global position of this record
  std::uint64_t key;              // 16 0 = unkeyed
  std::uint64_t key_seq_flags;    // 24 key_seq (low 48 bits) | flags (high 16 bits)
  std::uint64_t producer_seq;     // 32 per producer id, gap-free
  std::uint32_t producer_id;      // 40
  std::uint16_t type_id;          // 44
  std::uint16_t schema_version;   // 46
  std::uint64_t timestamp_ns;     // 48 claim time, ns since the Unix epoch (0 = not stamped)
  std::uint64_t correlation_id;   // 56
};

inline constexpr std::size_t kCacheLine = 64;  // the unit of prefetches (x86-64, most ARMv8)
inline constexpr std::size_t kRecordHeaderSize = kCacheLine;  // the header is one line
inline constexpr std::size_t kRecordAlign = 8;
inline constexpr std::uint64_t kKeySeqBits = 48;
inline constexpr std::uint64_t kKeySeqMask = (std::uint64_t{1} << kKeySeqBits) - 1;
inline constexpr std::uint64_t kMaxKeySeq = kKeySeqMask;
inline constexpr std::uint32_t kMaxPayload = (std::uint32_t{1} << 29);  // hard format limit

static_assert(sizeof(RecordHeader) == kRecordHeaderSize, "record header is one cache line");
static_assert(offsetof(RecordHeader, frame) == 0, "the frame word opens every record");
static_assert(offsetof(RecordHeader, key_seq_flags) == 24);
static_assert(offsetof(RecordHeader, producer_id) == 40);
static_assert(offsetof(RecordHeader, timestamp_ns) == 48);
static_assert(offsetof(RecordHeader, correlation_id) == 56);
static_assert(kRecordHeaderSize % kRecordAlign == 0);

namespace frame {

inline constexpr unsigned kTagBits = 30;
inline constexpr std::uint64_t kTagMask = (std::uint64_t{1} << kTagBits) - 1;

constexpr std::uint64_t make(RecordState s, std::uint64_t lap, std::uint32_t length) noexcept {
  return (std::uint64_t(s) << 62) | ((lap & kTagMask) << 32) | length;
}
constexpr RecordState state(std::uint64_t f) noexcept { return RecordState(f >> 62); }
constexpr std::uint64_t tag(std::uint64_t f) noexcept { return (f >> 32) & kTagMask; }
constexpr std::uint32_t length(std::uint64_t f) noexcept { return std::uint32_t(f); }

// True when the frame holds a record of lap `lap` (of any state but none).
constexpr bool ready_for(std::uint64_t f, std::uint64_t lap) noexcept {
  return state(f) != RecordState::none && tag(f) == (lap & kTagMask);
}

static_assert(state(make(RecordState::void_, 5, 7)) == RecordState::void_);
static_assert(tag(make(RecordState::data, kTagMask + 3, 0)) == 2);
static_assert(length(make(RecordState::padding, 1, 0xffffffffu)) == 0xffffffffu);
static_assert(!ready_for(0, 0), "zero-filled memory is never a record, even in lap 0");

}  // namespace frame

constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) noexcept {
  return (n + a - 1) & ~(a - 1);
}

// Bytes a data or void record with `payload_len` bytes of payload occupies in the ring.
constexpr std::uint64_t record_bytes(std::uint32_t payload_len) noexcept {
  return kRecordHeaderSize + align_up(payload_len, kRecordAlign);
}

constexpr std::uint64_t key_seq_of(std::uint64_t key_seq_flags) noexcept {
  return key_seq_flags & kKeySeqMask;
}
constexpr std::uint16_t flags_of(std::uint64_t key_seq_flags) noexcept {
  return std::uint16_t(key_seq_flags >> kKeySeqBits);
}
constexpr std::uint64_t pack_key_seq_flags(std::uint64_t key_seq, std::uint16_t flags) noexcept {
  return (key_seq & kKeySeqMask) | (std::uint64_t(flags) << kKeySeqBits);
}

// Writes every field of a header but the frame word, one relaxed atomic store a field;
// the writer then stores the frame with release. TailReader copies headers racily (a
// seqlock), so both sides are atomic; separate stores also keep the compiler from
// fusing them into vector stores fed by vector loads of the writer's own fields, which
// the store buffer cannot forward when those were stored field by field (see Claim).
inline void store_header_fields(RecordHeader& h, std::uint64_t position, std::uint64_t key,
                                std::uint64_t key_seq_flags, std::uint64_t producer_seq, std::uint32_t producer_id,
                                std::uint16_t type_id, std::uint16_t schema_version, std::uint64_t timestamp_ns,
                                std::uint64_t correlation_id) noexcept {
  const auto put = [](auto& field, auto v) noexcept {
    std::atomic_ref<std::remove_reference_t<decltype(field)>>(field).store(v, std::memory_order_relaxed);
  };
  put(h.position, position);
  put(h.key, key);
  put(h.key_seq_flags, key_seq_flags);
  put(h.producer_seq, producer_seq);
  put(h.producer_id, producer_id);
  put(h.type_id, type_id);
  put(h.schema_version, schema_version);
  put(h.timestamp_ns, timestamp_ns);
  put(h.correlation_id, correlation_id);
}

}  // namespace ringbus
