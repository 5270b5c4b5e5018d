#include "ratio_reporter.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <string_view>
#include <unistd.h>

namespace keel::bench {

namespace {

constexpr std::string_view keel_prefix = "BM_keel_";
constexpr std::array<std::string_view, 2> baseline_prefixes = {"BM_raw_caf_", "BM_baseline_"};

// Same rules as Google Benchmark's IsTruthyFlagValue().
bool truthy(std::string_view value) {
  if (value.size() == 1) {
    const char c = value[0];
    return std::isalnum(static_cast<unsigned char>(c)) != 0 && c != '0' && c != 'f' && c != 'F'
           && c != 'n' && c != 'N';
  }
  if (value.empty())
    return true;
  std::string lower(value);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower != "false" && lower != "no" && lower != "off";
}

// Value of --<flag>=v / --<flag> (last one wins), else $<FLAG>, else fallback.
std::string flag_value(int argc, char** argv, std::string_view flag, const char* env,
                       std::string fallback) {
  std::optional<std::string> value;
  if (const char* from_env = std::getenv(env))
    value = from_env;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.substr(0, 2) != "--" || arg.substr(2, flag.size()) != flag)
      continue;
    arg.remove_prefix(2 + flag.size());
    if (arg.empty())
      value = "";
    else if (arg[0] == '=')
      value = std::string(arg.substr(1));
  }
  return value ? *value : fallback;
}

bool is_color_terminal() {
  if (isatty(fileno(stdout)) == 0)
    return false;
  const char* term = std::getenv("TERM");
  return term != nullptr && *term != '\0' && std::strcmp(term, "dumb") != 0;
}

double to_ns(double value, benchmark::TimeUnit unit) {
  return value * (1e9 / benchmark::GetTimeUnitMultiplier(unit));
}

std::string format_time(double ns) {
  static constexpr std::array<const char*, 4> units = {"ns", "us", "ms", "s"};
  std::size_t i = 0;
  while (i + 1 < units.size() && ns >= 1000.0) {
    ns /= 1000.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g %s", ns, units[i]);
  return buf;
}

std::string format_rate(std::optional<double> per_second) {
  if (!per_second)
    return "-";
  static constexpr std::array<const char*, 5> units = {"", "k", "M", "G", "T"};
  double v = *per_second;
  std::size_t i = 0;
  while (i + 1 < units.size() && v >= 1000.0) {
    v /= 1000.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g%s/s", v, units[i]);
  return buf;
}

std::string format_ratio(double ratio) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", ratio);
  return buf;
}

sample make_sample(const benchmark::BenchmarkReporter::Run& run) {
  sample s;
  s.name = run.run_name.str();
  s.function = run.run_name.function_name;
  s.real_time_ns = to_ns(run.GetAdjustedRealTime(), run.time_unit);
  if (auto it = run.counters.find("items_per_second"); it != run.counters.end())
    s.items_per_second = it->second.value;
  return s;
}

} // namespace

benchmark::ConsoleReporter::OutputOptions console_options_from_args(int argc, char** argv) {
  int options = benchmark::ConsoleReporter::OO_None;
  const std::string color = flag_value(argc, argv, "benchmark_color", "BENCHMARK_COLOR", "auto");
  if (color == "auto" ? is_color_terminal() : truthy(color))
    options |= benchmark::ConsoleReporter::OO_Color;
  if (truthy(flag_value(argc, argv, "benchmark_counters_tabular", "BENCHMARK_COUNTERS_TABULAR",
                        "false")))
    options |= benchmark::ConsoleReporter::OO_Tabular;
  return static_cast<benchmark::ConsoleReporter::OutputOptions>(options);
}

ratio_reporter::ratio_reporter(OutputOptions options, benchmark::BenchmarkReporter* delegate)
    : benchmark::ConsoleReporter(options), delegate_(delegate) {}

bool ratio_reporter::ReportContext(const Context& context) {
  if (delegate_ != nullptr)
    return delegate_->ReportContext(context);
  return benchmark::ConsoleReporter::ReportContext(context);
}

ratio_reporter::collected& ratio_reporter::entry(const Run& run) {
  const std::string name = run.run_name.str();
  auto it = std::find_if(collected_.begin(), collected_.end(),
                         [&](const collected& c) { return c.name == name; });
  if (it != collected_.end())
    return *it;
  return collected_.emplace_back(collected{name, run.run_name.function_name, {}, {}, {}});
}

void ratio_reporter::ReportRuns(const std::vector<Run>& reports) {
  if (delegate_ != nullptr)
    delegate_->ReportRuns(reports);
  else
    benchmark::ConsoleReporter::ReportRuns(reports);

  for (const Run& run : reports) {
    if (run.error_occurred || run.report_big_o || run.report_rms)
      continue;
    if (run.run_type == Run::RT_Aggregate) {
      // Only time-valued statistics (not e.g. the coefficient of variation).
      if (run.aggregate_unit != benchmark::kTime)
        continue;
      if (run.aggregate_name == "median")
        entry(run).median = make_sample(run);
      else if (run.aggregate_name == "mean")
        entry(run).mean = make_sample(run);
      continue;
    }
    entry(run).iterations.push_back(make_sample(run));
  }
}

void ratio_reporter::Finalize() {
  if (delegate_ != nullptr) {
    delegate_->Finalize();
    print_ratio_table(GetErrorStream());
  } else {
    benchmark::ConsoleReporter::Finalize();
    print_ratio_table(GetOutputStream());
  }
}

std::vector<sample> ratio_reporter::samples() const {
  std::vector<sample> result;
  for (const collected& c : collected_) {
    if (c.median) {
      result.push_back(*c.median);
    } else if (c.iterations.size() == 1) {
      result.push_back(c.iterations.front());
    } else if (!c.iterations.empty()) {
      // Repetitions without a median statistic: take the median run ourselves.
      std::vector<sample> runs = c.iterations;
      std::sort(runs.begin(), runs.end(),
                [](const sample& a, const sample& b) { return a.real_time_ns < b.real_time_ns; });
      result.push_back(runs[runs.size() / 2]);
    } else if (c.mean) {
      result.push_back(*c.mean);
    }
  }
  return result;
}

void ratio_reporter::print_ratio_table(std::ostream& out) const {
  const std::vector<sample> all = samples();
  if (all.empty())
    return;

  struct row {
    std::array<std::string, 8> cells;
  };
  std::vector<row> rows;
  std::vector<std::string> unpaired;
  bool any_keel = false;

  for (const sample& keel : all) {
    if (!keel.function.starts_with(keel_prefix))
      continue;
    any_keel = true;
    const std::string what = keel.function.substr(keel_prefix.size());
    const std::string suffix = keel.name.substr(keel.function.size());
    bool paired = false;
    for (std::string_view prefix : baseline_prefixes) {
      const std::string base_name = std::string(prefix) + what + suffix;
      auto base = std::find_if(all.begin(), all.end(),
                               [&](const sample& s) { return s.name == base_name; });
      if (base == all.end())
        continue;
      paired = true;
      std::string items_ratio = "-";
      if (keel.items_per_second && base->items_per_second && *keel.items_per_second > 0)
        items_ratio = format_ratio(*base->items_per_second / *keel.items_per_second);
      rows.push_back(row{
          {keel.name, base->name, format_time(keel.real_time_ns), format_time(base->real_time_ns),
           base->real_time_ns > 0 ? format_ratio(keel.real_time_ns / base->real_time_ns)
                                  : std::string("-"),
           format_rate(keel.items_per_second), format_rate(base->items_per_second), items_ratio}});
    }
    if (!paired)
      unpaired.push_back(keel.name);
  }

  out << "\nkeel vs baseline (real time per iteration; time ratio = keel/baseline, < 1 means keel "
         "is faster;\n                  items ratio = baseline items/s / keel items/s, < 1 means "
         "keel is faster)\n";
  if (!any_keel) {
    out << "  no BM_keel_* benchmarks ran\n";
    return;
  }
  if (!rows.empty()) {
    const std::array<std::string, 8> header = {"keel benchmark", "baseline",   "keel time",
                                               "baseline time",  "time ratio", "keel items/s",
                                               "base items/s",   "items ratio"};
    std::array<std::size_t, 8> width{};
    for (std::size_t i = 0; i < width.size(); ++i) {
      width[i] = header[i].size();
      for (const row& r : rows)
        width[i] = std::max(width[i], r.cells[i].size());
    }
    auto print = [&](const std::array<std::string, 8>& cells) {
      for (std::size_t i = 0; i < cells.size(); ++i) {
        const std::size_t pad = width[i] - cells[i].size();
        if (i < 2) // names left-aligned, numbers right-aligned
          out << cells[i] << std::string(pad, ' ');
        else
          out << std::string(pad, ' ') << cells[i];
        out << (i + 1 < cells.size() ? "  " : "\n");
      }
    };
    print(header);
    std::size_t total = 2 * (width.size() - 1);
    for (std::size_t w : width)
      total += w;
    out << std::string(total, '-') << '\n';
    for (const row& r : rows)
      print(r.cells);
  }
  for (const std::string& name : unpaired)
    out << "  " << name << ": no BM_raw_caf_/BM_baseline_ counterpart with the same arguments\n";
  out.flush();
}

} // namespace keel::bench
