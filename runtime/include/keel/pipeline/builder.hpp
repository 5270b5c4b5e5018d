#pragma once

/// \file
/// The pipeline builder: a source, typed stages, a run.
///
///     caf::actor_system sys{cfg};
///     auto result = keel::pipeline_from(lines)                         // std::vector<std::string>
///                       .map("parse", parse_row, stage_options{}.with_workers(4))
///                       .filter("valid", [](const row& r) { return r.ok; })
///                       .batch("group", 100, std::chrono::milliseconds(50))
///                       .sink("store", [&](const std::vector<row>& rows) { return db.insert(rows);
///                       }) .run(sys);
///     std::cout << result.summary();
///
/// Each stage runs as supervised actors (one per worker); see run.hpp for
/// what a run is made of and stage.hpp for the shapes stage functions take.

#include "keel/pipeline/run.hpp"
#include "keel/pipeline/stage.hpp"

#include <algorithm>
#include <iterator>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace keel {

namespace detail {

template <class C>
class container_cursor final : public source_cursor {
public:
  using value_type = typename C::value_type;

  explicit container_cursor(std::shared_ptr<C> items) : items_(std::move(items)) {
    pos_ = items_->begin();
    left_ = static_cast<uint64_t>(std::distance(items_->begin(), items_->end()));
  }

  bool next(batch_base& out, size_t n) override {
    auto& b = static_cast<batch<value_type>&>(out);
    auto k = static_cast<size_t>(std::min<uint64_t>(n, left_));
    auto last = std::next(pos_, static_cast<std::ptrdiff_t>(k));
    // The container belongs to the run alone: items are moved out.
    b.values.insert(b.values.end(), std::make_move_iterator(pos_), std::make_move_iterator(last));
    b.keys.resize(b.values.size());
    pos_ = last;
    left_ -= k;
    return left_ > 0;
  }

  std::optional<uint64_t> remaining() const override { return left_; }

private:
  std::shared_ptr<C> items_;
  typename C::iterator pos_;
  uint64_t left_ = 0;
};

template <class T, class G>
class generator_cursor final : public source_cursor {
public:
  explicit generator_cursor(G g) : g_(std::move(g)) {}

  bool next(batch_base& out, size_t n) override {
    auto& b = static_cast<batch<T>&>(out);
    for (; n > 0; --n) {
      std::optional<T> x = g_();
      if (!x)
        return false;
      b.keys.emplace_back();
      b.values.push_back(std::move(*x));
    }
    return true;
  }

private:
  G g_;
};

} // namespace detail

/// A pipeline under construction whose current item type is `T` (`void`
/// after a sink). `Src` is the source's item type.
template <class T, class Src = T>
class pipeline {
public:
  using item_type = T;

  explicit pipeline(run_plan plan) : plan_(std::move(plan)) {}

  /// Adds a map stage: `f(const T&)` returns `U` or `expected<U>`.
  template <class F>
  auto map(std::string name, F f, stage_options opts = {}) && {
    using U = detail::stage_value_t<F, T>;
    static_assert(!std::is_void_v<U>, "a map stage must return a value; use sink for side effects");
    return std::move(*this).template add<U>(
        std::move(name), stage_kind::map, std::move(opts),
        [f = std::move(f)] { return std::make_unique<detail::map_instance<T, U, F>>(f); });
  }

  /// Adds a filter stage: `f(const T&)` returns `bool` or `expected<bool>`.
  template <class F>
  pipeline<T, Src> filter(std::string name, F f, stage_options opts = {}) && {
    static_assert(std::is_same_v<detail::stage_value_t<F, T>, bool>,
                  "a filter stage must return bool or expected<bool>");
    return std::move(*this).template add<T>(
        std::move(name), stage_kind::filter, std::move(opts),
        [f = std::move(f)] { return std::make_unique<detail::filter_instance<T, F>>(f); });
  }

  /// Adds a flat-map stage: `f(const T&)` returns `std::vector<U>` (or an
  /// expected of one); each element becomes a new item.
  template <class F>
  auto flat_map(std::string name, F f, stage_options opts = {}) && {
    using V = detail::stage_value_t<F, T>;
    using U = typename V::value_type;
    return std::move(*this).template add<U>(
        std::move(name), stage_kind::flat_map, std::move(opts),
        [f = std::move(f)] { return std::make_unique<detail::flat_map_instance<T, U, F>>(f); });
  }

  /// Adds a batch stage: groups items into `std::vector<T>` of `size` items,
  /// or fewer when `flush_every` (if non-zero) passes first. One worker.
  pipeline<std::vector<T>, Src> batch(std::string name, size_t size,
                                      std::chrono::nanoseconds flush_every = {}) && {
    stage_options opts;
    auto next = std::move(*this).template add<std::vector<T>>(
        std::move(name), stage_kind::group, opts,
        [size] { return std::make_unique<detail::group_instance<T>>(size < 1 ? 1 : size); });
    next.plan_.stages.back().flush_every = flush_every;
    return next;
  }

  /// Adds a sink stage: `f(const T&)` returns `void`, `error` or `expected<void>`.
  template <class F>
  pipeline<void, Src> sink(std::string name, F f, stage_options opts = {}) && {
    stage_def d;
    d.name = std::move(name);
    d.kind = stage_kind::sink;
    d.options = std::move(opts);
    d.make = [f = std::move(f)] { return std::make_unique<detail::sink_instance<T, F>>(f); };
    d.make_output = detail::batch_maker<T>(); // a scratch batch; sinks emit nothing
    plan_.stages.push_back(std::move(d));
    return pipeline<void, Src>{std::move(plan_)};
  }

  /// Starts the run and returns at once.
  run_handle<T, Src> start(caf::actor_system& sys, run_config cfg = {}) && {
    plan_.config = std::move(cfg);
    std::shared_ptr<detail::typed_collector<T>> outputs;
    if constexpr (!std::is_void_v<T>) {
      outputs = std::make_shared<detail::typed_collector<T>>();
      plan_.outputs = outputs;
    }
    bool ordered = plan_.config.ordered_results;
    return run_handle<T, Src>{start_run(sys, std::move(plan_)), std::move(outputs), ordered};
  }

  /// Runs to the end and returns the result (blocking; not from inside an actor).
  run_result<T> run(caf::actor_system& sys, run_config cfg = {}) && {
    return std::move(*this).start(sys, std::move(cfg)).wait();
  }

  /// The plan built so far.
  const run_plan& plan() const noexcept { return plan_; }

private:
  template <class, class>
  friend class pipeline;

  template <class U, class Make>
  pipeline<U, Src> add(std::string name, stage_kind kind, stage_options opts, Make make) && {
    stage_def d;
    d.name = std::move(name);
    d.kind = kind;
    d.options = std::move(opts);
    d.make = std::move(make);
    d.make_output = detail::batch_maker<U>();
    plan_.stages.push_back(std::move(d));
    return pipeline<U, Src>{std::move(plan_)};
  }

  run_plan plan_;
};

/// A pipeline reading a container (moved into the run; items are moved out).
template <class C>
pipeline<typename std::decay_t<C>::value_type> pipeline_from(C&& items) {
  using CC = std::decay_t<C>;
  using T = typename CC::value_type;
  auto shared = std::make_shared<CC>(std::forward<C>(items));
  run_plan plan;
  plan.source.open = [shared]() -> std::unique_ptr<source_cursor> {
    return std::make_unique<detail::container_cursor<CC>>(shared);
  };
  plan.source.make_batch = detail::batch_maker<T>();
  return pipeline<T>{std::move(plan)};
}

/// A pipeline reading a generator: `g()` returns `std::optional<T>`, nullopt
/// at the end. It runs in the source actor; an exception fails the run.
template <class T, class G>
pipeline<T> pipeline_from_generator(G g) {
  run_plan plan;
  plan.source.open = [g = std::move(g)]() -> std::unique_ptr<source_cursor> {
    return std::make_unique<detail::generator_cursor<T, G>>(g);
  };
  plan.source.make_batch = detail::batch_maker<T>();
  return pipeline<T>{std::move(plan)};
}

/// A pipeline fed by the embedding code or an actor through the run handle
/// (`feed`, `feed_async`, `close`), with back-pressure.
template <class T>
pipeline<T> pipeline_from_feeder() {
  run_plan plan;
  plan.source.make_batch = detail::batch_maker<T>();
  return pipeline<T>{std::move(plan)};
}

} // namespace keel
