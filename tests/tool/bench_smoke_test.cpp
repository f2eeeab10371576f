// Runs `ringbus bench --smoke --json` and checks the report: every system and scenario
// the schema names is there, percentiles are ordered, rates are positive. No timing
// is asserted: only that the benchmark completes and writes what bench/README.md says.
#include <gtest/gtest.h>
#include <simdjson.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <thread>
#include <vector>

#include "ringbus/segment.hpp"
#include "ringbus_bench/counters.hpp"
#include "support.hpp"

namespace {

// The tool, run through std::system under a time limit: a run that hangs ends with exit
// 124 instead of outliving the test (the watchdog aborts the test, not the shell's
// children, which would keep its output open).
const std::string kTool = "/usr/bin/timeout 240 " + std::string(RINGBUS_TOOL);

// The report a run wrote with --json, read and then removed.
class JsonReport {
 public:
  explicit JsonReport(const std::string& path) : text_(simdjson::padded_string::load(path)) {
    ::unlink(path.c_str());
    doc_ = parser_.iterate(text_);
  }
  simdjson::ondemand::object root() { return doc_.get_object(); }

 private:
  simdjson::ondemand::parser parser_;
  simdjson::padded_string text_;
  simdjson::ondemand::document doc_;
};

TEST(BenchSmoke, CompletesAndWritesValidJson) {
  const std::string json = "/tmp/" + ringbus::test::unique_name("bench") + ".json";
  const std::string cmd = kTool + " bench --smoke --no-progress --json " + json + " > /dev/null";
  const auto before = std::chrono::steady_clock::now();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - before).count();

  JsonReport report(json);
  simdjson::ondemand::object root = report.root();

  simdjson::ondemand::object machine = root["machine"].get_object();
  EXPECT_FALSE(std::string_view(machine["cpu_model"].get_string()).empty());
  EXPECT_GT(int64_t(machine["cores"].get_int64()), 0);
  EXPECT_FALSE(std::string_view(machine["compiler"].get_string()).empty());
  EXPECT_FALSE(std::string_view(machine["commit"].get_string()).empty());
  EXPECT_EQ(std::string_view(machine["date"].get_string()).size(), 20u);  // 2026-11-22T12:00:00Z
  const double step = machine["clock_step_ns"].get_double();  // a measured resolution, not a default
  EXPECT_GT(step, 0.0);
  EXPECT_LT(step, 1000.0);
  EXPECT_NO_THROW((void)bool(machine["clock_quantized"].get_bool()));  // present and a boolean
  // Whether the throughput cases counted cycles, instructions and cache misses, and if
  // not why: what this machine's kernel says of them.
  const bool counters = machine["hardware_counters"].get_bool();
  const std::string why(std::string_view(machine["hardware_counters_why"].get_string()));
  EXPECT_EQ(why, ringbus::bench::hardware_counters_unavailable());
  EXPECT_EQ(counters, why.empty()) << why;

  simdjson::ondemand::object config = root["config"].get_object();
  EXPECT_EQ(std::string_view(config["mode"].get_string()), "smoke");
  EXPECT_EQ(uint64_t(config["tput_capacity"].get_uint64()), ringbus::SegmentOptions{}.capacity);  // a segment's default

  simdjson::ondemand::object placement = root["placement"].get_object();
  const double start = placement["rtt_half_start_ns"].get_double();
  const double lowest = placement["rtt_half_min_ns"].get_double();
  const double highest = placement["rtt_half_max_ns"].get_double();
  EXPECT_GT(start, 0.0);
  EXPECT_LE(lowest, start);  // the range covers every probe
  EXPECT_GE(highest, start);
  EXPECT_EQ(bool(placement["moved"].get_bool()), highest > 1.5 * lowest);

  // How long each part took: both parts ran, within the whole run, within the process's
  // lifetime as timed from outside it.
  simdjson::ondemand::object elapsed = root["elapsed"].get_object();
  const double latency_s = elapsed["latency_s"].get_double();
  const double throughput_s = elapsed["throughput_s"].get_double();
  const double total_s = elapsed["total_s"].get_double();
  EXPECT_GT(latency_s, 0.0);
  EXPECT_GT(throughput_s, 0.0);
  EXPECT_LE(latency_s + throughput_s, total_s);
  EXPECT_LE(total_s, wall_s);

  std::set<std::string> systems, scenarios;
  std::set<std::pair<std::string, std::string>> pairs;  // (scenario, system)
  for (auto item : root["results"].get_array()) {
    simdjson::ondemand::object r = item.get_object();
    const std::string system(std::string_view(r["system"].get_string()));
    const std::string scenario(std::string_view(r["scenario"].get_string()));
    systems.insert(system);
    scenarios.insert(scenario);
    pairs.emplace(scenario, system);
    EXPECT_GT(int64_t(r["event_bytes"].get_int64()), 0);
    if (scenario.rfind("tput", 0) == 0) {
      EXPECT_GT(double(r["events_per_s"].get_double()), 0.0) << system << " " << scenario;
      EXPECT_GE(int64_t(r["producers"].get_int64()), 1);
      EXPECT_GE(int64_t(r["batch"].get_int64()), 1);
      const double probed = r["rtt_half_ns"].get_double();  // the placement it was measured in
      EXPECT_GE(probed, lowest) << system << " " << scenario;
      EXPECT_LE(probed, highest) << system << " " << scenario;
      const bool moved = r["moved"].get_bool();
      for (auto p : r["by_placement"].get_array()) {  // only when the measurements moved
        simdjson::ondemand::object o = p.get_object();
        EXPECT_TRUE(moved) << system << " " << scenario;
        const std::string_view where = o["placement"].get_string();
        EXPECT_TRUE(where == "near" || where == "far") << where;
        const double at = o["rtt_half_ns"].get_double();
        EXPECT_GE(at, lowest) << system << " " << scenario;
        EXPECT_LE(at, highest) << system << " " << scenario;
        EXPECT_GE(int64_t(o["measurements"].get_int64()), 1);
        EXPECT_GT(double(o["events_per_s"].get_double()), 0.0);
      }
      // Counts per event where the machine has counters; null where it has none.
      simdjson::ondemand::value per_event = r["per_event"].value();
      if (!counters) {
        EXPECT_TRUE(bool(per_event.is_null())) << system << " " << scenario;
        continue;
      }
      simdjson::ondemand::object sides = per_event.get_object();
      for (const char* side : {"producer", "consumer"}) {
        simdjson::ondemand::object c = sides[side].get_object();
        EXPECT_GT(double(c["cycles"].get_double()), 0.0) << system << " " << scenario << " " << side;
        EXPECT_GT(double(c["instructions"].get_double()), 0.0) << system << " " << scenario << " " << side;
        EXPECT_GE(double(c["cache_misses"].get_double()), 0.0) << system << " " << scenario << " " << side;
      }
      continue;
    }
    double last = 0;
    for (const char* field : {"p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns"}) {
      const double v = r[field].get_double();
      EXPECT_GT(v, 0.0) << system << " " << scenario << " " << field;
      EXPECT_GE(v, last) << system << " " << scenario << " " << field << " is below the previous percentile";
      last = v;
    }
    EXPECT_GT(int64_t(r["samples"].get_int64()), 0);
    const double over = r["over_1us_pct"].get_double();
    EXPECT_GE(over, 0.0) << system << " " << scenario;
    EXPECT_LE(over, 100.0) << system << " " << scenario;
    // Empty unless the vCPUs changed placement while the scenario ran (no timing is
    // asserted, so either is right); each entry is one placement's chunks.
    const bool moved = r["moved"].get_bool();
    std::set<std::string> seen;
    for (auto p : r["by_placement"].get_array()) {
      EXPECT_TRUE(moved) << system << " " << scenario << ": split by placement, yet not moved";
      simdjson::ondemand::object o = p.get_object();
      const std::string where(std::string_view(o["placement"].get_string()));
      EXPECT_TRUE(where == "near" || where == "far") << where;
      EXPECT_TRUE(seen.insert(where).second) << system << " " << scenario << ": " << where << " twice";
      const double probed = o["rtt_half_ns"].get_double();
      EXPECT_GE(probed, lowest) << system << " " << scenario;
      EXPECT_LE(probed, highest) << system << " " << scenario;
      EXPECT_GE(int64_t(o["chunks"].get_int64()), 1);
      EXPECT_GT(int64_t(o["samples"].get_int64()), 0);
      double below = 0;
      for (const char* field : {"p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns"}) {
        const double v = o[field].get_double();
        EXPECT_GE(v, below) << system << " " << scenario << " " << where << " " << field;
        below = v;
      }
      EXPECT_GE(double(o["over_1us_pct"].get_double()), 0.0);
    }
  }
  for (const char* s : {"ringbus", "floor", "floor_oneway", "boost_spsc", "moodycamel_rwq", "atomic_queue"}) {
    EXPECT_TRUE(systems.count(s)) << "no results for system " << s;
  }
  // Every throughput scenario runs its one-record-at-a-time references.
  for (const char* s : {"tput8", "tput64", "tput512"}) {
    EXPECT_TRUE(pairs.count({s, "stream"})) << s;
    EXPECT_TRUE(pairs.count({s, "stream_claim"})) << s;
  }
  for (const char* s : {"thread", "process", "fanout4", "keys10k", "rtt", "tput8", "tput64", "tput512"}) {
    EXPECT_TRUE(scenarios.count(s)) << "no results for scenario " << s;
  }
  // Scenarios judged against thread-to-thread ringbus measure it, and the floor,
  // interleaved with theirs.
  for (const char* s : {"process", "fanout4", "keys10k"}) {
    EXPECT_TRUE(pairs.count({s, "ringbus"})) << s;
    EXPECT_TRUE(pairs.count({s, "floor"})) << s << " has no floor of its own";
    EXPECT_TRUE(pairs.count({s, "ringbus_thread"})) << s << " has no interleaved thread-to-thread reference";
  }
  EXPECT_FALSE(pairs.count({"thread", "ringbus_thread"})) << "the thread scenario is its own reference";
  std::size_t targets = 0;
  for (auto t : root["targets"].get_array()) {
    simdjson::ondemand::object o = t.get_object();
    EXPECT_FALSE(std::string_view(o["target"].get_string()).empty());
    (void)bool(o["met"].get_bool());
    simdjson::ondemand::value where = o["placement"];  // null: judged over every chunk
    if (!bool(where.is_null())) {
      const std::string_view w = where.get_string();
      EXPECT_TRUE(w == "near" || w == "far") << w;
    }
    ++targets;
  }
  EXPECT_GE(targets, 8u);
}

// RINGBUS_CLOCK=steady runs the benchmark on steady_clock, as on a CPU without an
// invariant TSC: the report says so, ticks are nanoseconds, and every case completes.
TEST(BenchSmoke, RunsOnSteadyClockWhenChosen) {
  const std::string json = "/tmp/" + ringbus::test::unique_name("bench") + ".json";
  const std::string out = "/tmp/" + ringbus::test::unique_name("bench") + ".out";
  const std::string cmd = "RINGBUS_CLOCK=steady " + kTool +
                          " bench --smoke --no-progress --scenarios thread,rtt,tput8 --json " + json + " > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string table = ringbus::test::read_file(out);
  ::unlink(out.c_str());
  EXPECT_NE(table.find("clock: steady_clock (RINGBUS_CLOCK=steady) at 1.000 GHz"), std::string::npos) << table;

  JsonReport report(json);
  simdjson::ondemand::object root = report.root();
  simdjson::ondemand::object machine = root["machine"].get_object();
  EXPECT_FALSE(bool(machine["invariant_tsc"].get_bool()));
  EXPECT_EQ(double(machine["tsc_ghz"].get_double()), 1.0);
  std::set<std::pair<std::string, std::string>> pairs;
  for (auto item : root["results"].get_array()) {
    simdjson::ondemand::object r = item.get_object();
    const std::string system(std::string_view(r["system"].get_string()));
    const std::string scenario(std::string_view(r["scenario"].get_string()));
    pairs.emplace(scenario, system);
    if (scenario == "tput8") {
      EXPECT_GT(double(r["events_per_s"].get_double()), 0.0) << system;
    } else {
      EXPECT_GT(double(r["p50_ns"].get_double()), 0.0) << system << " " << scenario;
      EXPECT_GT(int64_t(r["samples"].get_int64()), 0) << system << " " << scenario;
    }
  }
  for (const char* scenario : {"thread", "rtt", "tput8"}) {
    for (const char* system : {"ringbus", "boost_spsc", "moodycamel_rwq", "atomic_queue"}) {
      EXPECT_TRUE(pairs.count({scenario, system})) << scenario << " " << system;
    }
  }
}

// On a terminal (here the pseudo-terminal of script(1)) the run draws a progress bar on
// standard error that only moves forward and ends at 100%; --no-progress draws none.
TEST(BenchSmoke, DrawsAProgressBarOnATerminal) {
  if (std::system("script -qec true /dev/null > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "script(1) cannot open a pseudo-terminal here";
  }
  for (const bool wanted : {true, false}) {
    const std::string typescript = "/tmp/" + ringbus::test::unique_name("bench") + ".typescript";
    const std::string cmd = "script -qec '" + std::string(RINGBUS_TOOL) + " bench --smoke --scenarios thread,tput8" +
                            (wanted ? "" : " --no-progress") + " > /dev/null' " + typescript + " > /dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const std::string text = ringbus::test::read_file(typescript);
    ::unlink(typescript.c_str());
    const std::regex bar("\r\\[[# ]{40}\\] +([0-9]+)%  ([^\r\n]*)");
    std::vector<int> percents;
    std::set<std::string> steps;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), bar); it != std::sregex_iterator(); ++it) {
      percents.push_back(std::stoi((*it)[1].str()));
      steps.insert((*it)[2].str());
    }
    if (!wanted) {
      EXPECT_TRUE(percents.empty()) << text;
      continue;
    }
    ASSERT_GE(percents.size(), 10u) << text;
    EXPECT_TRUE(std::is_sorted(percents.begin(), percents.end())) << text;
    EXPECT_EQ(percents.back(), 100) << text;
    EXPECT_GE(steps.size(), 5u) << "the bar names what is being measured: " << text;
  }
}

// --plot draws the latency percentile spectrum with gnuplot: a PNG, and beside it the
// script, with a panel per latency scenario and a line per system, the x axis in nines.
// The path holds a single quote, which the script must quote.
TEST(BenchSmoke, PlotDrawsTheSpectrumOfEverySystem) {
  const std::string png = "/tmp/" + ringbus::test::unique_name("bench") + "'s plot.png";
  const std::string out = "/tmp/" + ringbus::test::unique_name("bench") + ".out";
  const std::string cmd = kTool + " bench --smoke --no-progress --scenarios thread,rtt --plot \"" +
                          png + "\" > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string stdout_text = ringbus::test::read_file(out);
  ::unlink(out.c_str());
  EXPECT_NE(stdout_text.find("plot written to " + png), std::string::npos) << stdout_text;
  const std::string image = ringbus::test::read_file(png);
  const std::string script = ringbus::test::read_file(png + ".gp");
  ::unlink(png.c_str());
  ::unlink((png + ".gp").c_str());
  ASSERT_GT(image.size(), 1000u);
  EXPECT_EQ(image.substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_NE(script.find("set output '" + std::string("/tmp/")), std::string::npos) << script;
  EXPECT_NE(script.find("''s plot.png'"), std::string::npos) << script;  // the quote doubled
  EXPECT_NE(script.find("set xtics ('0%%' 0, '90%%' 1, '99%%' 2"), std::string::npos) << script;
  // A scenario that moved while it ran is drawn from one placement, named in its title.
  for (const char* panel : {"one-way, thread to thread, 64 B", "one-way, thread to thread, 1 KiB", "round trip, 64 B",
                            "ringbus scenarios, 64 B"}) {
    EXPECT_TRUE(std::regex_search(
        script, std::regex(std::string("set title '") + panel + "( \\((near|far), RTT/2 [0-9]+ ns\\))?'\n")))
        << panel << "\n"
        << script;
  }
  for (const char* system : {"ringbus", "floor", "boost_spsc", "moodycamel_rwq", "atomic_queue"}) {
    EXPECT_NE(script.find(std::string("title '") + system + "'"), std::string::npos) << system;
  }
}

// Without gnuplot, --plot is refused before anything is measured.
TEST(BenchSmoke, PlotWithoutGnuplotIsRefusedBeforeRunning) {
  const std::string png = "/tmp/" + ringbus::test::unique_name("bench") + ".png";
  const std::string base = "/tmp/" + ringbus::test::unique_name("bench");
  const std::string cmd = "PATH=/nonexistent-ringbus-dir " + kTool +
                          " bench --smoke --no-progress --plot " + png + " > " + base + ".out 2> " + base + ".err";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << cmd;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = ringbus::test::read_file(base + ".err");
  EXPECT_NE(err.find("--plot needs gnuplot"), std::string::npos) << err;
  EXPECT_EQ(ringbus::test::read_file(base + ".out"), "");  // nothing ran
  EXPECT_EQ(::access(png.c_str(), F_OK), -1);
  ::unlink((base + ".out").c_str());
  ::unlink((base + ".err").c_str());
}

// --capacity sizes ringbus's throughput ring: the run reports it in the table and the
// JSON, and ringbus's throughput cases still complete with it.
TEST(BenchSmoke, CapacitySizesTheThroughputRing) {
  const std::string json = "/tmp/" + ringbus::test::unique_name("bench") + ".json";
  const std::string out = "/tmp/" + ringbus::test::unique_name("bench") + ".out";
  const std::string cmd = kTool + " bench --smoke --no-progress --scenarios tput8 --capacity 256K" +
                          " --json " + json + " > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const simdjson::padded_string table = simdjson::padded_string::load(out);
  ::unlink(out.c_str());
  EXPECT_NE(std::string_view(table).find("ringbus ring 256 KiB, peers 4096 messages"), std::string_view::npos)
      << std::string_view(table);

  JsonReport report(json);
  simdjson::ondemand::object root = report.root();
  EXPECT_EQ(uint64_t(root["config"]["tput_capacity"].get_uint64()), uint64_t{256} << 10);
  EXPECT_EQ(double(root["elapsed"]["latency_s"].get_double()), 0.0);  // no latency scenario ran
  std::size_t ringbus_cases = 0;
  for (auto item : root["results"].get_array()) {
    simdjson::ondemand::object r = item.get_object();
    const std::string_view system = r["system"].get_string();
    const std::string_view scenario = r["scenario"].get_string();
    EXPECT_EQ(scenario, "tput8");
    if (system == "ringbus") {
      EXPECT_GT(double(r["events_per_s"].get_double()), 0.0);
      ++ringbus_cases;
    }
  }
  EXPECT_EQ(ringbus_cases, 4u);  // 1 and 2 producers, batched and not
}

// The table's header and the JSON say how long the run and each part took; a part that
// did not run took 0 s.
TEST(BenchSmoke, TheReportSaysHowLongEachPartTook) {
  const std::string json = "/tmp/" + ringbus::test::unique_name("bench") + ".json";
  const std::string out = "/tmp/" + ringbus::test::unique_name("bench") + ".out";
  const std::string cmd = kTool + " bench --smoke --no-progress --scenarios thread --json " + json + " > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string table = ringbus::test::read_file(out);
  ::unlink(out.c_str());
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      table, m, std::regex("\ntime: ([0-9]+\\.[0-9]) s \\(latency scenarios ([0-9]+\\.[0-9]) s, throughput cases 0\\.0 s\\)\n")))
      << table;

  JsonReport report(json);
  simdjson::ondemand::object elapsed = report.root()["elapsed"].get_object();
  const double latency_s = elapsed["latency_s"].get_double();
  const double throughput_s = elapsed["throughput_s"].get_double();
  const double total_s = elapsed["total_s"].get_double();
  EXPECT_GT(latency_s, 0.0);
  EXPECT_EQ(throughput_s, 0.0);
  EXPECT_LE(latency_s, total_s);
  // The table shows the JSON's figures to a tenth of a second (the JSON keeps three
  // decimals).
  EXPECT_NEAR(std::stod(m[1].str()), total_s, 0.0505);
  EXPECT_NEAR(std::stod(m[2].str()), latency_s, 0.0505);
}

// The placement probes around the measurements time one cache line's trip, and are
// paced at most 2 us apart whatever --gap-ns says: paced at 50 ms, the 20,000 samples
// of the first probe alone would take over 16 minutes. kTool's time limit ends
// such a run (exit 124).
TEST(BenchSmoke, APacingGapOfTheLatencyScenariosDoesNotSlowThePlacementProbes) {
  const std::string out = "/tmp/" + ringbus::test::unique_name("bench") + ".out";
  const std::string cmd =
      kTool + " bench --smoke --no-progress --scenarios tput8 --gap-ns 50000000 > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const simdjson::padded_string table = simdjson::padded_string::load(out);
  ::unlink(out.c_str());
  EXPECT_NE(std::string_view(table).find("paced every 50000000 ns"), std::string_view::npos)
      << std::string_view(table);
  EXPECT_NE(std::string_view(table).find("ns at the start"), std::string_view::npos) << std::string_view(table);
}

// The names in /dev/shm that start with `prefix`.
std::vector<std::string> shm_names(const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix)) names.push_back(name);
  }
  return names;
}

// `ringbus args...` started in the background, its standard output discarded and its
// standard error written to `err`.
pid_t start_tool(std::vector<std::string> args, const std::string& err = "/dev/null") {
  std::vector<char*> argv;
  std::string tool = RINGBUS_TOOL;
  argv.push_back(tool.data());
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    const int errors = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(null, 1);
    ::dup2(errors, 2);
    ::execv(tool.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

// The processes `pid`'s threads have forked.
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::istringstream in(ringbus::test::read_file(task.path().string() + "/children"));
    for (pid_t c = 0; in >> c;) children.push_back(c);
  }
  return children;
}

// The processes `pid` has forked, once it has forked one; the watchdog bounds the wait.
std::vector<pid_t> first_children_of(pid_t pid) {
  std::vector<pid_t> children;
  while (children.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    children = children_of(pid);
  }
  return children;
}

// Whether process `pid` exits (is gone, or a zombie awaiting its new parent) within
// 30 s; one still running then is killed, so that a failing test leaves no process
// spinning behind it.
bool exits(pid_t pid) {
  const std::string stat = "/proc/" + std::to_string(pid) + "/stat";
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < limit) {
    const std::string s = ringbus::test::read_file(stat);
    const std::size_t paren = s.rfind(')');
    if (s.empty() || paren == std::string::npos || s.compare(paren + 1, 3, " Z ") == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  return false;
}

// Whether process `pid` maps an anonymous segment whose label starts with `prefix`
// (a memfd: "/memfd:LABEL (deleted)" in its maps).
bool maps_anonymous_segment(pid_t pid, const std::string& prefix) {
  return ringbus::test::read_file("/proc/" + std::to_string(pid) + "/maps").find("/memfd:" + prefix) !=
         std::string::npos;
}

// The names in /dev/shm that a segment labelled with one of `prefixes` would have, were
// it named; each is removed, so that a failing test leaves none behind.
std::vector<std::string> remove_named(const std::vector<std::string>& prefixes) {
  std::vector<std::string> found;
  for (const std::string& prefix : prefixes) {
    for (const std::string& name : shm_names(prefix)) {
      ::shm_unlink(("/" + name).c_str());
      found.push_back(name);
    }
  }
  return found;
}

// Watches a run of the tool `pid`, and of the producer process `child` it forked, for
// `ms` milliseconds: whether each maps an anonymous segment labelled with the first of
// `prefixes`, and what /dev/shm held meanwhile under any of them.
struct Watched {
  bool tool_maps = false;
  bool child_maps = false;
  std::vector<std::string> named;
};
Watched watch(pid_t pid, pid_t child, const std::vector<std::string>& prefixes, std::chrono::milliseconds ms) {
  Watched w;
  const auto until = std::chrono::steady_clock::now() + ms;
  do {
    w.tool_maps = w.tool_maps || maps_anonymous_segment(pid, prefixes.front());
    w.child_maps = w.child_maps || maps_anonymous_segment(child, prefixes.front());
    for (std::string& name : remove_named(prefixes)) w.named.push_back(std::move(name));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  } while (std::chrono::steady_clock::now() < until);
  return w;
}

// Every segment of a run is anonymous: the run and the process scenario's producer
// process (forked, using the mapping it inherits) map a memfd, /dev/shm never holds a
// segment of it, and a run killed with SIGKILL at a random point of the process
// scenario leaves nothing there and no process behind.
TEST(BenchSmoke, ARunKilledAtAnyPointLeavesNoSegmentInDevShmAndNoProcess) {
  std::mt19937_64 rng(std::random_device{}());
  const pid_t pid =
      start_tool({"bench", "--smoke", "--no-progress", "--scenarios", "process,tput64", "--samples", "400000"});
  ASSERT_GT(pid, 0);
  const std::vector<pid_t> children = first_children_of(pid);
  ASSERT_EQ(children.size(), 1u);
  const auto at = std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 1500)(rng));
  const std::vector<std::string> prefixes{"ringbus-bench-", "ringbus-tput"};
  const Watched w = watch(pid, children[0], prefixes, at);
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed " << at.count() << " ms in";
  EXPECT_TRUE(exits(children[0])) << "the run's producer process " << children[0] << " outlived it";
  EXPECT_TRUE(w.tool_maps) << "the run maps no anonymous segment";
  EXPECT_TRUE(w.child_maps) << "the process scenario's producer maps no anonymous segment";
  std::vector<std::string> left = w.named;
  for (std::string& name : remove_named(prefixes)) left.push_back(std::move(name));
  EXPECT_TRUE(left.empty()) << "/dev/shm held " << left.front();
}

// `ringbus demo` killed while its producer process publishes into a full ring (the
// consumer is gone with the demo): the producer dies too. Its segment is anonymous:
// both map it, and /dev/shm never holds it.
TEST(BenchSmoke, ADemoKilledTakesItsProducerProcessWithItAndLeavesNoSegmentInDevShm) {
  const pid_t pid = start_tool({"demo", "--events", "100000000", "--gap-ns", "100"});
  ASSERT_GT(pid, 0);
  const std::vector<pid_t> children = first_children_of(pid);
  ASSERT_EQ(children.size(), 1u);
  // Publishing by the end of the watch.
  const Watched w = watch(pid, children[0], {"ringbus-demo"}, std::chrono::milliseconds(500));
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(exits(children[0])) << "the producer process " << children[0] << " outlived the demo";
  EXPECT_TRUE(w.tool_maps) << "the demo maps no anonymous segment";
  EXPECT_TRUE(w.child_maps) << "the demo's producer maps no anonymous segment";
  std::vector<std::string> left = w.named;
  for (std::string& name : remove_named({"ringbus-demo"})) left.push_back(std::move(name));
  EXPECT_TRUE(left.empty()) << "/dev/shm held " << left.front();
}

// The process scenario's producer process killed in the middle of a run: the run ends
// with an error that says what happened to it, instead of its consumer waiting forever
// for the rest of the chunk's events.
TEST(BenchSmoke, ARunWhoseProducerProcessDiesEndsWithAnErrorNamingIt) {
  const std::string err = "/tmp/" + ringbus::test::unique_name("bench") + ".err";
  const pid_t pid =
      start_tool({"bench", "--smoke", "--no-progress", "--scenarios", "process", "--samples", "400000"}, err);
  ASSERT_GT(pid, 0);
  const std::vector<pid_t> children = first_children_of(pid);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // into the measurement
  ASSERT_EQ(children.size(), 1u);
  ::kill(children[0], SIGKILL);
  // The run must end by itself; one still running after 30 s is killed and fails.
  const bool ended = exits(pid);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  const std::string text = ringbus::test::read_file(err);
  ::unlink(err.c_str());
  ASSERT_TRUE(ended) << "the run went on without its producer process";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << ": " << text;
  EXPECT_NE(text.find("producer process was killed by signal 9"), std::string::npos) << text;
}

}  // namespace
