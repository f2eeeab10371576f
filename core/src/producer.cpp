// Producer cold paths: attach/detach, gating limit, latch contention, abort, blocking.
#include "ringbus/producer.hpp"

#include <sched.h>

#include <algorithm>
#include <string>

#include "ringbus/detail/groups.hpp"
#include "ringbus/detail/handler_scope.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/recovery.hpp"
#include "ringbus/detail/waiter.hpp"
#include "ringbus/error.hpp"

namespace ringbus {
namespace {

using layout::owner::State;

// Ids chosen by applications are below this; ids assigned by the segment are above.
constexpr std::uint32_t kAutoIdBase = 0x8000'0000u;
constexpr std::uint32_t kNoSlot = ~0u;
// How long attaching an id waits for another process to finish recovering its slot (a
// recovery writes a few frames; this bounds a recoverer that is stopped, not dead).
constexpr std::uint64_t kRecoveryWaitNs = 2'000'000'000;

bool held(State st) noexcept {
  return st == layout::owner::active || st == layout::owner::attaching || st == layout::owner::recovering;
}

// The pid of the live process whose producer in slot `i` may still move the tail
// (attaching or active), else 0. A recoverer never moves the tail, and a dead owner
// claims nothing more. Seq_cst: one side of the Dekker pair in take_exclusive().
std::uint32_t claimant_pid(const detail::SegmentRefs& r, std::uint32_t i) noexcept {
  const layout::ProducerSlot& s = r.producers[i];
  const std::uint64_t w = s.owner.load(std::memory_order_seq_cst);
  const State st = layout::owner::state(w);
  const bool claims = (st == layout::owner::attaching || st == layout::owner::active) &&
                      !detail::owner_dead(w, s.owner_start.load(std::memory_order_acquire));
  return claims ? layout::owner::pid(w) : 0;
}

void give_back_exclusive(const detail::SegmentRefs& r, std::uint32_t slot, std::uint32_t pid) noexcept {
  std::uint64_t mine = layout::exclusive::make(slot, pid);
  (void)r.control->exclusive.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);
}

// Called with `slot` just taken (attaching, seq_cst). Returns why the attach is refused,
// or "" with the exclusive word taken if `exclusive`. DESIGN.md, "Exclusive producers":
// every attach takes its slot and then reads the exclusive word; an exclusive attach
// takes the word and then reads every slot. All seq_cst, so of two concurrent attaches
// at least one sees the other and refuses.
std::string take_exclusive(const detail::SegmentRefs& r, std::uint32_t slot, std::uint32_t pid, bool exclusive) {
  std::atomic<std::uint64_t>& word = r.control->exclusive;
  std::uint64_t w = word.load(std::memory_order_seq_cst);
  for (;;) {
    if (layout::exclusive::held(w)) {
      const std::uint32_t holder = layout::exclusive::slot(w);
      // Shared memory: a word naming no slot, or a slot now owned by another process,
      // or a dead one, holds nothing.
      if (holder < r.max_producers && holder != slot && layout::exclusive::pid(w) != 0 &&
          claimant_pid(r, holder) == layout::exclusive::pid(w)) {
        return "the exclusive producer (slot " + std::to_string(holder) + ", pid " +
               std::to_string(layout::exclusive::pid(w)) + ") is attached";
      }
      if (!word.compare_exchange_strong(w, 0, std::memory_order_seq_cst)) continue;
      w = 0;
    }
    if (!exclusive) return {};
    if (word.compare_exchange_strong(w, layout::exclusive::make(slot, pid), std::memory_order_seq_cst)) break;
  }
  for (std::uint32_t i = 0; i < r.max_producers; ++i) {
    const std::uint32_t other = i == slot ? 0 : claimant_pid(r, i);
    if (other == 0) continue;
    give_back_exclusive(r, slot, pid);
    return "an exclusive producer needs the segment to itself, and producer slot " + std::to_string(i) +
           " is attached by pid " + std::to_string(other) + " (producer id " +
           std::to_string(r.producers[i].producer_id.load(std::memory_order_relaxed)) + ")";
  }
  return {};
}

}  // namespace

Producer Producer::attach(const Segment& segment, const ProducerOptions& options) {
  segment.require_writable("attach a producer");
  const std::string where = "segment " + segment.location().display();
  if (options.producer_id >= kAutoIdBase) {
    throw Error(Errc::invalid_options, where + ": producer id " + std::to_string(options.producer_id) +
                                           " is out of range (application ids are 1 .. 2^31-1)");
  }
  // A sequence near 2^64 would wrap to 0 and 1, numbers a consumer's dedup window has
  // long passed: it would drop those events as too old.
  if (options.first_seq > kMaxFirstSeq) {
    throw Error(Errc::invalid_options, where + ": first_seq " + std::to_string(options.first_seq) +
                                           " is more than 2^62 (the sequence must not wrap)");
  }
  if (std::string why = detail::wait_problem(options.wait, "wait"); !why.empty()) {
    throw Error(Errc::invalid_options, where + ": " + why);
  }
  if (options.timestamps > Timestamps::none) {
    throw Error(Errc::invalid_options, where + ": timestamps is " +
                                           std::to_string(static_cast<int>(options.timestamps)) + ", not a Timestamps");
  }
  detail::register_fast_side();
  const detail::SegmentRefs& r = segment.refs();
  // Calibrate now, not inside the first publish; a rate another process left is checked.
  (void)Tsc::calibration(r.control->tsc_mult);
  const detail::ProcessId& me = detail::self_process();

  for (int round = 0; round < 64; ++round) {
    std::uint32_t chosen = kNoSlot;
    std::uint64_t observed = 0;
    bool same_id = false;
    bool look_again = false;

    if (options.producer_id != 0) {
      for (std::uint32_t i = 0; i < r.max_producers && chosen == kNoSlot; ++i) {
        layout::ProducerSlot& s = r.producers[i];
        std::uint64_t w = s.owner.load(std::memory_order_acquire);
        if (layout::owner::state(w) == layout::owner::free ||
            s.producer_id.load(std::memory_order_acquire) != options.producer_id) {
          continue;
        }
        if (held(layout::owner::state(w))) {
          if (layout::owner::state(w) != layout::owner::recovering &&
              !detail::owner_dead(w, s.owner_start.load(std::memory_order_acquire))) {
            throw Error(Errc::busy, where + ": producer id " + std::to_string(options.producer_id) +
                                        " is attached by live pid " + std::to_string(layout::owner::pid(w)));
          }
          detail::recover_producer(r, i);
          w = s.owner.load(std::memory_order_acquire);
          // Another process is repairing the slot: wait for it, so that the id continues
          // its sequence here instead of starting again from 1 in another slot. Checked
          // once a millisecond; recover_producer takes over if that process died too.
          for (detail::HolderWait wait(0); layout::owner::state(w) == layout::owner::recovering;
               w = s.owner.load(std::memory_order_acquire)) {
            if (!wait.step() || detail::recover_producer(r, i)) continue;
            if (wait.held_for(w) > kRecoveryWaitNs) {
              throw Error(Errc::busy, where + ": producer id " + std::to_string(options.producer_id) +
                                          " is being recovered by pid " + std::to_string(layout::owner::pid(w)) +
                                          " and it has not finished");
            }
          }
          if (held(layout::owner::state(w))) {  // attached meanwhile by another process
            look_again = true;
            break;
          }
        }
        if (layout::owner::state(w) == layout::owner::detached) {
          chosen = i;
          observed = w;
          same_id = true;
        }
      }
    }
    if (look_again) continue;
    // A never-used slot first, then the detached slot attached longest ago (its
    // retained id is forgotten), then a slot whose owner died.
    if (chosen == kNoSlot) {
      std::uint64_t oldest = ~std::uint64_t{0};
      for (std::uint32_t i = 0; i < r.max_producers; ++i) {
        layout::ProducerSlot& s = r.producers[i];
        const std::uint64_t w = s.owner.load(std::memory_order_acquire);
        if (layout::owner::state(w) == layout::owner::free) {
          chosen = i;
          observed = w;
          break;
        }
        if (layout::owner::state(w) == layout::owner::detached) {
          const std::uint64_t at = s.attached_ns.load(std::memory_order_relaxed);
          if (at < oldest) {
            oldest = at;
            chosen = i;
            observed = w;
          }
        }
      }
    }
    if (chosen == kNoSlot) {
      for (std::uint32_t i = 0; i < r.max_producers && chosen == kNoSlot; ++i) {
        layout::ProducerSlot& s = r.producers[i];
        const std::uint64_t w = s.owner.load(std::memory_order_acquire);
        if (held(layout::owner::state(w)) && detail::owner_dead(w, s.owner_start.load(std::memory_order_acquire)) &&
            detail::recover_producer(r, i)) {
          chosen = i;
          observed = s.owner.load(std::memory_order_acquire);
        }
      }
    }
    if (chosen == kNoSlot) {
      throw Error(Errc::no_slot, where + ": all " + std::to_string(r.max_producers) +
                                     " producer slots are attached by live processes");
    }

    layout::ProducerSlot& s = r.producers[chosen];
    if (layout::owner::state(observed) != layout::owner::free &&
        layout::owner::state(observed) != layout::owner::detached) {
      continue;
    }
    // Seq_cst: the first half of the Dekker pair in take_exclusive().
    if (!s.owner.compare_exchange_strong(observed, layout::owner::make(layout::owner::attaching, me.pid),
                                         std::memory_order_seq_cst)) {
      continue;  // another attach took it first
    }
    if (const std::string refused = take_exclusive(r, chosen, me.pid, options.exclusive); !refused.empty()) {
      s.owner.store(observed, std::memory_order_release);  // the slot as it was
      throw Error(Errc::busy, where + ": " + refused);
    }
    s.owner_start.store(me.start_ticks, std::memory_order_relaxed);
    std::uint32_t id = options.producer_id;
    if (id == 0) {
      const std::uint64_t n = r.control->next_producer_id.fetch_add(1, std::memory_order_relaxed);
      id = kAutoIdBase | static_cast<std::uint32_t>(n & 0x7fff'ffffu);
    }
    const std::uint64_t next = options.first_seq != 0 ? options.first_seq
                               : same_id               ? std::max<std::uint64_t>(1, s.next_seq.load(std::memory_order_relaxed))
                                                       : 1;
    if (next > kMaxFirstSeq) {  // shared memory: a retained sequence that cannot be
      if (options.exclusive) give_back_exclusive(r, chosen, me.pid);
      s.owner.store(observed, std::memory_order_release);  // the slot as it was
      throw Error(Errc::corrupt, where + ": producer id " + std::to_string(id) + " would continue from sequence " +
                                     std::to_string(next) + ", more than 2^62: the slot is damaged");
    }
    s.epoch.store(same_id ? s.epoch.load(std::memory_order_relaxed) + 1 : 1, std::memory_order_relaxed);
    if (!same_id) {
      s.published.store(0, std::memory_order_relaxed);
      s.full_count.store(0, std::memory_order_relaxed);
      s.aborted.store(0, std::memory_order_relaxed);
    }
    s.producer_id.store(id, std::memory_order_relaxed);
    s.next_seq.store(next, std::memory_order_relaxed);
    s.attached_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
    s.claim_key_index.store(0, std::memory_order_relaxed);
    s.claim.store(0, std::memory_order_relaxed);
    s.owner.store(layout::owner::make(layout::owner::active, me.pid), std::memory_order_release);

    if (options.producer_id != 0) {
      // Two processes attaching the same new id at once: the lower slot keeps it.
      bool lost = false;
      for (std::uint32_t j = 0; j < chosen; ++j) {
        const std::uint64_t w = r.producers[j].owner.load(std::memory_order_acquire);
        if (held(layout::owner::state(w)) &&
            r.producers[j].producer_id.load(std::memory_order_acquire) == options.producer_id) {
          lost = true;
        }
      }
      if (lost) {
        if (options.exclusive) give_back_exclusive(r, chosen, me.pid);
        s.producer_id.store(0, std::memory_order_relaxed);
        s.owner.store(layout::owner::make(layout::owner::free, 0), std::memory_order_release);
        throw Error(Errc::busy, where + ": producer id " + std::to_string(options.producer_id) +
                                    " is being attached by another process");
      }
    }

    Producer p;
    p.seg_ = segment;
    p.r_ = r;
    p.slot_ = &s;
    p.slot_index_ = chosen;
    p.id_ = id;
    p.next_seq_ = next;
    p.published_ = s.published.load(std::memory_order_relaxed);
    p.max_claim_ = std::min<std::uint64_t>(r.capacity / 4, std::uint64_t{1} << 31);
    p.wait_ = options.wait;
    p.timestamps_ = options.timestamps;
    p.exclusive_ = options.exclusive;
    p.stop_ = options.stop;
    p.owner_pid_ = me.pid;
    // From here on the exclusive producer reads the tail with plain loads, which see only
    // its own stores once it has read the last value another producer left: a
    // read-modify-write reads the latest value in the tail's modification order, even
    // one a producer that died (and so was not seen to detach) wrote.
    if (options.exclusive) (void)r.control->tail.fetch_add(0, std::memory_order_acq_rel);
    p.refresh_limit(0);
    return p;
  }
  throw Error(Errc::busy, where + ": could not take a producer slot (too much contention)");
}

Producer::Producer(Producer&& o) noexcept { *this = std::move(o); }

Producer& Producer::operator=(Producer&& o) noexcept {
  if (this == &o) return *this;
  detach();
  // An open claim points at its producer; a producer is not moved while one is open.
  if (o.open_claim_ != nullptr) o.open_claim_->abort();
  seg_ = std::move(o.seg_);
  r_ = o.r_;
  slot_ = o.slot_;
  slot_index_ = o.slot_index_;
  id_ = o.id_;
  next_seq_ = o.next_seq_;
  published_ = o.published_;
  limit_ = o.limit_;
  prefetched_ = o.prefetched_;
  max_claim_ = o.max_claim_;
  wait_ = o.wait_;
  timestamps_ = o.timestamps_;
  exclusive_ = o.exclusive_;
  stop_ = o.stop_;
  owner_pid_ = o.owner_pid_;
  open_ = false;
  open_claim_ = nullptr;
  o.slot_ = nullptr;
  o.max_claim_ = 0;
  return *this;
}

void Producer::detach() noexcept {
  if (slot_ == nullptr) return;
  if (open_claim_ != nullptr) open_claim_->abort();
  // A forked child's copy: the slot, its journal and the exclusive word are the parent's.
  if (detail::inherited_from(owner_pid_)) {
    slot_ = nullptr;
    max_claim_ = 0;  // every claim is refused as `invalid` (claim_impl)
    return;
  }
  slot_->claim.store(0, std::memory_order_relaxed);
  slot_->claim_key_index.store(0, std::memory_order_relaxed);
  // The exclusive word first: while it names this slot, other attaches are refused.
  if (exclusive_) give_back_exclusive(r_, slot_index_, detail::self_process().pid);
  slot_->owner.store(layout::owner::make(layout::owner::detached, detail::self_process().pid),
                     std::memory_order_release);
  slot_ = nullptr;
  max_claim_ = 0;  // every claim is refused as `invalid` (claim_impl), not written through a null slot
}

// Recomputes how far this producer may claim: the slowest cursor of every gating
// consumer group plus one lap. Read like a seqlock under gating_gen, so that a group
// registering concurrently is either seen or registers behind our published limit.
// DESIGN.md, "Back-pressure and group registration".
bool Producer::refresh_limit(std::uint64_t needed) noexcept {
  layout::ControlBlock& ctl = *r_.control;
  for (;;) {
    const std::uint64_t gen = ctl.gating_gen.load(std::memory_order_seq_cst);
    const std::uint64_t tail = ctl.tail.load(std::memory_order_seq_cst);
    std::uint64_t slowest = layout::kNoPosition;
    bool registering = false;
    for (std::uint32_t g = 0; g < r_.max_groups; ++g) {
      layout::GroupSlot& gs = r_.groups[g];
      const std::uint64_t st = gs.state.load(std::memory_order_seq_cst);  // pairs with join()/remove()
      if (layout::owner::state(st) == layout::owner::registering) {
        if (detail::forget_dead_registrant(gs, st)) {
          std::uint64_t expected = st;
          (void)gs.state.compare_exchange_strong(expected, layout::owner::make(layout::owner::free, 0),
                                                 std::memory_order_seq_cst);
        } else {
          registering = true;
        }
        continue;
      }
      if (layout::owner::state(st) != layout::owner::active) continue;
      std::uint64_t n = gs.workers.load(std::memory_order_acquire);
      n = std::clamp<std::uint64_t>(n, 1, layout::kMaxWorkers);  // untrusted
      for (std::uint64_t w = 0; w < n; ++w) {
        // Pairs with the release store of the cursor in Worker::poll: the worker has
        // finished reading everything below it.
        slowest = std::min(slowest, gs.worker[w].cursor.load(std::memory_order_acquire));
      }
    }
    std::uint64_t limit = slowest == layout::kNoPosition ? tail + r_.capacity : std::min(slowest, tail) + r_.capacity;
    if (registering) limit = std::min(limit, limit_);
    slot_->limit.store(limit, std::memory_order_seq_cst);
    if (ctl.gating_gen.load(std::memory_order_seq_cst) == gen) {
      limit_ = limit;
      break;
    }
  }
  return needed <= limit_;
}

std::uint64_t Producer::lock_latch_slow(std::uint64_t index) noexcept {
  std::atomic<std::uint64_t>& l = r_.keys[index].latch;
  detail::HolderWait wait(256);
  for (;;) {
    std::uint64_t w = l.load(std::memory_order_relaxed);
    if (!layout::latch::locked(w)) {
      // Acquire: as in lock_latch().
      if (l.compare_exchange_weak(w, layout::latch::make(true, slot_index_, layout::latch::last_seq(w)),
                                  std::memory_order_acquire, std::memory_order_relaxed)) {
        return layout::latch::last_seq(w);
      }
      continue;
    }
    if (!wait.step()) continue;
    // The holder may be dead: recovery releases its latch (a no-op while it lives).
    const std::uint32_t holder = layout::latch::owner_slot(w);
    const bool no_such_slot = holder >= r_.max_producers || holder == slot_index_;
    const std::uint64_t owner_before = no_such_slot ? 0 : r_.producers[holder].owner.load(std::memory_order_acquire);
    const bool repaired_or_empty = no_such_slot || detail::recover_producer(r_, holder);
    // A live producer holding the latch is always `active`; a holder slot in any other
    // state for this long (e.g. damaged memory naming an unrelated live pid) is not one.
    const bool stale = !no_such_slot && wait.held_for(w) > 2'000'000'000ull &&
                       layout::owner::state(r_.producers[holder].owner.load(std::memory_order_acquire)) !=
                           layout::owner::active;
    const bool holds_nothing = repaired_or_empty || stale;
    // A latch still locked by a slot that holds no producer cannot be released by
    // anyone else (its journal does not name it): only damaged memory leaves one.
    // Take it back, unless the slot was attached again meanwhile.
    if (holds_nothing && (no_such_slot || r_.producers[holder].owner.load(std::memory_order_acquire) == owner_before)) {
      std::uint64_t expected = w;
      if (l.compare_exchange_strong(expected, layout::latch::make(false, holder, layout::latch::last_seq(w)),
                                    std::memory_order_acq_rel, std::memory_order_relaxed)) {
        r_.control->latches_released.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
}

void Producer::abort(Claim& c) noexcept {
  if (detail::inherited_from(owner_pid_)) {  // the parent's claim: it commits or aborts it itself
    c.producer_ = nullptr;
    open_claim_ = nullptr;
    return;
  }
  bool give_back = c.key_ == 0;
  if (!give_back) {
    std::atomic<std::uint64_t>& l = r_.keys[c.key_index() - 1].latch;
    const std::uint64_t first = c.key_seq();
    const std::uint64_t last = first + c.count_ - 1;
    std::uint64_t w = l.load(std::memory_order_relaxed);
    // The key_seq goes back only if no later claim of the key exists: the latch is
    // free and still ends at ours. Otherwise it stays used, by a void record.
    give_back = !layout::latch::locked(w) && layout::latch::last_seq(w) == last &&
                l.compare_exchange_strong(w, layout::latch::make(false, slot_index_, first - 1),
                                          std::memory_order_acq_rel, std::memory_order_relaxed);
  }
  if (give_back) {
    write_padding(c.pos_, c.rec_bytes() * c.count_);
  } else {
    for (std::uint32_t i = 0; i < c.count_; ++i) {
      detail::write_void(r_, c.position(i), c.key_, c.key_seq(i), record_flags::aborted, id_,
                         c.pseq_ + i, c.type(), c.len_);
    }
  }
  slot_->aborted.store(slot_->aborted.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  c.producer_ = nullptr;
  finish(give_back ? 0 : c.count_, 0);
}

void Producer::wake_waiting(const Segment& segment) noexcept {
  if (!segment || segment.read_only()) return;
  // A parked producer re-checks its condition, its stop flag among it, once woken.
  detail::wake_all(segment.refs().control->space_seq);
}

bool Producer::held_back_by_caller(std::uint64_t total) const noexcept {
  for (const detail::HandlerFrame* f = detail::handler_frames; f != nullptr; f = f->outer) {
    if (!detail::same_segment(*f->header, *r_.header)) continue;
    // Where this claim would end, from the tail as claim_impl places it. The tail only
    // grows, so once the worker's cursor keeps that end out, it keeps it out until the
    // worker moves, after its handler.
    const std::uint64_t t = r_.control->tail.load(std::memory_order_acquire);
    const std::uint64_t end = r_.claim_start(t, total) + total;
    if (end > f->cursor->load(std::memory_order_acquire) + r_.capacity) return true;
  }
  return false;
}

Status Producer::claim_blocking(std::uint64_t key, std::uint64_t expected, bool check_expected, std::uint16_t type,
                                std::uint32_t len, std::uint32_t count, Claim& out,
                                std::chrono::nanoseconds timeout) noexcept {
  const auto start = std::chrono::steady_clock::now();
  detail::Waiter waiter(wait_);
  layout::ControlBlock& ctl = *r_.control;
  const std::uint64_t need = record_bytes(len) * count;
  // Acquire: what the thread that set the flag wrote before is visible to the caller.
  auto stopped = [this] { return stop_ != nullptr && stop_->load(std::memory_order_acquire); };
  for (;;) {
    const Status s = claim_impl(key, expected, check_expected, type, len, count, out);
    if (s != Status::full) return s;
    if (stopped()) return Status::stopped;
    if (held_back_by_caller(record_bytes(len) * count)) return Status::would_deadlock;
    if (timeout != kForever && std::chrono::steady_clock::now() - start >= timeout) return Status::timeout;
    waiter.idle(ctl.space_waiters, ctl.space_seq,
                [&] { return stopped() || refresh_limit(ctl.tail.load(std::memory_order_acquire) + need); });
  }
}

}  // namespace ringbus
