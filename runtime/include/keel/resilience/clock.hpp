/// @file
/// The clock every resilience guard reads, injectable so that tests move time
/// by hand instead of sleeping.
///
/// @code
///   keel::breaker_config cfg;
///   cfg.clock = [] { return std::chrono::steady_clock::now(); };   // the default
/// @endcode
#pragma once

#include <chrono>
#include <functional>

namespace keel {

/// Returns the current time of a guard (breaker, bulkhead, rate limiter).
using resilience_clock = std::function<std::chrono::steady_clock::time_point()>;

} // namespace keel
