// Helpers for tests that fork producers and consumers onto one segment.
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

#include "ringbus/hash.hpp"

namespace ringbus::test {

// What forked processes report back: a MAP_SHARED anonymous mapping made before fork.
template <class T>
class SharedBlock {
 public:
  SharedBlock() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the shared results block failed");
    t_ = new (p) T();
  }
  ~SharedBlock() { ::munmap(t_, sizeof(T)); }
  SharedBlock(const SharedBlock&) = delete;
  SharedBlock& operator=(const SharedBlock&) = delete;
  T* operator->() const { return t_; }
  T& operator*() const { return *t_; }

 private:
  T* t_;
};

// Forks; the child runs `f` and exits 0, or 3 if it threw. Never returns in the child.
template <class F>
pid_t spawn(F&& f) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 0;
    try {
      f();
    } catch (...) {
      code = 3;
    }
    ::_exit(code);
  }
  return pid;
}

// Waits for `pid`; returns its exit code, or 128 + signal.
inline int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
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
