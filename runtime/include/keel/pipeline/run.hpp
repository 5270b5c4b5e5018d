#pragma once

/// \file
/// Running a pipeline: configuration, the run handle, and the type-erased
/// plan the builder (builder.hpp) hands to the runtime.
///
/// A run is a tree of actors: a coordinator, a source, and a supervisor whose
/// children are the stage workers (and resequencers of ordered parallel
/// stages). Items move in batches under credit-based flow control: a link
/// never holds more than `credit` unacknowledged batches, so a slow stage
/// stalls its producers instead of growing a queue. When `wait()` returns,
/// every actor of the run has terminated.
///
///     auto handle = pipeline.start(sys, cfg);   // asynchronous
///     handle.cancel();                          // from any thread
///     auto result = handle.wait();              // blocking

#include "keel/pipeline/envelope.hpp"
#include "keel/pipeline/policy.hpp"
#include "keel/pipeline/result.hpp"
#include "keel/pipeline/stage.hpp"
#include "keel/supervision/events.hpp"
#include "keel/supervision/spec.hpp"

#include <caf/fwd.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel {

/// Progress of a running pipeline, reported every `run_config::progress_every`.
struct run_progress {
  std::string name;
  /// Items read from the source so far.
  uint64_t from_source = 0;
  /// Items that have ended (any outcome) so far.
  uint64_t ended = 0;
  uint64_t failed = 0;
  std::chrono::nanoseconds elapsed{0};
};

struct stage_resilience;

/// Options that replace a stage's own (set in code) when present; from
/// configuration files (see config.hpp), so operators can tune a pipeline
/// without rebuilding it.
struct stage_overrides {
  std::optional<uint32_t> workers;
  std::optional<bool> ordered;
  std::optional<uint32_t> credit;
  std::optional<retry_policy> retry;
  std::optional<error_policy> policy;
  /// The stage's breaker, bulkhead and rate limiter (keel/pipeline/resilience.hpp):
  /// applied by the code that builds the stage, which reads them with
  /// `make_stage_guards(cfg, name)`; its retry policy is in `retry`.
  std::shared_ptr<const stage_resilience> resilience;
};

/// Configuration of a run. Every field has a default.
struct run_config {
  std::string name = "pipeline";
  /// How item errors are classified (see policy.hpp). Default: hybrid.
  error_policy policy = error_policy::hybrid();
  /// Per-item retries (stages may override).
  retry_policy retry;
  /// Caps the run's retries.
  retry_budget budget;
  /// The run is cancelled with `deadline_exceeded` after this long.
  std::optional<std::chrono::nanoseconds> deadline;
  /// Items per message between stages.
  uint32_t batch_size = 256;
  /// Unacknowledged batches per link.
  uint32_t credit = 4;
  /// Cap on the errors joined into the run error (the rest are counted).
  size_t max_errors = 100;
  /// Sort outputs by input position before returning them.
  bool ordered_results = false;
  /// Time one item in N per stage for the latency histograms (1 = all).
  uint32_t latency_sample = 64;
  /// Restart intensity of the stage supervisor; when exceeded, the run ends
  /// with the escalation error. The default never escalates.
  restart_intensity intensity{UINT32_MAX, std::chrono::milliseconds(1000)};
  /// Called (from a worker's thread) for every dead-lettered item.
  std::function<void(const dead_item&)> on_dead_letter;
  /// Called (from the coordinator's thread) every `progress_every` while running.
  std::function<void(const run_progress&)> on_progress;
  std::chrono::milliseconds progress_every{1000};
  /// Supervision events of the stage workers (restarts, ...).
  std::shared_ptr<event_sink> events;
  /// Seeds retry jitter and the trace id; 0 picks a random seed.
  uint64_t seed = 0;
  /// Trace context of the run; when not valid, a trace id is made from the seed.
  trace_context trace;
  /// Per-stage overrides by stage name; a name no stage has fails the run
  /// with `invalid_argument`.
  std::map<std::string, stage_overrides> stages;
};

/// Reads items for a source.
class source_cursor {
public:
  virtual ~source_cursor() = default;

  /// Appends up to `n` items to `out` (envelopes are filled in by the
  /// runtime); returns false once the source is exhausted. May throw.
  virtual bool next(batch_base& out, size_t n) = 0;

  /// Items left, when known (container sources).
  virtual std::optional<uint64_t> remaining() const { return std::nullopt; }
};

/// The source of a run.
struct source_def {
  /// Opens the cursor (called once, in the source actor). Null for feeders.
  std::function<std::unique_ptr<source_cursor>()> open;
  /// Makes an empty batch of the source's item type.
  std::function<std::unique_ptr<batch_base>(size_t)> make_batch;
};

/// Receives the values of a run without a sink (typed, see run_handle).
class output_collector {
public:
  virtual ~output_collector() = default;
  /// Called by the coordinator for every batch that leaves the last stage.
  virtual void append(batch_base& b) = 0;
};

/// Everything the runtime needs to run a pipeline.
struct run_plan {
  source_def source;
  std::vector<stage_def> stages;
  run_config config;
  /// Null when the last stage is a sink.
  std::shared_ptr<output_collector> outputs;
};

/// The untyped handle of a started run; see run_handle for the typed one.
class run_control {
public:
  virtual ~run_control() = default;

  /// Cancels the run; in-flight items end with `reason` (default: cancelled).
  virtual void cancel(error reason = {}) = 0;

  /// Whether the run has finished (every actor terminated).
  virtual bool done() const = 0;

  /// Blocks until the run has finished.
  virtual void wait() const = 0;

  /// Blocks up to `timeout`; true when the run has finished.
  virtual bool wait_for(std::chrono::nanoseconds timeout) const = 0;

  /// The report; valid once `done()`.
  virtual run_report& report() = 0;

  /// Calls `f` once when the run has finished (at once if it has). Runs on
  /// the thread that finished the run; keep it short (e.g. send a message).
  virtual void on_complete(std::function<void()> f) = 0;

  /// The coordinator actor (monitor it from an actor to learn the end).
  virtual const caf::actor& coordinator() const = 0;

  /// Feeder sources: hands a batch of items to the run, blocking while the
  /// pipeline has no room (back-pressure). Fails when the run has ended.
  virtual error feed(std::unique_ptr<batch_base> items) = 0;

  /// Feeder sources, from an actor: `done` runs in `self`'s context when the
  /// items were accepted (or with the error when they never will be).
  virtual void feed_async(caf::event_based_actor* self, std::unique_ptr<batch_base> items,
                          std::function<void(const error&)> done) = 0;

  /// Feeder sources: no more items; the run finishes once they are processed.
  virtual void close() = 0;
};

/// Starts a run (the builder calls this).
std::shared_ptr<run_control> start_run(caf::actor_system& sys, run_plan plan);

namespace detail {

template <class Out>
class typed_collector final : public output_collector {
public:
  void append(batch_base& b) override {
    auto& xs = static_cast<batch<Out>&>(b);
    for (size_t i = 0; i < xs.size(); ++i) {
      ids.push_back(xs.keys[i].id);
      origins.push_back(xs.keys[i].origin);
      values.push_back(std::move(xs.values[i]));
    }
  }

  std::vector<Out> values;
  std::vector<uint64_t> ids;
  std::vector<uint64_t> origins;
};

/// Sorts `ids`, `origins` and `values` by (origin, id).
template <class Out>
void sort_outputs(std::vector<Out>& values, std::vector<uint64_t>& ids,
                  std::vector<uint64_t>& origins) {
  std::vector<size_t> idx(values.size());
  for (size_t i = 0; i < idx.size(); ++i)
    idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return origins[a] != origins[b] ? origins[a] < origins[b] : ids[a] < ids[b];
  });
  std::vector<Out> v;
  std::vector<uint64_t> i2, o2;
  v.reserve(idx.size());
  i2.reserve(idx.size());
  o2.reserve(idx.size());
  for (auto k : idx) {
    v.push_back(std::move(values[k]));
    i2.push_back(ids[k]);
    o2.push_back(origins[k]);
  }
  values = std::move(v);
  ids = std::move(i2);
  origins = std::move(o2);
}

} // namespace detail

/// The typed handle of a started run. `Out` is the item type leaving the last
/// stage, `void` for runs ending in a sink; `In` the source's item type (for
/// feeder sources).
template <class Out, class In = void>
class run_handle {
public:
  run_handle(std::shared_ptr<run_control> ctl,
             std::shared_ptr<detail::typed_collector<Out>> outputs, bool ordered)
      : ctl_(std::move(ctl)), outputs_(std::move(outputs)), ordered_(ordered) {}

  /// Cancels the run (see run_control::cancel).
  void cancel(error reason = {}) { ctl_->cancel(std::move(reason)); }

  bool done() const { return ctl_->done(); }

  bool wait_for(std::chrono::nanoseconds timeout) const { return ctl_->wait_for(timeout); }

  /// Blocks until the run has finished and returns its result (once; later
  /// calls return the report without the output values).
  run_result<Out> wait() {
    ctl_->wait();
    run_result<Out> r;
    static_cast<run_report&>(r) = ctl_->report();
    if constexpr (!std::is_void_v<Out>) {
      if (outputs_) {
        r.outputs = std::move(outputs_->values);
        r.output_ids = std::move(outputs_->ids);
        r.output_origins = std::move(outputs_->origins);
        if (ordered_)
          detail::sort_outputs(r.outputs, r.output_ids, r.output_origins);
      }
    }
    return r;
  }

  /// See run_control::on_complete.
  void on_complete(std::function<void()> f) { ctl_->on_complete(std::move(f)); }

  /// The coordinator actor.
  const caf::actor& coordinator() const { return ctl_->coordinator(); }

  /// Feeder sources: hands items to the run (blocking under back-pressure).
  template <class T = In>
  error feed(std::vector<T> items) {
    return ctl_->feed(to_batch(std::move(items)));
  }

  /// Feeder sources, from an actor (see run_control::feed_async).
  template <class T = In>
  void feed_async(caf::event_based_actor* self, std::vector<T> items,
                  std::function<void(const error&)> done) {
    ctl_->feed_async(self, to_batch(std::move(items)), std::move(done));
  }

  /// Feeder sources: no more items.
  void close() { ctl_->close(); }

  /// The untyped control.
  const std::shared_ptr<run_control>& control() const noexcept { return ctl_; }

private:
  template <class T>
  static std::unique_ptr<batch_base> to_batch(std::vector<T> items) {
    auto b = std::make_unique<batch<T>>();
    b->values = std::move(items);
    b->keys.resize(b->values.size());
    return b;
  }

  std::shared_ptr<run_control> ctl_;
  std::shared_ptr<detail::typed_collector<Out>> outputs_;
  bool ordered_;
};

} // namespace keel
