// libFuzzer target: arbitrary bytes as a segment file. Segment::open must refuse what
// it cannot validate with an Error; what it accepts must be safe to use.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ringbus/hash.hpp"
#include "ringbus/layout.hpp"

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/dev/shm/ringbus-fuzz-attach-" + std::to_string(::getpid());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 0;
  ::fchmod(fd, 0600);
  // The header checksum is recomputed over the input, so that mutations reach the
  // validation of every header field and region rather than stopping at the checksum
  // (a wrong checksum is refused: tests/unit/segment_test.cpp).
  std::vector<std::uint8_t> bytes(data, data + size);
  if (size >= ringbus::layout::kChecksumEnd) {
    const std::uint64_t sum = ringbus::fnv1a(bytes.data() + ringbus::layout::kChecksumBegin,
                                             ringbus::layout::kChecksumEnd - ringbus::layout::kChecksumBegin);
    std::memcpy(bytes.data() + offsetof(ringbus::layout::SegmentHeader, checksum), &sum, sizeof sum);
  }
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, bytes.data() + done, size - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  try {
    const ringbus::Segment seg =
        ringbus::Segment::open(ringbus::Location::file(path), {.init_timeout = std::chrono::milliseconds(0)});
    // Lock words naming a live process are taken over after 2 s (tests/unit/lock_test.cpp
    // covers that); here they would only slow the fuzzer down.
    const auto& r = seg.refs();
    if (r.registry != nullptr) r.registry->lock.store(0);
    for (std::uint32_t g = 0; r.dlq != nullptr && g < r.max_groups; ++g) r.dlq_control(g)->lock.store(0);
    ringbus::fuzz::exercise(seg);
  } catch (const ringbus::Error&) {
  }
  ::unlink(path.c_str());
  return 0;
}
