// Plain C++ parts of pipelines: trace contexts, policies, histograms, reports.

#include "keel/pipeline/envelope.hpp"
#include "keel/pipeline/policy.hpp"
#include "keel/pipeline/result.hpp"
#include "keel/pipeline/stage.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "keel/error/format.hpp"

namespace keel {

// -- trace_context --------------------------------------------------------------

namespace {

template <size_t N>
void put_hex(std::string& out, const std::array<uint8_t, N>& xs) {
  static constexpr char digits[] = "0123456789abcdef";
  for (auto x : xs) {
    out += digits[x >> 4];
    out += digits[x & 0xF];
  }
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1; // W3C requires lowercase
}

template <size_t N>
bool get_hex(std::string_view in, std::array<uint8_t, N>& xs) {
  if (in.size() != 2 * N)
    return false;
  for (size_t i = 0; i < N; ++i) {
    int hi = hex_value(in[2 * i]);
    int lo = hex_value(in[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    xs[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
bool all_zero(const std::array<uint8_t, N>& xs) noexcept {
  return std::all_of(xs.begin(), xs.end(), [](uint8_t x) { return x == 0; });
}

} // namespace

bool trace_context::valid() const noexcept {
  return !all_zero(trace_id);
}

std::string trace_context::traceparent() const {
  std::string out = "00-";
  out.reserve(55);
  put_hex(out, trace_id);
  out += '-';
  std::array<uint8_t, 8> span{};
  for (size_t i = 0; i < 8; ++i)
    span[i] = static_cast<uint8_t>(span_id >> (56 - 8 * i));
  put_hex(out, span);
  out += '-';
  put_hex(out, std::array<uint8_t, 1>{flags});
  return out;
}

expected<trace_context> trace_context::parse(std::string_view s) {
  auto bad = [&](std::string what) {
    return invalid_argument_error("traceparent \"" + std::string{s.substr(0, 64)} + "\": " + what);
  };
  if (s.size() != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
    return bad("expected \"00-<32 hex>-<16 hex>-<2 hex>\" (55 characters)");
  if (s.substr(0, 2) != "00")
    return bad("unsupported version \"" + std::string{s.substr(0, 2)} + "\"");
  trace_context t;
  std::array<uint8_t, 1> flags{};
  std::array<uint8_t, 8> span{};
  if (!get_hex(s.substr(3, 32), t.trace_id) || !get_hex(s.substr(36, 16), span)
      || !get_hex(s.substr(53, 2), flags))
    return bad("ids must be lowercase hexadecimal");
  if (all_zero(t.trace_id))
    return bad("the trace id is all zero");
  if (all_zero(span))
    return bad("the span id is all zero");
  for (auto x : span)
    t.span_id = t.span_id << 8 | x;
  t.flags = flags[0];
  return t;
}

// -- policies -------------------------------------------------------------------

std::string_view to_string(error_class x) noexcept {
  switch (x) {
    case error_class::item:
      return "item";
    case error_class::critical:
      return "critical";
    case error_class::poison:
      return "poison";
    case error_class::skip:
      return "skip";
  }
  return "unknown";
}

std::string_view to_string(policy_mode x) noexcept {
  switch (x) {
    case policy_mode::fail_fast:
      return "fail_fast";
    case policy_mode::collect_all:
      return "collect_all";
    case policy_mode::hybrid:
      return "hybrid";
  }
  return "unknown";
}

std::string_view to_string(stage_kind x) noexcept {
  switch (x) {
    case stage_kind::map:
      return "map";
    case stage_kind::filter:
      return "filter";
    case stage_kind::flat_map:
      return "flat_map";
    case stage_kind::group:
      return "batch";
    case stage_kind::sink:
      return "sink";
  }
  return "unknown";
}

error_policy::error_policy(policy_mode m, error_rules<error_class> defaults)
    : mode_(m), defaults_(std::move(defaults)) {}

error_policy::error_policy() : error_policy(collect_all()) {}

error_policy error_policy::fail_fast() {
  return error_policy{policy_mode::fail_fast, error_rules<error_class>{error_class::critical}};
}

error_policy error_policy::collect_all() {
  return error_policy{policy_mode::collect_all, error_rules<error_class>{error_class::item}};
}

error_policy error_policy::hybrid() {
  error_rules<error_class> r{error_class::item};
  r.on(code::panic, error_class::poison);
  for (auto c : {code::internal, code::data_loss, code::failed_precondition,
                 code::permission_denied, code::unauthenticated})
    r.on(c, error_class::critical);
  return error_policy{policy_mode::hybrid, std::move(r)};
}

// -- latency_histogram ------------------------------------------------------------

namespace {

// Bucket b covers [lower(b), lower(b + 1)); 4 sub-buckets per power of two.
size_t bucket_of(uint64_t ns) noexcept {
  if (ns < 4)
    return static_cast<size_t>(ns);
  auto msb = static_cast<size_t>(63 - std::countl_zero(ns));
  auto sub = static_cast<size_t>((ns >> (msb - 2)) & 3);
  return std::min<size_t>(msb * 4 + sub - 4, 64 * 4 - 1);
}

uint64_t upper_of(size_t b) noexcept {
  if (b < 4)
    return b + 1;
  size_t msb = (b + 4) / 4;
  size_t sub = (b + 4) % 4;
  if (msb >= 63)
    return UINT64_MAX;
  return (uint64_t{1} << msb) + ((sub + 1) << (msb - 2));
}

} // namespace

void latency_histogram::record(std::chrono::nanoseconds d) noexcept {
  auto ns = static_cast<uint64_t>(std::max<int64_t>(0, d.count()));
  ++counts_[bucket_of(ns)];
  ++count_;
  max_ = std::max<int64_t>(max_, static_cast<int64_t>(ns));
}

void latency_histogram::merge(const latency_histogram& other) noexcept {
  for (size_t i = 0; i < buckets; ++i)
    counts_[i] += other.counts_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

std::chrono::nanoseconds latency_histogram::percentile(double q) const noexcept {
  if (count_ == 0)
    return std::chrono::nanoseconds{0};
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::max<uint64_t>(rank, 1);
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets; ++i) {
    seen += counts_[i];
    if (seen >= rank)
      return std::chrono::nanoseconds{
          static_cast<int64_t>(std::min<uint64_t>(upper_of(i), static_cast<uint64_t>(max_)))};
  }
  return max();
}

// -- run_report -------------------------------------------------------------------

namespace {

std::string human(std::chrono::nanoseconds d) {
  char buf[32];
  auto ns = static_cast<double>(d.count());
  if (ns < 1e3)
    std::snprintf(buf, sizeof buf, "%.0fns", ns);
  else if (ns < 1e6)
    std::snprintf(buf, sizeof buf, "%.1fus", ns / 1e3);
  else if (ns < 1e9)
    std::snprintf(buf, sizeof buf, "%.1fms", ns / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.2fs", ns / 1e9);
  return buf;
}

} // namespace

std::string run_report::summary() const {
  std::ostringstream os;
  const auto& c = counts;
  const char* outcome = !error        ? "ok"
                        : cancelled   ? "cancelled"
                        : failed_fast ? "failed fast"
                        : aborted     ? "aborted"
                                      : "completed with item errors";
  os << "run " << name << ": " << outcome << " in " << human(duration) << "\n  items: " << c.total()
     << " (" << c.from_source << " from the source, " << c.created
     << " made by stages): " << c.succeeded << " succeeded, " << c.failed << " failed, "
     << c.dead_lettered << " dead-lettered, " << c.skipped << " skipped, " << c.filtered
     << " filtered, " << c.cancelled << " cancelled, " << c.consumed << " consumed";
  if (c.lost > 0)
    os << ", " << c.lost << " LOST";
  if (c.not_started > 0)
    os << "; " << c.not_started << " inputs not started";
  os << "\n  stage            workers      in     out  errors retries restarts  p50      p99"
        "      peak queue\n";
  for (const auto& s : stages) {
    uint64_t errors = 0;
    for (const auto& [k, v] : s.errors_by_code)
      errors += v;
    char line[256];
    std::snprintf(
        line, sizeof line, "  %-16s %7u %7llu %7llu %7llu %7llu %8llu  %-8s %-8s %llu\n",
        s.name.substr(0, 16).c_str(), s.workers, static_cast<unsigned long long>(s.in),
        static_cast<unsigned long long>(s.out), static_cast<unsigned long long>(errors),
        static_cast<unsigned long long>(s.retries), static_cast<unsigned long long>(s.restarts),
        human(s.latency.percentile(0.5)).c_str(), human(s.latency.percentile(0.99)).c_str(),
        static_cast<unsigned long long>(s.peak_queue));
    os << line;
  }
  if (error)
    os << "  error: " << to_string(error) << "\n";
  return os.str();
}

} // namespace keel
