#pragma once

// Field readers for JSON input (Boost.JSON) shared by the error model and the
// configuration readers: each failure is an invalid_argument error naming the
// field's path and what was expected, e.g. "config.retry.max_attempts:
// expected an integer in 1..1000, got a string".

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace keel::detail {

/// "path: expected <expected>, got <kind of got>".
error json_bad_field(const std::string& path, std::string_view expected,
                     const boost::json::value& got);

/// A string field; absent gives "" unless `required`.
expected<std::string> json_string_field(const boost::json::object& o, std::string_view key,
                                        const std::string& path, bool required);

/// An integer field in [lo, hi]; `missing` tells whether it was absent.
expected<int64_t> json_int_field(const boost::json::object& o, std::string_view key,
                                 const std::string& path, int64_t lo, int64_t hi, bool& missing);

} // namespace keel::detail
