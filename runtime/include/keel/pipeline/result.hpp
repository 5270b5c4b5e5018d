#pragma once

/// \file
/// What a pipeline run returns: every item's outcome and per-stage statistics.
///
/// Every item that entered the run ends as exactly one of: succeeded, failed
/// (with its error), dead-lettered, skipped, filtered, cancelled, or consumed
/// (folded into another item by a flat-map or batch stage). `run_counts`
/// adds them up; `lost` is what the accounting could not place (it is zero
/// unless a stage supervisor escalated and items in transit died with it).
///
///     auto r = pipeline.run(sys);
///     if (r.error) std::cerr << r.summary();
///     for (auto& f : r.failures) std::cerr << f.item << ": " << f.error << '\n';

#include "keel/error/error.hpp"

#include <any>
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace keel {

/// Log-linear latency histogram (4 sub-buckets per power of two, about 19%
/// resolution), mergeable across workers.
class latency_histogram {
public:
  /// Records one duration.
  void record(std::chrono::nanoseconds d) noexcept;

  /// Adds the counts of `other`.
  void merge(const latency_histogram& other) noexcept;

  /// Number of recorded durations.
  uint64_t count() const noexcept { return count_; }

  /// The `q` quantile (0..1), e.g. 0.99; zero when empty. Reports the upper
  /// bound of the bucket that holds the quantile.
  std::chrono::nanoseconds percentile(double q) const noexcept;

  /// Largest recorded duration.
  std::chrono::nanoseconds max() const noexcept { return std::chrono::nanoseconds{max_}; }

private:
  static constexpr size_t buckets = 64 * 4;
  std::array<uint64_t, buckets> counts_{};
  uint64_t count_ = 0;
  int64_t max_ = 0;
};

/// Statistics of one stage, over all its workers.
struct stage_stats {
  std::string name;
  uint32_t workers = 0;
  /// Items received (retries not counted again).
  uint64_t in = 0;
  /// Items passed on to the next stage (or to the result).
  uint64_t out = 0;
  /// Items made by this stage (flat-map children, groups).
  uint64_t created = 0;
  uint64_t succeeded = 0; ///< sink stages: items stored
  uint64_t failed = 0;
  uint64_t dead_lettered = 0;
  uint64_t skipped = 0;
  uint64_t filtered = 0;
  uint64_t cancelled = 0;
  uint64_t consumed = 0;
  /// Retries scheduled, and retries the budget refused.
  uint64_t retries = 0;
  uint64_t retries_denied = 0;
  /// Restarts of this stage's workers by their supervisor.
  uint64_t restarts = 0;
  /// Item errors (every attempt) by code name, e.g. {"unavailable", 12}.
  std::map<std::string, uint64_t> errors_by_code;
  /// Time the stage function took per item (sampled, see run_config).
  latency_histogram latency;
  /// Most items queued for (sent to and not yet released by) one worker of this stage.
  uint64_t peak_queue = 0;
};

/// An item that failed, with its error (which carries a `stage_info`).
struct item_failure {
  uint64_t item = 0;
  uint64_t origin = 0;
  std::string stage;
  uint32_t attempts = 0;
  keel::error error;
};

/// An item that went to the dead-letter list.
struct dead_item {
  uint64_t item = 0;
  uint64_t origin = 0;
  std::string stage;
  uint32_t attempts = 0;
  keel::error error;
  /// A copy of the item as the stage received it (`std::any_cast<T>`).
  std::any value;
  std::chrono::system_clock::time_point time;
};

/// An item that was skipped or cancelled.
struct item_note {
  uint64_t item = 0;
  std::string stage;
  keel::error reason;
};

/// How many items ended how.
struct run_counts {
  /// Items that entered the run from the source.
  uint64_t from_source = 0;
  /// Items made by stages.
  uint64_t created = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t dead_lettered = 0;
  uint64_t skipped = 0;
  uint64_t filtered = 0;
  uint64_t cancelled = 0;
  uint64_t consumed = 0;
  /// Items the accounting could not place (see the file overview).
  uint64_t lost = 0;
  /// Container sources: inputs never read because the run ended first.
  uint64_t not_started = 0;

  /// from_source + created.
  uint64_t total() const noexcept { return from_source + created; }

  /// Sum of every end.
  uint64_t ended() const noexcept {
    return succeeded + failed + dead_lettered + skipped + filtered + cancelled + consumed + lost;
  }
};

/// Everything about a finished run except the output values.
struct run_report {
  std::string name;
  /// Empty on success. Fail-fast: the first critical error. Cancelled: the
  /// cancel reason (`cancelled`, `deadline_exceeded`, or the caller's);
  /// item failures are still in `failures`. Aborted: the supervisor's
  /// escalation. Otherwise: the join of item errors (capped, with a
  /// "(N more errors)" marker).
  keel::error error;
  /// True when the caller or the deadline cancelled the run.
  bool cancelled = false;
  /// True when a critical item error ended the run (fail fast); `error` is it.
  bool failed_fast = false;
  /// True when the stage supervisor escalated (restart intensity exceeded).
  bool aborted = false;
  run_counts counts;
  std::vector<item_failure> failures;
  std::vector<dead_item> dead_letters;
  std::vector<item_note> skipped;
  std::vector<item_note> cancelled_items;
  std::vector<stage_stats> stages;
  std::chrono::nanoseconds duration{0};

  /// A few lines: outcome, counts, per-stage table, error summary.
  std::string summary() const;
};

/// The result of a run whose last stage is not a sink: the report plus the
/// values that came out of the pipeline, with their item ids and origins.
template <class Out>
struct run_result : run_report {
  std::vector<Out> outputs;
  std::vector<uint64_t> output_ids;
  std::vector<uint64_t> output_origins;
};

/// A run ending in a sink has no output values.
template <>
struct run_result<void> : run_report {};

} // namespace keel
