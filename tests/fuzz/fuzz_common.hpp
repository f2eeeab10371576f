// Shared by the fuzz targets and the corpus generator: the segment configuration the
// seeds use (small, with every region), and the reading an attached segment gets.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ringbus/ringbus.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/json.hpp"
#include "ringbus/registry.hpp"

namespace ringbus::fuzz {

inline SegmentOptions seed_options() {
  SegmentOptions o;
  o.capacity = 64 * 1024;
  o.max_event = 512;
  o.max_producers = 2;
  o.max_groups = 2;
  o.key_slots = 16;
  o.dedup_window = 64;
  o.dedup_producers = 2;
  o.dlq_capacity = 4096;
  return o;
}

// Everything a process may do with a segment it attached: read counters, follow the
// log, list dead letters, run a group (with dedup and dead letters), publish. Errors
// are fine; crashes, out-of-bounds accesses and hangs are not.
inline void exercise(const Segment& seg) {
  (void)read_stats(seg);
  try {
    TailReader t = TailReader::open(seg, TailStart::earliest);
    std::optional<SchemaRegistry> registry;
    if (seg.refs().registry != nullptr) registry.emplace(seg);
    Event e;
    // What `ringbus tail` prints (the envelope, names from the registry) must be JSON,
    // whatever the segment holds.
    for (int i = 0; i < 256 && t.try_next(e); ++i) {
      if (!is_json(event_json(e, registry ? &*registry : nullptr))) {
        std::fprintf(stderr, "fuzz: a record printed as a line that is not JSON\n");
        std::abort();
      }
    }
  } catch (const Error&) {
  }
  const SegmentStats s = read_stats(seg);
  for (const GroupStats& g : s.groups) {
    // Names and messages read from the segment print as JSON strings (`ringbus info
    // --json`, `ringbus dlq ... list --json`).
    if (!is_json(json_string(g.name))) std::abort();
    try {
      for (const DeadLetter& d : DeadLetters::open(seg, g.name).list()) {
        if (!is_json(json_string(d.message))) std::abort();
      }
    } catch (const Error&) {
    }
  }
  // The groups the segment holds, joined as they are and with another worker count:
  // their cursors, in-flight words and redelivery windows come from the segment.
  for (std::size_t i = 0; i < s.groups.size() && i < 2; ++i) {
    for (const std::uint32_t workers : {s.groups[i].workers, s.groups[i].workers == 1 ? 2u : 1u}) {
      try {
        GroupOptions o;
        o.workers = workers;
        o.retry.max_attempts = 2;
        o.max_deaths = 1;
        o.unblock_after = std::chrono::milliseconds(0);
        ConsumerGroup g = ConsumerGroup::join(seg, s.groups[i].name, o);
        std::uint64_t n = 0;
        for (std::uint32_t w = 0; w < workers; ++w) {
          g.worker(w).poll_batch(
              [&](std::span<const Event> b) { return (n++ + b.size()) % 4 == 0 ? Handled::fail : Handled::ok; }, 16);
          (void)g.worker(w).poll_redrives([](const Event&) {});
        }
      } catch (const Error&) {
      } catch (const HandlerFailed&) {
      }
    }
  }
  try {
    GroupOptions o;
    o.workers = 2;
    o.dedup = seg.refs().dedup != nullptr;
    o.retry.max_attempts = 1;
    o.deliver_voids = true;
    o.unblock_after = std::chrono::milliseconds(0);
    ConsumerGroup g = ConsumerGroup::join(seg, "fuzz", o);
    std::uint64_t n = 0;
    for (std::uint32_t w = 0; w < 2; ++w) {
      g.worker(w).poll([&](const Event& e) { return (n++ + e.payload().size()) % 3 == 0 ? Handled::fail : Handled::ok; },
                       64);
      (void)g.worker(w).poll_redrives([](const Event&) {});
    }
  } catch (const Error&) {
  } catch (const HandlerFailed&) {
  }
  try {
    Producer p = Producer::attach(seg);
    const std::uint64_t v = 7;
    for (std::uint64_t k = 0; k < 4; ++k) (void)p.try_publish(k, 1, std::as_bytes(std::span(&v, 1)));
  } catch (const Error&) {
  }
}

}  // namespace ringbus::fuzz
