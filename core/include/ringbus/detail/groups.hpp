// Finding consumer groups by name in a segment (shared by consumer groups, dead-letter
// rings and stats), and slots their registrant died in (shared with producers).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ringbus/segment.hpp"

namespace ringbus::detail {

inline constexpr std::uint32_t kNoGroup = ~0u;

// The zero-terminated name of group slot `g`, read word by word.
std::string group_name(const layout::GroupSlot& g);

// Index of the active group called `name`, or kNoGroup. Sets `*pending` when a live
// process is registering a group of that name right now.
std::uint32_t find_group(const SegmentRefs& r, std::string_view name, bool* pending = nullptr);

// How long a join waits for another live process registering the same name. A
// registration takes microseconds; only damaged memory naming a live process lasts this.
inline constexpr std::uint64_t kRegistrationWaitNs = 2'000'000'000;

// True if `state` (just read from slot `g`) is `registering` by a process that is dead.
// Then the dead registrant's start time is cleared, ready for the caller's CAS from
// `state` to free or to its own registration: before the CAS, never after (DESIGN.md
// section 6).
bool forget_dead_registrant(layout::GroupSlot& g, std::uint64_t state) noexcept;

}  // namespace ringbus::detail
