// A snapshot of a segment's counters, read from shared memory (from any process, e.g.
// `ringbus info` / `ringbus stat`). Each value is read racily while the segment is in
// use: a consistent picture of a moving system is not promised, only recent values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringbus/segment.hpp"

namespace ringbus {

struct ProducerStats {
  std::uint32_t slot = 0;
  std::uint32_t producer_id = 0;
  std::uint32_t pid = 0;
  std::string state;  // active, detached, recovering, ...
  bool alive = false;
  bool exclusive = false;  // attached as the segment's exclusive producer
  std::uint64_t epoch = 0;
  std::uint64_t next_seq = 0;
  std::uint64_t published = 0;
  std::uint64_t full = 0;  // claims refused or delayed by back-pressure
  std::uint64_t aborted = 0;
};

struct WorkerStats {
  std::uint32_t index = 0;
  std::uint32_t pid = 0;
  std::string state;
  bool alive = false;
  std::uint64_t cursor = 0;
  std::uint64_t lag_bytes = 0;  // tail - cursor
  std::uint64_t consumed = 0;
  std::uint64_t voids = 0;
  std::uint64_t handler_errors = 0;  // failed handler attempts
  std::uint64_t retries = 0;
  std::uint64_t dead_lettered = 0;
  std::uint64_t dup_dropped = 0;      // dedup: seen before
  std::uint64_t too_old_dropped = 0;  // dedup: below the window
  std::uint64_t dedup_evictions = 0;
  std::uint64_t redelivered = 0;      // delivered again after a process died
  std::uint64_t redriven = 0;         // dead letters redelivered and accepted
  std::uint64_t pending = 0;          // events set aside now (retrying, held, waiting for dead-letter
                                      // room) by a live process; 0 otherwise
  // Processes that died in a row while handling the event at position died_at, as the
  // joins after them counted (layout::kInflightDeaths; GroupOptions::max_deaths).
  std::uint64_t deaths_in_flight = 0;
  std::uint64_t died_at = 0;
  // Where the events its process may have handled past the cursor end (0: none): a join
  // taking the slot now delivers those from `cursor` up to here again, marked
  // Event::redelivered(). For a live worker, what its death now would leave.
  std::uint64_t redeliver_until = 0;
};

struct GroupStats {
  std::uint32_t slot = 0;
  std::string name;
  std::uint32_t workers = 0;
  std::uint64_t cursor = 0;     // slowest worker
  std::uint64_t lag_bytes = 0;  // tail - slowest cursor
  std::uint64_t consumed = 0;
  std::uint64_t resumes = 0;
  std::uint64_t dead_letters = 0;     // entries in the group's dead-letter ring
  std::uint64_t dlq_bytes = 0;        // bytes they use
  std::uint64_t dlq_capacity = 0;     // 0: the segment has no dead-letter rings
  std::uint64_t dlq_full_waits = 0;   // times a worker found the ring full
  // Publish-to-handle latency recorded by the workers (GroupOptions::record_latency):
  // counts per bucket of layout::latency_bucket, summed over workers.
  std::vector<std::uint64_t> latency;
  std::uint64_t latency_sum_ns = 0;  // sum of the recorded latencies
  [[nodiscard]] std::uint64_t latency_samples() const noexcept;
  // Upper edge of the bucket holding percentile p (0..100]; 0 without samples.
  [[nodiscard]] std::uint64_t latency_percentile(double p) const noexcept;
  std::vector<WorkerStats> worker;
};

struct SegmentStats {
  std::uint64_t tail = 0;
  std::uint64_t capacity = 0;
  std::uint32_t max_event = 0;
  std::uint64_t published = 0;      // sum over producer slots still holding their count
  std::uint64_t back_pressure = 0;  // sum of ProducerStats::full
  std::uint64_t keys_used = 0;
  std::uint64_t key_slots = 0;
  // What the segment was created with, besides the above.
  std::uint64_t total_size = 0;       // bytes of the whole segment
  std::uint64_t dlq_capacity = 0;     // dead-letter ring bytes per group (0: none)
  std::uint64_t dedup_window = 0;     // producer_seqs a dedup window remembers (0: no dedup region)
  std::uint32_t dedup_producers = 0;  // producer windows per group worker
  std::uint32_t type_slots = 0;       // event types the schema registry holds (0: no registry)
  std::uint32_t types_used = 0;       // event types registered
  std::uint64_t producers_recovered = 0;
  std::uint64_t holes_padded = 0;
  std::uint64_t records_voided = 0;
  std::uint64_t latches_released = 0;
  std::uint64_t longest_stall_ns = 0;
  std::uint64_t stalls_unresolved = 0;  // reader stalls past unblock_after that recovery could not end
  // The TSC rate the segment shares (ControlBlock::tsc_mult) in ticks a second; 0 when
  // none is there yet or the word holds no plausible rate (50 MHz - 20 GHz).
  std::uint64_t tsc_hz = 0;
  std::vector<ProducerStats> producers;  // slots ever used
  std::vector<GroupStats> groups;        // registered groups
};

SegmentStats read_stats(const Segment& segment);

}  // namespace ringbus
