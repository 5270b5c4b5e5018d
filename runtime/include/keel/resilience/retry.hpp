/// @file
/// Retry policies: which failures to retry, how often, how long to wait.
///
/// One `retry_policy` value serves pipelines (per item and stage), sagas (per
/// step and compensator) and any hand-written loop. It decides by code, never
/// by message: by default the codes whose advice is `retry_call`
/// (`unavailable`, `resource_exhausted`, `deadline_exceeded`) plus `aborted`
/// and `panic`. The backoff kinds are those of the AWS architecture blog
/// ("Exponential Backoff And Jitter", Marc Brooker, 2015), with `base` =
/// `initial_backoff`, `cap` = `max_backoff` and `n` = the number of the retry
/// (1 for the first):
///
/// | kind                  | delay before retry n                                     |
/// |-----------------------|----------------------------------------------------------|
/// | `constant`            | `base` (no jitter)                                       |
/// | `exponential`         | `min(cap, base * multiplier^(n-1)) * (1 - jitter * u)`   |
/// | `full_jitter`         | `u * min(cap, base * multiplier^(n-1))`                  |
/// | `decorrelated_jitter` | `min(cap, base + u * (3 * previous - base))`, previous starts at
/// `base` |
///
/// where `u` is uniform in [0, 1). Decorrelated jitter depends on the previous
/// delay, so a caller that retries keeps a `retry_state` and asks `decide`
/// (or `next_delay`); `delay(next_attempt, rng)` stays for stateless callers.
///
/// @code
///   auto rp = keel::retry_policy{}
///                 .with_max_attempts(5)
///                 .with_backoff(10ms, 2s)
///                 .with_kind(keel::backoff_kind::decorrelated_jitter)
///                 .with_max_elapsed(30s);
///   keel::retry_state st;                      // one per operation
///   auto started = clock::now();
///   for (;;) {
///     auto err = call();
///     auto d = rp.decide(err, st, clock::now() - started, rng);
///     if (!d)                                  // success, not retryable or spent
///       return d.verdict == keel::retry_verdict::success ? keel::error{} : err;
///     std::this_thread::sleep_for(d.delay);    // an actor arms a timer instead
///   }
/// @endcode
///
/// `max_elapsed` is a time budget for the whole operation, counted from its
/// first attempt: a retry is scheduled only when it would start within the
/// budget. A pipeline counts from the item's first failure at the stage (it
/// does not time each item's start); a saga from the start of the step's (or
/// compensator's) first attempt.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"

namespace keel {

/// How the delay between attempts grows (see the file overview).
enum class backoff_kind : uint8_t {
  /// Always `initial_backoff`.
  constant = 0,
  /// Exponential up to `max_backoff`, shortened by the `jitter` share.
  exponential = 1,
  /// Exponential cap, delay uniform in [0, cap): spreads retries the most.
  full_jitter = 2,
  /// Uniform in [base, 3 * previous delay], capped: spreads retries without
  /// synchronising clients, with fewer very short delays than full jitter.
  decorrelated_jitter = 3,
};

/// "constant", "exponential", "full_jitter" or "decorrelated_jitter".
std::string_view to_string(backoff_kind k) noexcept;

/// Parses a name produced by `to_string(backoff_kind)`.
std::optional<backoff_kind> backoff_kind_from_string(std::string_view name) noexcept;

/// What a retrying caller remembers between attempts of one operation.
struct retry_state {
  /// Attempts made so far, the failed one included (1 after the first).
  uint32_t attempts = 1;
  /// The delay before the last retry; 0 before the first retry.
  std::chrono::nanoseconds previous_delay{0};
};

/// Why `retry_policy::decide` did or did not retry.
enum class retry_verdict : uint8_t {
  /// Retry after `retry_decision::delay`.
  retry,
  /// The call succeeded: nothing to retry.
  success,
  /// The error's code is not in the retryable set.
  not_retryable,
  /// `max_attempts` attempts were made.
  attempts_spent,
  /// The retry would start after `max_elapsed`.
  time_spent,
};

std::string_view to_string(retry_verdict v) noexcept;

/// The answer of `retry_policy::decide`; true when the call is to be retried.
struct retry_decision {
  retry_verdict verdict = retry_verdict::not_retryable;
  /// The delay before the retry (also computed for `time_spent`).
  std::chrono::nanoseconds delay{0};

  explicit operator bool() const noexcept { return verdict == retry_verdict::retry; }
};

/// Retries with backoff; see the file overview. The defaults (3 attempts,
/// exponential from 1 ms to 200 ms, 20 % jitter) suit in-process calls.
struct retry_policy {
  // -- fields -------------------------------------------------------------------

  /// Attempts per operation, the first included (1 = no retry).
  uint32_t max_attempts = 3;
  /// Delay before the second attempt (`base`).
  std::chrono::nanoseconds initial_backoff = std::chrono::milliseconds(1);
  /// Upper bound of any delay (`cap`).
  std::chrono::nanoseconds max_backoff = std::chrono::milliseconds(200);
  /// Growth per attempt of the exponential kinds (values below 1 count as 1).
  double multiplier = 2.0;
  /// `exponential` only: share of the delay that is random,
  /// delay * (1 - jitter * u), u in [0, 1).
  double jitter = 0.2;
  /// How the delay grows.
  backoff_kind backoff = backoff_kind::exponential;
  /// Time budget of the whole operation from its first attempt; 0 = none.
  std::chrono::nanoseconds max_elapsed{0};
  /// Codes worth retrying. Empty means the default set: the codes whose
  /// advice is to retry (`unavailable`, `resource_exhausted`,
  /// `deadline_exceeded`), `aborted`, and `panic` (the stage is restarted
  /// before the retry).
  std::vector<code> retryable;

  // -- factories and builders ---------------------------------------------------

  /// No retries.
  static retry_policy none() {
    retry_policy r;
    r.max_attempts = 1;
    return r;
  }

  retry_policy& with_max_attempts(uint32_t n) {
    max_attempts = n;
    return *this;
  }

  retry_policy& with_backoff(std::chrono::nanoseconds initial, std::chrono::nanoseconds max) {
    initial_backoff = initial;
    max_backoff = max;
    return *this;
  }

  retry_policy& with_kind(backoff_kind k) {
    backoff = k;
    return *this;
  }

  retry_policy& with_max_elapsed(std::chrono::nanoseconds d) {
    max_elapsed = d;
    return *this;
  }

  retry_policy& with_retryable(std::vector<code> codes) {
    retryable = std::move(codes);
    return *this;
  }

  // -- decisions ----------------------------------------------------------------

  /// Whether `err` has a retryable code (its top-level code: the
  /// classification at the last boundary decides). False when
  /// `max_attempts` <= 1.
  bool retryable_error(const error& err) const;

  /// The delay before attempt `next_attempt` (2 for the first retry), without
  /// state. For `decorrelated_jitter` the previous delay is taken to be the
  /// `exponential` delay (without jitter) of the attempt before; use
  /// `next_delay` for the real sequence.
  std::chrono::nanoseconds delay(uint32_t next_attempt, std::mt19937_64& rng) const;

  /// The delay before the retry that follows `st` (attempt `st.attempts + 1`).
  std::chrono::nanoseconds next_delay(const retry_state& st, std::mt19937_64& rng) const;

  /// Decides on the outcome `err` of attempt `st.attempts`, `elapsed` after
  /// the operation's first attempt began. On `retry` advances `st` (one more
  /// attempt, the delay remembered); otherwise leaves it alone.
  retry_decision decide(const error& err, retry_state& st, std::chrono::nanoseconds elapsed,
                        std::mt19937_64& rng) const;

  /// Whether a retry after `delay` starts within `max_elapsed` of the first
  /// attempt (always true without a budget).
  bool within_budget(std::chrono::nanoseconds elapsed,
                     std::chrono::nanoseconds delay) const noexcept {
    return max_elapsed.count() <= 0 || elapsed + delay <= max_elapsed;
  }
};

/// Reads a retry policy from JSON, every field optional:
///
///     {"max_attempts": 4, "initial_backoff_ms": 1, "max_backoff_ms": 100,
///      "multiplier": 2, "jitter": 0.2, "backoff": "decorrelated_jitter",
///      "max_elapsed_ms": 30000, "retryable": ["unavailable"]}
///
/// `backoff` is "constant", "exponential" (default), "full_jitter" or
/// "decorrelated_jitter". Errors are `invalid_argument` naming the field under
/// `path`, e.g. `retry_policy.jitter: expected a number in 0..1, got 1.5`.
expected<retry_policy> retry_policy_from_json(const boost::json::value& v,
                                              const std::string& path = "retry_policy");

} // namespace keel
