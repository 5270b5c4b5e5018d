#pragma once

/// \file
/// What happens to an item whose stage fails: error policies and retries.
///
/// An item error is first offered to the retry policy (retryable code,
/// attempts left, run's retry budget not spent). When it is not retried, the
/// error policy classifies it:
///
/// | class      | effect                                                        |
/// |------------|---------------------------------------------------------------|
/// | `critical` | the run fails fast: it is cancelled and returns this error    |
/// | `item`     | the item fails; its error joins the run's aggregated error    |
/// | `poison`   | the item goes to the dead-letter list (and `on_dead_letter`)  |
/// | `skip`     | the item is counted as skipped; not an error                  |
///
///     auto policy = error_policy::hybrid()
///                       .on(code::already_exists, error_class::skip)
///                       .on_category("etl.schema", error_class::critical);
///     auto retry = retry_policy{}.with_max_attempts(5);
///
/// `retry_policy` lives in keel/resilience/retry.hpp (shared with sagas);
/// see docs/resilience.md#retry-policies.

#include "keel/error/error.hpp"
#include "keel/error/rules.hpp"
#include "keel/resilience/retry.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string_view>
#include <vector>

namespace keel {

/// The class of a failed item's error (see the file overview).
enum class error_class : uint8_t {
  /// The item fails; its error is aggregated.
  item,
  /// The whole run fails fast.
  critical,
  /// The item is dead-lettered.
  poison,
  /// The item is counted as skipped.
  skip,
};

std::string_view to_string(error_class x) noexcept;

/// The three policies of the seed: fail fast, collect all, hybrid.
enum class policy_mode : uint8_t {
  /// The first item error cancels the run and is its result (errgroup.WithContext).
  fail_fast,
  /// Every item's outcome is collected; the run error joins them (capped).
  collect_all,
  /// Critical errors fail fast, poison goes to the DLQ, skips are counted,
  /// the rest aggregates.
  hybrid,
};

std::string_view to_string(policy_mode x) noexcept;

/// Classifies item errors. Rules added with `on*` are tried first, first
/// match wins; then the mode's defaults (hybrid's table) and fallback class.
class error_policy {
public:
  /// Every error is critical (unless a rule says otherwise).
  static error_policy fail_fast();

  /// Every error is an item error (unless a rule says otherwise).
  static error_policy collect_all();

  /// `internal`, `data_loss`, `failed_precondition`, `permission_denied` and
  /// `unauthenticated` are critical; `panic` (the item crashed its stage on
  /// every attempt) is poison; the rest are item errors.
  static error_policy hybrid();

  /// Same as `collect_all()`.
  error_policy();

  policy_mode mode() const noexcept { return mode_; }

  /// Adds a rule for a canonical code.
  error_policy& on(code c, error_class x) {
    rules_.on(c, x);
    return *this;
  }

  /// Adds a rule for an application code.
  template <error_code_enum_type E>
  error_policy& on(E e, error_class x) {
    rules_.on(e, x);
    return *this;
  }

  /// Adds a rule for a category.
  error_policy& on_category(std::string name, error_class x) {
    rules_.on_category(std::move(name), x);
    return *this;
  }

  /// Adds a rule with a predicate.
  error_policy& on_if(std::function<bool(const error&)> test, error_class x) {
    rules_.on_if(std::move(test), x);
    return *this;
  }

  /// Puts `first`'s rules before this policy's (its mode is ignored), e.g.
  /// rules from a configuration file ahead of the mode's defaults.
  error_policy& prepend(const error_policy& first) {
    rules_.prepend(first.rules_);
    return *this;
  }

  /// The class of `err` under this policy.
  error_class classify(const error& err) const {
    if (auto x = rules_.match(err))
      return *x;
    return defaults_(err);
  }

  /// The class of `err` if one of the rules added with `on*` matches (not
  /// the mode's defaults); used for per-stage overrides, which fall back to
  /// the run's policy.
  std::optional<error_class> match(const error& err) const { return rules_.match(err); }

private:
  explicit error_policy(policy_mode m, error_rules<error_class> defaults);

  policy_mode mode_;
  error_rules<error_class> rules_;    // added with on*: tried first
  error_rules<error_class> defaults_; // the mode's rules and fallback
};

/// Caps the retries of a run, so that a failing dependency cannot multiply
/// the load (retry storms): retries are allowed while
/// `retries < min_retries + ratio * items seen by the source`.
struct retry_budget {
  double ratio = 0.2;
  uint64_t min_retries = 100;

  /// No limit.
  static retry_budget unlimited() { return {1e18, UINT64_MAX / 2}; }

  /// Whether retry number `retries + 1` is allowed after `items` items.
  bool allows(uint64_t retries, uint64_t items) const noexcept {
    return static_cast<double>(retries)
           < static_cast<double>(min_retries) + ratio * static_cast<double>(items);
  }
};

} // namespace keel
