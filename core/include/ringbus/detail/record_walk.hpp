// Checking that a position is where a record starts, by walking the committed records
// from a boundary known before it (shared by TailReader::open_at and
// ConsumerGroup::skip_to), and a record's bounded size (shared with read_stats).
#pragma once

#include <cstdint>
#include <string>

#include "ringbus/segment.hpp"

namespace ringbus::detail {

// How far a position is checked from a known boundary: one frame read a record, a few
// tens of milliseconds at most. A walk runs under the group registration lock in
// ConsumerGroup::skip_to, far from the seconds after which that lock counts as stale.
inline constexpr std::uint64_t kMaxWalkBytes = std::uint64_t{256} << 20;

enum class WalkResult : std::uint8_t {
  record_start,  // the records walked from `from` end exactly at the position
  unknown,       // a record on the way is not committed, was overwritten meanwhile, or is damaged
};

struct Walk {
  WalkResult result;
  std::uint64_t stopped_at;  // unknown: the position of the record the walk could not pass
};

// Bytes the record with frame `f` (a record of pos's lap) at `pos` occupies, or 0 when
// its length cannot fit (damaged memory: shared memory is untrusted).
std::uint64_t record_span(const SegmentRefs& r, std::uint64_t f, std::uint64_t pos) noexcept;

// Walks from `from`, a record boundary no later than `position` and still in the ring,
// one frame read a record. Throws Error(invalid_options), `where` + " is inside the
// record at A; records start at A and B", when a record spans `position`.
Walk walk_to(const SegmentRefs& r, std::uint64_t from, std::uint64_t position, const std::string& where);

}  // namespace ringbus::detail
