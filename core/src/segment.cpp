// Creating, opening and validating segments. See DESIGN.md, "Segment layout" and
// "Attach protocol".
#include "ringbus/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#include "ringbus/dedup.hpp"
#include "ringbus/detail/key_table.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/error.hpp"
#include "ringbus/hash.hpp"

namespace ringbus {
namespace detail {

class Mapping {
 public:
  Mapping(Location loc, void* addr, std::size_t len) : loc_(std::move(loc)), addr_(addr), len_(len) {}
  ~Mapping() { ::munmap(addr_, len_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  Location loc_;
  void* addr_;
  std::size_t len_;
  SegmentRefs refs_;
  bool read_only_ = false;  // mapped PROT_READ (OpenOptions::read_only)
  // The file mapped, as fstat saw it: Segment::naming() compares what the name opens.
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  void identify(const struct stat& st) noexcept {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
};

}  // namespace detail

namespace {

using layout::RegionDesc;
using layout::RegionKind;

constexpr bool is_pow2(std::uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

unsigned log2_exact(std::uint64_t v) noexcept {
  unsigned s = 0;
  while ((std::uint64_t{1} << s) < v) ++s;
  return s;
}

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void fail(Errc code, const Location& where, const std::string& what) {
  throw Error(code, "segment " + where.display() + ": " + what);
}

// The sizes a segment is built from: from options at creation, from the header on open.
struct Config {
  std::uint64_t capacity;
  std::uint32_t max_event;
  std::uint32_t max_producers;
  std::uint32_t max_groups;
  std::uint32_t key_slots;
  std::uint32_t dedup_words;  // 0: no dedup region
  std::uint32_t dedup_producers;
  std::uint64_t dlq_capacity;  // 0: no dead-letter rings
  std::uint32_t registry_slots;  // 0: no schema registry
};

// Returns what is wrong with a configuration, or an empty string.
std::string check_config(const Config& c) {
  if (!is_pow2(c.capacity) || c.capacity < layout::kMinCapacity || c.capacity > layout::kMaxCapacity) {
    return "capacity " + std::to_string(c.capacity) + " must be a power of two between " +
           std::to_string(layout::kMinCapacity) + " and " + std::to_string(layout::kMaxCapacity);
  }
  if (c.max_event == 0 || c.max_event > kMaxPayload) {
    return "max_event " + std::to_string(c.max_event) + " must be between 1 and " + std::to_string(kMaxPayload);
  }
  if (record_bytes(c.max_event) > c.capacity / 4) {
    return "max_event " + std::to_string(c.max_event) + " is too large for capacity " +
           std::to_string(c.capacity) + " (a record of at most capacity/4 = " + std::to_string(c.capacity / 4) +
           " bytes including its " + std::to_string(kRecordHeaderSize) + "-byte header)";
  }
  if (c.max_producers == 0 || c.max_producers > layout::kMaxProducerSlots) {
    return "max_producers " + std::to_string(c.max_producers) + " must be between 1 and " +
           std::to_string(layout::kMaxProducerSlots);
  }
  if (c.max_groups == 0 || c.max_groups > 4096) {
    return "max_groups " + std::to_string(c.max_groups) + " must be between 1 and 4096";
  }
  if (!is_pow2(c.key_slots) || c.key_slots < 16 || c.key_slots > (1u << 28)) {
    return "key_slots " + std::to_string(c.key_slots) + " must be a power of two between 16 and 2^28";
  }
  if (c.dedup_words != 0 && (!is_pow2(c.dedup_words) || c.dedup_words < 2 || c.dedup_words > kMaxDedupWords ||
                             c.dedup_producers == 0 || c.dedup_producers > kMaxDedupProducers)) {
    return "dedup window of " + std::to_string(c.dedup_words) + " words and " + std::to_string(c.dedup_producers) +
           " producers per worker is out of range (2 to " + std::to_string(kMaxDedupWords) +
           " words, a power of two; 1 to " + std::to_string(kMaxDedupProducers) + " producers)";
  }
  const std::uint64_t biggest_dead_letter = layout::dlq_entry_bytes(c.max_event, layout::kMaxDlqMessage);
  if (c.dlq_capacity != 0 && (!is_pow2(c.dlq_capacity) || c.dlq_capacity < 2 * biggest_dead_letter ||
                              c.dlq_capacity > (std::uint64_t{1} << 32))) {
    return "dlq_capacity " + std::to_string(c.dlq_capacity) + " must be 0 or a power of two of at least " +
           std::to_string(2 * biggest_dead_letter) + " (two dead letters of max_event " + std::to_string(c.max_event) +
           ")";
  }
  if (c.registry_slots > 65535) {
    return "registry_slots " + std::to_string(c.registry_slots) + " must be at most 65535 (type ids are 16 bits)";
  }
  return {};
}

struct Plan {
  RegionDesc regions[layout::kMaxRegions]{};
  std::uint32_t count = 0;
  std::uint64_t total = 0;
};

// The one place that decides where each region goes.
Plan plan_layout(const Config& c) {
  Plan p;
  std::uint64_t at = layout::kPage;  // page 0 is the header
  auto add = [&](RegionKind kind, std::uint64_t entry_size, std::uint64_t count, std::uint64_t align) {
    at = align_up(at, align);
    RegionDesc& r = p.regions[p.count++];
    r.kind = static_cast<std::uint32_t>(kind);
    r.entry_size = static_cast<std::uint32_t>(entry_size);
    r.entry_count = count;
    r.offset = at;
    r.size = entry_size * count;
    at += r.size;
  };
  add(RegionKind::control, sizeof(layout::ControlBlock), 1, layout::kHotAlign);
  add(RegionKind::producers, sizeof(layout::ProducerSlot), c.max_producers, layout::kHotAlign);
  add(RegionKind::groups, sizeof(layout::GroupSlot), c.max_groups, layout::kHotAlign);
  add(RegionKind::keys, sizeof(layout::KeyEntry), c.key_slots, layout::kHotAlign);
  if (c.dedup_words != 0) {
    add(RegionKind::dedup, layout::dedup_entry_bytes(c.dedup_words),
        std::uint64_t{c.max_groups} * layout::kMaxWorkers * c.dedup_producers, layout::kHotAlign);
  }
  if (c.dlq_capacity != 0) {
    add(RegionKind::dlq, sizeof(layout::DlqControl) + c.dlq_capacity, c.max_groups, layout::kPage);
  }
  if (c.registry_slots != 0) {
    add(RegionKind::registry, sizeof(layout::RegistryEntry), std::uint64_t{c.registry_slots} + 1, layout::kHotAlign);
  }
  add(RegionKind::latency, 8ull * layout::kLatencyWords, std::uint64_t{c.max_groups} * layout::kMaxWorkers,
      layout::kHotAlign);
  add(RegionKind::log, 1, c.capacity, layout::kPage);
  p.total = align_up(at, layout::kPage);
  return p;
}

const RegionDesc* find_region(const Plan& p, RegionKind k) {
  for (std::uint32_t i = 0; i < p.count; ++i) {
    if (p.regions[i].kind == static_cast<std::uint32_t>(k)) return &p.regions[i];
  }
  return nullptr;
}

std::uint64_t header_checksum(const layout::SegmentHeader* h) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(h);
  return fnv1a(bytes + layout::kChecksumBegin, layout::kChecksumEnd - layout::kChecksumBegin);
}

detail::SegmentRefs make_refs(std::byte* base, const layout::SegmentHeader& h, const Plan& p) {
  detail::SegmentRefs r;
  r.base = base;
  r.total_size = p.total;
  r.header = reinterpret_cast<layout::SegmentHeader*>(base);
  r.control = reinterpret_cast<layout::ControlBlock*>(base + find_region(p, RegionKind::control)->offset);
  r.producers = reinterpret_cast<layout::ProducerSlot*>(base + find_region(p, RegionKind::producers)->offset);
  r.max_producers = h.max_producers;
  r.groups = reinterpret_cast<layout::GroupSlot*>(base + find_region(p, RegionKind::groups)->offset);
  r.max_groups = h.max_groups;
  r.keys = reinterpret_cast<layout::KeyEntry*>(base + find_region(p, RegionKind::keys)->offset);
  r.key_mask = std::uint64_t{h.key_slots} - 1;
  r.log = base + find_region(p, RegionKind::log)->offset;
  r.capacity = h.log_capacity;
  r.mask = h.log_capacity - 1;
  r.shift = h.log_capacity_shift;
  r.max_event = h.max_event;
  r.max_record = record_bytes(h.max_event);
  if (const RegionDesc* d = find_region(p, RegionKind::dedup)) {
    r.dedup = base + d->offset;
    r.dedup_words = h.dedup_words;
    r.dedup_producers = h.dedup_producers;
  }
  if (const RegionDesc* d = find_region(p, RegionKind::dlq)) {
    r.dlq = base + d->offset;
    r.dlq_capacity = h.dlq_capacity;
  }
  if (const RegionDesc* d = find_region(p, RegionKind::registry)) {
    r.registry = reinterpret_cast<layout::RegistryControl*>(base + d->offset);
    r.registry_slots = h.registry_slots;
  }
  r.latency = reinterpret_cast<std::atomic<std::uint64_t>*>(base + find_region(p, RegionKind::latency)->offset);
  return r;
}

// An anonymous location gets a new memfd when asked to create (O_CREAT) and nothing
// otherwise (ENOENT): it has no name to find.
int open_fd(const Location& where, int flags, mode_t mode) {
  if (where.kind == Location::Kind::anonymous) {
    if ((flags & O_CREAT) == 0) {
      errno = ENOENT;
      return -1;
    }
    return ::memfd_create(where.name.c_str(), MFD_CLOEXEC);
  }
  if (where.kind == Location::Kind::shm) {
    const std::string n = "/" + where.name;
    return ::shm_open(n.c_str(), flags, mode);
  }
  return ::open(where.name.c_str(), flags | O_CLOEXEC, mode);
}

int unlink_location(const Location& where) {
  if (where.kind == Location::Kind::anonymous) {
    errno = ENOENT;
    return -1;
  }
  if (where.kind == Location::Kind::shm) {
    const std::string n = "/" + where.name;
    return ::shm_unlink(n.c_str());
  }
  return ::unlink(where.name.c_str());
}

void check_location(const Location& where) {
  if (where.kind != Location::Kind::file) {
    const std::string why = check_name(where.name, 200);
    if (!why.empty()) {
      const char* what = where.kind == Location::Kind::shm ? "segment name" : "anonymous segment label";
      throw Error(Errc::invalid_name, std::string(what) + " \"" + printable(where.name) + "\": " + why);
    }
  } else if (where.name.empty() || where.name.find('\0') != std::string::npos) {
    throw Error(Errc::invalid_name, "segment path \"" + printable(where.name) + "\" is empty or has a NUL byte");
  }
}

class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

// A file of 1 byte to less than a page: no segment, nor one being made (its creator
// sizes it from 0 to the whole segment in one ftruncate).
std::string too_short(off_t size) { return "is " + std::to_string(size) + " bytes, shorter than a segment header"; }

// Why the file at `where` is not something ringbus may remove or replace: "" for a
// segment (its magic), one its creator never finished (empty, or at least a header page
// with no magic yet) or nothing at all; else what it is, e.g. "is not a regular file".
// Anything else is somebody else's file, and a mistyped name must not delete it.
// Errors reading it are thrown (permission or system), naming `verb`.
std::string not_a_segment(const Location& where, const char* verb) {
  // O_NONBLOCK: opening a FIFO to look at it must not wait for a writer.
  const int fd = open_fd(where, where.kind == Location::Kind::file ? O_RDONLY | O_NONBLOCK : O_RDONLY, 0);
  if (fd < 0) {
    if (errno == ENOENT) return {};  // nothing there: the caller reports it
    fail(errno == EACCES || errno == EPERM ? Errc::permission : Errc::system, where,
         "cannot read it to check that it is a segment: " + errno_text(errno) + "; not " + verb);
  }
  FdGuard guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(Errc::system, where, "fstat: " + errno_text(errno) + "; not " + verb);
  if (!S_ISREG(st.st_mode)) return "is not a regular file";
  if (st.st_size == 0) return {};
  if (st.st_size < static_cast<off_t>(layout::kPage)) return too_short(st.st_size);
  std::uint64_t magic = 0;
  if (::pread(fd, &magic, sizeof magic, 0) != sizeof magic) {
    fail(Errc::system, where, "cannot read it to check that it is a segment: " + errno_text(errno) + "; not " + verb);
  }
  if (magic != layout::kMagic && magic != 0) return "does not start with a segment's magic";
  return {};
}

// Refuses (Error foreign) to remove or replace what is not a segment.
void check_removable(const Location& where, const char* verb) {
  const std::string why = not_a_segment(where, verb);
  if (!why.empty()) fail(Errc::foreign, where, why + ": not a ringbus segment; not " + verb);
}

// MAP_POPULATE maps every page of the segment, yet on some VMs (paravirtualised ones
// keeping shadow page tables) the first user-mode access to each page of a new mapping
// still faults: about 5 us a 4 KiB page on our 2-vCPU VMs, 20 ms over a 16 MiB ring,
// which the first lap of every producer and reader would otherwise pay, one stall a
// page. One read of each page pays it here, when a process creates or attaches the
// segment (OpenOptions::touch_pages). Reads only: another process may be writing the
// segment meanwhile.
void touch_every_page(const std::byte* base, std::uint64_t bytes) noexcept {
  for (std::uint64_t off = 0; off < bytes; off += layout::kPage) {
    (void)__atomic_load_n(reinterpret_cast<const std::uint64_t*>(base + off), __ATOMIC_RELAXED);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------

namespace {
constexpr std::string_view kShmPrefix = "shm:";
}  // namespace

Location Location::parse(std::string_view text) {
  if (text.find('/') != std::string_view::npos) return file(std::string(text));
  // "shm:NAME", as display() and every message show it, copied back into a command.
  if (text.starts_with(kShmPrefix)) text.remove_prefix(kShmPrefix.size());
  return shm(std::string(text));
}

std::string Location::display() const {
  switch (kind) {
    case Kind::shm:
      return std::string(kShmPrefix) + printable(name);
    case Kind::anonymous:
      return "anonymous:" + printable(name);
    case Kind::file:
      break;
  }
  return printable(name);
}

std::string check_name(std::string_view name, std::size_t max_len) {
  if (name.empty()) return "is empty";
  if (name.size() > max_len) return "is longer than " + std::to_string(max_len) + " bytes";
  if (name.find("..") != std::string_view::npos) return "contains \"..\"";
  if (name.front() == '.') return "starts with '.'";
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      if (c == '/') return "contains '/'";
      return "contains a character other than letters, digits, '.', '_' and '-'";
    }
  }
  return {};
}

namespace {
// What a Segment with no mapping (default-constructed, moved from) answers.
const Location kNoLocation{};
const layout::SegmentHeader kNoHeader{};
const detail::SegmentRefs kNoRefs{};
}  // namespace

const Location& Segment::location() const noexcept { return map_ ? map_->loc_ : kNoLocation; }
const layout::SegmentHeader& Segment::header() const noexcept { return map_ ? *map_->refs_.header : kNoHeader; }
const detail::SegmentRefs& Segment::refs() const noexcept { return map_ ? map_->refs_ : kNoRefs; }

bool Segment::read_only() const noexcept { return map_ && map_->read_only_; }

void Segment::require_open(std::string_view what) const {
  if (map_) return;
  throw Error(Errc::invalid_options, "no segment: cannot " + std::string(what) +
                                         " (a Segment default-constructed or moved from)");
}

Segment::Naming Segment::naming() const {
  require_open("look up what its name names");
  const Location& where = location();
  if (where.kind == Location::Kind::anonymous) return Naming::this_segment;
  const int fd = open_fd(where, O_RDONLY | O_NONBLOCK, 0);
  if (fd < 0) return errno == ENOENT ? Naming::nothing : Naming::this_segment;
  struct stat st {};
  const bool same = ::fstat(fd, &st) != 0 || (st.st_dev == map_->dev_ && st.st_ino == map_->ino_);
  ::close(fd);
  return same ? Naming::this_segment : Naming::another;
}

void Segment::require_writable(std::string_view what) const {
  require_open(what);
  if (!read_only()) return;
  throw Error(Errc::permission, "segment " + location().display() + ": opened read-only (OpenOptions::read_only): cannot " +
                                    std::string(what));
}
void Segment::touch_pages() const noexcept {
  if (map_) touch_every_page(map_->refs_.base, map_->refs_.total_size);
}

std::uint64_t Segment::was_last_key_seq(std::uint64_t key) const noexcept {
  if (key == 0 || !map_) return 0;
  const std::uint64_t i = detail::find_key(refs(), key);
  if (i == detail::kNoEntry) return 0;
  return layout::latch::last_seq(refs().keys[i].latch.load(std::memory_order_acquire));
}

Segment Segment::create(const Location& where, const SegmentOptions& options) {
  check_location(where);
  const Config cfg{options.capacity,
                   options.max_event,
                   options.max_producers,
                   options.max_groups,
                   options.key_slots,
                   options.dedup_window == 0 ? 0 : dedup_words_for(options.dedup_window),
                   options.dedup_window == 0 ? 0 : options.dedup_producers,
                   options.dlq_capacity,
                   options.registry_slots};
  // The dedup options as given (check_config sees the window as words).
  if (options.dedup_window > kMaxDedupWindow) {
    fail(Errc::invalid_options, where, "dedup_window " + std::to_string(options.dedup_window) +
                                           " is more than the " + std::to_string(kMaxDedupWindow) +
                                           " producer_seqs a window can hold (0: no dedup)");
  }
  if (options.dedup_window != 0 && (options.dedup_producers == 0 || options.dedup_producers > kMaxDedupProducers)) {
    fail(Errc::invalid_options, where, "dedup_producers " + std::to_string(options.dedup_producers) +
                                           " must be between 1 and " + std::to_string(kMaxDedupProducers));
  }
  if (std::string why = check_config(cfg); !why.empty()) fail(Errc::invalid_options, where, why);
  if ((options.mode & ~0777u) != 0 || (options.mode & 0600u) != 0600u) {
    char octal[16];
    std::snprintf(octal, sizeof octal, "%#o", options.mode);  // as modes are written (0200, not 128)
    fail(Errc::invalid_options, where,
         std::string("mode ") + octal + " must be permission bits that include owner read and write (0600)");
  }
  const Plan plan = plan_layout(cfg);

  int fd = open_fd(where, O_RDWR | O_CREAT | O_EXCL, static_cast<mode_t>(options.mode));
  if (fd < 0 && errno == EEXIST && options.if_exists == SegmentOptions::IfExists::replace) {
    check_removable(where, "replaced");
    unlink_location(where);
    fd = open_fd(where, O_RDWR | O_CREAT | O_EXCL, static_cast<mode_t>(options.mode));
  }
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) {
      std::string why;
      try {
        why = not_a_segment(where, "created");
      } catch (const Error&) {  // unreadable: the plain message says enough
      }
      fail(Errc::exists, where,
           why.empty() ? "already exists (remove it with `ringbus rm`, or open it)"
                       : "already exists and " + why + ": it is not a ringbus segment; choose another name");
    }
    if (err == EACCES || err == EPERM) fail(Errc::permission, where, "cannot create: " + errno_text(err));
    if (err == ENOSPC) fail(Errc::no_space, where, "cannot create: " + errno_text(err));
    fail(Errc::system, where, "cannot create: " + errno_text(err));
  }
  FdGuard guard(fd);
  // From here on a failure must not leave a half-made segment behind.
  auto abandon = [&](Errc code, const std::string& what) {
    unlink_location(where);
    fail(code, where, what);
  };
  if (::fchmod(fd, static_cast<mode_t>(options.mode)) != 0) abandon(Errc::system, "fchmod: " + errno_text(errno));
  if (::ftruncate(fd, static_cast<off_t>(plan.total)) != 0) {
    abandon(errno == EFBIG || errno == ENOSPC ? Errc::no_space : Errc::system,
            "cannot size to " + std::to_string(plan.total) + " bytes: " + errno_text(errno));
  }
  // Reserve the pages now: a full /dev/shm must fail here with a message, not later
  // with SIGBUS on a producer's first write.
  if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(plan.total)); err != 0 && err != EOPNOTSUPP) {
    abandon(Errc::no_space, "cannot reserve " + std::to_string(plan.total) + " bytes (" + errno_text(err) + ")" +
                                (where.kind == Location::Kind::shm ? "; see `df -h /dev/shm`" : ""));
  }
  void* addr = ::mmap(nullptr, plan.total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (addr == MAP_FAILED) abandon(Errc::system, "mmap: " + errno_text(errno));
  touch_every_page(static_cast<const std::byte*>(addr), plan.total);
  auto map = std::make_shared<detail::Mapping>(where, addr, plan.total);
  if (struct stat st {}; ::fstat(fd, &st) == 0) map->identify(st);
  auto* base = static_cast<std::byte*>(addr);

  auto* h = new (base) layout::SegmentHeader{};  // the file is zero-filled; this starts the lifetimes
  const detail::ProcessId& self = detail::self_process();
  h->version_major = layout::kVersionMajor;
  h->version_minor = layout::kVersionMinor;
  h->total_size = plan.total;
  h->creator_pid = self.pid;
  h->creator_start_ticks = self.start_ticks;
  h->pid_namespace = self.pid_namespace;
  h->created_realtime_ns = detail::realtime_ns();
  h->mode = options.mode;
  h->header_size = sizeof(layout::SegmentHeader);
  h->log_capacity = cfg.capacity;
  h->log_capacity_shift = log2_exact(cfg.capacity);
  h->max_event = cfg.max_event;
  h->max_producers = cfg.max_producers;
  h->max_groups = cfg.max_groups;
  h->max_workers = layout::kMaxWorkers;
  h->key_slots = cfg.key_slots;
  h->dedup_words = cfg.dedup_words;
  h->dedup_producers = cfg.dedup_producers;
  h->dlq_capacity = cfg.dlq_capacity;
  h->registry_slots = cfg.registry_slots;
  h->region_count = plan.count;
  std::memcpy(h->regions, plan.regions, sizeof plan.regions);
  std::strncpy(h->name, where.name.c_str(), layout::kNameBytes - 1);
  h->checksum = header_checksum(h);

  map->refs_ = make_refs(base, *h, plan);
  auto* ctl = new (map->refs_.control) layout::ControlBlock{};
  ctl->next_producer_id.store(1, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < cfg.max_producers; ++i) new (&map->refs_.producers[i]) layout::ProducerSlot{};
  for (std::uint32_t i = 0; i < cfg.max_groups; ++i) new (&map->refs_.groups[i]) layout::GroupSlot{};
  if (map->refs_.dlq != nullptr) {
    for (std::uint32_t i = 0; i < cfg.max_groups; ++i) {
      new (map->refs_.dlq_control(i)) layout::DlqControl{};
      map->refs_.dlq_control(i)->next_id.store(1, std::memory_order_relaxed);
    }
  }

  // Publishes the header: an opener that acquires the magic sees every field above
  // (pairs with the acquire in Segment::open).
  h->magic.store(layout::kMagic, std::memory_order_release);
  return Segment(std::move(map));
}

Segment Segment::open(const Location& where, const OpenOptions& options) {
  check_location(where);
  if (where.kind == Location::Kind::anonymous) {
    fail(Errc::not_found, where,
         "has no name to open: an anonymous segment is shared by forking after creating it");
  }
  const int fd = open_fd(where, options.read_only ? O_RDONLY : O_RDWR, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) fail(Errc::not_found, where, "does not exist");
    if (err == EACCES || err == EPERM) fail(Errc::permission, where, "cannot open: " + errno_text(err));
    fail(Errc::system, where, "cannot open: " + errno_text(err));
  }
  FdGuard guard(fd);

  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(Errc::system, where, "fstat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) fail(Errc::foreign, where, "is not a regular file");
  if (st.st_uid != ::geteuid() && !options.allow_other_owner) {
    fail(Errc::owner_mismatch, where, "is owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid " +
                                          std::to_string(::geteuid()) + "); pass allow_other_owner to accept it");
  }

  // Wait for the creator to size the file and publish the magic.
  const auto deadline = std::chrono::steady_clock::now() + options.init_timeout;
  void* head = MAP_FAILED;
  for (;;) {
    if (::fstat(fd, &st) != 0) fail(Errc::system, where, "fstat: " + errno_text(errno));
    // Refused at once, not after init_timeout (`ringbus info notes.txt` waited 2 s).
    if (st.st_size > 0 && static_cast<std::uint64_t>(st.st_size) < layout::kPage) {
      fail(Errc::truncated, where,
           too_short(st.st_size) + " (" + std::to_string(layout::kPage) + "): not a segment ringbus recognises");
    }
    if (static_cast<std::uint64_t>(st.st_size) >= layout::kPage) {
      if (head == MAP_FAILED) {
        head = ::mmap(nullptr, layout::kPage, PROT_READ, MAP_SHARED, fd, 0);
        if (head == MAP_FAILED) fail(Errc::system, where, "mmap: " + errno_text(errno));
      }
      const auto* h = static_cast<const layout::SegmentHeader*>(head);
      const std::uint64_t magic = h->magic.load(std::memory_order_acquire);  // pairs with create()
      if (magic == layout::kMagic) break;
      if (magic != 0) {
        ::munmap(head, layout::kPage);
        fail(Errc::foreign, where, "is not a ringbus segment (bad magic)");
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string what;
      if (head == MAP_FAILED) {
        what = "is empty: its creator has not initialised it";
      } else {
        const auto* h = static_cast<const layout::SegmentHeader*>(head);
        const auto pid = static_cast<std::uint32_t>(h->creator_pid);
        what = "header was never completed";
        if (pid != 0) {
          what += " (creator pid " + std::to_string(pid) + (detail::process_dead(pid, 0) ? ", dead)" : ", alive)");
        }
        ::munmap(head, layout::kPage);
      }
      // An unfinished segment may be removed by ringbus (Segment::remove).
      fail(Errc::not_initialised, where, what + "; remove it with `ringbus rm` if it is stale");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  // Validate the header page before trusting any size in it.
  layout::SegmentHeader h;
  std::memcpy(static_cast<void*>(&h), head, sizeof h);
  ::munmap(head, layout::kPage);
  if (h.version_major != layout::kVersionMajor) {
    fail(Errc::version_mismatch, where, "has layout version " + std::to_string(h.version_major) + "." +
                                            std::to_string(h.version_minor) + "; this library reads version " +
                                            std::to_string(layout::kVersionMajor) + ".x");
  }
  if (h.checksum != header_checksum(&h)) fail(Errc::corrupt, where, "header checksum does not match its contents");
  if (h.header_size != sizeof(layout::SegmentHeader)) {
    fail(Errc::corrupt, where, "header size " + std::to_string(h.header_size) + " is not " +
                                   std::to_string(sizeof(layout::SegmentHeader)));
  }
  const Config cfg{h.log_capacity, h.max_event,       h.max_producers, h.max_groups,    h.key_slots,
                   h.dedup_words,  h.dedup_producers, h.dlq_capacity,  h.registry_slots};
  if (std::string why = check_config(cfg); !why.empty()) fail(Errc::corrupt, where, "header: " + why);
  if (h.log_capacity_shift != log2_exact(h.log_capacity) || h.max_workers != layout::kMaxWorkers) {
    fail(Errc::corrupt, where, "header: inconsistent capacity shift or worker count");
  }
  const Plan plan = plan_layout(cfg);
  if (h.total_size != plan.total) {
    fail(Errc::corrupt, where, "header: total size " + std::to_string(h.total_size) + " does not match its layout (" +
                                   std::to_string(plan.total) + ")");
  }
  if (h.region_count != plan.count ||
      std::memcmp(h.regions, plan.regions, sizeof(RegionDesc) * plan.count) != 0) {
    fail(Errc::corrupt, where, "region table does not match the layout of its sizes");
  }
  if (static_cast<std::uint64_t>(st.st_size) < h.total_size) {
    fail(Errc::truncated, where, "is " + std::to_string(st.st_size) + " bytes but its header says " +
                                     std::to_string(h.total_size));
  }
  if (static_cast<std::uint64_t>(st.st_size) != h.total_size) {
    fail(Errc::corrupt, where, "is " + std::to_string(st.st_size) + " bytes but its header says " +
                                   std::to_string(h.total_size));
  }
  const std::uint32_t actual_mode = st.st_mode & 0777u;
  if ((actual_mode & ~h.mode) != 0 && !options.allow_wider_mode) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "mode %04o is wider than %04o asked for at creation", actual_mode, h.mode);
    fail(Errc::mode_widened, where, std::string(buf) + "; pass allow_wider_mode to accept it");
  }

  // A pid names a process only within its pid namespace: a process of another one would
  // judge the segment's live processes dead by their pids, and take over their slots
  // and locks while they use them (DESIGN.md section 9). A reader judges nobody.
  if (detail::other_pid_namespace(h.pid_namespace) && !options.read_only) {
    fail(Errc::pid_namespace, where,
         "was created in pid namespace " + std::to_string(h.pid_namespace) + " and this process is in " +
             std::to_string(detail::self_process().pid_namespace) +
             ": the processes of a segment must share one, as a process is known dead by its pid; open it "
             "read-only to look at it");
  }
  const int prot = options.read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  void* addr = ::mmap(nullptr, h.total_size, prot, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (addr == MAP_FAILED) fail(Errc::system, where, "mmap: " + errno_text(errno));
  if (options.touch_pages) touch_every_page(static_cast<const std::byte*>(addr), h.total_size);
  auto map = std::make_shared<detail::Mapping>(where, addr, h.total_size);
  map->identify(st);
  // Sizes come from the validated private copy, never from the shared page again.
  map->refs_ = make_refs(static_cast<std::byte*>(addr), h, plan);
  map->read_only_ = options.read_only;
  const std::uint64_t tail = map->refs_.control->tail.load(std::memory_order_acquire);
  if (!layout::valid_position(tail)) {
    fail(Errc::corrupt, where,
         "control: tail " + std::to_string(tail) + " cannot be a log position (8-byte aligned, at most 2^62)");
  }
  return Segment(std::move(map));
}

bool Segment::remove(const Location& where) {
  check_location(where);
  if (where.kind == Location::Kind::anonymous) return false;
  check_removable(where, "removed");
  if (unlink_location(where) == 0) return true;
  if (errno == ENOENT) return false;
  fail(errno == EACCES || errno == EPERM ? Errc::permission : Errc::system, where,
       "cannot remove: " + errno_text(errno));
}

}  // namespace ringbus
