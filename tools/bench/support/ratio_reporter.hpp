#pragma once

// Google Benchmark reporter used by every keel benchmark binary (via
// keel_bench_support's main()).
//
// It prints the normal Google Benchmark output (as benchmark::ConsoleReporter,
// or through a delegate such as the JSON reporter for --benchmark_format=json)
// and, after the last benchmark, a comparison table that pairs every
//
//   BM_keel_<what>[/args][/threads:N]
//
// with the baselines of the same <what> and the same suffix:
//
//   BM_raw_caf_<what>[/args][/threads:N]   (the same thing done with bare CAF)
//   BM_baseline_<what>[/args][/threads:N]  (any other reference implementation)
//
// showing both real times per iteration, items/s where the benchmark calls
// SetItemsProcessed(), and the ratios
//
//   time ratio  = keel real time / baseline real time          (< 1: keel faster)
//   items ratio = baseline items/s / keel items/s              (< 1: keel faster)
//
// With --benchmark_repetitions the "median" aggregate of each benchmark is
// used; otherwise the single iteration run. In delegate mode (non-console
// formats) the table goes to the error stream so stdout stays machine-readable.

#include <benchmark/benchmark.h>

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace keel::bench {

// One benchmark result reduced to what the comparison table needs.
struct sample {
  std::string name;     // full run name without aggregate suffix, e.g. BM_keel_x/8/threads:2
  std::string function; // e.g. BM_keel_x
  double real_time_ns = 0;
  std::optional<double> items_per_second;
};

// Console output options from --benchmark_color / --benchmark_counters_tabular
// (or the BENCHMARK_COLOR / BENCHMARK_COUNTERS_TABULAR environment variables),
// mirroring what Google Benchmark does for its own console reporter. Call
// before benchmark::Initialize(), which removes the flags from argv.
benchmark::ConsoleReporter::OutputOptions console_options_from_args(int argc, char** argv);

class ratio_reporter : public benchmark::ConsoleReporter {
public:
  // `delegate` (not owned; may be null) prints the per-benchmark output
  // instead of the ConsoleReporter base, e.g. the JSON reporter.
  explicit ratio_reporter(OutputOptions options = OO_Defaults,
                          benchmark::BenchmarkReporter* delegate = nullptr);

  bool ReportContext(const Context& context) override;
  void ReportRuns(const std::vector<Run>& reports) override;
  void Finalize() override;

  // The samples chosen for comparison (median aggregate if any, else the
  // iteration run), in the order the benchmarks ran.
  std::vector<sample> samples() const;

  // Writes the keel-vs-baseline table for samples(); nothing if no runs.
  void print_ratio_table(std::ostream& out) const;

private:
  struct collected {
    std::string name;
    std::string function;
    std::vector<sample> iterations;
    std::optional<sample> median;
    std::optional<sample> mean;
  };

  collected& entry(const Run& run);

  benchmark::BenchmarkReporter* delegate_;
  std::vector<collected> collected_;
};

} // namespace keel::bench
