// Runs the `ringbus` binary as a user would: create -> publish a JSON-lines file mixing
// good and bad lines -> tail -> compare field by field; stat (text and Prometheus), dlq,
// rm and the documented exit codes; on a terminal, publish's progress bar and stat --watch.
#include <fcntl.h>
#include <sched.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <simdjson.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ringbus/consumer.hpp"
#include "ringbus/dlq.hpp"
#include "ringbus/json.hpp"
#include "ringbus/layout.hpp"
#include "ringbus/producer.hpp"
#include "ringbus/registry.hpp"
#include "ringbus/segment.hpp"
#include "ringbus/stats.hpp"
#include "process_support.hpp"
#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using ringbus::test::read_file;
using ringbus::test::unique_name;

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};


using Environment = std::vector<std::pair<std::string, std::string>>;

// `ringbus args...` with `env` added to this process's environment, its arrays built
// before the fork. Between fork and exec a child of a process with threads (the test
// watchdog's, at least) may make async-signal-safe calls only: another thread may have
// held the allocator's lock when the process forked, and a child that allocates waits
// for it forever (seen under ASan: the child copied its arguments, and hung).
class ToolExec {
 public:
  explicit ToolExec(const std::vector<std::string>& args, const Environment& env = {}) : tool_(RINGBUS_TOOL) {
    args_.push_back(tool_);
    args_.insert(args_.end(), args.begin(), args.end());
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view entry(*e);
      const bool replaced = std::any_of(env.begin(), env.end(), [&](const auto& kv) {
        return entry.size() > kv.first.size() && entry.starts_with(kv.first) && entry[kv.first.size()] == '=';
      });
      if (!replaced) env_.emplace_back(entry);
    }
    for (const auto& [name, value] : env) env_.push_back(name + "=" + value);
    for (std::string& a : args_) argv_.push_back(a.data());
    argv_.push_back(nullptr);
    for (std::string& e : env_) envp_.push_back(e.data());
    envp_.push_back(nullptr);
  }
  // In the forked child: becomes the tool (async-signal-safe).
  [[noreturn]] void exec() const noexcept {
    ::execve(tool_.c_str(), argv_.data(), envp_.data());
    ::_exit(127);
  }

 private:
  std::string tool_;
  std::vector<std::string> args_, env_;
  std::vector<char*> argv_, envp_;
};

// A child running `ringbus args...` (with `env` added to its environment), its output
// going to files.
class Child {
 public:
  // `stdout_fd` >= 0: the child's standard output is that descriptor (the output file
  // stays empty) instead of a file; `stdin_fd` >= 0, its standard input (`stdin_path`
  // is then not opened). `as_user` != 0: the child runs as that user and group (for a
  // test run as root). `own_pid_namespace`: the tool runs in a pid namespace of its own
  // (exit code 122 where it may not be made).
  Child(const std::vector<std::string>& args, const std::string& stdin_path, const Environment& env = {},
        int stdout_fd = -1, uid_t as_user = 0, int stdin_fd = -1, bool own_pid_namespace = false) {
    const std::string base = "/tmp/" + unique_name("cli");
    out_ = base + ".out";
    err_ = base + ".err";
    const ToolExec tool(args, env);
    const std::string in_path = stdin_path.empty() ? "/dev/null" : stdin_path;
    pid_ = ::fork();
    if (pid_ == 0) {
      const int in = stdin_fd >= 0 ? stdin_fd : ::open(in_path.c_str(), O_RDONLY);
      const int out = stdout_fd >= 0 ? stdout_fd : ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int err = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (in < 0 || out < 0 || err < 0) ::_exit(120);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      if (as_user != 0 && (::setgroups(0, nullptr) != 0 || ::setgid(as_user) != 0 || ::setuid(as_user) != 0)) {
        ::_exit(121);
      }
      if (own_pid_namespace) {  // the namespace is its children's: the tool runs in a grandchild
        if (::unshare(CLONE_NEWPID) != 0) ::_exit(122);
        const pid_t tool_pid = ::fork();
        if (tool_pid < 0) ::_exit(122);
        if (tool_pid > 0) {
          int status = 0;
          while (::waitpid(tool_pid, &status, 0) < 0) {
          }
          ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
      }
      tool.exec();
    }
  }
  // Waits for the child (the test watchdog bounds a hang).
  Result wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
    }
    return collect(status);
  }
  // One SIGINT, as a user presses Ctrl-C once, and the wait for the child to end. The
  // caller knows the tool's handler is set (its producer is attached). One must do: a
  // signal that landed between the tool's look at its flag and the call that waits (a
  // read, a named pipe's open) was lost, and it took a second Ctrl-C.
  Result interrupt() {
    ::kill(pid_, SIGINT);
    return wait();
  }

 private:
  Result collect(int status) {
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_file(out_);
    r.err = read_file(err_);
    ::unlink(out_.c_str());
    ::unlink(err_.c_str());
    return r;
  }

  pid_t pid_ = -1;
  std::string out_, err_;
};

Result ringbus_run(const std::vector<std::string>& args, const std::string& stdin_path = "",
                   const Environment& env = {}) {
  return Child(args, stdin_path, env).wait();
}

// Waits until a producer is attached to `s` and alive: `ringbus publish` has then set
// its Ctrl-C handler (the test watchdog bounds a hang).
void wait_for_a_producer(const ringbus::Segment& s) {
  for (;;) {
    for (const ringbus::ProducerStats& p : ringbus::read_stats(s).producers) {
      if (p.state == "active" && p.alive) return;
    }
    std::this_thread::sleep_for(1ms);
  }
}

std::size_t occurrences(const std::string& text, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) ++n;
  return n;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> v;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

// Sets the control block's recovery counters to values no other counter has (2, 3, 5,
// 7, 8), for the tests that read each back from its own field.
void set_recovery_counters(const ringbus::detail::SegmentRefs& r) {
  r.control->producers_recovered.store(2);
  r.control->holes_padded.store(3);
  r.control->records_voided.store(5);
  r.control->latches_released.store(7);
  r.control->stalls_unresolved.store(8);
}

// A segment created by the tool, removed at the end of the test.
class ToolSegment {
 public:
  explicit ToolSegment(std::vector<std::string> extra = {}) : name_(unique_name("rbcli")) {
    std::vector<std::string> args{"create", name_};
    args.insert(args.end(), extra.begin(), extra.end());
    const Result r = ringbus_run(args);
    EXPECT_EQ(r.code, 0) << r.err;
  }
  ~ToolSegment() { ringbus::Segment::remove(ringbus::Location::shm(name_)); }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] ringbus::Segment open() const { return ringbus::Segment::open(ringbus::Location::shm(name_)); }

 private:
  std::string name_;
};

// A group whose failed events go to its dead letters at the first failure.
ringbus::ConsumerGroup join_dead_lettering(const ringbus::Segment& s, const std::string& name) {
  ringbus::GroupOptions o;
  o.retry.max_attempts = 1;
  return ringbus::ConsumerGroup::join(s, name, o);
}

// A named pipe, removed at the end.
class Fifo {
 public:
  Fifo() : path_("/tmp/" + unique_name("cli-fifo")) { EXPECT_EQ(::mkfifo(path_.c_str(), 0600), 0); }
  ~Fifo() { ::unlink(path_.c_str()); }
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

class TempFile {
 public:
  explicit TempFile(const std::string& content) : path_("/tmp/" + unique_name("cli-in") + ".jsonl") {
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// Publishes `lines` (JSON lines) into `seg` with the tool and hands them to worker 0 of
// `g` (a group of join_dead_lettering), which parks every one as a dead letter.
void publish_dead_letters(const ToolSegment& seg, ringbus::ConsumerGroup& g, const std::string& lines) {
  TempFile file(lines);
  ASSERT_EQ(ringbus_run({"publish", seg.name(), file.path()}).code, 0);
  while (g.worker(0).poll([](const ringbus::Event&) { return ringbus::Handled::fail; }, 100) != 0) {
  }
}

// The minified JSON of a value, as simdjson sees it (numbers kept as written).
std::string minified(simdjson::ondemand::value v) {
  std::string_view s;
  EXPECT_EQ(simdjson::to_json_string(v).get(s), simdjson::SUCCESS);
  return std::string(s);
}

// One parsed JSON line: every top-level field as minified JSON text, except that a
// string is compared by its value (escapes resolved) and `data` as written.
std::map<std::string, std::string> fields_of(const std::string& line) {
  static simdjson::ondemand::parser parser;
  simdjson::padded_string text(line);
  std::map<std::string, std::string> out;
  simdjson::ondemand::document doc = parser.iterate(text);
  for (auto field : doc.get_object()) {
    const std::string k(std::string_view(field.unescaped_key()));
    simdjson::ondemand::value v = field.value();
    if (k != "data" && v.type() == simdjson::ondemand::json_type::string) {
      out[k] = "string:" + std::string(std::string_view(v.get_string()));
    } else {
      out[k] = minified(v);
    }
  }
  return out;
}

// 1234567 as the tool prints counts: "1,234,567".
std::string fmt_thousands(std::uint64_t n) {
  std::string digits = std::to_string(n);
  for (std::size_t at = digits.size(); at > 3; at -= 3) digits.insert(at - 3, ",");
  return digits;
}

std::string big_data() {
  std::string s = "{\"blob\":\"";
  for (int i = 0; i < (1 << 20); ++i) s += static_cast<char>('a' + i % 26);
  return s + "\"}";
}

std::string fmt_count(std::size_t published, std::size_t lines) {
  return "published " + std::to_string(published) + " of " + std::to_string(lines) + " lines";
}

TEST(Cli, PublishRejectsBadLinesAndTailRoundTripsEveryField) {
  ToolSegment seg({"--capacity", "16M", "--max-event", "2M"});
  // Good lines (minified, so that "data" compares as text) and bad ones between them.
  const std::vector<std::string> good = {
      // every envelope field
      R"({"event_id":"e-1","event_type":"order.created","version":3,"timestamp":"2026-11-22T10:00:00.123456789Z","source":"shop/eu","correlation_id":"corr-1","causation_id":"cause-0","key":"order-1","data":{"qty":3,"sku":"ABC"}})",
      // unicode: UTF-8 text, \u escapes, a surrogate pair; escaped strings in key and source
      R"({"event_type":"order.noted","key":"k\"ey\\1\n","source":"caf\u00e9 ☕","data":{"note":"naïve \ud83d\ude00 \u00e9","esc":"tab\tquote\"slash\/"}})",
      // big and negative numbers, kept as written
      R"({"event_type":"order.paid","key":"order-1","data":{"u64":18446744073709551615,"i64":-9223372036854775808,"huge":123456789012345678901234567890,"f":-1.5e-300,"z":-0}})",
      // nested data, empty data, a scalar, an array
      R"({"event_type":"order.paid","key":"order-2","data":{"a":[1,[2,[3,{"b":null,"c":[true,false]}]]],"d":{}}})",
      R"({"event_type":"order.created","key":"order-3","data":{}})",
      R"({"event_type":"order.created","data":"just a string"})",
      R"({"event_type":"order.created","key":"order-3","data":[]})",
      // a 1 MiB line
      R"({"event_type":"blob","key":"b","data":)" + big_data() + "}",
      // a time zone offset: stored in UTC
      R"({"event_type":"order.shipped","key":"order-1","timestamp":"2026-11-22T12:30:00.5+02:00","data":1})",
  };
  std::string too_big = R"({"event_type":"blob","key":"b","data":{"s":")" + std::string(3u << 20, 'x') + "\"}}";
  struct Bad {
    std::string line;
    std::string expect;  // in the error message
  };
  const std::vector<Bad> bad = {
      {"{\"event_type\":\"t\",\"key\":\"k\",\"data\":{\"s\":\"\xff\xfe\"}}", "invalid UTF-8"},
      {R"({"event_type":"t","key":"k","data":{"s":1})", "the JSON object is not closed (truncated line?)"},
      {R"({"key":"k","data":{}})", "field \"event_type\" is required"},
      {R"({"event_type":"t","key":"k"})", "field \"data\" is required"},
      {R"([1,2,3])", "not a JSON object"},
      {R"({"event_type":"t","data":{},"colour":"red"})",
       "field \"colour\" is not an envelope field (the fields: event_id, event_type, version, timestamp, source, "
       "correlation_id, causation_id, key, data)"},
      {R"({"event_type":"t","data":{},"key":"a","key":"b"})", "field \"key\" appears twice"},
      {R"({"event_type":"t","version":0,"data":{}})", "field \"version\" must be an integer from 1 to 65535"},
      {R"({"event_type":"t","timestamp":"yesterday","data":{}})", "field \"timestamp\" must be an ISO-8601"},
      {R"({"event_type":"t","timestamp":"9999-12-31T23:59:59Z","data":{}})",
       "field \"timestamp\" must be after 1970-01-01T00:00:00Z and at most 2554-07-21T23:34:33.709551615Z"},
      {R"({"event_type":"t","data":01})", "field \"data\" is not valid JSON"},
      {too_big, "takes events of at most 2097152 bytes"},
  };
  // Interleave: good 0, bad 0, good 1, bad 1, ...; one blank line (skipped, not counted).
  std::string input;
  std::vector<std::pair<std::size_t, std::size_t>> bad_at;  // (line number, byte offset of the line)
  std::size_t line_no = 0;
  for (std::size_t i = 0; i < std::max(good.size(), bad.size()); ++i) {
    if (i < good.size()) {
      input += good[i] + "\n";
      ++line_no;
    }
    if (i < bad.size()) {
      bad_at.emplace_back(++line_no, input.size());
      input += bad[i].line + "\n";
    }
    if (i == 2) {
      input += "   \n";
      ++line_no;
    }
  }
  TempFile file(input);
  const Result pub = ringbus_run({"publish", seg.name(), file.path()});
  EXPECT_EQ(pub.code, 3) << "exit status 3: some lines were rejected\n" << pub.err;
  EXPECT_NE(pub.err.find(fmt_count(good.size(), good.size() + bad.size())), std::string::npos) << pub.err;
  // Every bad line is reported with its line number, a byte offset inside it, and what is wrong.
  const std::vector<std::string> err = lines_of(pub.err);
  for (std::size_t i = 0; i < bad.size(); ++i) {
    const std::string prefix = file.path() + ": line " + std::to_string(bad_at[i].first) + ": byte ";
    bool found = false;
    for (const std::string& l : err) {
      if (l.rfind(prefix, 0) != 0) continue;
      found = true;
      const std::size_t byte = std::stoull(l.substr(prefix.size()));
      EXPECT_GE(byte, bad_at[i].second) << l;
      EXPECT_LE(byte, bad_at[i].second + bad[i].line.size()) << l;
      EXPECT_NE(l.find(bad[i].expect), std::string::npos) << "expected \"" << bad[i].expect << "\" in: " << l;
    }
    EXPECT_TRUE(found) << "no error for line " << bad_at[i].first << " in:\n" << pub.err;
  }
  EXPECT_EQ(err.size(), bad.size() + 1) << pub.err;  // the errors and the summary

  // Tail from the start: the good lines, in order, field by field.
  const Result tail = ringbus_run({"tail", seg.name(), "--from", "start"});
  ASSERT_EQ(tail.code, 0) << tail.err;
  const std::vector<std::string> out = lines_of(tail.out);
  ASSERT_EQ(out.size(), good.size());
  std::map<std::string, std::uint64_t> last_seq;
  std::uint64_t last_position = 0;
  for (std::size_t i = 0; i < good.size(); ++i) {
    SCOPED_TRACE("event " + std::to_string(i));
    std::map<std::string, std::string> in = fields_of(good[i]);
    std::map<std::string, std::string> got = fields_of(out[i]);
    // Added by the log: position (increasing) and key_seq (1, 2, ... per key).
    const std::uint64_t position = std::stoull(got.at("position"));
    EXPECT_TRUE(i == 0 || position > last_position);
    last_position = position;
    const std::string key = in.count("key") ? in["key"] : "";
    if (!key.empty()) EXPECT_EQ(std::stoull(got.at("key_seq")), ++last_seq[key]);
    got.erase("position");
    got.erase("key_seq");
    // Defaults filled in: version 1, the publish time.
    if (!in.count("version")) {
      EXPECT_EQ(got.at("version"), "1");
      in["version"] = "1";
    }
    if (!in.count("timestamp")) {
      EXPECT_TRUE(std::regex_match(got.at("timestamp"),
                                   std::regex(R"(string:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z)")))
          << got["timestamp"];
      in["timestamp"] = got["timestamp"];
    }
    if (i == 8) {
      EXPECT_EQ(got.at("timestamp"), "string:2026-11-22T10:30:00.5Z");
      in["timestamp"] = got["timestamp"];
    }
    EXPECT_EQ(got, in);
  }
  // The key strings are kept: --key selects by the original string.
  const Result by_key = ringbus_run({"tail", seg.name(), "--key", "order-1"});
  EXPECT_EQ(lines_of(by_key.out).size(), 3u) << by_key.out;
  const Result by_type = ringbus_run({"tail", seg.name(), "--type", "order.paid", "--count", "1"});
  ASSERT_EQ(lines_of(by_type.out).size(), 1u);
  EXPECT_EQ(fields_of(by_type.out).at("data"), fields_of(good[2]).at("data"));
  const Result from_pos =
      ringbus_run({"tail", seg.name(), "--from", fields_of(out[4]).at("position"), "--count", "2"});
  ASSERT_EQ(lines_of(from_pos.out).size(), 2u);
  EXPECT_EQ(lines_of(from_pos.out)[0], out[4]);
  EXPECT_EQ(lines_of(from_pos.out)[1], out[5]);
  EXPECT_TRUE(ringbus_run({"tail", seg.name(), "--from", "end"}).out.empty());
  // A position inside a record is refused naming the records around it (it printed
  // nothing, and with --follow waited forever).
  const std::uint64_t fifth = std::stoull(fields_of(out[4]).at("position"));
  const Result inside = ringbus_run({"tail", seg.name(), "--from", std::to_string(fifth + 8), "--follow"});
  EXPECT_EQ(inside.code, 1);
  EXPECT_NE(inside.err.find("is inside the record at " + std::to_string(fifth) + "; records start at " +
                            std::to_string(fifth) + " and " + fields_of(out[5]).at("position")),
            std::string::npos)
      << inside.err;
  const Result no_type = ringbus_run({"tail", seg.name(), "--type", "order.lost"});
  EXPECT_EQ(no_type.code, 4);
  EXPECT_NE(no_type.err.find("order.lost"), std::string::npos);
}

// A position the ring has overwritten: tail starts at the oldest lap still there and
// says how much it skipped, instead of printing overwritten bytes or nothing at all.
TEST(Cli, TailFromAnOverwrittenPositionSaysWhatItSkipped) {
  ToolSegment seg({"--capacity", "1M"});  // no group: the ring laps freely
  const ringbus::Segment s = seg.open();
  ringbus::Producer p = ringbus::Producer::attach(s);
  std::vector<std::byte> payload(1000);
  for (std::uint64_t n = 0; n < 1500; ++n) {
    std::memcpy(payload.data(), &n, sizeof n);
    ASSERT_EQ(p.try_publish(0, 1, payload), ringbus::Status::ok);
  }
  const std::uint64_t capacity = s.refs().capacity;
  const std::uint64_t lap_start = (s.was_tail() / capacity) * capacity;
  ASSERT_GT(lap_start, 0u);
  const Result r = ringbus_run({"tail", seg.name(), "--from", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(r.out);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(fields_of(lines.front()).at("position"), std::to_string(lap_start));
  EXPECT_EQ(fields_of(lines.back()).at("producer_seq"), "1500");
  std::string skipped = std::to_string(lap_start);
  for (std::size_t i = skipped.size(); i > 3; i -= 3) skipped.insert(i - 3, ",");
  EXPECT_NE(r.err.find("the ring overtook this reader: " + skipped + " bytes skipped\n"),
            std::string::npos)
      << r.err;
}

// A reader overtaken between events it read: `tail` blocked on a full pipe while the
// ring laps it several times goes on from the oldest lap, prints only whole events in
// order, and says how many events it missed, which with those it printed make up every
// event from its first on.
TEST(Cli, TailOvertakenBetweenEventsSaysHowManyItMissed) {
  ToolSegment seg({"--capacity", "64K", "--max-event", "1K"});  // no group: the ring laps freely
  const ringbus::Segment s = seg.open();
  ringbus::Producer p = ringbus::Producer::attach(s);
  std::vector<std::byte> payload(56);
  auto publish = [&](std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t n = from; n < to; ++n) {
      std::memcpy(payload.data(), &n, sizeof n);
      ASSERT_EQ(p.try_publish(0, 1, payload), ringbus::Status::ok);
    }
  };
  publish(0, 400);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_GT(::fcntl(fds[0], F_SETPIPE_SZ, 4096), 0);
  Child tail({"tail", seg.name(), "--from", "start"}, "", {}, fds[1]);
  ::close(fds[1]);
  // Wait until the pipe is full and has stayed so: tail is blocked writing (the
  // watchdog bounds this).
  for (int unchanged = 0, last = -1; unchanged < 20;) {
    int queued = 0;
    ASSERT_EQ(::ioctl(fds[0], FIONREAD, &queued), 0);
    unchanged = queued == last && queued >= 2048 ? unchanged + 1 : 0;
    last = queued;
    std::this_thread::sleep_for(5ms);
  }
  constexpr std::uint64_t kTotal = 10'000;  // 120-byte records: about 18 laps of the ring
  publish(400, kTotal);
  const std::string out = ringbus::test::read_to_end(fds[0]);
  ::close(fds[0]);
  const Result r = tail.wait();
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = lines_of(out);
  ASSERT_GE(lines.size(), 2u);
  std::uint64_t prev = 0;
  for (const std::string& line : lines) {
    const std::uint64_t seq = std::stoull(fields_of(line).at("producer_seq"));
    ASSERT_GT(seq, prev) << line;
    prev = seq;
  }
  const std::uint64_t first = std::stoull(fields_of(lines.front()).at("producer_seq"));
  EXPECT_EQ(prev, kTotal) << "the last event is printed";
  const std::uint64_t missed = kTotal - first + 1 - lines.size();
  ASSERT_GT(missed, 5000u) << "the ring did not overtake the reader";
  std::string count = std::to_string(missed);
  for (std::size_t i = count.size(); i > 3; i -= 3) count.insert(i - 3, ",");
  EXPECT_NE(r.err.find("the ring overtook this reader: " + count + " events missed ("), std::string::npos) << r.err;
}

TEST(Cli, PublishFromStandardInputAndFollowingTail) {
  ToolSegment seg;
  // A follower started first sees what is published after it.
  Child follower({"tail", seg.name(), "--from", "end", "--follow", "--count", "2"}, "");
  // Give the follower time to open at the current end (it would still pass without).
  std::this_thread::sleep_for(200ms);
  TempFile file(R"({"event_type":"a","key":"x","data":{"n":1}})" "\n" R"({"event_type":"a","key":"x","data":{"n":2}})"
                "\n");
  const Result pub = ringbus_run({"publish", seg.name(), "-"}, file.path());
  EXPECT_EQ(pub.code, 0) << pub.err;
  EXPECT_NE(pub.err.find("published 2 of 2 lines"), std::string::npos) << pub.err;
  const Result tail = follower.wait();
  EXPECT_EQ(tail.code, 0) << tail.err;
  const std::vector<std::string> out = lines_of(tail.out);
  ASSERT_EQ(out.size(), 2u) << tail.out;
  EXPECT_EQ(fields_of(out[0]).at("data"), R"({"n":1})");
  EXPECT_EQ(fields_of(out[1]).at("key_seq"), "2");
}

// A follower selecting an event type nobody has published yet waits for it (it exited
// with "no event type"), and prints that type's events only; without --follow such a
// type still ends the command with status 4.
TEST(Cli, FollowingTailWaitsForAnEventTypeNotRegisteredYet) {
  ToolSegment seg;
  Child follower({"tail", seg.name(), "--follow", "--type", "order.filled", "--count", "2"}, "");
  std::this_thread::sleep_for(200ms);  // the follower starts before the type exists (it would still pass without)
  TempFile file(R"({"event_type":"order.placed","data":1}
{"event_type":"order.filled","data":2}
{"event_type":"order.placed","data":3}
{"event_type":"order.filled","data":4}
)");
  const Result pub = ringbus_run({"publish", seg.name(), file.path()});
  EXPECT_EQ(pub.code, 0) << pub.err;
  const Result tail = follower.wait();
  EXPECT_EQ(tail.code, 0) << tail.err;
  const std::vector<std::string> out = lines_of(tail.out);
  ASSERT_EQ(out.size(), 2u) << tail.out;
  EXPECT_EQ(fields_of(out[0]).at("data"), "2");
  EXPECT_EQ(fields_of(out[1]).at("data"), "4");
  EXPECT_NE(tail.err.find("has no event type \"order.filled\" yet; following until one is published"),
            std::string::npos)
      << tail.err;
  const Result once = ringbus_run({"tail", seg.name(), "--type", "order.lost"});
  EXPECT_EQ(once.code, 4) << once.err;
  ToolSegment bare({"--types", "0"});
  const Result no_registry = ringbus_run({"tail", bare.name(), "--follow", "--type", "order.filled"});
  EXPECT_EQ(no_registry.code, 4) << no_registry.err;
  EXPECT_NE(no_registry.err.find("has no event type \"order.filled\" (it has no schema registry)"), std::string::npos)
      << no_registry.err;
}

// publish --help says what a line holds: it names every envelope field, and its example
// line publishes as it stands.
TEST(Cli, PublishHelpNamesEveryEnvelopeFieldAndItsExamplePublishes) {
  const Result help = ringbus_run({"publish", "--help"});
  ASSERT_EQ(help.code, 0) << help.err;
  EXPECT_NE(help.out.find("Exit status: 0 success"), std::string::npos) << "the tool's footer is kept\n" << help.out;
  // The field table: a row a field (or a list of them), "  name, name   what it holds".
  const std::vector<std::string> lines = lines_of(help.out);
  const auto table = std::find_if(lines.begin(), lines.end(),
                                  [](const std::string& l) { return l.ends_with("an event envelope:"); });
  const auto intro = std::find_if(lines.begin(), lines.end(),
                                  [](const std::string& l) { return l.ends_with("For example:"); });
  ASSERT_TRUE(table < intro) << help.out;
  std::vector<std::string> described;
  for (auto row = table + 1; row != intro && row->starts_with("  "); ++row) {
    std::string names = row->substr(2, row->find("  ", 2) - 2);
    for (std::size_t at = 0; at != std::string::npos;) {
      const std::size_t comma = names.find(", ", at);
      described.push_back(names.substr(at, comma == std::string::npos ? comma : comma - at));
      at = comma == std::string::npos ? comma : comma + 2;
    }
  }
  std::vector<std::string> expected(ringbus::kEnvelopeFields.begin(), ringbus::kEnvelopeFields.end());
  std::sort(described.begin(), described.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(described, expected) << help.out;
  ASSERT_TRUE(intro != lines.end() && intro + 1 != lines.end()) << help.out;
  const std::string example = (intro + 1)->substr((intro + 1)->find_first_not_of(' '));
  ToolSegment seg;
  TempFile file(example + "\n");
  const Result pub = ringbus_run({"publish", seg.name(), file.path()});
  EXPECT_EQ(pub.code, 0) << example << "\n" << pub.err;
  const Result tail = ringbus_run({"tail", seg.name(), "--from", "start"});
  ASSERT_EQ(tail.code, 0) << tail.err;
  const std::vector<std::string> out = lines_of(tail.out);
  ASSERT_EQ(out.size(), 1u) << tail.out;
  EXPECT_EQ(fields_of(out[0]).at("event_type"), fields_of(example).at("event_type"));
  EXPECT_EQ(fields_of(out[0]).at("data"), fields_of(example).at("data"));
}

// Lines of nothing but spaces, tabs or a carriage return are skipped, not rejected.
TEST(Cli, PublishSkipsLinesOfWhitespace) {
  ToolSegment seg;
  TempFile file(std::string(R"({"event_type":"a","data":1})") + "\n \t \n\r\n\t\n" + R"({"event_type":"a","data":2})" +
                "\n");
  const Result pub = ringbus_run({"publish", seg.name(), file.path()});
  EXPECT_EQ(pub.code, 0) << pub.err;
  EXPECT_NE(pub.err.find("published 2 of 2 lines"), std::string::npos) << pub.err;
  EXPECT_NE(pub.err.find("(0 rejected)"), std::string::npos) << pub.err;
}

// Interrupted while its input is still open, publish keeps what it published, says it
// was interrupted and exits with 3 (not everything was published), not 0.
// SIGINT while publish waits for more input ends it, whether the input is its standard
// input or a named pipe given as its file (that one was read through a stream that
// retried the interrupted read, and waited for the writer's next line), while it waits
// for a named pipe's writer to open, and while it waits for room in a full log.
TEST(Cli, PublishInterruptedExitsPartial) {
  for (const bool as_file : {false, true}) {
    SCOPED_TRACE(as_file ? "a named pipe as its file" : "standard input");
    ToolSegment seg;
    const Fifo fifo;
    Child publisher = as_file ? Child({"publish", seg.name(), fifo.path()}, "")
                              : Child({"publish", seg.name(), "-"}, fifo.path());
    const int writer = ::open(fifo.path().c_str(), O_WRONLY);  // meets the child's open
    ASSERT_GE(writer, 0);
    const std::string lines = R"({"event_type":"a","data":1})" "\n" R"({"event_type":"a","data":2})" "\n";
    ASSERT_EQ(::write(writer, lines.data(), lines.size()), static_cast<ssize_t>(lines.size()));
    const ringbus::Segment s = seg.open();
    while (ringbus::read_stats(s).published < 2) std::this_thread::sleep_for(1ms);  // the watchdog bounds this
    const Result r = publisher.interrupt();  // the writer stays open and idle until the publisher has ended
    ::close(writer);
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_NE(r.err.find("published 2 of 2 lines"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("; interrupted"), std::string::npos) << r.err;
  }
  {
    ToolSegment seg;
    const Fifo fifo;  // no writer ever opens it
    Child publisher({"publish", seg.name(), fifo.path()}, "");
    wait_for_a_producer(seg.open());
    const Result r = publisher.interrupt();
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_NE(r.err.find("published 0 of 0 lines"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("; interrupted"), std::string::npos) << r.err;
  }
  // And while it waits for room in a log a stalled group keeps full, with --timeout an
  // hour (one wait for the whole timeout held Ctrl-C off for that long).
  ToolSegment seg({"--capacity", "64K", "--max-event", "1K"});
  const ringbus::Segment s = seg.open();
  ringbus::ConsumerGroup stalled = ringbus::ConsumerGroup::join(s, "stalled");  // gates, never polls
  std::string lines;
  for (int i = 0; i < 400; ++i) lines += R"({"event_type":"A","data":")" + std::string(400, 'x') + "\"}\n";
  const TempFile file(lines);
  Child publisher({"publish", seg.name(), file.path(), "--timeout", "3600"}, "");
  while (ringbus::read_stats(s).back_pressure == 0) std::this_thread::sleep_for(1ms);  // the watchdog bounds this
  const Result r = publisher.interrupt();
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("; interrupted"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("stayed full"), std::string::npos) << r.err;
  const std::uint64_t published = ringbus::read_stats(s).published;
  EXPECT_GT(published, 0u);
  EXPECT_NE(r.err.find(fmt_count(published, published)), std::string::npos) << r.err;
  // The line it was waiting to publish is named.
  EXPECT_NE(r.err.find("interrupted while segment shm:" + seg.name() + " was full (a consumer group is not keeping "
                       "up; see `ringbus info`): line " + std::to_string(published + 1) +
                       " and the lines after it are not published"),
            std::string::npos)
      << r.err;
}

// Standard input left non-blocking by whoever passed it (a pipe2(O_NONBLOCK), or a
// terminal a program set so) is waited for like any other: its first read, before the
// writer wrote, ended the run as the end of the input, and then as a read error
// ("Resource temporarily unavailable", status 1), with the lines after it lost.
TEST(Cli, PublishWaitsForInputLeftNonBlocking) {
  ToolSegment seg;
  std::array<int, 2> pipe{};
  ASSERT_EQ(::pipe2(pipe.data(), O_NONBLOCK | O_CLOEXEC), 0);
  Child publisher({"publish", seg.name()}, "", {}, -1, 0, pipe[0]);
  ::close(pipe[0]);
  wait_for_a_producer(seg.open());
  std::this_thread::sleep_for(100ms);  // its first read finds nothing yet (it would still pass without)
  const std::string lines = R"({"event_type":"a","data":1})" "\n" R"({"event_type":"a","data":2})" "\n";
  ASSERT_EQ(::write(pipe[1], lines.data(), lines.size()), static_cast<ssize_t>(lines.size()));
  ::close(pipe[1]);
  const Result r = publisher.wait();
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find(fmt_count(2, 2)), std::string::npos) << r.err;
}

// Input that fails to read (here the tool's own memory from address 0) ends publish with
// status 1 and the error named, not as the end of the input with status 0.
TEST(Cli, PublishNamesAReadErrorAndFails) {
  ToolSegment seg;
  const Result r = ringbus_run({"publish", seg.name(), "/proc/self/mem"});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(r.err.substr(0, r.err.find('\n')),
            "ringbus publish: cannot read /proc/self/mem after byte 0 (line 1): Input/output error");
  EXPECT_NE(r.err.find("published 0 of 0 lines"), std::string::npos) << r.err;
}

// Input from a pipe arrives in pieces of any size: lines split anywhere, a line of
// several chunks arriving a piece at a time, CRLF, a blank line and a last line without
// a newline keep every byte and every offset.
TEST(Cli, PublishReadsLinesHoweverTheInputArrivesInPieces) {
  ToolSegment seg({"--max-event", "256K"});
  std::vector<std::string> data;
  std::string input;
  std::mt19937 rng(7);
  auto add = [&](std::size_t n, const char* end) {
    data.push_back(std::string(n, static_cast<char>('a' + data.size() % 26)));
    input += R"({"event_type":"a","data":")" + data.back() + "\"}" + end;
  };
  for (int i = 0; i < 150; ++i) add(rng() % 3000, i % 50 == 7 ? "\r\n" : "\n");
  add(150000, "\n");  // three chunks and some
  input += "\n";
  const std::size_t bad_at = input.size();
  input += R"({"event_type":"a","data":01})" "\n";
  for (int i = 0; i < 20; ++i) add(rng() % 300, "\n");
  add(10, "");  // last, with no newline
  const Fifo fifo;
  Child publisher({"publish", seg.name(), "-"}, fifo.path());
  const int writer = ::open(fifo.path().c_str(), O_WRONLY);
  ASSERT_GE(writer, 0);
  for (std::size_t at = 0; at < input.size();) {
    const std::size_t n = std::min<std::size_t>(1 + rng() % 5000, input.size() - at);
    ASSERT_EQ(::write(writer, input.data() + at, n), static_cast<ssize_t>(n));
    at += n;
    if (rng() % 4 == 0) std::this_thread::sleep_for(100us);  // let the reader see a part
  }
  ::close(writer);
  const Result pub = publisher.wait();
  EXPECT_EQ(pub.code, 3) << pub.err;
  EXPECT_NE(pub.err.find("line 153: byte " + std::to_string(bad_at + 25) + " (column 26): field \"data\""),
            std::string::npos)
      << pub.err;
  EXPECT_NE(pub.err.find(fmt_count(data.size(), data.size() + 1)), std::string::npos) << pub.err;
  const std::vector<std::string> out = lines_of(ringbus_run({"tail", seg.name()}).out);
  ASSERT_EQ(out.size(), data.size());
  for (std::size_t i = 0; i < data.size(); ++i) {
    EXPECT_EQ(fields_of(out[i]).at("data"), "\"" + data[i] + "\"") << "line " << i + 1;
  }
}

// Input without a newline in sight (/dev/zero) is read a chunk at a time, in bounded
// memory, and still ends on SIGINT; before, the line grew until memory ran out and the
// signal was noted but never looked at.
TEST(Cli, PublishOfAnEndlessLineEndsOnSigint) {
  ToolSegment seg;
  Child publisher({"publish", seg.name(), "/dev/zero"}, "");
  wait_for_a_producer(seg.open());
  std::this_thread::sleep_for(100ms);  // into the endless line (it would still pass without)
  const Result r = publisher.interrupt();
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("published 0 of 0 lines"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("; interrupted"), std::string::npos) << r.err;
}

// Lines are read in 64 KiB chunks: lines of every length around one and two chunks keep
// every byte and every offset. A line longer than any line carrying an event the
// segment takes (8 x max_event + 4 MiB) is skipped without being held, named with its
// length, and the lines after it publish with their own offsets.
TEST(Cli, PublishReadsLinesAcrossChunksAndSkipsOnesTooLongForAnyEvent) {
  ToolSegment seg({"--max-event", "256K"});
  const std::string head = R"({"event_type":"a","data":")";
  const std::string tail_text = R"("})";
  std::string input;
  std::vector<std::size_t> lengths;
  for (std::size_t line : {65534u, 65535u, 65536u, 65537u, 131070u, 131071u, 131072u, 131073u}) {
    lengths.push_back(line - head.size() - tail_text.size());
    input += head + std::string(lengths.back(), 'x') + tail_text + "\n";
  }
  const std::size_t long_at = input.size();
  const std::size_t too_long = 8 * (256u << 10) + (4u << 20) + 1;
  input += head + std::string(too_long - head.size() - tail_text.size(), 'y') + tail_text + "\n";
  input += R"({"event_type":"a","data":"after"})" "\n";
  const std::size_t bad_at = input.size();
  input += R"({"event_type":"a","data":01})";  // last, with no newline
  TempFile file(input);
  const Result pub = ringbus_run({"publish", seg.name(), file.path()});
  EXPECT_EQ(pub.code, 3) << pub.err;
  EXPECT_NE(pub.err.find("line 9: byte " + std::to_string(long_at) + ": the line is " + fmt_thousands(too_long) +
                         " bytes, longer than any line carrying an event segment shm:" + seg.name() +
                         " takes (6,291,456 bytes: 8 x max_event 262,144 + 4 MiB); skipped"),
            std::string::npos)
      << pub.err;
  EXPECT_NE(pub.err.find("line 11: byte " + std::to_string(bad_at + 25) + " (column 26): field \"data\""),
            std::string::npos)
      << pub.err;
  EXPECT_NE(pub.err.find("published 9 of 11 lines"), std::string::npos) << pub.err;
  const std::vector<std::string> out = lines_of(ringbus_run({"tail", seg.name()}).out);
  ASSERT_EQ(out.size(), 9u);
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    EXPECT_EQ(fields_of(out[i]).at("data"), "\"" + std::string(lengths[i], 'x') + "\"") << "line " << i + 1;
  }
  EXPECT_EQ(fields_of(out[8]).at("data"), R"("after")");
}

// A file that starts with a UTF-8 byte-order mark and ends its lines in CRLF (as some
// editors save JSON lines) publishes every line; error offsets count the mark's 3 bytes.
// A mark inside the input (files concatenated) is refused by its line, with its offset.
TEST(Cli, PublishSkipsAByteOrderMarkThatStartsTheInput) {
  ToolSegment seg;
  const std::string bom = "\xEF\xBB\xBF";
  const std::string one = R"({"event_type":"a","key":"x","data":{"n":1}})";
  const std::string two = R"({"event_type":"a","key":"x","data":{"n":2}})";
  TempFile crlf(bom + one + "\r\n" + two + "\r\n" + bom + one + "\r\n");
  const Result pub = ringbus_run({"publish", seg.name(), crlf.path()});
  EXPECT_EQ(pub.code, 3) << pub.err;
  EXPECT_NE(pub.err.find("published 2 of 3 lines"), std::string::npos) << pub.err;
  const std::size_t third = bom.size() + 2 * (one.size() + 2);
  EXPECT_NE(pub.err.find("line 3: byte " + std::to_string(third) +
                         " (column 1): a UTF-8 byte-order mark starts the line (one is skipped only at the start"),
            std::string::npos)
      << pub.err;
  const Result tail = ringbus_run({"tail", seg.name()});
  const std::vector<std::string> out = lines_of(tail.out);
  ASSERT_EQ(out.size(), 2u) << tail.out;
  EXPECT_EQ(fields_of(out[0]).at("data"), R"({"n":1})");
  EXPECT_EQ(fields_of(out[1]).at("data"), R"({"n":2})");

  TempFile bad_first(bom + R"({"event_type":"a","data":01})" "\n");
  const Result bad = ringbus_run({"publish", seg.name(), bad_first.path()});
  EXPECT_EQ(bad.code, 3) << bad.err;
  // "data" starts at column 26 of the line, byte 28 of the input.
  EXPECT_NE(bad.err.find("line 1: byte 28 (column 26): field \"data\""), std::string::npos) << bad.err;
}

// Bad lines are reported in full up to --max-errors; the rest are counted in one line.
TEST(Cli, PublishReportsBadLinesUpToMaxErrorsAndCountsTheRest) {
  ToolSegment seg;
  std::string input = R"({"event_type":"a","data":1})" "\n";
  for (int i = 0; i < 5; ++i) input += "not json\n";
  TempFile file(input);
  for (const int max_errors : {0, 2, 5}) {
    const Result pub = ringbus_run({"publish", seg.name(), file.path(), "--max-errors", std::to_string(max_errors)});
    EXPECT_EQ(pub.code, 3) << pub.err;
    for (int line = 2; line <= 6; ++line) {
      const bool shown = line - 1 <= max_errors;
      EXPECT_EQ(pub.err.find(": line " + std::to_string(line) + ": byte") != std::string::npos, shown)
          << "--max-errors " << max_errors << ", line " << line << ":\n" << pub.err;
    }
    const std::string more = "... and " + std::to_string(5 - max_errors) + " more bad lines";
    EXPECT_EQ(pub.err.find(more) != std::string::npos, max_errors < 5) << pub.err;
    EXPECT_EQ(pub.err.find("more bad lines") != std::string::npos, max_errors < 5) << pub.err;
    EXPECT_NE(pub.err.find("published 1 of 6 lines"), std::string::npos) << pub.err;
  }
}

// Publish refuses, line by line, keys the key table and event types the schema registry
// has no room for, and stops with exit 1 when the log stays full past --timeout (a
// gating group that is not consuming). Either way every line accepted before is in the log.
TEST(Cli, PublishReportsAFullKeyTableOrRegistryAndALogThatStaysFull) {
  {
    ToolSegment seg({"--types", "2"});
    TempFile file(R"({"event_type":"A","data":1}
{"event_type":"B","data":2}
{"event_type":"C","data":3}
{"event_type":"A","data":4}
{"event_type":"D","data":5}
{"event_type":"B","data":6}
)");
    const Result pub = ringbus_run({"publish", seg.name(), file.path()});
    EXPECT_EQ(pub.code, 3) << pub.err;
    EXPECT_NE(pub.err.find("line 3: byte 56: segment shm:" + seg.name() +
                           " has no room for event type \"C\" (its schema registry is full: 2 event types)"),
              std::string::npos)
        << pub.err;
    EXPECT_NE(pub.err.find("line 5: byte 112: segment shm:" + seg.name() + " has no room for event type \"D\""),
              std::string::npos)
        << pub.err;
    EXPECT_NE(pub.err.find("published 4 of 6 lines"), std::string::npos) << pub.err;
    const std::vector<std::string> tail = lines_of(ringbus_run({"tail", seg.name()}).out);
    ASSERT_EQ(tail.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(fields_of(tail[i]).at("data"), std::string(1, "1246"[i])) << tail[i];
  }
  {
    ToolSegment seg({"--keys", "16"});
    std::string lines;
    for (int i = 0; i < 20; ++i) lines += R"({"event_type":"A","key":"k)" + std::to_string(i) + R"(","data":)" + std::to_string(i) + "}\n";
    TempFile file(lines);
    const Result pub = ringbus_run({"publish", seg.name(), file.path()});
    EXPECT_EQ(pub.code, 3) << pub.err;
    EXPECT_NE(pub.err.find("line 17: byte "), std::string::npos) << pub.err;
    EXPECT_NE(pub.err.find("has no room for another key (its key table is full)"), std::string::npos) << pub.err;
    EXPECT_NE(pub.err.find("published 16 of 20 lines"), std::string::npos) << pub.err;
    // info and stat say the table is past the use from which new keys may be refused.
    const std::string full = "keys 16/16 (100% used: new keys may be refused from about 80%)";
    EXPECT_NE(ringbus_run({"info", seg.name()}).out.find(full), std::string::npos);
    EXPECT_NE(ringbus_run({"stat", seg.name()}).out.find(full), std::string::npos);
    const std::vector<std::string> tail = lines_of(ringbus_run({"tail", seg.name()}).out);
    ASSERT_EQ(tail.size(), 16u);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(fields_of(tail[static_cast<std::size_t>(i)]).at("key"), "string:k" + std::to_string(i));
  }
  {
    ToolSegment seg({"--capacity", "64K", "--max-event", "1K"});
    const ringbus::Segment s = seg.open();
    ringbus::ConsumerGroup stalled = ringbus::ConsumerGroup::join(s, "stalled");  // gates, never polls
    std::string lines;
    const std::string filler(400, 'x');
    for (int i = 0; i < 400; ++i) lines += R"({"event_type":"A","data":")" + filler + "\"}\n";
    TempFile file(lines);
    const Result pub = ringbus_run({"publish", seg.name(), file.path(), "--timeout", "0.2"});
    EXPECT_EQ(pub.code, 1) << pub.err;
    EXPECT_NE(pub.err.find("the log stayed full for 0.2 s: a consumer group is not keeping up"), std::string::npos)
        << pub.err;
    // It stops at the first line that found no room: the lines after it are not tried.
    EXPECT_EQ(pub.err.find("the log stayed full"), pub.err.rfind("the log stayed full")) << pub.err;
    const std::smatch m = [&] {
      std::smatch r;
      std::regex_search(pub.err, r, std::regex("published ([0-9]+) of ([0-9]+) lines"));
      return r;
    }();
    ASSERT_EQ(m.size(), 3u) << pub.err;
    const std::size_t published = std::stoul(m[1].str());
    EXPECT_GT(published, 0u);
    EXPECT_LT(published, 400u);
    EXPECT_EQ(lines_of(ringbus_run({"tail", seg.name()}).out).size(), published);
    EXPECT_NE(pub.err.find("line " + std::to_string(published + 1) + ": timeout (the log stayed full for 0.2 s: "),
              std::string::npos)
        << pub.err;
    EXPECT_NE(pub.err.find("): it and the lines after it are not published"), std::string::npos) << pub.err;
  }
}

TEST(Cli, StatShowsCountersLagDeadLettersAndLatency) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  ringbus::GroupOptions o;
  o.record_latency = true;
  o.retry.max_attempts = 2;
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "billing", o);
  ringbus::ConsumerGroup lagging = ringbus::ConsumerGroup::join(s, "audit");
  { const ringbus::ConsumerGroup retired = ringbus::ConsumerGroup::join(s, "retired", {.workers = 2}); }
  {
    ringbus::Producer p = ringbus::Producer::attach(s);
    for (std::uint64_t i = 0; i < 100; ++i) {
      const std::uint64_t v = i;
      ASSERT_EQ(p.publish(i % 7 + 1, 1, std::as_bytes(std::span(&v, 1))), ringbus::Status::ok);
    }
  }
  std::uint64_t handled = 0;
  auto handler = [&](const ringbus::Event& e) {
    std::uint64_t v = 0;
    std::memcpy(&v, e.payload().data(), sizeof v);
    ++handled;
    return v % 10 == 3 ? ringbus::Handled::fail : ringbus::Handled::ok;
  };
  while (g.worker(0).poll(handler, 1000) != 0) {
  }
  const Result text = ringbus_run({"stat", seg.name()});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("published 100"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("billing"), std::string::npos);
  EXPECT_NE(text.out.find("audit"), std::string::npos);
  EXPECT_NE(text.out.find("latency over 100 samples"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("dead-lettered 10"), std::string::npos) << text.out;
  // Workers run by a live process, of the group's workers.
  EXPECT_TRUE(std::regex_search(text.out, std::regex("\nbilling +1/1 "))) << text.out;
  EXPECT_TRUE(std::regex_search(text.out, std::regex("\nretired +0/2 "))) << text.out;

  const Result prom = ringbus_run({"stat", seg.name(), "--prometheus"});
  ASSERT_EQ(prom.code, 0) << prom.err;
  // The exposition format: # HELP and # TYPE before a family's samples; every sample
  // `name{labels} value`.
  const std::regex sample_re(R"re(^(ringbus_[a-z_]+)\{segment="shm:[^"]+"(,[a-z_]+="[^"]*")*\} (-?[0-9.e+-]+|\+Inf)$)re");
  std::map<std::string, std::string> type_of;
  std::map<std::string, double> value;
  std::vector<std::pair<std::string, double>> buckets;
  for (const std::string& l : lines_of(prom.out)) {
    if (l.rfind("# HELP ", 0) == 0) continue;
    if (l.rfind("# TYPE ", 0) == 0) {
      std::istringstream in(l.substr(7));
      std::string name, type;
      in >> name >> type;
      EXPECT_TRUE(type == "counter" || type == "gauge" || type == "histogram") << l;
      EXPECT_FALSE(type_of.count(name)) << "family declared twice: " << name;
      type_of[name] = type;
      continue;
    }
    std::smatch m;
    ASSERT_TRUE(std::regex_match(l, m, sample_re)) << "not a sample line: " << l;
    std::string family = m[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s2 = suffix;
      if (family.size() > s2.size() && family.compare(family.size() - s2.size(), s2.size(), s2) == 0 &&
          type_of.count(family.substr(0, family.size() - s2.size()))) {
        family = family.substr(0, family.size() - s2.size());
      }
    }
    EXPECT_TRUE(type_of.count(family)) << "sample before its # TYPE: " << l;
    const std::string label_text = l.substr(0, l.rfind(' '));
    const double v = std::stod(m[3].str() == "+Inf" ? "inf" : l.substr(l.rfind(' ') + 1));
    value[label_text] = v;
    if (l.find("handle_latency_seconds_bucket") != std::string::npos && l.find("group=\"billing\"") != std::string::npos) {
      buckets.emplace_back(l, v);
    }
  }
  const std::string seg_label = "{segment=\"shm:" + seg.name() + "\"";
  EXPECT_EQ(value.at("ringbus_published_events_total" + seg_label + "}"), 100);
  EXPECT_EQ(value.at("ringbus_group_consumed_events_total" + seg_label + ",group=\"billing\"}"), 90);
  EXPECT_EQ(value.at("ringbus_dlq_entries" + seg_label + ",group=\"billing\"}"), 10);
  EXPECT_EQ(value.at("ringbus_worker_dead_lettered_total" + seg_label + ",group=\"billing\",worker=\"0\"}"), 10);
  EXPECT_EQ(value.at("ringbus_worker_handler_errors_total" + seg_label + ",group=\"billing\",worker=\"0\"}"), 20);
  EXPECT_EQ(value.at("ringbus_group_lag_bytes" + seg_label + ",group=\"billing\"}"), 0);
  EXPECT_GT(value.at("ringbus_group_lag_bytes" + seg_label + ",group=\"audit\"}"), 0);
  EXPECT_EQ(value.at("ringbus_group_workers" + seg_label + ",group=\"retired\"}"), 2);
  EXPECT_EQ(value.at("ringbus_group_workers_running" + seg_label + ",group=\"retired\"}"), 0);
  EXPECT_EQ(value.at("ringbus_group_workers_running" + seg_label + ",group=\"billing\"}"), 1);
  // Latency: cumulative buckets ending at +Inf == _count == one sample per event handed
  // to the handler the first time (failed attempts are not re-recorded).
  ASSERT_GE(buckets.size(), 2u);
  // Only buckets that hold samples are written, so each count is above the one before.
  for (std::size_t i = 1; i + 1 < buckets.size(); ++i) EXPECT_GT(buckets[i].second, buckets[i - 1].second);
  EXPECT_NE(buckets.back().first.find("le=\"+Inf\""), std::string::npos);
  EXPECT_EQ(buckets.back().second, 100);
  EXPECT_EQ(value.at("ringbus_handle_latency_seconds_count" + seg_label + ",group=\"billing\"}"), 100);
  EXPECT_GT(value.at("ringbus_handle_latency_seconds_sum" + seg_label + ",group=\"billing\"}"), 0);

  const Result watch = ringbus_run({"stat", seg.name(), "--watch", "--interval", "0.05", "--count", "2"});
  EXPECT_EQ(watch.code, 0) << watch.err;
  EXPECT_EQ(occurrences(watch.out, "GROUP"), 2u) << watch.out;
}

// `ringbus args...` run on a terminal: forkpty() makes one pseudo-terminal the child's
// standard input, output and error; this side reads and types through its master.
class OnTerminal {
 public:
  explicit OnTerminal(const std::vector<std::string>& args) {
    const ToolExec tool(args);
    pid_ = ::forkpty(&master_, nullptr, nullptr, nullptr);
    if (pid_ == 0) tool.exec();
    if (pid_ < 0) ADD_FAILURE() << "forkpty: " << std::strerror(errno);
  }
  ~OnTerminal() {
    if (master_ >= 0) ::close(master_);
  }
  OnTerminal(const OnTerminal&) = delete;
  OnTerminal& operator=(const OnTerminal&) = delete;

  // Reads what the tool wrote until `what` has come `times` times, or to the end (the
  // terminal reads EIO once the child has exited); the watchdog bounds a wait.
  void read_until(std::string_view what, std::size_t times = 1) {
    char buf[4096];
    while (what.empty() || occurrences(out_, what) < times) {
      const ssize_t n = ::read(master_, buf, sizeof buf);
      if (n <= 0) return;
      out_.append(buf, static_cast<std::size_t>(n));
    }
  }
  void type(char key) const { EXPECT_EQ(::write(master_, &key, 1), 1); }
  // Whether the terminal is in canonical mode with echo (lines, not keys; typed text shown).
  [[nodiscard]] bool canonical() const {
    termios t{};
    return ::tcgetattr(master_, &t) == 0 && (t.c_lflag & (ICANON | ECHO)) == (ICANON | ECHO);
  }
  [[nodiscard]] bool raw() const {
    termios t{};
    return ::tcgetattr(master_, &t) == 0 && (t.c_lflag & (ICANON | ECHO)) == 0;
  }
  // The exit code, or 128 + the signal that ended the child.
  int wait() const { return ringbus::test::reap(pid_); }
  [[nodiscard]] const std::string& out() const noexcept { return out_; }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  std::string out_;
};

// `ringbus stat SEG --watch` on a terminal redraws until q, or Ctrl-C (the terminal's
// interrupt character: SIGINT), is typed; it takes keys without Enter while it runs and
// leaves the terminal in canonical mode with echo.
TEST(Cli, StatWatchOnATerminalEndsOnQOrCtrlCAndRestoresTheTerminal) {
  ToolSegment seg;
  for (const char key : {'q', '\003'}) {
    SCOPED_TRACE(key == 'q' ? "q" : "Ctrl-C");
    OnTerminal watch({"stat", seg.name(), "--watch", "--interval", "0.05"});
    watch.read_until("GROUP", 2);  // the second redraw comes after the terminal went raw
    EXPECT_TRUE(watch.raw()) << "keys would wait for Enter";
    watch.type(key);
    EXPECT_EQ(watch.wait(), 0) << watch.out();
    EXPECT_TRUE(watch.canonical()) << "the terminal was left without canonical mode or echo";
    EXPECT_NE(watch.out().find("segment shm:" + seg.name()), std::string::npos) << watch.out();
  }
}

// `ringbus publish` with standard error on a terminal draws a progress bar while a slow
// input comes in (lines and lines/s; no percentage known for a pipe), clears it before a
// bad line's report and before the summary; with --no-progress it draws none.
TEST(Cli, PublishOnATerminalDrawsAProgressBarAndClearsItBeforeEachReport) {
  ToolSegment seg({"--capacity", "1M", "--max-event", "1K"});
  std::string good;
  for (int i = 0; i < 1024; ++i) good += R"({"event_type":"a","data":1})" "\n";
  for (const bool bar : {true, false}) {
    SCOPED_TRACE(bar ? "progress" : "--no-progress");
    const Fifo fifo;
    std::vector<std::string> args = {"publish", seg.name(), fifo.path()};
    if (!bar) args.emplace_back("--no-progress");
    OnTerminal publish(args);
    const int writer = ::open(fifo.path().c_str(), O_WRONLY);  // meets the tool's open for reading
    ASSERT_GE(writer, 0);
    // Every 1024th line the bar is drawn if 100 ms have passed since it last was.
    for (int round = 0; round < 3; ++round) {
      ASSERT_EQ(::write(writer, good.data(), good.size()), static_cast<ssize_t>(good.size()));
      std::this_thread::sleep_for(150ms);
    }
    const std::string bad = "{\"event_type\":\"a\"\n";
    ASSERT_EQ(::write(writer, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
    ::close(writer);
    publish.read_until("");
    EXPECT_EQ(publish.wait(), 3) << publish.out();
    const std::string& out = publish.out();
    const std::string report = fifo.path() + ": line 3073: byte 86033 (column 18): the JSON object is not closed";
    const std::string summary = "published 3,072 of 3,073 lines into shm:" + seg.name() + " (1 rejected)";
    const std::regex drawn("\r\\[ {30}\\]   0\\.0%  (1,024|2,048|3,072) lines  [0-9]+ lines/s");
    if (bar) {
      EXPECT_TRUE(std::regex_search(out, drawn)) << out;
      EXPECT_NE(out.find("\r\33[K" + report), std::string::npos) << out;
      EXPECT_NE(out.find("\r\33[K" + summary), std::string::npos) << out;
    } else {
      EXPECT_EQ(out.find("\r["), std::string::npos) << out;
      EXPECT_EQ(out.find("\33[K"), std::string::npos) << out;
      EXPECT_NE(out.find(report), std::string::npos) << out;
      EXPECT_NE(out.find(summary), std::string::npos) << out;
    }
  }
}

// Every counter `stat` reports, set in the segment to a value no other counter has, is
// read back from its own series (--prometheus) and its own place in the text.
TEST(Cli, StatShowsEachCounterInItsOwnSeries) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.workers = 2});
  ringbus::Producer p = ringbus::Producer::attach(s, {.producer_id = 7});
  const std::uint64_t v = 42;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(p.publish(1, 1, std::as_bytes(std::span(&v, 1))), ringbus::Status::ok);
  const ringbus::detail::SegmentRefs& r = s.refs();
  set_recovery_counters(r);
  r.control->longest_stall_ns.store(15'000'000);
  r.producers[p.slot_index()].full_count.store(11);
  const std::uint32_t group_slot = ringbus::read_stats(s).groups.at(0).slot;
  ringbus::layout::GroupSlot& gs = r.groups[group_slot];
  gs.resumes.store(9);
  ringbus::layout::DlqControl& dlq = *r.dlq_control(group_slot);
  dlq.full_waits.store(4);
  const std::uint64_t tail = r.control->tail.load();
  gs.worker[0].cursor.store(tail);  // worker 0 has read everything, worker 1 nothing
  ringbus::layout::WorkerSlot& w = gs.worker[1];
  w.consumed.store(13);
  w.voids_seen.store(17);
  w.handler_errors.store(19);
  w.retries.store(23);
  w.dead_lettered.store(29);
  w.dup_dropped.store(31);
  w.too_old_dropped.store(37);
  w.dedup_evictions.store(41);
  w.redelivered.store(43);
  w.redriven.store(47);
  w.pending.store(53);
  w.inflight.store(tail | 5);  // five processes died in a row handling the event at the tail

  const Result prom = ringbus_run({"stat", seg.name(), "--prometheus"});
  ASSERT_EQ(prom.code, 0) << prom.err;
  std::map<std::string, std::string> value;  // series (name and labels) -> value
  for (const std::string& l : lines_of(prom.out)) {
    if (l.empty() || l[0] == '#') continue;
    value[l.substr(0, l.rfind(' '))] = l.substr(l.rfind(' ') + 1);
  }
  const std::string segment = "{segment=\"shm:" + seg.name() + "\"";
  auto of = [&](const std::string& name, const std::string& labels = "") {
    const auto it = value.find("ringbus_" + name + segment + labels + "}");
    return it == value.end() ? std::string("(no such series)") : it->second;
  };
  EXPECT_EQ(of("published_events_total"), "3");
  EXPECT_EQ(of("tail_position_bytes"), std::to_string(tail));
  EXPECT_EQ(of("back_pressure_total"), "11");
  EXPECT_EQ(of("keys_used"), "1");
  EXPECT_EQ(of("producers_recovered_total"), "2");
  EXPECT_EQ(of("holes_padded_total"), "3");
  EXPECT_EQ(of("records_voided_total"), "5");
  EXPECT_EQ(of("latches_released_total"), "7");
  EXPECT_EQ(of("stalls_unresolved_total"), "8");
  EXPECT_EQ(of("longest_stall_seconds"), "0.015");
  EXPECT_EQ(of("producer_published_events_total", ",producer_id=\"7\",slot=\"" + std::to_string(p.slot_index()) +
                                                      "\",state=\"active\""),
            "3");
  const std::string group = ",group=\"orders\"";
  EXPECT_EQ(of("group_lag_bytes", group), std::to_string(tail));
  EXPECT_EQ(of("group_cursor_bytes", group), "0");
  EXPECT_EQ(of("group_consumed_events_total", group), "13");
  EXPECT_EQ(of("group_resumes_total", group), "9");
  EXPECT_EQ(of("dlq_full_waits_total", group), "4");
  EXPECT_EQ(of("group_workers", group), "2");
  EXPECT_EQ(of("group_workers_running", group), "2");
  const std::string worker0 = group + ",worker=\"0\"", worker1 = group + ",worker=\"1\"";
  EXPECT_EQ(of("worker_lag_bytes", worker0), "0");
  EXPECT_EQ(of("worker_lag_bytes", worker1), std::to_string(tail));
  EXPECT_EQ(of("worker_consumed_events_total", worker1), "13");
  EXPECT_EQ(of("worker_void_records_total", worker1), "17");
  EXPECT_EQ(of("worker_handler_errors_total", worker1), "19");
  EXPECT_EQ(of("worker_retries_total", worker1), "23");
  EXPECT_EQ(of("worker_dead_lettered_total", worker1), "29");
  EXPECT_EQ(of("worker_dropped_events_total", worker1 + ",reason=\"duplicate\""), "31");
  EXPECT_EQ(of("worker_dropped_events_total", worker1 + ",reason=\"too_old\""), "37");
  EXPECT_EQ(of("worker_dedup_evictions_total", worker1), "41");
  EXPECT_EQ(of("worker_redelivered_total", worker1), "43");
  EXPECT_EQ(of("worker_redriven_total", worker1), "47");
  EXPECT_EQ(of("worker_events_set_aside", worker1), "53");
  EXPECT_EQ(of("worker_events_set_aside", worker0), "0");
  EXPECT_EQ(of("worker_deaths_in_flight", worker1), "5");
  EXPECT_EQ(of("worker_deaths_in_flight", worker0), "0");
  for (const char* counter : {"consumed_events", "void_records", "handler_errors", "retries", "dead_lettered",
                              "dedup_evictions", "redelivered", "redriven"}) {
    EXPECT_EQ(of(std::string("worker_") + counter + "_total", worker0), "0") << counter;
  }

  const Result text = ringbus_run({"stat", seg.name()});
  ASSERT_EQ(text.code, 0) << text.err;
  for (const std::string& want :
       {std::string("published 3  back-pressure 11  keys 1/"),
        std::string("recovery: producers 2  holes padded 3  voided 5  latches released 7  longest stall 15.0 ms  "
                    "stalls unresolved 8\n"),
        std::string("  orders: handler errors 19  retries 23  dead-lettered 29  dedup dropped 31 (+37 too old, 41 "
                    "producers evicted)  redelivered 43  redriven 47  set aside 53  died in flight 5 in a row\n")}) {
    EXPECT_NE(text.out.find(want), std::string::npos) << want << "\n" << text.out;
  }
  EXPECT_TRUE(std::regex_search(text.out, std::regex(R"(\norders +2/2 +[0-9.]+ [KMG]?i?B +[0-9.]+% +13 +- +0 +4 +- )")))
      << text.out;

  // A segment without dead-letter rings has "-" for their depth; a path's double quote
  // and backslash are escaped in the segment label.
  const std::string path = "/tmp/" + unique_name("rb\"q\\x") + ".seg";
  struct Unlink {
    std::string path;
    ~Unlink() { ::unlink(path.c_str()); }
  } unlink_at_end{path};
  ASSERT_EQ(ringbus_run({"create", "unused", "--path", path, "--dlq", "0"}).code, 0);
  {
    const ringbus::Segment no_dlq = ringbus::Segment::open(ringbus::Location::file(path));
    ringbus::ConsumerGroup audit = ringbus::ConsumerGroup::join(no_dlq, "audit");
  }
  const Result plain = ringbus_run({"stat", path});
  EXPECT_TRUE(std::regex_search(plain.out, std::regex(R"(\naudit +0/1 +0 B +0.0% +0 +- +- +0 +- )"))) << plain.out;
  const Result labels = ringbus_run({"stat", "--prometheus", path});
  std::string escaped;
  for (char ch : path) escaped += ch == '"' || ch == '\\' ? std::string("\\") + ch : std::string(1, ch);
  EXPECT_NE(labels.out.find("ringbus_published_events_total{segment=\"" + escaped + "\"} 0\n"), std::string::npos)
      << labels.out;
}

// `ringbus info` (text and --json) reads the segment's layout, the sizes it was created
// with, producers, groups, positions and lag as another process left them. The segment
// is a file whose path holds a double quote: the JSON must still be JSON.
TEST(Cli, InfoShowsLayoutProducersGroupsPositionsAndLag) {
  const std::string path = "/tmp/" + unique_name("rbcli-info") + "\"q";
  const Result created = ringbus_run({"create", path, "--capacity", "1M", "--max-event", "1K", "--dlq", "512K",
                                      "--dedup-window", "4000", "--types", "8"});
  ASSERT_EQ(created.code, 0) << created.err;
  struct Unlink {
    std::string path;
    ~Unlink() { ::unlink(path.c_str()); }
  } unlink_at_end{path};
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  const ringbus::Segment s = ringbus::Segment::open(ringbus::Location::file(path));
  ringbus::SchemaRegistry registry(s);
  registry.register_type("Placed");
  registry.register_type("Filled");
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders");
  ringbus::Producer p = ringbus::Producer::attach(s, {.producer_id = 7, .exclusive = true});
  const std::uint64_t v = 42;
  for (std::uint64_t key : {1, 2, 1}) ASSERT_EQ(p.publish(key, 1, std::as_bytes(std::span(&v, 1))), ringbus::Status::ok);
  std::uint64_t handled = 0;
  while (g.worker(0).poll([&](const ringbus::Event&) { ++handled; }) != 0) {
  }
  ASSERT_EQ(handled, 3u);
  const std::uint64_t cursor = s.refs().control->tail.load();
  for (std::uint64_t key : {3, 4}) ASSERT_EQ(p.publish(key, 1, std::as_bytes(std::span(&v, 1))), ringbus::Status::ok);
  const std::uint64_t tail = s.refs().control->tail.load();
  ASSERT_GT(tail, cursor);

  const Result json = ringbus_run({"info", "--json", path});
  ASSERT_EQ(json.code, 0) << json.err;
  simdjson::ondemand::parser parser;
  simdjson::padded_string text(json.out);
  simdjson::ondemand::document doc = parser.iterate(text);
  simdjson::ondemand::object root = doc.get_object();
  EXPECT_EQ(std::string_view(root["segment"].get_string()), path);
  EXPECT_EQ(std::string_view(root["version"].get_string()), "1." + std::to_string(ringbus::layout::kVersionMinor));
  EXPECT_EQ(uint64_t(root["capacity"].get_uint64()), 1u << 20);
  EXPECT_EQ(uint64_t(root["max_event"].get_uint64()), 1024u);
  EXPECT_EQ(uint64_t(root["tail"].get_uint64()), tail);
  EXPECT_EQ(uint64_t(root["published"].get_uint64()), 5u);
  EXPECT_EQ(uint64_t(root["keys_used"].get_uint64()), 4u);
  EXPECT_EQ(uint64_t(root["key_slots"].get_uint64()), 65536u);
  EXPECT_EQ(uint64_t(root["total_size"].get_uint64()), static_cast<std::uint64_t>(st.st_size));
  EXPECT_EQ(uint64_t(root["dlq_capacity"].get_uint64()), 512u << 10);
  EXPECT_EQ(uint64_t(root["dedup_window"].get_uint64()), 4032u) << "4,000 asked, in 64 words, one of them slack";
  EXPECT_EQ(uint64_t(root["dedup_producers"].get_uint64()), 16u);
  EXPECT_EQ(uint64_t(root["type_slots"].get_uint64()), 8u);
  EXPECT_EQ(uint64_t(root["types_used"].get_uint64()), 2u);
  EXPECT_EQ(uint64_t(root["producers_recovered"].get_uint64()), 0u);
  std::size_t producers = 0;
  for (auto item : root["producers"].get_array()) {
    simdjson::ondemand::object pr = item.get_object();
    EXPECT_EQ(uint64_t(pr["producer_id"].get_uint64()), 7u);
    EXPECT_EQ(uint64_t(pr["pid"].get_uint64()), static_cast<std::uint64_t>(::getpid()));
    EXPECT_EQ(std::string_view(pr["state"].get_string()), "active");
    EXPECT_TRUE(bool(pr["alive"].get_bool()));
    EXPECT_TRUE(bool(pr["exclusive"].get_bool()));
    EXPECT_EQ(uint64_t(pr["next_seq"].get_uint64()), 6u);
    EXPECT_EQ(uint64_t(pr["published"].get_uint64()), 5u);
    ++producers;
  }
  EXPECT_EQ(producers, 1u);
  std::size_t groups = 0;
  for (auto item : root["groups"].get_array()) {
    simdjson::ondemand::object gr = item.get_object();
    EXPECT_EQ(std::string_view(gr["name"].get_string()), "orders");
    EXPECT_EQ(uint64_t(gr["workers"].get_uint64()), 1u);
    EXPECT_EQ(uint64_t(gr["cursor"].get_uint64()), cursor);
    EXPECT_EQ(uint64_t(gr["lag_bytes"].get_uint64()), tail - cursor);
    EXPECT_EQ(uint64_t(gr["consumed"].get_uint64()), 3u);
    std::size_t workers = 0;
    for (auto w : gr["worker"].get_array()) {
      simdjson::ondemand::object wo = w.get_object();
      EXPECT_EQ(std::string_view(wo["state"].get_string()), "active");
      EXPECT_TRUE(bool(wo["alive"].get_bool()));
      EXPECT_EQ(uint64_t(wo["cursor"].get_uint64()), cursor);
      ++workers;
    }
    EXPECT_EQ(workers, 1u);
    ++groups;
  }
  EXPECT_EQ(groups, 1u);

  const Result plain = ringbus_run({"info", path});
  ASSERT_EQ(plain.code, 0) << plain.err;
  for (const std::string& want :
       {"segment " + path + "  layout 1." + std::to_string(ringbus::layout::kVersionMinor), std::string("capacity 1 MiB  max event 1 KiB  keys 4/65,536"),
        "tail " + std::to_string(tail) + " (lap 0)  published 5", std::string("producers (1, slot 0 exclusive)\n"),
        std::string("groups (1)"), std::string("orders  workers 1  cursor "),
        "  dead letters 512 KiB a group  dedup window 4,032 x 16 producers a worker  event types 2/8  " +
            fmt_thousands(static_cast<std::uint64_t>(st.st_size)) + " bytes in all\n"}) {
    EXPECT_NE(plain.out.find(want), std::string::npos) << want << "\n" << plain.out;
  }
  EXPECT_TRUE(std::regex_search(plain.out, std::regex(R"(\n +0 +7 +[0-9]+ +active +6 +5 +0\n)"))) << plain.out;

  // A segment made without dead-letter rings, dedup region or registry says so.
  ToolSegment bare({"--dlq", "0", "--dedup-window", "0", "--types", "0"});
  const Result bare_plain = ringbus_run({"info", bare.name()});
  EXPECT_NE(bare_plain.out.find("  dead letters none  dedup none  event types none (no registry)  "), std::string::npos)
      << bare_plain.out;
  const Result bare_json = ringbus_run({"info", "--json", bare.name()});
  for (const char* zero : {"\"dlq_capacity\":0,", "\"dedup_window\":0,", "\"dedup_producers\":0,", "\"type_slots\":0,",
                           "\"types_used\":0,"}) {
    EXPECT_NE(bare_json.out.find(zero), std::string::npos) << zero << "\n" << bare_json.out;
  }
}

// Each counter of `info` in its own field, in JSON and in text, with values set apart
// from one another (written into the segment: their meaning is tested in the core). A
// creator that exited, a dead producer and a dead worker are marked as such. The
// segment is made with --path (which overrides the name) and replaced with --replace.
TEST(Cli, InfoShowsEachCounterInItsOwnField) {
  const std::string path = "/tmp/" + unique_name("rbcli-fields") + ".seg";
  const std::string ignored = unique_name("rbcli-not-this-name");
  const Result created = ringbus_run({"create", ignored, "--path", path, "--capacity", "8M", "--max-event", "1536K"});
  ASSERT_EQ(created.code, 0) << created.err;
  struct Unlink {
    std::string path;
    ~Unlink() { ::unlink(path.c_str()); }
  } unlink_at_end{path};
  EXPECT_NE(created.out.find("created " + path + ": capacity 8 MiB, max event 1536 KiB"), std::string::npos)
      << created.out;
  EXPECT_EQ(ringbus_run({"info", ignored}).code, 4) << "--path was not used";

  constexpr std::uint32_t kDeadPid = 0x3ffffff0;  // above pid_max
  const ringbus::Segment s = ringbus::Segment::open(ringbus::Location::file(path));
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.workers = 2});
  ringbus::Producer p = ringbus::Producer::attach(s, {.producer_id = 7});
  ASSERT_EQ(p.slot_index(), 0u);
  const std::uint64_t v = 42;
  ASSERT_EQ(p.publish(1, 1, std::as_bytes(std::span(&v, 1))), ringbus::Status::ok);
  const ringbus::detail::SegmentRefs& r = s.refs();
  set_recovery_counters(r);
  // The attaches above left this process's TSC rate (where it has one); 2 ns a tick is
  // a rate no machine here measures.
  r.control->tsc_mult.store(std::uint64_t{2} << 32);
  r.producers[0].full_count.store(11);
  r.producers[0].aborted.store(13);
  r.producers[1].producer_id.store(9);
  r.producers[1].owner.store(ringbus::layout::owner::make(ringbus::layout::owner::active, kDeadPid));
  const std::uint32_t group_slot = ringbus::read_stats(s).groups.at(0).slot;
  ringbus::layout::GroupSlot& gs = r.groups[group_slot];
  gs.worker[0].voids_seen.store(17);
  gs.worker[0].handler_errors.store(19);
  gs.worker[1].owner.store(ringbus::layout::owner::make(ringbus::layout::owner::active, kDeadPid));
  gs.worker[1].owner_start.store(0);
  gs.worker[1].inflight.store(4096 | 2);  // two processes died in a row handling the event at 4096

  const Result json = ringbus_run({"info", "--json", path});
  ASSERT_EQ(json.code, 0) << json.err;
  simdjson::ondemand::parser parser;
  simdjson::padded_string text(json.out);
  simdjson::ondemand::document doc = parser.iterate(text);
  simdjson::ondemand::object root = doc.get_object();
  EXPECT_EQ(uint64_t(root["published"].get_uint64()), 1u);
  EXPECT_EQ(uint64_t(root["back_pressure"].get_uint64()), 11u);
  EXPECT_EQ(uint64_t(root["producers_recovered"].get_uint64()), 2u);
  EXPECT_EQ(uint64_t(root["holes_padded"].get_uint64()), 3u);
  EXPECT_EQ(uint64_t(root["records_voided"].get_uint64()), 5u);
  EXPECT_EQ(uint64_t(root["latches_released"].get_uint64()), 7u);
  EXPECT_EQ(uint64_t(root["stalls_unresolved"].get_uint64()), 8u);
  EXPECT_EQ(uint64_t(root["tsc_hz"].get_uint64()), 500'000'000u);
  std::vector<std::string> producers;
  for (auto item : root["producers"].get_array()) {
    simdjson::ondemand::object pr = item.get_object();
    const uint64_t id = pr["producer_id"].get_uint64();
    const bool alive = pr["alive"].get_bool();
    const uint64_t full = pr["full"].get_uint64();
    const uint64_t aborted = pr["aborted"].get_uint64();
    const bool exclusive = pr["exclusive"].get_bool();
    producers.push_back(std::to_string(id) + (alive ? " alive " : " dead ") + std::to_string(full) + " " +
                        std::to_string(aborted) + (exclusive ? " exclusive" : ""));
  }
  EXPECT_EQ(producers, (std::vector<std::string>{"7 alive 11 13", "9 dead 0 0"}));
  std::vector<std::string> workers;
  for (auto gr : root["groups"].get_array()) {
    for (auto w : gr.get_object()["worker"].get_array()) {
      simdjson::ondemand::object wo = w.get_object();
      const uint64_t index = wo["index"].get_uint64();
      const uint64_t pid = wo["pid"].get_uint64();
      const bool alive = wo["alive"].get_bool();
      const uint64_t voids = wo["voids"].get_uint64();
      const uint64_t errors = wo["handler_errors"].get_uint64();
      const uint64_t deaths = wo["deaths_in_flight"].get_uint64();
      const std::string died_at = minified(wo["died_at"].value());
      workers.push_back(std::to_string(index) + " " + std::to_string(pid) + (alive ? " alive " : " dead ") +
                        std::to_string(voids) + " " + std::to_string(errors) + " " + std::to_string(deaths) + " " +
                        died_at);
    }
  }
  const std::string me = std::to_string(::getpid());
  EXPECT_EQ(workers, (std::vector<std::string>{"0 " + me + " alive 17 19 0 null",
                                               "1 " + std::to_string(kDeadPid) + " dead 0 0 2 4096"}));

  const Result plain = ringbus_run({"info", path});
  ASSERT_EQ(plain.code, 0) << plain.err;
  for (const std::string& want :
       {std::string("capacity 8 MiB  max event 1536 KiB"), std::string("published 1  back-pressure 11"),
        std::string("recovery: producers 2  holes padded 3  records voided 5  latches released 7"),
        std::string("  stalls unresolved 8\n"), std::string("\n  clock: TSC rate 0.500000 GHz shared by")}) {
    EXPECT_NE(plain.out.find(want), std::string::npos) << want << "\n" << plain.out;
  }
  EXPECT_TRUE(std::regex_search(plain.out, std::regex(R"(by pid [0-9]+ \(exited\))"))) << plain.out;
  EXPECT_NE(plain.out.find("\nproducers (2)\n"), std::string::npos) << "no exclusive producer\n" << plain.out;
  EXPECT_TRUE(std::regex_search(plain.out, std::regex(R"(\n +0 +7 +[0-9]+ +active +2 +1 +11\n)"))) << plain.out;
  EXPECT_TRUE(std::regex_search(plain.out, std::regex(R"(\n +1 +9 +1073741808 +active! )"))) << plain.out;
  EXPECT_TRUE(std::regex_search(plain.out, std::regex(R"(worker +0 +pid +[0-9]+ +running .* voids 17  errors 19\n)")))
      << plain.out;
  EXPECT_TRUE(std::regex_search(plain.out, std::regex(R"(worker +1 +pid +1073741808 +dead .*  errors 0  died handling position 4096: 2 times in a row\n)")))
      << plain.out;
  EXPECT_EQ(plain.out.find("died handling position", plain.out.find("worker  0")),
            plain.out.find("died handling position 4096"))
      << "worker 0 has no deaths to show\n" << plain.out;

  // --replace makes a new, empty segment in its place.
  const Result replaced = ringbus_run({"create", ignored, "--path", path, "--capacity", "1M", "--replace"});
  ASSERT_EQ(replaced.code, 0) << replaced.err;
  const Result after = ringbus_run({"info", "--json", path});
  EXPECT_NE(after.out.find("\"capacity\":1048576"), std::string::npos) << after.out;
  EXPECT_NE(after.out.find("\"published\":0"), std::string::npos) << after.out;
  EXPECT_NE(after.out.find("\"tsc_hz\":0,"), std::string::npos) << "no rate shared yet\n" << after.out;
  const Result plain_after = ringbus_run({"info", path});
  EXPECT_NE(plain_after.out.find("\n  clock: no TSC rate shared yet\n"), std::string::npos) << plain_after.out;
}

// After a process died handling an event, `info` says which events the next process of
// the group delivers again marked redelivered (those its last process may have handled):
// in JSON the window's end, in text the positions, for a worker nobody runs. The next
// process delivers exactly those marked.
TEST(Cli, InfoShowsWhatTheNextProcessDeliversAgainMarked) {
  ToolSegment seg({"--capacity", "64K", "--max-event", "1K"});
  const ringbus::Segment s = seg.open();
  { const ringbus::ConsumerGroup registered = ringbus::ConsumerGroup::join(s, "orders"); }
  ringbus::Producer p = ringbus::Producer::attach(s, {});
  const std::vector<std::byte> payload(100, std::byte{1});
  for (int i = 0; i < 3; ++i) ASSERT_EQ(p.publish(1, 1, payload), ringbus::Status::ok);
  const std::uint64_t second = ringbus::record_bytes(100);
  const std::uint64_t third = 2 * second;
  const pid_t child = ::fork();
  if (child == 0) {
    ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.batch = 1});
    for (int polls = 0; polls < 1'000'000; ++polls) {
      g.worker(0).poll([&](const ringbus::Event& e) {
        if (e.position() == second) ::raise(SIGKILL);  // dies handling the second event
      });
    }
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));

  const auto worker_json = [&] {
    const Result json = ringbus_run({"info", "--json", seg.name()});
    EXPECT_EQ(json.code, 0) << json.err;
    simdjson::ondemand::parser parser;
    simdjson::padded_string text(json.out);
    simdjson::ondemand::document doc = parser.iterate(text);
    for (auto gr : doc.get_object()["groups"].get_array()) {
      for (auto w : gr.get_object()["worker"].get_array()) {
        simdjson::ondemand::object wo = w.get_object();
        const std::uint64_t cursor = wo["cursor"].get_uint64();
        return std::to_string(cursor) + " " + minified(wo["redeliver_until"].value());
      }
    }
    return std::string("no worker");
  };
  const std::string dead = worker_json();
  const std::uint64_t cursor = std::stoull(dead);
  ASSERT_LE(cursor, second) << dead;
  // The window ends where the record the process died in ends.
  EXPECT_EQ(dead, std::to_string(cursor) + " " + std::to_string(third));
  const Result plain = ringbus_run({"info", seg.name()});
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_NE(plain.out.find("the next process delivers again, marked redelivered, the events that start in [" +
                           std::to_string(cursor) + ", " + std::to_string(third) + ")"),
            std::string::npos)
      << plain.out;

  // What it said: the next process delivers those marked, and the third event unmarked.
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.batch = 1});
  std::vector<std::string> delivered;
  while (g.worker(0).poll([&](const ringbus::Event& e) {
    delivered.push_back(std::to_string(e.position()) + (e.redelivered() ? " marked" : ""));
  }) != 0) {
  }
  std::vector<std::string> want;
  if (cursor == 0) want.push_back("0 marked");
  want.push_back(std::to_string(second) + " marked");
  want.push_back(std::to_string(third));
  EXPECT_EQ(delivered, want);
  // Handled: no window, and a live worker's is not shown.
  EXPECT_EQ(worker_json(), std::to_string(third + second) + " null");
  const Result after = ringbus_run({"info", seg.name()});
  EXPECT_EQ(after.out.find("delivers again"), std::string::npos) << after.out;
}

// Sizes on the command line take every spelling of their unit, in either case; the
// refusal of a capacity that is no power of two names the bytes it was read as.
TEST(Cli, SizesTakeEverySpellingOfTheirUnit) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> as_bytes = {
      {{"3072", "3072b", "3072B"}, "3072"},
      {{"3k", "3K", "3kb", "3KB", "3KiB", "3kib"}, "3072"},
      {{"3m", "3MB", "3MiB", "3mib"}, "3145728"},
      {{"3g", "3GB", "3GiB", "3gib"}, "3221225472"},
      {{"3t", "3TB", "3TiB", "3tib"}, "3298534883328"},
      {{"16777215T"}, "18446742974197923840"},  // the largest count of T that fits in 64 bits
  };
  const std::string name = unique_name("rbcli-size");
  for (const auto& [spellings, bytes] : as_bytes) {
    for (const std::string& text : spellings) {
      const Result r = ringbus_run({"create", name, "--capacity", text});
      EXPECT_EQ(r.code, 1) << text << ": " << r.err;
      EXPECT_NE(r.err.find("capacity " + bytes + " must be a power of two"), std::string::npos) << text << ": " << r.err;
    }
  }
  const Result over = ringbus_run({"create", name, "--capacity", "16777216T"});
  EXPECT_EQ(over.code, 2) << over.err;
  EXPECT_NE(over.err.find("\"16777216T\" is too large"), std::string::npos) << over.err;

  const Result made = ringbus_run({"create", name, "--capacity", "1m", "--max-event", "1500b"});
  ASSERT_EQ(made.code, 0) << made.err;
  ringbus::Segment::remove(ringbus::Location::shm(name));
  EXPECT_NE(made.out.find("capacity 1 MiB, max event 1500 B"), std::string::npos) << made.out;

  const Result cpus = ringbus_run({"demo", "--cpus", "0,,1"});
  EXPECT_EQ(cpus.code, 2);
  EXPECT_NE(cpus.err.find("\"0,,1\" is not a list of CPU numbers"), std::string::npos) << cpus.err;
}

// A segment named as the tool's messages name it ("shm:NAME", copied from an error) is
// that segment; it was refused as a name with a ':'.
TEST(Cli, ASegmentIsTakenAsMessagesNameIt) {
  const std::string name = unique_name("rbcli-named");
  const Result made = ringbus_run({"create", "shm:" + name, "--capacity", "64K", "--max-event", "1K"});
  ASSERT_EQ(made.code, 0) << made.err;
  EXPECT_EQ(made.out.rfind("created shm:" + name + ": ", 0), 0u) << made.out;
  const Result info = ringbus_run({"info", "shm:" + name});
  EXPECT_EQ(info.code, 0) << info.err;
  EXPECT_EQ(info.out.rfind("segment shm:" + name + "  layout", 0), 0u) << info.out;
  const Result rm = ringbus_run({"rm", "shm:" + name});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(ringbus_run({"info", name}).code, 4) << "removed";
}

// "2026-12-04T22:30:15.123Z": a failure time as `dlq list` and `show` print it.
std::string utc_ms(std::uint64_t ns) {
  const auto t = static_cast<std::time_t>(ns / 1'000'000'000ull);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<unsigned>(ns / 1'000'000 % 1000));
  return buf;
}

// `dlq show` prints every field of a dead letter and of its event; `dlq list` its
// ring's counters, one row per letter (the error cut at 80 characters, the last
// failure's time) and no column heads when there is nothing to list.
TEST(Cli, DeadLetterShowAndListPrintEveryField) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  ringbus::GroupOptions o;
  o.workers = 2;
  o.retry.max_attempts = 2;
  o.retry.backoff = ringbus::RetryPolicy::Backoff::deferred;
  o.retry.delay = std::chrono::milliseconds(20);  // the first and the last failure 20 ms apart
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", o);
  std::uint64_t key = 1;
  while (ringbus::route(key, 0, 2) != 1) ++key;  // a key of worker 1
  ringbus::Producer p = ringbus::Producer::attach(s);
  for (int i = 0; i < 2; ++i) {
    ringbus::Claim c;
    ASSERT_EQ(p.try_claim(key, 7, 8, c), ringbus::Status::ok);
    std::memset(c.payload().data(), 'x', 8);
    c.set_correlation_id(77);
    c.set_schema_version(3);
    c.set_flags(ringbus::record_flags::redriven);
    c.commit();
  }
  const std::string error = "inventory service refused the reservation: " + std::string(60, 'e') + "|end";
  ASSERT_TRUE(ringbus::test::eventually([&] {
    g.worker(1).poll([&](const ringbus::Event&) -> ringbus::Handled { throw std::runtime_error(error); });
    return ringbus::DeadLetters::open(s, "orders").list().size() == 2;
  }));
  const Result redrive = ringbus_run({"dlq", seg.name(), "orders", "redrive", "--all"});
  EXPECT_NE(redrive.out.find("2 dead letters marked for redelivery to group \"orders\""), std::string::npos)
      << redrive.out;
  EXPECT_NE(redrive.out.find("under the group's retry policy"), std::string::npos) << redrive.out;
  ringbus::DeadLetters dlq = ringbus::DeadLetters::open(s, "orders");
  const std::vector<ringbus::DeadLetter> letters = dlq.list();
  ASSERT_TRUE(dlq.remove(letters[1].id));
  s.refs().dlq_control(0)->full_waits.store(3);
  const ringbus::DeadLetter& d = letters[0];
  ASSERT_GE(d.last_failure_ns - d.first_failure_ns, 20'000'000u);

  const Result list = ringbus_run({"dlq", seg.name(), "orders", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find(", 2 appended, 1 removed, full 3 times)"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("  last failure              next attempt              error\n"), std::string::npos)
      << list.out;
  // No next attempt: no worker has the entry. The error's first 80 bytes, and "..." for the rest.
  EXPECT_NE(list.out.find(utc_ms(d.last_failure_ns) + "  -" + std::string(23, ' ') + "  " + error.substr(0, 80) +
                          "...\n"),
            std::string::npos)
      << list.out;
  EXPECT_EQ(list.out.find(utc_ms(d.first_failure_ns)), std::string::npos) << list.out;

  const Result show = ringbus_run({"dlq", seg.name(), "orders", "show", std::to_string(d.id)});
  ASSERT_EQ(show.code, 0) << show.err;
  const std::map<std::string, std::string> f = fields_of(show.out);
  EXPECT_EQ(f.at("worker"), "1");
  EXPECT_EQ(f.at("first_failure"), "string:" + utc_ms(d.first_failure_ns));
  EXPECT_EQ(f.at("last_failure"), "string:" + utc_ms(d.last_failure_ns));
  EXPECT_EQ(f.at("next_attempt"), "null");
  EXPECT_EQ(f.at("error"), "string:" + error);
  EXPECT_EQ(f.at("event"), "{\"key\": " + std::to_string(key) +
                               ", \"key_seq\": 1, \"type\": 7, \"schema_version\": 3, \"producer_id\": " +
                               std::to_string(p.id()) + ", \"producer_seq\": 1, \"correlation_id\": 77, " +
                               "\"timestamp_ns\": " + std::to_string(d.header.timestamp_ns) +
                               ", \"flags\": " + std::to_string(ringbus::record_flags::redriven) + "}");
  EXPECT_EQ(f.count("envelope"), 0u) << "a payload that is not an envelope is not decoded as one";
  EXPECT_NE(list.out.find("         1       7  "), std::string::npos) << "type 7 is in no registry: its id\n"
                                                                   << list.out;
  // A time that was never set prints as "-".
  auto* entry = reinterpret_cast<ringbus::layout::DlqEntry*>(s.refs().dlq_ring(0) +
                                                             (s.refs().dlq_control(0)->head.load() &
                                                              (s.refs().dlq_capacity - 1)));
  ASSERT_EQ(entry->id, d.id);
  entry->first_failure_ns = 0;
  EXPECT_EQ(fields_of(ringbus_run({"dlq", seg.name(), "orders", "show", std::to_string(d.id)}).out).at("first_failure"),
            "string:-");

  EXPECT_NE(ringbus_run({"dlq", seg.name(), "orders", "purge"}).out.find("purged 1 dead letter of group \"orders\"\n"),
            std::string::npos);
  const Result empty = ringbus_run({"dlq", seg.name(), "orders", "list"});
  EXPECT_NE(empty.out.find("dead letters of group \"orders\": 0 "), std::string::npos) << empty.out;
  EXPECT_EQ(empty.out.find("attempts"), std::string::npos) << empty.out;
}

// A dead letter whose redelivery failed and waits for its next deferred call: `dlq
// list` and `dlq show` say that a worker has it (`delivering`), with the failed call
// counted and when the next call is due, and `dlq redrive` of it says when.
TEST(Cli, DeadLetterListShowsWhenAWaitingRedriveIsCalledAgain) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  {
    ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.retry = {.max_attempts = 1}});
    ringbus::Producer p = ringbus::Producer::attach(s);
    const std::uint64_t v = 7;
    ASSERT_EQ(p.publish(1, 1, std::as_bytes(std::span(&v, 1))), ringbus::Status::ok);
    g.worker(0).poll([](const ringbus::Event&) { return ringbus::Handled::fail; });
  }
  ringbus::DeadLetters dlq = ringbus::DeadLetters::open(s, "orders");
  ASSERT_EQ(dlq.request_redrive(), 1u);
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(
      s, "orders",
      {.retry = {.max_attempts = 5, .backoff = ringbus::RetryPolicy::Backoff::deferred,
                 .delay = std::chrono::hours(1)}});
  const std::uint64_t before = ringbus::detail::realtime_ns();
  g.worker(0).poll_redrives([](const ringbus::Event&) { return ringbus::Handled::fail; });
  const std::uint64_t after = ringbus::detail::realtime_ns();
  const ringbus::DeadLetter d = dlq.list().at(0);
  EXPECT_EQ(d.state, "delivering");
  EXPECT_EQ(d.attempts, 2u) << "the failed call is counted while the worker waits";
  EXPECT_GE(d.next_attempt_ns, before + 3'600'000'000'000u);
  EXPECT_LE(d.next_attempt_ns, after + 3'600'000'000'000u);

  const Result list = ringbus_run({"dlq", seg.name(), "orders", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("  delivering         2  "), std::string::npos) << list.out;
  EXPECT_NE(list.out.find(utc_ms(d.last_failure_ns) + "  " + utc_ms(d.next_attempt_ns) + "  handler returned"),
            std::string::npos)
      << list.out;
  const Result show = ringbus_run({"dlq", seg.name(), "orders", "show", std::to_string(d.id)});
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_EQ(fields_of(show.out).at("next_attempt"), "string:" + utc_ms(d.next_attempt_ns));
  const Result again = ringbus_run({"dlq", seg.name(), "orders", "redrive", std::to_string(d.id)});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, "dead letter " + std::to_string(d.id) +
                           " of group \"orders\" is being delivered to the group's workers (its next call at " +
                           utc_ms(d.next_attempt_ns) + ", by the retry policy)\n");
}

// publish --exclusive attaches as the segment's only producer: refused, naming who is
// attached, while another producer is, and nothing is published; alone, it publishes
// and gives the segment back when it exits.
TEST(Cli, PublishExclusiveNeedsTheSegmentToItself) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  TempFile file(R"({"event_type":"order.created","key":"o-1","data":{"n":1}})" "\n");
  {
    ringbus::Producer other = ringbus::Producer::attach(s, {.producer_id = 5});
    const Result refused = ringbus_run({"publish", "--exclusive", seg.name(), file.path()});
    EXPECT_EQ(refused.code, 1);
    EXPECT_NE(refused.err.find("an exclusive producer needs the segment to itself, and producer slot " +
                               std::to_string(other.slot_index()) + " is attached by pid " +
                               std::to_string(::getpid()) + " (producer id 5)"),
              std::string::npos)
        << refused.err;
    EXPECT_EQ(s.was_tail(), 0u) << "nothing was published";
  }
  const Result alone = ringbus_run({"publish", "--exclusive", seg.name(), file.path()});
  ASSERT_EQ(alone.code, 0) << alone.err;
  EXPECT_GT(s.was_tail(), 0u);
  EXPECT_EQ(s.refs().control->exclusive.load(), 0u) << "given back when the tool exited";
  EXPECT_EQ(ringbus_run({"publish", seg.name(), file.path()}).code, 0);
  const Result tail = ringbus_run({"tail", seg.name(), "--from", "start"});
  EXPECT_EQ(occurrences(tail.out, "order.created"), 2u) << tail.out;
}

// `dlq list`, `redrive` and `purge` take --key and --type: they list, mark, republish
// or remove only the dead letters of that key (its text, as `tail --key` takes it) and
// event type; a type the registry does not have is not found.
TEST(Cli, DeadLettersOfOneKeyOrTypeAreListedRedrivenAndPurged) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  ringbus::ConsumerGroup g = join_dead_lettering(s, "orders");
  publish_dead_letters(seg, g,
                       R"({"event_type":"cart.opened","key":"c-1","data":{"n":1}})" "\n"
                       R"({"event_type":"cart.opened","key":"c-2","data":{"n":2}})" "\n"
                       R"({"event_type":"cart.paid","key":"c-1","data":{"n":3}})" "\n"
                       R"({"event_type":"cart.paid","key":"c-2","data":{"n":4}})" "\n"
                       R"({"event_type":"cart.opened","key":"c-1","data":{"n":5}})" "\n");
  ringbus::DeadLetters dlq = ringbus::DeadLetters::open(s, "orders");
  const std::vector<ringbus::DeadLetter> letters = dlq.list();
  ASSERT_EQ(letters.size(), 5u);
  auto row_of = [](std::uint64_t id) {  // the start of a list row: the id, right-aligned in 6
    const std::string t = std::to_string(id);
    return "\n" + std::string(t.size() < 6 ? 6 - t.size() : 0, ' ') + t + "  ";
  };
  // The ids of the letters in state `state`, by the order they were published in (1..5).
  auto published = [&](const std::string& state) {
    std::vector<std::size_t> out;
    for (const ringbus::DeadLetter& d : dlq.list()) {
      for (std::size_t i = 0; i < letters.size(); ++i) {
        if (letters[i].id == d.id && d.state == state) out.push_back(i + 1);
      }
    }
    return out;
  };

  const Result by_key = ringbus_run({"dlq", seg.name(), "orders", "list", "--key", "c-1"});
  ASSERT_EQ(by_key.code, 0) << by_key.err;
  EXPECT_NE(by_key.out.find("dead letters of group \"orders\": 5 ("), std::string::npos) << by_key.out;
  EXPECT_NE(by_key.out.find("\n3 of them of key \"c-1\"\n"), std::string::npos) << by_key.out;
  EXPECT_EQ(lines_of(by_key.out).size(), 2u + 1u + 3u) << "counts, the filter, column heads, three rows\n"
                                                       << by_key.out;
  for (std::size_t i = 0; i < letters.size(); ++i) {
    EXPECT_EQ(by_key.out.find(row_of(letters[i].id)) != std::string::npos, i % 2 == 0) << i << "\n" << by_key.out;
  }
  const Result both = ringbus_run({"dlq", seg.name(), "orders", "list", "--key", "c-1", "--type", "cart.paid"});
  EXPECT_NE(both.out.find("\n1 of them of key \"c-1\" and type \"cart.paid\"\n"), std::string::npos) << both.out;
  const Result none = ringbus_run({"dlq", seg.name(), "orders", "list", "--type", "cart.lost"});
  EXPECT_EQ(none.code, 4);
  EXPECT_NE(none.err.find("has no event type \"cart.lost\""), std::string::npos) << none.err;
  EXPECT_EQ(ringbus_run({"dlq", seg.name(), "orders", "redrive", std::to_string(letters[0].id), "--key", "c-1"}).code,
            2)
      << "an id names one letter";

  // Marked: c-1's three; asked again, none (they are on their way back).
  const Result marked = ringbus_run({"dlq", seg.name(), "orders", "redrive", "--key", "c-1"});
  ASSERT_EQ(marked.code, 0) << marked.err;
  EXPECT_NE(marked.out.find("3 dead letters of key \"c-1\" marked for redelivery to group \"orders\""),
            std::string::npos)
      << marked.out;
  EXPECT_EQ(published("redrive"), (std::vector<std::size_t>{1, 3, 5}));
  EXPECT_NE(ringbus_run({"dlq", seg.name(), "orders", "redrive", "--key", "c-1"}).out.find("0 dead letters of key"),
            std::string::npos);

  // Republished: the parked cart.paid one (4); the marked one (3) stays marked.
  const Result rep = ringbus_run({"dlq", seg.name(), "orders", "redrive", "--type", "cart.paid", "--republish"});
  ASSERT_EQ(rep.code, 0) << rep.err;
  EXPECT_NE(rep.out.find("republished 1 dead letter of type \"cart.paid\" into"), std::string::npos) << rep.out;
  EXPECT_EQ(published("redrive"), (std::vector<std::size_t>{1, 3, 5}));
  EXPECT_EQ(published("ready"), (std::vector<std::size_t>{2}));
  const std::vector<std::string> tail = lines_of(ringbus_run({"tail", seg.name()}).out);
  ASSERT_EQ(tail.size(), 6u);
  EXPECT_EQ(fields_of(tail[5]).at("data"), R"({"n":4})");

  // Purged: c-2's one left (2), then c-1's cart.opened ones (1 and 5).
  const Result purged = ringbus_run({"dlq", seg.name(), "orders", "purge", "--key", "c-2"});
  EXPECT_NE(purged.out.find("purged 1 dead letter of key \"c-2\" of group \"orders\""), std::string::npos)
      << purged.out;
  EXPECT_EQ(published("ready"), (std::vector<std::size_t>{}));
  ASSERT_EQ(ringbus_run({"dlq", seg.name(), "orders", "purge", "--key", "c-1", "--type", "cart.opened"}).code, 0);
  EXPECT_EQ(published("redrive"), (std::vector<std::size_t>{3}));
}

TEST(Cli, DeadLettersListShowRedrivePurge) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  ringbus::ConsumerGroup g = join_dead_lettering(s, "orders");
  publish_dead_letters(seg, g,
                       R"({"event_type":"order.created","key":"o-1","data":{"n":1}})" "\n"
                       R"({"event_type":"order.created","key":"o-2","data":{"n":2}})" "\n"
                       R"({"event_type":"order.created","key":"o-3","data":{"n":3}})" "\n");
  const std::vector<ringbus::DeadLetter> letters = ringbus::DeadLetters::open(s, "orders").list();
  ASSERT_EQ(letters.size(), 3u);

  const Result list = ringbus_run({"dlq", seg.name(), "orders", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("dead letters of group \"orders\": 3"), std::string::npos) << list.out;
  for (const ringbus::DeadLetter& d : letters) {
    // The event type by the name it was published under, not its id.
    EXPECT_NE(list.out.find(std::to_string(d.header.key) + "         1  order.created  "), std::string::npos)
        << list.out;
  }
  const Result show = ringbus_run({"dlq", seg.name(), "orders", "show", std::to_string(letters[1].id)});
  ASSERT_EQ(show.code, 0) << show.err;
  {
    const std::map<std::string, std::string> f = fields_of(show.out);
    EXPECT_EQ(f.at("id"), std::to_string(letters[1].id));
    EXPECT_EQ(f.at("attempts"), "1");
    EXPECT_EQ(f.at("position"), std::to_string(letters[1].position));
    // An envelope is also shown decoded, as `ringbus tail` prints it.
    EXPECT_EQ(f.at("envelope"), ringbus_run({"tail", seg.name(), "--key", "o-2"}).out.substr(0, f.at("envelope").size()));
    EXPECT_NE(f.at("envelope").find(R"("event_type":"order.created")"), std::string::npos) << show.out;
    EXPECT_NE(f.at("envelope").find(R"("key":"o-2","data":{"n":2})"), std::string::npos) << show.out;
  }
  EXPECT_EQ(ringbus_run({"dlq", seg.name(), "orders", "show", "999999"}).code, 4);
  EXPECT_EQ(ringbus_run({"dlq", seg.name(), "nogroup", "list"}).code, 4);
  // A ring damaged in shared memory is reported, not listed short.
  std::atomic<std::uint64_t>& dlq_tail = s.refs().dlq_control(0)->tail;
  const std::uint64_t ring_tail = dlq_tail.load();
  dlq_tail.store(ring_tail + 4);
  const Result damaged = ringbus_run({"dlq", seg.name(), "orders", "list"});
  EXPECT_EQ(damaged.code, 1) << damaged.err;
  EXPECT_NE(damaged.err.find("group \"orders\": dead-letter ring damaged: head 0 and tail " +
                             std::to_string(ring_tail + 4)),
            std::string::npos)
      << damaged.err;
  dlq_tail.store(ring_tail);

  // Republish one: it is appended to the log again and leaves the ring.
  const Result rep = ringbus_run({"dlq", seg.name(), "orders", "redrive", std::to_string(letters[0].id), "--republish"});
  ASSERT_EQ(rep.code, 0) << rep.err;
  EXPECT_EQ(ringbus::DeadLetters::open(s, "orders").list().size(), 2u);
  const std::vector<std::string> tail = lines_of(ringbus_run({"tail", seg.name()}).out);
  ASSERT_EQ(tail.size(), 4u);
  EXPECT_EQ(fields_of(tail[3]).at("data"), R"({"n":1})");
  EXPECT_EQ(fields_of(tail[3]).at("key"), "string:o-1");

  // Redeliver another to the running group: removed once its handler accepts it. Marked,
  // it is marked once, and not republished as well.
  const std::string second = std::to_string(letters[1].id);
  ASSERT_EQ(ringbus_run({"dlq", seg.name(), "orders", "redrive", second}).code, 0);
  const Result again = ringbus_run({"dlq", seg.name(), "orders", "redrive", second});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, "dead letter " + second +
                           " of group \"orders\" is marked for redelivery to the group's workers already\n");
  const Result twice = ringbus_run({"dlq", seg.name(), "orders", "redrive", second, "--republish"});
  EXPECT_EQ(twice.code, 1);
  EXPECT_EQ(twice.err, "ringbus: dead letter " + second +
                           " of group \"orders\" is marked for redelivery to the group's workers already: not "
                           "republished\n");
  EXPECT_EQ(lines_of(ringbus_run({"tail", seg.name()}).out).size(), 4u) << "nothing republished";
  std::uint64_t redriven = 0;
  g.worker(0).poll_redrives([&](const ringbus::Event&) {
    ++redriven;
    return ringbus::Handled::ok;
  });
  EXPECT_EQ(redriven, 1u);
  EXPECT_EQ(ringbus::DeadLetters::open(s, "orders").list().size(), 1u);

  const Result unknown = ringbus_run({"dlq", seg.name(), "orders", "redrive", "999999"});
  EXPECT_EQ(unknown.code, 4);
  EXPECT_NE(unknown.err.find("group \"orders\" has no dead letter 999999"), std::string::npos) << unknown.err;
  // Which dead letters: one id or --all, never neither nor both; nothing is marked then.
  for (const std::vector<std::string>& which : {std::vector<std::string>{}, {std::to_string(letters[2].id), "--all"}}) {
    std::vector<std::string> args = {"dlq", seg.name(), "orders", "redrive"};
    args.insert(args.end(), which.begin(), which.end());
    const Result r = ringbus_run(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find("give one dead letter id, or --all"), std::string::npos) << r.err;
    EXPECT_EQ(ringbus::DeadLetters::open(s, "orders").list().at(0).state, "ready");
  }

  // A log that refuses the republished event keeps the dead letter where it was.
  {
    ringbus::Producer filler = ringbus::Producer::attach(s);
    for (const std::size_t bytes : {1000, 0}) {  // large events, then the smallest into what is left
      const std::vector<std::byte> payload(bytes);
      while (filler.try_publish(0, 1, payload) == ringbus::Status::ok) {
      }
    }
  }
  const Result refused = ringbus_run({"dlq", seg.name(), "orders", "redrive", "--all", "--republish"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.out.find("republished 0 dead letters"), std::string::npos) << refused.out;
  EXPECT_NE(refused.err.find("stopped: the log refused the next one (full)"), std::string::npos) << refused.err;
  ASSERT_EQ(ringbus::DeadLetters::open(s, "orders").list().size(), 1u);
  EXPECT_EQ(ringbus::DeadLetters::open(s, "orders").list()[0].id, letters[2].id);

  const Result purge = ringbus_run({"dlq", seg.name(), "orders", "purge"});
  EXPECT_EQ(purge.code, 0) << purge.err;
  EXPECT_TRUE(ringbus::DeadLetters::open(s, "orders").list().empty());
}

// A group whose processes are gone for good holds producers back once the log is a lap
// ahead of its cursor: `group rm` unregisters it. Not while a live process runs it, nor
// while dead letters that would go with it are there, unless asked.
TEST(Cli, GroupRmLetsProducersPassAGroupNobodyRuns) {
  ToolSegment seg({"--capacity", "64K", "--max-event", "1K"});
  const ringbus::Segment s = seg.open();
  ringbus::Producer p = ringbus::Producer::attach(s);
  const std::vector<std::byte> payload(100);
  {
    ringbus::ConsumerGroup g = join_dead_lettering(s, "orders");
    ASSERT_EQ(p.try_publish(0, 1, payload), ringbus::Status::ok);
    while (g.worker(0).poll([](const ringbus::Event&) { return ringbus::Handled::fail; }, 100) != 0) {
    }
    ASSERT_EQ(ringbus::DeadLetters::open(s, "orders").list().size(), 1u);
    const Result busy = ringbus_run({"group", seg.name(), "orders", "rm"});
    EXPECT_EQ(busy.code, 1);
    EXPECT_NE(busy.err.find("is run by live pid " + std::to_string(::getpid()) + " (worker 0): stop it first"),
              std::string::npos)
        << busy.err;
    ASSERT_EQ(p.try_publish(0, 1, payload), ringbus::Status::ok);  // behind, but run
    const Result info = ringbus_run({"info", seg.name()});
    EXPECT_EQ(info.out.find("run by nobody"), std::string::npos) << info.out;
  }
  // Run by nobody now, it still holds the producer back.
  while (p.try_publish(0, 1, payload) == ringbus::Status::ok) {
  }
  ASSERT_EQ(p.try_publish(0, 1, payload), ringbus::Status::full);
  const Result info = ringbus_run({"info", seg.name()});
  EXPECT_NE(info.out.find("    run by nobody, 100% of a lap behind: it holds producers back once the log is a lap "
                          "ahead of it; if it is retired, `ringbus group " + seg.name() + " orders rm` unregisters it"),
            std::string::npos)
      << info.out;
  const Result kept = ringbus_run({"group", seg.name(), "orders", "rm"});
  EXPECT_EQ(kept.code, 1);
  EXPECT_NE(kept.err.find("holds 1 dead letter, which would go with it: republish or purge it (ringbus dlq " +
                          seg.name() + " orders redrive --all --republish, or purge)"),
            std::string::npos)
      << kept.err;
  EXPECT_NE(kept.err.find("not removed"), std::string::npos) << kept.err;
  EXPECT_EQ(p.try_publish(0, 1, payload), ringbus::Status::full);

  const Result removed = ringbus_run({"group", seg.name(), "orders", "rm", "--discard-dead-letters"});
  ASSERT_EQ(removed.code, 0) << removed.err;
  EXPECT_NE(removed.out.find("removed group \"orders\" of segment shm:" + seg.name() + ": its cursor was at " +
                                std::to_string(ringbus::record_bytes(100)) + ", 64 KiB behind the tail;"),
            std::string::npos)
      << removed.out;
  EXPECT_NE(removed.out.find("; 1 dead letter discarded"), std::string::npos) << removed.out;
  EXPECT_EQ(p.try_publish(0, 1, payload), ringbus::Status::ok);
  // Gone, with its dead letters.
  const Result again = ringbus_run({"group", seg.name(), "orders", "rm"});
  EXPECT_EQ(again.code, 4);
  EXPECT_NE(again.err.find("has no group \"orders\""), std::string::npos) << again.err;
  EXPECT_EQ(ringbus_run({"dlq", seg.name(), "orders", "list"}).code, 4);
  // A group whose process was killed: removed as well.
  const pid_t child = ::fork();
  if (child == 0) {
    const ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "killed");
    ::raise(SIGKILL);
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  const Result killed = ringbus_run({"group", seg.name(), "killed", "rm"});
  EXPECT_EQ(killed.code, 0) << killed.err;
  EXPECT_NE(killed.out.find("removed group \"killed\""), std::string::npos) << killed.out;
  // The subcommand first, as `ringbus rm` is written.
  const Result order = ringbus_run({"group", "rm", seg.name(), "orders"});
  EXPECT_EQ(order.code, 2);
  EXPECT_NE(order.err.find("ringbus group NAME GROUP rm"), std::string::npos) << order.err;
}

// A group without dead letters stops on an event its handler never accepts, and a
// restart stops there again: `group skip --to` the next record moves it past.
TEST(Cli, GroupSkipMovesAStuckGroupPastAnEventNoHandlerAccepts) {
  ToolSegment seg({"--capacity", "64K", "--max-event", "1K", "--dlq", "0"});
  const ringbus::Segment s = seg.open();
  TempFile file(R"({"event_type":"order","key":"o-1","data":{"n":1}})" "\n"
                R"({"event_type":"order","key":"o-1","data":{"poison":true}})" "\n"
                R"({"event_type":"order","key":"o-1","data":{"n":3}})" "\n");
  auto handle = [](std::vector<std::uint64_t>& handled) {
    return [&handled](const ringbus::Event& e) {
      const bool poison = std::string_view(reinterpret_cast<const char*>(e.payload().data()), e.payload().size())
                              .find("poison") != std::string_view::npos;
      if (!poison) handled.push_back(e.position());
      return poison ? ringbus::Handled::fail : ringbus::Handled::ok;
    };
  };
  std::vector<std::uint64_t> handled;
  std::uint64_t stuck_at = 0;
  {
    ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.dead_letters = false});
    ASSERT_EQ(ringbus_run({"publish", seg.name(), file.path()}).code, 0);
    try {
      while (g.worker(0).poll(handle(handled), 100) != 0) {
      }
      FAIL() << "the poison event was accepted";
    } catch (const ringbus::HandlerFailed& e) {
      stuck_at = e.position();
    }
    ASSERT_EQ(handled.size(), 1u);
    const Result busy = ringbus_run({"group", seg.name(), "orders", "skip", "--to", "end"});
    EXPECT_EQ(busy.code, 1);
    EXPECT_NE(busy.err.find("run by live pid"), std::string::npos) << busy.err;
  }
  const Result tail = ringbus_run({"tail", seg.name(), "--from", std::to_string(stuck_at), "-n", "2"});
  ASSERT_EQ(tail.code, 0) << tail.err;
  const std::string next = tail.out.substr(tail.out.find('\n') + 1);
  ASSERT_EQ(next.rfind("{\"position\":", 0), 0u) << tail.out;
  const std::string next_position = next.substr(12, next.find(',') - 12);

  for (const auto& [to, says] : std::vector<std::pair<std::string, std::string>>{
           {std::to_string(stuck_at + 8), "is inside the record at " + std::to_string(stuck_at)},
           {"0", "is behind " + std::to_string(stuck_at) + ", the group's cursor: cursors only move forward"},
           {"999999992", "is beyond the log's tail"}}) {
    const Result refused = ringbus_run({"group", seg.name(), "orders", "skip", "--to", to});
    EXPECT_EQ(refused.code, 1) << to;
    EXPECT_NE(refused.err.find("position " + to + " " + says), std::string::npos) << refused.err;
  }
  const Result usage = ringbus_run({"group", seg.name(), "orders", "skip", "--to", "start"});
  EXPECT_EQ(usage.code, 2);
  EXPECT_NE(usage.err.find("\"start\" is not end or a position"), std::string::npos) << usage.err;
  EXPECT_EQ(ringbus_run({"group", seg.name(), "missing", "skip", "--to", "end"}).code, 4);

  const Result skipped = ringbus_run({"group", seg.name(), "orders", "skip", "--to", next_position});
  ASSERT_EQ(skipped.code, 0) << skipped.err;
  EXPECT_NE(skipped.out.find("group \"orders\" of segment shm:" + seg.name() + ": cursors moved forward from " +
                             std::to_string(stuck_at) + " to " + next_position + ": "),
            std::string::npos)
      << skipped.out;
  {
    ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.dead_letters = false});
    while (g.worker(0).poll(handle(handled), 100) != 0) {
    }
    ASSERT_EQ(handled.size(), 2u);
    EXPECT_EQ(std::to_string(handled[1]), next_position);
  }
  // To the tail: what was published while nobody ran the group is not delivered to it.
  ASSERT_EQ(ringbus_run({"publish", seg.name(), file.path()}).code, 0);
  const Result to_end = ringbus_run({"group", seg.name(), "orders", "skip", "--to", "end"});
  ASSERT_EQ(to_end.code, 0) << to_end.err;
  EXPECT_NE(to_end.out.find(" to the tail, "), std::string::npos) << to_end.out;
  ringbus::ConsumerGroup g = ringbus::ConsumerGroup::join(s, "orders", {.dead_letters = false});
  EXPECT_EQ(g.worker(0).poll(handle(handled), 100), 0u);
}

// Output that does not all reach standard output (here a full disk) fails the command,
// the cause named once, however the command writes: event by event (tail), refresh by
// refresh (stat --watch), all at once (stat), through fmt in one piece larger than
// stdio's buffer (dlq show of an 8 KiB payload), or buffered until the tool exits (info,
// --help). A reader that goes away (tail | head) is not a failure.
TEST(Cli, OutputThatCannotBeWrittenFailsTheCommandNamingWhy) {
  ToolSegment seg;
  std::string lines;
  for (int i = 0; i < 2000; ++i) lines += R"({"event_type":"A","key":"k)" + std::to_string(i % 7) + R"(","data":{}})" "\n";
  const TempFile input(lines);
  ASSERT_EQ(ringbus_run({"publish", seg.name(), input.path()}).code, 0);
  {
    const ringbus::Segment s = seg.open();
    ringbus::ConsumerGroup g = join_dead_lettering(s, "orders");
    ringbus::Producer p = ringbus::Producer::attach(s);
    ringbus::Claim c;
    ASSERT_EQ(p.try_claim(1, 7, 8192, c), ringbus::Status::ok);
    std::memset(c.payload().data(), 'x', 8192);
    c.commit();
    ASSERT_TRUE(ringbus::test::eventually([&] {
      g.worker(0).poll([&](const ringbus::Event&) -> ringbus::Handled { throw std::runtime_error("refused"); });
      return ringbus::DeadLetters::open(s, "orders").list().size() == 1;
    }));
  }
  const std::string id = std::to_string(ringbus::DeadLetters::open(seg.open(), "orders").list().at(0).id);
  const int full = ::open("/dev/full", O_WRONLY);
  ASSERT_GE(full, 0);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"tail", seg.name()},
           {"stat", seg.name(), "--watch", "--count", "3", "--interval", "0.05"},
           {"stat", seg.name()},
           {"stat", seg.name(), "--prometheus"},
           {"dlq", seg.name(), "orders", "show", id},
           {"dlq", seg.name(), "orders", "list"},
           {"info", seg.name()},
           {"info", seg.name(), "--json"},
           {"--help"}}) {
    const Result r = Child(args, "", {}, full).wait();
    EXPECT_EQ(r.code, 1) << args[0];
    EXPECT_EQ(r.err, "ringbus: cannot write standard output: No space left on device\n") << args[0];
  }
  ::close(full);
  // The same commands write in full to a file: the output above was big enough to fail.
  EXPECT_GT(ringbus_run({"tail", seg.name()}).out.size(), 8192U);
  EXPECT_GT(ringbus_run({"dlq", seg.name(), "orders", "show", id}).out.size(), 8192U);

  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ::close(fds[0]);  // the reader has gone
  const Result gone = Child({"tail", seg.name()}, "", {}, fds[1]).wait();
  ::close(fds[1]);
  EXPECT_EQ(gone.code, 0);
  EXPECT_EQ(gone.err, "");
}

// A segment another user owns (created with a mode that lets a group share it), or one
// whose mode was widened since its creation, is refused by every command that attaches,
// naming the flag that accepts it; with that flag the command runs.
TEST(Cli, AnotherUsersOrWidenedSegmentIsOpenedOnlyWithItsFlag) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a file to another user needs root";
  const std::string path = "/tmp/" + unique_name("cli-owner") + ".seg";
  ASSERT_EQ(ringbus_run({"create", path, "--mode", "0660"}).code, 0);
  const TempFile line(R"({"event_type":"a","data":1})" "\n");
  const std::vector<std::vector<std::string>> commands = {{"info", path},
                                                          {"stat", path},
                                                          {"tail", path},
                                                          {"publish", path, line.path()},
                                                          {"dlq", path, "g", "list"}};
  struct Case {
    const char* flag;
    std::string why;
  };
  for (const auto& [flag, why] : {Case{"--allow-other-owner", "is owned by uid 65534, not by this user (uid 0)"},
                                  Case{"--allow-wider-mode", "mode 0666 is wider than 0660 asked for at creation"}}) {
    SCOPED_TRACE(flag);
    if (std::string_view(flag) == "--allow-other-owner") {
      ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
    } else {
      ASSERT_EQ(::chown(path.c_str(), 0, 0), 0);
      ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
    }
    for (std::vector<std::string> args : commands) {
      const Result refused = ringbus_run(args);
      EXPECT_EQ(refused.code, 1) << args[0];
      EXPECT_EQ(refused.err, "ringbus: segment " + path + ": " + why + "; pass " + flag + " to accept it\n")
          << args[0];
      args.insert(args.begin() + (args[0] == "dlq" ? 3 : 2), flag);
      const Result allowed = ringbus_run(args);
      if (args[0] == "dlq") {
        EXPECT_EQ(allowed.code, 4) << allowed.err;
        EXPECT_NE(allowed.err.find("group \"g\": no such group"), std::string::npos) << allowed.err;
      } else {
        EXPECT_EQ(allowed.code, 0) << args[0] << ": " << allowed.err;
      }
    }
  }
  EXPECT_EQ(lines_of(ringbus_run({"tail", path, "--allow-wider-mode"}).out).size(), 2u) << "one line each time";
  ::unlink(path.c_str());
}

using ToolRun = std::function<Result(std::vector<std::string>)>;

// What a process that may only read `path` (one event, {"qty":1}, published from `line`)
// sees through `run`: info, stat and tail open it read-only; publish and dlq, which
// write, fail with status 1 (`refused` checks their standard error), and publish nothing.
void expect_only_inspects(const ToolRun& run, const std::string& path, const std::string& line,
                          const std::function<void(const std::string&)>& refused) {
  const Result info = run({"info", path});
  EXPECT_EQ(info.code, 0) << info.err;
  EXPECT_NE(info.out.find("published 1"), std::string::npos) << info.out;
  const Result json = run({"info", path, "--json"});
  EXPECT_EQ(json.code, 0) << json.err;
  EXPECT_NE(json.out.find("\"published\":1,"), std::string::npos) << json.out;
  const Result stat = run({"stat", path, "--prometheus"});
  EXPECT_EQ(stat.code, 0) << stat.err;
  EXPECT_NE(stat.out.find("ringbus_published_events_total{segment=\"" + path + "\"} 1"), std::string::npos)
      << stat.out;
  const Result tail = run({"tail", path, "--type", "Order", "--key", "k"});
  EXPECT_EQ(tail.code, 0) << tail.err;
  ASSERT_EQ(lines_of(tail.out).size(), 1u) << tail.out;
  EXPECT_EQ(fields_of(tail.out).at("data"), R"({"qty":1})");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"publish", path, line}, {"dlq", path, "g", "list"}}) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 1) << args[0];
    refused(r.err);
  }
  EXPECT_EQ(lines_of(ringbus_run({"tail", path}).out).size(), 1u) << "nothing was published";
}

// A user who may only read a segment (another user's, mode 0644) inspects it: info, stat
// and tail open it read-only. publish and dlq, which write, are refused, naming why.
TEST(Cli, AUserWhoMayOnlyReadASegmentInspectsIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "running as another user needs root";
  constexpr uid_t kNobody = 65534;
  const std::string path = "/tmp/" + unique_name("cli-reader") + ".seg";
  ASSERT_EQ(ringbus_run({"create", path, "--mode", "0644"}).code, 0);
  const TempFile line(R"({"event_type":"Order","key":"k","data":{"qty":1}})" "\n");
  ASSERT_EQ(ringbus_run({"publish", path, line.path()}).code, 0);
  const ToolRun as_reader = [&](std::vector<std::string> args) {
    args.emplace_back("--allow-other-owner");
    return Child(args, "", {}, -1, kNobody).wait();
  };
  const Result info = as_reader({"info", path});
  if (info.code == 121) GTEST_SKIP() << "this root may not become user " << kNobody;
  if (info.code == 126 || info.code == 127) GTEST_SKIP() << "user " << kNobody << " cannot run " << RINGBUS_TOOL;
  expect_only_inspects(as_reader, path, line.path(), [&](const std::string& err) {
    EXPECT_EQ(err, "ringbus: segment " + path + ": cannot open: Permission denied\n");
  });
  ::unlink(path.c_str());
}

// A process of another pid namespace (a container sharing the host's /dev/shm) would
// judge the segment's processes by pids that name others there: info, stat and tail
// open the segment read-only, and what writes is refused, naming why.
TEST(Cli, AProcessOfAnotherPidNamespaceOnlyInspectsASegment) {
  const std::string path = "/tmp/" + unique_name("cli-pidns") + ".seg";
  ASSERT_EQ(ringbus_run({"create", path}).code, 0);
  const TempFile line(R"({"event_type":"Order","key":"k","data":{"qty":1}})" "\n");
  ASSERT_EQ(ringbus_run({"publish", path, line.path()}).code, 0);
  const ToolRun elsewhere = [&](std::vector<std::string> args) { return Child(args, "", {}, -1, 0, -1, true).wait(); };
  const Result info = elsewhere({"info", path});
  if (info.code == 122) GTEST_SKIP() << "this process may not make a pid namespace";
  // Whether the segment's processes are alive cannot be told from another namespace.
  EXPECT_NE(info.out.find(" (in another pid namespace)\n  pid namespace "), std::string::npos) << info.out;
  EXPECT_NE(info.out.find(": opened read-only; the pids below are that namespace's, and whether they are alive is not "
                          "known here\n"),
            std::string::npos)
      << info.out;
  EXPECT_NE(elsewhere({"info", path, "--json"}).out.find("\"other_pid_namespace\":true,"), std::string::npos);
  EXPECT_NE(ringbus_run({"info", path, "--json"}).out.find("\"other_pid_namespace\":false,"), std::string::npos);
  expect_only_inspects(elsewhere, path, line.path(), [&](const std::string& err) {
    EXPECT_TRUE(err.starts_with("ringbus: segment " + path + ": was created in pid namespace ")) << err;
    EXPECT_TRUE(err.ends_with(": the processes of a segment must share one, as a process is known dead by its pid; "
                              "open it read-only to look at it\n"))
        << err;
  });
  ::unlink(path.c_str());
}

// A producer that died holding a claim leaves a hole; with no consumer group nothing else
// repaired it, and `tail` stopped there, status 0, with every later event unseen (-f
// waited for ever). tail repairs it after 0.1 s; a user who may only read the segment
// cannot, and tail says where it stopped and why, with status 1.
TEST(Cli, TailPassesADeadProducersClaimOrSaysWhereItStopped) {
  const std::string path = "/tmp/" + unique_name("cli-hole") + ".seg";
  ASSERT_EQ(ringbus_run({"create", path, "--mode", "0644"}).code, 0);
  const TempFile one(R"({"event_type":"a","data":1})" "\n");
  const TempFile two(R"({"event_type":"a","data":2})" "\n");
  ASSERT_EQ(ringbus_run({"publish", path, one.path()}).code, 0);
  const pid_t child = ::fork();
  if (child == 0) {  // claims, and dies before its commit
    const ringbus::Segment s = ringbus::Segment::open(ringbus::Location::file(path));
    ringbus::Producer p = ringbus::Producer::attach(s);
    ringbus::Claim c;
    ::_exit(p.try_claim(0, 1, 16, c) == ringbus::Status::ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_EQ(status, 0);
  ASSERT_EQ(ringbus_run({"publish", path, two.path()}).code, 0);

  if (::geteuid() == 0) {
    constexpr uid_t kNobody = 65534;
    const Result held = Child({"tail", path, "--allow-other-owner"}, "", {}, -1, kNobody).wait();
    if (held.code != 121 && held.code != 126 && held.code != 127) {
      EXPECT_EQ(held.code, 1) << held.err;
      ASSERT_EQ(lines_of(held.out).size(), 1u) << held.out;
      EXPECT_EQ(fields_of(held.out).at("data"), "1");
      EXPECT_NE(held.err.find("ringbus tail: stopped at position "), std::string::npos) << held.err;
      EXPECT_NE(held.err.find(": the record claimed there is not committed after 1."), std::string::npos) << held.err;
      EXPECT_NE(held.err.find("this process may only read the segment (this user's permission, or another pid namespace), so cannot "
                                   "repair the claim"), std::string::npos)
          << held.err;
    }
  }
  const Result tail = ringbus_run({"tail", path});
  EXPECT_EQ(tail.code, 0) << tail.err;
  const std::vector<std::string> lines = lines_of(tail.out);
  ASSERT_EQ(lines.size(), 2u) << tail.out;
  EXPECT_EQ(fields_of(lines[1]).at("data"), "2");
  const Result info = ringbus_run({"info", path, "--json"});
  EXPECT_NE(info.out.find("\"producers_recovered\":1,\"holes_padded\":1,"), std::string::npos) << info.out;
  ::unlink(path.c_str());
}

// tail -f and stat --watch end when the segment they follow is removed (status 0) or
// replaced by another of its name (status 1, saying so): they went on showing a segment
// nothing could publish to again, and tail -f missed every event published under its
// name from then on.
TEST(Cli, FollowersEndWhenTheSegmentIsRemovedOrReplaced) {
  for (const bool replace : {false, true}) {
    SCOPED_TRACE(replace ? "replaced" : "removed");
    const std::string name = unique_name("rbcli-gone");
    ASSERT_EQ(ringbus_run({"create", name}).code, 0);
    const TempFile line(R"({"event_type":"a","data":1})" "\n");
    ASSERT_EQ(ringbus_run({"publish", name, line.path()}).code, 0);
    Child tail({"tail", name, "-f"}, "");
    Child stat({"stat", name, "--watch", "--interval", "0.05"}, "");
    std::this_thread::sleep_for(200ms);  // both attached (they would still pass without)
    ASSERT_EQ(ringbus_run(replace ? std::vector<std::string>{"create", name, "--replace"}
                                  : std::vector<std::string>{"rm", name})
                  .code,
              0);
    for (auto [result, command] : {std::pair{tail.wait(), "tail"}, std::pair{stat.wait(), "stat"}}) {
      EXPECT_EQ(result.code, replace ? 1 : 0) << command << "\n" << result.err;
      EXPECT_NE(result.err.find(std::string("ringbus ") + command + ": segment shm:" + name +
                                (replace ? " was replaced by another of that name" : " was removed")),
                std::string::npos)
          << result.err;
    }
    if (replace) ringbus::Segment::remove(ringbus::Location::shm(name));
  }
}

// publish stops when its segment is removed or replaced while it runs: the lines it went
// on publishing reached a segment no reader could open again, and were counted as
// published, with status 0.
TEST(Cli, PublishStopsWhenItsSegmentIsRemovedOrReplaced) {
  for (const bool replace : {false, true}) {
    SCOPED_TRACE(replace ? "replaced" : "removed");
    ToolSegment seg;
    const ringbus::Segment s = seg.open();
    const Fifo fifo;
    Child publisher({"publish", seg.name(), "-"}, fifo.path());
    const int writer = ::open(fifo.path().c_str(), O_WRONLY);
    ASSERT_GE(writer, 0);
    const std::string one = R"({"event_type":"a","data":1})" "\n";
    ASSERT_EQ(::write(writer, one.data(), one.size()), static_cast<ssize_t>(one.size()));
    while (ringbus::read_stats(s).published < 1) std::this_thread::sleep_for(1ms);  // the watchdog bounds this
    ASSERT_EQ(ringbus_run(replace ? std::vector<std::string>{"create", seg.name(), "--replace"}
                                  : std::vector<std::string>{"rm", seg.name()})
                  .code,
              0);
    std::this_thread::sleep_for(1100ms);  // the name is looked at once a second
    const std::string more = R"({"event_type":"a","data":2})" "\n" R"({"event_type":"a","data":3})" "\n";
    ASSERT_EQ(::write(writer, more.data(), more.size()), static_cast<ssize_t>(more.size()));
    ::close(writer);
    const Result r = publisher.wait();
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find("ringbus publish: segment shm:" + seg.name() + " was " +
                         (replace ? "replaced by another of that name" : "removed") +
                         ": line 2 and the lines after it are not published"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find(fmt_count(1, 1)), std::string::npos) << r.err;
    EXPECT_EQ(ringbus::read_stats(s).published, 1u);
  }
}

// With standard error closed (`2>&-`, a daemon's closed descriptor), the tool ended by
// abort (status 134) at its first message: `info` of a missing segment, and `publish` at
// its first bad line, with the lines after it never read. Messages that cannot be
// written are lost; every command ends with its own status.
TEST(Cli, AClosedStandardErrorEndsNothingEarly) {
  auto without_stderr = [](const std::vector<std::string>& args, const std::string& in, const std::string& out) {
    const ToolExec tool(args);
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int i = ::open(in.c_str(), O_RDONLY);
      const int o = ::open(out.c_str(), O_WRONLY);
      if (i < 0 || o < 0 || ::dup2(i, 0) < 0 || ::dup2(o, 1) < 0 || ::close(2) != 0) ::_exit(120);
      tool.exec();
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  };
  const std::string missing = unique_name("rbcli-missing");
  EXPECT_EQ(without_stderr({"info", missing}, "/dev/null", "/dev/null"), 4);
  EXPECT_EQ(without_stderr({"create"}, "/dev/null", "/dev/null"), 2);
  ToolSegment seg;
  const TempFile lines("{bad\n" R"({"event_type":"a","data":1})" "\n");
  EXPECT_EQ(without_stderr({"publish", seg.name(), lines.path()}, "/dev/null", "/dev/null"), 3);
  EXPECT_EQ(without_stderr({"publish", seg.name()}, lines.path(), "/dev/null"), 3);
  EXPECT_EQ(ringbus::read_stats(seg.open()).published, 2u) << "the line after the bad one, twice";
  EXPECT_EQ(without_stderr({"info", seg.name()}, "/dev/null", "/dev/full"), 1);
  EXPECT_EQ(without_stderr({"tail", seg.name()}, "/dev/null", "/dev/null"), 0);
}

// Text from the segment (shared memory: untrusted) reaches a terminal escaped: a handler's
// error message in `dlq list`, a group name in `info`, `stat` and `stat --prometheus`.
// They printed it raw: a newline broke dlq list's one line an entry, and an escape
// sequence written into the segment reached the terminal of whoever looked.
TEST(Cli, TextFromTheSegmentIsShownEscaped) {
  ToolSegment seg;
  const ringbus::Segment s = seg.open();
  ringbus::ConsumerGroup g = join_dead_lettering(s, "g");
  const TempFile line(R"({"event_type":"a","data":1})" "\n");
  ASSERT_EQ(ringbus_run({"publish", seg.name(), line.path()}).code, 0);
  while (g.worker(0).poll([](const ringbus::Event&) -> ringbus::Handled {
    throw std::runtime_error("bad\n\x1b[31mred");
  }) != 0) {
  }
  const Result list = ringbus_run({"dlq", seg.name(), "g", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("bad\\x0a\\x1b[31mred\n"), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find('\x1b'), std::string::npos) << list.out;
  EXPECT_EQ(lines_of(list.out).size(), 3u) << "heading, column names, one entry:\n" << list.out;

  // A group name no join would accept, as damaged or hostile memory may hold it.
  const std::string hostile = "g\x1b[2J";
  std::array<std::uint64_t, ringbus::layout::kGroupNameBytes / 8> words{};
  std::memcpy(words.data(), hostile.data(), hostile.size());
  for (std::size_t w = 0; w < words.size(); ++w) s.refs().groups[0].name[w].store(words[w]);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"info", seg.name()}, {"stat", seg.name()}, {"stat", seg.name(), "--prometheus"}}) {
    const Result r = ringbus_run(args);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << args.back() << "\n" << r.out;
    EXPECT_NE(r.out.find(args.back() == "--prometheus" ? "group=\"g\\\\x1b[2J\"" : "g\\x1b[2J"), std::string::npos)
        << r.out;
  }
}

// Numbers on the command line are decimal, and bounded by what the option holds. CLI11
// read them as C does: "010" as octal 8 (`dlq redrive SEG GROUP 010` redrove dead letter
// 8; `tail -n 010` printed 8 events), "0x10" as 16; and a number beyond a 32-bit option
// got only "Could not convert".
TEST(Cli, NumbersAreDecimalAndBoundedByTheirOption) {
  {
    ToolSegment s({"--max-groups", "010", "--max-producers", "0064", "--dedup-window", "00"});
    const Result info = ringbus_run({"info", s.name(), "--json"});
    ASSERT_EQ(info.code, 0) << info.err;
    EXPECT_NE(info.out.find("\"producer_slots\":64,\"group_slots\":10,"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("\"dedup_window\":0,"), std::string::npos) << info.out;
    std::string lines;
    for (int i = 0; i < 12; ++i) lines += R"({"event_type":"a","data":)" + std::to_string(i) + "}\n";
    TempFile input(lines);
    ASSERT_EQ(ringbus_run({"publish", s.name(), input.path()}).code, 0);
    const Result tail = ringbus_run({"tail", s.name(), "-n", "010"});
    ASSERT_EQ(tail.code, 0) << tail.err;
    EXPECT_EQ(std::count(tail.out.begin(), tail.out.end(), '\n'), 10) << tail.out;
  }
  const std::string missing = unique_name("rbcli-missing");
  struct Refusal {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Refusal& r : std::vector<Refusal>{
           {{"create", missing, "--max-groups", "99999999999"}, "--max-groups: \"99999999999\" is too large: it must be at most 4294967295"},
           {{"create", missing, "--types", "4294967296"}, "--types: \"4294967296\" is too large: it must be at most 4294967295"},
           {{"tail", missing, "-n", "18446744073709551616"}, "--count: \"18446744073709551616\" is too large: it must be at most 18446744073709551615"},
           {{"bench", "--runs", "2147483648"}, "--runs: \"2147483648\" is too large: it must be at most 2147483647"},
           {{"create", missing, "--keys", "0x10"}, "--keys: \"0x10\" is not a whole number in decimal"},
           {{"demo", "--events", "1e6"}, "--events: \"1e6\" is not a whole number in decimal"},
           {{"stat", missing, "--count", "1.5"}, "--count: \"1.5\" is not a whole number in decimal"},
           {{"dlq", missing, "g", "show", "+7"}, "id: \"+7\" is not a whole number in decimal"},
           {{"publish", missing, "--max-errors", ""}, "--max-errors: \"\" is not a whole number in decimal"},
           {{"demo", "--gap-ns", "1000000001"}, "--gap-ns: 1000000001 ns is more than 1 s, the longest pacing gap"},
           {{"bench", "--cpus", "0,x"}, "--cpus: \"0,x\" is not a list of CPU numbers such as 0,1"},
           // Counts that must be at least 1 say so under their own name.
           {{"demo", "--events", "0"}, "--events: \"0\" is too small: it must be at least 1"},
           {{"demo", "--keys", "00"}, "--keys: \"00\" is too small: it must be at least 1"},
           {{"bench", "--samples", "0"}, "--samples: \"0\" is too small: it must be at least 1"},
           {{"bench", "--chunk", "0"}, "--chunk: \"0\" is too small: it must be at least 1"},
           // Sizes: whole bytes with an optional unit; "1.5M" was "an unknown unit".
           {{"create", missing, "--capacity", "1.5M"}, "--capacity: \"1.5M\" is not a size: a whole number of bytes"},
           {{"create", missing, "--max-event", "0x10"}, "--max-event: \"0x10\" is not a size: a whole number of bytes"},
           {{"create", missing, "--dlq", "16 M"}, "--dlq: \"16 M\" is not a size: a whole number of bytes"},
           {{"create", missing, "--capacity", "-16M"}, "--capacity: \"-16M\" is negative"},
           {{"create", missing, "--capacity", "16Q"}, "--capacity: \"16Q\" has an unknown unit (use K, M, G or T)"},
           {{"bench", "--capacity", "99999999999999999999"}, "--capacity: \"99999999999999999999\" is too large"},
       }) {
    const Result refused = ringbus_run(r.args);
    EXPECT_EQ(refused.code, 2) << r.args[0] << " " << r.args[2] << "\n" << refused.err;
    EXPECT_NE(refused.err.find(r.says), std::string::npos) << refused.err;
  }
  // At the bound, accepted: the segment is looked for (and missing).
  EXPECT_EQ(ringbus_run({"tail", missing, "-n", "18446744073709551615"}).code, 4);
  // Units in either case, with or without B and iB.
  ToolSegment sized({"--capacity", "1mib", "--max-event", "2kB", "--dlq", "256K"});
  const Result info = ringbus_run({"info", sized.name(), "--json"});
  ASSERT_EQ(info.code, 0) << info.err;
  EXPECT_NE(info.out.find("\"capacity\":1048576,"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"max_event\":2048,"), std::string::npos) << info.out;
}

TEST(Cli, ExitCodesAndErrorsNameWhatWasWrong) {
  const std::string missing = unique_name("rbcli-missing");
  const Result info = ringbus_run({"info", missing});
  EXPECT_EQ(info.code, 4);
  EXPECT_NE(info.err.find(missing), std::string::npos) << info.err;
  EXPECT_EQ(ringbus_run({"rm", missing}).code, 4);
  EXPECT_EQ(ringbus_run({"publish", missing, "/dev/null"}).code, 4);
  {
    ToolSegment target;
    for (const std::string& input : {std::string("/tmp"), "/tmp/" + unique_name("rbcli-no-such-input")}) {
      const Result r = ringbus_run({"publish", target.name(), input});
      EXPECT_EQ(r.code, 1) << input;
      EXPECT_NE(r.err.find("cannot read " + input + ": "), std::string::npos) << r.err;
    }
  }
  EXPECT_EQ(ringbus_run({}).code, 2);
  EXPECT_EQ(ringbus_run({"create"}).code, 2);
  EXPECT_EQ(ringbus_run({"tail", missing, "--from", "yesterday"}).code, 2);
  // An empty --path (an unset variable) is usage; it fell back to NAME, and `create`
  // made shm:NAME.
  const Result empty_path = ringbus_run({"create", "--path", "", missing});
  EXPECT_EQ(empty_path.code, 2);
  EXPECT_NE(empty_path.err.find("--path: is empty: give a file path"), std::string::npos) << empty_path.err;
  EXPECT_EQ(ringbus_run({"info", missing}).code, 4) << "nothing was created";
  // So is every other text option or argument given empty. `tail --key ""` and
  // `--type ""` printed every event; `bench --json ""` and `--plot ""` wrote nothing,
  // with status 0; `--scenarios ""` ran them all; `create --dlq ""` took the default;
  // `publish SEG ""` said "cannot read : No such file or directory".
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"tail", missing, "--key", ""},
           {"tail", missing, "--type", ""},
           {"bench", "--smoke", "--json", ""},
           {"bench", "--smoke", "--plot", ""},
           {"bench", "--smoke", "--scenarios", ""},
           {"create", missing, "--dlq", ""},
           {"publish", missing, ""},
       }) {
    const Result empty = ringbus_run(args);
    const std::string what = args[args.size() - 2].starts_with("--") ? args[args.size() - 2] : "file";
    EXPECT_EQ(empty.code, 2) << args[0] << " " << what << "\n" << empty.err;
    EXPECT_NE(empty.err.find(what + ": is empty: "), std::string::npos) << empty.err;
  }
  EXPECT_EQ(ringbus_run({"info", missing}).code, 4) << "nothing was created";
  // bench --quick --smoke: --smoke won without a word.
  const Result both = ringbus_run({"bench", "--quick", "--smoke"});
  EXPECT_EQ(both.code, 2);
  EXPECT_NE(both.err.find("--quick excludes --smoke"), std::string::npos) << both.err;
  // stat's --count and --interval without --watch: ignored, stat printed once.
  for (const std::string option : {"--count", "--interval"}) {
    const Result alone = ringbus_run({"stat", missing, option, "5"});
    EXPECT_EQ(alone.code, 2) << option;
    EXPECT_NE(alone.err.find(option + " requires --watch"), std::string::npos) << alone.err;
  }
  // A position has at most 19 digits (positions are below 2^62): 20 are refused as
  // usage, before the segment is looked for; 19 get as far as the missing segment.
  const Result twenty = ringbus_run({"tail", missing, "--from", "10000000000000000000"});
  EXPECT_EQ(twenty.code, 2);
  EXPECT_NE(twenty.err.find("is not start, end or a position"), std::string::npos) << twenty.err;
  EXPECT_EQ(ringbus_run({"tail", missing, "--from", "9999999999999999999"}).code, 4);
  // A negative count is usage, for 64-bit options too (-1 was read as 2^64 - 1: no limit).
  // The message names the least value the option takes (it said "0 or more" for options
  // that take 1 or more).
  for (const auto& [args, least] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"tail", missing, "-n", "-1"}, "0 or more"},
           {{"stat", missing, "--count", " -2"}, "0 or more"},
           {{"demo", "--events", "-1"}, "at least 1"},
           {{"create", missing, "--max-producers", "-1"}, "0 or more"},
           {{"dlq", missing, "g", "show", "-1"}, "0 or more"},
           {{"bench", "--runs", "-1"}, "at least 1"}}) {
    const Result negative = ringbus_run(args);
    EXPECT_EQ(negative.code, 2) << args[0] << "\n" << negative.err;
    EXPECT_NE(negative.err.find("is negative: it must be " + least), std::string::npos) << negative.err;
  }
  // dlq's subcommand put before the segment and the group: usage, with how it is
  // written; no such hint when only the subcommand is missing.
  for (const std::string sub : {"list", "purge"}) {
    const Result swapped = ringbus_run({"dlq", sub, missing, "some-group"});
    EXPECT_EQ(swapped.code, 2);
    EXPECT_NE(swapped.err.find("come before the subcommand: ringbus dlq NAME GROUP " + sub), std::string::npos)
        << swapped.err;
  }
  const Result no_sub = ringbus_run({"dlq", missing, "some-group"});
  EXPECT_EQ(no_sub.code, 2);
  EXPECT_NE(no_sub.err.find("A subcommand is required"), std::string::npos) << no_sub.err;
  EXPECT_EQ(no_sub.err.find("come before the subcommand"), std::string::npos) << no_sub.err;
  const Result help = ringbus_run({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("3 publish: some lines were rejected"), std::string::npos) << help.out;

  // A foreign file is refused, naming the file and what is wrong.
  const std::string foreign = "/tmp/" + unique_name("rbcli-foreign");
  std::ofstream(foreign) << std::string(1 << 16, 'z');
  const Result bad = ringbus_run({"info", foreign});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find(foreign), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("magic"), std::string::npos) << bad.err;
  // rm, given a path by mistake, refuses to delete what is not a segment.
  const Result rm_foreign = ringbus_run({"rm", foreign});
  EXPECT_EQ(rm_foreign.code, 1);
  EXPECT_NE(rm_foreign.err.find("not a ringbus segment; not removed"), std::string::npos) << rm_foreign.err;
  EXPECT_EQ(::access(foreign.c_str(), F_OK), 0) << "rm deleted a file that is not a segment";
  ::unlink(foreign.c_str());

  // Created 0600 by default; rm removes it, and then it is gone.
  ToolSegment seg;
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + seg.name()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(ringbus_run({"create", seg.name()}).code, 1);  // exists
  const Result rm = ringbus_run({"rm", seg.name()});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(ringbus_run({"info", seg.name()}).code, 4);
  EXPECT_EQ(ringbus_run({"create", ".."}).code, 1);

  // Numbers on the command line that cannot be used are refused as such (exit 2),
  // naming the option, before anything is created: never wrapped around or reported
  // by the conversion function's name.
  const std::string name = unique_name("rbcli-args");
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad_args = {
      {{"--mode", "999"}, "--mode"},
      {{"--mode", "4755"}, "--mode"},
      {{"--capacity", "99999999999999999999"}, "--capacity"},
      {{"--capacity", "99999999999G"}, "too large"},
      {{"--max-event", "8G"}, "--max-event"},
      {{"--dlq", "12Q"}, "unknown unit"},
  };
  for (const auto& [args, names] : bad_args) {
    std::vector<std::string> cmd = {"create", name};
    cmd.insert(cmd.end(), args.begin(), args.end());
    const Result r = ringbus_run(cmd);
    EXPECT_EQ(r.code, 2) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_NE(r.err.find(names), std::string::npos) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_EQ(ringbus_run({"info", name}).code, 4) << args[0] << " " << args[1] << " created it";
  }
  // Seconds must be finite and in range: NaN passes every comparison, and NaN or
  // infinite seconds cannot be converted to nanoseconds. Nothing is published.
  {
    ToolSegment seg;
    const TempFile one_event(R"({"event_type":"T","data":1})" "\n");
    for (const std::string& secs : {"nan", "inf", "-1", "1e300"}) {
      const Result pub = ringbus_run({"publish", seg.name(), one_event.path(), "--timeout", secs});
      EXPECT_EQ(pub.code, 2) << secs << ": " << pub.err;
      EXPECT_NE(pub.err.find("--timeout: \"" + secs + "\" is not a number of seconds"), std::string::npos) << pub.err;
      const Result watch = ringbus_run({"stat", seg.name(), "--watch", "--count", "1", "--interval", secs});
      EXPECT_EQ(watch.code, 2) << secs << ": " << watch.err;
      EXPECT_NE(watch.err.find("--interval: \"" + secs + "\""), std::string::npos) << watch.err;
    }
    EXPECT_EQ(ringbus_run({"tail", seg.name()}).out, "");
  }
  const Result cpus = ringbus_run({"demo", "--cpus", "0,99999999999"});
  EXPECT_EQ(cpus.code, 2);
  EXPECT_NE(cpus.err.find("99999999999"), std::string::npos) << cpus.err;
}

// A bad bench command is refused before the run starts (nothing measured, nothing on
// stdout), naming what is wrong: not after minutes of measuring, and never by a crash.
// Seconds since the Unix epoch of an ISO-8601 UTC time as tail prints it.
double epoch_seconds(const std::string& iso) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0;
  double sec = 0;
  if (std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%lfZ", &y, &mo, &d, &h, &mi, &sec) != 6) return -1;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  return static_cast<double>(::timegm(&tm)) + sec;
}

// RINGBUS_CLOCK=steady makes timestamps come from the system clocks instead of the
// TSC: a publish still stamps each event with the Unix-epoch time. Any other value
// than tsc or steady is refused before the command does anything.
TEST(Cli, TheClockIsChosenByRingbusClock) {
  const std::string name = unique_name("rbcli-clock");
  const Result bad = ringbus_run({"create", name}, "", {{"RINGBUS_CLOCK", "rdtsc"}});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("RINGBUS_CLOCK is 'rdtsc': set it to 'tsc' (the default) or 'steady'"), std::string::npos)
      << bad.err;
  EXPECT_EQ(ringbus_run({"info", name}).code, 4);  // not created

  ToolSegment seg;
  const TempFile lines(R"({"event_type":"clock.test","key":"k","data":1})"
                       "\n"
                       R"({"event_type":"clock.test","key":"k","data":2})"
                       "\n");
  const auto now = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  };
  const double before = now();
  for (const char* clock : {"steady", "tsc"}) {
    const Result pub = ringbus_run({"publish", seg.name(), lines.path()}, "", {{"RINGBUS_CLOCK", clock}});
    EXPECT_EQ(pub.code, 0) << clock << ": " << pub.err;
  }
  const double after = now();
  const Result tail = ringbus_run({"tail", seg.name(), "--from", "start"});
  ASSERT_EQ(tail.code, 0) << tail.err;
  const std::vector<std::string> got = lines_of(tail.out);
  ASSERT_EQ(got.size(), 4u) << tail.out;
  for (const std::string& line : got) {
    const std::string ts = fields_of(line).at("timestamp");
    ASSERT_EQ(ts.rfind("string:", 0), 0u) << line;
    const double at = epoch_seconds(ts.substr(7));
    EXPECT_GE(at, before - 1.0) << line;  // the system clock's time, within the TSC anchor's error
    EXPECT_LE(at, after + 1.0) << line;
  }
}

TEST(Cli, BenchRefusesBadOptionsBeforeRunning) {
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string names;
  };
  const std::vector<Case> cases = {
      {{"--cpus", "0,0"}, 2, "two different CPUs"},
      {{"--cpus", "0,4096"}, 2, "cpu 4096"},
      {{"--scenarios", "thread,bogus"}, 2, "\"bogus\""},
      {{"--runs", "0"}, 2, "at least 1"},
      {{"--samples", "0"}, 2, "at least 1"},
      {{"--samples", "99999999999999999999"}, 2, "samples"},
      {{"--capacity", "3M"}, 2, "capacity must be a power of two"},
      {{"--capacity", "lots"}, 2, "--capacity"},
      {{"--capacity", "64K", "--scenarios", "tput512"}, 2, "use --capacity 128K or more"},
      {{"--capacity", "128M", "--scenarios", "thread"}, 2, "no throughput scenario"},
      {{"--json", "/nonexistent-ringbus-dir/r.json"}, 1, "/nonexistent-ringbus-dir"},
      {{"--json", "/tmp"}, 1, "is a directory"},
      {{"--plot", "/tmp/" + unique_name("plot") + ".png", "--scenarios", "tput8"}, 2, "no latency scenario"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"bench", "--smoke", "--no-progress"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const Result r = ringbus_run(args);
    EXPECT_EQ(r.code, c.code) << c.args[0] << " " << c.args[1] << ": " << r.err;
    EXPECT_NE(r.err.find(c.names), std::string::npos) << c.args[0] << " " << c.args[1] << ": " << r.err;
    EXPECT_EQ(r.out, "") << c.args[0] << " " << c.args[1] << ": the run started";
  }
}

// README's tour: a forked producer process publishes to a pinned consumer group; every
// event arrives once, in key order, and the latency line is printed.
TEST(Cli, DemoDeliversEveryEventInKeyOrder) {
  const Result r = ringbus_run({"demo", "--events", "50000", "--keys", "100", "--gap-ns", "0", "--warmup", "1000"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(r.out.starts_with("ringbus demo: segment anonymous:ringbus-demo, producer pid ")) << r.out;
  EXPECT_NE(r.out.find("published 50,000  consumed 50,000  keys 100  key order errors 0  out-of-order events 0  lost 0"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("over 49,000 events .*\\n +p50 [0-9]+ ns +p90 [0-9]+ ns")))
      << r.out;
  EXPECT_EQ(ringbus_run({"demo", "--events", "0"}).code, 2);
  const Result cpu = ringbus_run({"demo", "--cpus", "0,4096"});
  EXPECT_EQ(cpu.code, 2);
  EXPECT_NE(cpu.err.find("cpu 4096"), std::string::npos) << cpu.err;
  // One CPU for both, as the benchmark refuses it: its busy-spinning pair would measure
  // the scheduler's time slice.
  const Result same = ringbus_run({"demo", "--cpus", "1,1"});
  EXPECT_EQ(same.code, 2);
  EXPECT_NE(same.err.find("--cpus: the producer and the consumer need two different CPUs (both are 1)"),
            std::string::npos)
      << same.err;
  const Result warm = ringbus_run({"demo", "--events", "10", "--warmup", "10"});
  EXPECT_EQ(warm.code, 2);
  EXPECT_NE(warm.err.find("--warmup"), std::string::npos) << warm.err;
  // More keys than the default key table holds: the demo sizes its table for them (its
  // producer had a claim refused at key 51,746 and the demo said only "status 1536").
  const Result many = ringbus_run({"demo", "--events", "70000", "--keys", "70000", "--gap-ns", "0", "--warmup", "1000"});
  EXPECT_EQ(many.code, 0) << many.out << many.err;
  EXPECT_NE(many.out.find("published 70,000  consumed 70,000  keys 70,000  key order errors 0"), std::string::npos)
      << many.out;
  const Result too_many = ringbus_run({"demo", "--keys", "16777217"});
  EXPECT_EQ(too_many.code, 2);
  EXPECT_NE(too_many.err.find("--keys: 16,777,217 is more than the demo's 16,777,216 keys"), std::string::npos)
      << too_many.err;
}

}  // namespace
