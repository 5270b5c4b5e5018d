#pragma once

/// \file
/// Run configuration from JSON (Boost.JSON), so that operators can tune a
/// pipeline (workers, credit, retries, policies, deadline) without rebuilding.
///
///     {
///       "name": "import", "batch_size": 256, "credit": 4, "deadline_ms": 30000,
///       "max_errors": 100, "ordered_results": true, "latency_sample": 64,
///       "progress_every_ms": 1000, "seed": 42,
///       "policy": {"mode": "hybrid",
///                  "rules": [{"code": "already_exists", "class": "skip"},
///                            {"category": "etl.schema", "class": "critical"}]},
///       "retry": {"max_attempts": 4, "initial_backoff_ms": 1, "max_backoff_ms": 100,
///                 "multiplier": 2, "jitter": 0.2, "retryable": ["unavailable"]},
///       "budget": {"ratio": 0.2, "min_retries": 100},
///       "stages": {"parse": {"workers": 4, "ordered": true, "credit": 2,
///                            "retry": {...}, "policy": {...},
///                            "resilience": {"breaker": {...}, "bulkhead": {...},
///                                           "rate_limit": {...}}}}
///     }
///
/// A stage's `resilience` (keel/pipeline/resilience.hpp) is read into
/// `stage_overrides::resilience`; the stage's code makes its guards with
/// `make_stage_guards(cfg, name)`.
///
/// Every field is optional; absent fields keep the value of `base`. Unknown
/// fields, wrong types and out-of-range values fail with `invalid_argument`
/// naming the field's path, e.g. `run_config.retry.jitter: expected a number
/// in 0..1, got 1.5`. A stage name the pipeline lacks fails the run at start.

#include "keel/error/expected.hpp"
#include "keel/pipeline/run.hpp"
#include "keel/resilience/retry.hpp"

#include <boost/json/value.hpp>

#include <string_view>

namespace keel {

/// Reads a run configuration from a JSON value, on top of `base`.
expected<run_config> run_config_from_json(const boost::json::value& v, run_config base = {});

/// Parses JSON text and reads it; syntax errors name their position.
expected<run_config> run_config_from_json_string(std::string_view text, run_config base = {});

// The "retry" objects are read by `retry_policy_from_json`
// (keel/resilience/retry.hpp), which also takes "backoff" and "max_elapsed_ms".

/// Reads an error policy (the "policy" object above): `mode` is fail_fast,
/// collect_all or hybrid (default hybrid); each rule matches a canonical
/// `code` name or a `category` and gives a `class` (item, critical, poison, skip).
expected<error_policy> error_policy_from_json(const boost::json::value& v,
                                              const std::string& path = "error_policy");

} // namespace keel
