// The key table: open addressing (linear probing) on the 64-bit key, in the segment.
// Entries are inserted by CAS on the key word and never removed: a key's last
// key_seq must survive as long as the segment does. DESIGN.md, "Per-key sequencing".
#pragma once

#include <atomic>
#include <cstdint>

#include "ringbus/hash.hpp"
#include "ringbus/segment.hpp"

namespace ringbus::detail {

inline constexpr std::uint64_t kNoEntry = ~std::uint64_t{0};
// A key not found within this many probes is refused with Status::keys_full: a claim
// reads at most 64 lines of the table. The bound, not the table, fills first: the first
// refusal comes at 78-84% occupancy in large tables (DESIGN.md, "When the table fills").
inline constexpr std::uint32_t kMaxProbe = 256;

// Index of `key`'s entry, inserting it if it is new; kNoEntry if there is no room.
inline std::uint64_t find_or_insert_key(const SegmentRefs& r, std::uint64_t key) noexcept {
  std::uint64_t i = mix64(key) & r.key_mask;
  const std::uint64_t probes = r.key_mask + 1 < kMaxProbe ? r.key_mask + 1 : kMaxProbe;
  for (std::uint64_t n = 0; n < probes; ++n, i = (i + 1) & r.key_mask) {
    layout::KeyEntry& e = r.keys[i];
    std::uint64_t k = e.key.load(std::memory_order_acquire);  // pairs with the insert CAS below
    if (k == key) return i;
    if (k == 0) {
      if (e.key.compare_exchange_strong(k, key, std::memory_order_acq_rel, std::memory_order_acquire)) {
        r.control->keys_used.fetch_add(1, std::memory_order_relaxed);
        return i;
      }
      if (k == key) return i;  // another producer inserted the same key first
    }
  }
  return kNoEntry;
}

// Index of `key`'s entry if present (no insert); kNoEntry otherwise.
inline std::uint64_t find_key(const SegmentRefs& r, std::uint64_t key) noexcept {
  std::uint64_t i = mix64(key) & r.key_mask;
  const std::uint64_t probes = r.key_mask + 1 < kMaxProbe ? r.key_mask + 1 : kMaxProbe;
  for (std::uint64_t n = 0; n < probes; ++n, i = (i + 1) & r.key_mask) {
    const std::uint64_t k = r.keys[i].key.load(std::memory_order_acquire);
    if (k == key) return i;
    if (k == 0) return kNoEntry;
  }
  return kNoEntry;
}

}  // namespace ringbus::detail
