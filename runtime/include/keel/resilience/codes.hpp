/// @file
/// The error codes of the resilience kit: a refusal by a guard is told apart
/// from a failure of the call it guards.
///
/// @code
///   if (keel::is(err, keel::resilience_code::circuit_open)) ...  // refused at once
///   keel::is(err, keel::code::unavailable);                       // true too: same retry meaning
/// @endcode
///
/// Each code carries the canonical code with its retry meaning, so pipelines,
/// sagas and supervisors that only know canonical codes react sensibly:
/// an open breaker is `unavailable` (retry later, at a higher level), a full
/// bulkhead and a spent rate limit are `resource_exhausted`.
#pragma once

#include <cstdint>
#include <string_view>

#include "keel/error.hpp"

namespace keel {

/// Refusals by a resilience guard. Values go on the wire: never renumber.
enum class resilience_code : uint8_t {
  /// A circuit breaker is open (or forced open, or half-open with every trial
  /// call taken): the call was not made.
  circuit_open = 1,
  /// A bulkhead is full (concurrency limit reached and its queue full, or the
  /// queue wait timed out): the call was not made.
  bulkhead_full = 2,
  /// A rate limiter has no token for this key: the call was not made.
  rate_limited = 3,
  /// An injected fault (fault injection for tests and game days).
  injected_fault = 4,
};

template <>
struct error_code_enum<resilience_code> {
  static constexpr std::string_view category = "keel.resilience";

  static std::string_view name(resilience_code c) noexcept {
    switch (c) {
      case resilience_code::circuit_open:
        return "circuit_open";
      case resilience_code::bulkhead_full:
        return "bulkhead_full";
      case resilience_code::rate_limited:
        return "rate_limited";
      case resilience_code::injected_fault:
        return "injected_fault";
    }
    return "unknown";
  }

  static code canonical(resilience_code c) noexcept {
    switch (c) {
      case resilience_code::circuit_open:
        return code::unavailable;
      case resilience_code::bulkhead_full:
      case resilience_code::rate_limited:
        return code::resource_exhausted;
      case resilience_code::injected_fault:
        return code::unavailable;
    }
    return code::unknown;
  }
};

} // namespace keel
