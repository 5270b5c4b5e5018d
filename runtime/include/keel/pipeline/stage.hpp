#pragma once

/// \file
/// Pipeline stages: what a stage function may look like, and the type-erased
/// interface through which the runtime drives it.
///
/// A stage function takes the item (`const In&` or `In&`), optionally
/// followed by an `item_context&`, and returns:
///
/// | stage    | returns                                                      |
/// |----------|--------------------------------------------------------------|
/// | map      | `Out` or `expected<Out>`                                     |
/// | filter   | `bool` or `expected<bool>`                                   |
/// | flat_map | `std::vector<Out>` or `expected<std::vector<Out>>`           |
/// | sink     | `void`, `error` or `expected<void>`                          |
///
/// A returned error fails the item (see policy.hpp for what follows). A
/// thrown exception fails the item with a `panic` error *and* crashes the
/// stage: its supervisor restarts the worker (a fresh copy of the function,
/// so state it captured by value starts over) and the worker resumes after
/// the item. Each worker has its own copy of the function.

#include "keel/pipeline/envelope.hpp"
#include "keel/pipeline/policy.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace keel {

/// What a stage function can learn about the item it processes and the run.
class item_context {
public:
  /// The item's envelope (id, origin, attempt, trace context).
  const envelope& item() const noexcept {
    if (!cached_) {
      cache_.id = key_->id;
      cache_.origin = key_->origin;
      cache_.attempt = batch_->attempt;
      cache_.trace = batch_->trace;
      // An item made at the previous stage (its id says where) has the span
      // of the source item at that stage as parent.
      const bool made_there =
          (key_->id >> 63) != 0 && ((key_->id >> 56) & 0x7F) == ((stage_number_ - 1) & 0x7F);
      cache_.trace.parent_span_id =
          span_id_of(salt_, made_there ? key_->origin : key_->id, stage_number_ - 1);
      cache_.trace.span_id = span_id_of(salt_, key_->id, stage_number_);
      cached_ = true;
    }
    return cache_;
  }

  /// The item's id.
  uint64_t id() const noexcept { return key_->id; }

  /// The attempt at this stage, 1 for the first.
  uint32_t attempt() const noexcept { return batch_->attempt; }

  /// The stage's name.
  const std::string& stage() const noexcept { return *stage_; }

  /// The worker index within the stage.
  uint32_t worker() const noexcept { return worker_; }

  /// Whether the run was cancelled (by the caller, the deadline or a
  /// critical error). Long stage functions should check it and return.
  bool cancelled() const noexcept { return cancel_->load(std::memory_order_relaxed); }

  /// The run's deadline, if it has one.
  std::optional<std::chrono::steady_clock::time_point> deadline() const noexcept {
    return deadline_;
  }

  // -- for the runtime and stage adapters -----------------------------------------

  item_context(const std::string* stage, uint32_t stage_number, uint32_t worker,
               const std::atomic<bool>* cancel, std::atomic<uint64_t>* next_id,
               std::optional<std::chrono::steady_clock::time_point> deadline,
               uint64_t salt) noexcept
      : stage_(stage), stage_number_(stage_number), worker_(worker), cancel_(cancel),
        next_id_(next_id), deadline_(deadline), salt_(salt) {}

  /// Whether the loop over a batch should stop: the run was cancelled, or its
  /// deadline passed (checked on the clock every 8 items, so that a worker
  /// busy with slow items notices it even when the coordinator cannot run).
  bool should_stop() noexcept {
    if (cancel_->load(std::memory_order_relaxed))
      return true;
    if (deadline_ && (++clock_tick_ & 7) == 0 && std::chrono::steady_clock::now() >= *deadline_) {
      deadline_hit_ = true;
      return true;
    }
    return false;
  }

  /// Whether `should_stop` saw the deadline pass (cleared by the call).
  bool take_deadline_hit() noexcept { return std::exchange(deadline_hit_, false); }

  /// Points the context at item `k` of `b`.
  void reset(const batch_base* b, const item_key* k) noexcept {
    batch_ = b;
    key_ = k;
    cached_ = false;
  }

  /// The key of an output that continues this item.
  item_key forward() const noexcept { return *key_; }

  /// The key of a new item derived from this one: a fresh id (top bit set,
  /// this stage's number in bits 56..62, a run-wide counter below), same origin.
  item_key derive() const noexcept {
    auto n = next_id_->fetch_add(1, std::memory_order_relaxed) & ((uint64_t{1} << 56) - 1);
    return {uint64_t{1} << 63 | uint64_t{stage_number_ & 0x7F} << 56 | n, key_->origin};
  }

private:
  const batch_base* batch_ = nullptr;
  const item_key* key_ = nullptr;
  const std::string* stage_;
  uint32_t stage_number_;
  uint32_t worker_;
  const std::atomic<bool>* cancel_;
  std::atomic<uint64_t>* next_id_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  uint64_t salt_;
  uint32_t clock_tick_ = 0;
  bool deadline_hit_ = false;
  mutable envelope cache_;
  mutable bool cached_ = false;
};

/// The kinds of stage.
enum class stage_kind : uint8_t { map, filter, flat_map, group, sink };

std::string_view to_string(stage_kind x) noexcept;

/// What became of one item at a stage.
enum class apply_kind : uint8_t {
  emitted,   ///< passed on (map, kept by filter)
  filtered,  ///< dropped by a filter, or a flat-map with no children
  consumed,  ///< folded into new items (flat-map children, a group)
  succeeded, ///< stored by a sink
  failed,    ///< the function returned an error
};

/// Result of applying a stage to one item.
struct apply_status {
  apply_status(apply_kind k = apply_kind::emitted, uint32_t n = 0, keel::error e = {})
      : kind(k), created(n), error(std::move(e)) {}

  apply_kind kind = apply_kind::emitted;
  /// New items made (flat-map children, a completed group).
  uint32_t created = 0;
  keel::error error;
};

/// Counts of one pass over a batch.
struct apply_tally {
  uint64_t out = 0;
  uint64_t filtered = 0;
  uint64_t consumed = 0;
  uint64_t created = 0;
  uint64_t succeeded = 0;

  /// Adds these counts to `to` (another tally, or a stage's statistics).
  template <class Counts>
  void add_to(Counts& to) const noexcept {
    to.out += out;
    to.filtered += filtered;
    to.consumed += consumed;
    to.created += created;
    to.succeeded += succeeded;
  }
};

/// Times one item in `every` (for the latency histograms).
struct latency_sampler {
  uint32_t every = 64;
  uint32_t countdown = 0;
  std::vector<std::chrono::steady_clock::duration> samples;

  /// Whether the next item is timed, given the items left before the next
  /// sample (`countdown`, advanced; a copy the caller keeps in a register).
  bool due(uint32_t& left) const noexcept {
    if (left > 0) {
      --left;
      return false;
    }
    left = every > 0 ? every - 1 : 0;
    return true;
  }
};

/// Receives the rare per-item events of a pass (failures, crashes).
class item_observer {
public:
  virtual ~item_observer() = default;

  /// Item `i` of `in` failed with `err` (its cursor is already past it).
  virtual void failed(batch_base& in, size_t i, keel::error err) = 0;

  /// Item `i` of `in` threw; the exception is rethrown after this returns.
  virtual void crashed(batch_base& in, size_t i, std::exception_ptr ep) = 0;
};

/// One worker's instance of a stage; made anew on every (re)start.
class stage_instance {
public:
  virtual ~stage_instance() = default;

  /// Applies the stage to the items of `in` from its cursor on, appending
  /// outputs to `out`. Rethrows a stage function's exception after telling
  /// `obs`; the cursor is then past the item that threw. Stops early, with the
  /// cursor at the first item not processed, once the run is cancelled.
  virtual void run(batch_base& in, batch_base& out, item_context& ctx, item_observer& obs,
                   apply_tally& t, latency_sampler& s) = 0;

  /// Group stages: moves a pending partial group into `out`; returns the
  /// number of items made (0 or 1).
  virtual uint32_t flush(batch_base& /*out*/) { return 0; }

  /// Group stages: items waiting in a partial group.
  virtual size_t pending() const noexcept { return 0; }
};

/// Options of one stage.
struct stage_options {
  /// Parallel workers (the seed's errgroup SetLimit).
  uint32_t workers = 1;
  /// With several workers: deliver outputs in input order (a resequencer
  /// actor restores the order). Without, outputs go on as they are ready.
  bool ordered = false;
  /// Overrides the run's error policy: its rules are tried first.
  std::optional<error_policy> policy;
  /// Replaces the run's retry policy for this stage.
  std::optional<retry_policy> retry;
  /// Batches in flight per link into this stage; 0 takes the run's default.
  uint32_t credit = 0;

  stage_options& with_workers(uint32_t n) {
    workers = n;
    return *this;
  }

  stage_options& with_ordered(bool x = true) {
    ordered = x;
    return *this;
  }

  stage_options& with_policy(error_policy p) {
    policy = std::move(p);
    return *this;
  }

  stage_options& with_retry(retry_policy r) {
    retry = std::move(r);
    return *this;
  }

  stage_options& with_credit(uint32_t n) {
    credit = n;
    return *this;
  }
};

/// A stage as the runtime sees it.
struct stage_def {
  std::string name;
  stage_kind kind = stage_kind::map;
  stage_options options;
  /// Makes a worker's instance; called per worker and per restart.
  std::function<std::unique_ptr<stage_instance>()> make;
  /// Makes an empty output batch (not used by sinks).
  std::function<std::unique_ptr<batch_base>(size_t)> make_output;
  /// Group stages: emit a partial group after this long (0 = only by size).
  std::chrono::nanoseconds flush_every{0};
};

namespace detail {

template <class T>
struct is_expected : std::false_type {};

template <class T>
struct is_expected<expected<T>> : std::true_type {};

/// Calls `f(x, ctx)` or `f(x)`, whichever `f` accepts.
template <class F, class In>
decltype(auto) call_stage(F& f, In& x, item_context& ctx) {
  if constexpr (std::is_invocable_v<F&, In&, item_context&>)
    return f(x, ctx);
  else
    return f(x);
}

template <class F, class In>
using stage_return_t =
    decltype(call_stage(std::declval<F&>(), std::declval<In&>(), std::declval<item_context&>()));

template <class R>
struct unwrap_expected {
  using type = R;
};

template <class R>
struct unwrap_expected<expected<R>> {
  using type = R;
};

template <class F, class In>
using stage_value_t = typename unwrap_expected<std::decay_t<stage_return_t<F, In>>>::type;

/// Runs `f` and splits the result into a value and an error.
template <class F, class In, class Sink>
apply_status invoke_stage(F& f, In& x, item_context& ctx, Sink&& sink) {
  using R = std::decay_t<stage_return_t<F, In>>;
  if constexpr (is_expected<R>::value) {
    auto r = call_stage(f, x, ctx);
    if (!r.has_value())
      return {apply_kind::failed, 0, r.error()};
    if constexpr (std::is_void_v<typename unwrap_expected<R>::type>)
      return sink();
    else
      return sink(std::move(r.value()));
  } else if constexpr (std::is_void_v<R>) {
    call_stage(f, x, ctx);
    return sink();
  } else if constexpr (std::is_same_v<R, error>) {
    auto err = call_stage(f, x, ctx);
    if (err)
      return {apply_kind::failed, 0, std::move(err)};
    return sink();
  } else {
    return sink(call_stage(f, x, ctx));
  }
}

/// The loop over a batch, typed, so that the stage function inlines into it;
/// `Derived::apply_one(src, i, out, ctx)` handles one item.
template <class In, class Derived>
class typed_instance : public stage_instance {
public:
  void run(batch_base& in, batch_base& out, item_context& ctx, item_observer& obs, apply_tally& t,
           latency_sampler& s) final {
    auto& src = static_cast<batch<In>&>(in);
    const size_t n = src.values.size();
    // Counts and the sampler's countdown live in locals (registers) for the
    // loop: through `t` and `s` the compiler would store them on every item,
    // as an output pushed to `out` might alias them. Written back on every
    // way out, exceptions included.
    struct locals {
      apply_tally& t;
      latency_sampler& s;
      apply_tally counts;
      uint32_t countdown;
      void commit() noexcept {
        counts.add_to(t);
        counts = {};
        s.countdown = countdown;
      }
      ~locals() { commit(); }
    } l{t, s, {}, s.countdown};
    for (size_t i = src.cursor; i < n; ++i) {
      if (ctx.should_stop()) { // the rest of the batch ends as cancelled
        src.cursor = i;
        return;
      }
      ctx.reset(&src, &src.keys[i]);
      const bool timed = s.due(l.countdown);
      const auto t0 =
          timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      apply_status st;
      try {
        st = static_cast<Derived&>(*this).apply_one(src, i, out, ctx);
      } catch (...) {
        src.cursor = i + 1;
        l.commit(); // the observer records the counts so far
        obs.crashed(src, i, std::current_exception());
        throw;
      }
      if (timed)
        s.samples.push_back(std::chrono::steady_clock::now() - t0);
      switch (st.kind) {
        case apply_kind::emitted:
          ++l.counts.out;
          break;
        case apply_kind::filtered:
          ++l.counts.filtered;
          break;
        case apply_kind::consumed:
          ++l.counts.consumed;
          l.counts.created += st.created;
          l.counts.out += st.created;
          break;
        case apply_kind::succeeded:
          ++l.counts.succeeded;
          break;
        case apply_kind::failed:
          src.cursor = i + 1;
          obs.failed(src, i, std::move(st.error));
          break;
      }
    }
    src.cursor = n;
  }
};

template <class In, class Out, class F>
class map_instance final : public typed_instance<In, map_instance<In, Out, F>> {
public:
  explicit map_instance(F f) : f_(std::move(f)) {}

  apply_status apply_one(batch<In>& src, size_t i, batch_base& out, item_context& ctx) {
    return invoke_stage(f_, src.values[i], ctx, [&](Out y) {
      static_cast<batch<Out>&>(out).push(ctx.forward(), std::move(y));
      return apply_status{};
    });
  }

private:
  F f_;
};

template <class In, class F>
class filter_instance final : public typed_instance<In, filter_instance<In, F>> {
public:
  explicit filter_instance(F f) : f_(std::move(f)) {}

  apply_status apply_one(batch<In>& src, size_t i, batch_base& out, item_context& ctx) {
    return invoke_stage(f_, src.values[i], ctx, [&](bool keep) {
      if (!keep)
        return apply_status{apply_kind::filtered};
      static_cast<batch<In>&>(out).push(ctx.forward(), std::move(src.values[i]));
      return apply_status{};
    });
  }

private:
  F f_;
};

template <class In, class Out, class F>
class flat_map_instance final : public typed_instance<In, flat_map_instance<In, Out, F>> {
public:
  explicit flat_map_instance(F f) : f_(std::move(f)) {}

  apply_status apply_one(batch<In>& src, size_t i, batch_base& out, item_context& ctx) {
    return invoke_stage(f_, src.values[i], ctx, [&](auto&& ys) {
      if (ys.empty())
        return apply_status{apply_kind::filtered};
      auto& dst = static_cast<batch<Out>&>(out);
      uint32_t n = 0;
      for (auto& y : ys) {
        dst.push(ctx.derive(), std::move(y));
        ++n;
      }
      return apply_status{apply_kind::consumed, n};
    });
  }

private:
  F f_;
};

template <class In, class F>
class sink_instance final : public typed_instance<In, sink_instance<In, F>> {
public:
  explicit sink_instance(F f) : f_(std::move(f)) {}

  apply_status apply_one(batch<In>& src, size_t i, batch_base&, item_context& ctx) {
    return invoke_stage(f_, src.values[i], ctx, [] { return apply_status{apply_kind::succeeded}; });
  }

private:
  F f_;
};

template <class In>
class group_instance final : public typed_instance<In, group_instance<In>> {
public:
  explicit group_instance(size_t size) : size_(size) { group_.reserve(size); }

  apply_status apply_one(batch<In>& src, size_t i, batch_base& out, item_context& ctx) {
    if (group_.empty())
      first_ = ctx.derive();
    group_.push_back(std::move(src.values[i]));
    if (group_.size() < size_)
      return {apply_kind::consumed, 0};
    return {apply_kind::consumed, emit(out)};
  }

  uint32_t flush(batch_base& out) override { return group_.empty() ? 0 : emit(out); }

  size_t pending() const noexcept override { return group_.size(); }

private:
  uint32_t emit(batch_base& out) {
    static_cast<batch<std::vector<In>>&>(out).push(first_, std::move(group_));
    group_ = {};
    group_.reserve(size_);
    return 1;
  }

  size_t size_;
  item_key first_;
  std::vector<In> group_;
};

template <class T>
std::function<std::unique_ptr<batch_base>(size_t)> batch_maker() {
  return [](size_t n) -> std::unique_ptr<batch_base> { return std::make_unique<batch<T>>(n); };
}

} // namespace detail

} // namespace keel
