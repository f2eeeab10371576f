// Consumer group cold paths: registration, resume, worker ownership, threads, stalls.
#include "ringbus/consumer.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "ringbus/dedup.hpp"
#include "ringbus/detail/groups.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/record_walk.hpp"
#include "ringbus/detail/robust_lock.hpp"
#include "ringbus/detail/recovery.hpp"
#include "ringbus/error.hpp"

namespace ringbus {
namespace {

// A child forked inside a handler is not in that handler: the worker polling on the
// forking thread is the parent's, which moves on there (DESIGN.md, "Handles across
// fork"). Without this, the child's blocking claims took the parent's worker for their
// own and said would_deadlock, and its polls were refused as re-entered.
[[maybe_unused]] const int g_forget_handlers_in_child =
    ::pthread_atfork(nullptr, nullptr, [] { detail::handler_frames = nullptr; });

// GroupOptions::unblock_after's bound: a stall a day long is no longer a wait.
constexpr std::chrono::milliseconds kMaxUnblockAfter = std::chrono::hours{24};

using layout::GroupSlot;
using layout::WorkerSlot;


void store_name(GroupSlot& g, std::string_view name) noexcept {
  char buf[layout::kGroupNameBytes] = {};
  std::memcpy(buf, name.data(), std::min(name.size(), sizeof buf - 1));
  for (std::size_t w = 0; w < layout::kGroupNameBytes / 8; ++w) {
    std::uint64_t v = 0;
    std::memcpy(&v, buf + 8 * w, 8);
    g.name[w].store(v, std::memory_order_relaxed);
  }
}

using detail::find_group;
using detail::kNoGroup;

void reset_group_state(const detail::SegmentRefs& r, std::uint32_t g);
void unregister_group(const detail::SegmentRefs& r, std::uint32_t g);
void merge_dedup(const detail::SegmentRefs& r, std::uint32_t g, std::uint32_t old_workers, std::uint32_t new_workers);

// A worker slot taken from a process that died running it: if it died before the event
// in flight was handled (the cursor not past it), one more death counts against that
// event (layout::kInflightDeaths, saturating); else the count starts again.
void note_death_in_flight(layout::WorkerSlot& ws) noexcept {
  const std::uint64_t inflight = ws.inflight.load(std::memory_order_relaxed);
  if (inflight == layout::kNoPosition) return;
  const std::uint64_t deaths = inflight & layout::kInflightDeaths;
  const std::uint64_t at = inflight - deaths;
  const bool unhandled = at >= ws.cursor.load(std::memory_order_acquire);
  const std::uint64_t counted = unhandled ? std::min(deaths + 1, layout::kInflightDeaths) : 0;
  ws.inflight.store(at | counted, std::memory_order_relaxed);
}

std::string where_of(const Segment& seg, std::string_view name) {
  return "segment " + seg.location().display() + " group \"" + printable(name) + "\"";
}

// Why `position` cannot be where a group's cursors start, with the records from `from`
// (a record boundary) on held in the ring and the log's tail at `tail`: "" if it can.
// `behind` says why no earlier position is safe. A record spanning the position throws
// Error(invalid_options) from the walk, named by `at`.
std::string why_not_a_start(const detail::SegmentRefs& r, std::uint64_t from, std::uint64_t position,
                            std::uint64_t tail, const std::string& at, const std::string& behind) {
  if (!layout::valid_position(position)) return " is not a record position (8-byte aligned, at most 2^62)";
  if (position > tail) return " is beyond the log's tail " + std::to_string(tail);
  if (position < from) return " is behind " + std::to_string(from) + behind;
  if (position == tail) return {};  // the end of the last claim
  // Records never cross the ring's end, so a lap's start is a boundary too. The walk
  // holds the registration lock, which counts as stale after seconds: it is bounded.
  from = std::max(from, (position >> r.shift) << r.shift);
  if (position - from > detail::kMaxWalkBytes) {
    return " cannot be checked: it is more than " + std::to_string(detail::kMaxWalkBytes >> 20) + " MiB past " +
           std::to_string(from) + ", the nearest record boundary known (skip in steps)";
  }
  const detail::Walk walk = detail::walk_to(r, from, position, at);
  if (walk.result != detail::WalkResult::record_start) {
    return " cannot be checked: the record at " + std::to_string(walk.stopped_at) + " before it is not committed";
  }
  return {};
}

// Registers a new group at slot `g` (already taken: state registering by us). The
// cursor it starts from is read only after gating_gen moves, so every producer limit
// computed without this group is at most one lap past it. DESIGN.md, "Back-pressure
// and group registration".
// Throws Error(invalid_options), the slot freed again, for a StartFrom::position that is
// not safe to start from.
void register_group(const detail::SegmentRefs& r, std::uint32_t g, std::string_view name,
                    const GroupOptions& o, std::uint32_t pid, const std::string& where) {
  GroupSlot& gs = r.groups[g];
  reset_group_state(r, g);
  store_name(gs, name);
  gs.flags.store(0, std::memory_order_relaxed);
  gs.resumes.store(0, std::memory_order_relaxed);
  gs.created_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
  gs.workers.store(o.workers, std::memory_order_relaxed);
  r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
  const std::uint64_t tail = r.control->tail.load(std::memory_order_seq_cst);
  std::uint64_t start = tail;
  if (o.start != StartFrom::end) {
    std::uint64_t slowest = layout::kNoPosition;
    for (std::uint32_t i = 0; i < r.max_groups; ++i) {
      if (i == g || layout::owner::state(r.groups[i].state.load(std::memory_order_seq_cst)) != layout::owner::active) {
        continue;
      }
      const std::uint64_t n = std::clamp<std::uint64_t>(r.groups[i].workers.load(std::memory_order_acquire), 1,
                                                        layout::kMaxWorkers);
      for (std::uint64_t w = 0; w < n; ++w) {
        slowest = std::min(slowest, r.groups[i].worker[w].cursor.load(std::memory_order_acquire));
      }
    }
    if (slowest < start) start = slowest;
  }
  if (o.start == StartFrom::position) {
    // From `start` (the slowest other cursor, or the tail) on, every producer limit keeps
    // the records in the ring.
    const std::string at = where + ": start_position " + std::to_string(o.start_position);
    std::string refused;
    try {
      refused = why_not_a_start(r, start, o.start_position, tail, at,
                                start == tail ? ", the tail: with no other group to hold the records behind it, "
                                                "producers may have overwritten them"
                                              : ", the slowest cursor of the other groups: producers may have "
                                                "overwritten what lies behind it");
    } catch (const Error&) {  // a record spans it
      unregister_group(r, g);
      throw;
    }
    if (!refused.empty()) {
      unregister_group(r, g);
      throw Error(Errc::invalid_options, at + refused);
    }
    start = o.start_position;
  }
  for (WorkerSlot& w : gs.worker) {
    w.cursor.store(start, std::memory_order_relaxed);
    w.consumed.store(0, std::memory_order_relaxed);
    w.voids_seen.store(0, std::memory_order_relaxed);
    w.handler_errors.store(0, std::memory_order_relaxed);
    w.dup_dropped.store(0, std::memory_order_relaxed);
    w.too_old_dropped.store(0, std::memory_order_relaxed);
    w.retries.store(0, std::memory_order_relaxed);
    w.dead_lettered.store(0, std::memory_order_relaxed);
    w.dedup_evictions.store(0, std::memory_order_relaxed);
    w.redelivered.store(0, std::memory_order_relaxed);
    w.redriven.store(0, std::memory_order_relaxed);
    w.inflight.store(layout::kNoPosition, std::memory_order_relaxed);
    w.redeliver_until.store(0, std::memory_order_relaxed);
    w.owner.store(layout::owner::make(layout::owner::free, 0), std::memory_order_relaxed);
  }
  gs.state.store(layout::owner::make(layout::owner::active, pid), std::memory_order_seq_cst);
  r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
}

void unregister_group(const detail::SegmentRefs& r, std::uint32_t g) {
  GroupSlot& gs = r.groups[g];
  gs.registrant_start.store(0, std::memory_order_relaxed);  // 0: a next registrant is checked by pid alone
  gs.state.store(layout::owner::make(layout::owner::free, 0), std::memory_order_seq_cst);
  r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
}

// Zeroes group g's dedup windows (all worker slots) and empties its dead-letter ring.
void reset_group_state(const detail::SegmentRefs& r, std::uint32_t g) {
  if (r.dedup != nullptr) {
    for (std::uint32_t w = 0; w < layout::kMaxWorkers; ++w) {
      for (std::uint32_t i = 0; i < r.dedup_producers; ++i) {
        layout::DedupWindowHeader* h = r.dedup_window(g, w, i);
        h->producer.store(0, std::memory_order_relaxed);
        h->last_used.store(0, std::memory_order_relaxed);
        DedupWindow(&h->top, r.dedup_words_of(h), r.dedup_words).reset();
      }
    }
  }
  for (std::uint32_t w = 0; w < layout::kMaxWorkers; ++w) {
    for (std::uint32_t b = 0; b < layout::kLatencyWords; ++b) r.latency_of(g, w)[b].store(0, std::memory_order_relaxed);
  }
  if (r.dlq != nullptr) {
    layout::DlqControl& c = *r.dlq_control(g);
    // Under the ring's lock: a tool still at work on the ring of the group removed from
    // this slot (DeadLetters, under the same lock, checks the registration first) ends
    // before the ring is emptied under it; a dead holder's lock is taken over.
    detail::RobustLock ring(c.lock, c.lock_start);
    c.head.store(0, std::memory_order_relaxed);
    c.tail.store(0, std::memory_order_relaxed);
    c.next_id.store(1, std::memory_order_relaxed);
    c.entries.store(0, std::memory_order_relaxed);
    c.appended.store(0, std::memory_order_relaxed);
    c.removed.store(0, std::memory_order_relaxed);
    c.full_waits.store(0, std::memory_order_relaxed);
  }
}

// After a change of worker count keys move between workers: every new worker gets, for
// each producer, the union of what the old workers had seen (a producer's events are
// identified by (producer id, producer_seq) whichever worker handled them).
void merge_dedup(const detail::SegmentRefs& r, std::uint32_t g, std::uint32_t old_workers, std::uint32_t new_workers) {
  if (r.dedup == nullptr) return;
  struct Merged {
    Merged(std::uint64_t p, std::uint32_t bits) : producer(p), window(bits) {}
    std::uint64_t producer;
    std::uint64_t last_used = 0;
    OwnedDedupWindow window;
  };
  std::vector<std::unique_ptr<Merged>> merged;
  const std::uint32_t bits = (r.dedup_words - 1) * 64;
  for (std::uint32_t w = 0; w < old_workers; ++w) {
    for (std::uint32_t i = 0; i < r.dedup_producers; ++i) {
      layout::DedupWindowHeader* h = r.dedup_window(g, w, i);
      const std::uint64_t producer = h->producer.load(std::memory_order_relaxed);
      if (producer == 0) continue;
      auto it = std::find_if(merged.begin(), merged.end(), [&](const auto& m) { return m->producer == producer; });
      if (it == merged.end()) {
        merged.push_back(std::make_unique<Merged>(producer, bits));
        it = merged.end() - 1;
      }
      (*it)->last_used = std::max((*it)->last_used, h->last_used.load(std::memory_order_relaxed));
      (*it)->window->merge(DedupWindow(&h->top, r.dedup_words_of(h), r.dedup_words));
    }
  }
  // Keep the most recently used producers if there are more than a table holds.
  std::sort(merged.begin(), merged.end(), [](const auto& a, const auto& b) { return a->last_used > b->last_used; });
  for (std::uint32_t w = 0; w < std::max(old_workers, new_workers); ++w) {
    for (std::uint32_t i = 0; i < r.dedup_producers; ++i) {
      layout::DedupWindowHeader* h = r.dedup_window(g, w, i);
      DedupWindow view(&h->top, r.dedup_words_of(h), r.dedup_words);
      view.reset();
      h->producer.store(0, std::memory_order_relaxed);
      h->last_used.store(0, std::memory_order_relaxed);
      if (w >= new_workers || i >= merged.size()) continue;
      h->producer.store(merged[i]->producer, std::memory_order_relaxed);
      h->last_used.store(merged[i]->last_used, std::memory_order_relaxed);
      view.merge(*merged[i]->window);
    }
  }
}

}  // namespace

namespace detail {

std::string group_name(const layout::GroupSlot& g) {
  char buf[layout::kGroupNameBytes + 1] = {};
  for (std::size_t w = 0; w < layout::kGroupNameBytes / 8; ++w) {
    const std::uint64_t v = g.name[w].load(std::memory_order_relaxed);
    std::memcpy(buf + 8 * w, &v, 8);
  }
  return std::string(buf, ::strnlen(buf, layout::kGroupNameBytes));
}

std::uint32_t find_group(const SegmentRefs& r, std::string_view name, bool* pending) {
  for (std::uint32_t i = 0; i < r.max_groups; ++i) {
    const std::uint64_t st = r.groups[i].state.load(std::memory_order_acquire);  // pairs with join()
    const auto s = layout::owner::state(st);
    if (s != layout::owner::active && s != layout::owner::registering) continue;
    if (group_name(r.groups[i]) != name) continue;
    if (s == layout::owner::active) return i;
    if (pending != nullptr && !process_dead(layout::owner::pid(st), r.groups[i].registrant_start.load(std::memory_order_relaxed))) {
      *pending = true;
    }
  }
  return kNoGroup;
}

bool forget_dead_registrant(GroupSlot& g, std::uint64_t state) noexcept {
  if (layout::owner::state(state) != layout::owner::registering ||
      !process_dead(layout::owner::pid(state), g.registrant_start.load(std::memory_order_relaxed))) {
    return false;
  }
  // 0 means "check the pid alone": harmless over a live registrant that took the slot
  // meanwhile; a dead one's start left beside a new registrant's pid would not be.
  g.registrant_start.store(0, std::memory_order_relaxed);
  return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------------

struct ConsumerGroup::State {
  Segment seg;
  std::string name;
  std::uint32_t slot = 0;
  GroupOptions options;
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;
  std::uint32_t owner_pid = 0;  // the process that joined
};

ConsumerGroup::ConsumerGroup(std::unique_ptr<State> s) : st_(std::move(s)) {}
ConsumerGroup::ConsumerGroup(ConsumerGroup&&) noexcept = default;
ConsumerGroup& ConsumerGroup::operator=(ConsumerGroup&& o) noexcept {
  if (this != &o) {
    release();
    st_ = std::move(o.st_);
  }
  return *this;
}

ConsumerGroup::~ConsumerGroup() { release(); }

void ConsumerGroup::release() noexcept {
  if (!st_) return;
  // A forked child's copy: the worker slots are the parent's, and the parent's threads
  // do not exist here (destroying their handles would end the process). The copy is let
  // go of without stopping or writing anything; its memory and mapping stay until the
  // child exits or execs.
  if (detail::inherited_from(st_->owner_pid)) {
    (void)st_.release();
    return;
  }
  try {
    stop();
  } catch (...) {
    // A worker's error is reported by stop(); a destructor has nowhere to put it.
  }
  // Redrives kept for a deferred attempt go back to `redrive` while this process still
  // holds the worker slots, so the group's next worker takes them.
  for (const std::unique_ptr<Worker>& w : st_->workers) w->give_back_redrives();
  const std::uint32_t pid = detail::self_process().pid;
  GroupSlot& gs = st_->seg.refs().groups[st_->slot];
  for (std::uint32_t i = 0; i < st_->workers.size(); ++i) {
    gs.worker[i].owner.store(layout::owner::make(layout::owner::detached, pid), std::memory_order_release);
  }
  st_.reset();
}

namespace {

// The first of a join's options it cannot take, named with its value; "" if none.
// Durations become unsigned nanoseconds, where a negative one would wrap (unblock_after
// to centuries: a dead producer's hole never repaired).
std::string option_problem(const GroupOptions& o, std::uint64_t capacity) {
  using std::to_string;
  if (o.workers == 0 || o.workers > layout::kMaxWorkers) {
    return "workers is " + to_string(o.workers) + ": it must be from 1 to " + to_string(layout::kMaxWorkers);
  }
  // One CPU a worker, or none: a list longer than the workers is as likely a forgotten
  // `workers` as a shorter one.
  if (!o.cpus.empty() && o.cpus.size() != o.workers) {
    return to_string(o.workers) + " worker" + (o.workers == 1 ? "" : "s") + " but " + to_string(o.cpus.size()) +
           " cpus given (one a worker, or none)";
  }
  for (const int cpu : o.cpus) {
    if (std::string why = cpu_unavailable(cpu); !why.empty()) return why;
  }
  if (o.batch == 0 || o.batch > kMaxBatch) {
    return "batch is " + to_string(o.batch) + ": it must be from 1 to " + to_string(kMaxBatch);
  }
  for (const auto& [field, value] : {std::pair{"retry.max_attempts", o.retry.max_attempts},
                                     std::pair{"max_pending", o.max_pending}}) {
    if (value == 0) return std::string(field) + " is 0: it must be at least 1";
  }
  if (o.max_deaths > kMaxDeaths) {
    return "max_deaths is " + to_string(o.max_deaths) + ": it must be from 0 (off) to " + to_string(kMaxDeaths);
  }
  if (o.start > StartFrom::position) return "start is " + to_string(static_cast<int>(o.start)) + ", not a StartFrom";
  if (o.retry.backoff > RetryPolicy::Backoff::deferred) {
    return "retry.backoff is " + to_string(static_cast<int>(o.retry.backoff)) + ", not a RetryPolicy::Backoff";
  }
  if (o.retry.while_retrying > RetryPolicy::KeyOrder::release) {
    return "retry.while_retrying is " + to_string(static_cast<int>(o.retry.while_retrying)) +
           ", not a RetryPolicy::KeyOrder";
  }
  if (o.retry.delay.count() < 0) return "retry.delay is " + to_string(o.retry.delay.count()) + " ns: it must not be negative";
  if (std::string why = detail::wait_problem(o.wait, "wait"); !why.empty()) return why;
  if (o.unblock_after.count() < 0 || o.unblock_after > kMaxUnblockAfter) {
    return "unblock_after is " + to_string(o.unblock_after.count()) + " ms: it must be from 0 to 24 h";
  }
  if (o.trail_bytes > capacity / 4) {
    return "trail_bytes is " + to_string(o.trail_bytes) + ": it must be at most a quarter of the log's capacity (" +
           to_string(capacity / 4) + " bytes)";
  }
  if (o.trail_max_delay.count() < 0 || o.trail_max_delay > std::chrono::seconds{1}) {
    return "trail_max_delay is " + to_string(o.trail_max_delay.count()) + " us: it must be from 0 to 1 s";
  }
  return {};
}

}  // namespace

ConsumerGroup ConsumerGroup::join(const Segment& segment, std::string_view name, const GroupOptions& options) {
  segment.require_writable("join a consumer group");
  const std::string where = where_of(segment, name);
  if (std::string why = check_name(name, layout::kGroupNameBytes - 1); !why.empty()) {
    throw Error(Errc::invalid_name, where + ": name " + why);
  }
  if (std::string why = option_problem(options, segment.refs().capacity); !why.empty()) {
    throw Error(Errc::invalid_options, where + ": " + why);
  }
  if (options.dedup && segment.refs().dedup == nullptr) {
    throw Error(Errc::invalid_options, where + ": dedup needs a segment created with a dedup window (dedup_window > 0)");
  }
  detail::register_fast_side();
  const detail::SegmentRefs& r = segment.refs();
  (void)Tsc::calibration(r.control->tsc_mult);  // stamps and deadlines; a rate another process left is checked
  const detail::ProcessId& me = detail::self_process();

  std::uint32_t g = kNoGroup;
  // Waits for another live registrant of the name go by the clock: a count of yields
  // would be milliseconds on an idle CPU, less than a registrant may be descheduled.
  const std::uint64_t since = detail::monotonic_ns();
  // Held from the look-up until the worker slots are taken (DESIGN.md section 6): one
  // registration at a time, else two joins of one new name that each found it missing
  // would both register it, each in its own slot; and no remove() between finding the
  // group and taking its workers, else the workers would run in a freed slot.
  std::optional<detail::RobustLock> registering;
  while (g == kNoGroup) {
    registering.emplace(r.control->group_lock, r.control->group_lock_start);
    bool pending = false;
    g = find_group(r, name, &pending);
    if (g != kNoGroup) break;
    if (detail::monotonic_ns() - since > detail::kRegistrationWaitNs) {
      throw Error(Errc::busy, where + ": another live process is still registering this group after " +
                                  std::to_string(detail::kRegistrationWaitNs / 1'000'000'000) + " s");
    }
    if (pending) {
      registering.reset();
      std::this_thread::yield();
      continue;
    }
    // A free slot, or one a dead process left half-registered (a producer's limit
    // refresh frees those too; whichever CAS comes first takes it).
    std::uint32_t free_slot = kNoGroup;
    for (std::uint32_t i = 0; i < r.max_groups && free_slot == kNoGroup; ++i) {
      std::uint64_t st = r.groups[i].state.load(std::memory_order_acquire);
      if ((layout::owner::state(st) == layout::owner::free || detail::forget_dead_registrant(r.groups[i], st)) &&
          r.groups[i].state.compare_exchange_strong(st, layout::owner::make(layout::owner::registering, me.pid),
                                                    std::memory_order_seq_cst)) {
        r.groups[i].registrant_start.store(me.start_ticks, std::memory_order_relaxed);
        free_slot = i;
      }
    }
    if (free_slot == kNoGroup) {
      throw Error(Errc::no_slot, where + ": all " + std::to_string(r.max_groups) + " group slots are in use");
    }
    register_group(r, free_slot, name, options, me.pid, where);
    // A library of minor version 0 registers without the lock: of two slots registered
    // for one name at once, the lower wins.
    const std::uint32_t first = find_group(r, name);
    if (first != free_slot) {
      unregister_group(r, free_slot);
      continue;
    }
    g = free_slot;
  }

  RINGBUS_FAULT_POINT(in_join);
  GroupSlot& gs = r.groups[g];
  // Take the worker slots; refuse if a live process (this one included) runs one.
  std::vector<std::uint32_t> taken;
  auto give_back = [&] {
    for (std::uint32_t i : taken) {
      gs.worker[i].owner.store(layout::owner::make(layout::owner::detached, me.pid), std::memory_order_release);
    }
  };
  const std::uint64_t kept = std::clamp<std::uint64_t>(gs.workers.load(std::memory_order_acquire), 1,
                                                       layout::kMaxWorkers);
  const std::uint32_t need = std::max<std::uint32_t>(options.workers, static_cast<std::uint32_t>(kept));
  for (std::uint32_t i = 0; i < need; ++i) {
    WorkerSlot& ws = gs.worker[i];
    std::uint64_t w = ws.owner.load(std::memory_order_acquire);
    const auto s = layout::owner::state(w);
    if (s == layout::owner::active || s == layout::owner::attaching) {
      const bool dead = detail::owner_dead(w, ws.owner_start.load(std::memory_order_acquire));
      if (!dead) {
        give_back();
        throw Error(Errc::busy, where + ": worker " + std::to_string(i) + " is run by live pid " +
                                    std::to_string(layout::owner::pid(w)));
      }
    }
    if (!ws.owner.compare_exchange_strong(w, layout::owner::make(layout::owner::attaching, me.pid),
                                          std::memory_order_acq_rel)) {
      give_back();
      throw Error(Errc::busy, where + ": worker " + std::to_string(i) + " was taken concurrently");
    }
    ws.owner_start.store(me.start_ticks, std::memory_order_relaxed);
    ws.owner.store(layout::owner::make(layout::owner::active, me.pid), std::memory_order_release);
    taken.push_back(i);
    if (s == layout::owner::active || s == layout::owner::attaching) note_death_in_flight(ws);
  }
  if (kept != options.workers) {
    // Keys move between workers: everyone restarts from the slowest cursor, which
    // producers already respect, so lowering the others is safe (at-least-once).
    // The events between the slowest cursor and the furthest any old worker got may have
    // been handled, whichever worker their key now routes to: every new worker's
    // redelivery window reaches that far (make_state bounds it by the tail).
    std::uint64_t slowest = layout::kNoPosition;
    std::uint64_t reached = 0;
    for (std::uint64_t i = 0; i < kept; ++i) {
      const WorkerSlot& ws = gs.worker[i];
      const std::uint64_t cursor = ws.cursor.load(std::memory_order_acquire);
      slowest = std::min(slowest, cursor);
      reached = std::max({reached, cursor, layout::redelivery_end(ws)});
    }
    for (WorkerSlot& ws : gs.worker) {
      ws.cursor.store(slowest, std::memory_order_release);
      ws.redeliver_until.store(reached, std::memory_order_relaxed);
    }
    merge_dedup(r, g, static_cast<std::uint32_t>(kept), options.workers);
    gs.workers.store(options.workers, std::memory_order_release);
    r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
  }
  // Slots beyond the new worker count are not run by anyone.
  for (std::uint32_t i = options.workers; i < need; ++i) {
    gs.worker[i].owner.store(layout::owner::make(layout::owner::detached, me.pid), std::memory_order_release);
  }
  registering.reset();
  gs.resumes.fetch_add(1, std::memory_order_relaxed);
  // This process now holds every worker slot: a redelivery still `delivering` was cut
  // short by its worker's death and is delivered again.
  if (r.dlq != nullptr) detail::dlq_resume_deliveries(r, g);

  // Cursors are shared memory: a worker starts only from one that can be a record
  // position (8-byte aligned, not beyond the tail).
  const std::uint64_t tail = r.control->tail.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < options.workers; ++i) {
    const std::uint64_t c = gs.worker[i].cursor.load(std::memory_order_acquire);
    if (!layout::valid_position(tail) || !layout::valid_position(c) || c > tail) {
      give_back();
      throw Error(Errc::corrupt, where + ": worker " + std::to_string(i) + " cursor " + std::to_string(c) +
                                     " cannot be a record position (tail " + std::to_string(tail) + ")");
    }
  }

  // This process holds the worker slots from here on: an allocation that fails below
  // gives them back, or the group could not be joined again until the process exited.
  std::unique_ptr<State> st;
  try {
    st = make_state(r, segment, name, g, options, me.pid);
  } catch (...) {
    give_back();
    throw;
  }
  return ConsumerGroup(std::move(st));
}

// The handle's state: a Worker per worker slot, started from its cursor.
std::unique_ptr<ConsumerGroup::State> ConsumerGroup::make_state(const detail::SegmentRefs& r, const Segment& segment,
                                                                std::string_view name, std::uint32_t g,
                                                                const GroupOptions& options, std::uint32_t pid) {
  GroupSlot& gs = r.groups[g];
  auto st = std::make_unique<State>();
  st->seg = segment;
  st->owner_pid = pid;
  st->name = std::string(name);
  st->slot = g;
  st->options = options;
  for (std::uint32_t i = 0; i < options.workers; ++i) {
    auto w = std::unique_ptr<Worker>(new Worker());
    w->r_ = r;
    w->slot_ = &gs.worker[i];
    w->group_ = st->name;
    w->group_slot_ = g;
    w->index_ = i;
    w->workers_ = options.workers;
    w->batch_ = options.batch;
    w->retry_ = options.retry;
    w->dedup_ = options.dedup;
    w->deliver_voids_ = options.deliver_voids;
    w->hold_keys_ = options.retry.while_retrying == RetryPolicy::KeyOrder::hold;
    w->max_pending_ = options.max_pending;
    w->pos_ = gs.worker[i].cursor.load(std::memory_order_acquire);
    gs.worker[i].pending.store(0, std::memory_order_relaxed);  // a previous owner's are delivered again
    // The event in flight when the previous owner stopped (or the batch it was handling),
    // and those it delivered after an event it delivered again (redeliver_until), may
    // have been handled: such events are delivered with Event::redelivered(). Shared
    // memory: the window ends at the tail at most.
    const std::uint64_t inflight = gs.worker[i].inflight.load(std::memory_order_relaxed);
    const std::uint64_t until =
        std::min(layout::redelivery_end(gs.worker[i]), r.control->tail.load(std::memory_order_acquire));
    if (until > w->pos_) {
      w->resume_until_ = until;
      // A death while this worker delivers them again leaves them to the next.
      gs.worker[i].redeliver_until.store(until, std::memory_order_relaxed);
    }
    if (inflight != layout::kNoPosition && inflight >= w->pos_) {
      // Kept while the event is delivered again (shown by `info` and `stat`); with
      // max_deaths, it may park the event.
      const std::uint64_t deaths = inflight & layout::kInflightDeaths;
      if (deaths != 0) {
        w->died_at_ = inflight - deaths;
        w->deaths_ = deaths;
        if (options.max_deaths != 0) w->singly_until_ = w->resume_until_;  // counted against the event, not its batch
      }
    }
    w->max_deaths_ = options.max_deaths;
    if (options.dead_letters && r.dlq != nullptr) w->dlq_control_ = r.dlq_control(g);
    // Parked by the previous owner (whatever this process's dead_letters says: they are
    // in the ring): a batch would hold them, so the window is delivered one event at a
    // time, and attempt() passes them over.
    if (r.dlq != nullptr && w->resume_until_ > w->pos_) {
      w->parked_before_ = detail::dlq_positions(r, g, w->pos_, w->resume_until_);
      if (!w->parked_before_.empty()) w->singly_until_ = w->resume_until_;
    }
    if (options.dedup) w->dedup_table_ = r.dedup_window(g, i, 0);
    if (options.record_latency) w->latency_ = r.latency_of(g, i);
    w->consumed_ = gs.worker[i].consumed.load(std::memory_order_relaxed);
    w->voids_ = gs.worker[i].voids_seen.load(std::memory_order_relaxed);
    w->wait_ = options.wait;
    w->unblock_after_ns_ = static_cast<std::uint64_t>(options.unblock_after.count()) * 1'000'000ull;
    if (options.trail_bytes != 0) {
      w->trail_bytes_ = options.trail_bytes;
      w->trail_delay_ticks_ = Tsc::from_ns(static_cast<std::uint64_t>(options.trail_max_delay.count()) * 1000);
      w->trail_read_every_ticks_ = Tsc::from_ns(kTrailTailReadNs);
    }
    w->batch_buf_.reserve(options.batch);
    st->workers.push_back(std::move(w));
  }
  return st;
}

namespace {

// Throws Error(busy) if a live process runs (or is taking) a worker of group slot `gs`.
// Called under the registration lock, which a join holds until its workers are active.
void refuse_if_run(const GroupSlot& gs, const std::string& where) {
  for (const WorkerSlot& ws : gs.worker) {
    const std::uint64_t w = ws.owner.load(std::memory_order_acquire);
    const auto s = layout::owner::state(w);
    if ((s == layout::owner::active || s == layout::owner::attaching) &&
        !detail::owner_dead(w, ws.owner_start.load(std::memory_order_acquire))) {
      throw Error(Errc::busy, where + ": run by live pid " + std::to_string(layout::owner::pid(w)));
    }
  }
}

}  // namespace

bool ConsumerGroup::remove(const Segment& segment, std::string_view name) {
  segment.require_writable("remove a consumer group");
  const detail::SegmentRefs& r = segment.refs();
  // A join holds it from finding the group until its workers are active (join()).
  detail::RobustLock registering(r.control->group_lock, r.control->group_lock_start);
  const std::uint32_t g = find_group(r, name);
  if (g == kNoGroup) return false;
  refuse_if_run(r.groups[g], where_of(segment, name));
  unregister_group(r, g);
  return true;
}

std::optional<ConsumerGroup::Skipped> ConsumerGroup::skip_to(const Segment& segment, std::string_view name,
                                                              std::uint64_t position) {
  segment.require_writable("move a consumer group's cursors");
  const detail::SegmentRefs& r = segment.refs();
  const std::string where = where_of(segment, name);
  detail::RobustLock registering(r.control->group_lock, r.control->group_lock_start);
  const std::uint32_t g = find_group(r, name);
  if (g == kNoGroup) return std::nullopt;
  GroupSlot& gs = r.groups[g];
  refuse_if_run(gs, where);
  const std::uint64_t tail = r.control->tail.load(std::memory_order_acquire);
  const std::uint64_t n = std::clamp<std::uint64_t>(gs.workers.load(std::memory_order_acquire), 1, layout::kMaxWorkers);
  std::uint64_t slowest = layout::kNoPosition;
  for (std::uint64_t i = 0; i < n; ++i) slowest = std::min(slowest, gs.worker[i].cursor.load(std::memory_order_acquire));
  if (!layout::valid_position(tail) || !layout::valid_position(slowest) || slowest > tail || tail - slowest > r.capacity) {
    throw Error(Errc::corrupt, where + ": cursor " + std::to_string(slowest) + " cannot be a record position (tail " +
                                   std::to_string(tail) + ")");
  }
  if (position == layout::kNoPosition) position = tail;
  const std::string at = where + ": position " + std::to_string(position);
  // Producers keep within a lap of the slowest cursor: one moved back could be behind
  // records they have overwritten already.
  if (const std::string refused =
          why_not_a_start(r, slowest, position, tail, at, ", the group's cursor: cursors only move forward");
      !refused.empty()) {
    throw Error(Errc::invalid_options, at + refused);
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    WorkerSlot& ws = gs.worker[i];
    if (ws.cursor.load(std::memory_order_relaxed) >= position) continue;  // already past it
    // The event a dead worker was handling is skipped too: not redelivered.
    if (ws.inflight.load(std::memory_order_relaxed) < position) ws.inflight.store(layout::kNoPosition, std::memory_order_relaxed);
    ws.cursor.store(position, std::memory_order_release);
  }
  return Skipped{slowest, position};
}

// A moved-from group has no state: it has no workers, no name, no segment, no threads.
std::uint32_t ConsumerGroup::workers() const noexcept {
  return st_ ? static_cast<std::uint32_t>(st_->workers.size()) : 0;
}
Worker& ConsumerGroup::worker(std::uint32_t i) noexcept { return *st_->workers[i]; }
const std::string& ConsumerGroup::name() const noexcept {
  static const std::string none;
  return st_ ? st_->name : none;
}
const Segment& ConsumerGroup::segment() const noexcept {
  static const Segment none;
  return st_ ? st_->seg : none;
}

bool ConsumerGroup::running() const noexcept {
  return st_ && !st_->threads.empty() && !st_->failed.load(std::memory_order_acquire) &&
         !st_->stop.load(std::memory_order_acquire);
}

void ConsumerGroup::prepare_start() {
  if (!st_) throw Error(Errc::invalid_options, "no consumer group: cannot start it (a ConsumerGroup moved from)");
  State* s = st_.get();
  if (!s->threads.empty()) {
    // Two threads on one Worker would deliver its events twice and race on its state.
    // A failed group's threads have ended, but their error waits for stop().
    throw Error(Errc::busy, "group \"" + s->name + "\": " +
                                (s->failed.load(std::memory_order_acquire) ? "a worker failed; stop() reports why"
                                                                           : "already started") +
                                ", and stop() must end its threads before it starts again");
  }
  s->stop.store(false, std::memory_order_relaxed);
  s->failed.store(false, std::memory_order_relaxed);
}

void ConsumerGroup::launch(std::uint32_t i, std::function<void(Worker&, const std::atomic<bool>&)> body) {
  State* s = st_.get();
  const int cpu = s->options.cpus.empty() ? -1 : s->options.cpus[i];
  s->threads.emplace_back([s, i, cpu, body = std::move(body)]() mutable {
    try {
      if (cpu >= 0) pin_this_thread(cpu);
      detail::register_fast_side();
      body(*s->workers[i], s->stop);
    } catch (...) {
      std::lock_guard lock(s->error_mutex);
      if (!s->error) s->error = std::current_exception();
      s->failed.store(true, std::memory_order_release);
      s->stop.store(true, std::memory_order_release);  // one failed worker stops the group
    }
  });
}

static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free,
              "request_stop() may be called from a signal handler");

void ConsumerGroup::request_stop() noexcept {
  if (!st_) return;
  // Async-signal-safe: a lock-free store and detail::wake_all.
  st_->stop.store(true, std::memory_order_release);
  // Workers parked on the data futex would otherwise sleep out their timeout. Other
  // processes' parked consumers see a spurious wake-up and park again.
  detail::wake_all(st_->seg.refs().control->data_seq);
}

void ConsumerGroup::stop() {
  if (!st_) return;
  request_stop();
  // A handler of this group, on the thread that runs one of its workers (Worker::runner_):
  // that thread cannot join itself, and the threads belong to whoever started them, who
  // joins them by a later stop().
  for (const auto& w : st_->workers) {
    if (w->runner_.load(std::memory_order_relaxed) == &detail::handler_frames) return;
  }
  for (std::thread& t : st_->threads) {
    if (t.joinable()) t.join();
  }
  st_->threads.clear();
  std::exception_ptr e;
  {
    std::lock_guard lock(st_->error_mutex);
    std::swap(e, st_->error);
  }
  if (e) std::rethrow_exception(e);
}

// ---------------------------------------------------------------------------------

Worker::Outcome Worker::dead_letter(const Event& e, std::uint32_t attempts, std::uint64_t first_failure_ns) {
  const std::string why = "failed " + std::to_string(attempts) + " time" + (attempts == 1 ? "" : "s") + ": " + last_error_;
  if (dlq_control_ == nullptr) failed(e, why);
  const Status s = detail::dlq_append(r_, group_slot_, e.header(), static_cast<std::uint32_t>(e.payload().size()),
                                      e.position(), attempts, index_, first_failure_ns, last_error_);
  if (s == Status::ok) {
    RINGBUS_FAULT_POINT(after_dead_letter);
    bump(slot_->dead_lettered);
    return Outcome::parked;
  }
  if (s == Status::full) {
    // Never dropped: the event waits (holding the cursor, and its key if held) until
    // there is room. The counter is what `ringbus stat` shows.
    dlq_control_->full_waits.fetch_add(1, std::memory_order_relaxed);
    return Outcome::pending;
  }
  failed(e, why + "; and it cannot be parked in the dead-letter ring (" + std::string(to_string(s)) + ")");
}

Worker::Outcome Worker::park(const Event& e, Pending* p, std::uint32_t attempts, std::uint64_t first_failure_ns,
                             std::uint64_t now) {
  const Outcome o = dead_letter(e, attempts, first_failure_ns);
  if (o != Outcome::pending) return o;
  // At least max_attempts: the retry parks it rather than calling the handler.
  const std::uint32_t waiting = std::max(attempts, retry_.max_attempts);
  if (p == nullptr) {
    set_aside(e, waiting, first_failure_ns, now + 1'000'000);
  } else {
    p->attempts = waiting;
    p->first_failure_ns = first_failure_ns;
    p->next_ns = now + 1'000'000;
  }
  return o;
}

Worker::Outcome Worker::dead_letter_poison(const Event& e, Pending* p) {
  last_error_ = "its process died " + std::to_string(deaths_) + " time" + (deaths_ == 1 ? "" : "s") +
                " in a row while the handler had it (max_deaths " + std::to_string(max_deaths_) + ")";
  died_at_ = layout::kNoPosition;  // once: a later delivery of it is a new one
  return park(e, p, static_cast<std::uint32_t>(deaths_), detail::realtime_ns(), detail::monotonic_ns());
}

void Worker::give_back_redrives() noexcept {
  for (const KeptRedrive& k : kept_redrives_) {
    detail::dlq_finish_redrive(r_, group_slot_, k.entry, detail::RedriveEnd::given_back);
  }
  kept_redrives_.clear();
  redrive_next_ns_ = UINT64_MAX;
}

std::uint64_t Worker::next_due_ns() const noexcept {
  // Entries held behind a failure of their key (attempts 0) wait for that failure,
  // which is in the list too: only failures are due by the clock.
  std::uint64_t due = redrive_next_ns_;
  for (const Pending& p : pending_) {
    if (p.attempts != 0) due = std::min(due, p.next_ns);
  }
  return due;
}

void Worker::set_aside(const Event& e, std::uint32_t attempts, std::uint64_t first_failure_ns, std::uint64_t next_ns) {
  const std::uint64_t ident = ident_of(e);
  pending_.push_back({e.position(), ident, next_ns, first_failure_ns, attempts});
  if (hold_keys_) ++held_[ident];
  note_pending();
}

DedupWindow* Worker::window_for(std::uint32_t producer_id, std::uint64_t position) noexcept {
  if (dedup_table_ == nullptr) return nullptr;
  const std::uint64_t key = std::uint64_t{producer_id} + 1;
  if (last_window_ && last_producer_ == producer_id) {
    dedup_table_[0].last_used.load(std::memory_order_relaxed);  // table in cache
  } else {
    const std::uint32_t n = r_.dedup_producers;
    const std::uint64_t entry = layout::dedup_entry_bytes(r_.dedup_words);
    auto at = [&](std::uint32_t i) {
      return reinterpret_cast<layout::DedupWindowHeader*>(reinterpret_cast<std::byte*>(dedup_table_) + i * entry);
    };
    layout::DedupWindowHeader* found = nullptr;
    layout::DedupWindowHeader* empty = nullptr;
    layout::DedupWindowHeader* oldest = nullptr;
    for (std::uint32_t k = 0; k < n && found == nullptr; ++k) {
      layout::DedupWindowHeader* h = at(static_cast<std::uint32_t>((mix64(key) + k) % n));
      const std::uint64_t p = h->producer.load(std::memory_order_relaxed);
      if (p == key) found = h;
      if (p == 0 && empty == nullptr) empty = h;
      if (p != 0 && (oldest == nullptr || h->last_used.load(std::memory_order_relaxed) <
                                              oldest->last_used.load(std::memory_order_relaxed))) {
        oldest = h;
      }
    }
    if (found == nullptr) {
      found = empty != nullptr ? empty : oldest;
      if (empty == nullptr) bump(slot_->dedup_evictions);  // the evicted producer is no longer covered
      DedupWindow(&found->top, r_.dedup_words_of(found), r_.dedup_words).reset();
      found->producer.store(key, std::memory_order_relaxed);
    }
    last_window_.emplace(&found->top, r_.dedup_words_of(found), r_.dedup_words);
    last_producer_ = producer_id;
    last_header_ = found;
  }
  last_header_->last_used.store(position, std::memory_order_relaxed);
  return &*last_window_;
}

void Worker::failed(const Event& e, const std::string& why) const {
  throw HandlerFailed("group \"" + group_ + "\" worker " + std::to_string(index_) + ": event at position " +
                          std::to_string(e.position()) + " " + why,
                      e.position());
}

void Worker::idle_step(detail::Waiter& waiter, const std::atomic<bool>& stop) {
  // Stall checks go by the clock (check_stall reads it once a yield): a yield can cost
  // another thread's whole time slice, so counting idle polls alone could put the
  // checks seconds apart on a busy CPU. A busy spin never gives the CPU up; its polls
  // check every kStallCheckEvery that find nothing (nothing_ready).
  //
  // With events set aside or redrives kept, idle as the strategy says, but a sleep or
  // park ends when the next retry (or dead-letter append) is due; a yield-only strategy
  // yields at once.
  std::uint64_t max_ns = UINT64_MAX;
  if (!pending_.empty() || !kept_redrives_.empty()) {
    if (wait_.kind == WaitStrategy::Kind::spin_yield) {
      ::sched_yield();
      check_stall();
      return;
    }
    if (wait_.kind != WaitStrategy::Kind::busy_spin) {
      const std::uint64_t due = next_due_ns();
      const std::uint64_t now = detail::monotonic_ns();
      if (due <= now) return;  // the next poll retries it
      max_ns = due - now;
    }
  }
  // A stop requested after the caller checked the flag is seen here: stop() sets it
  // before bumping data_seq (release), and the park reads data_seq first (acquire). So
  // is a redrive: DeadLetters bumps redrive_requests, then data_seq. Data matters only
  // if the worker may read on (fewer than max_pending events set aside).
  const bool gave_cpu_up = waiter.idle(
      r_.control->data_waiters, r_.control->data_seq,
      [&] {
        return stop.load(std::memory_order_relaxed) || (pending_.size() < max_pending_ && ready_at_position()) ||
               redrives_waiting();
      },
      max_ns);
  if (gave_cpu_up) check_stall();
}

// A reader that waits at a position the tail has passed is stalled by a claim that
// has not been committed. After unblock_after, repair it if its producer is dead.
void Worker::poll_stall_check() noexcept {
  const std::uint64_t now = detail::monotonic_ns();
  // The polls since the last check took now - poll_checked_ns_ (the first check finds
  // that long: the next poll checks too, and tells).
  const std::uint64_t per_poll = (now - poll_checked_ns_) / empty_polls_;
  stall_check_every_mask_ = per_poll >= kSlowPollNs ? 0 : kStallCheckEvery - 1;
  empty_polls_ = 0;
  poll_checked_ns_ = now;
  check_stall_at(now);
}

void Worker::check_stall_at(std::uint64_t now) noexcept {
  if (now - last_check_ns_ < 1'000'000) return;  // reading the tail costs producers a miss
  last_check_ns_ = now;
  if (ready_at_position() || r_.control->tail.load(std::memory_order_acquire) <= pos_) {
    stall_pos_ = layout::kNoPosition;
    return;
  }
  if (stall_pos_ != pos_) {
    stall_pos_ = pos_;
    stall_since_ns_ = now;
    return;
  }
  if (now - stall_since_ns_ < unblock_after_ns_) return;
  if (detail::unblock(r_, pos_)) {
    detail::note_stall_ended(r_, now - stall_since_ns_);
    stall_pos_ = layout::kNoPosition;
  } else if (stall_counted_ != pos_) {
    // Past unblock_after and not repaired: its owner lives (a producer stopped
    // mid-claim), or no journal names the position (damaged memory). Counted once a
    // stall, so that `ringbus info` shows a reader held at a hole.
    stall_counted_ = pos_;
    r_.control->stalls_unresolved.fetch_add(1, std::memory_order_relaxed);
  }
}

void Worker::refuse_other_thread() const {
  throw Error(Errc::busy, "group \"" + group_ + "\" worker " + std::to_string(index_) +
                              ": polled while another thread runs it (ConsumerGroup::start, or Worker::run); a "
                              "worker is polled by one caller at a time");
}

void Worker::refuse_reentry() const {
  if (!detail::polling(slot_->cursor)) return;
  // The outer poll would go on from what it read before its handler, while the inner
  // poll moved the cursor: it would skip an event, read inside one, or deliver twice.
  throw Error(Errc::busy, "group \"" + group_ + "\" worker " + std::to_string(index_) +
                              ": polled from its own handler (a worker is polled by one caller at a time)");
}

void Worker::corrupt(std::uint64_t pos, const char* what) const {
  throw Error(Errc::corrupt, "group \"" + group_ + "\" worker " + std::to_string(index_) + ": at position " +
                                 std::to_string(pos) + ": " + what);
}

std::string cpu_unavailable(int cpu) {
  if (cpu < 0) return "cpu " + std::to_string(cpu) + " is negative";
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return {};  // let the OS decide at pin time
  if (cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed)) return {};
  std::string list;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &allowed)) continue;
    if (!list.empty()) list += ',';
    list += std::to_string(c);
  }
  std::string why = "cpu ";
  why += std::to_string(cpu);
  why += " is not one this process may run on (allowed: ";
  why += list;
  why += ")";
  return why;
}

void pin_this_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (const int err = ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set); err != 0) {
    throw Error(Errc::system, "cannot pin thread to cpu " + std::to_string(cpu) + ": " + std::strerror(err));
  }
}

}  // namespace ringbus
