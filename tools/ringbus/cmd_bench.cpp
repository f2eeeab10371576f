// ringbus bench: the latency and throughput report (bench/README.md).
#include <fmt/format.h>
#include <unistd.h>

#include "common.hpp"
#include "ringbus_bench/bench.hpp"

namespace ringbus::tool {

void add_bench_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "bench", "Measure publish-to-handle latency and throughput against the cache-line floor and other queues");
  struct Opts {
    bool quick = false, smoke = false, no_progress = false;
    std::string cpus = "0,1", json, plot, scenarios;
    std::uint64_t samples = 0, gap_ns = 0, chunk = 0;
    int runs = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_flag("--quick", o->quick, "About 30 s: 100,000 samples x 3 runs");
  cmd->add_flag("--smoke", o->smoke, "A few seconds: checks that everything runs (CI)");
  cmd->add_option("--cpus", o->cpus, "Producer CPU,consumer CPU (default 0,1)");
  cmd->add_option("--json", o->json, "Write the results as JSON (schema in bench/README.md)");
  cmd->add_option("--plot", o->plot, "Write the latency percentile spectrum as a PNG (needs gnuplot)");
  cmd->add_option("--samples", o->samples, "Latency samples per system and run (default 1,000,000)");
  cmd->add_option("--runs", o->runs, "Runs; results are medians (default 3)");
  cmd->add_option("--gap-ns", o->gap_ns, "Pacing of latency events in ns (default 2000)");
  cmd->add_option("--chunk", o->chunk, "Samples per interleaved turn of one system (default 10000)");
  cmd->add_option("--scenarios", o->scenarios,
                  "Comma-separated: thread,process,fanout4,keys10k,rtt,tput8,tput64,tput512 (default all)");
  cmd->add_flag("--no-progress", o->no_progress, "No progress bar");
  cmd->callback([o, &exit_code] {
    bench::Options opts = bench::options_for(o->smoke ? "smoke" : o->quick ? "quick" : "full");
    const std::vector<int> cpus = parse_cpus(o->cpus);
    if (cpus.size() != 2) throw CLI::ValidationError("--cpus", "give two CPUs: producer,consumer");
    opts.cpu_producer = cpus[0];
    opts.cpu_consumer = cpus[1];
    if (o->samples != 0) opts.samples = o->samples;
    if (o->runs != 0) opts.runs = o->runs;
    if (o->gap_ns != 0) opts.gap_ns = o->gap_ns;
    if (o->chunk != 0) opts.chunk = o->chunk;
    for (std::size_t start = 0; start < o->scenarios.size();) {
      const std::size_t comma = o->scenarios.find(',', start);
      opts.scenarios.push_back(o->scenarios.substr(start, comma == std::string::npos ? comma : comma - start));
      start = comma == std::string::npos ? o->scenarios.size() : comma + 1;
    }
    if (!o->no_progress && ::isatty(STDERR_FILENO) != 0) {
      opts.progress = [](double f, const std::string& what) {
        const int width = 40;
        const int filled = static_cast<int>(f * width);
        fmt::print(stderr, "\r[{}{}] {:3.0f}%  {:<40}", std::string(static_cast<std::size_t>(filled), '#'),
                   std::string(static_cast<std::size_t>(width - filled), ' '), f * 100, what.substr(0, 40));
        if (f >= 1.0) fmt::print(stderr, "\n");
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
