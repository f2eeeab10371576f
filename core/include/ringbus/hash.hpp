// Stable hashes. Their values are part of the on-disk contract: the key table and the
// key-to-worker routing depend on them, so they never change within a major version.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringbus {

// Finaliser of SplitMix64: a bijection on 64-bit values with full avalanche.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// FNV-1a, 64-bit: for header checksums and for turning string keys into 64-bit keys.
constexpr std::uint64_t fnv1a(const void* data, std::size_t n,
                              std::uint64_t h = 0xcbf29ce484222325ull) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

// The 64-bit key of a string key. Never 0 (0 means "unkeyed").
constexpr std::uint64_t key_of(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  h = mix64(h);
  return h == 0 ? 1 : h;
}

// Worker of a group with `workers` workers that handles `key` (or, for unkeyed
// events, `producer_id`, which keeps each producer's unkeyed events in order).
constexpr std::uint32_t route(std::uint64_t key, std::uint32_t producer_id, std::uint32_t workers) noexcept {
  const std::uint64_t h = mix64(key != 0 ? key : (std::uint64_t{producer_id} | (std::uint64_t{1} << 63)));
  return static_cast<std::uint32_t>(((h >> 32) * workers) >> 32);  // high bits: independent of the key table index
}

static_assert(mix64(0) == 0, "mix64 is a bijection fixing 0");
static_assert(key_of("") != 0);

}  // namespace ringbus
