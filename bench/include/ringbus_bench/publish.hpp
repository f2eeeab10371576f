// How the latency scenarios publish a ringbus event: claim, copy, commit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ringbus/producer.hpp"
#include "ringbus/status.hpp"

namespace ringbus::bench {

// Ends the process with exit status 1 after a message naming `s` and the event's size.
[[noreturn]] void claim_refused_for_good(Status s, std::size_t bytes) noexcept;

// Publishes the N bytes at `data` under `key` (type 1). A full ring is retried: a
// latency run's consumer always catches up. Any other refusal is one no retry can cure,
// and ends the process: a latency run must end, not spin on it forever.
template <std::size_t N>
void publish_copy(Producer& p, std::uint64_t key, const void* data) {
  Claim c;
  for (Status s = p.try_claim(key, 1, N, c); s != Status::ok; s = p.try_claim(key, 1, N, c)) {
    if (s != Status::full) [[unlikely]] claim_refused_for_good(s, N);
  }
  std::memcpy(c.payload().data(), data, N);
  c.commit();
}

}  // namespace ringbus::bench
