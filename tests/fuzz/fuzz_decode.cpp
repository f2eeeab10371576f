// libFuzzer target: arbitrary bytes as the log (and tail and cursor) of a valid segment.
// Readers (a group's workers, a tail reader) must reject what cannot be a record with an
// Error and never read outside the ring.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz_common.hpp"
#include "ringbus/detail/groups.hpp"

namespace {

const ringbus::Segment& segment() {
  // Anonymous: nothing in /dev/shm at any point, however the fuzzer ends.
  static const ringbus::Segment seg =
      ringbus::Segment::create(ringbus::Location::anonymous("ringbus-fuzz-decode"), ringbus::fuzz::seed_options());
  return seg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ringbus::Segment& seg = segment();
  const auto& r = seg.refs();
  if (size < 16) return 0;
  std::uint64_t tail = 0, cursor = 0;
  std::memcpy(&tail, data, 8);
  std::memcpy(&cursor, data + 8, 8);
  tail %= 4 * r.capacity;
  cursor = (cursor % (tail + 1)) & ~std::uint64_t{7};
  std::memset(r.log, 0, r.capacity);
  std::memcpy(r.log, data + 16, std::min<std::size_t>(size - 16, r.capacity));
  r.control->tail.store(tail);
  // A fresh group whose workers start at `cursor`: register it, release it, move its
  // cursors, join again.
  ringbus::ConsumerGroup::remove(seg, "decode");
  try {
    ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(seg, "decode", {.workers = 2});
  } catch (const ringbus::Error&) {  // e.g. a tail that cannot be a record position
    return 0;
  }
  for (std::uint32_t i = 0; i < r.max_groups; ++i) {
    if (ringbus::detail::group_name(r.groups[i]) != "decode") continue;
    for (std::uint32_t w = 0; w < 2; ++w) r.groups[i].worker[w].cursor.store(cursor);
  }
  try {
    ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(seg, "decode", {.workers = 2, .deliver_voids = true});
    std::uint64_t sum = 0;
    for (std::uint32_t w = 0; w < 2; ++w) {
      g.worker(w).poll(
          [&](const ringbus::Event& e) {
            for (std::byte b : e.payload()) sum += static_cast<std::uint8_t>(b);
          },
          256);
    }
  } catch (const ringbus::Error&) {
  }
  try {
    ringbus::TailReader t = ringbus::TailReader::open_at(seg, cursor);
    ringbus::Event e;
    for (int i = 0; i < 256 && t.try_next(e); ++i) {
      if (!ringbus::is_json(ringbus::event_json(e, nullptr))) {  // what `ringbus tail` prints
        std::fprintf(stderr, "fuzz_decode: a record printed as a line that is not JSON\n");
        std::abort();
      }
    }
  } catch (const ringbus::Error&) {
  }
  return 0;
}
