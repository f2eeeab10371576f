#include "support.hpp"

#include "process_support.hpp"
#include "ringbus/consumer.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>

#include <condition_variable>
#include <map>
#include <vector>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <fstream>
#include <sstream>
#include <thread>

namespace ringbus::test {
namespace {

std::atomic<std::uint64_t> g_counter{0};

class Watchdog : public ::testing::EmptyTestEventListener {
 public:
  Watchdog() {
    if (const char* env = std::getenv("RINGBUS_TEST_TIMEOUT")) base_ = std::chrono::seconds(std::atoll(env));
    thread_ = std::thread([this] { watch(); });
  }
  ~Watchdog() override {
    {
      std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::lock_guard lock(mu_);
    name_ = std::string(info.test_suite_name()) + "." + info.name();
    scale_ = 1.0;
    deadline_ = std::chrono::steady_clock::now() + base_;
    armed_ = true;
    cv_.notify_all();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard lock(mu_);
    armed_ = false;
  }
  void scale(double s) {
    std::lock_guard lock(mu_);
    deadline_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(base_ * (s - scale_));
    scale_ = s;
  }

 private:
  void watch() {
    std::unique_lock lock(mu_);
    while (!quit_) {
      if (armed_ && std::chrono::steady_clock::now() > deadline_) {
        std::fprintf(stderr, "\nwatchdog: test %s did not finish within its deadline; aborting\n", name_.c_str());
        std::fflush(stderr);
        std::abort();
      }
      cv_.wait_for(lock, std::chrono::milliseconds(200));
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  std::string name_;
  std::chrono::seconds base_{300};
  double scale_ = 1.0;
  std::chrono::steady_clock::time_point deadline_{};
  bool armed_ = false;
  bool quit_ = false;
};

Watchdog* g_watchdog = nullptr;

}  // namespace

std::string unique_name(std::string_view prefix) {
  // The pid alone is not enough: a process killed before removing its names (by a test,
  // a watchdog or a CI step's timeout) leaves them behind for a later process that is
  // given the same pid. A random token drawn once per process sets the two apart.
  static const std::string token = [] {
    std::random_device rd;
    char buf[9];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(rd()));
    return std::string(buf);
  }();
  return std::string(prefix) + "-" + std::to_string(::getpid()) + "-" + token + "-" +
         std::to_string(g_counter.fetch_add(1));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string read_to_end(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  return out;
}

SegmentOptions TempSegment::small_options() {
  SegmentOptions o;
  o.capacity = 64 * 1024;
  o.max_event = 4096;
  o.max_producers = 16;
  o.max_groups = 8;
  o.key_slots = 1024;
  return o;
}

TempSegment::TempSegment(const SegmentOptions& options, std::string_view prefix)
    : loc_(Location::shm(unique_name(prefix))), seg_(Segment::create(loc_, options)) {}

TempSegment::~TempSegment() { Segment::remove(loc_); }

void set_deadline_scale(double scale) {
  if (g_watchdog != nullptr) g_watchdog->scale(scale);
}

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
    }
  }
  return cpus;
}

BusyCpu::BusyCpu(int spinners) {
  const std::vector<int> cpus = allowed_cpus();
  if (!cpus.empty()) cpu_ = cpus.back();
  for (int i = 0; i < spinners; ++i) {
    threads_.emplace_back([this] {
      pin_this_thread(cpu_);
      while (!stop_.load(std::memory_order_relaxed)) {
      }
    });
  }
}

BusyCpu::~BusyCpu() {
  stop_.store(true);
  for (std::thread& t : threads_) t.join();
}

}  // namespace ringbus::test

namespace ringbus::test {
namespace {

std::map<std::string, ChildMain>& roles() {
  static std::map<std::string, ChildMain> r;
  return r;
}

}  // namespace

ChildRole::ChildRole(const char* name, ChildMain main) { roles()[name] = main; }

pid_t spawn_child(const std::string& role, const std::vector<std::string>& args) {
  std::vector<std::string> argv_s{"ringbus-test-child", "--ringbus-child", role};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // A child outlives no test run: killed with its parent (by the watchdog, or by hand),
    // it would go on looping, taking a CPU from whatever runs next (a benchmark).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before the prctl
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace ringbus::test

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--ringbus-child") {
    const auto it = ringbus::test::roles().find(argv[2]);
    if (it == ringbus::test::roles().end()) return 126;
    try {
      return it->second(std::vector<std::string>(argv + 3, argv + argc));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %s: %s\n", argv[2], e.what());
      return 3;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  auto* dog = new ringbus::test::Watchdog();
  ringbus::test::g_watchdog = dog;
  ::testing::UnitTest::GetInstance()->listeners().Append(dog);  // gtest owns it now
  return RUN_ALL_TESTS();
}
