// A lock in shared memory for rare structural changes (dead-letter rings, the schema
// registry): a word holding the pid of the process changing the structure, its start
// time beside it. Taken by CAS; taken over from a dead holder, or after the word has
// not changed for kStaleLockNs (changes take microseconds; only damaged memory naming
// an unrelated live process holds it longer).
#pragma once

#include <atomic>
#include <cstdint>

namespace ringbus::detail {

inline constexpr std::uint64_t kStaleLockNs = 2'000'000'000;

class RobustLock {
 public:
  RobustLock(std::atomic<std::uint64_t>& word, std::atomic<std::uint64_t>& start) noexcept;
  ~RobustLock();
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;

 private:
  std::atomic<std::uint64_t>& word_;
  std::atomic<std::uint64_t>& start_;
};

}  // namespace ringbus::detail
