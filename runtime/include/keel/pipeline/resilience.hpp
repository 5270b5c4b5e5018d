#pragma once

/// \file
/// Declarative resilience for pipeline stages: a circuit breaker, a bulkhead
/// and a rate limiter around a stage function, and the stage's retry policy,
/// from plain configuration (also loadable from JSON).
///
///     keel::stage_resilience res;
///     res.breaker = keel::breaker_config{};
///     res.breaker->consecutive_failures = 5;
///     res.bulkhead = keel::bulkhead_config{.max_concurrent = 8};
///     res.retry = keel::retry_policy{}.with_max_attempts(4);
///     auto guards = keel::make_stage_guards(res, "charge").value();
///
///     pipeline.map("charge", keel::guarded(charge, guards), res.options(
///                                keel::stage_options{}.with_workers(4)));
///
/// From a run configuration (`"stages": {"charge": {"resilience": {...}}}`,
/// see keel/pipeline/config.hpp): `make_stage_guards(cfg, "charge")`; the
/// retry policy in it is applied by the run as the stage's `retry`.
///
/// How a guarded call goes: the breaker admits it or refuses at once
/// (`circuit_open`); then the rate limiter (`rate_limited`) and the bulkhead
/// (`bulkhead_full`; a stage never waits for a slot, it is refused at once
/// and the pipeline's retry waits instead, without holding a worker). A
/// refusal is the item's error, with its own code: the run's policy and
/// retry see its canonical code (`unavailable` for an open breaker,
/// `resource_exhausted` for the others), which the default retry policy
/// retries with backoff; rules can still match the distinct code
/// (`policy.on(keel::resilience_code::circuit_open, keel::error_class::poison)`).
/// A refusal by the limiter or the bulkhead is not an outcome of the
/// dependency, so the breaker does not count it. The function's outcome is
/// recorded by the breaker, timed with the breaker's clock; an exception is
/// recorded as a `panic` failure and rethrown (the stage's supervisor
/// restarts the worker as usual).
///
/// The guards are shared: every worker of the stage (each has its own copy of
/// the wrapped function) uses the same objects, and several stages share a
/// breaker, bulkhead or limiter when they are given the same `shared_ptr`
/// (e.g. two stages calling the same service).

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"
#include "keel/error/panic.hpp"
#include "keel/pipeline/stage.hpp"
#include "keel/resilience/breaker.hpp"
#include "keel/resilience/bulkhead.hpp"
#include "keel/resilience/codes.hpp"
#include "keel/resilience/rate_limiter.hpp"

#include <boost/json/fwd.hpp>

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace keel {

struct run_config;

/// The resilience of one stage, as configuration; see the file overview.
/// Absent parts are not applied.
struct stage_resilience {
  /// A circuit breaker; its name defaults to the stage's.
  std::optional<breaker_config> breaker{};
  /// A bulkhead; its name defaults to the stage's.
  std::optional<bulkhead_config> bulkhead{};
  /// One bulkhead per item key (`keyed_bulkhead`) instead of one per stage.
  bool bulkhead_per_key = false;
  /// A token bucket per item key (one key per stage unless `guarded` is
  /// given a key function).
  std::optional<rate_limiter_config> rate_limit{};
  /// The stage's retry policy (replaces the run's for this stage).
  std::optional<retry_policy> retry{};

  /// `base` with this configuration's retry policy, if any.
  stage_options options(stage_options base = {}) const {
    if (retry)
      base.retry = *retry;
    return base;
  }
};

/// Reads a stage's resilience from JSON on top of `base`; every field is
/// optional:
///
///     {"breaker": {"consecutive_failures": 5, "open_duration_ms": 10000},
///      "bulkhead": {"max_concurrent": 8}, "bulkhead_per_key": false,
///      "rate_limit": {"rate": 100, "burst": 20},
///      "retry": {"max_attempts": 4, "initial_backoff_ms": 5}}
///
/// (the parts use the readers of keel/resilience/*.hpp and of the run
/// configuration). Errors are `invalid_argument` naming the field, e.g.
/// `stage.resilience.breaker.window_size: ...`.
expected<stage_resilience> stage_resilience_from_json(const boost::json::value& v,
                                                      stage_resilience base = {},
                                                      const std::string& path = "resilience");

/// The objects that guard a stage; null parts are not applied. Share one
/// `stage_guards` (or some of its pointers) between stages to share the guards.
struct stage_guards {
  std::shared_ptr<keel::circuit_breaker> breaker{};
  std::shared_ptr<keel::bulkhead> bulkhead{};
  /// Used instead of `bulkhead` when set: one bulkhead per item key.
  std::shared_ptr<keel::keyed_bulkhead> keyed_bulkhead{};
  std::shared_ptr<keel::rate_limiter> rate_limiter{};
};

/// Makes the guards `cfg` describes, named after `stage` where the
/// configuration keeps the default name. Fails with `invalid_argument`
/// naming the field when a part is invalid.
expected<stage_guards> make_stage_guards(const stage_resilience& cfg, std::string_view stage);

/// The guards of stage `stage` in a run configuration (its
/// `stages.<stage>.resilience`); empty guards when it has none.
expected<stage_guards> make_stage_guards(const run_config& cfg, const std::string& stage);

namespace detail {

/// The key of an item for keyed guards: the stage's name.
struct stage_name_key {
  template <class In>
  std::string_view operator()(const In&, const item_context& ctx) const noexcept {
    return ctx.stage();
  }
};

/// Calls `key(x, ctx)` or `key(x)`, whichever it accepts.
template <class Key, class In>
decltype(auto) call_key(const Key& key, const In& x, const item_context& ctx) {
  if constexpr (std::is_invocable_v<const Key&, const In&, const item_context&>)
    return key(x, ctx);
  else
    return key(x);
}

/// Calls the stage function and brings its result to `expected<V>`.
template <class V, class F, class In>
expected<V> invoke_to_expected(F& f, In& x, item_context& ctx) {
  using R = std::decay_t<stage_return_t<F, In>>;
  if constexpr (std::is_void_v<R>) {
    call_stage(f, x, ctx);
    return {};
  } else if constexpr (is_expected<R>::value) {
    return call_stage(f, x, ctx);
  } else if constexpr (std::is_same_v<R, error>) {
    auto err = call_stage(f, x, ctx);
    if (err)
      return err;
    return {};
  } else {
    return expected<V>{call_stage(f, x, ctx)};
  }
}

/// The error of a finished call, or null.
template <class V>
const error* failure_of(const expected<V>& r) noexcept {
  return r.has_value() ? nullptr : &r.error();
}

/// A stage function behind guards; see `guarded`.
template <class F, class Key>
class guarded_stage {
public:
  guarded_stage(F f, stage_guards g, Key key)
      : f_(std::move(f)), g_(std::move(g)), key_(std::move(key)) {}

  template <class In>
  auto operator()(In& x, item_context& ctx) -> expected<stage_value_t<F, In>> {
    using V = stage_value_t<F, In>;
    std::optional<breaker_permit> bp;
    if (g_.breaker) {
      auto p = g_.breaker->try_acquire();
      if (!p)
        return std::move(p).error();
      bp.emplace(std::move(*p));
    }
    // A refusal below releases the breaker permit without an outcome.
    if (g_.rate_limiter || g_.keyed_bulkhead) {
      const auto& key = call_key(key_, std::as_const(x), std::as_const(ctx));
      if (g_.rate_limiter)
        if (auto r = g_.rate_limiter->try_acquire(key); !r)
          return std::move(r).error();
      if (g_.keyed_bulkhead) {
        auto slot = g_.keyed_bulkhead->try_acquire(key);
        if (!slot)
          return std::move(slot).error();
        return call<V>(x, ctx, bp);
      }
    }
    if (g_.bulkhead) {
      auto slot = g_.bulkhead->try_acquire();
      if (!slot)
        return std::move(slot).error();
      return call<V>(x, ctx, bp);
    }
    return call<V>(x, ctx, bp);
  }

private:
  template <class V, class In>
  expected<V> call(In& x, item_context& ctx, std::optional<breaker_permit>& bp) {
    if (!bp)
      return invoke_to_expected<V>(f_, x, ctx);
    const auto start = g_.breaker->now();
    try {
      auto r = invoke_to_expected<V>(f_, x, ctx);
      const auto elapsed = g_.breaker->now() - start;
      if (const auto* err = failure_of(r))
        bp->record_failure(*err, elapsed);
      else
        bp->record_success(elapsed);
      return r;
    } catch (...) {
      bp->record_failure(make_panic_error(std::current_exception()), g_.breaker->now() - start);
      throw;
    }
  }

  F f_;
  stage_guards g_;
  Key key_;
};

} // namespace detail

/// Wraps a stage function `f` (any shape stage.hpp accepts) behind `guards`;
/// the result returns `expected<...>` of `f`'s value type, so the builder
/// makes the same kind of stage of it. `key(item)` or `key(item, ctx)` gives
/// the key for the rate limiter and a keyed bulkhead (something convertible
/// to `std::string_view`); by default the stage's name.
template <class F, class Key = detail::stage_name_key>
detail::guarded_stage<F, Key> guarded(F f, stage_guards guards, Key key = {}) {
  return {std::move(f), std::move(guards), std::move(key)};
}

} // namespace keel
