/// @file
/// Fault injection for tests and game days: fail chosen items, fail a random
/// (seeded) share, add latency, throw; around any stage function or
/// dependency call.
///
/// A `fault_injector` holds an ordered list of rules. For each call it walks
/// the rules: a rule matches the call's key (any key, listed keys, or a
/// predicate), then fires with its probability (seeded: the same seed gives
/// the same faults), at most `max_hits` times. Latency rules that fire add
/// up; the first fail or throw rule that fires ends the walk. An injected
/// failure is `resilience_code::injected_fault` (canonical `unavailable`, so
/// retries and breakers treat it as a transient outage) naming the rule, or,
/// with `code` set, an error with that canonical code whose cause is the
/// injected fault (`keel::is(err, resilience_code::injected_fault)` holds
/// either way).
///
/// @code
///   keel::fault_config cfg;
///   cfg.seed = 42;
///   cfg.rules.push_back({.name = "flaky-db", .probability = 0.1});
///   cfg.rules.push_back({.name = "slow-db", .action = keel::fault_action::latency,
///                        .probability = 0.05, .latency = 20ms});
///   keel::fault_injector faults{cfg};
///   auto lookup = faults.wrap(db_lookup,  // expected<row>(const std::string& id)
///                             [](const std::string& id) { return id; });
///   auto row = lookup("42");  // sometimes injected_fault, sometimes 20 ms late
/// @endcode
///
/// Two ways to apply a decision: `inject(key)` and `wrap(f)` sleep for the
/// latency on the calling thread (they block: fine in a test or a stage
/// function on a worker, wrong in an actor handler), `decide(key)` only
/// returns what to do, so an actor can fail at once or delay its reply with a
/// timer. Random shares are reproducible for a seed when the calls come in
/// the same order; with `by_key` a rule picks keys by a hash of the seed, the
/// rule and the key, so the same keys fail whatever the order or thread
/// (and every retry of such a key fails too: a permanently broken item).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/json/value.hpp>

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"
#include "keel/resilience/codes.hpp"

namespace keel {

/// What a fault rule does when it fires.
enum class fault_action : uint8_t {
  /// The call fails with `injected_fault` (or the rule's `code`) and is not made.
  fail,
  /// The call is delayed by the rule's `latency`, then made.
  latency,
  /// `injected_exception` is thrown instead of making the call.
  throw_exception,
};

/// "fail", "latency" or "throw".
std::string_view to_string(fault_action a) noexcept;

/// One rule of a fault injector (see the file overview).
struct fault_rule {
  /// Named in the injected error and in the counts.
  std::string name = "fault";
  fault_action action = fault_action::fail;
  /// Keys the rule applies to; empty = every key (unless `predicate` is set).
  std::vector<std::string> keys;
  /// Applies to keys for which this returns true (code only, not JSON); with
  /// `keys` as well, a key must pass both.
  std::function<bool(std::string_view)> predicate;
  /// Share of matching calls on which the rule fires, in [0, 1].
  double probability = 1.0;
  /// Pick keys by hash (seed, rule, key) instead of drawing per call.
  bool by_key = false;
  /// Fire at most this often; 0 = no limit (e.g. 3: a dependency that
  /// recovers after three failures).
  uint64_t max_hits = 0;
  /// `latency`: the delay to add.
  std::chrono::nanoseconds latency{0};
  /// `fail`: the canonical code of the injected error; nullopt = the code of
  /// `injected_fault` (`unavailable`).
  std::optional<keel::code> code;
};

/// The configuration of a fault injector (plain values, also loadable from JSON).
struct fault_config {
  /// Seeds the random shares.
  uint64_t seed = 0;
  /// A disabled injector lets every call through.
  bool enabled = true;
  std::vector<fault_rule> rules;
};

/// Reads a fault injector configuration:
///
///     {"seed": 42, "enabled": true,
///      "rules": [{"name": "flaky-db", "action": "fail", "probability": 0.1,
///                 "code": "unavailable", "max_hits": 0},
///                {"name": "bad-items", "keys": ["7", "13"]},
///                {"name": "sticky", "probability": 0.01, "by_key": true},
///                {"name": "slow", "action": "latency", "latency_ms": 20, "probability": 0.05},
///                {"name": "boom", "action": "throw", "keys": ["99"]}]}
///
/// Errors are `invalid_argument` naming the field under `path`, e.g.
/// `fault_injection.rules[1].probability: expected a number in 0..1, got 2`.
expected<fault_config> fault_config_from_json(const boost::json::value& v,
                                              const std::string& path = "fault_injection");

/// Parses JSON text and reads it.
expected<fault_config> fault_config_from_json_string(std::string_view text);

/// Thrown by a `throw_exception` rule; carries the injected error.
class injected_exception : public std::runtime_error {
public:
  explicit injected_exception(keel::error err);

  const keel::error& error() const noexcept { return err_; }

private:
  keel::error err_;
};

/// What to do about one call.
struct fault_decision {
  /// Delay to add before the call (sum of the latency rules that fired).
  std::chrono::nanoseconds delay{0};
  /// Non-empty: fail the call with this error instead of making it.
  keel::error err;
  /// Throw `injected_exception{err}` instead of making the call.
  bool throws = false;

  /// True when nothing is injected.
  bool clean() const noexcept { return delay.count() == 0 && !err; }
};

/// Applies fault rules to calls; thread-safe. See the file overview.
class fault_injector {
public:
  // -- constructors -----------------------------------------------------------

  explicit fault_injector(fault_config cfg);

  fault_injector(const fault_injector&) = delete;
  fault_injector& operator=(const fault_injector&) = delete;

  // -- deciding ---------------------------------------------------------------

  /// Decides what to inject into a call with `key`, without sleeping or
  /// throwing (for actors: fail with `err`, or reply after `delay`).
  fault_decision decide(std::string_view key = {});

  /// Decides and applies: sleeps for the latency (**blocks the calling
  /// thread**), throws for a throw rule, returns the injected error (empty
  /// when the call may go ahead).
  keel::error inject(std::string_view key = {});

  /// `f` with faults injected before each call (blocking latency, see
  /// `inject`). `key_of(args...)` names the call's key; without it every
  /// call has the key "". A failure becomes the result when `f`'s result can
  /// hold a `keel::error` (`expected<T>`, `keel::error`), else it is thrown
  /// as `injected_exception`. The wrapper refers to this injector: keep the
  /// injector alive while it is used.
  template <class F, class KeyOf = std::nullptr_t>
  auto wrap(F f, KeyOf key_of = nullptr) {
    return [this, f = std::move(f), key_of = std::move(key_of)](auto&&... args) mutable {
      using result = std::invoke_result_t<F&, decltype(args)...>;
      std::string key;
      if constexpr (!std::is_same_v<KeyOf, std::nullptr_t>)
        key = std::string{key_of(args...)};
      if (auto err = inject(key)) {
        if constexpr (std::is_constructible_v<result, keel::error> && !std::is_same_v<result, bool>)
          return result(std::move(err));
        else
          throw injected_exception(std::move(err));
      }
      return f(std::forward<decltype(args)>(args)...);
    };
  }

  // -- control ----------------------------------------------------------------

  /// Turns injection on or off at run time (a game day's kill switch).
  void enabled(bool on) noexcept { enabled_.store(on, std::memory_order_relaxed); }

  bool enabled() const noexcept { return enabled_.load(std::memory_order_relaxed); }

  // -- properties -------------------------------------------------------------

  /// Faults injected so far, all rules.
  uint64_t injected() const;

  /// Times rule `name` fired; 0 for an unknown name.
  uint64_t injected(std::string_view name) const;

  /// Calls decided so far.
  uint64_t calls() const;

  const fault_config& config() const noexcept { return cfg_; }

private:
  bool matches(const fault_rule& r, std::string_view key) const;
  bool fires(size_t i, std::string_view key); // lock held

  fault_config cfg_;
  std::atomic<bool> enabled_;
  mutable std::mutex mtx_;
  std::mt19937_64 rng_;
  std::vector<uint64_t> hits_;
  uint64_t calls_ = 0;
};

} // namespace keel
