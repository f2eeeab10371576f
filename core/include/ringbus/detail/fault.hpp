// Fault-injection points, compiled in only when RINGBUS_FAULT_INJECTION is defined
// (the ringbus::core_faults library used by the crash tests). A test installs a hook
// that may kill the process at a given point of the claim/commit protocol.
#pragma once

#include <cstdint>

namespace ringbus::detail {

enum class FaultPoint : std::uint8_t {
  after_latch,        // key latch held, tail not claimed
  after_tail_cas,     // tail claimed, journal says claiming
  after_journal,      // journal says claimed, padding and latch release pending
  after_unlatch,      // key_seq assigned and published, record not committed
  before_frame,       // header written, frame not stored
  after_commit,       // frame stored, journal not yet idle
  in_consumer,        // a consumer between handling an event and storing its cursor
  in_join,            // a join that found its group, its worker slots not yet taken
  in_redrive_failure, // a redelivery's failed call counted (kDlqWaiting set), under the
                      // dead-letter ring's lock, the next call's time not yet written
  after_dead_letter,  // a worker parked an event in the dead-letter ring, its cursor not yet past it
  count_,
};

using FaultHook = void (*)(FaultPoint) noexcept;

#if defined(RINGBUS_FAULT_INJECTION)
extern FaultHook fault_hook;
#define RINGBUS_FAULT_POINT(point)                                              \
  do {                                                                          \
    if (::ringbus::detail::fault_hook != nullptr)                               \
      ::ringbus::detail::fault_hook(::ringbus::detail::FaultPoint::point);      \
  } while (0)
#else
#define RINGBUS_FAULT_POINT(point) \
  do {                             \
  } while (0)
#endif

}  // namespace ringbus::detail
