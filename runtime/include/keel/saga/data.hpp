/// @file
/// Saga data: the typed values one step leaves for the next (the payment id
/// the refund needs), persisted as a JSON object with the saga record.
///
/// @code
///   ctx.data().set("payment_id", std::string{"p-17"});
///   auto pid = ctx.data().get<std::string>("payment_id");   // expected<std::string>
///   if (!pid) return pid.error();                           // not_found / invalid_argument
/// @endcode
///
/// Any type Boost.JSON converts (`value_from` / `value_to`, including user
/// types with `tag_invoke`) can be stored.
#pragma once

#include <string>
#include <string_view>

#include <boost/json/object.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include "keel/error.hpp"

namespace keel::saga {

/// A JSON object of named values.
class data {
public:
  data() = default;
  explicit data(boost::json::object obj) : obj_(std::move(obj)) {}

  /// Parses the persisted form; `invalid_argument` naming the problem.
  static expected<data> parse(std::string_view text);

  /// Stores `value` under `key` (replacing any earlier value).
  template <class T>
  data& set(std::string_view key, const T& value) {
    obj_[key] = boost::json::value_from(value);
    return *this;
  }

  /// The value under `key` as a T: `not_found` when missing,
  /// `invalid_argument` when it does not convert.
  template <class T>
  expected<T> get(std::string_view key) const {
    auto* v = obj_.if_contains(key);
    if (!v)
      return missing(key);
    try {
      return boost::json::value_to<T>(*v);
    } catch (const std::exception& e) {
      return mismatch(key, e.what());
    }
  }

  bool contains(std::string_view key) const { return obj_.contains(key); }

  /// Removes `key`; true when it was there.
  bool erase(std::string_view key) { return obj_.erase(key) > 0; }

  const boost::json::object& json() const noexcept { return obj_; }
  boost::json::object& json() noexcept { return obj_; }

  /// The persisted form (compact JSON text).
  std::string to_string() const;

  friend bool operator==(const data&, const data&) = default;

private:
  static error missing(std::string_view key);
  static error mismatch(std::string_view key, std::string_view what);

  boost::json::object obj_;
};

} // namespace keel::saga
