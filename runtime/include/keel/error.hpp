/// @file
/// The keel error model: everything in keel/error/ in one include.
///
/// See docs/error-model.md for the model, and each header for its part:
/// code.hpp (canonical codes), category.hpp (application categories),
/// error.hpp (the error type, wrap, join, is, as, visit), detail.hpp (typed
/// details), expected.hpp, format.hpp, json.hpp, panic.hpp, status.hpp
/// (HTTP, gRPC, std::error_code), aggregate.hpp (buffer, summary, sample) and
/// caf.hpp (CAF messages and caf::error).
#pragma once

#include "keel/error/aggregate.hpp"
#include "keel/error/caf.hpp"
#include "keel/error/category.hpp"
#include "keel/error/code.hpp"
#include "keel/error/detail.hpp"
#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"
#include "keel/error/format.hpp"
#include "keel/error/json.hpp"
#include "keel/error/panic.hpp"
#include "keel/error/status.hpp"
