// The robust lock of rare structural changes: taken over from a dead holder at once, and
// from a holder that never lets go (damaged memory naming a live process) after a bound.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/detail/process.hpp"
#include "ringbus/detail/robust_lock.hpp"
#include "support.hpp"

namespace ringbus {
namespace {

TEST(RobustLock, IsTakenOverFromADeadHolder) {
  std::atomic<std::uint64_t> word{0x3ffffff0}, start{0};  // a pid above pid_max: never alive
  { detail::RobustLock lock(word, start); }
  EXPECT_EQ(word.load(), 0u) << "released";
}

// The checks of the holder go by the clock: on a CPU where each yield lasts other
// threads' time slices, a dead holder is still found after the first yield, not after
// a count of them.
TEST(RobustLock, IsTakenOverFromADeadHolderAtOnceOnABusyCpu) {
  test::BusyCpu busy(2);
  std::atomic<std::uint64_t> word{0x3ffffff0}, start{0};
  std::chrono::nanoseconds took{0};
  std::thread t([&] {
    pin_this_thread(busy.cpu());
    const auto t0 = std::chrono::steady_clock::now();
    { detail::RobustLock lock(word, start); }
    took = std::chrono::steady_clock::now() - t0;
  });
  t.join();
  EXPECT_EQ(word.load(), 0u);
  // A few time slices of the spinning threads; counting 192 yields took about 0.5 s.
  EXPECT_LT(took, std::chrono::milliseconds(250));
}

TEST(ProcessLiveness, IsJudgedByPidAndStartTime) {
  const detail::ProcessId& me = detail::self_process();
  EXPECT_EQ(detail::process_liveness(me.pid, me.start_ticks), detail::Liveness::alive);
  EXPECT_EQ(detail::process_liveness(me.pid, 0), detail::Liveness::alive) << "start 0: the pid alone";
  EXPECT_EQ(detail::process_liveness(me.pid, me.start_ticks + 1), detail::Liveness::dead) << "a recycled pid";
  EXPECT_EQ(detail::process_liveness(0x3ffffff0, 0), detail::Liveness::dead);
  EXPECT_EQ(detail::process_liveness(0, 0), detail::Liveness::dead);
}

// A process that has exited but is not yet reaped still answers kill(pid, 0); it can
// never run again, so what it held is free.
TEST(ProcessLiveness, AnUnreapedChildIsDead) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);  // exited, not reaped
  ASSERT_EQ(::kill(child, 0), 0) << "a zombie still answers kill(pid, 0)";
  EXPECT_EQ(detail::process_liveness(static_cast<std::uint32_t>(child), 0), detail::Liveness::dead);
  ::waitpid(child, nullptr, 0);
}

// The start time is field 22 of /proc/<pid>/stat, counted after the command name, which
// may itself hold spaces and parentheses.
TEST(ProcessLiveness, ACommandNameWithParenthesesAndSpacesIsParsed) {
  int ticks_pipe[2];
  int done_pipe[2];
  ASSERT_EQ(::pipe(ticks_pipe), 0);
  ASSERT_EQ(::pipe(done_pipe), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ticks_pipe[0]);
    ::close(done_pipe[1]);
    // Read under the test binary's own name, then renamed.
    const std::uint64_t ticks = detail::self_process().start_ticks;
    ::prctl(PR_SET_NAME, "a) b c) 1 2 3", 0, 0, 0);
    if (::write(ticks_pipe[1], &ticks, sizeof ticks) != sizeof ticks) ::_exit(1);
    char c;
    (void)::read(done_pipe[0], &c, 1);  // until the parent closes it
    ::_exit(0);
  }
  ::close(ticks_pipe[1]);
  ::close(done_pipe[0]);
  std::uint64_t ticks = 0;
  ASSERT_EQ(::read(ticks_pipe[0], &ticks, sizeof ticks), static_cast<ssize_t>(sizeof ticks));
  ASSERT_NE(ticks, 0u);
  const auto pid = static_cast<std::uint32_t>(child);
  EXPECT_EQ(detail::process_liveness(pid, ticks), detail::Liveness::alive);
  EXPECT_EQ(detail::process_liveness(pid, ticks + 1), detail::Liveness::dead);
  ::close(done_pipe[1]);
  ::close(ticks_pipe[0]);
  ::waitpid(child, nullptr, 0);
}

TEST(RobustLock, IsTakenOverFromALiveProcessThatIsNotTheHolder) {
  // pid 1 is alive, but not with this start time: not the holder, taken over at once.
  std::atomic<std::uint64_t> word{1}, start{12345};
  { detail::RobustLock lock(word, start); }
  EXPECT_EQ(word.load(), 0u);
}

TEST(RobustLock, IsTakenOverFromAHolderThatNeverLetsGo) {
  // pid 1 with no start time: alive by pid; only the staleness bound frees it.
  std::atomic<std::uint64_t> word{1}, start{0};
  const auto t0 = detail::monotonic_ns();
  { detail::RobustLock lock(word, start); }
  EXPECT_GE(detail::monotonic_ns() - t0, detail::kStaleLockNs);
  EXPECT_EQ(word.load(), 0u);
}

TEST(RobustLock, ExcludesThreads) {
  std::atomic<std::uint64_t> word{0}, start{0};
  std::uint64_t counter = 0;  // plain: the lock must order the increments
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        detail::RobustLock lock(word, start);
        ++counter;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter, 40000u);
}

}  // namespace
}  // namespace ringbus
