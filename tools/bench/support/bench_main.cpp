// main() shared by all keel benchmark binaries (linked in through the
// keel_bench_support static library; benchmark sources must not use
// BENCHMARK_MAIN()).
//
// Accepts every Google Benchmark flag. Output: the usual console report (or
// JSON/CSV with --benchmark_format=...), then the keel-vs-baseline ratio table
// described in ratio_reporter.hpp.

#include "ratio_reporter.hpp"

#include <benchmark/benchmark.h>

int main(int argc, char** argv) {
  // Read before Initialize(), which strips the benchmark flags from argv.
  const auto console_options = keel::bench::console_options_from_args(argc, argv);

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 1;

  // The default display reporter honours --benchmark_format (and its
  // BENCHMARK_FORMAT environment default). For anything but the console
  // format, let it print the runs while ratio_reporter still collects them.
  benchmark::BenchmarkReporter* delegate = benchmark::CreateDefaultDisplayReporter();
  if (dynamic_cast<benchmark::ConsoleReporter*>(delegate) != nullptr)
    delegate = nullptr;

  keel::bench::ratio_reporter reporter(console_options, delegate);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
