// Segment creation, attach validation, names, modes, ownership and persistence.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/dedup.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/error.hpp"
#include "ringbus/hash.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/registry.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/stats.hpp"
#include "ringbus/tail_reader.hpp"
#include "process_support.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

using test::error_of;
using test::TempSegment;
using test::unique_name;

std::string temp_path() { return "/tmp/" + unique_name("rbseg") + ".seg"; }

struct FileGuard {
  std::string path;
  ~FileGuard() { ::unlink(path.c_str()); }
};

void patch_file(const std::string& path, std::size_t offset, const void* bytes, std::size_t n) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, bytes, n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
  ::close(fd);
}

template <class T>
T read_file_at(const std::string& path, std::size_t offset) {
  T v{};
  const int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::pread(fd, &v, sizeof v, static_cast<off_t>(offset)), static_cast<ssize_t>(sizeof v));
  ::close(fd);
  return v;
}

// Rewrites the header checksum after a deliberate change, so that a later check is
// what rejects the file.
void fix_checksum(const std::string& path) {
  std::vector<unsigned char> page(layout::kPage);
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_EQ(::pread(fd, page.data(), page.size(), 0), static_cast<ssize_t>(page.size()));
  const std::uint64_t sum = fnv1a(page.data() + layout::kChecksumBegin, layout::kChecksumEnd - layout::kChecksumBegin);
  ASSERT_EQ(::pwrite(fd, &sum, 8, 16), 8);
  ::close(fd);
}

TEST(Segment, OpenSeesTheSizesItWasCreatedWith) {
  SegmentOptions o = TempSegment::small_options();
  o.capacity = 256 * 1024;
  o.max_event = 1000;
  o.key_slots = 64;
  TempSegment seg(o);
  const Segment again = Segment::open(seg.location());
  EXPECT_EQ(again.capacity(), 256u * 1024);
  EXPECT_EQ(again.max_event(), 1000u);
  EXPECT_EQ(again.key_slots(), 64u);
  EXPECT_EQ(again.max_producers(), o.max_producers);
  EXPECT_EQ(again.header().creator_pid, static_cast<std::uint64_t>(::getpid()));
  EXPECT_STREQ(again.header().name, seg.location().name.c_str());
}

TEST(Segment, HeaderRecordsWhenItWasCreated) {
  const std::uint64_t before = detail::realtime_ns();
  TempSegment seg;
  const std::uint64_t after = detail::realtime_ns();
  const std::uint64_t created = Segment::open(seg.location()).header().created_realtime_ns;
  EXPECT_GE(created, before);
  EXPECT_LE(created, after);
}

TEST(Segment, CreateRefusesAnExistingNameUnlessAskedToReplace) {
  TempSegment seg;
  const Error e = error_of([&] { Segment::create(seg.location(), TempSegment::small_options()); });
  EXPECT_EQ(e.code(), Errc::exists);
  EXPECT_NE(std::string(e.what()).find(seg.location().display()), std::string::npos) << e.what();
  SegmentOptions o = TempSegment::small_options();
  o.if_exists = SegmentOptions::IfExists::replace;
  o.max_event = 100;
  const Segment replaced = Segment::create(seg.location(), o);
  EXPECT_EQ(Segment::open(seg.location()).max_event(), 100u);
}

TEST(Segment, OpenOfAMissingSegmentSaysNotFound) {
  const Location loc = Location::shm(unique_name("missing"));
  const Error e = error_of([&] { Segment::open(loc); });
  EXPECT_EQ(e.code(), Errc::not_found);
  EXPECT_NE(std::string(e.what()).find(loc.name), std::string::npos);
  EXPECT_FALSE(Segment::remove(loc));
}

// An anonymous segment has no name: nothing in /dev/shm, nothing to open or remove, and
// two created with one label are two segments. The label names it in messages and in
// the process's maps; its memory goes with its last mapping.
TEST(Segment, AnAnonymousSegmentHasNoNameToOpenOrRemove) {
  const std::string label = unique_name("anon");
  const Location loc = Location::anonymous(label);
  const std::string memfd = "/memfd:" + label + " ";
  EXPECT_EQ(loc.display(), "anonymous:" + label);
  {
    const Segment seg = Segment::create(loc, TempSegment::small_options());
    const Segment other = Segment::create(loc, TempSegment::small_options());
    EXPECT_EQ(seg.location().display(), "anonymous:" + label);
    EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + label));
    // Its file, as the mapping shows it, has the mode asked for: 0600.
    const std::string maps = test::read_file("/proc/self/maps");
    const std::size_t at = maps.find(memfd);
    ASSERT_NE(at, std::string::npos) << maps;
    const std::size_t line = maps.rfind('\n', at) + 1;  // npos + 1 == 0 for the first line
    struct stat st {};
    ASSERT_EQ(::stat(("/proc/self/map_files/" + maps.substr(line, maps.find(' ', line) - line)).c_str(), &st), 0)
        << std::strerror(errno);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    const Error e = error_of([&] { Segment::open(loc); });
    EXPECT_EQ(e.code(), Errc::not_found);
    EXPECT_STREQ(e.what(), ("segment anonymous:" + label +
                            ": has no name to open: an anonymous segment is shared by forking after creating it")
                               .c_str());
    EXPECT_FALSE(Segment::remove(loc));

    Producer p = Producer::attach(seg);
    const std::uint64_t v = 42;
    ASSERT_EQ(p.try_publish(7, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
    Event e1;
    TailReader tail = TailReader::open(seg, TailStart::earliest);
    ASSERT_TRUE(tail.try_next(e1));
    EXPECT_EQ(e1.key(), 7u);
    TailReader apart = TailReader::open(other, TailStart::earliest);
    EXPECT_FALSE(apart.try_next(e1));
  }
  EXPECT_EQ(test::read_file("/proc/self/maps").find(memfd), std::string::npos);
  for (const char* bad : {"", "a/b", ".."}) {
    const Error e = error_of([&] { Segment::create(Location::anonymous(bad), TempSegment::small_options()); });
    EXPECT_EQ(e.code(), Errc::invalid_name) << bad;
    EXPECT_TRUE(std::string(e.what()).starts_with("anonymous segment label \"" + std::string(bad) + "\": "))
        << e.what();
  }
}

TEST(Segment, NamesAreValidated) {
  for (const char* bad : {"", "a/b", "..", "x..y", ".hidden", "sp ace", "semi;colon"}) {
    const Error e = error_of([&] { Segment::create(Location::shm(bad), TempSegment::small_options()); });
    EXPECT_EQ(e.code(), Errc::invalid_name) << bad;
  }
  EXPECT_EQ(error_of([&] { Segment::create(Location::shm(std::string(201, 'a'))); }).code(), Errc::invalid_name);
  EXPECT_NE(std::string(error_of([&] { Segment::create(Location::shm("a/b")); }).what()).find("contains '/'"),
            std::string::npos);
  EXPECT_TRUE(check_name("orders.v2_test-1", 200).empty());
  EXPECT_EQ(Location::parse("/tmp/x.seg").kind, Location::Kind::file);
  EXPECT_EQ(Location::parse("orders").kind, Location::Kind::shm);
  // What display() shows, and every message names, is taken back as it is: "shm:orders"
  // was refused as a name with a ':'.
  for (const Location& where : {Location::shm("orders"), Location::file("/tmp/x.seg"), Location::file("./shm:x")}) {
    const Location back = Location::parse(where.display());
    EXPECT_EQ(back.kind, where.kind) << where.display();
    EXPECT_EQ(back.name, where.name) << where.display();
  }
  EXPECT_EQ(Location::parse("shm:").name, "");
  EXPECT_EQ(error_of([] { Segment::create(Location::parse("shm:")); }).code(), Errc::invalid_name);
  // A file path: empty, or with a NUL byte that would cut it short in the system call.
  // The message shows bytes outside printable ASCII escaped: a NUL would cut the message
  // short too, and a control byte would reach the terminal.
  const std::pair<std::string, std::string> paths[] = {
      {"", "segment path \"\" is empty or has a NUL byte"},
      {std::string("/tmp/a\0b", 8), "segment path \"/tmp/a\\x00b\" is empty or has a NUL byte"}};
  for (const auto& [bad, message] : paths) {
    for (const bool create : {true, false}) {
      const Error e = error_of([&] {
        if (create) {
          Segment::create(Location::file(bad), TempSegment::small_options());
        } else {
          Segment::open(Location::file(bad));
        }
      });
      EXPECT_EQ(e.code(), Errc::invalid_name) << message;
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
  const Error e = error_of([&] { Segment::open(Location::shm(std::string("or\0ders\x1b[2J", 11))); });
  EXPECT_EQ(e.code(), Errc::invalid_name);
  EXPECT_NE(std::string(e.what()).find("segment name \"or\\x00ders\\x1b[2J\""), std::string::npos) << e.what();
}

// Names that reach a message from the caller or from the segment show their control
// bytes as \xHH: the group a join or a dead-letter lookup names, an event type, a file
// path with a newline or an escape sequence in it. UTF-8 is kept.
TEST(Segment, MessagesShowControlBytesEscaped) {
  EXPECT_EQ(printable(std::string("a\0b\n\x1b[2J\x7f", 9)), "a\\x00b\\x0a\\x1b[2J\\x7f");
  EXPECT_EQ(printable("/tmp/donn\xc3\xa9" "es.seg"), "/tmp/donn\xc3\xa9" "es.seg");
  EXPECT_EQ(Location::file("/tmp/a\nb").display(), "/tmp/a\\x0ab");
  TempSegment seg;
  const Error join = error_of([&] { ConsumerGroup::join(seg.segment(), "g\x1b[2J"); });
  EXPECT_EQ(join.code(), Errc::invalid_name);
  EXPECT_NE(std::string(join.what()).find("group \"g\\x1b[2J\""), std::string::npos) << join.what();
  const Error dlq = error_of([&] { DeadLetters::open(seg.segment(), std::string("no\0such", 7)); });
  EXPECT_EQ(dlq.code(), Errc::not_found);
  EXPECT_NE(std::string(dlq.what()).find("group \"no\\x00such\": no such group"), std::string::npos) << dlq.what();
  const Error type = error_of([&] { SchemaRegistry(seg.segment()).register_type(std::string(300, '\r'), 1); });
  EXPECT_EQ(type.code(), Errc::invalid_name);
  EXPECT_NE(std::string(type.what()).find("event type \"\\x0d\\x0d"), std::string::npos);
  EXPECT_EQ(std::string(type.what()).find('\r'), std::string::npos);
}

TEST(Segment, OptionsAreValidated) {
  auto code = [](SegmentOptions o) {
    return error_of([&] { Segment::create(Location::shm(unique_name("opt")), o); }).code();
  };
  SegmentOptions o = TempSegment::small_options();
  o.capacity = 100000;  // not a power of two
  EXPECT_EQ(code(o), Errc::invalid_options);
  o = TempSegment::small_options();
  o.capacity = 4096;  // too small
  EXPECT_EQ(code(o), Errc::invalid_options);
  o = TempSegment::small_options();
  o.max_event = 32 * 1024;  // record larger than capacity / 4
  EXPECT_EQ(code(o), Errc::invalid_options);
  o = TempSegment::small_options();
  o.key_slots = 1000;
  EXPECT_EQ(code(o), Errc::invalid_options);
  o = TempSegment::small_options();
  o.mode = 0444;  // no owner write
  EXPECT_EQ(code(o), Errc::invalid_options);
  o = TempSegment::small_options();
  o.max_producers = 0;
  EXPECT_EQ(code(o), Errc::invalid_options);
  // Each refusal names the option and the value.
  auto what = [](SegmentOptions o) {
    return std::string(error_of([&] { Segment::create(Location::shm(unique_name("opt")), o); }).what());
  };
  const std::vector<std::pair<std::function<void(SegmentOptions&)>, std::string>> named = {
      {[](SegmentOptions& x) { x.max_groups = 0; }, "max_groups 0"},
      {[](SegmentOptions& x) { x.max_groups = 5000; }, "max_groups 5000"},
      {[](SegmentOptions& x) { x.dedup_window = kMaxDedupWindow + 1; },
       "dedup_window " + std::to_string(kMaxDedupWindow + 1)},
      {[](SegmentOptions& x) { x.dedup_window = ~0u; }, "dedup_window 4294967295"},  // (bits + 63) would wrap
      {[](SegmentOptions& x) { x.dedup_producers = 0; }, "dedup_producers 0"},
      {[](SegmentOptions& x) { x.dedup_producers = kMaxDedupProducers + 1; }, "dedup_producers 4097"},
      {[](SegmentOptions& x) { x.dlq_capacity = 3000; }, "dlq_capacity 3000"},
      {[](SegmentOptions& x) { x.dlq_capacity = 1024; }, "dlq_capacity 1024"},  // below one dead letter
      {[](SegmentOptions& x) {  // one dead letter of max_event 512 fits (1,152 B), two do not
         x.max_event = 512;
         x.dlq_capacity = 2048;
       },
       "dlq_capacity 2048 must be 0 or a power of two of at least 2304 (two dead letters of max_event 512)"},
      {[](SegmentOptions& x) { x.registry_slots = 70000; }, "registry_slots 70000"},
  };
  for (const auto& [change, names] : named) {
    SegmentOptions bad = TempSegment::small_options();
    change(bad);
    EXPECT_EQ(code(bad), Errc::invalid_options) << names;
    EXPECT_NE(what(bad).find(names), std::string::npos) << what(bad);
  }
}

// Each size limit at its edge: the last value accepted, the first refused (naming the
// option and the value). Limits whose last accepted value would take gigabytes are
// checked just past the edge only.
TEST(Segment, SizeLimitsAreExact) {
  const auto small = TempSegment::small_options();  // capacity 64 KiB
  const std::uint32_t biggest_event = 64 * 1024 / 4 - kRecordHeaderSize;
  const std::vector<std::pair<std::function<void(SegmentOptions&)>, std::string>> refused = {
      {[](SegmentOptions& x) { x.capacity = layout::kMinCapacity / 2; }, "capacity 32768"},
      {[](SegmentOptions& x) { x.capacity = layout::kMaxCapacity * 2; }, "capacity 2199023255552"},
      {[](SegmentOptions& x) { x.max_event = 0; }, "max_event 0"},
      {[&](SegmentOptions& x) { x.max_event = biggest_event + 1; },
       "max_event " + std::to_string(biggest_event + 1) + " is too large for capacity 65536"},
      {[](SegmentOptions& x) { x.max_producers = layout::kMaxProducerSlots + 1; }, "max_producers 32769"},
      {[](SegmentOptions& x) { x.max_groups = 4097; }, "max_groups 4097"},
      {[](SegmentOptions& x) { x.key_slots = 8; }, "key_slots 8"},
      {[](SegmentOptions& x) { x.key_slots = 1u << 29; }, "key_slots 536870912"},
      {[](SegmentOptions& x) { x.dlq_capacity = std::uint64_t{1} << 33; }, "dlq_capacity 8589934592"},
      {[](SegmentOptions& x) { x.registry_slots = 65536; }, "registry_slots 65536"},
  };
  for (const auto& [change, names] : refused) {
    SegmentOptions o = small;
    change(o);
    const Error e = error_of([&] { Segment::create(Location::shm(unique_name("lim")), o); });
    EXPECT_EQ(e.code(), Errc::invalid_options) << names << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(names), std::string::npos) << e.what();
  }
  const std::vector<std::function<void(SegmentOptions&)>> accepted = {
      [](SegmentOptions& x) { x.capacity = layout::kMinCapacity; },
      [&](SegmentOptions& x) { x.max_event = biggest_event; },
      [](SegmentOptions& x) { x.max_producers = layout::kMaxProducerSlots; },
      [](SegmentOptions& x) { x.key_slots = 16; },
      [](SegmentOptions& x) { x.registry_slots = 65535; },
  };
  for (std::size_t i = 0; i < accepted.size(); ++i) {
    SegmentOptions o = small;
    accepted[i](o);
    EXPECT_NO_THROW(TempSegment{o}) << "case " << i;
  }
}

// Limits that creation checks on the options as given (the dedup window in sequence
// numbers) are checked again on the header's own fields when a segment is opened.
TEST(Segment, DedupSizesOutOfRangeInTheHeaderAreRefused) {
  FileGuard f{temp_path()};
  const SegmentOptions with_dedup{.capacity = 64 * 1024, .max_event = 128, .dedup_window = 64,
                                  .if_exists = SegmentOptions::IfExists::replace};
  struct Case {
    std::size_t offset;
    std::uint32_t value;
  };
  for (const Case c : {Case{offsetof(layout::SegmentHeader, dedup_words), 1},
                       Case{offsetof(layout::SegmentHeader, dedup_words), kMaxDedupWords * 2},
                       Case{offsetof(layout::SegmentHeader, dedup_producers), kMaxDedupProducers + 1}}) {
    { Segment::create(Location::file(f.path), with_dedup); }
    patch_file(f.path, c.offset, &c.value, 4);
    fix_checksum(f.path);
    const Error e = error_of([&] { Segment::open(Location::file(f.path)); });
    EXPECT_EQ(e.code(), Errc::corrupt) << c.value;
    EXPECT_NE(std::string(e.what()).find("dedup window"), std::string::npos) << e.what();
  }
}

// Modes with bits beyond the permissions, or without owner read and write, are refused
// and named in octal, as they are written.
TEST(Segment, ModeBitsBeyondPermissionsAreRefused) {
  for (const auto& [mode, written] : std::vector<std::pair<std::uint32_t, std::string>>{
           {04600u, "04600"}, {02600u, "02600"}, {01600u, "01600"}, {010600u, "010600"}, {0200u, "0200"}, {0u, "0"}}) {
    SegmentOptions o = TempSegment::small_options();
    o.mode = mode;
    const Error e = error_of([&] { Segment::create(Location::shm(unique_name("mode")), o); });
    EXPECT_EQ(e.code(), Errc::invalid_options) << written;
    EXPECT_NE(std::string(e.what()).find("mode " + written + " must be permission bits"), std::string::npos)
        << e.what();
  }
}

// The permissions of the pages at `addr` in this process, as /proc/self/maps shows them
// ("r--s", "rw-s"); empty if no mapping holds it.
std::string protection_of(const void* addr) {
  std::ifstream maps("/proc/self/maps");
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  for (std::string line; std::getline(maps, line);) {
    std::uintptr_t lo = 0, hi = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &lo, &hi, perms) == 3 && a >= lo && a < hi) return perms;
  }
  return {};
}

// A segment opened read-only is mapped so (a stray write would fault, not corrupt it),
// and everything that only reads works on it: statistics, a tail reader, the registry's
// lookups. Whatever would write refuses it with Errc::permission, naming what it is.
// A segment can tell whether its name still names it: a tool following one (tail -f,
// stat --watch) otherwise went on showing a segment nothing could publish to again.
TEST(Segment, KnowsWhetherItsNameWasRemovedOrReplaced) {
  for (const bool in_a_file : {false, true}) {
    SCOPED_TRACE(in_a_file ? "file" : "shm");
    const std::string name = test::unique_name("rbnaming");
    const Location where = in_a_file ? Location::file("/tmp/" + name) : Location::shm(name);
    const Segment created = Segment::create(where, TempSegment::small_options());
    const Segment opened = Segment::open(where);
    EXPECT_EQ(created.naming(), Segment::Naming::this_segment);
    EXPECT_EQ(opened.naming(), Segment::Naming::this_segment);
    ASSERT_TRUE(Segment::remove(where));
    EXPECT_EQ(created.naming(), Segment::Naming::nothing);
    EXPECT_EQ(opened.naming(), Segment::Naming::nothing);
    SegmentOptions again = TempSegment::small_options();
    again.if_exists = SegmentOptions::IfExists::replace;
    const Segment replacement = Segment::create(where, again);
    EXPECT_EQ(opened.naming(), Segment::Naming::another);
    EXPECT_EQ(replacement.naming(), Segment::Naming::this_segment);
    const Segment replaced_again = Segment::create(where, again);
    EXPECT_EQ(replacement.naming(), Segment::Naming::another);
    EXPECT_EQ(replaced_again.naming(), Segment::Naming::this_segment);
    Segment::remove(where);
  }
  const Segment anonymous = Segment::create(Location::anonymous("rbnaming"), TempSegment::small_options());
  EXPECT_EQ(anonymous.naming(), Segment::Naming::this_segment);
}

TEST(Segment, OpenedReadOnlyItIsReadAndRefusesWhatWrites) {
  TempSegment seg;
  std::uint16_t type = 0;
  {
    Producer p = Producer::attach(seg.segment());
    type = SchemaRegistry(seg.segment()).register_type("Order");
    for (std::uint64_t n = 0; n < 3; ++n) {
      Claim c;
      ASSERT_EQ(p.try_claim(n + 1, type, sizeof n, c), Status::ok);
      std::memcpy(c.payload().data(), &n, sizeof n);
      c.commit();
    }
  }
  ConsumerGroup g = ConsumerGroup::join(seg.segment(), "g");
  OpenOptions o;
  o.read_only = true;
  const Segment ro = Segment::open(seg.location(), o);
  EXPECT_TRUE(ro.read_only());
  EXPECT_FALSE(seg.segment().read_only());
  EXPECT_EQ(protection_of(ro.refs().control), "r--s");
  EXPECT_EQ(protection_of(seg.segment().refs().control), "rw-s");
  EXPECT_EQ(read_stats(ro).published, 3u);
  EXPECT_EQ(read_stats(ro).groups.size(), 1u);
  TailReader r = TailReader::open(ro, TailStart::earliest);
  std::uint64_t read = 0;
  for (Event e; r.try_next(e); ++read) {
    std::uint64_t n = 0;
    std::memcpy(&n, e.payload().data(), sizeof n);
    EXPECT_EQ(n, read);
    EXPECT_EQ(e.key_seq(), 1u);
  }
  EXPECT_EQ(read, 3u);
  const SchemaRegistry registry(ro);
  EXPECT_EQ(registry.find("Order"), type);
  for (const auto& [what, call] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"attach a producer", [&] { Producer::attach(ro); }},
           {"join a consumer group", [&] { ConsumerGroup::join(ro, "h"); }},
           {"remove a consumer group", [&] { ConsumerGroup::remove(ro, "g"); }},
           {"move a consumer group's cursors", [&] { (void)ConsumerGroup::skip_to(ro, "g", layout::kNoPosition); }},
           {"open a dead-letter ring (it is locked to be read)", [&] { DeadLetters::open(ro, "g"); }},
           {"register an event type", [&] { SchemaRegistry(ro).register_type("Refund"); }},
           {"set an event type's version", [&] { SchemaRegistry(ro).set_current_version(type, 2); }}}) {
    const Error e = error_of(call);
    EXPECT_EQ(e.code(), Errc::permission) << what;
    EXPECT_EQ(std::string(e.what()), "segment " + seg.location().display() +
                                         ": opened read-only (OpenOptions::read_only): cannot " + what);
  }
  EXPECT_FALSE(registry.find("Refund").has_value());
}

// No segment (default-constructed, or moved from): every call that takes one and may
// throw refuses it by name, where most dereferenced a null mapping (SIGSEGV); the
// accessors answer 0 and empty, as a moved-from ConsumerGroup's do. A Producer not
// attached says `invalid`: a moved-from or detached one wrote through a null slot
// (SIGSEGV), a default-constructed one said `too_large`. A moved-from DeadLetters
// refuses every call, where it dereferenced a null ring.
TEST(Segment, NoSegmentIsRefusedByNameNotDereferenced) {
  TempSegment seg;
  Segment moved = Segment::open(seg.location());
  const Segment taken = std::move(moved);
  const Segment none;
  for (const Segment* s : {&none, static_cast<const Segment*>(&moved)}) {
    EXPECT_FALSE(*s);
    for (const auto& [what, call] : std::vector<std::pair<std::string, std::function<void()>>>{
             {"attach a producer", [&] { Producer::attach(*s); }},
             {"join a consumer group", [&] { ConsumerGroup::join(*s, "g"); }},
             {"remove a consumer group", [&] { ConsumerGroup::remove(*s, "g"); }},
             {"move a consumer group's cursors", [&] { (void)ConsumerGroup::skip_to(*s, "g", 0); }},
             {"open a dead-letter ring (it is locked to be read)", [&] { DeadLetters::open(*s, "g"); }},
             {"open its schema registry", [&] { SchemaRegistry r(*s); }},
             {"open a tail reader", [&] { TailReader::open(*s); }},
             {"open a tail reader", [&] { TailReader::open_at(*s, 0); }},
             {"read its statistics", [&] { (void)read_stats(*s); }},
             {"look up what its name names", [&] { (void)s->naming(); }}}) {
      const Error e = error_of(call);
      EXPECT_EQ(e.code(), Errc::invalid_options) << what;
      EXPECT_EQ(std::string(e.what()), "no segment: cannot " + what + " (a Segment default-constructed or moved from)");
    }
    EXPECT_EQ(s->capacity(), 0u);
    EXPECT_EQ(s->was_tail(), 0u);
    EXPECT_EQ(s->was_last_key_seq(1), 0u);
    EXPECT_EQ(s->location().name, "");
    EXPECT_EQ(s->header().total_size, 0u);
    EXPECT_FALSE(s->read_only());
    s->touch_pages();
  }
  EXPECT_EQ(taken.capacity(), seg.segment().capacity());
  Producer attached = Producer::attach(taken);
  const Producer moved_from = std::move(attached);
  Producer never;
  Producer detached = Producer::attach(taken);
  detached.detach();
  const std::uint64_t v = 1;
  const auto bytes = std::as_bytes(std::span(&v, 1));
  for (Producer* p : {&never, &attached, &detached}) {
    Claim c;
    EXPECT_EQ(p->try_claim(1, 1, 8, c), Status::invalid);
    EXPECT_EQ(p->try_claim(1, 1, 0, c), Status::invalid);
    EXPECT_EQ(p->try_publish(1, 1, bytes), Status::invalid);
    EXPECT_EQ(p->publish(0, 1, bytes), Status::invalid);
    EXPECT_EQ(p->claim_batch(0, 1, 8, 4, c), Status::invalid);
    EXPECT_FALSE(c);
  }
  EXPECT_TRUE(moved_from);
  ConsumerGroup g = ConsumerGroup::join(taken, "g");
  const ConsumerGroup holder = std::move(g);
  EXPECT_EQ(g.workers(), 0u);
  EXPECT_EQ(g.name(), "");
  EXPECT_FALSE(g.segment());
  EXPECT_FALSE(g.running());
  EXPECT_NO_THROW(g.stop());
  g.request_stop();
  const Error e = error_of([&] { g.start([](const Event&) {}); });
  EXPECT_EQ(e.code(), Errc::invalid_options);
  EXPECT_EQ(std::string(e.what()), "no consumer group: cannot start it (a ConsumerGroup moved from)");
  EXPECT_EQ(holder.workers(), 1u);
  DeadLetters dlq = DeadLetters::open(taken, "g");
  const DeadLetters dlq_holder = std::move(dlq);
  std::optional<std::uint64_t> none_id;
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { (void)dlq.list(); }, [&] { (void)dlq.get(1); }, [&] { (void)dlq.stats(); },
           [&] { (void)dlq.request_redrive(none_id); }, [&] { (void)dlq.republish(attached, none_id); },
           [&] { (void)dlq.remove(1); }, [&] { (void)dlq.purge(); }}) {
    const Error refused = error_of(call);
    EXPECT_EQ(refused.code(), Errc::invalid_options);
    EXPECT_EQ(std::string(refused.what()), "no dead-letter ring: a DeadLetters moved from");
  }
  EXPECT_TRUE(dlq_holder.list().empty());
}

// A process of another pid namespace judges processes dead by pids that name other
// processes there (or none): it would take over live producers' slots and locks. It
// may open the segment only to read it. The creator's namespace is in the header.
TEST(Segment, AProcessOfAnotherPidNamespaceMayOnlyReadIt) {
  TempSegment seg;
  {
    Producer p = Producer::attach(seg.segment());
    const std::uint64_t v = 1;
    ASSERT_EQ(p.publish(0, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  }
  const std::uint64_t ns = detail::self_process().pid_namespace;
  ASSERT_NE(ns, 0u) << "/proc/self/ns/pid cannot be read";
  EXPECT_EQ(seg.segment().header().pid_namespace, ns);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = test::spawn_child("open-in-new-pid-namespace", {seg.location().name, std::to_string(fds[1])});
  ::close(fds[1]);
  const std::string out = test::read_to_end(fds[0]);
  ::close(fds[0]);
  ASSERT_EQ(test::reap(pid), 0) << out;
  if (out.starts_with('\001')) GTEST_SKIP() << out.substr(1);
  const std::string prefix = "pid 1|pid_namespace|segment " + seg.location().display() + ": was created in pid namespace " +
                             std::to_string(ns) + " and this process is in ";
  EXPECT_TRUE(out.starts_with(prefix)) << out;
  EXPECT_TRUE(out.ends_with(": the processes of a segment must share one, as a process is known dead by its pid; open "
                            "it read-only to look at it|read-only: published 1"))
      << out;
}

TEST(Segment, OpenRefusesWhatIsNotARegularFile) {
  FileGuard f{temp_path()};
  ASSERT_EQ(::mkfifo(f.path.c_str(), 0600), 0);
  const Error e = error_of([&] { Segment::open(Location::file(f.path), {.init_timeout = std::chrono::milliseconds(20)}); });
  EXPECT_EQ(e.code(), Errc::foreign) << e.what();
  EXPECT_NE(std::string(e.what()).find("is not a regular file"), std::string::npos) << e.what();
}

TEST(Segment, CreatedWithTheRequestedModeWhateverTheUmask) {
  const mode_t old = ::umask(0);
  TempSegment seg;
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + seg.location().name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  SegmentOptions o = TempSegment::small_options();
  o.mode = 0640;
  const mode_t old2 = ::umask(077);
  TempSegment shared(o);
  ::umask(old2);
  ASSERT_EQ(::stat(("/dev/shm/" + shared.location().name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

// Any bit beyond those asked for at creation (0600 here) counts: the group's as much as
// everyone's, and write as much as read.
TEST(Segment, WidenedModeIsRefusedUnlessAllowed) {
  TempSegment seg;
  const std::string path = "/dev/shm/" + seg.location().name;
  for (const ::mode_t mode : {0666, 0640, 0620, 0602, 0700}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    const Error e = error_of([&] { Segment::open(seg.location()); });
    EXPECT_EQ(e.code(), Errc::mode_widened) << std::oct << mode;
    char shown[8];
    std::snprintf(shown, sizeof shown, "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(std::string(e.what()).find(shown), std::string::npos) << e.what();
    EXPECT_NO_THROW(Segment::open(seg.location(), {.allow_wider_mode = true}));
  }
}

TEST(Segment, AnotherUsersSegmentIsRefusedUnlessAllowed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file to another user";
  TempSegment seg;
  ASSERT_EQ(::chown(("/dev/shm/" + seg.location().name).c_str(), 65534, 65534), 0);
  const Error e = error_of([&] { Segment::open(seg.location()); });
  EXPECT_EQ(e.code(), Errc::owner_mismatch);
  EXPECT_NE(std::string(e.what()).find("65534"), std::string::npos) << e.what();
  EXPECT_NO_THROW(Segment::open(seg.location(), {.allow_other_owner = true}));
}

TEST(Segment, ForeignFileIsRefused) {
  FileGuard f{temp_path()};
  {
    std::ofstream out(f.path, std::ios::binary);
    std::vector<char> junk(3 * layout::kPage, 'x');
    out.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  ::chmod(f.path.c_str(), 0600);
  const Error e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::foreign);
  EXPECT_NE(std::string(e.what()).find(f.path), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("magic"), std::string::npos) << e.what();
}

TEST(Segment, TruncatedFileIsRefused) {
  FileGuard f{temp_path()};
  { Segment::create(Location::file(f.path), TempSegment::small_options()); }
  const auto full = read_file_at<std::uint64_t>(f.path, offsetof(layout::SegmentHeader, total_size));
  ASSERT_EQ(::truncate(f.path.c_str(), static_cast<off_t>(full / 2)), 0);
  const Error e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::truncated);
  EXPECT_NE(std::string(e.what()).find(std::to_string(full)), std::string::npos) << e.what();

  // Shorter than a header, and not empty: no creator leaves a file so (it sizes it from 0
  // to the whole segment at once), so it is refused without waiting for one, however
  // long the wait allowed (an hour here: waiting, the test would meet its watchdog).
  ASSERT_EQ(::truncate(f.path.c_str(), 100), 0);
  const Error short_file =
      error_of([&] { Segment::open(Location::file(f.path), {.init_timeout = std::chrono::hours(1)}); });
  EXPECT_EQ(short_file.code(), Errc::truncated);
  EXPECT_NE(std::string(short_file.what()).find("is 100 bytes, shorter than a segment header (4096): not a segment"),
            std::string::npos)
      << short_file.what();
}

TEST(Segment, EmptyOrUnfinishedFileIsNotInitialised) {
  FileGuard f{temp_path()};
  { std::ofstream out(f.path); }
  ::chmod(f.path.c_str(), 0600);
  const OpenOptions quick{.init_timeout = std::chrono::milliseconds(30)};
  EXPECT_EQ(error_of([&] { Segment::open(Location::file(f.path), quick); }).code(), Errc::not_initialised);

  // A header whose creator died before storing the magic.
  { Segment::create(Location::file(f.path), {.capacity = 64 * 1024, .max_event = 128, .if_exists = SegmentOptions::IfExists::replace}); }
  const std::uint64_t zero = 0;
  const std::uint64_t dead_pid = 0x3ffffff0;  // above pid_max: never a live process
  patch_file(f.path, 0, &zero, 8);
  patch_file(f.path, offsetof(layout::SegmentHeader, creator_pid), &dead_pid, 8);
  const Error e = error_of([&] { Segment::open(Location::file(f.path), quick); });
  EXPECT_EQ(e.code(), Errc::not_initialised);
  EXPECT_NE(std::string(e.what()).find("dead"), std::string::npos) << e.what();
}

// Remove and replace delete only segments (or one whose creator never finished it): a
// mistyped name must not delete somebody else's file, and the file stays as it was.
TEST(Segment, RemoveAndReplaceLeaveWhatIsNotASegment) {
  FileGuard junk{temp_path()};
  {
    std::ofstream out(junk.path, std::ios::binary);
    const std::vector<char> bytes(3 * layout::kPage, 'x');
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  FileGuard small{temp_path()};
  { std::ofstream(small.path) << "hello\n"; }
  FileGuard fifo{temp_path()};
  ASSERT_EQ(::mkfifo(fifo.path.c_str(), 0600), 0);
  const std::string dir = temp_path();
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  const SegmentOptions replace{.capacity = 64 * 1024, .max_event = 128, .if_exists = SegmentOptions::IfExists::replace};
  const std::vector<std::pair<std::string, std::string>> cases = {
      {junk.path, "does not start with a segment's magic"},
      {small.path, "is 6 bytes, shorter than a segment header"},
      {fifo.path, "is not a regular file"},  // opened without waiting for a writer
      {dir, "is not a regular file"}};
  for (const auto& [path, why] : cases) {
    const Error removed = error_of([&] { (void)Segment::remove(Location::file(path)); });
    EXPECT_EQ(removed.code(), Errc::foreign) << removed.what();
    EXPECT_NE(std::string(removed.what()).find(path + ": " + why + ": not a ringbus segment; not removed"),
              std::string::npos)
        << removed.what();
    const Error replaced = error_of([&] { Segment::create(Location::file(path), replace); });
    EXPECT_EQ(replaced.code(), Errc::foreign) << replaced.what();
    EXPECT_NE(std::string(replaced.what()).find(why + ": not a ringbus segment; not replaced"), std::string::npos)
        << replaced.what();
    // Without replace, the error says what is there rather than suggesting to remove it.
    const Error exists = error_of([&] { Segment::create(Location::file(path), TempSegment::small_options()); });
    EXPECT_EQ(exists.code(), Errc::exists) << exists.what();
    EXPECT_NE(std::string(exists.what()).find("already exists and " + why + ": it is not a ringbus segment"),
              std::string::npos)
        << exists.what();
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << " is still there";
  }
  EXPECT_EQ(read_file_at<char>(junk.path, layout::kPage), 'x');
  ::rmdir(dir.c_str());

  const std::string shm_name = unique_name("notours");
  const int fd = ::shm_open(("/" + shm_name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 2 * layout::kPage), 0);
  ASSERT_EQ(::pwrite(fd, "not ours", 8, 0), 8);
  ::close(fd);
  EXPECT_EQ(error_of([&] { (void)Segment::remove(Location::shm(shm_name)); }).code(), Errc::foreign);
  EXPECT_EQ(::shm_unlink(("/" + shm_name).c_str()), 0) << "it was left in place";

  // What ringbus removes: an empty file (its creator died before sizing it), a header
  // without its magic (died before publishing it) and a segment; then there is nothing.
  FileGuard f{temp_path()};
  { std::ofstream out(f.path); }
  EXPECT_TRUE(Segment::remove(Location::file(f.path)));
  { Segment::create(Location::file(f.path), replace); }
  const std::uint64_t zero = 0;
  patch_file(f.path, 0, &zero, 8);
  EXPECT_TRUE(Segment::remove(Location::file(f.path)));
  { Segment::create(Location::file(f.path), replace); }
  { Segment::create(Location::file(f.path), replace); }
  EXPECT_NE(std::string(error_of([&] { Segment::create(Location::file(f.path), TempSegment::small_options()); }).what())
                .find("already exists (remove it with `ringbus rm`, or open it)"),
            std::string::npos);
  EXPECT_TRUE(Segment::remove(Location::file(f.path)));
  EXPECT_FALSE(Segment::remove(Location::file(f.path)));
}

TEST(Segment, OtherMajorVersionIsRefused) {
  FileGuard f{temp_path()};
  { Segment::create(Location::file(f.path), TempSegment::small_options()); }
  const std::uint32_t v = layout::kVersionMajor + 1;
  patch_file(f.path, 8, &v, 4);
  const Error e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::version_mismatch);
  EXPECT_NE(std::string(e.what()).find(std::to_string(v) + "."), std::string::npos) << e.what();
}

TEST(Segment, CorruptHeaderIsRefused) {
  FileGuard f{temp_path()};
  { Segment::create(Location::file(f.path), TempSegment::small_options()); }
  const std::uint32_t huge = 1u << 30;
  patch_file(f.path, offsetof(layout::SegmentHeader, max_event), &huge, 4);
  Error e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::corrupt);
  EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();

  // With a matching checksum the sizes themselves are checked.
  fix_checksum(f.path);
  e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::corrupt);
  EXPECT_NE(std::string(e.what()).find("max_event"), std::string::npos) << e.what();
}

// Header fields that agree with the checksum (written by a foreign or damaged writer)
// but not with each other or with the file: each refusal names the field.
TEST(Segment, InconsistentHeaderFieldsAreRefused) {
  FileGuard f{temp_path()};
  struct Case {
    std::size_t offset;
    std::uint64_t value;
    std::size_t bytes;
    std::string names;
  };
  const std::vector<Case> cases = {
      {offsetof(layout::SegmentHeader, header_size), 1000, 4, "header size 1000"},
      {offsetof(layout::SegmentHeader, log_capacity_shift), 3, 4, "capacity shift"},
      {offsetof(layout::SegmentHeader, max_workers), 1, 4, "worker count"},
  };
  for (const Case& c : cases) {
    { Segment::create(Location::file(f.path), {.capacity = 64 * 1024, .max_event = 128, .if_exists = SegmentOptions::IfExists::replace}); }
    patch_file(f.path, c.offset, &c.value, c.bytes);
    fix_checksum(f.path);
    const Error e = error_of([&] { Segment::open(Location::file(f.path)); });
    EXPECT_EQ(e.code(), Errc::corrupt) << c.names;
    EXPECT_NE(std::string(e.what()).find(c.names), std::string::npos) << e.what();
  }
  // A total size that does not follow from the sizes.
  { Segment::create(Location::file(f.path), {.capacity = 64 * 1024, .max_event = 128, .if_exists = SegmentOptions::IfExists::replace}); }
  const auto total = read_file_at<std::uint64_t>(f.path, offsetof(layout::SegmentHeader, total_size));
  const std::uint64_t bigger = total + layout::kPage;
  patch_file(f.path, offsetof(layout::SegmentHeader, total_size), &bigger, 8);
  fix_checksum(f.path);
  Error e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::corrupt);
  EXPECT_NE(std::string(e.what()).find("total size " + std::to_string(bigger)), std::string::npos) << e.what();
  // A file longer than its header says: not truncated, but not what was created either.
  { Segment::create(Location::file(f.path), {.capacity = 64 * 1024, .max_event = 128, .if_exists = SegmentOptions::IfExists::replace}); }
  ASSERT_EQ(::truncate(f.path.c_str(), static_cast<off_t>(total + layout::kPage)), 0);
  e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::corrupt);
  EXPECT_NE(std::string(e.what()).find("is " + std::to_string(total + layout::kPage) + " bytes but its header says " +
                                        std::to_string(total)),
            std::string::npos)
      << e.what();
}

TEST(Segment, TamperedRegionTableIsRefused) {
  FileGuard f{temp_path()};
  { Segment::create(Location::file(f.path), TempSegment::small_options()); }
  // Point the log region somewhere else (e.g. over the producer slots).
  const Segment probe = Segment::open(Location::file(f.path));
  std::uint32_t log_index = 0;
  while (probe.header().regions[log_index].kind != static_cast<std::uint32_t>(layout::RegionKind::log)) ++log_index;
  const std::size_t log_offset_field = offsetof(layout::SegmentHeader, regions) +
                                       log_index * sizeof(layout::RegionDesc) + offsetof(layout::RegionDesc, offset);
  const std::uint64_t bogus = layout::kPage;
  patch_file(f.path, log_offset_field, &bogus, 8);
  fix_checksum(f.path);
  const Error e = error_of([&] { Segment::open(Location::file(f.path)); });
  EXPECT_EQ(e.code(), Errc::corrupt);
  EXPECT_NE(std::string(e.what()).find("region table"), std::string::npos) << e.what();
}

// Found by fuzz_attach: a tail near 2^64 made `position + capacity` wrap, and a tail
// reader resynchronised to the same position forever. Positions above 2^62 are corrupt.
TEST(Segment, ImpossibleTailIsRefusedOnAttachAndBeforeUse) {
  FileGuard f{temp_path()};
  std::size_t tail_offset = 0;
  {
    const Segment seg = Segment::create(Location::file(f.path), TempSegment::small_options());
    tail_offset = static_cast<std::size_t>(reinterpret_cast<const std::byte*>(&seg.refs().control->tail) -
                                           seg.refs().base);
  }
  for (const std::uint64_t bad : {~std::uint64_t{0} - 8207, ~std::uint64_t{0} - 65535, layout::kMaxPosition + 8,
                                  std::uint64_t{12}}) {
    patch_file(f.path, tail_offset, &bad, 8);
    const Error e = error_of([&] { Segment::open(Location::file(f.path)); });
    EXPECT_EQ(e.code(), Errc::corrupt) << bad;
    EXPECT_NE(std::string(e.what()).find("tail " + std::to_string(bad)), std::string::npos) << e.what();
  }

  // The same tail written after attach (shared memory changes under a reader): the
  // reader and a producer report it instead of looping or writing.
  const std::uint64_t zero = 0;
  patch_file(f.path, tail_offset, &zero, 8);
  const Segment seg = Segment::open(Location::file(f.path));
  TailReader tail = TailReader::open(seg, TailStart::earliest);
  Producer p = Producer::attach(seg);
  const std::uint64_t v = 1;
  ASSERT_EQ(p.try_publish(1, 1, std::as_bytes(std::span(&v, 1))), Status::ok);
  Event e;
  ASSERT_TRUE(tail.try_next(e));
  seg.refs().control->tail.store(~std::uint64_t{0} - 65535);
  EXPECT_EQ(error_of([&] { (void)tail.try_next(e); }).code(), Errc::corrupt);
  EXPECT_EQ(p.try_publish(1, 1, std::as_bytes(std::span(&v, 1))), Status::corrupt);
  EXPECT_EQ(error_of([&] { (void)TailReader::open(seg, TailStart::end); }).code(), Errc::corrupt);
  EXPECT_EQ(error_of([&] { (void)TailReader::open_at(seg, layout::kMaxPosition + 8); }).code(), Errc::invalid_options);
}

// Child: "open-in-new-pid-namespace SEGMENT FD": forks a process into a pid namespace
// of its own (where it is pid 1), which opens SEGMENT to write and then read-only, and
// writes to FD what each did; or "\001" and why where it may not (no CAP_SYS_ADMIN).
const test::ChildRole open_in_new_pid_namespace_role("open-in-new-pid-namespace", [](const std::vector<std::string>& a) {
  const int fd = std::stoi(a.at(1));
  auto say = [&](const std::string& out) {
    return ::write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size()) ? 0 : 1;
  };
  if (::unshare(CLONE_NEWPID) != 0) return say("\001cannot make a pid namespace: " + std::string(std::strerror(errno)));
  const pid_t pid = ::fork();
  if (pid < 0) return say("\001cannot fork: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    std::string out = "pid " + std::to_string(::getpid()) + "|";
    const Location where = Location::parse(a.at(0));
    try {
      (void)Segment::open(where);
      out += "opened";
    } catch (const Error& e) {
      out += std::string(to_string(e.code())) + "|" + e.what();
    }
    try {
      const Segment ro = Segment::open(where, {.read_only = true});
      out += "|read-only: published " + std::to_string(read_stats(ro).published);
    } catch (const Error& e) {
      out += "|read-only: " + std::string(e.what());
    }
    ::_exit(say(out));
  }
  // _exit: a leak check at exit (ASan) would clone a thread into the namespace, whose
  // first process has ended, and fail.
  ::_exit(test::reap(pid));
});

// Child: "create-in-full-tmpfs DIR SEGMENT FD": mounts a 1 MiB tmpfs over DIR in a mount
// namespace of its own (the host's DIR is untouched), creates a 4 MiB segment SEGMENT
// (a shared-memory name, or a path) and writes to descriptor FD the error's code and
// message, then the names left in DIR; or "\001" and why where it may not mount (not
// root, no CAP_SYS_ADMIN).
const test::ChildRole create_in_full_tmpfs_role("create-in-full-tmpfs", [](const std::vector<std::string>& a) {
  std::string out;
  if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      ::mount("tmpfs", a.at(0).c_str(), "tmpfs", 0, "size=1m,mode=1777") != 0) {
    out = "\001cannot mount a tmpfs: " + std::string(std::strerror(errno));
  } else {
    try {
      (void)Segment::create(Location::parse(a.at(1)), {.capacity = 4u << 20});
      out = "created";
    } catch (const Error& e) {
      out = std::string(to_string(e.code())) + "|" + e.what();
    }
    out += "|left:";
    for (const auto& entry : std::filesystem::directory_iterator(a.at(0))) out += " " + entry.path().filename().string();
  }
  const int fd = std::stoi(a.at(2));
  return ::write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size()) ? 0 : 1;
});

// What create-in-full-tmpfs wrote, or nullopt where it could not mount.
std::optional<std::string> create_in_full_tmpfs(const std::string& dir, const std::string& segment) {
  int fds[2];
  if (::pipe(fds) != 0) return std::nullopt;
  const pid_t pid = test::spawn_child("create-in-full-tmpfs", {dir, segment, std::to_string(fds[1])});
  ::close(fds[1]);
  const std::string out = test::read_to_end(fds[0]);
  ::close(fds[0]);
  EXPECT_EQ(test::reap(pid), 0) << out;
  if (out.starts_with('\001')) {
    std::fprintf(stderr, "%s\n", out.c_str() + 1);
    return std::nullopt;
  }
  return out;
}

// A segment that does not fit where it is created (here /dev/shm, a full tmpfs, and a
// file on one) is refused by create(), naming the bytes it needs and, for /dev/shm,
// where to look, and leaves no half-made segment behind: a ring whose pages were never
// reserved would instead kill its first producer with SIGBUS partway through the ring.
TEST(Segment, ACreateThatDoesNotFitIsRefusedAtOnceAndLeavesNothing) {
  const std::string name = unique_name("full");
  const auto shm = create_in_full_tmpfs("/dev/shm", name);
  if (!shm) GTEST_SKIP() << "this machine does not let the test mount a tmpfs";
  EXPECT_TRUE(shm->starts_with("no_space|segment shm:" + name + ": cannot reserve ")) << *shm;
  EXPECT_NE(shm->find(" bytes (No space left on device); see `df -h /dev/shm`|"), std::string::npos) << *shm;
  EXPECT_TRUE(shm->ends_with("|left:")) << *shm;

  const std::string dir = "/tmp/" + unique_name("fullfs");
  ASSERT_TRUE(std::filesystem::create_directory(dir));
  const std::string path = dir + "/events.seg";
  const auto file = create_in_full_tmpfs(dir, path);
  std::filesystem::remove(dir);
  ASSERT_TRUE(file.has_value());
  EXPECT_TRUE(file->starts_with("no_space|segment " + path + ": cannot reserve ")) << *file;
  EXPECT_EQ(file->find("df -h"), std::string::npos) << *file;
  EXPECT_TRUE(file->ends_with(" bytes (No space left on device)|left:")) << *file;
}

TEST(Segment, FileBackedSegmentKeepsItsEventsAcrossReopen) {
  FileGuard f{temp_path()};
  {
    const Segment seg = Segment::create(Location::file(f.path), TempSegment::small_options());
    Producer p = Producer::attach(seg);
    for (std::uint64_t i = 0; i < 10; ++i) {
      ASSERT_EQ(p.try_publish(i + 1, 7, std::as_bytes(std::span(&i, 1))), Status::ok);
    }
  }
  const Segment seg = Segment::open(Location::file(f.path));
  TailReader tail = TailReader::open(seg, TailStart::earliest);
  Event e;
  for (std::uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(tail.try_next(e));
    std::uint64_t v = 0;
    std::memcpy(&v, e.payload().data(), 8);
    EXPECT_EQ(v, i);
    EXPECT_EQ(e.key(), i + 1);
    EXPECT_EQ(e.key_seq(), 1u);
  }
  EXPECT_FALSE(tail.try_next(e));
}

// Attaching reads every page once unless told not to (OpenOptions::touch_pages); either
// way it changes nothing: a segment attached while it holds events over many pages
// reads them back whole, and publishes through either attachment land in the same log.
TEST(Segment, AttachingWithOrWithoutTouchingPagesChangesNothing) {
  TempSegment t;
  Producer p = Producer::attach(t.segment());
  const std::string body(1000, 'x');
  constexpr std::uint64_t kFirst = 40;  // about ten pages of records in the 64 KiB ring
  for (std::uint64_t i = 0; i < kFirst; ++i) {
    ASSERT_EQ(p.try_publish(i + 1, 7, std::as_bytes(std::span(body.data(), body.size()))), Status::ok);
  }
  OpenOptions untouched;
  untouched.touch_pages = false;
  const Segment touched_seg = Segment::open(t.location());
  const Segment untouched_seg = Segment::open(t.location(), untouched);
  Producer late = Producer::attach(untouched_seg);
  ASSERT_EQ(late.try_publish(kFirst + 1, 7, std::as_bytes(std::span(body.data(), body.size()))), Status::ok);
  for (const Segment* seg : {&touched_seg, &untouched_seg}) {
    TailReader tail = TailReader::open(*seg, TailStart::earliest);
    Event e;
    for (std::uint64_t i = 0; i <= kFirst; ++i) {
      ASSERT_TRUE(tail.try_next(e)) << i;
      EXPECT_EQ(e.key(), i + 1);
      EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(e.payload().data()), e.payload().size()), body);
    }
    EXPECT_FALSE(tail.try_next(e));
  }
}

TEST(Segment, OpenDuringCreationNeverSeesAHalfWrittenHeader) {
  for (int round = 0; round < 50; ++round) {
    const Location loc = Location::shm(unique_name("race"));
    std::atomic<bool> go{false};
    std::thread opener([&] {
      while (!go.load()) {
      }
      for (;;) {
        try {
          const Segment s = Segment::open(loc);
          EXPECT_EQ(s.capacity(), 64u * 1024);
          return;
        } catch (const Error& e) {
          ASSERT_EQ(e.code(), Errc::not_found) << e.what();
        }
      }
    });
    go.store(true);
    const Segment created = Segment::create(loc, TempSegment::small_options());
    opener.join();
    Segment::remove(loc);
  }
}

}  // namespace
}  // namespace ringbus
