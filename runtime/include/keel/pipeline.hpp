#pragma once

/// \file
/// Pipelines (capability C3): typed stages as supervised actors, bounded
/// parallelism, credit-based back-pressure, error policies, retries,
/// deadlines and cancellation. See docs/pipelines.md. Reading a run_config
/// from JSON is in keel/pipeline/config.hpp (it pulls in Boost.JSON).

#include "keel/pipeline/builder.hpp"
#include "keel/pipeline/envelope.hpp"
#include "keel/pipeline/policy.hpp"
#include "keel/pipeline/result.hpp"
#include "keel/pipeline/run.hpp"
#include "keel/pipeline/stage.hpp"
