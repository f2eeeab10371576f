// How the latency scenarios publish a ringbus event: claim, copy, commit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ringbus/producer.hpp"
#include "ringbus/status.hpp"

namespace ringbus::bench {

// Ends the process with exit status 1 after a message naming `s` and the event's size.
[[noreturn]] void claim_refused_for_good(Status s, std::size_t bytes) noexcept;

// Publishes the bytes of `message` under `key` (type 1). A full ring is retried: a
// latency run's consumer always catches up. Any other refusal is one no retry can cure,
// and ends the process: a latency run must end, not spin on it forever.
template <class T>
void publish_copy(Producer& p, std::uint64_t key, const T& message) {
  static_assert(std::is_trivially_copyable_v<T>);
  constexpr std::size_t kBytes = sizeof(T);
  Claim c;
  for (Status s = p.try_claim(key, 1, kBytes, c); s != Status::ok; s = p.try_claim(key, 1, kBytes, c)) {
    if (s != Status::full) [[unlikely]] claim_refused_for_good(s, kBytes);
  }
  std::memcpy(c.payload().data(), &message, kBytes);
  c.commit();
}

}  // namespace ringbus::bench
