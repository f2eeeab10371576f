// libFuzzer target: arbitrary bytes as a segment file. Segment::open must refuse what
// it cannot validate with an Error; what it accepts must be safe to use.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/dev/shm/ringbus-fuzz-attach-" + std::to_string(::getpid());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 0;
  ::fchmod(fd, 0600);
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, data + done, size - done);
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
