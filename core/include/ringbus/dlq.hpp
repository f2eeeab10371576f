// Dead letters: events a consumer group's handler failed on `max_attempts` times,
// parked in the group's dead-letter ring in the segment with the error, the attempts
// and the failure times. Nothing is dropped: when the ring is full the worker waits
// (the group holds its cursor, producers feel back-pressure) and a counter says so.
//
// Tools list, show, redrive and purge entries (`ringbus dlq`). Redrive either marks
// entries for redelivery by the group's own workers (the worker their key routes to
// hands them to the handler again, with Event::redriven(), under the group's retry
// policy; an entry is removed only once the handler accepts it), or republishes them
// into the log for every group.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringbus/layout.hpp"
#include "ringbus/record.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/status.hpp"

namespace ringbus {

class Producer;

// A copy of one dead letter.
struct DeadLetter {
  std::uint64_t id = 0;
  std::string state;  // ready, redrive, delivering
  std::uint64_t position = 0;  // where the event was in the log
  std::uint32_t attempts = 0;  // failed handler calls, redrives' included
  std::uint32_t worker = 0;
  std::uint64_t first_failure_ns = 0;
  std::uint64_t last_failure_ns = 0;
  // While the worker redelivering it waits between two handler calls (state
  // `delivering`), the wall clock time of its next call; else 0.
  std::uint64_t next_attempt_ns = 0;
  std::string message;
  RecordHeader header{};  // the event's header as it was in the log (frame word included)
  std::vector<std::byte> payload;
};

struct DeadLetterStats {
  std::uint64_t entries = 0;
  std::uint64_t bytes_used = 0;
  std::uint64_t capacity = 0;
  std::uint64_t appended = 0;
  std::uint64_t removed = 0;
  std::uint64_t full_waits = 0;
};

class DeadLetters {
 public:
  // The dead-letter ring of registered group `group`. Throws Error(not_found) if there is
  // no such group or the segment was created without dead-letter rings. Every call
  // below throws Error(not_found) once the group is removed (ConsumerGroup::remove):
  // its slot, and the ring with it, may belong to another group since.
  static DeadLetters open(const Segment& segment, std::string_view group);

  // Every entry not removed, oldest first. Shared memory is checked: a ring whose bounds
  // or an entry's size or lengths are damaged throws Error(corrupt) naming the ring
  // position and what is wrong, and so do get(), which reads through it, and republish().
  // The ring is left as it is; workers, request_redrive(), remove() and purge() stop at
  // the damage.
  [[nodiscard]] std::vector<DeadLetter> list() const;
  [[nodiscard]] std::optional<DeadLetter> get(std::uint64_t id) const;
  [[nodiscard]] DeadLetterStats stats() const;

  // Marks one entry (or all, with no id) for redelivery by the group's workers.
  // Returns how many were marked.
  std::size_t request_redrive(std::optional<std::uint64_t> id = std::nullopt);
  // Republishes one entry (or all) into the log through `producer` (attached to this
  // segment: another's throws Error(invalid_options)), with the original key, type,
  // schema version, correlation id, timestamp and payload, flag `redriven`; each entry
  // is removed once its event is accepted. Returns how many were republished; stops at
  // the first refusal (e.g. Status::full) and reports it in `last_status`.
  std::size_t republish(Producer& producer, std::optional<std::uint64_t> id = std::nullopt,
                        Status* last_status = nullptr);
  // Removes one entry. False if there is none with that id (or a worker is delivering it).
  bool remove(std::uint64_t id);
  // Removes every entry that no worker is delivering. Returns how many.
  std::size_t purge();

  [[nodiscard]] const std::string& group() const noexcept { return group_; }

 private:
  DeadLetters(Segment s, std::string group, std::uint32_t slot, std::uint64_t registered_ns)
      : seg_(std::move(s)), group_(std::move(group)), slot_(slot), registered_ns_(registered_ns) {}
  // Throws Error(not_found) unless the slot still holds the registration this handle opened.
  void check_registered() const;
  // Throws Error(invalid_options) for a handle moved from (it has no segment).
  void require_handle() const;
  Segment seg_;
  std::string group_;
  std::uint32_t slot_ = 0;
  std::uint64_t registered_ns_ = 0;  // GroupSlot::created_ns of that registration
};

namespace detail {

// Appends a dead letter for `record` (its header and payload_len bytes of payload) to
// group `g`'s ring. Status::full when there is no room (nothing written).
Status dlq_append(const SegmentRefs& r, std::uint32_t g, const RecordHeader& record, std::uint32_t payload_len,
                  std::uint64_t position, std::uint32_t attempts, std::uint32_t worker, std::uint64_t first_failure_ns,
                  std::string_view message) noexcept;

// The entry marked for redelivery whose record routes to worker `w` of `workers`, now
// taken (state delivering); nullptr if none.
layout::DlqEntry* dlq_take_redrive(const SegmentRefs& r, std::uint32_t g, std::uint32_t w,
                                   std::uint32_t workers) noexcept;
// A worker's redelivery of a taken entry, written to the entry as it goes (under the
// ring's lock, which every reader of an entry's fields holds), so that a tool shows it
// and a death loses none of it. A handler call failed and another is to come at wall
// clock time `next_attempt_ns` (one more attempt, the failure time, the time of the
// next call: the worker waits).
void dlq_redrive_failed_call(const SegmentRefs& r, std::uint32_t g, layout::DlqEntry* e,
                             std::uint64_t next_attempt_ns) noexcept;
// The next handler call begins (the worker no longer waits).
void dlq_redrive_call(const SegmentRefs& r, std::uint32_t g, layout::DlqEntry* e) noexcept;
// How it ends: the handler accepted it (removed), the last call the retry policy allows
// failed (one more attempt, back to `ready`), or the worker let go of it while it waited
// for a deferred call (back to `redrive`, announced, for the next worker of the group).
enum class RedriveEnd : std::uint8_t { accepted, failed, given_back };
void dlq_finish_redrive(const SegmentRefs& r, std::uint32_t g, layout::DlqEntry* e, RedriveEnd end) noexcept;
// Entries left `delivering` by a worker whose process died during the delivery go back
// to `redrive`: the next worker delivers them again. One cut short in a handler call
// counts one more attempt; one that waited for its next call had its failed calls
// counted already. Called by ConsumerGroup::join once it holds every worker slot of
// group `g`, when no live process can be delivering one. Returns how many.
std::size_t dlq_resume_deliveries(const SegmentRefs& r, std::uint32_t g) noexcept;

// The log positions in [from, until) of group `g`'s dead letters (removed ones aside),
// sorted: a joining worker's redelivery window holds events its previous owner parked
// before its cursor passed them, which are not delivered again.
std::vector<std::uint64_t> dlq_positions(const SegmentRefs& r, std::uint32_t g, std::uint64_t from,
                                         std::uint64_t until);

inline const RecordHeader* dlq_record(const layout::DlqEntry* e) noexcept {
  return reinterpret_cast<const RecordHeader*>(reinterpret_cast<const std::byte*>(e) + sizeof(layout::DlqEntry));
}

}  // namespace detail
}  // namespace ringbus
