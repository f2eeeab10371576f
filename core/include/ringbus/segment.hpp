// A segment: one mmap'd region (POSIX shared memory under /dev/shm, or a file) that
// holds a ringbus log and everything its producers and consumers share.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ringbus/layout.hpp"
#include "ringbus/record.hpp"

namespace ringbus {

// Where a segment lives: a shared-memory name (no '/', no ".."), a file path, or no
// name at all (anonymous).
struct Location {
  enum class Kind : std::uint8_t { shm, file, anonymous };
  Kind kind = Kind::shm;
  std::string name;  // shm name without the leading '/', the file path, or the label

  static Location shm(std::string name) { return {Kind::shm, std::move(name)}; }
  static Location file(std::string path) { return {Kind::file, std::move(path)}; }
  // A segment with no name in any file system (memfd_create). The threads of the process
  // that creates it share it, and so do the children it forks afterwards: they use the
  // mapping they inherit (see Segment::touch_pages). Nothing can open it by name, and
  // nothing is left to remove: its memory goes with the last mapping, even when every
  // process using it is killed. `label`, checked as a shared-memory name, shows in error
  // messages and in /proc/PID/maps as "/memfd:LABEL".
  static Location anonymous(std::string label) { return {Kind::anonymous, std::move(label)}; }
  // A string with a '/' is a file path; anything else is a shared-memory name, with or
  // without the "shm:" display() puts before it.
  static Location parse(std::string_view text);
  // "shm:NAME", the path or "anonymous:LABEL", control bytes shown as printable() shows
  // them; used in every error message about the segment.
  [[nodiscard]] std::string display() const;
};

struct SegmentOptions {
  std::uint64_t capacity = 16ull << 20;  // log bytes; a power of two >= 64 KiB
  std::uint32_t max_event = 64u << 10;   // largest payload; record must fit in capacity / 4
  std::uint32_t max_producers = 64;      // producer handles attached at once (any process)
  std::uint32_t max_groups = 16;         // consumer groups
  std::uint32_t key_slots = 1u << 16;    // distinct keys ever published (power of two)
  std::uint32_t dedup_window = 1024;     // producer_seqs remembered per producer window (0: no dedup)
  std::uint32_t dedup_producers = 16;    // producer windows per group worker
  std::uint64_t dlq_capacity = 256u << 10;  // dead-letter ring bytes per group, power of two (0: none)
  std::uint32_t registry_slots = 256;    // event types of the schema registry (0: none)
  std::uint32_t mode = 0600;             // permission bits of the new file
  enum class IfExists : std::uint8_t {
    fail,     // Errc::exists
    replace,  // unlink the old one first (its users keep their mapping)
  } if_exists = IfExists::fail;
};

struct OpenOptions {
  bool allow_other_owner = false;  // accept a segment owned by another user id
  bool allow_wider_mode = false;   // accept permission bits wider than at creation
  // How long to wait for a creator that is still writing the header.
  std::chrono::milliseconds init_timeout{2000};
  // Read every page once at attach (create always does): on VMs whose first access to
  // each page of a new mapping faults in the hypervisor (about 5 us a page), the first
  // lap of this process's producers and readers then pays nothing. Off for a short look
  // at a segment (the tool's info, stat, tail and dlq commands), which touches few pages.
  bool touch_pages = true;
  // Open the file read-only and map it PROT_READ: for a user whose permission on the
  // segment is read only (a group that monitors it, with mode 0640). What only reads
  // works: read_stats, TailReader, the registry's lookups. What writes refuses such a
  // segment with Errc::permission: Producer::attach, ConsumerGroup::join, remove and
  // skip_to, DeadLetters::open (its ring is locked to be read) and registering an
  // event type.
  bool read_only = false;
};

namespace detail {

// Pointers and sizes validated at attach, copied out of the shared header so that a
// later write to shared memory cannot move a bound the hot paths rely on.
struct SegmentRefs {
  std::byte* base = nullptr;
  std::uint64_t total_size = 0;
  layout::SegmentHeader* header = nullptr;
  layout::ControlBlock* control = nullptr;
  layout::ProducerSlot* producers = nullptr;
  std::uint32_t max_producers = 0;
  layout::GroupSlot* groups = nullptr;
  std::uint32_t max_groups = 0;
  layout::KeyEntry* keys = nullptr;
  std::uint64_t key_mask = 0;  // key_slots - 1
  std::byte* log = nullptr;
  std::uint64_t capacity = 0;  // power of two
  std::uint64_t mask = 0;      // capacity - 1
  unsigned shift = 0;          // log2(capacity)
  std::uint32_t max_event = 0;
  std::uint64_t max_record = 0;  // record_bytes(max_event)
  std::byte* dedup = nullptr;    // null without a dedup region
  std::uint32_t dedup_words = 0;
  std::uint32_t dedup_producers = 0;
  std::byte* dlq = nullptr;      // null without dead-letter rings
  std::uint64_t dlq_capacity = 0;
  layout::RegistryControl* registry = nullptr;  // null without a schema registry
  std::uint32_t registry_slots = 0;
  std::atomic<std::uint64_t>* latency = nullptr;  // kLatencyWords per (group, worker)

  [[nodiscard]] RecordHeader* record_at(std::uint64_t pos) const noexcept {
    return reinterpret_cast<RecordHeader*>(log + (pos & mask));
  }
  [[nodiscard]] std::uint64_t lap(std::uint64_t pos) const noexcept { return pos >> shift; }
  // Bytes from `pos` to the end of its lap.
  [[nodiscard]] std::uint64_t to_lap_end(std::uint64_t pos) const noexcept {
    return capacity - (pos & mask);
  }
  // Where a claim of `total` bytes made at tail `pos` starts: at `pos`, or at the next
  // lap when the rest of this one cannot hold it (a record never crosses the ring's end).
  [[nodiscard]] std::uint64_t claim_start(std::uint64_t pos, std::uint64_t total) const noexcept {
    const std::uint64_t room = to_lap_end(pos);
    return room >= total ? pos : pos + room;
  }
  // Window `i` of worker `w` of group `g` (dedup region present).
  [[nodiscard]] layout::DedupWindowHeader* dedup_window(std::uint32_t g, std::uint32_t w, std::uint32_t i) const noexcept {
    const std::uint64_t entry = layout::dedup_entry_bytes(dedup_words);
    const std::uint64_t index = (std::uint64_t{g} * layout::kMaxWorkers + w) * dedup_producers + i;
    return reinterpret_cast<layout::DedupWindowHeader*>(dedup + index * entry);
  }
  [[nodiscard]] std::atomic<std::uint64_t>* dedup_words_of(layout::DedupWindowHeader* h) const noexcept {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(reinterpret_cast<std::byte*>(h) + sizeof(*h));
  }
  [[nodiscard]] layout::RegistryEntry* registry_entry(std::uint32_t type_id) const noexcept {
    return reinterpret_cast<layout::RegistryEntry*>(registry) + type_id;  // entry 0 is the control block
  }
  [[nodiscard]] std::atomic<std::uint64_t>* latency_of(std::uint32_t g, std::uint32_t w) const noexcept {
    return latency + (std::uint64_t{g} * layout::kMaxWorkers + w) * layout::kLatencyWords;
  }
  [[nodiscard]] layout::DlqControl* dlq_control(std::uint32_t g) const noexcept {
    return reinterpret_cast<layout::DlqControl*>(dlq + g * (sizeof(layout::DlqControl) + dlq_capacity));
  }
  [[nodiscard]] std::byte* dlq_ring(std::uint32_t g) const noexcept {
    return reinterpret_cast<std::byte*>(dlq_control(g)) + sizeof(layout::DlqControl);
  }
};

class Mapping;

}  // namespace detail

// A mapped segment. Cheap to copy (the mapping is shared and unmapped with the last
// copy); producers and consumer groups keep it alive.
class Segment {
 public:
  // Creates and initialises a new segment (0600 unless options.mode says otherwise).
  // Throws Error: invalid_name, invalid_options, exists, permission, no_space, system.
  // An anonymous location never exists already: if_exists does not apply to it.
  static Segment create(const Location& where, const SegmentOptions& options = {});

  // Opens an existing segment and validates it: magic, version, sizes, region table,
  // checksum, owner and mode. Persisted sizes win over anything the caller assumes.
  // Throws Error: not_found, foreign, truncated, version_mismatch, not_initialised,
  // corrupt, owner_mismatch, mode_widened, permission, system; pid_namespace for a
  // process of another pid namespace than the creator's, unless options.read_only. An
  // anonymous location has no name to open: not_found, saying so.
  static Segment open(const Location& where, const OpenOptions& options = {});

  // Removes the name (shm_unlink / unlink). Returns false if there was none. Processes
  // that have it mapped keep using it until they unmap. Throws Error(foreign) without
  // removing anything when the name holds something other than a segment (a segment's
  // magic, or an unfinished one: empty, or header-sized with no magic yet), so that a
  // mistyped name never deletes another file; IfExists::replace checks the same.
  // An anonymous location has no name: false.
  static bool remove(const Location& where);

  // Reads every page of the mapping once, as create and open do (OpenOptions::touch_pages).
  // For a child forked after creating or opening the segment: its inherited mapping has
  // no page table entries, so on VMs whose first access to each page faults in the
  // hypervisor (about 5 us a page) its first lap would otherwise stall page by page.
  // Reads only: other processes may be writing the segment meanwhile.
  void touch_pages() const noexcept;

  [[nodiscard]] const Location& location() const noexcept;
  [[nodiscard]] const layout::SegmentHeader& header() const noexcept;
  [[nodiscard]] std::uint64_t capacity() const noexcept { return refs().capacity; }
  [[nodiscard]] std::uint32_t max_event() const noexcept { return refs().max_event; }
  [[nodiscard]] std::uint32_t max_producers() const noexcept { return refs().max_producers; }
  [[nodiscard]] std::uint32_t max_groups() const noexcept { return refs().max_groups; }
  [[nodiscard]] std::uint64_t key_slots() const noexcept { return refs().key_mask + 1; }
  // The tail: one past the last claimed byte (racy observer).
  [[nodiscard]] std::uint64_t was_tail() const noexcept {
    return refs().control == nullptr ? 0 : refs().control->tail.load(std::memory_order_acquire);
  }

  // The last key_seq assigned to `key` (0 if never published): racy observer, e.g.
  // to retry Producer::try_publish_expected after a conflict.
  [[nodiscard]] std::uint64_t was_last_key_seq(std::uint64_t key) const noexcept;

  [[nodiscard]] const detail::SegmentRefs& refs() const noexcept;
  // Mapped PROT_READ (OpenOptions::read_only). Kept by the mapping, not in SegmentRefs,
  // which producers and workers copy next to their hot fields.
  [[nodiscard]] bool read_only() const noexcept;
  // Throws Error(invalid_options) naming `what` (e.g. "read its statistics") when there
  // is no segment: default-constructed, or moved from. Every call that takes a Segment
  // and may throw checks this first; the accessors above answer 0, or an empty location
  // and header, for no segment.
  void require_open(std::string_view what) const;
  // Throws Error(permission) naming `what` (e.g. "attach a producer") when the segment
  // was opened read-only; a write to its mapping would be a segmentation fault. Checks
  // require_open first.
  void require_writable(std::string_view what) const;

  // What the segment's name names now: this segment; nothing (it was removed:
  // Segment::remove, `ringbus rm`); or another file (it was replaced: IfExists::replace,
  // `ringbus create --replace`). Processes that have the segment keep using it either
  // way, and no event published under the name reaches them again. Opens the name to
  // look (microseconds): for tools that follow a segment, not for a hot path. An
  // anonymous segment, or a name this process may no longer open, counts as this one.
  enum class Naming : std::uint8_t { this_segment, nothing, another };
  [[nodiscard]] Naming naming() const;

  explicit operator bool() const noexcept { return map_ != nullptr; }
  Segment() = default;

 private:
  explicit Segment(std::shared_ptr<detail::Mapping> m) : map_(std::move(m)) {}
  std::shared_ptr<detail::Mapping> map_;
};

// Validates a shared-memory or group name: 1..max_len bytes of [A-Za-z0-9._-],
// not "." or "..". Returns an empty string if valid, else what is wrong.
std::string check_name(std::string_view name, std::size_t max_len);

}  // namespace ringbus
