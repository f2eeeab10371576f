// Dead-letter rings. DESIGN.md, "Retries and dead letters".
//
// Structure changes (append, reclaiming space at the head, purge, listing) happen under
// the ring's lock (detail/robust_lock.hpp). Entry states move by CAS outside the lock
// (ready -> redrive -> delivering -> ready | removed). An entry's fields are written
// before its state word (release) and read after it (acquire).
#include "ringbus/dlq.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "ringbus/detail/fault.hpp"
#include "ringbus/detail/groups.hpp"
#include "ringbus/detail/handler_scope.hpp"
#include "ringbus/detail/robust_lock.hpp"
#include "ringbus/detail/sync.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/error.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/producer.hpp"

namespace ringbus {
namespace detail {
namespace {

using layout::DlqControl;
using layout::DlqEntry;
namespace st = layout::dlq_state;

class RingLock {
 public:
  explicit RingLock(DlqControl& c) noexcept : lock_(c.lock, c.lock_start) {}

 private:
  RobustLock lock_;
};

struct Ring {
  DlqControl& c;
  std::byte* base;
  std::uint64_t cap;
  DlqEntry* at(std::uint64_t pos) const noexcept { return reinterpret_cast<DlqEntry*>(base + (pos & (cap - 1))); }
};

Ring ring_of(const SegmentRefs& r, std::uint32_t g) { return {*r.dlq_control(g), r.dlq_ring(g), r.dlq_capacity}; }

// Tells the group's workers that entries are marked `redrive`: a worker that sees the
// bump (acquire) sees the marks. A parked worker is woken for them (the bump of data_seq
// ends a park, and its wait checks redrive_requests), as for a stop: a redrive on a quiet
// log is not left for the park's timeout.
void announce_redrives(const SegmentRefs& r, const Ring& ring) noexcept {
  ring.c.redrive_requests.fetch_add(1, std::memory_order_release);
  wake_all(r.control->data_seq);
}

// Where a walk stopped: at `tail`, where f asked, or (damaged) at the first entry that
// cannot be valid, the ring then being treated as ending there.
struct WalkEnd {
  bool damaged = false;
  std::uint64_t at = 0;    // ring position of the damaged entry (head if the bounds are damaged)
  std::uint64_t word = 0;  // its state word
};

bool valid_bounds(const Ring& ring, std::uint64_t head, std::uint64_t tail) noexcept {
  return tail >= head && tail - head <= ring.cap && head % 8 == 0 && tail % 8 == 0;
}

// Walks [head, tail) calling f(entry, pos, state_word); f returns false to stop. An
// entry's size must be a multiple of 8 that ends before the ring's end and the tail and
// holds at least an entry (a filler, 8 bytes): shared memory is checked.
template <class F>
WalkEnd walk(const Ring& ring, std::uint64_t head, std::uint64_t tail, F&& f) {
  if (!valid_bounds(ring, head, tail)) return {true, head, 0};
  for (std::uint64_t pos = head; pos < tail;) {
    DlqEntry* e = ring.at(pos);
    const std::uint64_t w = e->state_bytes.load(std::memory_order_acquire);
    const std::uint64_t bytes = st::bytes(w);
    const std::uint64_t to_end = ring.cap - (pos & (ring.cap - 1));
    const bool skip = st::state(w) == st::skip;
    if (bytes % 8 != 0 || bytes > to_end || bytes > tail - pos || (skip ? bytes < 8 : bytes < sizeof(DlqEntry))) {
      return {true, pos, w};
    }
    if (!skip && !f(e, pos, w)) return {false, pos, w};
    pos += bytes;
  }
  return {false, tail, 0};
}

// Frees removed entries (and fillers) at the head. Under the lock.
void reclaim(const Ring& ring) noexcept {
  std::uint64_t head = ring.c.head.load(std::memory_order_relaxed);
  const std::uint64_t tail = ring.c.tail.load(std::memory_order_relaxed);
  if (!valid_bounds(ring, head, tail)) return;
  while (head < tail) {
    const std::uint64_t w = ring.at(head)->state_bytes.load(std::memory_order_acquire);
    const std::uint64_t s = st::state(w);
    const std::uint64_t bytes = st::bytes(w);
    if ((s != st::removed && s != st::skip) || bytes == 0 || bytes % 8 != 0 || bytes > tail - head) break;
    head += bytes;
  }
  ring.c.head.store(head, std::memory_order_release);
}

bool valid_entry(const Ring& ring, const DlqEntry* e, std::uint64_t bytes) noexcept {
  return e->payload_len <= kMaxPayload && e->message_len <= layout::kMaxDlqMessage &&
         layout::dlq_entry_bytes(e->payload_len, e->message_len) == bytes && bytes <= ring.cap;
}

// A copy of entry `e` (state word `w`), whose fields valid_entry accepted.
DeadLetter copy_out(const DlqEntry* e, std::uint64_t w) {
  DeadLetter d;
  d.id = e->id;
  switch (st::state(w)) {
    case st::ready: d.state = "ready"; break;
    case st::redrive: d.state = "redrive"; break;
    case st::delivering: d.state = "delivering"; break;
    default: d.state = "other"; break;
  }
  d.position = e->position;
  d.attempts = e->attempts & ~layout::kDlqWaiting;
  d.worker = e->worker;
  d.first_failure_ns = e->first_failure_ns;
  d.last_failure_ns = e->last_failure_ns;
  d.next_attempt_ns =
      st::state(w) == st::delivering && (e->attempts & layout::kDlqWaiting) != 0 ? e->next_attempt_ns : 0;
  std::memcpy(&d.header, dlq_record(e), sizeof(RecordHeader));
  const auto* payload = reinterpret_cast<const std::byte*>(dlq_record(e)) + kRecordHeaderSize;
  d.payload.assign(payload, payload + e->payload_len);
  const auto* msg = reinterpret_cast<const char*>(dlq_record(e)) + record_bytes(e->payload_len);
  d.message.assign(msg, e->message_len);
  return d;
}

// Under the lock: throws Error(corrupt), `where` and what is damaged, unless every entry
// from head to tail that is not removed is valid (walk and valid_entry), so that the
// walks of list() and republish() after it read no entry that is not.
void check_ring(const Ring& ring, const std::string& where) {
  const std::uint64_t head = ring.c.head.load(std::memory_order_relaxed);
  const std::uint64_t tail = ring.c.tail.load(std::memory_order_relaxed);
  std::string damage;
  const WalkEnd end = walk(ring, head, tail, [&](DlqEntry* e, std::uint64_t pos, std::uint64_t w) {
    if (st::state(w) == st::removed || valid_entry(ring, e, st::bytes(w))) return true;
    damage = "the entry at ring position " + std::to_string(pos) + " (id " + std::to_string(e->id) +
             ") holds a payload of " + std::to_string(e->payload_len) + " bytes and a message of " +
             std::to_string(e->message_len) + " bytes, which do not make its " + std::to_string(st::bytes(w)) +
             " bytes";
    return false;
  });
  if (!valid_bounds(ring, head, tail)) {
    damage = "head " + std::to_string(head) + " and tail " + std::to_string(tail) + " cannot bound a ring of " +
             std::to_string(ring.cap) + " bytes";
  } else if (end.damaged) {
    damage = "the entry at ring position " + std::to_string(end.at) + " says it takes " +
             std::to_string(st::bytes(end.word)) + " bytes (head " + std::to_string(head) + ", tail " +
             std::to_string(tail) + ", capacity " + std::to_string(ring.cap) + ")";
  }
  if (!damage.empty()) throw Error(Errc::corrupt, where + ": dead-letter ring damaged: " + damage);
}

void mark_removed(const Ring& ring, DlqEntry* e, std::uint64_t expected_word) {
  std::uint64_t w = expected_word;
  if (e->state_bytes.compare_exchange_strong(w, st::make(st::removed, st::bytes(w)), std::memory_order_acq_rel)) {
    ring.c.entries.fetch_sub(1, std::memory_order_relaxed);
    ring.c.removed.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

Status dlq_append(const SegmentRefs& r, std::uint32_t g, const RecordHeader& record, std::uint32_t payload_len,
                  std::uint64_t position, std::uint32_t attempts, std::uint32_t worker, std::uint64_t first_failure_ns,
                  std::string_view message) noexcept {
  const Ring ring = ring_of(r, g);
  const auto msg_len = static_cast<std::uint32_t>(std::min<std::size_t>(message.size(), layout::kMaxDlqMessage));
  const std::uint64_t size = layout::dlq_entry_bytes(payload_len, msg_len);
  if (size > ring.cap / 2) return Status::too_large;
  RingLock lock(ring.c);
  const std::uint64_t head = ring.c.head.load(std::memory_order_relaxed);
  std::uint64_t tail = ring.c.tail.load(std::memory_order_relaxed);
  if (!valid_bounds(ring, head, tail)) return Status::corrupt;
  const std::uint64_t to_end = ring.cap - (tail & (ring.cap - 1));
  const std::uint64_t filler = to_end < size ? to_end : 0;
  if (tail + filler + size - head > ring.cap) return Status::full;
  if (filler != 0) {
    ring.at(tail)->state_bytes.store(st::make(st::skip, filler), std::memory_order_release);
    tail += filler;
  }
  DlqEntry* e = ring.at(tail);
  e->id = ring.c.next_id.fetch_add(1, std::memory_order_relaxed);
  e->first_failure_ns = first_failure_ns;
  e->last_failure_ns = realtime_ns();
  e->attempts = std::min(attempts, layout::kMaxDlqAttempts);  // bit 31 is kDlqWaiting
  e->worker = worker;
  e->message_len = msg_len;
  e->payload_len = payload_len;
  e->position = position;
  e->next_attempt_ns = 0;
  auto* rec = reinterpret_cast<std::byte*>(e) + sizeof(DlqEntry);
  std::memcpy(rec, &record, kRecordHeaderSize);
  std::memcpy(rec + kRecordHeaderSize, reinterpret_cast<const std::byte*>(&record) + kRecordHeaderSize, payload_len);
  std::memcpy(rec + record_bytes(payload_len), message.data(), msg_len);
  // Publishes the entry: pairs with the acquire loads of readers (walk, list).
  e->state_bytes.store(st::make(st::ready, size), std::memory_order_release);
  ring.c.tail.store(tail + size, std::memory_order_release);
  ring.c.entries.fetch_add(1, std::memory_order_relaxed);
  ring.c.appended.fetch_add(1, std::memory_order_relaxed);
  return Status::ok;
}

DlqEntry* dlq_take_redrive(const SegmentRefs& r, std::uint32_t g, std::uint32_t w, std::uint32_t workers) noexcept {
  const Ring ring = ring_of(r, g);
  DlqEntry* taken = nullptr;
  RingLock lock(ring.c);
  walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
       [&](DlqEntry* e, std::uint64_t, std::uint64_t word) {
         if (st::state(word) != st::redrive || !valid_entry(ring, e, st::bytes(word))) return true;
         const RecordHeader* h = dlq_record(e);
         if (route(h->key, h->producer_id, workers) != w) return true;
         std::uint64_t expected = word;
         if (e->state_bytes.compare_exchange_strong(expected, st::make(st::delivering, st::bytes(word)),
                                                    std::memory_order_acq_rel)) {
           e->attempts &= ~layout::kDlqWaiting;  // (left set by a resume of a library of minor < 5)
           taken = e;
           return false;
         }
         return true;
       });
  return taken;
}

// The fields below are the taking worker's to write, under the lock: a tool may be
// copying the entry out (list, get). The attempts word is written by one store each
// time, so that a death leaves its count and its kDlqWaiting bit in agreement.
namespace {
std::uint32_t one_more(std::uint32_t attempts) noexcept {
  const std::uint32_t n = attempts & ~layout::kDlqWaiting;
  return n < layout::kMaxDlqAttempts ? n + 1 : n;
}
void store_attempts(DlqEntry* e, std::uint32_t attempts) noexcept {
  std::atomic_ref<std::uint32_t>(e->attempts).store(attempts, std::memory_order_relaxed);
}
}  // namespace

void dlq_redrive_failed_call(const SegmentRefs& r, std::uint32_t g, DlqEntry* e,
                             std::uint64_t next_attempt_ns) noexcept {
  const Ring ring = ring_of(r, g);
  RingLock lock(ring.c);
  e->last_failure_ns = realtime_ns();
  // The failed call and the wait, at once: a death after this store counts the call once.
  store_attempts(e, one_more(e->attempts) | layout::kDlqWaiting);
  RINGBUS_FAULT_POINT(in_redrive_failure);
  e->next_attempt_ns = next_attempt_ns;
}

void dlq_redrive_call(const SegmentRefs& r, std::uint32_t g, DlqEntry* e) noexcept {
  const Ring ring = ring_of(r, g);
  RingLock lock(ring.c);
  e->next_attempt_ns = 0;
  store_attempts(e, e->attempts & ~layout::kDlqWaiting);
}

void dlq_finish_redrive(const SegmentRefs& r, std::uint32_t g, DlqEntry* e, RedriveEnd end) noexcept {
  const Ring ring = ring_of(r, g);
  const std::uint64_t w = e->state_bytes.load(std::memory_order_acquire);
  if (end == RedriveEnd::accepted) {
    mark_removed(ring, e, w);
    RingLock lock(ring.c);
    reclaim(ring);
    return;
  }
  {
    RingLock lock(ring.c);
    if (end == RedriveEnd::failed) e->last_failure_ns = realtime_ns();
    store_attempts(e, end == RedriveEnd::failed ? one_more(e->attempts) : e->attempts & ~layout::kDlqWaiting);
    e->next_attempt_ns = 0;
    // Release: the fields above before the state, as everywhere in the ring.
    e->state_bytes.store(st::make(end == RedriveEnd::failed ? st::ready : st::redrive, st::bytes(w)),
                         std::memory_order_release);
  }
  if (end == RedriveEnd::given_back) announce_redrives(r, ring);
}

std::vector<std::uint64_t> dlq_positions(const SegmentRefs& r, std::uint32_t g, std::uint64_t from,
                                         std::uint64_t until) {
  const Ring ring = ring_of(r, g);
  std::vector<std::uint64_t> out;
  {
    RingLock lock(ring.c);
    walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
         [&](DlqEntry* e, std::uint64_t, std::uint64_t word) {
           if (st::state(word) != st::removed && e->position >= from && e->position < until) {
             out.push_back(e->position);
           }
           return true;
         });
  }
  std::sort(out.begin(), out.end());  // parked in the order their attempts ran out
  return out;
}

std::size_t dlq_resume_deliveries(const SegmentRefs& r, std::uint32_t g) noexcept {
  const Ring ring = ring_of(r, g);
  std::size_t n = 0;
  {
    RingLock lock(ring.c);
    walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
         [&](DlqEntry* e, std::uint64_t, std::uint64_t word) {
           if (st::state(word) != st::delivering) return true;
           const bool in_call = (e->attempts & layout::kDlqWaiting) == 0;  // a call cut short counts
           if (in_call) e->last_failure_ns = realtime_ns();
           store_attempts(e, in_call ? one_more(e->attempts) : e->attempts & ~layout::kDlqWaiting);
           e->next_attempt_ns = 0;
           std::uint64_t expected = word;
           // Release: the fields above before the state, as everywhere in the ring.
           if (e->state_bytes.compare_exchange_strong(expected, st::make(st::redrive, st::bytes(word)),
                                                      std::memory_order_acq_rel)) {
             ++n;
           }
           return true;
         });
  }
  if (n != 0) announce_redrives(r, ring);
  return n;
}

}  // namespace detail

// ---------------------------------------------------------------------------------

DeadLetters DeadLetters::open(const Segment& segment, std::string_view group) {
  segment.require_writable("open a dead-letter ring (it is locked to be read)");
  const detail::SegmentRefs& r = segment.refs();
  const std::string where = "segment " + segment.location().display() + " group \"" + printable(group) + "\"";
  if (r.dlq == nullptr) throw Error(Errc::not_found, where + ": the segment has no dead-letter rings (dlq_capacity 0)");
  const std::uint32_t g = detail::find_group(r, group);
  if (g == detail::kNoGroup) throw Error(Errc::not_found, where + ": no such group");
  DeadLetters d(segment, std::string(group), g, r.groups[g].created_ns.load(std::memory_order_acquire));
  d.check_registered();  // found, then removed and registered again before created_ns was read
  return d;
}

void DeadLetters::require_handle() const {
  if (!seg_) throw Error(Errc::invalid_options, "no dead-letter ring: a DeadLetters moved from");
}

void DeadLetters::check_registered() const {
  require_handle();
  const layout::GroupSlot& gs = seg_.refs().groups[slot_];
  if (layout::owner::state(gs.state.load(std::memory_order_acquire)) != layout::owner::active ||
      gs.created_ns.load(std::memory_order_acquire) != registered_ns_ || detail::group_name(gs) != group_) {
    throw Error(Errc::not_found, "segment " + seg_.location().display() + " group \"" + printable(group_) +
                                     "\": removed since its dead letters were opened");
  }
}

std::vector<DeadLetter> DeadLetters::list() const {
  require_handle();
  const detail::Ring ring = detail::ring_of(seg_.refs(), slot_);
  std::vector<DeadLetter> out;
  detail::RingLock lock(ring.c);
  check_registered();
  detail::check_ring(ring, "segment " + seg_.location().display() + " group \"" + group_ + "\"");
  detail::walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
               [&](layout::DlqEntry* e, std::uint64_t, std::uint64_t w) {
                 if (layout::dlq_state::state(w) != layout::dlq_state::removed) out.push_back(detail::copy_out(e, w));
                 return true;
               });
  return out;
}

std::optional<DeadLetter> DeadLetters::get(std::uint64_t id) const {
  for (DeadLetter& d : list()) {
    if (d.id == id) return std::move(d);
  }
  return std::nullopt;
}

DeadLetterStats DeadLetters::stats() const {
  check_registered();
  require_handle();
  const detail::Ring ring = detail::ring_of(seg_.refs(), slot_);
  DeadLetterStats s;
  s.entries = ring.c.entries.load(std::memory_order_relaxed);
  s.bytes_used = ring.c.tail.load(std::memory_order_relaxed) - ring.c.head.load(std::memory_order_relaxed);
  s.capacity = ring.cap;
  s.appended = ring.c.appended.load(std::memory_order_relaxed);
  s.removed = ring.c.removed.load(std::memory_order_relaxed);
  s.full_waits = ring.c.full_waits.load(std::memory_order_relaxed);
  return s;
}

std::size_t DeadLetters::request_redrive(std::optional<std::uint64_t> id) {
  require_handle();
  const detail::Ring ring = detail::ring_of(seg_.refs(), slot_);
  std::size_t marked = 0;
  {
    detail::RingLock lock(ring.c);
    check_registered();
    detail::walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
                 [&](layout::DlqEntry* e, std::uint64_t, std::uint64_t w) {
                   if (layout::dlq_state::state(w) != layout::dlq_state::ready || (id && e->id != *id)) return true;
                   std::uint64_t expected = w;
                   if (e->state_bytes.compare_exchange_strong(
                           expected, layout::dlq_state::make(layout::dlq_state::redrive, layout::dlq_state::bytes(w)),
                           std::memory_order_acq_rel)) {
                     ++marked;
                   }
                   return !id.has_value();
                 });
  }
  if (marked != 0) detail::announce_redrives(seg_.refs(), ring);
  return marked;
}

std::size_t DeadLetters::republish(Producer& producer, std::optional<std::uint64_t> id, Status* last_status) {
  require_handle();
  // Type ids are this segment's registry's, and the dead letters its log's events: into
  // another segment's log they would be other types, and gone from this one.
  if (producer && !detail::same_segment(producer.segment().header(), seg_.header())) {
    throw Error(Errc::invalid_options, "segment " + seg_.location().display() + " group \"" + group_ +
                                           "\": cannot republish dead letters through a producer of segment " +
                                           producer.segment().location().display());
  }
  const detail::Ring ring = detail::ring_of(seg_.refs(), slot_);
  std::size_t done = 0;
  Status status = Status::ok;
  {
    // Each entry is claimed, committed and removed under the ring's lock: no other tool
    // republishes it, marks it for redelivery or removes it in between, so it goes back
    // once. try_claim does not wait, so the lock is held for a copy per entry.
    detail::RingLock lock(ring.c);
    check_registered();
    detail::check_ring(ring, "segment " + seg_.location().display() + " group \"" + group_ + "\"");
    detail::walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
                 [&](layout::DlqEntry* e, std::uint64_t, std::uint64_t w) {
                   if (layout::dlq_state::state(w) != layout::dlq_state::ready || (id && e->id != *id)) return true;
                   RecordHeader h;
                   std::memcpy(&h, detail::dlq_record(e), sizeof h);
                   Claim c;
                   status = producer.try_claim(h.key, h.type_id, e->payload_len, c);
                   if (status != Status::ok) return false;
                   if (e->payload_len != 0) {
                     std::memcpy(c.payload().data(),
                                 reinterpret_cast<const std::byte*>(detail::dlq_record(e)) + kRecordHeaderSize,
                                 e->payload_len);
                   }
                   c.set_correlation_id(h.correlation_id);
                   c.set_schema_version(h.schema_version);
                   if (h.timestamp_ns != 0) c.set_timestamp_ns(h.timestamp_ns);  // the event's time, not the redrive's
                   c.set_flags(static_cast<std::uint16_t>(flags_of(h.key_seq_flags) | record_flags::redriven));
                   c.commit();
                   detail::mark_removed(ring, e, w);
                   ++done;
                   return !id.has_value();
                 });
    detail::reclaim(ring);
  }
  if (last_status != nullptr) *last_status = status;
  return done;
}

bool DeadLetters::remove(std::uint64_t id) {
  require_handle();
  const detail::Ring ring = detail::ring_of(seg_.refs(), slot_);
  bool removed = false;
  detail::RingLock lock(ring.c);
  check_registered();
  detail::walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
               [&](layout::DlqEntry* e, std::uint64_t, std::uint64_t w) {
                 if (e->id != id) return true;
                 const auto s = layout::dlq_state::state(w);
                 if (s == layout::dlq_state::ready || s == layout::dlq_state::redrive) {
                   detail::mark_removed(ring, e, w);
                   removed = true;
                 }
                 return false;
               });
  detail::reclaim(ring);
  return removed;
}

std::size_t DeadLetters::purge() {
  require_handle();
  const detail::Ring ring = detail::ring_of(seg_.refs(), slot_);
  std::size_t n = 0;
  detail::RingLock lock(ring.c);
  check_registered();
  detail::walk(ring, ring.c.head.load(std::memory_order_relaxed), ring.c.tail.load(std::memory_order_relaxed),
               [&](layout::DlqEntry* e, std::uint64_t, std::uint64_t w) {
                 const auto s = layout::dlq_state::state(w);
                 if (s == layout::dlq_state::ready || s == layout::dlq_state::redrive) {
                   detail::mark_removed(ring, e, w);
                   ++n;
                 }
                 return true;
               });
  detail::reclaim(ring);
  return n;
}

}  // namespace ringbus
