#pragma once

// Field readers for JSON input (Boost.JSON) shared by the error model and the
// configuration readers (pipeline run config, stage resilience, breaker,
// bulkhead, rate limiter, retry, fault injection): each failure is an
// invalid_argument error naming the field's path and what was expected, e.g.
// "config.retry.max_attempts: expected an integer in 1..1000, got a string".

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

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

// -- readers built on the three above -------------------------------------------

/// Fails on a key not in `known`, naming it and the accepted ones.
inline error check_keys(const boost::json::object& o, const std::string& path,
                        std::initializer_list<std::string_view> known) {
  for (const auto& kv : o) {
    bool ok = false;
    for (auto k : known)
      ok = ok || kv.key() == k;
    if (!ok) {
      std::string list;
      for (auto k : known)
        list += (list.empty() ? "" : ", ") + std::string{k};
      return invalid_argument_error(path + ": unknown field '" + std::string{kv.key()}
                                    + "' (known: " + list + ")");
    }
  }
  return {};
}

inline expected<const boost::json::object*> object_at(const boost::json::value& v,
                                                      const std::string& path) {
  if (!v.is_object())
    return json_bad_field(path, "an object", v);
  return &v.get_object();
}

/// Reads an integer field in [lo, hi] into `out` when present.
template <class T>
error read_int(const boost::json::object& o, std::string_view key, const std::string& path,
               int64_t lo, int64_t hi, T& out) {
  bool missing = false;
  auto x = json_int_field(o, key, path, lo, hi, missing);
  if (!x)
    return x.error();
  if (!missing)
    out = static_cast<T>(*x);
  return {};
}

inline std::string number_text(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", x);
  return buf;
}

/// Reads a number field in [lo, hi] into `out` when present.
inline error read_number(const boost::json::object& o, std::string_view key,
                         const std::string& path, double lo, double hi, double& out) {
  auto it = o.find(key);
  if (it == o.end())
    return {};
  const auto& v = it->value();
  auto where = path + "." + std::string{key};
  auto range = "a number in " + number_text(lo) + ".." + number_text(hi);
  if (!v.is_number())
    return json_bad_field(where, range, v);
  double x = v.to_number<double>();
  if (!(x >= lo && x <= hi))
    return invalid_argument_error(where + ": expected " + range + ", got " + number_text(x));
  out = x;
  return {};
}

inline error read_bool(const boost::json::object& o, std::string_view key, const std::string& path,
                       bool& out) {
  auto it = o.find(key);
  if (it == o.end())
    return {};
  if (!it->value().is_bool())
    return json_bad_field(path + "." + std::string{key}, "a boolean", it->value());
  out = it->value().get_bool();
  return {};
}

/// Reads a string field into `out` when present.
inline error read_string(const boost::json::object& o, std::string_view key,
                         const std::string& path, std::string& out) {
  auto s = json_string_field(o, key, path, false);
  if (!s)
    return s.error();
  if (o.contains(key))
    out = std::move(*s);
  return {};
}

/// Reads a duration given in (possibly fractional) milliseconds.
inline error read_ms(const boost::json::object& o, std::string_view key, const std::string& path,
                     std::chrono::nanoseconds& out, double max_ms = 86'400'000.0) {
  double ms = -1;
  if (auto err = read_number(o, key, path, 0.0, max_ms, ms))
    return err;
  if (ms >= 0)
    out = std::chrono::nanoseconds{static_cast<int64_t>(ms * 1e6)};
  return {};
}

inline expected<code> code_named(const boost::json::value& v, const std::string& path) {
  if (!v.is_string())
    return json_bad_field(path, "a code name (e.g. \"unavailable\")", v);
  auto c = code_from_string(v.get_string());
  if (!c)
    return invalid_argument_error(path + ": unknown code \"" + std::string{v.get_string()} + "\"");
  return *c;
}

/// Parses JSON text; syntax errors name `what`.
inline expected<boost::json::value> parse_text(std::string_view text, const std::string& what) {
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec)
    return invalid_argument_error(what + ": invalid JSON: " + ec.message());
  return v;
}

} // namespace keel::detail
