// Finding consumer groups by name in a segment (shared by consumer groups, dead-letter
// rings and stats).
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

}  // namespace ringbus::detail
