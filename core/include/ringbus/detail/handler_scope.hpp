// The consumer-group workers polling on this thread, innermost first. A worker's cursor
// cannot move while its handler runs, so a producer that would wait for room in the
// worker's own segment, from inside that handler, behind that cursor, would wait for
// ever. Producer::claim_blocking asks this list and returns Status::would_deadlock
// instead (DESIGN.md, "Publishing from a handler").
#pragma once

#include <atomic>
#include <cstdint>

#include "ringbus/layout.hpp"
#include "ringbus/segment.hpp"

namespace ringbus::detail {

struct HandlerFrame {
  const layout::SegmentHeader* header;        // the worker's segment, as this process mapped it
  const std::atomic<std::uint64_t>* cursor;   // the worker's cursor, which gates producers
  const HandlerFrame* outer;                  // a worker polling around this one (a handler that polls)
};

// Constant-initialised: reading it needs no guard for a thread's first access.
inline constinit thread_local const HandlerFrame* handler_frames = nullptr;

// One segment mapped twice by a process (two Segment::open) or inherited across fork:
// the creation stamps of the header (immutable and checksummed) name the segment.
[[nodiscard]] inline bool same_segment(const layout::SegmentHeader& a, const layout::SegmentHeader& b) noexcept {
  return &a == &b || (a.creator_pid == b.creator_pid && a.creator_start_ticks == b.creator_start_ticks &&
                      a.created_realtime_ns == b.created_realtime_ns && a.total_size == b.total_size);
}

// True if a worker with this cursor is being polled on this thread already: its
// handler polls it again, which would move the cursor under the outer poll.
[[nodiscard]] inline bool polling(const std::atomic<std::uint64_t>& cursor) noexcept {
  for (const HandlerFrame* f = handler_frames; f != nullptr; f = f->outer) {
    if (f->cursor == &cursor) return true;
  }
  return false;
}

// Marks the thread as polling a worker for as long as it lives (Worker::poll,
// poll_batch, poll_redrives).
class HandlerScope {
 public:
  HandlerScope(const SegmentRefs& r, const std::atomic<std::uint64_t>& cursor) noexcept
      : frame_{r.header, &cursor, handler_frames} {
    handler_frames = &frame_;
  }
  ~HandlerScope() { handler_frames = frame_.outer; }
  HandlerScope(const HandlerScope&) = delete;
  HandlerScope& operator=(const HandlerScope&) = delete;

 private:
  HandlerFrame frame_;
};

}  // namespace ringbus::detail
