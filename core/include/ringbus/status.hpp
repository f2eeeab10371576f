// Result codes of the non-throwing calls on the publish and consume paths.
#pragma once

#include <cstdint>
#include <string_view>

namespace ringbus {

// What a try_/blocking call on a hot path did. Never a bool: `full` (back-pressure,
// try again later) must stay distinguishable from a refusal that will not change.
enum class Status : std::uint8_t {
  ok,         // claimed, published or committed
  full,       // a gating consumer group has not consumed far enough; retry later
  too_large,  // the payload is larger than max_event, or a batch than capacity/4 bytes
  conflict,   // publish_expected: the key's last key_seq is not the expected one
  keys_full,  // the key table has no room for a key it has never seen
  busy,       // this producer already has an open claim (one at a time per handle)
  timeout,    // a blocking call reached its deadline
  corrupt,    // shared memory failed validation; nothing was written
  invalid,    // arguments that can never succeed (batch of 0, expected claim without a key), or a
              // Producer not attached (default-constructed, moved from, detached)
  types_full, // publish_envelope: the schema registry has no room for a type it has never seen
  stopped,    // a blocking call gave up its wait: the producer's stop flag was set (ProducerOptions::stop)
  // A blocking call from inside a consumer group's handler would wait for room that only
  // that handler's own worker can make, by moving past the event it is handling: it can
  // never come. Nothing was published (DESIGN.md, "Publishing from a handler").
  would_deadlock,
};

std::string_view to_string(Status s) noexcept;

}  // namespace ringbus
