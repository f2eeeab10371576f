// TailReader: a non-gating reader. Producers never wait for it; when it falls more
// than a lap behind, the records it has not read are overwritten, and it says how many
// it missed. It copies each record out (validating afterwards that no producer reused
// the bytes while it copied), so the Event it returns stays valid until the next call.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "ringbus/event.hpp"
#include "ringbus/segment.hpp"

namespace ringbus {

enum class TailStart : std::uint8_t {
  earliest,  // the oldest record boundary still in the ring
  end,       // the tail: only events published from now on
};

class TailReader {
 public:
  static TailReader open(const Segment& segment, TailStart from = TailStart::end);
  // Starts at `position`, which must be a record boundary (e.g. an Event::position())
  // or the tail. Error(invalid_options) for a position that is misaligned, beyond the
  // tail, or inside a record: checked by walking the records from the nearest boundary
  // known before it (the tail's lap start or a group cursor, within 256 MiB) as far as
  // they are committed. An overwritten position is accepted: try_next skips ahead.
  static TailReader open_at(const Segment& segment, std::uint64_t position);

  // Copies the next event (skipping padding and void records); false if none is ready.
  // Throws Error(corrupt) for a record that cannot be valid. A record claimed but not
  // committed (the tail is past it) is waited for; once this reader has waited
  // kUnblockAfter at it, it repairs the claim if its producer died (padding or a void
  // record, DESIGN.md section 9), as a stalled worker does. A reader of a segment
  // opened read-only cannot repair, and waits.
  [[nodiscard]] bool try_next(Event& out);
  // A worker's default unblock_after (ConsumerOptions).
  static constexpr std::chrono::milliseconds kUnblockAfter{100};
  // How long the reader has been waiting, as of the last try_next, at a record claimed
  // but not committed; nullopt if it is not waiting at one (the next record is there,
  // or not claimed yet: the end of the log).
  [[nodiscard]] std::optional<std::chrono::nanoseconds> held_at_claim() const noexcept;

  // Position of the next record to read.
  [[nodiscard]] std::uint64_t position() const noexcept { return pos_; }
  // Events overwritten before this reader read them: gaps in each producer's
  // producer_seq between two of its events this reader saw with a resync between them.
  // Without one, nothing was overwritten: the producer re-attached with a larger
  // first_seq, and the gap is not counted.
  [[nodiscard]] std::uint64_t missed() const noexcept { return missed_; }
  // Bytes of the log skipped because they were overwritten (exact).
  [[nodiscard]] std::uint64_t missed_bytes() const noexcept { return missed_bytes_; }
  // Times the reader found itself lapped and jumped forward.
  [[nodiscard]] std::uint64_t resyncs() const noexcept { return resyncs_; }
  // Void records (lost events) passed over.
  [[nodiscard]] std::uint64_t voids() const noexcept { return voids_; }

 private:
  explicit TailReader(const Segment& s, std::uint64_t pos);
  // If the tail is more than a ring ahead of `pos`, skips to the oldest lap still in
  // the ring, counts what was missed and returns true.
  bool resync_if_lapped(std::uint64_t pos);
  // The record at `pos` has not come: notes since when the tail is past it, and after
  // kUnblockAfter repairs a dead producer's claim (detail::unblock, at most once a
  // millisecond: it reads every producer's journal). True if the record is there now.
  bool repair_if_held(std::uint64_t pos);
  // The tail, checked: shared memory may hold anything (Error(corrupt)).
  std::uint64_t load_tail() const;

  Segment seg_;
  detail::SegmentRefs r_{};
  std::uint64_t pos_ = 0;
  std::uint64_t missed_ = 0;
  std::uint64_t missed_bytes_ = 0;
  std::uint64_t resyncs_ = 0;
  std::uint64_t voids_ = 0;
  std::uint64_t held_pos_ = layout::kNoPosition;  // the claim waited at, or none
  std::uint64_t held_since_ns_ = 0;
  std::uint64_t held_checked_ns_ = 0;  // the last try_next that found it still held
  std::uint64_t unblock_tried_ns_ = 0;
  std::vector<std::uint64_t> buf_;  // header + payload, 8-byte aligned
  // Per producer id: the highest producer_seq seen, and resyncs_ then.
  struct Seen {
    std::uint64_t seq;
    std::uint64_t resyncs;
  };
  std::unordered_map<std::uint32_t, Seen> last_seq_;
};

}  // namespace ringbus
