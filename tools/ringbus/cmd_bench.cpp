// ringbus bench: the latency and throughput report (bench/README.md).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "common.hpp"
#include "ringbus_bench/bench.hpp"

namespace ringbus::tool {
namespace {

// Throws unless `path` can be written (its directory exists and is writable, and the
// file, if it exists, is writable): checked before the run, not after minutes of it.
void check_writable(const std::string& option, const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::runtime_error(fmt::format("{} {}: directory {} does not exist", option, path, dir.string()));
  }
  if (fs::is_directory(p, ec)) throw std::runtime_error(fmt::format("{} {}: is a directory", option, path));
  const bool exists = fs::exists(p, ec);
  if (::access(exists ? path.c_str() : dir.c_str(), W_OK) != 0) {
    throw std::runtime_error(fmt::format("{} {}: cannot write: {}", option, path, std::strerror(errno)));
  }
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "bench", "Measure publish-to-handle latency and throughput against the cache-line floor and other queues");
  struct Opts {
    bool quick = false, smoke = false, no_progress = false;
    std::string cpus = "0,1", json, plot, scenarios, capacity;
    std::uint64_t samples = 0, gap_ns = 0, chunk = 0;
    int runs = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_flag("--quick", o->quick,
                "About 30 s (22 with the two CPUs near, 29 far apart): 60,000 samples x 3 runs, 1,500,000 events per throughput measurement (512-byte: 375,000)");
  // Both given, --smoke won without a word.
  cmd->add_flag("--smoke", o->smoke, "A few seconds: checks that everything runs (CI)")->excludes("--quick");
  cmd->add_option("--cpus", o->cpus, "Producer CPU,consumer CPU (default 0,1)");
  cmd->add_option("--json", o->json, "Write the results as JSON (schema in bench/README.md)")
      ->check(non_empty("give the file to write"));
  cmd->add_option("--plot", o->plot, "Write the latency percentile spectrum as a PNG (needs gnuplot)")
      ->check(non_empty("give the file to write"));
  // Given values replace the mode's defaults as they are (bench::check bounds them too).
  add_number(cmd, "--samples", o->samples, "Latency samples per system and run (default 1,000,000)", 1);
  add_number(cmd, "--runs", o->runs, "Runs; results are medians (default 3)", 1);
  add_number(cmd, "--gap-ns", o->gap_ns, "Pacing of latency events in ns (default 2000)", 1);
  add_number(cmd, "--chunk", o->chunk, "Samples per interleaved turn of one system (default 50000)", 1);
  cmd->add_option("--capacity", o->capacity,
                  "Log bytes of ringbus's ring in the throughput cases, a power of two (default 16M, a segment's default)");
  cmd->add_option("--scenarios", o->scenarios,
                  fmt::format("Comma-separated: {} (default all)", fmt::join(bench::scenario_names(), ",")))
      ->check(non_empty("name the scenarios, or leave the option out for all"));
  cmd->add_flag("--no-progress", o->no_progress, "No progress bar");
  cmd->callback([cmd, o, &exit_code] {
    bench::Options opts = bench::options_for(o->smoke ? "smoke" : o->quick ? "quick" : "full");
    const std::vector<int> cpus = parse_cpus(o->cpus);
    if (cpus.size() != 2) throw CLI::ValidationError("--cpus", "give two CPUs: producer,consumer");
    opts.cpu_producer = cpus[0];
    opts.cpu_consumer = cpus[1];
    if (cmd->count("--samples") != 0) opts.samples = o->samples;
    if (cmd->count("--runs") != 0) opts.runs = o->runs;
    if (cmd->count("--gap-ns") != 0) opts.gap_ns = o->gap_ns;
    if (cmd->count("--chunk") != 0) opts.chunk = o->chunk;
    for (std::size_t start = 0; start < o->scenarios.size();) {
      const std::size_t comma = o->scenarios.find(',', start);
      opts.scenarios.push_back(o->scenarios.substr(start, comma == std::string::npos ? comma : comma - start));
      start = comma == std::string::npos ? o->scenarios.size() : comma + 1;
    }
    if (cmd->count("--capacity") != 0) opts.tput_capacity = parse_size("--capacity", o->capacity);
    // Everything that can be wrong with the command is found before the run starts.
    if (const std::string why = bench::check(opts); !why.empty()) throw CLI::ValidationError("bench", why);
    if (cmd->count("--capacity") != 0 && !bench::selects_throughput(opts)) {
      throw CLI::ValidationError("--capacity", "sizes the throughput ring, and no throughput scenario was chosen");
    }
    if (!o->json.empty()) check_writable("--json", o->json);
    if (!o->plot.empty()) {
      check_writable("--plot", o->plot);
      if (!bench::gnuplot_available()) {
        throw std::runtime_error("--plot needs gnuplot, which is not on PATH (tools/setup.sh installs it)");
      }
      if (!bench::selects_latency(opts)) {
        throw CLI::ValidationError("--plot", "plots latency spectra, and no latency scenario was chosen");
      }
    }
    if (!o->no_progress && ::isatty(STDERR_FILENO) != 0) {
      opts.progress = [](double f, const std::string& what) {
        const int width = 40;
        const int filled = static_cast<int>(f * width);
        print_err("\r[{}{}] {:3.0f}%  {:<40}", std::string(static_cast<std::size_t>(filled), '#'),
                  std::string(static_cast<std::size_t>(width - filled), ' '), f * 100, what.substr(0, 40));
        if (f >= 1.0) print_err("\n");
      };
    }
    const bench::Report report = bench::run(opts);
    bench::print_table(report, stdout);
    if (!o->json.empty()) {
      bench::write_json(report, o->json);
      fmt::print("results written to {}\n", o->json);
    }
    bool ok = true;
    if (!o->plot.empty()) {
      ok = bench::write_plot(report, o->plot);
      if (ok) fmt::print("plot written to {}\n", o->plot);
    }
    exit_code = ok ? kOk : kFailed;
  });
}

}  // namespace ringbus::tool
