// Consumer groups. A group is named and registered in the segment; it sees every
// event; its cursors live in the segment, so a restarted process resumes where the
// group stopped (at-least-once). A group of N workers splits events by key: every
// worker reads every record, and handles those whose key routes to it (hash.hpp,
// route()), so one key's events are handled in log order by one worker while
// different keys are handled in parallel. Every group gates producers: no record is
// overwritten before all its workers have moved past it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ringbus/detail/fault.hpp"
#include "ringbus/detail/waiter.hpp"
#include "ringbus/event.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/record.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/wait_strategy.hpp"

namespace ringbus {

// What a handler did with an event.
enum class Handled : std::uint8_t {
  ok,     // done: the cursor moves past it
  retry,  // try again (up to GroupOptions::max_attempts)
  fail,   // give up on it (an exception thrown by the handler counts as fail)
};

enum class StartFrom : std::uint8_t {
  end,       // a new group starts at the tail: it sees events published after it joined
  earliest,  // a new group starts at the slowest cursor of the other groups, or the tail
};

struct GroupOptions {
  std::uint32_t workers = 1;           // 1 .. layout::kMaxWorkers
  std::vector<int> cpus;               // cpus[i]: the CPU worker i's thread is pinned to (empty: not pinned)
  WaitStrategy wait = WaitStrategy::spin_yield();
  StartFrom start = StartFrom::end;    // only for a group that does not exist yet
  std::uint32_t batch = 256;           // most events one poll hands to the handler
  std::uint32_t max_attempts = 3;      // handler calls per event before it counts as failed
  std::chrono::milliseconds unblock_after{100};  // stall before a dead producer's claim is repaired
};

// Thrown by a worker when an event's handler failed max_attempts times. The worker
// stops with its cursor on that event: nothing is skipped.
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
  // (`Handled handler(const Event&)`, or returning void = ok). Returns how many.
  // Never blocks.
  template <class H>
  std::size_t poll(H&& handler, std::size_t max_events);
  template <class H>
  std::size_t poll(H&& handler) {
    return poll(std::forward<H>(handler), batch_);
  }

  // Batch delivery: `handler(std::span<const Event>)` gets every ready event that
  // routes here (up to `max_events`) in one call; returning void or Handled::ok
  // acknowledges them all. Returns how many.
  template <class H>
  std::size_t poll_batch(H&& handler, std::size_t max_events);

  // Polls until `stop` is set, idling with the group's wait strategy, repairing the
  // claims of dead producers that stall it.
  template <class H>
  void run(H&& handler, const std::atomic<bool>& stop);
  template <class H>
  void run_batch(H&& handler, const std::atomic<bool>& stop);

  [[nodiscard]] std::uint32_t index() const noexcept { return index_; }
  [[nodiscard]] std::uint32_t workers() const noexcept { return workers_; }
  // Position of the next record this worker will look at.
  [[nodiscard]] std::uint64_t position() const noexcept { return pos_; }
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
  // Loads the frame at `pos` and bounds what it says; false if nothing is there yet.
  bool peek(std::uint64_t pos, Record& rec) const;
  [[nodiscard]] bool mine(const Record& rec) const noexcept {
    return rec.state != RecordState::padding && route(rec.h->key, rec.h->producer_id, workers_) == index_;
  }
  void advance_to(std::uint64_t pos) noexcept;
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
    for (std::uint64_t off = 2 * kRecordHeaderSize; off < rec.bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
  }
  void note_voids(std::uint64_t n) noexcept {
    voids_ += n;
    slot_->voids_seen.store(voids_, std::memory_order_relaxed);
  }
  template <class H>
  Handled invoke(H& handler, const Event& e) noexcept;
  template <class Visit>
  std::size_t scan(Visit&& visit, std::size_t max_events);
  bool ready_at_position() const noexcept;
  void idle_step(detail::Waiter& waiter, const std::atomic<bool>& stop);
  void check_stall() noexcept;
  [[noreturn]] void corrupt(std::uint64_t pos, const char* what) const;
  void record_failure(const Event& e, std::uint32_t attempts, const std::string& message);

  detail::SegmentRefs r_{};
  layout::WorkerSlot* slot_ = nullptr;
  std::string group_;
  std::uint32_t index_ = 0;
  std::uint32_t workers_ = 1;
  std::uint32_t batch_ = 256;
  std::uint32_t max_attempts_ = 3;
  std::uint64_t pos_ = 0;
  std::uint64_t consumed_ = 0;
  std::uint64_t voids_ = 0;
  WaitStrategy wait_{};
  std::uint64_t unblock_after_ns_ = 100'000'000;
  std::uint64_t idle_polls_ = 0;
  std::uint64_t last_check_ns_ = 0;
  std::uint64_t stall_pos_ = layout::kNoPosition;
  std::uint64_t stall_since_ns_ = 0;
  bool stall_reported_ = false;
  std::vector<Event> batch_buf_;
  std::string last_error_;
};

class ConsumerGroup {
 public:
  // Joins group `name` (1..63 bytes of [A-Za-z0-9._-]), registering it if new. A
  // process takes over the worker slots; those of a dead process are taken over,
  // those of a live one are refused with Error(busy). If `workers` differs from the
  // count the cursors were kept for, every worker restarts from the slowest cursor.
  static ConsumerGroup join(const Segment& segment, std::string_view name, const GroupOptions& options = {});

  // Unregisters a group nobody runs (its cursors stop gating producers). Returns
  // false if there is no such group; throws Error(busy) if a live process runs it.
  static bool remove(const Segment& segment, std::string_view name);

  ConsumerGroup(ConsumerGroup&&) noexcept;
  ConsumerGroup& operator=(ConsumerGroup&&) noexcept;
  ~ConsumerGroup();

  [[nodiscard]] std::uint32_t workers() const noexcept;
  [[nodiscard]] Worker& worker(std::uint32_t i) noexcept;
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] const Segment& segment() const noexcept;

  // Runs every worker on its own thread (pinned to options.cpus[i] if given). The
  // handler is copied into each thread. Returns at once; stop() ends them.
  template <class H>
  void start(H handler);
  template <class H>
  void start_batch(H handler);
  // Asks the threads to stop and joins them. Rethrows the first error a worker died
  // of (HandlerFailed, or Error for a corrupt segment).
  void stop();
  // True while threads run and none has failed.
  [[nodiscard]] bool running() const noexcept;

 private:
  struct State;
  explicit ConsumerGroup(std::unique_ptr<State> s);
  void release() noexcept;
  void launch(std::uint32_t i, std::function<void(Worker&, const std::atomic<bool>&)> body);
  std::unique_ptr<State> st_;
};

// Pins the calling thread to `cpu`; throws Error(system) if the OS refuses.
void pin_this_thread(int cpu);

// ---------------------------------------------------------------------------------
// Hot path.

template <class H>
Handled Worker::invoke(H& handler, const Event& e) noexcept {
  using R = std::invoke_result_t<H&, const Event&>;
  std::uint32_t attempt = 0;
  for (;;) {
    Handled h = Handled::ok;
    try {
      if constexpr (std::is_void_v<R>) {
        handler(e);
      } else {
        h = handler(e);
      }
    } catch (const std::exception& ex) {
      last_error_ = ex.what();
      h = Handled::fail;
    } catch (...) {
      last_error_ = "non-standard exception";
      h = Handled::fail;
    }
    ++attempt;
    if (h == Handled::ok) [[likely]] return h;
    if (h == Handled::fail || attempt >= max_attempts_) {
      if (h == Handled::retry) last_error_ = "handler asked for a retry " + std::to_string(attempt) + " times";
      record_failure(e, attempt, last_error_);
      return Handled::fail;
    }
  }
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

inline void Worker::advance_to(std::uint64_t pos) noexcept {
  pos_ = pos;
  // Release: everything this worker read below `pos` happens-before a producer that
  // acquires the cursor (Producer::refresh_limit) reuses those bytes.
  slot_->cursor.store(pos, std::memory_order_release);
  detail::wake_if_parked(r_.control->space_waiters, r_.control->space_seq);
}

// Records examined per poll, whoever they route to (bounds one poll's work).
inline constexpr std::size_t kScanFactor = 16;

// Walks ready records from pos_, calling visit(event) for the data records that route
// here, until `max_events` were visited or nothing more is ready, moving the cursor
// past each record left behind. If visit throws, the cursor stays on its event.
template <class Visit>
std::size_t Worker::scan(Visit&& visit, std::size_t max_events) {
  std::size_t visited = 0;
  for (std::size_t examined = 0; visited < max_events && examined < max_events * kScanFactor; ++examined) {
    Record rec;
    if (!peek(pos_, rec)) {
      prefetch_payload(pos_);
      break;
    }
    if (mine(rec)) {
      if (rec.state == RecordState::data) [[likely]] {
        prefetch_rest(rec);
        visit(Event(rec.h, pos_, rec.len));
        ++visited;
      } else {
        note_voids(1);
      }
    }
    advance_to(pos_ + rec.bytes);
  }
  return visited;
}

template <class H>
std::size_t Worker::poll(H&& handler, std::size_t max_events) {
  return scan(
      [&](const Event& e) {
        slot_->inflight.store(e.position(), std::memory_order_relaxed);
        if (invoke(handler, e) != Handled::ok) [[unlikely]] {
          throw HandlerFailed("group \"" + group_ + "\" worker " + std::to_string(index_) + ": event at position " +
                                  std::to_string(e.position()) + " failed: " + last_error_,
                              e.position());
        }
        RINGBUS_FAULT_POINT(in_consumer);
        slot_->consumed.store(++consumed_, std::memory_order_relaxed);
      },
      max_events);
}

template <class H>
std::size_t Worker::poll_batch(H&& handler, std::size_t max_events) {
  // Collect without moving the cursor: it may pass events only once they are handled.
  batch_buf_.clear();
  std::uint64_t pos = pos_;
  std::uint64_t voids = 0;
  for (std::size_t examined = 0; batch_buf_.size() < max_events && examined < max_events * kScanFactor;
       ++examined) {
    Record rec;
    if (!peek(pos, rec)) break;
    if (mine(rec)) {
      if (rec.state == RecordState::data) {
        batch_buf_.emplace_back(rec.h, pos, rec.len);
      } else {
        ++voids;
      }
    }
    pos += rec.bytes;
  }
  if (!batch_buf_.empty()) {
    using R = std::invoke_result_t<H&, std::span<const Event>>;
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
    }
    if (result != Handled::ok) {
      // Redeliver the batch one event at a time, so that a failure names its event.
      return poll(
          [&](const Event& e) {
            const Event one[1] = {e};
            if constexpr (std::is_void_v<R>) {
              handler(std::span<const Event>(one, 1));
              return Handled::ok;
            } else {
              return handler(std::span<const Event>(one, 1));
            }
          },
          batch_buf_.size());
    }
    consumed_ += batch_buf_.size();
    slot_->consumed.store(consumed_, std::memory_order_relaxed);
  }
  if (voids != 0) note_voids(voids);
  if (pos != pos_) advance_to(pos);
  return batch_buf_.size();
}

template <class H>
void Worker::run(H&& handler, const std::atomic<bool>& stop) {
  detail::Waiter waiter(wait_);
  while (!stop.load(std::memory_order_relaxed)) {
    const std::uint64_t before = pos_;
    poll(handler, batch_);
    if (pos_ != before) {
      waiter.reset();
      idle_polls_ = 0;
      continue;
    }
    idle_step(waiter, stop);
  }
}

template <class H>
void Worker::run_batch(H&& handler, const std::atomic<bool>& stop) {
  detail::Waiter waiter(wait_);
  while (!stop.load(std::memory_order_relaxed)) {
    const std::uint64_t before = pos_;
    poll_batch(handler, batch_);
    if (pos_ != before) {
      waiter.reset();
      idle_polls_ = 0;
      continue;
    }
    idle_step(waiter, stop);
  }
}

inline bool Worker::ready_at_position() const noexcept {
  const std::uint64_t f =
      std::atomic_ref<std::uint64_t>(r_.record_at(pos_)->frame).load(std::memory_order_acquire);
  return frame::ready_for(f, r_.lap(pos_));
}

template <class H>
void ConsumerGroup::start(H handler) {
  for (std::uint32_t i = 0; i < workers(); ++i) {
    launch(i, [handler](Worker& w, const std::atomic<bool>& stop) mutable { w.run(handler, stop); });
  }
}

template <class H>
void ConsumerGroup::start_batch(H handler) {
  for (std::uint32_t i = 0; i < workers(); ++i) {
    launch(i, [handler](Worker& w, const std::atomic<bool>& stop) mutable { w.run_batch(handler, stop); });
  }
}

}  // namespace ringbus
