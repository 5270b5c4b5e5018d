/// @file
/// JSON form of errors (Boost.JSON), for journals, logs, HTTP bodies and
/// anything that leaves the process as text.
///
/// The form is lossless for codes, messages, causes, children and details:
/// @code
///   {"category": "keel", "code": "invalid_argument", "value": 3, "canonical": 3,
///    "message": "stage parse",
///    "details": [{"type": "keel.stage",
///                 "data": {"stage": "parse", "item_id": "7", "attempt": 1}}],
///    "cause": {...},
///    "errors": [...]}            // children, only for joins
/// @endcode
/// An empty error is `null`. Reading checks every field and reports the first
/// problem with its path, e.g. `error.cause.errors[2].value: expected an
/// integer in 0..255, got a string`. Unknown categories and detail types are
/// kept as they are.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/json/value.hpp>

#include "keel/error/error.hpp"

namespace keel {

/// The JSON form of `err`; `null` when empty.
boost::json::value to_json(const error& err);

/// The JSON text of `err`.
std::string to_json_string(const error& err);

/// Limits for reading untrusted JSON.
struct json_read_options {
  /// Deepest nesting of causes and children accepted.
  std::size_t max_depth = 4096;
};

/// Reads the JSON form. The value is the decoded error (empty for `null`); the
/// read fails with `invalid_argument` naming the path of the first bad field.
expected<error> error_from_json(const boost::json::value& v, const json_read_options& opts = {});

/// Parses JSON text and reads it; syntax errors name their position.
expected<error> error_from_json_string(std::string_view text, const json_read_options& opts = {});

} // namespace keel
