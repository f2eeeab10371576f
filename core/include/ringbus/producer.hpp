// Producer: appends events to a segment's log. Claim / commit / abort are separate
// verbs; publish() is claim + copy + commit.
//
// The claim protocol (DESIGN.md, "Claim and commit"), in the order it happens:
//   1. keyed: take the key's latch (CAS on the key table entry); key_seq = last + 1
//   2. journal the claim in this producer's slot (for crash recovery)
//   3. CAS the tail from t to t + bytes: the only RMW on the shared tail (a store, for
//      the exclusive producer). A claim that would cross the end of the ring also
//      claims the rest of the lap as padding.
//   4. write the padding frame (if any), release the latch with key_seq published
//   5. caller writes the payload; commit() writes the header and, last, the frame word
//      with release order. Readers acquire the frame word.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "ringbus/clock.hpp"
#include "ringbus/detail/fault.hpp"
#include "ringbus/detail/key_table.hpp"
#include "ringbus/detail/waiter.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/record.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/status.hpp"
#include "ringbus/wait_strategy.hpp"

namespace ringbus {

enum class Timestamps : std::uint8_t {
  clock,  // header timestamp from wall_clock_ns() when the record is claimed (unless set on the claim)
  none,   // header timestamp 0 unless set on the claim
};

// The largest ProducerOptions::first_seq: a sequence never wraps (from 2^62, it lasts 146
// years at a billion events a second). Consumers' dedup windows take a wrapped sequence
// for one long passed, and drop its events.
inline constexpr std::uint64_t kMaxFirstSeq = std::uint64_t{1} << 62;

struct ProducerOptions {
  // 0: a new producer id. Otherwise an id in [1, 2^31) chosen by the application; a
  // producer that re-attaches with the same id continues its producer_seq, which is
  // what consumer-side deduplication keys on.
  std::uint32_t producer_id = 0;
  // 0: continue the id's sequence (1 for a new id). Otherwise the next producer_seq,
  // e.g. to replay an outbox from a known point; at most kMaxFirstSeq.
  std::uint64_t first_seq = 0;
  WaitStrategy wait = WaitStrategy::spin_yield();  // blocking claims on a full log
  Timestamps timestamps = Timestamps::clock;
  // The segment's only producer while attached: its claims advance the tail with a
  // plain store instead of a CAS (DESIGN.md, "Exclusive producers"). Attach throws
  // Error(busy) while another producer is attached, and while this one is attached
  // every other attach does.
  bool exclusive = false;
  // A flag that ends the producer's blocking calls (claim, claim_batch, publish,
  // publish_expected, publish_envelope with a timeout) waiting for room in a full log:
  // once it is true they return Status::stopped, having published nothing. It may be
  // set from another thread or from a signal handler (a lock-free atomic store is
  // async-signal-safe). A wait that parks (WaitStrategy::spin_park) sees it within its
  // sleep (10 ms if none is set), or at once after Producer::wake_waiting(). Null: only
  // the timeout ends the wait.
  const std::atomic<bool>* stop = nullptr;
};
static_assert(std::atomic<bool>::is_always_lock_free, "ProducerOptions::stop is set from signal handlers");

inline constexpr std::chrono::nanoseconds kForever = std::chrono::nanoseconds::max();

class Producer;

// One claimed record, or a batch of equal-size records, writable until commit() or
// abort(). Destroying an open claim aborts it. A producer has at most one open claim.
class Claim {
 public:
  Claim() = default;
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;
  Claim(Claim&& other) noexcept { take(other); }
  Claim& operator=(Claim&& other) noexcept {
    if (this != &other) {
      if (producer_ != nullptr) abort();
      take(other);
    }
    return *this;
  }
  ~Claim() {
    if (producer_ != nullptr) abort();
  }

  [[nodiscard]] std::span<std::byte> payload(std::uint32_t i = 0) const noexcept {
    return {base_ + i * rec_bytes() + kRecordHeaderSize, len_};
  }
  [[nodiscard]] std::uint32_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t position(std::uint32_t i = 0) const noexcept { return pos_ + i * rec_bytes(); }
  [[nodiscard]] std::uint64_t key_seq(std::uint32_t i = 0) const noexcept {
    return key_ != 0 ? key_seq_of(key_seq_flags_) + i : 0;
  }
  [[nodiscard]] std::uint64_t producer_seq(std::uint32_t i = 0) const noexcept { return pseq_ + i; }

  void set_correlation_id(std::uint64_t v) noexcept { correlation_ = v; }
  // Replaces the stamp the claim took (ProducerOptions::timestamps); 0 leaves the record unstamped.
  void set_timestamp_ns(std::uint64_t v) noexcept { timestamp_ = v; }
  [[nodiscard]] std::uint64_t timestamp_ns() const noexcept { return timestamp_; }
  void set_schema_version(std::uint16_t v) noexcept {
    meta_ = (meta_ & ~(std::uint64_t{0xffff} << 16)) | (std::uint64_t{v} << 16);
  }
  void set_flags(std::uint16_t v) noexcept { key_seq_flags_ = pack_key_seq_flags(key_seq_of(key_seq_flags_), v); }

  // Makes the record(s) visible to consumers.
  void commit() noexcept;
  // Withdraws the claim. The bytes become padding and the key_seq is given back when
  // no later claim of the key exists; otherwise they become a void record that keeps
  // key_seq gap-free (DESIGN.md, "Abort").
  void abort() noexcept;

  explicit operator bool() const noexcept { return producer_ != nullptr; }

 private:
  friend class Producer;
  void take(Claim& o) noexcept {
    producer_ = o.producer_;
    base_ = o.base_;
    pos_ = o.pos_;
    key_ = o.key_;
    key_seq_flags_ = o.key_seq_flags_;
    pseq_ = o.pseq_;
    correlation_ = o.correlation_;
    timestamp_ = o.timestamp_;
    len_ = o.len_;
    count_ = o.count_;
    meta_ = o.meta_;
    o.producer_ = nullptr;
    if (producer_ != nullptr) relink();
  }
  void relink() noexcept;

  // Two costs of a claim + commit on one core live in this layout (ringbus_micro_bench).
  // (1) The fields fit in 80 bytes, so that `Claim c;` before each claim is zeroed with
  // a few vector stores: gcc zeroes larger objects with a microcoded `rep stos`, which
  // perf put at about a tenth of BM_ClaimCommit. (2) The commit loads each field in the
  // width the claim stored it: a load spanning two stores cannot be forwarded from the
  // store buffer and waits until both reach the cache (about 4 ns a publish, when type
  // and schema were two 16-bit fields that the commit loaded as one 32-bit word).
  Producer* producer_ = nullptr;
  std::byte* base_ = nullptr;  // header of the first record
  std::uint64_t pos_ = 0;
  std::uint64_t key_ = 0;
  std::uint64_t key_seq_flags_ = 0;  // first key_seq (0 unkeyed) | flags << 48, as in RecordHeader
  std::uint64_t pseq_ = 0;
  std::uint64_t correlation_ = 0;
  std::uint64_t timestamp_ = 0;
  std::uint32_t len_ = 0;
  std::uint32_t count_ = 0;
  std::uint64_t meta_ = 0;  // type_id | schema_version << 16 | key_index << 32

  [[nodiscard]] std::uint64_t rec_bytes() const noexcept { return record_bytes(len_); }
  [[nodiscard]] std::uint16_t type() const noexcept { return static_cast<std::uint16_t>(meta_); }
  [[nodiscard]] std::uint16_t schema() const noexcept { return static_cast<std::uint16_t>(meta_ >> 16); }
  [[nodiscard]] std::uint16_t flags() const noexcept { return flags_of(key_seq_flags_); }
  // 1 + the key's index in the key table (at most 2^28), 0 for unkeyed claims.
  [[nodiscard]] std::uint64_t key_index() const noexcept { return meta_ >> 32; }
};
static_assert(sizeof(Claim) <= 80, "see the comment on Claim's fields");

class Producer {
 public:
  // Takes a producer slot in the segment. Throws Error(no_slot) when all are in use,
  // Error(busy) when `producer_id` is attached by another live process, when the
  // segment's exclusive producer is attached, or (options.exclusive) when any other
  // producer is.
  static Producer attach(const Segment& segment, const ProducerOptions& options = {});

  Producer() = default;
  Producer(Producer&& other) noexcept;
  Producer& operator=(Producer&& other) noexcept;
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;
  ~Producer() { detach(); }

  // Zero-copy claim of one record with `len` payload bytes. key 0 = unkeyed.
  [[nodiscard]] Status try_claim(std::uint64_t key, std::uint16_t type, std::uint32_t len, Claim& out) noexcept {
    return claim_impl(key, 0, false, type, len, 1, out);
  }
  // As try_claim, only if `key`'s last key_seq is `expected` (0 = never published);
  // else Status::conflict. The claim then carries key_seq expected + 1. Needs a key
  // (Status::invalid for key 0).
  [[nodiscard]] Status try_claim_expected(std::uint64_t key, std::uint64_t expected, std::uint16_t type,
                                          std::uint32_t len, Claim& out) noexcept {
    if (key == 0) return Status::invalid;
    return claim_impl(key, expected, true, type, len, 1, out);
  }
  // `count` records of `len` payload bytes each under one tail CAS (and, keyed, one
  // latch: key_seq runs last+1 .. last+count). count >= 1; at most capacity/4 bytes.
  [[nodiscard]] Status try_claim_batch(std::uint64_t key, std::uint16_t type, std::uint32_t len,
                                       std::uint32_t count, Claim& out) noexcept {
    if (count == 0) return Status::invalid;
    return claim_impl(key, 0, false, type, len, count, out);
  }
  // Blocking twins: wait with the producer's WaitStrategy while the log is full. Called
  // from inside a handler of a group that reads this segment, they return
  // Status::would_deadlock at once when that handler's own worker is what holds the room
  // back: it cannot move past the event it is handling before the handler returns.
  Status claim(std::uint64_t key, std::uint16_t type, std::uint32_t len, Claim& out,
               std::chrono::nanoseconds timeout = kForever) noexcept {
    const Status s = try_claim(key, type, len, out);
    return s == Status::full ? claim_blocking(key, 0, false, type, len, 1, out, timeout) : s;
  }
  Status claim_batch(std::uint64_t key, std::uint16_t type, std::uint32_t len, std::uint32_t count, Claim& out,
                     std::chrono::nanoseconds timeout = kForever) noexcept {
    const Status s = try_claim_batch(key, type, len, count, out);
    return s == Status::full ? claim_blocking(key, 0, false, type, len, count, out, timeout) : s;
  }

  [[nodiscard]] Status try_publish(std::uint64_t key, std::uint16_t type, std::span<const std::byte> payload) noexcept {
    return copy_commit(try_claim(key, type, static_cast<std::uint32_t>(clamp_len(payload)), scratch_), payload);
  }
  Status publish(std::uint64_t key, std::uint16_t type, std::span<const std::byte> payload,
                 std::chrono::nanoseconds timeout = kForever) noexcept {
    return copy_commit(claim(key, type, static_cast<std::uint32_t>(clamp_len(payload)), scratch_, timeout), payload);
  }
  [[nodiscard]] Status try_publish_expected(std::uint64_t key, std::uint64_t expected, std::uint16_t type,
                                            std::span<const std::byte> payload) noexcept {
    return copy_commit(try_claim_expected(key, expected, type, static_cast<std::uint32_t>(clamp_len(payload)), scratch_),
                       payload);
  }
  Status publish_expected(std::uint64_t key, std::uint64_t expected, std::uint16_t type,
                          std::span<const std::byte> payload, std::chrono::nanoseconds timeout = kForever) noexcept {
    const auto len = static_cast<std::uint32_t>(clamp_len(payload));
    Status s = try_claim_expected(key, expected, type, len, scratch_);
    if (s == Status::full) s = claim_blocking(key, expected, true, type, len, 1, scratch_, timeout);
    return copy_commit(s, payload);
  }

  [[nodiscard]] std::uint32_t id() const noexcept { return id_; }
  [[nodiscard]] std::uint64_t next_seq() const noexcept { return next_seq_; }
  [[nodiscard]] std::uint32_t slot_index() const noexcept { return slot_index_; }
  [[nodiscard]] bool exclusive() const noexcept { return exclusive_; }
  [[nodiscard]] const Segment& segment() const noexcept { return seg_; }
  explicit operator bool() const noexcept { return slot_ != nullptr; }

  // Wakes every producer of `segment` parked waiting for room (WaitStrategy::spin_park),
  // in any process: each checks its stop flag and the room, and parks again if neither
  // ends its wait. Call it after setting a ProducerOptions::stop flag. Async-signal-safe
  // (one atomic add and one system call; errno is kept). Nothing for no segment, or one
  // opened read-only (no producer of this process waits on it).
  static void wake_waiting(const Segment& segment) noexcept;

  // Releases the slot (keeping the id's sequence for a later attach). Aborts nothing:
  // an open claim must be committed or aborted first, else it is aborted here. Claims
  // after it return Status::invalid.
  void detach() noexcept;

 private:
  friend class Claim;

  static std::size_t clamp_len(std::span<const std::byte> p) noexcept {
    return p.size() > 0xffffffffu ? 0xffffffffu : p.size();
  }
  Status copy_commit(Status s, std::span<const std::byte> payload) noexcept {
    if (s != Status::ok) return s;
    if (!payload.empty()) std::memcpy(scratch_.payload().data(), payload.data(), payload.size());
    scratch_.commit();
    return Status::ok;
  }

  Status claim_impl(std::uint64_t key, std::uint64_t expected, bool check_expected, std::uint16_t type,
                    std::uint32_t len, std::uint32_t count, Claim& out) noexcept;
  Status claim_blocking(std::uint64_t key, std::uint64_t expected, bool check_expected, std::uint16_t type,
                        std::uint32_t len, std::uint32_t count, Claim& out, std::chrono::nanoseconds timeout) noexcept;
  bool refresh_limit(std::uint64_t needed) noexcept;
  // True when a consumer-group handler running on this thread reads this segment from a
  // cursor that keeps a claim of `total` bytes out (detail/handler_scope.hpp).
  [[nodiscard]] bool held_back_by_caller(std::uint64_t total) const noexcept;
  std::uint64_t lock_latch(std::uint64_t index) noexcept;
  std::uint64_t lock_latch_slow(std::uint64_t index) noexcept;
  void unlock_latch(std::uint64_t index, std::uint64_t last_seq) noexcept {
    // Publishes key_seq up to last_seq; pairs with the acquire in lock_latch().
    r_.keys[index].latch.store(layout::latch::make(false, slot_index_, last_seq), std::memory_order_release);
  }
  void write_padding(std::uint64_t pos, std::uint64_t bytes) noexcept {
    // Pairs with the acquire load of the frame by readers.
    std::atomic_ref<std::uint64_t>(r_.record_at(pos)->frame)
        .store(frame::make(RecordState::padding, r_.lap(pos), static_cast<std::uint32_t>(bytes)),
               std::memory_order_release);
  }
  // A batch claim requests ownership of the lines it will write and of the next
  // kPrefetchAhead bytes below the gating limit, each line once (prefetched_ remembers
  // how far it got): the line transfers from the consumer's core overlap instead of
  // starting one by one as the stores leave the store buffer in order (DESIGN.md section 3).
  static constexpr std::uint64_t kPrefetchAhead = 1024;
  static constexpr std::uint64_t kPrefetchMax = 4096;  // bytes requested by one claim, at most
  static_assert(kPrefetchAhead % kCacheLine == 0 && kPrefetchMax % kCacheLine == 0 && kPrefetchAhead <= kPrefetchMax);
  void prefetch_range(std::uint64_t begin, std::uint64_t end) noexcept {
    std::uint64_t from = std::max(begin & ~std::uint64_t{kCacheLine - 1}, prefetched_);
    const std::uint64_t to = std::min({end, limit_, from + kPrefetchMax});
    for (; from < to; from += kCacheLine) detail::prefetch_for_write(r_.log + (from & r_.mask));
    prefetched_ = from;  // never below where it was: `from` started at or above it
  }
  void commit(Claim& c) noexcept;
  void abort(Claim& c) noexcept;
  void finish(std::uint64_t seqs_used, std::uint64_t published) noexcept;

  Segment seg_;
  detail::SegmentRefs r_{};
  layout::ProducerSlot* slot_ = nullptr;
  std::uint32_t slot_index_ = 0;
  std::uint32_t id_ = 0;
  std::uint64_t next_seq_ = 1;
  std::uint64_t published_ = 0;
  std::uint64_t limit_ = 0;  // claims may end at or before this position without a rescan
  std::uint64_t prefetched_ = 0;  // a batch claim prefetched the lines below this position
  std::uint64_t max_claim_ = 0;
  WaitStrategy wait_{};
  Timestamps timestamps_ = Timestamps::clock;
  bool exclusive_ = false;
  std::uint32_t owner_pid_ = 0;  // the process that attached (detail::inherited_from)
  bool open_ = false;
  Claim* open_claim_ = nullptr;  // the claim object holding the open claim
  Claim scratch_;                // the claim behind publish()
  const std::atomic<bool>* stop_ = nullptr;  // ProducerOptions::stop (last: no hot field moves)
};

// ---------------------------------------------------------------------------------
// Hot paths.

inline std::uint64_t Producer::lock_latch(std::uint64_t index) noexcept {
  std::atomic<std::uint64_t>& l = r_.keys[index].latch;
  std::uint64_t w = l.load(std::memory_order_relaxed);
  // Acquire pairs with the release in unlock_latch(): the previous holder's tail CAS
  // happens-before ours, so key_seq order is log order.
  if (!layout::latch::locked(w) &&
      l.compare_exchange_strong(w, layout::latch::make(true, slot_index_, layout::latch::last_seq(w)),
                                std::memory_order_acquire, std::memory_order_relaxed)) [[likely]] {
    return layout::latch::last_seq(w);
  }
  return lock_latch_slow(index);
}

inline Status Producer::claim_impl(std::uint64_t key, std::uint64_t expected, bool check_expected, std::uint16_t type,
                                   std::uint32_t len, std::uint32_t count, Claim& out) noexcept {
  if (open_) [[unlikely]] return Status::busy;
  // A Producer not attached (default-constructed, moved from, detached) has max_claim_
  // 0: every claim is too large for it, so it costs the hot path nothing to say
  // `invalid` instead.
  if (len > r_.max_event) [[unlikely]] return slot_ == nullptr ? Status::invalid : Status::too_large;
  const std::uint64_t rec = record_bytes(len);
  const std::uint64_t total = rec * count;
  if (total > max_claim_) [[unlikely]] return slot_ == nullptr ? Status::invalid : Status::too_large;
  layout::ProducerSlot& s = *slot_;

  std::uint64_t key_index = 0;
  std::uint64_t first_key_seq = 0;
  if (key != 0) {
    const std::uint64_t idx = detail::find_or_insert_key(r_, key);
    if (idx == detail::kNoEntry) [[unlikely]] return Status::keys_full;
    key_index = idx + 1;
    // Journal names the latch before it is taken, so recovery can find it.
    s.claim_key_index.store(key_index, std::memory_order_relaxed);
    const std::uint64_t last = lock_latch(idx);
    RINGBUS_FAULT_POINT(after_latch);
    if ((check_expected && last != expected) || last + count > kMaxKeySeq) [[unlikely]] {
      unlock_latch(idx, last);
      s.claim_key_index.store(0, std::memory_order_relaxed);
      return check_expected && last != expected ? Status::conflict : Status::keys_full;
    }
    first_key_seq = last + 1;
    s.claim_key_seq.store(first_key_seq, std::memory_order_relaxed);
  }
  s.claim_shape.store(rec | (std::uint64_t{count} << 32), std::memory_order_relaxed);
  s.claim_meta.store(std::uint64_t{type} | (std::uint64_t{len} << 16), std::memory_order_relaxed);
  s.claim_seq.store(next_seq_, std::memory_order_relaxed);

  std::atomic<std::uint64_t>& tail = r_.control->tail;
  std::uint64_t t = tail.load(std::memory_order_relaxed);
  std::uint64_t begin = 0;
  for (;;) {
    if (!layout::valid_position(t)) [[unlikely]] {  // shared memory: a tail no producer could have left
      s.claim.store(layout::claim_phase::make(layout::claim_phase::idle, 0), std::memory_order_relaxed);
      if (key_index != 0) unlock_latch(key_index - 1, first_key_seq - 1);
      s.claim_key_index.store(0, std::memory_order_relaxed);
      return Status::corrupt;
    }
    begin = r_.claim_start(t, total);
    if (begin + total > limit_ && !refresh_limit(begin + total)) [[unlikely]] {
      s.claim.store(layout::claim_phase::make(layout::claim_phase::idle, 0), std::memory_order_relaxed);
      if (key_index != 0) {
        unlock_latch(key_index - 1, first_key_seq - 1);
        s.claim_key_index.store(0, std::memory_order_relaxed);
      }
      s.full_count.store(s.full_count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return Status::full;
    }
    // Journal before the CAS: a dead claimant is identified by the position it claimed.
    s.claim.store(layout::claim_phase::make(layout::claim_phase::claiming, t), std::memory_order_relaxed);
    // The claim. Release: the journal is visible to whoever observes the new tail. The
    // exclusive producer is the only writer of the tail, so it needs no CAS.
    if (exclusive_) {
      tail.store(begin + total, std::memory_order_release);
      break;
    }
    if (tail.compare_exchange_weak(t, begin + total, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
  }
  RINGBUS_FAULT_POINT(after_tail_cas);
  s.claim.store(layout::claim_phase::make(layout::claim_phase::claimed, t), std::memory_order_relaxed);
  // Tail readers copy records racily and validate with the tail afterwards (a
  // seqlock); this fence orders our tail CAS before every byte we write next.
  std::atomic_thread_fence(std::memory_order_release);
  RINGBUS_FAULT_POINT(after_journal);
  if (begin != t) write_padding(t, begin - t);
  if (key_index != 0) unlock_latch(key_index - 1, first_key_seq + count - 1);
  RINGBUS_FAULT_POINT(after_unlatch);
  if (count > 1) prefetch_range(begin, begin + total + kPrefetchAhead);

  if (out.producer_ != nullptr) out.abort();
  out.producer_ = this;
  out.base_ = reinterpret_cast<std::byte*>(r_.record_at(begin));
  out.pos_ = begin;
  out.key_ = key;
  out.key_seq_flags_ = first_key_seq;
  out.pseq_ = next_seq_;
  out.correlation_ = 0;
  // Stamped here, before the payload is written, not at commit: on Zen 4 EPYC VMs a clock
  // read between the payload's stores and the header's added about one line transfer to
  // publish-to-handle latency (DESIGN.md, "Claim and commit").
  out.timestamp_ = timestamps_ == Timestamps::clock ? wall_clock_ns() : 0;
  out.len_ = len;
  out.count_ = count;
  out.meta_ = std::uint64_t{type} | (key_index << 32);
  open_ = true;
  open_claim_ = &out;
  return Status::ok;
}

inline void Producer::commit(Claim& c) noexcept {
  const std::uint64_t ts = c.timestamp_;
  std::byte* p = c.base_;
  std::uint64_t pos = c.pos_;
  const std::uint64_t rec = c.rec_bytes();
  // Keyed batches run key_seq up by one a record (the claim checked it stays in 48 bits).
  const std::uint64_t key_seq_step = c.key_ != 0 ? 1 : 0;
  std::uint64_t key_seq_flags = c.key_seq_flags_;
  for (std::uint32_t i = 0; i < c.count_; ++i, p += rec, pos += rec, key_seq_flags += key_seq_step) {
    auto* h = reinterpret_cast<RecordHeader*>(p);
    store_header_fields(*h, pos, c.key_, key_seq_flags, c.pseq_ + i, id_, c.type(), c.schema(), ts, c.correlation_);
    RINGBUS_FAULT_POINT(before_frame);
    // Publishes the record: pairs with the acquire load of the frame in Worker::poll.
    std::atomic_ref<std::uint64_t>(h->frame)
        .store(frame::make(RecordState::data, r_.lap(pos), c.len_), std::memory_order_release);
  }
  RINGBUS_FAULT_POINT(after_commit);
  c.producer_ = nullptr;
  finish(c.count_, c.count_);
}

inline void Producer::finish(std::uint64_t seqs_used, std::uint64_t published) noexcept {
  layout::ProducerSlot& s = *slot_;
  next_seq_ += seqs_used;
  published_ += published;
  s.next_seq.store(next_seq_, std::memory_order_relaxed);
  s.published.store(published_, std::memory_order_relaxed);
  s.claim_key_index.store(0, std::memory_order_relaxed);
  // Release: recovery that finds the journal idle also finds the frames stored above.
  s.claim.store(layout::claim_phase::make(layout::claim_phase::idle, 0), std::memory_order_release);
  open_ = false;
  open_claim_ = nullptr;
  detail::wake_if_parked(r_.control->data_waiters, r_.control->data_seq);
}

inline void Claim::relink() noexcept { producer_->open_claim_ = this; }

inline void Claim::commit() noexcept {
  if (producer_ != nullptr) producer_->commit(*this);
}

inline void Claim::abort() noexcept {
  if (producer_ != nullptr) producer_->abort(*this);
}

}  // namespace ringbus
