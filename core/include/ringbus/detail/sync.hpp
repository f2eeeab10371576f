// Waiting and waking across processes: futexes on words in the segment, and the
// asymmetric fence that lets producers skip a full barrier on every commit.
//
// The park protocol is a Dekker pair. The fast side (a producer after committing, a
// consumer after advancing its cursor) stores, then loads the waiter count. The slow
// side (a thread about to sleep) increments the waiter count, then re-checks the
// condition, then sleeps. Without a store-load fence on both sides either may miss
// the other. The fast side pays only a compiler fence (light_fence) because the slow
// side runs membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) (heavy_fence), which forces a
// full barrier on every CPU running a registered process. Where membarrier is not
// available both sides fall back to seq_cst fences.
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ringbus::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Asks for the cache line at p in a state that can be written: the ownership request a
// store would make, without the store. A hint with no effect on memory or ordering.
// x86-64: PREFETCHW (processors without it execute the encoding as a no-op).
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

// Registers this process for membarrier global-expedited fences; idempotent.
// Returns true when the asymmetric protocol is in force for this process.
bool register_fast_side() noexcept;

// True once register_fast_side() succeeded in this process.
bool asymmetric_fences() noexcept;

// Fast side: a compiler fence when the slow side can use membarrier, else seq_cst.
inline void light_fence() noexcept {
  if (asymmetric_fences()) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

// Slow side: membarrier when available, else a seq_cst fence.
void heavy_fence() noexcept;

// Futex on a 32-bit word in shared memory (never FUTEX_PRIVATE: waiters and wakers
// may be different processes). Waits while *word == expected, at most timeout_ns.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t timeout_ns) noexcept;
void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept;

// Wakes every waiter parked on the futex word `seq`, whatever the waiter count says: bumps
// it (release: what the caller stored before, a stop flag say, is seen by the woken), so
// that a park not yet begun returns at once, and makes the system call. Async-signal-safe:
// errno is kept for the code a signal handler interrupted.
void wake_all(std::atomic<std::uint32_t>& seq) noexcept;

}  // namespace ringbus::detail
