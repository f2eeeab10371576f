// Helpers for tests that run producers and consumers in other processes on one segment.
//
// Children are started by re-executing the test binary (fork + exec of /proc/self/exe
// with --ringbus-child ROLE ARGS...), so that each is a fresh process: as separate
// programs would be, and as ThreadSanitizer needs (it does not follow a fork of a
// multithreaded process whose child then starts threads). What children report travels
// through a SharedBlock: a memfd the child maps by its descriptor number.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "ringbus/hash.hpp"

namespace ringbus::test {

// A block of shared memory (a memfd, inherited across exec) holding a T.
template <class T>
class SharedBlock {
 public:
  SharedBlock() {
    fd_ = ::memfd_create("ringbus-test-results", 0);
    if (fd_ < 0 || ::ftruncate(fd_, sizeof(T)) != 0) throw std::runtime_error("memfd for shared results failed");
    map();
    new (t_) T();
  }
  // In a child: maps the block the parent passed as descriptor `fd`.
  explicit SharedBlock(int fd) : fd_(fd) { map(); }
  ~SharedBlock() {
    ::munmap(t_, sizeof(T));
    ::close(fd_);
  }
  SharedBlock(const SharedBlock&) = delete;
  SharedBlock& operator=(const SharedBlock&) = delete;
  T* operator->() const { return t_; }
  T& operator*() const { return *t_; }
  [[nodiscard]] std::string fd_arg() const { return std::to_string(fd_); }

 private:
  void map() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the shared results block failed");
    t_ = static_cast<T*>(p);
  }
  int fd_ = -1;
  T* t_ = nullptr;
};

// A child role: a function run in the child with its arguments; its return value is
// the child's exit code (an exception exits with 3).
using ChildMain = int (*)(const std::vector<std::string>& args);

struct ChildRole {
  ChildRole(const char* name, ChildMain main);
};

// Starts a child running `role` with `args`. The child inherits every open descriptor.
pid_t spawn_child(const std::string& role, const std::vector<std::string>& args);

// A wait status as an exit code, or 128 + signal.
inline int end_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Waits for `pid`; returns its exit code, or 128 + signal.
inline int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  return end_code(status);
}

// Identifies an event across processes: payload of every test event.
struct Stamp {
  std::uint32_t producer;
  std::uint32_t reserved;
  std::uint64_t n;
  std::uint64_t check;
};
inline std::uint64_t stamp_check(std::uint32_t producer, std::uint64_t n) {
  return mix64((std::uint64_t{producer} << 40) ^ n);
}

}  // namespace ringbus::test
