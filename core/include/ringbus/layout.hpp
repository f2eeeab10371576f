// The shared-memory layout of a ringbus segment. Every struct here lives in memory
// shared between processes: explicitly padded, sizes and offsets asserted, atomics
// lock-free. DESIGN.md, "Segment layout", draws the whole picture; tools read the
// counters from outside the process through these definitions.
//
// A segment is a sequence of regions, each described in the header's region table:
//
//   [header page][control block][producer slots][group slots][key table] ... [log ring]
//
// Memory in a segment is untrusted: it is validated on attach (segment.cpp) and every
// offset or length read from it later is bounded before use.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ringbus/record.hpp"

namespace ringbus::layout {

inline constexpr std::uint64_t kMagic = 0x0053554247'4e4952ull;  // "RINGBUS\0" in memory order
inline constexpr std::uint32_t kVersionMajor = 1;
// Minor versions add what older libraries do not read. 1: ControlBlock::group_lock.
// 2: ControlBlock::exclusive (a library of minor < 2 does not see an exclusive producer:
// do not attach one to a segment that such a library publishes to).
// 3: ControlBlock::tsc_mult. 4: SegmentHeader::pid_namespace. 5: DlqEntry::next_attempt_ns,
// DlqEntry::attempts' kDlqWaiting bit and WorkerSlot::inflight's kInflightDeaths bits.
// 6: WorkerSlot::redeliver_until (a word no older library wrote: zero in their segments).
inline constexpr std::uint32_t kVersionMinor = 6;

inline constexpr std::size_t kPage = 4096;
// Independently written hot words are kept this far apart: one line, plus the
// adjacent line the L2 spatial prefetcher pulls in with it.
inline constexpr std::size_t kHotAlign = 128;
inline constexpr std::size_t kMaxRegions = 16;
inline constexpr std::size_t kNameBytes = 256;
inline constexpr std::size_t kGroupNameBytes = 64;  // including the terminating zero
inline constexpr std::uint32_t kMaxWorkers = 16;    // workers per consumer group
inline constexpr std::uint32_t kMaxProducerSlots = 1u << 15;  // owner field of a key latch
inline constexpr std::uint64_t kMinCapacity = 64 * 1024;
inline constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 40;

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && alignof(std::atomic<std::uint64_t>) == 8,
              "shared atomics must have the layout of the plain integer");

// ---------------------------------------------------------------------------------
// Ownership words: who holds a producer slot, a group registration or a worker.
// [state:8 | reserved:24 | pid:32]. The owner's process start time is kept beside it
// so that a recycled pid is not mistaken for the owner (see detail/process.hpp).
namespace owner {
enum State : std::uint64_t {
  free = 0,        // never used
  attaching = 1,   // being taken; start time not yet written
  active = 2,      // held by a live process (or a dead one nobody has recovered yet)
  detached = 3,    // released cleanly; identity (producer id, sequence) retained
  recovering = 4,  // a process is repairing what a dead owner left behind
  registering = 5, // consumer group being registered
};
constexpr std::uint64_t make(State s, std::uint32_t pid) noexcept {
  return (std::uint64_t(s) << 56) | pid;
}
constexpr State state(std::uint64_t w) noexcept { return State(w >> 56); }
constexpr std::uint32_t pid(std::uint64_t w) noexcept { return std::uint32_t(w); }
}  // namespace owner

// ---------------------------------------------------------------------------------
enum class RegionKind : std::uint32_t {
  none = 0,
  control = 1,
  producers = 2,
  groups = 3,
  keys = 4,
  dedup = 5,
  dlq = 6,
  registry = 7,
  log = 8,
  latency = 9,
};

struct RegionDesc {
  std::uint32_t kind;         // RegionKind
  std::uint32_t entry_size;   // bytes per entry (tables) or 1 (the log)
  std::uint64_t entry_count;
  std::uint64_t offset;       // from the start of the segment
  std::uint64_t size;         // entry_size * entry_count
};
static_assert(sizeof(RegionDesc) == 32);

// Page 0. Everything from `total_size` to the end of `name` is immutable after
// creation and covered by `checksum`; `magic` is stored last with release order,
// so an opener that acquires the magic sees a complete header.
struct SegmentHeader {
  std::atomic<std::uint64_t> magic;   // 0
  std::uint32_t version_major;        // 8
  std::uint32_t version_minor;        // 12
  std::uint64_t checksum;             // 16 FNV-1a over [offsetof(total_size), kChecksumEnd)
  // 24: the creator's pid namespace (the inode of /proc/self/ns/pid; 0: unknown, or a
  // segment of minor version < 4). Written before the magic, never after; outside the
  // checksum, which older minors computed without it.
  std::uint64_t pid_namespace;
  // ---- immutable, checksummed ----
  std::uint64_t total_size;           // 32 bytes of the whole segment
  std::uint64_t creator_pid;          // 40
  std::uint64_t creator_start_ticks;  // 48
  std::uint64_t created_realtime_ns;  // 56
  std::uint32_t mode;                 // 64 permission bits asked for at creation
  std::uint32_t header_size;          // 68 sizeof(SegmentHeader)
  std::uint64_t log_capacity;         // 72 bytes, power of two
  std::uint32_t log_capacity_shift;   // 80 log2(log_capacity)
  std::uint32_t max_event;            // 84 largest payload accepted
  std::uint32_t max_producers;        // 88
  std::uint32_t max_groups;           // 92
  std::uint32_t max_workers;          // 96 == kMaxWorkers
  std::uint32_t key_slots;            // 100 power of two
  std::uint32_t region_count;         // 104
  std::uint32_t dedup_words;          // 108 words per dedup window (0 = no dedup region)
  std::uint32_t dedup_producers;      // 112 producer windows per worker
  std::uint32_t registry_slots;       // 116 event types the schema registry holds (0 = none)
  std::uint64_t dlq_capacity;         // 120 bytes of each group's dead-letter ring (0 = none)
  RegionDesc regions[kMaxRegions];    // 128
  char name[kNameBytes];              // 640 shm name or file path, zero-terminated
  std::uint8_t pad[kPage - 896];      // 896
};
inline constexpr std::size_t kChecksumBegin = 32;
inline constexpr std::size_t kChecksumEnd = 896;
static_assert(sizeof(SegmentHeader) == kPage, "the header is exactly page 0");
static_assert(offsetof(SegmentHeader, total_size) == kChecksumBegin);
static_assert(offsetof(SegmentHeader, pid_namespace) == 24, "outside the checksum, as minors < 4 computed it");
static_assert(offsetof(SegmentHeader, regions) == 128);
static_assert(offsetof(SegmentHeader, name) == 640);
static_assert(offsetof(SegmentHeader, pad) == kChecksumEnd);

// ---------------------------------------------------------------------------------
// Control block: the words every producer and consumer meets. Each group of words
// written by different parties sits on its own kHotAlign block.
struct alignas(kHotAlign) ControlBlock {
  // Next free position of the log. Producers advance it by CAS (Producer::try_claim);
  // consumers never touch it on their fast path (they spin on frame words).
  alignas(kHotAlign) std::atomic<std::uint64_t> tail;
  // Bumped around every change of the set of gating consumer groups; producers
  // re-read the gating cursors under it like a seqlock (producer.cpp, refresh_limit).
  alignas(kHotAlign) std::atomic<std::uint64_t> gating_gen;
  // Consumers parked waiting for data, and the futex word they sleep on.
  alignas(kHotAlign) std::atomic<std::uint32_t> data_waiters;
  std::atomic<std::uint32_t> data_seq;
  // Producers parked waiting for space, and the futex word they sleep on.
  alignas(kHotAlign) std::atomic<std::uint32_t> space_waiters;
  std::atomic<std::uint32_t> space_seq;
  // Rarely written: identity allocation and the recovery counters.
  alignas(kHotAlign) std::atomic<std::uint64_t> next_producer_id;
  std::atomic<std::uint64_t> keys_used;
  std::atomic<std::uint64_t> producers_recovered;  // dead producers repaired
  std::atomic<std::uint64_t> holes_padded;         // claims of dead producers turned to padding
  std::atomic<std::uint64_t> records_voided;       // claims of dead producers turned to void
  std::atomic<std::uint64_t> latches_released;     // key latches taken back from dead producers
  std::atomic<std::uint64_t> stalls_unresolved;    // reader stalls past unblock_after not ended by recovery
  std::atomic<std::uint64_t> longest_stall_ns;     // longest reader stall ended by recovery
  // Held (detail::RobustLock) while a join registers a group, so that two joins of one
  // new name cannot both register it. Zero in a segment of minor version 0: free.
  std::atomic<std::uint64_t> group_lock;
  std::atomic<std::uint64_t> group_lock_start;
  // The exclusive producer: exclusive::make(slot, pid) while one is attached, else 0
  // (also in a segment of minor version < 2). DESIGN.md, "Exclusive producers".
  std::atomic<std::uint64_t> exclusive;
  // The TSC rate (Tsc::Calibration::mult, ns a tick in 32.32 fixed point) measured by
  // the first process that calibrated on this segment; 0 = none yet (also in a segment
  // of minor version < 3). Attaching processes adopt it after a 2 ms check instead of
  // measuring for 20 ms (clock.hpp, Tsc::calibration). Untrusted: any value is safe.
  std::atomic<std::uint64_t> tsc_mult;
};
static_assert(offsetof(ControlBlock, tail) == 0);
static_assert(offsetof(ControlBlock, gating_gen) == kHotAlign, "tail and gating generation apart");
static_assert(offsetof(ControlBlock, data_waiters) == 2 * kHotAlign);
static_assert(offsetof(ControlBlock, space_waiters) == 3 * kHotAlign);
static_assert(offsetof(ControlBlock, next_producer_id) == 4 * kHotAlign);
static_assert(offsetof(ControlBlock, exclusive) == 4 * kHotAlign + 80,
              "the exclusive word is in the rarely written block, where segments of minor version < 2 hold zero");
static_assert(offsetof(ControlBlock, tsc_mult) == 4 * kHotAlign + 88,
              "the rate word is in the rarely written block, where segments of minor version < 3 hold zero");
static_assert(sizeof(ControlBlock) == 5 * kHotAlign);

// The exclusive producer word (ControlBlock::exclusive): [pid:32 | slot + 1:32], 0 = none.
namespace exclusive {
constexpr std::uint64_t make(std::uint32_t slot, std::uint32_t pid) noexcept {
  return (std::uint64_t{pid} << 32) | (std::uint64_t{slot} + 1);
}
constexpr bool held(std::uint64_t w) noexcept { return w != 0; }
constexpr std::uint32_t slot(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w) - 1; }
constexpr std::uint32_t pid(std::uint64_t w) noexcept { return static_cast<std::uint32_t>(w >> 32); }
static_assert(slot(make(kMaxProducerSlots - 1, 7)) == kMaxProducerSlots - 1 && pid(make(3, 0xffffffffu)) == 0xffffffffu);
static_assert(held(make(0, 0)), "slot 0 of pid 0 is still a holder");
}  // namespace exclusive

// ---------------------------------------------------------------------------------
// Claim journal phases (ProducerSlot::claim = [phase:2 | position:62]).
namespace claim_phase {
inline constexpr std::uint64_t idle = 0;
inline constexpr std::uint64_t claiming = 1;  // about to CAS the tail from `position`
inline constexpr std::uint64_t claimed = 2;   // owns [position, position + shape bytes)
inline constexpr std::uint64_t kPositionMask = (std::uint64_t{1} << 62) - 1;
constexpr std::uint64_t make(std::uint64_t phase, std::uint64_t position) noexcept {
  return (phase << 62) | (position & kPositionMask);
}
constexpr std::uint64_t phase(std::uint64_t w) noexcept { return w >> 62; }
constexpr std::uint64_t position(std::uint64_t w) noexcept { return w & kPositionMask; }
}  // namespace claim_phase

// One per producer handle. The first block is identity and counters; the second is
// the claim journal, written only by the owner on every claim and read only when the
// owner is dead (recovery.cpp). Both are private to the owner's core in steady state.
struct alignas(kHotAlign) ProducerSlot {
  std::atomic<std::uint64_t> owner;        // owner:: word
  std::atomic<std::uint64_t> owner_start;  // owner process start time (ticks since boot)
  std::atomic<std::uint64_t> producer_id;  // stable across restarts when chosen by the user
  std::atomic<std::uint64_t> epoch;        // attach count of this producer id
  std::atomic<std::uint64_t> next_seq;     // next producer_seq to assign
  std::atomic<std::uint64_t> published;    // records committed through this slot
  std::atomic<std::uint64_t> full_count;   // claims refused or delayed by back-pressure
  std::atomic<std::uint64_t> limit;        // gating limit the owner currently claims up to
  std::atomic<std::uint64_t> attached_ns;  // realtime of the last attach
  std::atomic<std::uint64_t> aborted;      // claims aborted by the owner
  std::uint64_t reserved0[6];
  // ---- claim journal ----
  std::atomic<std::uint64_t> claim;            // claim_phase word
  std::atomic<std::uint64_t> claim_shape;      // record bytes (low 32) | record count (high 32)
  std::atomic<std::uint64_t> claim_key_index;  // 1 + key table index latched; 0 = none
  std::atomic<std::uint64_t> claim_key_seq;    // first key_seq the claim assigns
  std::atomic<std::uint64_t> claim_meta;       // type id (low 16) | payload length (high 32)
  std::atomic<std::uint64_t> claim_seq;        // first producer_seq of the claim
  std::uint64_t reserved1[10];
};
static_assert(sizeof(ProducerSlot) == 2 * kHotAlign);
static_assert(offsetof(ProducerSlot, claim) == kHotAlign, "journal on its own block");

// ---------------------------------------------------------------------------------
// One per (group, worker index). Written by the worker; read by producers when they
// recompute their gating limit and by tools.
struct alignas(kHotAlign) WorkerSlot {
  std::atomic<std::uint64_t> cursor;       // every event before it that routes here is handled
  std::atomic<std::uint64_t> consumed;     // events handed to the handler and done with
  std::atomic<std::uint64_t> owner;        // owner:: word of the process running this worker
  std::atomic<std::uint64_t> owner_start;
  std::atomic<std::uint64_t> inflight;     // position being handled (| kInflightDeaths), or kNoPosition
  std::atomic<std::uint64_t> voids_seen;   // void records (lost events) passed over
  std::atomic<std::uint64_t> handler_errors;  // failed attempts
  // With `inflight` below it, where the events a process may have handled end (exclusive):
  // a worker delivering an event below events it delivered before (a deferred retry, an
  // event held behind one, a redriven dead letter) keeps its reading position here, and
  // a join the window it found (for its redeliveries, and across a change of worker
  // count). Written on those paths only; a position below the cursor means nothing.
  std::atomic<std::uint64_t> redeliver_until;
  std::atomic<std::uint64_t> dup_dropped;      // dedup: seen before
  std::atomic<std::uint64_t> too_old_dropped;  // dedup: below the window
  std::atomic<std::uint64_t> retries;          // attempts after the first
  std::atomic<std::uint64_t> dead_lettered;    // events moved to the dead-letter ring
  std::atomic<std::uint64_t> dedup_evictions;  // producer windows evicted for new producer ids
  std::atomic<std::uint64_t> redelivered;      // events delivered again after a restart
  std::atomic<std::uint64_t> redriven;         // dead letters delivered again and accepted
  // Events set aside now: waiting for a deferred retry, held behind a failure of their
  // key, or waiting for dead-letter room. A gauge; reserved (0) in segments before it.
  std::atomic<std::uint64_t> pending;
};
static_assert(sizeof(WorkerSlot) == kHotAlign);

inline constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};
// WorkerSlot::inflight's low bits (layout 1.5; a record position is a multiple of 8, so
// they were 0 before): how many times in a row a process died while it handled the event
// there. A join that takes the slot from a dead owner adds one while the event is not
// handled (the cursor not past it); a worker handling it again keeps the count, and
// handling another event clears it. GroupOptions::max_deaths dead-letters an event at
// that count.
inline constexpr std::uint64_t kInflightDeaths = 7;

// Where the events a process running worker slot `w` may have handled end (exclusive):
// past the event in flight, or the window kept in redeliver_until. Events from the
// slot's cursor up to it (a join bounds it by the tail) come again marked redelivered.
[[nodiscard]] inline std::uint64_t redelivery_end(const WorkerSlot& w) noexcept {
  const std::uint64_t inflight = w.inflight.load(std::memory_order_relaxed);
  const std::uint64_t until = w.redeliver_until.load(std::memory_order_relaxed);
  return inflight == kNoPosition ? until : std::max(until, (inflight & ~kInflightDeaths) + 1);
}

// Log positions (the tail, cursors) stay below 2^62: 73 years of publishing at 2 GB/s.
// With that bound `position + capacity` cannot overflow, so a tail or cursor above it
// (or not 8-byte aligned) is corrupt memory, refused on attach and before use.
inline constexpr std::uint64_t kMaxPosition = std::uint64_t{1} << 62;
static_assert(kMaxPosition + 2 * kMaxCapacity > kMaxPosition, "position arithmetic must not overflow");
constexpr bool valid_position(std::uint64_t pos) noexcept { return pos % kRecordAlign == 0 && pos <= kMaxPosition; }

struct alignas(kHotAlign) GroupSlot {
  std::atomic<std::uint64_t> state;       // owner:: word: free / registering / active
  std::atomic<std::uint64_t> workers;     // worker count the cursors were kept for
  std::atomic<std::uint64_t> flags;
  std::atomic<std::uint64_t> created_ns;
  std::atomic<std::uint64_t> resumes;     // times a process joined this existing group
  std::atomic<std::uint64_t> registrant_start;  // start time of the process in `state`
  std::uint64_t reserved[2];
  std::atomic<std::uint64_t> name[kGroupNameBytes / 8];  // zero-terminated, read word by word
  WorkerSlot worker[kMaxWorkers];
};
static_assert(offsetof(GroupSlot, worker) == kHotAlign);
static_assert(sizeof(GroupSlot) == kHotAlign * (1 + kMaxWorkers));

// ---------------------------------------------------------------------------------
// Dedup region: for every (group, worker), `dedup_producers` windows, each
// [producer id + 1 | last used | top | words...] (see dedup.hpp). Written only by the
// worker that owns it; kept across restarts with the worker's cursor.
struct DedupWindowHeader {
  std::atomic<std::uint64_t> producer;   // producer id + 1; 0 = unused
  std::atomic<std::uint64_t> last_used;  // position of the last event checked against it
  std::atomic<std::uint64_t> top;        // highest producer_seq marked
  // followed by dedup_words words
};
static_assert(sizeof(DedupWindowHeader) == 24);

constexpr std::uint64_t dedup_entry_bytes(std::uint32_t words) noexcept {
  return sizeof(DedupWindowHeader) + 8ull * words;
}

// Dead-letter region: for every group, a control block and a ring of dlq_capacity bytes
// holding entries (DlqEntry, the failed record, the error message), 8-byte aligned,
// never crossing the end of the ring. DESIGN.md, "Retries and dead letters".
struct alignas(kHotAlign) DlqControl {
  std::atomic<std::uint64_t> lock;        // pid of the process changing the ring, 0 = free
  std::atomic<std::uint64_t> lock_start;  // its start time
  std::atomic<std::uint64_t> head;        // first byte holding an entry not yet removed
  std::atomic<std::uint64_t> tail;        // where the next entry goes
  std::atomic<std::uint64_t> next_id;     // id of the next entry (from 1)
  std::atomic<std::uint64_t> entries;     // entries held
  std::atomic<std::uint64_t> appended;    // entries ever appended
  std::atomic<std::uint64_t> removed;     // entries ever removed (redriven or purged)
  std::atomic<std::uint64_t> full_waits;  // times a worker waited for room
  std::atomic<std::uint64_t> redrive_requests;  // bumped when entries are marked for redelivery
  std::uint64_t reserved[22];
};
static_assert(sizeof(DlqControl) == 2 * kHotAlign);

namespace dlq_state {
inline constexpr std::uint64_t none = 0;
inline constexpr std::uint64_t ready = 1;       // parked
inline constexpr std::uint64_t redrive = 2;     // a tool asked for redelivery
inline constexpr std::uint64_t delivering = 3;  // a worker is redelivering it
inline constexpr std::uint64_t removed = 4;     // redriven or purged; space reclaimed from the head
inline constexpr std::uint64_t skip = 5;        // filler to the end of the ring
constexpr std::uint64_t make(std::uint64_t state, std::uint64_t bytes) noexcept { return (state << 56) | bytes; }
constexpr std::uint64_t state(std::uint64_t w) noexcept { return w >> 56; }
constexpr std::uint64_t bytes(std::uint64_t w) noexcept { return w & ((std::uint64_t{1} << 56) - 1); }
}  // namespace dlq_state

struct DlqEntry {
  std::atomic<std::uint64_t> state_bytes;  // 0  dlq_state word, written last (release)
  std::uint64_t id;                        // 8
  std::uint64_t first_failure_ns;          // 16
  std::uint64_t last_failure_ns;           // 24
  std::uint32_t attempts;                  // 32 failed handler calls; bit 31: kDlqWaiting
  std::uint32_t worker;                    // 36
  std::uint32_t message_len;               // 40
  std::uint32_t payload_len;               // 44
  std::uint64_t position;                  // 48 where the event was in the log
  // 56: while a worker redelivering the entry waits between two handler calls
  // (kDlqWaiting), the wall clock time of the next one; else 0 (and in entries appended
  // by a library of minor < 5). Under the ring's lock.
  std::uint64_t next_attempt_ns;
  // followed by the record (RecordHeader + payload padded to 8), then the message
};
static_assert(sizeof(DlqEntry) == 64);
// DlqEntry::attempts bit (layout 1.5): the worker redelivering the entry waits between two
// handler calls, every failed call counted. It is set with the count of the call that
// just failed, and cleared as the next call begins, each by one store of the word, so
// that a process dying at any point leaves the count and the bit in agreement: the next
// join adds an attempt for a call cut short (bit clear) and none for a wait (bit set).
inline constexpr std::uint32_t kDlqWaiting = 1u << 31;
inline constexpr std::uint32_t kMaxDlqAttempts = kDlqWaiting - 1;  // a count saturates there
inline constexpr std::uint32_t kMaxDlqMessage = 512;

constexpr std::uint64_t dlq_entry_bytes(std::uint32_t payload_len, std::uint32_t message_len) noexcept {
  return sizeof(DlqEntry) + record_bytes(payload_len) + align_up(message_len, 8);
}

// ---------------------------------------------------------------------------------
// Schema registry region: a control block, then one entry per event type. Type id =
// entry index (1-based: entry 0 is the control block). Names are written once, before
// the entry's state says ready (release); versions change later (atomics).
inline constexpr std::size_t kTypeNameBytes = 96;

struct alignas(kHotAlign) RegistryControl {
  std::atomic<std::uint64_t> lock;        // RobustLock word: registration
  std::atomic<std::uint64_t> lock_start;
  std::atomic<std::uint64_t> types;       // entries in use
  std::uint64_t reserved[13];
};
static_assert(sizeof(RegistryControl) == kHotAlign);

struct alignas(kHotAlign) RegistryEntry {
  std::atomic<std::uint64_t> state;            // 0 free, 1 ready
  std::atomic<std::uint64_t> versions;         // bit v-1 set: version v (1..64) has been published
  std::atomic<std::uint32_t> current_version;  // declared current version; 0 = the highest seen
  std::uint32_t name_len;
  std::uint64_t reserved;
  char name[kTypeNameBytes];
};
static_assert(sizeof(RegistryEntry) == kHotAlign);
static_assert(offsetof(RegistryEntry, name) == 32);

// ---------------------------------------------------------------------------------
// Latency region: for every (group, worker), a histogram of publish-to-handle latency
// (handler start minus the event's header timestamp), recorded when the group asks for
// it. Log-linear: exact below 4 ns, then 4 buckets per power of two, the last one open.
// Each histogram is kLatencyWords words: the bucket counts, then the sum of all samples
// in ns (word kLatencySum), then padding to a whole number of cache lines.
inline constexpr std::uint32_t kLatencyBuckets = 160;
inline constexpr std::uint32_t kLatencySum = kLatencyBuckets;
inline constexpr std::uint32_t kLatencyWords = kLatencyBuckets + 16;
static_assert(kLatencyWords * 8 % kHotAlign == 0, "each histogram starts on its own cache line");

constexpr std::uint32_t latency_bucket(std::uint64_t ns) noexcept {
  if (ns < 4) return static_cast<std::uint32_t>(ns);
  const unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(ns));
  if (e > 40) return kLatencyBuckets - 1;
  const unsigned shift = e - 2;
  return (shift + 1) * 4 + static_cast<std::uint32_t>((ns >> shift) - 4);
}
// The largest latency bucket `i` counts.
constexpr std::uint64_t latency_bucket_upper(std::uint32_t i) noexcept {
  if (i < 4) return i;
  const std::uint32_t shift = i / 4 - 1;
  return ((std::uint64_t{4} + i % 4) << shift) + (std::uint64_t{1} << shift) - 1;
}
static_assert(latency_bucket(3) == 3 && latency_bucket(4) == 4 && latency_bucket(7) == 7 && latency_bucket(8) == 8);
static_assert(latency_bucket((std::uint64_t{1} << 41) - 1) == kLatencyBuckets - 1);
static_assert(latency_bucket_upper(latency_bucket(1000)) >= 1000);

// ---------------------------------------------------------------------------------
// Key table entry: open addressing on the 64-bit key (0 = empty, never a key).
// The latch word serialises the claims of one key so that key_seq follows log order:
//   [locked:1 | owner slot:15 | last key_seq:48]
struct KeyEntry {
  std::atomic<std::uint64_t> key;
  std::atomic<std::uint64_t> latch;
};
static_assert(sizeof(KeyEntry) == 16);

namespace latch {
inline constexpr std::uint64_t kLocked = std::uint64_t{1} << 63;
inline constexpr unsigned kOwnerShift = 48;
inline constexpr std::uint64_t kOwnerMask = 0x7fffull;
constexpr std::uint64_t make(bool locked, std::uint32_t owner_slot, std::uint64_t last_seq) noexcept {
  return (locked ? kLocked : 0) | ((owner_slot & kOwnerMask) << kOwnerShift) | (last_seq & kKeySeqMask);
}
constexpr bool locked(std::uint64_t w) noexcept { return (w & kLocked) != 0; }
constexpr std::uint32_t owner_slot(std::uint64_t w) noexcept {
  return std::uint32_t((w >> kOwnerShift) & kOwnerMask);
}
constexpr std::uint64_t last_seq(std::uint64_t w) noexcept { return w & kKeySeqMask; }
static_assert(owner_slot(make(true, kMaxProducerSlots - 1, 0)) == kMaxProducerSlots - 1);
}  // namespace latch

}  // namespace ringbus::layout
