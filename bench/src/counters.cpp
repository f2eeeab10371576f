#include "ringbus_bench/counters.hpp"

#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringbus::bench {
namespace {

int perf_event_open(perf_event_attr& attr, int group_fd) noexcept {
  // pid 0, cpu -1: the calling thread, on any CPU.
  return static_cast<int>(::syscall(SYS_perf_event_open, &attr, 0, -1, group_fd, PERF_FLAG_FD_CLOEXEC));
}

// What read() of a group leader returns with this read_format.
struct GroupRead {
  std::uint64_t nr;
  std::uint64_t time_enabled;
  std::uint64_t time_running;
  std::uint64_t values[kMaxCounters];
};

}  // namespace

ThreadCounters::ThreadCounters(std::span<const CounterSpec> specs) {
  if (specs.empty() || specs.size() > kMaxCounters) {
    why_ = "between 1 and " + std::to_string(kMaxCounters) + " counters a group";
    return;
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    perf_event_attr attr{};
    attr.size = sizeof attr;
    attr.type = specs[i].type;
    attr.config = specs[i].config;
    attr.disabled = i == 0 ? 1 : 0;  // members follow their leader
    attr.exclude_kernel = 1;         // what perf_event_paranoid 2 allows a user
    attr.exclude_hv = 1;
    attr.read_format = PERF_FORMAT_GROUP | PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
    const int fd = perf_event_open(attr, i == 0 ? -1 : fd_[0]);
    if (fd < 0) {
      why_ = std::string(specs[i].name) + ": perf_event_open: " + std::strerror(errno);
      close();
      return;
    }
    fd_[i] = fd;
  }
  count_ = specs.size();
}

ThreadCounters::~ThreadCounters() { close(); }

void ThreadCounters::close() noexcept {
  for (int& fd : fd_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  count_ = 0;
}

void ThreadCounters::start() noexcept {
  if (!ok()) return;
  ::ioctl(fd_[0], PERF_EVENT_IOC_RESET, PERF_IOC_FLAG_GROUP);
  ::ioctl(fd_[0], PERF_EVENT_IOC_ENABLE, PERF_IOC_FLAG_GROUP);
}

Counts ThreadCounters::stop() noexcept {
  Counts out{};
  if (!ok()) return out;
  ::ioctl(fd_[0], PERF_EVENT_IOC_DISABLE, PERF_IOC_FLAG_GROUP);
  GroupRead r{};
  const ssize_t want = static_cast<ssize_t>(3 + count_) * static_cast<ssize_t>(sizeof(std::uint64_t));
  if (::read(fd_[0], &r, sizeof r) < want || r.nr != count_ || r.time_running == 0) return out;
  for (std::size_t i = 0; i < count_; ++i) {
    out[i] = r.time_running >= r.time_enabled
                 ? r.values[i]
                 : static_cast<std::uint64_t>(static_cast<double>(r.values[i]) * static_cast<double>(r.time_enabled) /
                                              static_cast<double>(r.time_running));
  }
  return out;
}

std::string hardware_counters_unavailable() {
  const ThreadCounters probe(kHardwareCounters);
  return probe.why();
}

}  // namespace ringbus::bench
