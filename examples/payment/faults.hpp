/// @file
/// Fault injection for the payment example: which step fails, for which
/// orders, how (an error, an error after the side effect happened, an
/// exception), and how slow it is.
///
/// @code
///   payment::faults f{seed};
///   f.add({.step = "allocate", .share = 0.2, .code = keel::code::resource_exhausted,
///          .message = "out of stock"});                       // 20% of orders, always
///   f.add({.step = "ship", .compensator = true, .orders = {"order-3"}, .times = 2});
///                                                              // transient: 2 failures, then ok
///   f.add({.step = "*", .kind = payment::fault_kind::none, .latency_min = 1ms,
///          .latency_max = 5ms});                              // latency only, every step
///   auto d = f.decide("allocate", false, "order-7");
/// @endcode
///
/// Which orders a rule hits is decided by a hash of (seed, rule, order id),
/// not by a random stream: a restarted process makes the same choice, so a
/// saga resumed after a crash meets the same faults. `times` counts calls in
/// this process only (a restart gives a transient fault a fresh budget).
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/error.hpp"

namespace payment {

/// How an injected fault shows.
enum class fault_kind : uint8_t {
  /// No failure (a latency-only rule).
  none = 0,
  /// The action fails before doing anything.
  fail = 1,
  /// The action does its side effect, then reports failure (a lost reply):
  /// the retry must be idempotent.
  fail_after_effect = 2,
  /// The action throws (keel turns it into a `panic`).
  throw_exception = 3,
};

/// One rule.
struct fault {
  /// The step ("charge", ...); "*" for every step.
  std::string step = {};
  /// Hit the compensator instead of the forward action.
  bool compensator = false;
  /// Only these orders (empty: every order).
  std::set<std::string> orders = {};
  /// Share of the (matching) orders hit, chosen per order from the seed.
  double share = 1.0;
  /// Fail the first `times` calls per order, then succeed (transient).
  uint32_t times = std::numeric_limits<uint32_t>::max();
  fault_kind kind = fault_kind::fail;
  keel::code code = keel::code::unavailable;
  std::string message = "injected fault";
  /// Added latency, uniform in [latency_min, latency_max] per call.
  std::chrono::milliseconds latency_min{0};
  std::chrono::milliseconds latency_max{0};
};

/// What one call of an action meets.
struct decision {
  std::chrono::milliseconds latency{0};
  fault_kind kind = fault_kind::none;
  /// The error to report (kind fail / fail_after_effect), or the exception's
  /// message (throw_exception).
  keel::error err;
};

/// The rules in force; thread-safe.
class faults {
public:
  explicit faults(uint64_t seed = 0) : seed_(seed), rng_(seed) {}

  faults& add(fault f) {
    std::lock_guard guard{mtx_};
    rules_.push_back(std::move(f));
    return *this;
  }

  /// Whether rule `f` hits `order_id` (ignoring `times`).
  bool hits(const fault& f, size_t rule_index, const std::string& order_id) const;

  /// The outcome of one call: latencies of every matching rule add up; the
  /// first matching failing rule with budget left fails it.
  decision decide(std::string_view step, bool compensator, const std::string& order_id);

  uint64_t seed() const noexcept { return seed_; }

private:
  std::mutex mtx_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<fault> rules_;
  std::map<std::pair<size_t, std::string>, uint32_t> calls_;
};

} // namespace payment
