#include "ringbus/tail_reader.hpp"

#include <algorithm>
#include <atomic>
#include <optional>

#include "ringbus/detail/process.hpp"
#include "ringbus/detail/record_walk.hpp"
#include "ringbus/detail/recovery.hpp"
#include "ringbus/error.hpp"

namespace ringbus {
namespace {

// Copies `words` 8-byte words that a producer of a later lap may be overwriting. The
// copy is validated afterwards (the tail must not have passed the record's bytes), as
// in a seqlock; the racing reads are relaxed atomics, which ThreadSanitizer cannot
// pair with the producer's plain stores, hence the attribute.
__attribute__((no_sanitize("thread"))) void racy_copy(std::uint64_t* dst, const std::uint64_t* src,
                                                      std::uint64_t words) noexcept {
  for (std::uint64_t i = 0; i < words; ++i) {
    dst[i] = std::atomic_ref<const std::uint64_t>(src[i]).load(std::memory_order_relaxed);
  }
}

// Calls fn(cursor) for each worker cursor of each active group that is a valid
// position: every one is a record boundary (shared memory: checked, counts clamped).
template <class Fn>
void for_each_cursor(const detail::SegmentRefs& r, Fn&& fn) {
  for (std::uint32_t g = 0; g < r.max_groups; ++g) {
    if (layout::owner::state(r.groups[g].state.load(std::memory_order_acquire)) != layout::owner::active) continue;
    const std::uint64_t n =
        std::clamp<std::uint64_t>(r.groups[g].workers.load(std::memory_order_acquire), 1, layout::kMaxWorkers);
    for (std::uint64_t w = 0; w < n; ++w) {
      const std::uint64_t c = r.groups[g].worker[w].cursor.load(std::memory_order_acquire);
      if (layout::valid_position(c)) fn(c);
    }
  }
}

}  // namespace

namespace detail {

std::uint64_t record_span(const SegmentRefs& r, std::uint64_t f, std::uint64_t pos) noexcept {
  const std::uint32_t len = frame::length(f);
  if (frame::state(f) == RecordState::padding) {
    return len < kRecordAlign || len % kRecordAlign != 0 || len > r.to_lap_end(pos) ? 0 : len;
  }
  const std::uint64_t bytes = record_bytes(len);
  return len > r.max_event || bytes > r.to_lap_end(pos) ? 0 : bytes;
}

Walk walk_to(const SegmentRefs& r, std::uint64_t from, std::uint64_t position, const std::string& where) {
  std::uint64_t at = from, next = from;
  while (next < position) {
    at = next;
    // Pairs with the release store of the frame by the record's writer.
    const std::uint64_t f = std::atomic_ref<std::uint64_t>(r.record_at(at)->frame).load(std::memory_order_acquire);
    // Not yet committed, overwritten meanwhile or damaged: what follows is unknown.
    if (!frame::ready_for(f, r.lap(at))) return {WalkResult::unknown, at};
    const std::uint64_t bytes = detail::record_span(r, f, at);
    if (bytes == 0) return {WalkResult::unknown, at};
    next = at + bytes;
  }
  if (next != position) {
    throw Error(Errc::invalid_options, where + " is inside the record at " + std::to_string(at) +
                                           "; records start at " + std::to_string(at) + " and " +
                                           std::to_string(next));
  }
  return {WalkResult::record_start, position};
}

}  // namespace detail

TailReader::TailReader(const Segment& s, std::uint64_t pos) : seg_(s), r_(s.refs()), pos_(pos) {
  buf_.resize(r_.max_record / 8 + 1);
}

TailReader TailReader::open(const Segment& segment, TailStart from) {
  segment.require_open("open a tail reader");
  const detail::SegmentRefs& r = segment.refs();
  TailReader reader(segment, 0);
  const std::uint64_t tail = reader.load_tail();
  if (from == TailStart::end) {
    reader.pos_ = tail;
    return reader;
  }
  // Lap starts are always record boundaries (records never cross the ring's end); so is
  // every group cursor, and everything from the slowest one on is still in the ring.
  std::uint64_t start = tail <= r.capacity ? 0 : (tail >> r.shift) << r.shift;
  for_each_cursor(r, [&](std::uint64_t c) {
    if (c < start && tail - c <= r.capacity) start = c;
  });
  reader.pos_ = start;
  return reader;
}

TailReader TailReader::open_at(const Segment& segment, std::uint64_t position) {
  segment.require_open("open a tail reader");
  const std::string where = "segment " + segment.location().display() + ": position " + std::to_string(position);
  if (!layout::valid_position(position)) {
    throw Error(Errc::invalid_options, where + " is not a record position (8-byte aligned, at most 2^62)");
  }
  TailReader reader(segment, position);
  const std::uint64_t tail = reader.load_tail();
  // A position past the tail names no record yet (a position kept from an older
  // segment of the same name, or a typing error); waiting there would read the
  // current lap's records as if they were its own once the lap tags wrap.
  if (position > tail) {
    throw Error(Errc::invalid_options,
                where + " is beyond the log's tail " + std::to_string(tail) + ": no record starts there");
  }
  // Overwritten (try_next skips to the oldest lap and counts the bytes) or the tail.
  if (tail - position >= reader.r_.capacity || position == tail) return reader;
  // Still in the ring: walk from the nearest record boundary known at or before it to
  // check that a record starts there. A position inside a record would otherwise wait
  // forever on a word that is no frame. Known boundaries: 0 while nothing is
  // overwritten, the tail's lap start, and group cursors (the only ones in the lap before).
  const detail::SegmentRefs& r = reader.r_;
  const std::uint64_t lap_start = (tail >> r.shift) << r.shift;
  std::optional<std::uint64_t> from;
  if (tail <= r.capacity) from = 0;
  if (lap_start <= position) from = lap_start;
  for_each_cursor(r, [&](std::uint64_t c) {
    if (c <= position && tail - c < r.capacity && (!from || c > *from)) from = c;
  });
  // Beyond the walk's reach the position is taken on trust: try_next still checks the
  // position each record's header names.
  if (!from || position - *from > detail::kMaxWalkBytes) return reader;
  (void)detail::walk_to(r, *from, position, where);  // a record start, or unknown: try_next checks
  return reader;
}

std::uint64_t TailReader::load_tail() const {
  const std::uint64_t tail = r_.control->tail.load(std::memory_order_acquire);
  if (!layout::valid_position(tail)) [[unlikely]] {
    throw Error(Errc::corrupt, "segment " + seg_.location().display() + ": tail " + std::to_string(tail) +
                                   " is not a record position");
  }
  return tail;
}

// Positions are at most kMaxPosition (checked), so `pos + capacity` does not overflow
// and a resync always moves forward.
bool TailReader::resync_if_lapped(std::uint64_t pos) {
  const std::uint64_t tail = load_tail();
  if (tail <= pos + r_.capacity) return false;
  const std::uint64_t lap_start = (tail >> r_.shift) << r_.shift;
  const std::uint64_t to = std::max(lap_start, pos_);
  missed_bytes_ += to - pos_;
  pos_ = to;
  ++resyncs_;
  return true;
}

bool TailReader::repair_if_held(std::uint64_t pos) {
  if (load_tail() <= pos) {  // nothing claimed there yet: the end of the log
    held_pos_ = layout::kNoPosition;
    return false;
  }
  const std::uint64_t now = detail::monotonic_ns();
  held_checked_ns_ = now;
  if (held_pos_ != pos) {
    held_pos_ = pos;
    held_since_ns_ = now;
    return false;
  }
  constexpr auto kAfterNs = static_cast<std::uint64_t>(std::chrono::nanoseconds(kUnblockAfter).count());
  if (now - held_since_ns_ < kAfterNs || now - unblock_tried_ns_ < 1'000'000 || seg_.read_only()) return false;
  unblock_tried_ns_ = now;
  if (!detail::unblock(r_, pos)) return false;
  detail::note_stall_ended(r_, now - held_since_ns_);
  held_pos_ = layout::kNoPosition;
  return true;
}

std::optional<std::chrono::nanoseconds> TailReader::held_at_claim() const noexcept {
  if (held_pos_ != pos_) return std::nullopt;
  return std::chrono::nanoseconds(held_checked_ns_ - held_since_ns_);
}

bool TailReader::try_next(Event& out) {
  for (;;) {
    const std::uint64_t pos = pos_;
    RecordHeader* h = r_.record_at(pos);
    // Pairs with the release store of the frame by the record's writer.
    const std::uint64_t f = std::atomic_ref<std::uint64_t>(h->frame).load(std::memory_order_acquire);
    if (!frame::ready_for(f, r_.lap(pos))) {
      if (resync_if_lapped(pos)) continue;
      if (repair_if_held(pos)) continue;
      return false;
    }
    held_pos_ = layout::kNoPosition;
    const RecordState state = frame::state(f);
    const std::uint32_t len = frame::length(f);
    const std::uint64_t bytes = detail::record_span(r_, f, pos);
    if (bytes == 0) {
      if (resync_if_lapped(pos)) continue;
      throw Error(Errc::corrupt, "segment " + seg_.location().display() + ": at position " + std::to_string(pos) +
                                     ": record whose length does not fit the ring");
    }
    if (state == RecordState::padding) {
      pos_ = pos + bytes;
      continue;
    }
    racy_copy(buf_.data(), reinterpret_cast<const std::uint64_t*>(h), bytes / 8);
    // Seqlock validation: pairs with the release fence after the tail CAS in
    // Producer::claim_impl. If no claim reached our bytes, the copy is whole.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (resync_if_lapped(pos)) continue;
    const auto* copy = reinterpret_cast<const RecordHeader*>(buf_.data());
    if (copy->position != pos) {
      throw Error(Errc::corrupt, "segment " + seg_.location().display() + ": at position " + std::to_string(pos) +
                                     ": record says it is at position " + std::to_string(copy->position));
    }
    pos_ = pos + bytes;
    // A void used its producer's producer_seq too: passed over, it is no gap. A gap
    // with no resync since the producer's last event is a jump the producer made
    // (first_seq), not events overwritten.
    auto [it, inserted] = last_seq_.try_emplace(copy->producer_id, Seen{copy->producer_seq, resyncs_});
    if (!inserted) {
      Seen& seen = it->second;
      if (copy->producer_seq > seen.seq + 1 && seen.resyncs != resyncs_) missed_ += copy->producer_seq - seen.seq - 1;
      seen.seq = std::max(seen.seq, copy->producer_seq);
      seen.resyncs = resyncs_;
    }
    if (state == RecordState::void_) {
      ++voids_;
      continue;
    }
    out = Event(copy, pos, len);
    return true;
  }
}

}  // namespace ringbus
