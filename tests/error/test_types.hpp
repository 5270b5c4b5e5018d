// Types shared by the error-model tests: an application error category and a
// user-defined detail type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "keel/error.hpp"

namespace keel_test {

enum class db_errc : uint8_t {
  connection_lost = 1,
  constraint_violation = 2,
  locked = 3,
};

struct http_call {
  std::string url;
  int status = 0;

  friend bool operator==(const http_call&, const http_call&) = default;
};

} // namespace keel_test

template <>
struct keel::error_code_enum<keel_test::db_errc> {
  static constexpr std::string_view category = "test.db";

  static std::string_view name(keel_test::db_errc e) noexcept {
    switch (e) {
      case keel_test::db_errc::connection_lost:
        return "connection_lost";
      case keel_test::db_errc::constraint_violation:
        return "constraint_violation";
      case keel_test::db_errc::locked:
        return "locked";
    }
    return "unknown";
  }

  static keel::code canonical(keel_test::db_errc e) noexcept {
    switch (e) {
      case keel_test::db_errc::connection_lost:
        return keel::code::unavailable;
      case keel_test::db_errc::constraint_violation:
        return keel::code::failed_precondition;
      case keel_test::db_errc::locked:
        return keel::code::aborted;
    }
    return keel::code::unknown;
  }
};

template <>
struct keel::detail_traits<keel_test::http_call> {
  static constexpr std::string_view name = "test.http_call";

  static boost::json::value to_json(const keel_test::http_call& x) {
    return {{"url", x.url}, {"status", x.status}};
  }

  static keel::expected<keel_test::http_call> from_json(const boost::json::value& v) {
    const auto* o = v.if_object();
    if (!o || !o->contains("url") || !o->at("url").is_string() || !o->contains("status")
        || !o->at("status").is_int64())
      return keel::invalid_argument_error("test.http_call: expected {url, status}");
    return keel_test::http_call{std::string{o->at("url").get_string()},
                                static_cast<int>(o->at("status").get_int64())};
  }

  static std::string to_string(const keel_test::http_call& x) {
    return "http " + x.url + " -> " + std::to_string(x.status);
  }
};
