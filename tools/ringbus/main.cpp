// ringbus: create, inspect, publish to and read from ringbus segments; run the demo
// and the benchmark.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <system_error>

#include "common.hpp"
#include "ringbus/clock.hpp"
#include "ringbus/error.hpp"

namespace {

int run(int argc, char** argv) {
  using namespace ringbus::tool;
  CLI::App app{"ringbus: a low-latency shared-memory event bus"};
  app.require_subcommand(1);
  app.footer(
      "Exit status: 0 success; 1 the command failed (the message names the segment, line or field); "
      "2 bad command line; 3 publish: some lines were rejected; 4 no such segment, group or entry.");
  int exit_code = kOk;
  add_segment_commands(app, exit_code);
  add_demo_command(app, exit_code);
  add_bench_command(app, exit_code);
  add_event_commands(app, exit_code);
  add_stat_command(app, exit_code);
  add_group_commands(app, exit_code);
  require_whole_numbers(app);
  if (!ringbus::Tsc::setting_valid()) {
    print_err("ringbus: {} is '{}': set it to 'tsc' (the default) or 'steady', or unset it\n",
              ringbus::Tsc::kEnvironment, std::getenv(ringbus::Tsc::kEnvironment));
    return kUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (app.exit(e) == 0) return kOk;
    if (const std::string hint = group_order_hint(app); !hint.empty()) print_err("{}\n", hint);
    return kUsage;
  } catch (const std::system_error& e) {
    // fmt::print found standard output failing: reported once, by finish_output.
    if (std::ferror(stdout) != 0) {
      note_output_error(e.code().value());
      return kFailed;
    }
    print_err("ringbus: {}\n", e.what());
    return kFailed;
  } catch (const ringbus::Error& e) {
    print_err("ringbus: {}\n", e.what());
    return e.code() == ringbus::Errc::not_found ? kNotFound : kFailed;
  } catch (const std::exception& e) {
    print_err("ringbus: {}\n", e.what());
    return kFailed;
  }
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) { return ringbus::tool::finish_output(run(argc, argv)); }
