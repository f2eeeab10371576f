#include "ringbus/stats.hpp"

#include <algorithm>
#include <cstring>

#include "ringbus/clock.hpp"
#include "ringbus/dedup.hpp"
#include "ringbus/detail/groups.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/record_walk.hpp"
#include "ringbus/detail/recovery.hpp"

namespace ringbus {
namespace {

const char* state_name(layout::owner::State s) {
  switch (s) {
    case layout::owner::free: return "free";
    case layout::owner::attaching: return "attaching";
    case layout::owner::active: return "active";
    case layout::owner::detached: return "detached";
    case layout::owner::recovering: return "recovering";
    case layout::owner::registering: return "registering";
  }
  return "invalid";
}

bool held(layout::owner::State s) {
  return s == layout::owner::active || s == layout::owner::attaching || s == layout::owner::recovering;
}

// A redelivery window's end as the record boundary after it: a window that ends past
// the event in flight ends inside that event's record (redelivery_end). Shared memory:
// a record that is not there or does not fit leaves the end 8-byte aligned.
std::uint64_t record_end(const detail::SegmentRefs& r, std::uint64_t end) {
  const std::uint64_t pos = end & ~(kRecordAlign - 1);
  if (pos == end) return end;
  const std::uint64_t f = std::atomic_ref<std::uint64_t>(r.record_at(pos)->frame).load(std::memory_order_acquire);
  const std::uint64_t bytes = frame::ready_for(f, r.lap(pos)) && frame::state(f) != RecordState::padding
                                  ? detail::record_span(r, f, pos)
                                  : 0;
  return pos + (bytes != 0 ? bytes : kRecordAlign);
}

}  // namespace

SegmentStats read_stats(const Segment& segment) {
  segment.require_open("read its statistics");
  const detail::SegmentRefs& r = segment.refs();
  const layout::ControlBlock& c = *r.control;
  SegmentStats s;
  s.tail = c.tail.load(std::memory_order_acquire);
  s.capacity = r.capacity;
  s.max_event = r.max_event;
  s.keys_used = c.keys_used.load(std::memory_order_relaxed);
  s.key_slots = r.key_mask + 1;
  s.total_size = r.total_size;
  s.dlq_capacity = r.dlq_capacity;
  s.dedup_window = r.dedup_words == 0 ? 0 : dedup_window_of(r.dedup_words);
  s.dedup_producers = r.dedup_words == 0 ? 0 : r.dedup_producers;
  s.type_slots = r.registry_slots;
  if (r.registry != nullptr) {  // shared memory: a count no larger than the registry
    s.types_used = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(r.registry->types.load(std::memory_order_relaxed), r.registry_slots));
  }
  s.producers_recovered = c.producers_recovered.load(std::memory_order_relaxed);
  s.holes_padded = c.holes_padded.load(std::memory_order_relaxed);
  s.records_voided = c.records_voided.load(std::memory_order_relaxed);
  s.latches_released = c.latches_released.load(std::memory_order_relaxed);
  s.longest_stall_ns = c.longest_stall_ns.load(std::memory_order_relaxed);
  s.stalls_unresolved = c.stalls_unresolved.load(std::memory_order_relaxed);
  s.tsc_hz = detail::shared_tsc_hz(c.tsc_mult.load(std::memory_order_relaxed));

  const std::uint64_t exclusive = c.exclusive.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < r.max_producers; ++i) {
    const layout::ProducerSlot& p = r.producers[i];
    const std::uint64_t w = p.owner.load(std::memory_order_acquire);
    const auto st = layout::owner::state(w);
    if (st == layout::owner::free) continue;
    ProducerStats ps;
    ps.slot = i;
    ps.producer_id = static_cast<std::uint32_t>(p.producer_id.load(std::memory_order_relaxed));
    ps.pid = layout::owner::pid(w);
    ps.state = state_name(st);
    ps.alive = held(st) && !detail::owner_dead(w, p.owner_start.load(std::memory_order_relaxed));
    ps.exclusive = layout::exclusive::held(exclusive) && layout::exclusive::slot(exclusive) == i &&
                   layout::exclusive::pid(exclusive) == ps.pid && held(st);
    ps.epoch = p.epoch.load(std::memory_order_relaxed);
    ps.next_seq = p.next_seq.load(std::memory_order_relaxed);
    ps.published = p.published.load(std::memory_order_relaxed);
    ps.full = p.full_count.load(std::memory_order_relaxed);
    ps.aborted = p.aborted.load(std::memory_order_relaxed);
    s.published += ps.published;
    s.back_pressure += ps.full;
    s.producers.push_back(std::move(ps));
  }

  for (std::uint32_t g = 0; g < r.max_groups; ++g) {
    const layout::GroupSlot& gs = r.groups[g];
    if (layout::owner::state(gs.state.load(std::memory_order_acquire)) != layout::owner::active) continue;
    GroupStats gi;
    gi.slot = g;
    gi.name = detail::group_name(gs);
    if (r.dlq != nullptr) {
      const layout::DlqControl& dlq = *r.dlq_control(g);
      gi.dead_letters = dlq.entries.load(std::memory_order_relaxed);
      gi.dlq_bytes = dlq.tail.load(std::memory_order_relaxed) - dlq.head.load(std::memory_order_relaxed);
      gi.dlq_capacity = r.dlq_capacity;
      gi.dlq_full_waits = dlq.full_waits.load(std::memory_order_relaxed);
    }
    gi.workers = static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(gs.workers.load(std::memory_order_acquire), 1, layout::kMaxWorkers));
    gi.resumes = gs.resumes.load(std::memory_order_relaxed);
    gi.cursor = layout::kNoPosition;
    for (std::uint32_t i = 0; i < gi.workers; ++i) {
      const layout::WorkerSlot& ws = gs.worker[i];
      WorkerStats wi;
      const std::uint64_t w = ws.owner.load(std::memory_order_acquire);
      wi.index = i;
      wi.pid = layout::owner::pid(w);
      wi.state = state_name(layout::owner::state(w));
      wi.alive = held(layout::owner::state(w)) && !detail::owner_dead(w, ws.owner_start.load(std::memory_order_relaxed));
      wi.cursor = ws.cursor.load(std::memory_order_acquire);
      wi.lag_bytes = s.tail > wi.cursor ? s.tail - wi.cursor : 0;
      wi.consumed = ws.consumed.load(std::memory_order_relaxed);
      wi.voids = ws.voids_seen.load(std::memory_order_relaxed);
      wi.handler_errors = ws.handler_errors.load(std::memory_order_relaxed);
      wi.retries = ws.retries.load(std::memory_order_relaxed);
      wi.dead_lettered = ws.dead_lettered.load(std::memory_order_relaxed);
      wi.dup_dropped = ws.dup_dropped.load(std::memory_order_relaxed);
      wi.too_old_dropped = ws.too_old_dropped.load(std::memory_order_relaxed);
      wi.dedup_evictions = ws.dedup_evictions.load(std::memory_order_relaxed);
      wi.redelivered = ws.redelivered.load(std::memory_order_relaxed);
      wi.redriven = ws.redriven.load(std::memory_order_relaxed);
      // Set aside now, by a live process: a dead one's are delivered again at the next join.
      wi.pending = wi.alive ? ws.pending.load(std::memory_order_relaxed) : 0;
      if (const std::uint64_t f = ws.inflight.load(std::memory_order_relaxed); f != layout::kNoPosition) {
        wi.deaths_in_flight = f & layout::kInflightDeaths;
        if (wi.deaths_in_flight != 0) wi.died_at = f - wi.deaths_in_flight;
      }
      if (const std::uint64_t until = std::min(layout::redelivery_end(ws), s.tail); until > wi.cursor) {
        wi.redeliver_until = record_end(r, until);
      }
      gi.cursor = std::min(gi.cursor, wi.cursor);
      gi.consumed += wi.consumed;
      gi.worker.push_back(std::move(wi));
    }
    gi.lag_bytes = s.tail > gi.cursor ? s.tail - gi.cursor : 0;
    gi.latency.assign(layout::kLatencyBuckets, 0);
    for (std::uint32_t i = 0; i < layout::kMaxWorkers; ++i) {
      const std::atomic<std::uint64_t>* b = r.latency_of(g, i);
      for (std::uint32_t k = 0; k < layout::kLatencyBuckets; ++k) gi.latency[k] += b[k].load(std::memory_order_relaxed);
      gi.latency_sum_ns += b[layout::kLatencySum].load(std::memory_order_relaxed);
    }
    s.groups.push_back(std::move(gi));
  }
  return s;
}

std::uint64_t GroupStats::latency_samples() const noexcept {
  std::uint64_t n = 0;
  for (std::uint64_t c : latency) n += c;
  return n;
}

std::uint64_t GroupStats::latency_percentile(double p) const noexcept {
  const std::uint64_t total = latency_samples();
  if (total == 0) return 0;
  const auto target = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(static_cast<double>(total) * p / 100.0 + 0.5));
  std::uint64_t seen = 0;
  for (std::uint32_t k = 0; k < latency.size(); ++k) {
    seen += latency[k];
    if (seen >= target) return layout::latency_bucket_upper(k);
  }
  return layout::latency_bucket_upper(static_cast<std::uint32_t>(latency.size() - 1));
}

}  // namespace ringbus
