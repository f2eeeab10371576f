// Consumer groups. A group is named and registered in the segment; it sees every
// event; its cursors live in the segment, so a restarted process resumes where the
// group stopped (at-least-once). A group of N workers splits events by key: every
// worker reads every record, and handles those whose key routes to it (hash.hpp,
// route()), so one key's events are handled in log order by one worker while
// different keys are handled in parallel. Every group gates producers: no record is
// overwritten before all its workers have moved past it.
//
// Failures (DESIGN.md, "Retries and dead letters"): a handler returns ok, retry or
// fail (an exception is a failure); the group's RetryPolicy decides when to try again;
// after max_attempts the event goes to the group's dead-letter ring (dlq.hpp), or,
// without one, the worker stops on it. With dedup on, events already handled (by
// producer id and producer_seq, in windows kept in the segment) are dropped before the
// handler, so a producer that republishes causes no duplicate delivery.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ringbus/clock.hpp"
#include "ringbus/dedup.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/detail/fault.hpp"
#include "ringbus/detail/handler_scope.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/waiter.hpp"
#include "ringbus/event.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/record.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/status.hpp"
#include "ringbus/wait_strategy.hpp"

namespace ringbus {

// What a handler did with an event.
enum class Handled : std::uint8_t {
  ok,     // done: the cursor moves past it
  retry,  // try again, by the group's RetryPolicy
  fail,   // this attempt failed (an exception thrown by the handler counts as fail)
};

enum class StartFrom : std::uint8_t {
  end,       // a new group starts at the tail: it sees events published after it joined
  earliest,  // a new group starts at the slowest cursor of the other groups, or the tail
  // A new group starts at GroupOptions::start_position: a record position (e.g. the
  // position a projection's snapshot folded up to) from the slowest cursor of the other
  // groups to the tail. Behind it, producers may have overwritten the records already;
  // with no other group, only the tail is safe. join throws Error(invalid_options) for
  // a position outside that range, or where no record starts (checked as skip_to does).
  position,
};

// When to call the handler again after it did not return ok. `retry` and `fail` are
// treated alike: both count as a failed attempt.
struct RetryPolicy {
  std::uint32_t max_attempts = 3;  // handler calls per event before it is dead-lettered
  enum class Backoff : std::uint8_t {
    immediate,  // call again at once
    spin,       // busy-wait `delay` between attempts (the worker does nothing else)
    deferred,   // set the event aside; handle other events; try again after `delay`,
                // doubling each attempt up to one second (or `delay`, if longer)
  } backoff = Backoff::immediate;
  std::chrono::nanoseconds delay{0};  // not negative
  // Deferred only: later events of the failing event's key wait behind it (hold, keeps
  // per-key order) or are handled meanwhile (release).
  enum class KeyOrder : std::uint8_t { hold, release } while_retrying = KeyOrder::hold;

  static constexpr std::chrono::nanoseconds kMaxDoubled = std::chrono::seconds{1};
  // How long a deferred retry waits after the event's `failures`-th failed attempt
  // (1, 2, ...): delay, 2 x delay, 4 x delay, ..., then a second from where the doubling
  // reaches it on, or `delay` throughout if that is longer. Never less than the wait
  // before it.
  [[nodiscard]] constexpr std::chrono::nanoseconds deferred_wait(std::uint32_t failures) const noexcept {
    if (delay.count() <= 0) return std::chrono::nanoseconds{0};
    if (delay >= kMaxDoubled) return delay;
    std::chrono::nanoseconds wait = delay;
    for (std::uint32_t n = 1; n < failures && wait < kMaxDoubled; ++n) wait *= 2;  // < 2^31 ns: no overflow
    return std::min(wait, kMaxDoubled);
  }
};
static_assert(RetryPolicy{.delay = std::chrono::nanoseconds{3}}.deferred_wait(40) == RetryPolicy::kMaxDoubled);
static_assert(RetryPolicy{.delay = std::chrono::seconds{5}}.deferred_wait(7) == std::chrono::seconds{5});

// The largest GroupOptions::batch: a worker keeps room for a batch's events (24 bytes
// each), so a batch of 2^32 asked a join for 96 GiB.
inline constexpr std::uint32_t kMaxBatch = 1u << 16;

// The largest GroupOptions::max_deaths: the count lives in the low bits of a worker's
// in-flight position (layout::kInflightDeaths).
inline constexpr std::uint32_t kMaxDeaths = static_cast<std::uint32_t>(layout::kInflightDeaths);
static_assert(layout::kInflightDeaths < kRecordAlign && (layout::kInflightDeaths & (layout::kInflightDeaths + 1)) == 0,
              "the count fits below a record position's alignment");

struct GroupOptions {
  std::uint32_t workers = 1;           // 1 .. layout::kMaxWorkers
  std::vector<int> cpus;               // cpus[i]: the CPU worker i's thread is pinned to (empty: not pinned);
                                       // join refuses one outside the process's affinity mask, and a
                                       // list whose length is not `workers`
  WaitStrategy wait = WaitStrategy::spin_yield();
  StartFrom start = StartFrom::end;    // only for a group that does not exist yet
  std::uint64_t start_position = 0;    // StartFrom::position's position
  std::uint32_t batch = 256;           // most events one poll hands to the handler (1 .. kMaxBatch)
  RetryPolicy retry{};
  // Drop events already handled by (producer id, producer_seq) before the handler. Needs
  // a segment with a dedup region (SegmentOptions::dedup_window > 0).
  bool dedup = false;
  // Park events that failed max_attempts times in the group's dead-letter ring (when the
  // segment has them). Without one the worker stops on the event (HandlerFailed).
  bool dead_letters = true;
  // Hand void records to the handler (Event::is_void()); by default they are counted only.
  bool deliver_voids = false;
  // Record publish-to-handle latency (handler start minus the event's header timestamp,
  // across processes within the TSC clock's anchoring error) in the segment, for
  // `ringbus stat`. One more clock read per event.
  bool record_latency = false;
  // Events set aside by deferred retries (and those held behind them) before the worker
  // stops reading ahead.
  std::uint32_t max_pending = 4096;
  // Poison events: park an event in the dead-letter ring, unhandled, once the process
  // handling it died this many times in a row while its handler had it (a crash in the
  // handler kills the process before any retry). 0 (the default): never; at most
  // kMaxDeaths. A batch (run_batch, poll_batch) a process died in is delivered again one
  // event at a time, so that the deaths are counted against the event that causes them.
  std::uint32_t max_deaths = 0;
  std::chrono::milliseconds unblock_after{100};  // stall before a dead producer's claim is repaired (0 .. 24 h)
  // Throughput over latency. 0 (the default): each record is read as soon as it is
  // committed. Otherwise a worker with more than `trail_bytes` of log beyond its position
  // reads only the records that start that far below the tail, and a shorter backlog
  // waits up to `trail_max_delay` for more before it is read all the same. A reader
  // right behind the writer takes each line across while the writer is still filling
  // the lines beside it; a few KiB behind, the writer fills them undisturbed (DESIGN.md,
  // "Trailing readers"). At most a quarter of the log's capacity; the delay 0 .. 1 s.
  std::uint32_t trail_bytes = 0;
  std::chrono::microseconds trail_max_delay{50};
};

// Thrown by a worker when an event's handler failed max_attempts times and there is no
// dead-letter ring to park it in (or it cannot be parked). The worker stops with its
// cursor on that event: nothing is skipped.
class HandlerFailed : public std::runtime_error {
 public:
  HandlerFailed(const std::string& what, std::uint64_t position) : std::runtime_error(what), position_(position) {}
  [[nodiscard]] std::uint64_t position() const noexcept { return position_; }

 private:
  std::uint64_t position_;
};

class ConsumerGroup;

// Worker i of a group: the role handle that reads the log. Poll it from your own
// thread, or let ConsumerGroup::start() run it on a pinned thread.
class Worker {
 public:
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Hands up to `max_events` ready events that route to this worker to `handler`
  // (`Handled handler(const Event&)`, or returning void = ok), after retrying events
  // set aside earlier. Returns how many new events it took off the log: handed to the
  // handler, dropped as duplicates, or set aside. Never blocks. Polls that find the next
  // record claimed but not committed repair its claim once its producer is found dead,
  // after unblock_after, as run() does.
  template <class H>
  std::size_t poll(H&& handler, std::size_t max_events);
  template <class H>
  std::size_t poll(H&& handler) {
    return poll(std::forward<H>(handler), batch_);
  }

  // Batch delivery: `handler(std::span<const Event>)` gets every ready event that routes
  // here (up to `max_events`) in one call; returning void or Handled::ok acknowledges
  // them all. If the batch fails, its events are delivered again one at a time (each as
  // a span of one) under the retry policy, so that a failure names its event. With dedup,
  // voids delivered or events set aside, this takes the one-at-a-time path throughout.
  template <class H>
  std::size_t poll_batch(H&& handler, std::size_t max_events);

  // Delivers the dead letters a tool marked for redelivery whose key routes to this
  // worker (Event::redriven()) under the group's retry policy: up to max_attempts
  // handler calls, `spin` waiting between them, `deferred` keeping the entry (state
  // `delivering`) and calling again when its wait is over, at a later poll_redrives.
  // Each failed call is added to the entry's attempts as it fails (DeadLetter shows it,
  // and the time of the next call while one is to come). Each entry is removed once the
  // handler accepts it, else it returns to `ready`. Returns how many were accepted. run() and
  // run_batch() call this after every poll; a loop of the application's own calls it
  // for a redrive to be taken, and again for deferred attempts to be made. A worker let
  // go of (its group's handle destroyed) hands the entries it keeps to the next one.
  template <class H>
  std::size_t poll_redrives(H&& handler);

  // Polls until `stop` is set, idling with the group's wait strategy, repairing the
  // claims of dead producers that stall it.
  template <class H>
  void run(H&& handler, const std::atomic<bool>& stop);
  // run() with poll_batch(): spans of up to GroupOptions::batch events; redriven dead
  // letters come as spans of one.
  template <class H>
  void run_batch(H&& handler, const std::atomic<bool>& stop);

  [[nodiscard]] std::uint32_t index() const noexcept { return index_; }
  [[nodiscard]] std::uint32_t workers() const noexcept { return workers_; }
  // Position of the next record this worker will look at.
  [[nodiscard]] std::uint64_t position() const noexcept { return pos_; }
  // Events set aside for a deferred retry, held behind one, or waiting for dead-letter room.
  [[nodiscard]] std::size_t pending() const noexcept { return pending_.size(); }
  [[nodiscard]] bool routes_here(const Event& e) const noexcept {
    return route(e.key(), e.producer_id(), workers_) == index_;
  }

 private:
  friend class ConsumerGroup;
  Worker() = default;

  // A validated record at some position.
  struct Record {
    RecordHeader* h;
    RecordState state;
    std::uint32_t len;
    std::uint64_t bytes;
  };
  // An event set aside: held behind a failure of its key (attempts 0), waiting for a
  // deferred retry, or (attempts >= max) waiting for room in the dead-letter ring.
  struct Pending {
    std::uint64_t position;
    std::uint64_t ident;
    std::uint64_t next_ns;           // monotonic time of the next attempt
    std::uint64_t first_failure_ns;  // Unix-epoch time of the first failure
    std::uint32_t attempts;
  };
  enum class Outcome : std::uint8_t { handled, parked, dropped, pending };
  // A redriven dead letter being delivered, or kept for a deferred attempt (still
  // `delivering`: this worker's until the handler accepts it, its attempts run out, or
  // the worker lets go).
  struct KeptRedrive {
    layout::DlqEntry* entry;
    std::uint64_t next_ns;     // monotonic time of the next attempt
    std::uint32_t calls;       // failed handler calls so far in this redrive
    std::uint32_t payload_len; // as validated when it was taken (the ring is shared memory)
  };

  // Loads the frame at `pos` and bounds what it says; false if nothing is there yet.
  bool peek(std::uint64_t pos, Record& rec) const;
  [[nodiscard]] bool mine(const Record& rec) const noexcept {
    return rec.state != RecordState::padding && route(rec.h->key, rec.h->producer_id, workers_) == index_;
  }
  static std::uint64_t ident_of(const Event& e) noexcept {
    return e.key() != 0 ? e.key() : (std::uint64_t{e.producer_id()} | (std::uint64_t{1} << 63));
  }
  void advance_to(std::uint64_t pos) noexcept;
  void store_cursor() noexcept;
  // Where this poll stops reading: no limit unless trailing.
  [[nodiscard]] std::uint64_t read_limit() noexcept {
    return trail_bytes_ == 0 ? layout::kNoPosition : trail_limit();
  }
  std::uint64_t trail_limit() noexcept;
  // While waiting at `pos`, keeps the line after the frame's line (where a small
  // payload lands) in this core's cache: its transfer then overlaps the frame line's
  // instead of following it. Coherence keeps it correct: once the frame is seen, any
  // valid copy of the payload line holds the payload.
  void prefetch_payload(std::uint64_t pos) const noexcept {
    __builtin_prefetch(reinterpret_cast<const std::byte*>(r_.record_at(pos)) + kRecordHeaderSize, 0, 3);
  }
  // Once a record is seen, every line of a larger payload is requested at once, so
  // that their transfers overlap instead of following the handler's reads one by one.
  static void prefetch_rest(const Record& rec) noexcept {
    const auto* p = reinterpret_cast<const std::byte*>(rec.h);
    for (std::uint64_t off = 2 * kRecordHeaderSize; off < rec.bytes; off += kCacheLine) {
      __builtin_prefetch(p + off, 0, 3);
    }
  }
  void note_voids(std::uint64_t n) noexcept {
    voids_ += n;
    slot_->voids_seen.store(voids_, std::memory_order_relaxed);
  }
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void note_latency(const Event& e) noexcept {
    const std::uint64_t ts = e.timestamp_ns();
    const std::uint64_t now = wall_clock_ns();
    if (ts == 0 || now < ts) return;
    bump(latency_[layout::latency_bucket(now - ts)]);
    std::atomic<std::uint64_t>& sum = latency_[layout::kLatencySum];
    sum.store(sum.load(std::memory_order_relaxed) + (now - ts), std::memory_order_relaxed);
  }

  // poll() inside the HandlerScope its caller (poll or poll_batch) set up.
  template <class H>
  std::size_t poll_in_scope(H& handler, std::size_t max_events);
  template <class H>
  Handled invoke(H& handler, const Event& e) noexcept;
  template <class Visit>
  std::size_t scan(Visit&& visit, std::size_t max_events);
  // The event is passed by reference, never copied: a copy of the 24-byte Event made
  // right after its fields were stored reads them back with loads wider than those
  // stores (16 bytes over two 8-byte stores), which the store buffer cannot forward;
  // the stall cost about 9 ns per event (BM_EventDecode). attempt() may mark it.
  template <class H>
  void deliver(H& handler, Event& e);
  template <class H>
  Outcome attempt(H& handler, Event& e, Pending* p);
  template <class H>
  void service_pending(H& handler);
  Outcome dead_letter(const Event& e, std::uint32_t attempts, std::uint64_t first_failure_ns);
  // dead_letter, and with no room in the ring the event waits, set aside (`p`: its entry
  // among them, if it is one), to be parked at a retry a millisecond after `now`
  // (monotonic) with no handler call.
  Outcome park(const Event& e, Pending* p, std::uint32_t attempts, std::uint64_t first_failure_ns, std::uint64_t now);
  // max_deaths: the event the previous processes died handling, parked without a call.
  Outcome dead_letter_poison(const Event& e, Pending* p);
  void set_aside(const Event& e, std::uint32_t attempts, std::uint64_t first_failure_ns, std::uint64_t next_ns);
  // Backoff::spin between two calls: busy-waits the policy's delay.
  void spin_delay() const noexcept {
    const std::uint64_t until = detail::monotonic_ns() + static_cast<std::uint64_t>(retry_.delay.count());
    while (detail::monotonic_ns() < until) detail::cpu_relax();
  }
  // The policy's wait before the call after the `failures`-th failed one.
  [[nodiscard]] std::uint64_t retry_wait_ns(std::uint32_t failures) const noexcept {
    switch (retry_.backoff) {
      case RetryPolicy::Backoff::deferred: return static_cast<std::uint64_t>(retry_.deferred_wait(failures).count());
      case RetryPolicy::Backoff::spin: return static_cast<std::uint64_t>(retry_.delay.count());
      case RetryPolicy::Backoff::immediate: break;
    }
    return 0;
  }
  // Backoff::deferred: when the call after the `failures`-th failed one is due.
  [[nodiscard]] std::uint64_t retry_due_ns(std::uint64_t now, std::uint32_t failures) const noexcept {
    return now + retry_wait_ns(failures);
  }
  // When the first event set aside for a retry (or for dead-letter room), or the first
  // kept redrive's deferred attempt, is due.
  [[nodiscard]] std::uint64_t next_due_ns() const noexcept;
  // Shows how many events are set aside (WorkerSlot::pending, for `ringbus stat`).
  void note_pending() noexcept { slot_->pending.store(pending_.size(), std::memory_order_relaxed); }
  // Stores `word` (a position below events this worker delivered since: an event set
  // aside, retried or held behind a retry; a redriven dead letter) as in flight, the
  // redelivery window first kept up to pos_ (WorkerSlot::redeliver_until): a death in the
  // call leaves those events to the next process marked, as they may have been handled.
  // The signal fence keeps the two stores in program order, which a SIGKILL between them
  // observes.
  void in_flight_below(std::uint64_t word) noexcept {
    keep_window(pos_);
    slot_->inflight.store(word, std::memory_order_relaxed);
  }
  void keep_window(std::uint64_t until) noexcept {
    if (slot_->redeliver_until.load(std::memory_order_relaxed) < until) {
      slot_->redeliver_until.store(until, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    }
  }
  // `e` handled. While an earlier event set aside keeps the cursor below it, a death
  // from here on would count against `e` as in flight (max_deaths would park it,
  // handled): the window is kept past it, and nothing is left in flight.
  Outcome handled_ok(const Event& e) noexcept {
    if (!pending_.empty()) [[unlikely]] {
      keep_window(std::max(pos_, e.position() + 1));
      slot_->inflight.store(layout::kNoPosition, std::memory_order_relaxed);
    }
    return Outcome::handled;
  }
  void finish(const Event& e, Outcome o) noexcept;
  [[nodiscard]] bool redrives_waiting() const noexcept {
    return dlq_control_ != nullptr &&
           dlq_control_->redrive_requests.load(std::memory_order_acquire) != redrive_seen_;
  }
  // A tool asked for redrives, or a kept redrive's next attempt is due (a clock read
  // only while one is kept).
  [[nodiscard]] bool redrives_due() const noexcept {
    return redrives_waiting() || (redrive_next_ns_ != UINT64_MAX && detail::monotonic_ns() >= redrive_next_ns_);
  }
  // Calls the handler for a taken entry as the retry policy says (all its attempts, or
  // with `deferred` one), adding the failed calls to `k.calls`; then ends the
  // redelivery, or says `kept` for its next deferred attempt. True if the handler
  // accepted it.
  template <class H>
  bool redeliver(H& handler, KeptRedrive& k, bool& kept);
  // Hands kept redrives back to the ring (`redrive`) for the next worker.
  void give_back_redrives() noexcept;
  // The dedup window of `producer_id` in this worker's table (found, created, or
  // taking over the least recently used one).
  DedupWindow* window_for(std::uint32_t producer_id, std::uint64_t position) noexcept;
  bool ready_at_position() const noexcept;
  void idle_step(detail::Waiter& waiter, const std::atomic<bool>& stop);
  // run() and run_batch(): `poll_once` until `stop`, idling by the wait strategy, with
  // redrives handed to `redrive_handler` (Handled or void handler(const Event&)).
  template <class Poll, class H>
  void run_loop(Poll&& poll_once, H&& redrive_handler, const std::atomic<bool>& stop);
  // A batch handler as a handler of one event: a span of one.
  template <class H>
  static auto one_at_a_time_of(H& handler);
  void check_stall() noexcept { check_stall_at(detail::monotonic_ns()); }
  void check_stall_at(std::uint64_t now) noexcept;
  // A poll found nothing at pos_: a stall check (one clock read; the tail at most once a
  // millisecond) every stall_check_every_mask_ + 1 such polls. Whoever drives the polls,
  // run() or the application's own loop, a dead producer's claim is repaired. A loop
  // that polls faster than every kSlowPollNs checks every kStallCheckEvery polls (a
  // busy spin: one clock read in microseconds); a slower one, such as an application
  // polling once a millisecond, at every such poll, so that it too repairs after
  // unblock_after rather than after kStallCheckEvery of its polls.
  static constexpr std::uint32_t kStallCheckEvery = 256;
  static constexpr std::uint64_t kSlowPollNs = 4'000;
  static_assert(std::has_single_bit(kStallCheckEvery));
  void nothing_ready() noexcept {
    if ((++empty_polls_ & stall_check_every_mask_) == 0) [[unlikely]] poll_stall_check();
  }
  // The check nothing_ready makes, choosing how many polls until the next one.
  void poll_stall_check() noexcept;
  // Throws Error(busy) if this worker's own handler is polling it (detail::polling), or
  // another thread than the one in run() (ConsumerGroup::start's) is. One thread-local
  // load and one relaxed load of this worker's line a poll.
  void check_caller() const {
    if (detail::handler_frames != nullptr) [[unlikely]] refuse_reentry();
    if (const void* r = runner_.load(std::memory_order_relaxed); r != nullptr && r != &detail::handler_frames)
        [[unlikely]] {
      refuse_other_thread();
    }
  }
  void refuse_reentry() const;
  [[noreturn]] void refuse_other_thread() const;
  [[noreturn]] void corrupt(std::uint64_t pos, const char* what) const;
  [[noreturn]] void failed(const Event& e, const std::string& why) const;

  detail::SegmentRefs r_{};
  layout::WorkerSlot* slot_ = nullptr;
  std::string group_;
  std::uint32_t group_slot_ = 0;
  std::uint32_t index_ = 0;
  std::uint32_t workers_ = 1;
  std::uint32_t batch_ = 256;
  std::uint64_t pos_ = 0;
  std::uint64_t consumed_ = 0;
  std::uint64_t voids_ = 0;
  WaitStrategy wait_{};
  RetryPolicy retry_{};
  bool dedup_ = false;
  bool deliver_voids_ = false;
  bool hold_keys_ = true;
  std::uint32_t max_pending_ = 4096;
  std::uint64_t resume_until_ = 0;  // events at positions below this are redelivered (exclusive)
  // Positions below resume_until_ (sorted) of events in the group's dead-letter ring:
  // parked by a previous owner whose cursor had not passed them. Not delivered again.
  std::vector<std::uint64_t> parked_before_;
  // The event a previous process died handling, and how many times in a row
  // (layout::kInflightDeaths); died_at_ kNoPosition when there is none. With max_deaths,
  // a batch worker delivers events below singly_until_ one at a time.
  std::uint64_t died_at_ = layout::kNoPosition;
  std::uint64_t deaths_ = 0;
  std::uint64_t singly_until_ = 0;
  std::uint32_t max_deaths_ = 0;
  std::uint64_t unblock_after_ns_ = 100'000'000;
  // Trailing (GroupOptions::trail_bytes; 0 = off), in Tsc ticks where a time.
  std::uint64_t trail_bytes_ = 0;
  std::uint64_t trail_delay_ticks_ = 0;
  std::uint64_t trail_read_every_ticks_ = 0;  // kTrailTailReadNs
  std::uint64_t trail_limit_ = 0;    // records starting below this may be read
  std::uint64_t trail_read_at_ = 0;  // when the tail was last read
  std::uint64_t hold_since_ = 0;     // when a backlog shorter than trail_bytes_ was first seen
  bool holding_ = false;
  std::uint32_t empty_polls_ = 0;  // polls that found nothing at pos_ since the last check
  std::uint32_t stall_check_every_mask_ = 0;  // 0 or kStallCheckEvery - 1; the first poll checks
  std::uint64_t poll_checked_ns_ = 0;         // when nothing_ready last checked
  std::uint64_t last_check_ns_ = 0;
  std::uint64_t stall_pos_ = layout::kNoPosition;
  std::uint64_t stall_since_ns_ = 0;
  std::uint64_t stall_counted_ = layout::kNoPosition;  // the stall counted in stalls_unresolved
  layout::DlqControl* dlq_control_ = nullptr;  // null: no dead-letter ring in use
  std::atomic<std::uint64_t>* latency_ = nullptr;  // this worker's latency buckets, when recording
  std::uint64_t redrive_seen_ = 0;
  std::vector<KeptRedrive> kept_redrives_;
  std::uint64_t redrive_next_ns_ = UINT64_MAX;  // the earliest kept redrive's next attempt
  std::deque<Pending> pending_;
  std::unordered_map<std::uint64_t, std::uint32_t> held_;  // ident -> entries in pending_
  std::vector<std::uint64_t> blocked_;                     // scratch of service_pending
  // Dedup: this worker's windows, and the last one used.
  layout::DedupWindowHeader* dedup_table_ = nullptr;
  std::uint32_t last_producer_ = 0;
  std::optional<DedupWindow> last_window_;
  layout::DedupWindowHeader* last_header_ = nullptr;
  std::vector<Event> batch_buf_;
  std::string last_error_;
  // The thread in run() or run_batch(), by the address of its detail::handler_frames;
  // null when none: another thread's poll is refused while one runs it.
  std::atomic<const void*> runner_{nullptr};
};

class ConsumerGroup {
 public:
  // Joins group `name` (1..63 bytes of [A-Za-z0-9._-]), registering it if new. A
  // process takes over the worker slots; those of a dead process are taken over,
  // those of a live one are refused with Error(busy). If `workers` differs from the
  // count the cursors were kept for, every worker restarts from the slowest cursor
  // (with dedup, each new worker's windows are the union of the old ones).
  static ConsumerGroup join(const Segment& segment, std::string_view name, const GroupOptions& options = {});

  // Unregisters a group nobody runs (its cursors stop gating producers). Returns
  // false if there is no such group; throws Error(busy) if a live process runs it, or
  // is joining it. Its dead letters, dedup windows and latency histogram go with it:
  // a group joined later under the name starts empty (StartFrom applies).
  static bool remove(const Segment& segment, std::string_view name);

  // Moves the cursors of a group nobody runs forward to `position`, a record position
  // (e.g. an Event::position()) or the tail (layout::kNoPosition: the tail), so that the
  // events before it are not delivered to the group: past an event its handler can never
  // accept in a group without dead letters, or past a backlog it need not handle. A
  // worker already past `position` stays where it is. Returns the group's slowest cursor
  // before and the position after; nullopt if there is no such group. Throws Error(busy)
  // if a live process runs or joins it; Error(invalid_options) for a position that is no
  // record's, beyond the tail, behind the slowest cursor (cursors only move forward:
  // producers may have overwritten what lies a lap behind the others), past a record not
  // committed, or more than 256 MiB past the nearest record boundary known (skip in steps).
  struct Skipped {
    std::uint64_t from;  // the slowest cursor before
    std::uint64_t to;    // `position`, or the tail it stood for
  };
  static std::optional<Skipped> skip_to(const Segment& segment, std::string_view name, std::uint64_t position);

  ConsumerGroup(ConsumerGroup&&) noexcept;
  ConsumerGroup& operator=(ConsumerGroup&&) noexcept;
  ~ConsumerGroup();

  // A group moved from has 0 workers, an empty name and no segment, and is not running.
  [[nodiscard]] std::uint32_t workers() const noexcept;
  [[nodiscard]] Worker& worker(std::uint32_t i) noexcept;  // i < workers()
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] const Segment& segment() const noexcept;

  // Runs every worker on its own thread (pinned to options.cpus[i] if given). The
  // handler is copied into each thread. Returns at once; stop() ends them. Throws
  // Error(busy) if the threads were started and not stopped since (a worker is run by
  // one thread at a time); after stop(), the group can be started again. While the
  // threads run, worker(i) is theirs: do not poll it.
  template <class H>
  void start(H handler);
  template <class H>
  void start_batch(H handler);
  // Asks the threads to stop and joins them. Rethrows the first error a worker died
  // of (HandlerFailed, or Error for a corrupt segment). Called by a handler on one of
  // the group's own threads (a handler that ends its group), it is request_stop(): a
  // thread cannot join itself; its thread ends once the handler and its poll return, and
  // a stop() from another thread, or the destructor, joins the threads.
  void stop();
  // Asks the threads to stop and returns at once; each ends after its current poll.
  // Async-signal-safe: a SIGTERM handler may call it, and the main thread's stop() then
  // joins the threads.
  void request_stop() noexcept;
  // True while threads run and none has failed.
  [[nodiscard]] bool running() const noexcept;

 private:
  struct State;
  explicit ConsumerGroup(std::unique_ptr<State> s);
  static std::unique_ptr<State> make_state(const detail::SegmentRefs& r, const Segment& segment, std::string_view name,
                                           std::uint32_t g, const GroupOptions& options, std::uint32_t pid);
  void release() noexcept;
  void prepare_start();
  void launch(std::uint32_t i, std::function<void(Worker&, const std::atomic<bool>&)> body);
  std::unique_ptr<State> st_;
};

// Pins the calling thread to `cpu`; throws Error(system) if the OS refuses.
void pin_this_thread(int cpu);

// Why a thread of this process cannot be pinned to `cpu` (negative, or not in the
// process's CPU affinity mask, which the message lists), or empty if it can.
// ConsumerGroup::join checks GroupOptions::cpus with it.
std::string cpu_unavailable(int cpu);

// ---------------------------------------------------------------------------------
// Hot path.

template <class H>
Handled Worker::invoke(H& handler, const Event& e) noexcept {
  using R = std::invoke_result_t<H&, const Event&>;
  try {
    if constexpr (std::is_void_v<R>) {
      handler(e);
      return Handled::ok;
    } else {
      const Handled h = handler(e);
      if (h != Handled::ok) [[unlikely]] {
        last_error_ = h == Handled::retry ? "handler asked for a retry" : "handler returned fail";
      }
      return h;
    }
  } catch (const std::exception& ex) {
    last_error_ = ex.what();
  } catch (...) {
    last_error_ = "non-standard exception";
  }
  return Handled::fail;
}

inline bool Worker::peek(std::uint64_t pos, Record& rec) const {
  RecordHeader* h = r_.record_at(pos);
  // Pairs with the release store of the frame in Claim::commit, write_padding and the
  // recovery writers: everything written before the frame is visible now.
  const std::uint64_t f = std::atomic_ref<std::uint64_t>(h->frame).load(std::memory_order_acquire);
  if (!frame::ready_for(f, r_.lap(pos))) return false;
  rec.h = h;
  rec.len = frame::length(f);
  rec.state = frame::state(f);
  if (rec.state == RecordState::padding) {
    rec.bytes = rec.len;
    if (rec.len < kRecordAlign || rec.len % kRecordAlign != 0 || rec.len > r_.to_lap_end(pos)) [[unlikely]] {
      corrupt(pos, "padding record with an impossible length");
    }
  } else {
    rec.bytes = record_bytes(rec.len);
    if (rec.len > r_.max_event || rec.bytes > r_.to_lap_end(pos) || h->position != pos) [[unlikely]] {
      corrupt(pos, "record whose length or position does not fit the ring");
    }
  }
  return true;
}

inline void Worker::store_cursor() noexcept {
  const std::uint64_t cursor = pending_.empty() ? pos_ : pending_.front().position;
  // Release: everything this worker read below the cursor happens-before a producer that
  // acquires it (Producer::refresh_limit) reuses those bytes.
  slot_->cursor.store(cursor, std::memory_order_release);
  detail::wake_if_parked(r_.control->space_waiters, r_.control->space_seq);
}

inline void Worker::advance_to(std::uint64_t pos) noexcept {
  pos_ = pos;
  store_cursor();
}

// Records examined per poll, whoever they route to (bounds one poll's work).
inline constexpr std::size_t kScanFactor = 16;
// How many records a poll of up to `max_events` events examines: kScanFactor each,
// saturating. A product that wrapped made a poll of 2^60 events examine none, and
// return 0 with events ready, for ever.
constexpr std::size_t scan_bound(std::size_t max_events) noexcept {
  return max_events > SIZE_MAX / kScanFactor ? SIZE_MAX : max_events * kScanFactor;
}
static_assert(scan_bound(std::size_t{1} << 60) == SIZE_MAX && scan_bound(256) == 256 * kScanFactor);

// A trailing worker reads the tail at most this often: each read takes the tail's line
// from the producers, whose next claim must take it back.
inline constexpr std::uint64_t kTrailTailReadNs = 200;

inline std::uint64_t Worker::trail_limit() noexcept {
  const std::uint64_t now = Tsc::ticks();
  if (now - trail_read_at_ < trail_read_every_ticks_) return trail_limit_;
  trail_read_at_ = now;
  // Relaxed: only a bound on how far to look; each record's frame is still acquired.
  const std::uint64_t tail = r_.control->tail.load(std::memory_order_relaxed);
  if (tail > pos_ + trail_bytes_) {  // a backlog longer than trail_bytes_: read what lies that far behind
    holding_ = false;
    trail_limit_ = tail - trail_bytes_;
  } else if (tail > pos_) {  // a shorter backlog waits for more, at most trail_delay_ticks_
    if (!holding_) {
      holding_ = true;
      hold_since_ = now;
    }
    const bool waited = now - hold_since_ >= trail_delay_ticks_;
    if (waited) holding_ = false;
    trail_limit_ = waited ? tail : pos_;
  } else {
    holding_ = false;
    trail_limit_ = pos_;
  }
  return trail_limit_;
}

// Walks ready records from pos_, calling visit(event) for the data (and void) records
// that route here, until `max_events` were visited or nothing more is ready, moving
// the cursor past each record left behind. If visit throws, the cursor stays on its
// event.
template <class Visit>
std::size_t Worker::scan(Visit&& visit, std::size_t max_events) {
  std::size_t visited = 0;
  const std::uint64_t limit = read_limit();
  const std::size_t bound = scan_bound(max_events);
  for (std::size_t examined = 0; visited < max_events && examined < bound; ++examined) {
    if (pending_.size() >= max_pending_ || pos_ >= limit) [[unlikely]] break;
    Record rec;
    if (!peek(pos_, rec)) {
      prefetch_payload(pos_);
      nothing_ready();
      break;
    }
    if (mine(rec)) {
      if (rec.state == RecordState::data) [[likely]] {
        prefetch_rest(rec);
        Event e(rec.h, pos_, rec.len);
        visit(e);
        ++visited;
      } else if (deliver_voids_) {
        Event v(rec.h, pos_, rec.len);
        v.mark(Event::kVoid);
        note_voids(1);
        visit(v);
      } else {
        note_voids(1);
      }
    }
    advance_to(pos_ + rec.bytes);
  }
  return visited;
}

// One event, first time: held behind its key, dropped as a duplicate, or handled.
template <class H>
void Worker::deliver(H& handler, Event& e) {
  if (!held_.empty()) [[unlikely]] {
    if (auto it = held_.find(ident_of(e)); it != held_.end()) {
      ++it->second;
      pending_.push_back({e.position(), it->first, 0, 0, 0});
      note_pending();
      return;
    }
  }
  finish(e, attempt(handler, e, nullptr));
}

// Tries `e` once more (the first time when p is null) and decides what follows.
template <class H>
Worker::Outcome Worker::attempt(H& handler, Event& e, Pending* p) {
  DedupWindow* window = nullptr;
  const bool first = p == nullptr || p->attempts == 0;
  if (first) {
    if (dedup_ && !e.is_void()) [[unlikely]] {
      window = window_for(e.producer_id(), e.position());
      const Seen seen = window != nullptr ? window->check(e.producer_seq()) : Seen::fresh;
      if (seen != Seen::fresh) {
        bump(seen == Seen::duplicate ? slot_->dup_dropped : slot_->too_old_dropped);
        return Outcome::dropped;
      }
    }
    std::uint64_t inflight = e.position();
    if (e.position() < resume_until_) [[unlikely]] {
      if (std::binary_search(parked_before_.begin(), parked_before_.end(), e.position())) return Outcome::parked;
      e.mark(Event::kRedelivered);
      bump(slot_->redelivered);
      if (e.position() == died_at_) {
        if (max_deaths_ != 0 && deaths_ >= max_deaths_) return dead_letter_poison(e, p);
        inflight |= deaths_;  // a death in this call counts one more
      }
    }
    if (latency_ != nullptr) [[unlikely]] note_latency(e);
    if (p != nullptr) [[unlikely]] {
      in_flight_below(inflight);  // an event set aside: below others delivered
    } else {
      slot_->inflight.store(inflight, std::memory_order_relaxed);
    }
  } else if (p->attempts >= retry_.max_attempts) {
    return park(e, p, p->attempts, p->first_failure_ns, detail::monotonic_ns());  // waiting for room
  } else {
    bump(slot_->retries);  // a deferred retry
    // In flight, so that a death in the call counts against it.
    in_flight_below(e.position() | (e.position() == died_at_ ? deaths_ : 0));
  }
  if (invoke(handler, e) == Handled::ok) [[likely]] {
    RINGBUS_FAULT_POINT(in_consumer);
    return handled_ok(e);
  }
  // Failure path: retries as the policy says.
  bump(slot_->handler_errors);
  const std::uint64_t now = detail::monotonic_ns();
  std::uint32_t attempts = first ? 1 : p->attempts + 1;
  const std::uint64_t first_failure = first ? detail::realtime_ns() : p->first_failure_ns;
  if (retry_.backoff != RetryPolicy::Backoff::deferred) {
    while (attempts < retry_.max_attempts) {
      if (retry_.backoff == RetryPolicy::Backoff::spin) spin_delay();
      ++attempts;
      bump(slot_->retries);
      if (invoke(handler, e) == Handled::ok) return handled_ok(e);
      bump(slot_->handler_errors);
    }
  }
  if (p != nullptr) {
    p->attempts = attempts;
    p->first_failure_ns = first_failure;
  }
  if (attempts >= retry_.max_attempts) return park(e, p, attempts, first_failure, now);
  if (p == nullptr) {
    set_aside(e, attempts, first_failure, retry_due_ns(now, attempts));
  } else {
    p->next_ns = retry_due_ns(now, attempts);
  }
  return Outcome::pending;
}

// Retries what is due among the events set aside, in position order, keeping each held
// key's events behind its failure.
template <class H>
void Worker::service_pending(H& handler) {
  const std::uint64_t now = detail::monotonic_ns();
  blocked_.clear();
  bool changed = false;
  for (std::size_t i = 0; i < pending_.size();) {
    Pending& p = pending_[i];
    const bool behind = hold_keys_ && std::find(blocked_.begin(), blocked_.end(), p.ident) != blocked_.end();
    if (behind || p.next_ns > now) {
      if (hold_keys_ && !behind) blocked_.push_back(p.ident);
      ++i;
      continue;
    }
    Record rec;
    if (!peek(p.position, rec)) corrupt(p.position, "an event set aside for a retry is no longer in the ring");
    Event e(rec.h, p.position, rec.len);
    const Outcome o = attempt(handler, e, &p);
    if (o == Outcome::pending) {
      if (hold_keys_) blocked_.push_back(p.ident);
      ++i;
      continue;
    }
    finish(e, o);
    if (auto it = held_.find(p.ident); it != held_.end() && --it->second == 0) held_.erase(it);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    changed = true;
  }
  if (changed) {
    store_cursor();
    note_pending();
  }
}

inline void Worker::finish(const Event& e, Outcome o) noexcept {
  if (o == Outcome::pending || o == Outcome::dropped) return;
  if (dedup_ && !e.is_void()) [[unlikely]] {
    if (DedupWindow* w = window_for(e.producer_id(), e.position())) w->set(e.producer_seq());
  }
  if (o == Outcome::handled) slot_->consumed.store(++consumed_, std::memory_order_relaxed);
}

template <class H>
std::size_t Worker::poll(H&& handler, std::size_t max_events) {
  check_caller();
  const detail::HandlerScope scope(r_, slot_->cursor);
  return poll_in_scope(handler, max_events);
}

template <class H>
std::size_t Worker::poll_in_scope(H& handler, std::size_t max_events) {
  if (!pending_.empty()) [[unlikely]] service_pending(handler);
  return scan([&](Event& e) { deliver(handler, e); }, max_events);
}

template <class H>
auto Worker::one_at_a_time_of(H& handler) {
  return [&handler](const Event& e) {
    if constexpr (std::is_void_v<std::invoke_result_t<H&, std::span<const Event>>>) {
      handler(std::span<const Event>(&e, 1));
      return Handled::ok;
    } else {
      return handler(std::span<const Event>(&e, 1));
    }
  };
}

template <class H>
std::size_t Worker::poll_batch(H&& handler, std::size_t max_events) {
  using R = std::invoke_result_t<H&, std::span<const Event>>;
  auto one_at_a_time = one_at_a_time_of(handler);
  check_caller();
  const detail::HandlerScope scope(r_, slot_->cursor);
  if (dedup_ || deliver_voids_ || !pending_.empty() || pos_ < singly_until_) {
    return poll_in_scope(one_at_a_time, max_events);
  }
  // Collect without moving the cursor: it may pass events only once they are handled.
  batch_buf_.clear();
  std::uint64_t pos = pos_;
  std::uint64_t voids = 0;
  std::uint64_t redelivered = 0;  // counted once the batch is handled: no shared store in the loop
  const std::uint64_t limit = read_limit();
  const std::size_t bound = scan_bound(max_events);
  for (std::size_t examined = 0; batch_buf_.size() < max_events && examined < bound && pos < limit; ++examined) {
    Record rec;
    if (!peek(pos, rec)) {
      if (pos == pos_) nothing_ready();
      break;
    }
    if (mine(rec)) {
      if (rec.state == RecordState::data) {
        batch_buf_.emplace_back(rec.h, pos, rec.len);
        if (pos < resume_until_) [[unlikely]] {
          batch_buf_.back().mark(Event::kRedelivered);
          ++redelivered;
        }
      } else {
        ++voids;
      }
    }
    pos += rec.bytes;
  }
  if (!batch_buf_.empty()) {
    slot_->inflight.store(batch_buf_.back().position(), std::memory_order_relaxed);
    Handled result = Handled::ok;
    try {
      if constexpr (std::is_void_v<R>) {
        handler(std::span<const Event>(batch_buf_));
      } else {
        result = handler(std::span<const Event>(batch_buf_));
      }
    } catch (const std::exception& ex) {
      last_error_ = ex.what();
      result = Handled::fail;
    } catch (...) {
      last_error_ = "non-standard exception";
      result = Handled::fail;
    }
    if (result != Handled::ok) return poll_in_scope(one_at_a_time, batch_buf_.size());
    consumed_ += batch_buf_.size();
    slot_->consumed.store(consumed_, std::memory_order_relaxed);
    if (redelivered != 0) [[unlikely]] bump(slot_->redelivered, redelivered);
  }
  if (voids != 0) note_voids(voids);
  if (pos != pos_) advance_to(pos);
  return batch_buf_.size();
}

template <class H>
bool Worker::redeliver(H& handler, KeptRedrive& k, bool& kept) {
  Event e(detail::dlq_record(k.entry), k.entry->position, k.payload_len);
  e.mark(Event::kRedriven);
  kept = false;
  for (;;) {
    if (k.calls != 0) detail::dlq_redrive_call(r_, group_slot_, k.entry);
    // In flight: a death in the call counts against the dead letter's own position (the
    // entry counts the call too), not against the event last delivered from the log.
    in_flight_below(e.position());
    if (invoke(handler, e) == Handled::ok) {
      detail::dlq_finish_redrive(r_, group_slot_, k.entry, detail::RedriveEnd::accepted);
      bump(slot_->redriven);
      return true;
    }
    ++k.calls;
    bump(slot_->handler_errors);
    if (k.calls >= retry_.max_attempts) {
      detail::dlq_finish_redrive(r_, group_slot_, k.entry, detail::RedriveEnd::failed);
      return false;
    }
    // Another call is to come: after the policy's wait (none for `immediate`), by this
    // loop, or by a later poll_redrives() for `deferred`, which keeps the entry.
    const std::uint64_t wait = retry_wait_ns(k.calls);
    detail::dlq_redrive_failed_call(r_, group_slot_, k.entry, detail::realtime_ns() + wait);
    if (retry_.backoff == RetryPolicy::Backoff::deferred) {
      k.next_ns = detail::monotonic_ns() + wait;
      kept = true;
      return false;
    }
    if (retry_.backoff == RetryPolicy::Backoff::spin) spin_delay();
  }
}

template <class H>
std::size_t Worker::poll_redrives(H&& handler) {
  check_caller();
  if (!redrives_due()) return 0;
  const detail::HandlerScope scope(r_, slot_->cursor);
  std::size_t n = 0;
  // Kept redrives whose deferred attempt is due, in the order they were taken.
  if (redrive_next_ns_ != UINT64_MAX) {
    const std::uint64_t now = detail::monotonic_ns();
    std::uint64_t next = UINT64_MAX;
    std::size_t out = 0;
    for (std::size_t i = 0; i < kept_redrives_.size(); ++i) {
      KeptRedrive k = kept_redrives_[i];
      if (k.next_ns <= now) {
        bool kept = false;
        n += redeliver(handler, k, kept) ? 1 : 0;
        if (!kept) continue;
      }
      next = std::min(next, k.next_ns);
      kept_redrives_[out++] = k;
    }
    kept_redrives_.resize(out);
    redrive_next_ns_ = next;
  }
  if (redrives_waiting()) {
    redrive_seen_ = dlq_control_->redrive_requests.load(std::memory_order_acquire);
    while (layout::DlqEntry* entry = detail::dlq_take_redrive(r_, group_slot_, index_, workers_)) {
      KeptRedrive k{entry, 0, 0, entry->payload_len};  // taken: the walk validated it
      bool kept = false;
      n += redeliver(handler, k, kept) ? 1 : 0;
      if (!kept) continue;
      kept_redrives_.push_back(k);
      redrive_next_ns_ = std::min(redrive_next_ns_, k.next_ns);
    }
  }
  return n;
}

template <class Poll, class H>
void Worker::run_loop(Poll&& poll_once, H&& redrive_handler, const std::atomic<bool>& stop) {
  const void* idle = nullptr;
  if (!runner_.compare_exchange_strong(idle, &detail::handler_frames, std::memory_order_relaxed)) {
    refuse_other_thread();
  }
  struct LetGo {
    std::atomic<const void*>& runner;
    ~LetGo() { runner.store(nullptr, std::memory_order_relaxed); }
  } let_go{runner_};
  detail::Waiter waiter(wait_);
  while (!stop.load(std::memory_order_relaxed)) {
    const std::uint64_t before = pos_;
    const std::size_t set_aside = pending_.size();
    poll_once();
    // Checked after every poll, busy or not: a worker the log keeps busy must still take
    // the entries a tool marked for redelivery (one load of a line written only then),
    // and make a kept redrive's deferred attempt when it is due.
    if (redrives_due()) [[unlikely]] poll_redrives(redrive_handler);
    if (pos_ != before || pending_.size() != set_aside) {
      waiter.reset();
      continue;
    }
    idle_step(waiter, stop);
  }
}

template <class H>
void Worker::run(H&& handler, const std::atomic<bool>& stop) {
  run_loop([&] { poll(handler, batch_); }, handler, stop);
}

template <class H>
void Worker::run_batch(H&& handler, const std::atomic<bool>& stop) {
  run_loop([&] { poll_batch(handler, batch_); }, one_at_a_time_of(handler), stop);
}

inline bool Worker::ready_at_position() const noexcept {
  const std::uint64_t f =
      std::atomic_ref<std::uint64_t>(r_.record_at(pos_)->frame).load(std::memory_order_acquire);
  return frame::ready_for(f, r_.lap(pos_));
}

template <class H>
void ConsumerGroup::start(H handler) {
  prepare_start();
  for (std::uint32_t i = 0; i < workers(); ++i) {
    launch(i, [handler](Worker& w, const std::atomic<bool>& stop) mutable { w.run(handler, stop); });
  }
}

template <class H>
void ConsumerGroup::start_batch(H handler) {
  prepare_start();
  for (std::uint32_t i = 0; i < workers(); ++i) {
    launch(i, [handler](Worker& w, const std::atomic<bool>& stop) mutable { w.run_batch(handler, stop); });
  }
}

}  // namespace ringbus
