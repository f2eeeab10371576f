// Repairing what a dead producer left behind: a claimed but uncommitted range of the
// log (a "hole" readers would wait on forever) and a key latch it still holds.
// DESIGN.md, "When a process dies mid-publish", gives the rules; recovery.cpp applies
// them. Every step is idempotent, so a recoverer that dies is simply replaced.
#pragma once

#include <cstdint>

#include "ringbus/segment.hpp"

namespace ringbus::detail {

// True when the process named by an owner word (and its recorded start time) is
// known to be dead. Unknown liveness counts as alive.
bool owner_dead(std::uint64_t owner_word, std::uint64_t owner_start) noexcept;

// Repairs producer slot `slot` if its owner is dead: pads or voids its claim, releases
// its latch and leaves the slot detached. Returns true when the slot no longer holds
// anything (repaired now, or nothing to repair); false if its owner is alive or the
// claim's fate cannot be decided yet (try again later).
bool recover_producer(const SegmentRefs& r, std::uint32_t slot) noexcept;

// A reader is stuck at `pos` (frame not there although the tail is past it). Finds the
// claimant; if it is dead, repairs it. Returns true if the frame at `pos` is now there.
bool unblock(const SegmentRefs& r, std::uint64_t pos) noexcept;

// A reader's stall of `ns` ended by recovery: kept in the control block's
// longest_stall_ns if it is the longest.
void note_stall_ended(const SegmentRefs& r, std::uint64_t ns) noexcept;

// Writes a void record at `pos` (header, then frame with release order).
void write_void(const SegmentRefs& r, std::uint64_t pos, std::uint64_t key, std::uint64_t key_seq,
                std::uint16_t flags, std::uint32_t producer_id, std::uint64_t producer_seq, std::uint16_t type,
                std::uint32_t len) noexcept;

}  // namespace ringbus::detail
