#include "ringbus/detail/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace ringbus::detail {
namespace {

struct StatFields {
  bool found = false;
  char state = '?';
  std::uint64_t start_ticks = 0;
};

// Reads state (field 3) and starttime (field 22) of /proc/<pid>/stat. The command
// name (field 2) may hold spaces and parentheses, so parsing starts after the last ')'.
StatFields read_stat(std::uint32_t pid) noexcept {
  StatFields out;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return out;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return out;
  ++p;
  int field = 2;
  while (*p != '\0') {
    while (*p == ' ') ++p;
    if (*p == '\0') break;
    ++field;
    if (field == 3) out.state = *p;
    if (field == 22) {
      out.start_ticks = std::strtoull(p, nullptr, 10);
      out.found = true;
      break;
    }
    while (*p != ' ' && *p != '\0') ++p;
  }
  return out;
}

std::mutex g_self_mutex;
ProcessId g_self;

}  // namespace

const ProcessId& self_process() noexcept {
  const auto pid = static_cast<std::uint32_t>(::getpid());
  std::lock_guard lock(g_self_mutex);
  if (g_self.pid != pid) {
    g_self.pid = pid;
    g_self.start_ticks = read_stat(pid).start_ticks;
    struct stat ns {};
    g_self.pid_namespace = ::stat("/proc/self/ns/pid", &ns) == 0 ? ns.st_ino : 0;
  }
  return g_self;
}

Liveness process_liveness(std::uint32_t pid, std::uint64_t start_ticks) noexcept {
  if (pid == 0) return Liveness::dead;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return Liveness::dead;
  const StatFields st = read_stat(pid);
  if (!st.found) {
    // Gone between the two checks, or /proc is not mounted: ask kill() once more.
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return Liveness::dead;
    return Liveness::unknown;
  }
  if (st.state == 'Z' || st.state == 'X') return Liveness::dead;
  if (start_ticks != 0 && st.start_ticks != start_ticks) return Liveness::dead;  // pid recycled
  return Liveness::alive;
}

bool inherited_from(std::uint32_t owner) noexcept { return static_cast<std::uint32_t>(::getpid()) != owner; }

std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

}  // namespace ringbus::detail
