// Crash recovery of producers. DESIGN.md, "When a process dies mid-publish".
//
// A producer journals each claim in its slot before it CASes the tail (phase
// `claiming`, with the tail value it expects) and after (phase `claimed`). When its
// process is dead, the journal says which bytes of the log it owns:
//
//   claimed   the CAS happened: [begin, claim_start + total) is its claim
//   claiming  the CAS from `begin` may or may not have happened. It happened iff the
//             tail is past `begin`, no record is there, and no other producer is
//             claiming or has claimed from `begin`.
//
// Its records become padding when no key_seq of theirs was published (unkeyed, or
// the key latch is still held by the dead slot), else void records that keep key_seq
// gap-free. Frames are written before the latch is released, so a recoverer that dies
// half-way is replaced by one that reaches the same decisions.
#include "ringbus/detail/recovery.hpp"

#include <algorithm>
#include <atomic>

#include "ringbus/detail/process.hpp"
#include "ringbus/layout.hpp"

namespace ringbus::detail {
namespace {

using namespace layout;

struct Journal {
  std::uint64_t phase = claim_phase::idle;
  std::uint64_t begin = 0;
  std::uint64_t rec = 0;
  std::uint64_t count = 0;
  std::uint64_t key_index = 0;
  std::uint64_t key_seq = 0;
  std::uint16_t type = 0;
  std::uint32_t len = 0;
  std::uint64_t pseq = 0;
  [[nodiscard]] std::uint64_t total() const noexcept { return rec * count; }
};

Journal read_journal(const ProducerSlot& s) noexcept {
  Journal j;
  const std::uint64_t w = s.claim.load(std::memory_order_acquire);  // pairs with Producer::finish
  j.phase = claim_phase::phase(w);
  j.begin = claim_phase::position(w);
  const std::uint64_t shape = s.claim_shape.load(std::memory_order_relaxed);
  j.rec = static_cast<std::uint32_t>(shape);
  j.count = shape >> 32;
  j.key_index = s.claim_key_index.load(std::memory_order_relaxed);
  j.key_seq = s.claim_key_seq.load(std::memory_order_relaxed);
  const std::uint64_t meta = s.claim_meta.load(std::memory_order_relaxed);
  j.type = static_cast<std::uint16_t>(meta);
  j.len = static_cast<std::uint32_t>(meta >> 16);
  j.pseq = s.claim_seq.load(std::memory_order_relaxed);
  return j;
}

// The journal is shared memory: only sizes a producer could have claimed are used.
bool journal_sane(const SegmentRefs& r, const Journal& j) noexcept {
  return j.count >= 1 && j.len <= r.max_event && j.rec == record_bytes(j.len) && j.total() <= r.capacity / 4 &&
         j.begin % kRecordAlign == 0 && (j.key_index == 0 || j.key_index - 1 <= r.key_mask);
}

std::uint64_t load_frame(const SegmentRefs& r, std::uint64_t pos) noexcept {
  // Pairs with the release stores of frames by producers and recoverers.
  return std::atomic_ref<std::uint64_t>(r.record_at(pos)->frame).load(std::memory_order_acquire);
}

bool frame_ready(const SegmentRefs& r, std::uint64_t pos) noexcept {
  return frame::ready_for(load_frame(r, pos), r.lap(pos));
}

void write_padding(const SegmentRefs& r, std::uint64_t pos, std::uint64_t bytes) noexcept {
  std::atomic_ref<std::uint64_t>(r.record_at(pos)->frame)
      .store(frame::make(RecordState::padding, r.lap(pos), static_cast<std::uint32_t>(bytes)),
             std::memory_order_release);
}

void bump(std::atomic<std::uint64_t>& counter) noexcept { counter.fetch_add(1, std::memory_order_relaxed); }

enum class Fate { none, in_log, undecided };

Fate locate(const SegmentRefs& r, std::uint32_t slot, const Journal& j) noexcept {
  if (j.phase == claim_phase::idle || !journal_sane(r, j)) return Fate::none;
  const std::uint64_t tail = r.control->tail.load(std::memory_order_acquire);
  if (tail <= j.begin) return Fate::none;  // the tail never passed `begin`: no CAS from there
  // More than a lap behind the tail: no gating reader can be waiting there, and the
  // bytes belong to later records now. Writing anything would destroy them.
  if (tail - j.begin > r.capacity) return Fate::none;
  if (j.phase == claim_phase::claimed) return Fate::in_log;
  if (frame_ready(r, j.begin)) return Fate::none;  // someone else's record is there
  for (std::uint32_t i = 0; i < r.max_producers; ++i) {
    if (i == slot) continue;
    const std::uint64_t w = r.producers[i].claim.load(std::memory_order_acquire);
    if (claim_phase::phase(w) == claim_phase::idle || claim_phase::position(w) != j.begin) continue;
    if (claim_phase::phase(w) == claim_phase::claimed) return Fate::none;  // it won the CAS
    return Fate::undecided;  // two claimants from `begin`; wait until one moves on
  }
  // The winner may have committed (and reset its journal) while we looked.
  return frame_ready(r, j.begin) ? Fate::none : Fate::in_log;
}

void repair(const SegmentRefs& r, std::uint32_t slot, const Journal& j, ProducerSlot& s) noexcept {
  ControlBlock& ctl = *r.control;
  const std::uint64_t total = j.total();
  const std::uint64_t start = r.claim_start(j.begin, total);
  if (start != j.begin && !frame_ready(r, j.begin)) write_padding(r, j.begin, start - j.begin);

  const std::uint64_t f0 = load_frame(r, start);
  if (frame::ready_for(f0, r.lap(start)) && frame::state(f0) == RecordState::padding) return;  // done before

  bool latch_held = false;
  std::uint64_t key = 0;
  if (j.key_index != 0) {
    KeyEntry& e = r.keys[j.key_index - 1];
    const std::uint64_t lw = e.latch.load(std::memory_order_acquire);
    latch_held = latch::locked(lw) && latch::owner_slot(lw) == slot;
    key = e.key.load(std::memory_order_acquire);
  }
  bool any_there = false;
  for (std::uint64_t i = 0; i < j.count; ++i) any_there = any_there || frame_ready(r, start + i * j.rec);
  const bool seqs_used = any_there || (j.key_index != 0 && !latch_held);
  if (!seqs_used) {
    write_padding(r, start, total);
    bump(ctl.holes_padded);
    return;
  }
  const auto producer_id = static_cast<std::uint32_t>(s.producer_id.load(std::memory_order_relaxed));
  for (std::uint64_t i = 0; i < j.count; ++i) {
    const std::uint64_t pos = start + i * j.rec;
    if (frame_ready(r, pos)) continue;
    write_void(r, pos, key, key != 0 ? j.key_seq + i : 0, record_flags::recovered, producer_id, j.pseq + i, j.type,
               j.len);
    bump(ctl.records_voided);
  }
  const std::uint64_t next = j.pseq + j.count;
  if (s.next_seq.load(std::memory_order_relaxed) < next) s.next_seq.store(next, std::memory_order_relaxed);
}

}  // namespace

bool owner_dead(std::uint64_t owner_word, std::uint64_t owner_start) noexcept {
  const auto st = owner::state(owner_word);
  // While attaching, the start time may not be written yet: check the pid alone.
  return process_dead(owner::pid(owner_word), st == owner::attaching ? 0 : owner_start);
}

bool recover_producer(const SegmentRefs& r, std::uint32_t slot) noexcept {
  if (slot >= r.max_producers) return false;
  ProducerSlot& s = r.producers[slot];
  std::uint64_t w = s.owner.load(std::memory_order_acquire);
  const auto st = owner::state(w);
  if (st == owner::free || st == owner::detached) return true;
  if (st == owner::recovering) {
    if (!process_dead(owner::pid(w), 0)) return false;  // another process is at it
  } else if (!owner_dead(w, s.owner_start.load(std::memory_order_acquire))) {
    return false;
  }
  const std::uint64_t dead_owner = w;
  if (!s.owner.compare_exchange_strong(w, owner::make(owner::recovering, self_process().pid),
                                       std::memory_order_acq_rel)) {
    return false;
  }
  const Journal j = read_journal(s);
  const Fate fate = locate(r, slot, j);
  if (fate == Fate::undecided) {
    s.owner.store(dead_owner, std::memory_order_release);  // retried on the next stall check
    return false;
  }
  if (fate == Fate::in_log) repair(r, slot, j, s);
  // The latch last (see the file comment).
  if (j.key_index != 0 && j.key_index - 1 <= r.key_mask) {
    std::atomic<std::uint64_t>& l = r.keys[j.key_index - 1].latch;
    std::uint64_t lw = l.load(std::memory_order_acquire);
    while (latch::locked(lw) && latch::owner_slot(lw) == slot) {
      // Release: like Producer::unlock_latch, publishes the repaired frames above.
      if (l.compare_exchange_weak(lw, latch::make(false, slot, latch::last_seq(lw)), std::memory_order_acq_rel,
                                  std::memory_order_acquire)) {
        bump(r.control->latches_released);
        break;
      }
    }
  }
  s.claim_key_index.store(0, std::memory_order_relaxed);
  s.claim.store(claim_phase::make(claim_phase::idle, 0), std::memory_order_release);
  s.owner.store(owner::make(owner::detached, owner::pid(dead_owner)), std::memory_order_release);
  bump(r.control->producers_recovered);
  return true;
}

bool unblock(const SegmentRefs& r, std::uint64_t pos) noexcept {
  if (pos % kRecordAlign != 0) return false;
  if (frame_ready(r, pos)) return true;
  if (r.control->tail.load(std::memory_order_acquire) <= pos) return false;  // nothing claimed there yet
  constexpr std::uint32_t kNone = ~0u;
  std::uint32_t claimed_slot = kNone;
  std::uint32_t claiming_slot = kNone;
  std::uint32_t claiming = 0;
  for (std::uint32_t i = 0; i < r.max_producers; ++i) {
    const ProducerSlot& s = r.producers[i];
    if (owner::state(s.owner.load(std::memory_order_acquire)) == owner::free) continue;
    const Journal j = read_journal(s);
    if (j.phase == claim_phase::idle || !journal_sane(r, j)) continue;
    if (j.phase == claim_phase::claimed) {
      const std::uint64_t end = r.claim_start(j.begin, j.total()) + j.total();
      if (pos >= j.begin && pos < end) {
        claimed_slot = i;
        break;
      }
    } else if (j.begin == pos) {
      if (claiming++ == 0) claiming_slot = i;
    }
  }
  // One claimed owner, or a single claimant: repair it if dead (a no-op while it
  // lives). Two claimants from `pos` and no winner yet: wait.
  const std::uint32_t owner_slot = claimed_slot != kNone ? claimed_slot : claiming == 1 ? claiming_slot : kNone;
  if (owner_slot != kNone) recover_producer(r, owner_slot);
  return frame_ready(r, pos);
}

void note_stall_ended(const SegmentRefs& r, std::uint64_t ns) noexcept {
  std::atomic<std::uint64_t>& longest = r.control->longest_stall_ns;
  std::uint64_t prev = longest.load(std::memory_order_relaxed);
  while (prev < ns && !longest.compare_exchange_weak(prev, ns, std::memory_order_relaxed)) {
  }
}

void write_void(const SegmentRefs& r, std::uint64_t pos, std::uint64_t key, std::uint64_t key_seq,
                std::uint16_t flags, std::uint32_t producer_id, std::uint64_t producer_seq, std::uint16_t type,
                std::uint32_t len) noexcept {
  RecordHeader* h = r.record_at(pos);
  store_header_fields(*h, pos, key, pack_key_seq_flags(key_seq, flags), producer_seq, producer_id, type, 0,
                      realtime_ns(), 0);
  // Pairs with the acquire load of the frame by readers.
  std::atomic_ref<std::uint64_t>(h->frame)
      .store(frame::make(RecordState::void_, r.lap(pos), len), std::memory_order_release);
}

}  // namespace ringbus::detail
