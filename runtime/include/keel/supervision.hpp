#pragma once

/// @file
/// keel's supervision (capability C2): supervised stages with stable
/// addresses, supervisors with Erlang/OTP's strategies and restart types, a
/// decider, restart intensity and backoff, dead letters and structured events.
/// See docs/supervision.md.

#include "keel/supervision/decider.hpp"
#include "keel/supervision/events.hpp"
#include "keel/supervision/spec.hpp"
#include "keel/supervision/supervisor.hpp"
