// Process identity and liveness, for owners recorded in shared memory.
//
// An owner is (pid, start time in clock ticks since boot). A pid alone is not enough:
// pids are recycled, and a recycled pid must not keep a dead owner's claim alive.
// All processes sharing a segment must share a pid namespace (documented in DESIGN.md).
#pragma once

#include <cstdint>

namespace ringbus::detail {

struct ProcessId {
  std::uint32_t pid = 0;
  std::uint64_t start_ticks = 0;
  // The inode of /proc/self/ns/pid (0 if it cannot be read). A pid means a process only
  // within its pid namespace: liveness checks by pid need every process of a segment in
  // one (DESIGN.md section 9).
  std::uint64_t pid_namespace = 0;
};

// This process, computed once and again after fork().
const ProcessId& self_process() noexcept;

// Whether a segment created in pid namespace `created_in` (SegmentHeader::pid_namespace)
// belongs to another namespace than this process's; false where either is unknown (0).
inline bool other_pid_namespace(std::uint64_t created_in) noexcept {
  const std::uint64_t own = self_process().pid_namespace;
  return created_in != 0 && own != 0 && created_in != own;
}

// Whether a handle made by process `owner` is here only as a copy a forked child
// inherited: its slots are the parent's, which goes on using them, so the copy lets go
// of them without writing to the segment (DESIGN.md, "Handles across fork"). Calls
// getpid() only: safe in the child of a multithreaded parent.
bool inherited_from(std::uint32_t owner) noexcept;

enum class Liveness : std::uint8_t { alive, dead, unknown };

// `start_ticks` == 0 means "not recorded": only the pid is checked. A zombie (killed
// but not yet reaped) counts as dead: it can never run again.
Liveness process_liveness(std::uint32_t pid, std::uint64_t start_ticks) noexcept;

inline bool process_dead(std::uint32_t pid, std::uint64_t start_ticks) noexcept {
  return process_liveness(pid, start_ticks) == Liveness::dead;
}

std::uint64_t realtime_ns() noexcept;
std::uint64_t monotonic_ns() noexcept;

}  // namespace ringbus::detail
