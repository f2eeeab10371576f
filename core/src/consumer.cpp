// Consumer group cold paths: registration, resume, worker ownership, threads, stalls.
#include "ringbus/consumer.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "ringbus/detail/process.hpp"
#include "ringbus/detail/recovery.hpp"
#include "ringbus/error.hpp"

namespace ringbus {
namespace {

using layout::GroupSlot;
using layout::WorkerSlot;

constexpr std::uint32_t kNoGroup = ~0u;

void store_name(GroupSlot& g, std::string_view name) noexcept {
  char buf[layout::kGroupNameBytes] = {};
  std::memcpy(buf, name.data(), std::min(name.size(), sizeof buf - 1));
  for (std::size_t w = 0; w < layout::kGroupNameBytes / 8; ++w) {
    std::uint64_t v = 0;
    std::memcpy(&v, buf + 8 * w, 8);
    g.name[w].store(v, std::memory_order_relaxed);
  }
}

std::string load_name(const GroupSlot& g) {
  char buf[layout::kGroupNameBytes + 1] = {};
  for (std::size_t w = 0; w < layout::kGroupNameBytes / 8; ++w) {
    const std::uint64_t v = g.name[w].load(std::memory_order_relaxed);
    std::memcpy(buf + 8 * w, &v, 8);
  }
  return std::string(buf, ::strnlen(buf, layout::kGroupNameBytes));
}

// Index of the active group called `name`, or kNoGroup. Sets `pending` when a live
// process is registering a group of that name right now.
std::uint32_t find_group(const detail::SegmentRefs& r, std::string_view name, bool* pending = nullptr) {
  for (std::uint32_t i = 0; i < r.max_groups; ++i) {
    const std::uint64_t st = r.groups[i].state.load(std::memory_order_acquire);  // pairs with join()
    const auto s = layout::owner::state(st);
    if (s != layout::owner::active && s != layout::owner::registering) continue;
    if (load_name(r.groups[i]) != name) continue;
    if (s == layout::owner::active) return i;
    if (pending != nullptr && !detail::process_dead(layout::owner::pid(st), 0)) *pending = true;
  }
  return kNoGroup;
}

std::string where_of(const Segment& seg, std::string_view name) {
  return "segment " + seg.location().display() + " group \"" + std::string(name) + "\"";
}

// Registers a new group at slot `g` (already taken: state registering by us). The
// cursor it starts from is read only after gating_gen moves, so every producer limit
// computed without this group is at most one lap past it. DESIGN.md, "Back-pressure
// and group registration".
void register_group(const detail::SegmentRefs& r, std::uint32_t g, std::string_view name,
                    const GroupOptions& o, std::uint32_t pid) {
  GroupSlot& gs = r.groups[g];
  store_name(gs, name);
  gs.flags.store(0, std::memory_order_relaxed);
  gs.resumes.store(0, std::memory_order_relaxed);
  gs.created_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
  gs.workers.store(o.workers, std::memory_order_relaxed);
  r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
  std::uint64_t start = r.control->tail.load(std::memory_order_seq_cst);
  if (o.start == StartFrom::earliest) {
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
  for (WorkerSlot& w : gs.worker) {
    w.cursor.store(start, std::memory_order_relaxed);
    w.consumed.store(0, std::memory_order_relaxed);
    w.voids_seen.store(0, std::memory_order_relaxed);
    w.handler_errors.store(0, std::memory_order_relaxed);
    w.inflight.store(layout::kNoPosition, std::memory_order_relaxed);
    w.owner.store(layout::owner::make(layout::owner::free, 0), std::memory_order_relaxed);
  }
  gs.state.store(layout::owner::make(layout::owner::active, pid), std::memory_order_seq_cst);
  r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
}

void unregister_group(const detail::SegmentRefs& r, std::uint32_t g) {
  GroupSlot& gs = r.groups[g];
  gs.state.store(layout::owner::make(layout::owner::free, 0), std::memory_order_seq_cst);
  r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
}

}  // namespace

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
  try {
    stop();
  } catch (...) {
    // A worker's error is reported by stop(); a destructor has nowhere to put it.
  }
  const std::uint32_t pid = detail::self_process().pid;
  GroupSlot& gs = st_->seg.refs().groups[st_->slot];
  for (std::uint32_t i = 0; i < st_->workers.size(); ++i) {
    gs.worker[i].owner.store(layout::owner::make(layout::owner::detached, pid), std::memory_order_release);
  }
  st_.reset();
}

ConsumerGroup ConsumerGroup::join(const Segment& segment, std::string_view name, const GroupOptions& options) {
  if (!segment) throw Error(Errc::invalid_options, "ConsumerGroup::join: no segment");
  const std::string where = where_of(segment, name);
  if (std::string why = check_name(name, layout::kGroupNameBytes - 1); !why.empty()) {
    throw Error(Errc::invalid_name, where + ": name " + why);
  }
  if (options.workers == 0 || options.workers > layout::kMaxWorkers) {
    throw Error(Errc::invalid_options, where + ": workers must be between 1 and " +
                                           std::to_string(layout::kMaxWorkers));
  }
  if (!options.cpus.empty() && options.cpus.size() < options.workers) {
    throw Error(Errc::invalid_options, where + ": " + std::to_string(options.workers) + " workers but only " +
                                           std::to_string(options.cpus.size()) + " cpus given");
  }
  if (options.batch == 0 || options.max_attempts == 0) {
    throw Error(Errc::invalid_options, where + ": batch and max_attempts must be at least 1");
  }
  detail::register_fast_side();
  const detail::SegmentRefs& r = segment.refs();
  const detail::ProcessId& me = detail::self_process();

  std::uint32_t g = kNoGroup;
  for (int round = 0; g == kNoGroup; ++round) {
    if (round > 10000) throw Error(Errc::busy, where + ": registration did not settle");
    bool pending = false;
    g = find_group(r, name, &pending);
    if (g != kNoGroup) break;
    if (pending) {
      std::this_thread::yield();
      continue;
    }
    std::uint32_t free_slot = kNoGroup;
    for (std::uint32_t i = 0; i < r.max_groups && free_slot == kNoGroup; ++i) {
      std::uint64_t st = r.groups[i].state.load(std::memory_order_acquire);
      if (layout::owner::state(st) == layout::owner::free &&
          r.groups[i].state.compare_exchange_strong(st, layout::owner::make(layout::owner::registering, me.pid),
                                                    std::memory_order_seq_cst)) {
        free_slot = i;
      }
    }
    if (free_slot == kNoGroup) {
      throw Error(Errc::no_slot, where + ": all " + std::to_string(r.max_groups) + " group slots are in use");
    }
    register_group(r, free_slot, name, options, me.pid);
    // Two processes registering the same name at once: the lower slot wins.
    const std::uint32_t first = find_group(r, name);
    if (first != free_slot) {
      unregister_group(r, free_slot);
      continue;
    }
    g = free_slot;
  }

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
  }
  if (kept != options.workers) {
    // Keys move between workers: everyone restarts from the slowest cursor, which
    // producers already respect, so lowering the others is safe (at-least-once).
    std::uint64_t slowest = layout::kNoPosition;
    for (std::uint64_t i = 0; i < kept; ++i) slowest = std::min(slowest, gs.worker[i].cursor.load(std::memory_order_acquire));
    for (WorkerSlot& ws : gs.worker) ws.cursor.store(slowest, std::memory_order_release);
    gs.workers.store(options.workers, std::memory_order_release);
    r.control->gating_gen.fetch_add(1, std::memory_order_seq_cst);
  }
  // Slots beyond the new worker count are not run by anyone.
  for (std::uint32_t i = options.workers; i < need; ++i) {
    gs.worker[i].owner.store(layout::owner::make(layout::owner::detached, me.pid), std::memory_order_release);
  }
  gs.resumes.fetch_add(1, std::memory_order_relaxed);

  auto st = std::make_unique<State>();
  st->seg = segment;
  st->name = std::string(name);
  st->slot = g;
  st->options = options;
  for (std::uint32_t i = 0; i < options.workers; ++i) {
    auto w = std::unique_ptr<Worker>(new Worker());
    w->r_ = r;
    w->slot_ = &gs.worker[i];
    w->group_ = st->name;
    w->index_ = i;
    w->workers_ = options.workers;
    w->batch_ = options.batch;
    w->max_attempts_ = options.max_attempts;
    w->pos_ = gs.worker[i].cursor.load(std::memory_order_acquire);
    w->consumed_ = gs.worker[i].consumed.load(std::memory_order_relaxed);
    w->voids_ = gs.worker[i].voids_seen.load(std::memory_order_relaxed);
    w->wait_ = options.wait;
    w->unblock_after_ns_ = static_cast<std::uint64_t>(options.unblock_after.count()) * 1'000'000ull;
    w->batch_buf_.reserve(options.batch);
    st->workers.push_back(std::move(w));
  }
  return ConsumerGroup(std::move(st));
}

bool ConsumerGroup::remove(const Segment& segment, std::string_view name) {
  const detail::SegmentRefs& r = segment.refs();
  const std::uint32_t g = find_group(r, name);
  if (g == kNoGroup) return false;
  GroupSlot& gs = r.groups[g];
  for (const WorkerSlot& ws : gs.worker) {
    const std::uint64_t w = ws.owner.load(std::memory_order_acquire);
    const auto s = layout::owner::state(w);
    if ((s == layout::owner::active || s == layout::owner::attaching) &&
        !detail::owner_dead(w, ws.owner_start.load(std::memory_order_acquire))) {
      throw Error(Errc::busy, where_of(segment, name) + ": run by live pid " + std::to_string(layout::owner::pid(w)));
    }
  }
  unregister_group(r, g);
  return true;
}

std::uint32_t ConsumerGroup::workers() const noexcept { return static_cast<std::uint32_t>(st_->workers.size()); }
Worker& ConsumerGroup::worker(std::uint32_t i) noexcept { return *st_->workers[i]; }
const std::string& ConsumerGroup::name() const noexcept { return st_->name; }
const Segment& ConsumerGroup::segment() const noexcept { return st_->seg; }

bool ConsumerGroup::running() const noexcept {
  return !st_->threads.empty() && !st_->failed.load(std::memory_order_acquire) &&
         !st_->stop.load(std::memory_order_acquire);
}

void ConsumerGroup::launch(std::uint32_t i, std::function<void(Worker&, const std::atomic<bool>&)> body) {
  State* s = st_.get();
  s->stop.store(false, std::memory_order_relaxed);
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

void ConsumerGroup::stop() {
  if (!st_) return;
  st_->stop.store(true, std::memory_order_release);
  // Workers parked on the data futex would otherwise sleep out their timeout. Other
  // processes' parked consumers see a spurious wake-up and park again.
  layout::ControlBlock& ctl = *st_->seg.refs().control;
  ctl.data_seq.fetch_add(1, std::memory_order_release);
  detail::futex_wake_all(ctl.data_seq);
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

void Worker::idle_step(detail::Waiter& waiter, const std::atomic<bool>& stop) {
  // A stop requested after the caller checked the flag is seen here: stop() sets it
  // before bumping data_seq (release), and the park reads data_seq first (acquire).
  const bool slept = waiter.idle(r_.control->data_waiters, r_.control->data_seq, [&] {
    return stop.load(std::memory_order_relaxed) || ready_at_position();
  });
  if (slept || (++idle_polls_ & 0x3ff) == 0) check_stall();
}

// A reader that waits at a position the tail has passed is stalled by a claim that
// has not been committed. After unblock_after, repair it if its producer is dead.
void Worker::check_stall() noexcept {
  const std::uint64_t now = detail::monotonic_ns();
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
    const std::uint64_t stalled = now - stall_since_ns_;
    std::atomic<std::uint64_t>& longest = r_.control->longest_stall_ns;
    std::uint64_t prev = longest.load(std::memory_order_relaxed);
    while (prev < stalled && !longest.compare_exchange_weak(prev, stalled, std::memory_order_relaxed)) {
    }
    stall_pos_ = layout::kNoPosition;
  }
}

void Worker::corrupt(std::uint64_t pos, const char* what) const {
  throw Error(Errc::corrupt, "group \"" + group_ + "\" worker " + std::to_string(index_) + ": at position " +
                                 std::to_string(pos) + ": " + what);
}

void Worker::record_failure(const Event& e, std::uint32_t attempts, const std::string& message) {
  (void)e;
  (void)attempts;
  (void)message;
  slot_->handler_errors.fetch_add(1, std::memory_order_relaxed);
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
