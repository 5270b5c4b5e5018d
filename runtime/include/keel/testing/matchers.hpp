/// @file
/// GoogleTest matchers for `keel::error` and `keel::expected<T>`.
///
/// @code
///   EXPECT_THAT(parse("42"), keel::testing::IsOk());
///   EXPECT_THAT(parse(""), keel::testing::FailedWith(keel::code::invalid_argument));
///   EXPECT_THAT(run(), keel::testing::FailedWith(keel::code::unavailable,
///                                                 testing::HasSubstr("db")));
///   EXPECT_THAT(parse("7"), keel::testing::IsOkAndHolds(7));
///   EXPECT_THAT(err, keel::testing::HasDetail<keel::stage_info>(
///                      testing::Field(&keel::stage_info::stage, "parse")));
/// @endcode
/// `FailedWith(code)` matches when the code appears anywhere in the error tree
/// (as `keel::is` does); `TopCodeIs(code)` only looks at the top node.
#pragma once

#include <ostream>
#include <string>
#include <type_traits>

#include <gmock/gmock.h>

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"
#include "keel/error/format.hpp"

namespace keel {

/// Prints an expected for GoogleTest messages.
template <class T>
void PrintTo(const expected<T>& x, std::ostream* os) {
  if (x.has_value()) {
    if constexpr (std::is_void_v<T>)
      *os << "ok";
    else
      *os << "value " << ::testing::PrintToString(*x);
  } else {
    *os << "error " << to_string(x.error());
  }
}

} // namespace keel

namespace keel::testing {

namespace detail {

inline const keel::error& error_of(const keel::error& e) {
  return e;
}

template <class T>
const keel::error& error_of(const keel::expected<T>& x) {
  return x.error();
}

} // namespace detail

/// Matches an empty `keel::error` or an `expected` holding a value.
MATCHER(IsOk, negation ? "is a failure" : "is ok") {
  const keel::error& err = detail::error_of(arg);
  if (err) {
    *result_listener << "failed with " << keel::to_string(err);
    return false;
  }
  return true;
}

/// Matches a failure with canonical or application code `c` anywhere in its tree.
MATCHER_P(FailedWith, c,
          std::string(negation ? "is not" : "is") + " a failure with code "
              + ::testing::PrintToString(c)) {
  const keel::error& err = detail::error_of(arg);
  if (!err) {
    *result_listener << "is ok";
    return false;
  }
  *result_listener << "is " << keel::to_string(err);
  return keel::is(err, c);
}

/// Matches a failure with code `c` whose one-line rendering matches `m`.
MATCHER_P2(FailedWith, c, m,
           std::string(negation ? "is not" : "is") + " a failure with code "
               + ::testing::PrintToString(c) + " and a message that "
               + ::testing::DescribeMatcher<std::string>(m)) {
  const keel::error& err = detail::error_of(arg);
  if (!err) {
    *result_listener << "is ok";
    return false;
  }
  auto text = keel::to_string(err);
  *result_listener << "is " << text;
  return keel::is(err, c) && ::testing::Matches(m)(text);
}

/// Matches a failure whose top node has canonical code `c`.
MATCHER_P(TopCodeIs, c,
          std::string(negation ? "has not" : "has") + " top code " + ::testing::PrintToString(c)) {
  const keel::error& err = detail::error_of(arg);
  *result_listener << "is " << keel::to_string(err);
  return err.code() == c;
}

/// Matches a failure whose one-line rendering matches `m`.
MATCHER_P(ErrorMessage, m,
          std::string("is a failure whose message ") + ::testing::DescribeMatcher<std::string>(m)) {
  const keel::error& err = detail::error_of(arg);
  if (!err) {
    *result_listener << "is ok";
    return false;
  }
  return ::testing::ExplainMatchResult(m, keel::to_string(err), result_listener);
}

/// Matches an `expected` that holds a value matching `m`.
MATCHER_P(IsOkAndHolds, m,
          std::string(negation ? "does not hold" : "holds") + " a value matching "
              + ::testing::PrintToString(m)) {
  if (!arg.has_value()) {
    *result_listener << "failed with " << keel::to_string(arg.error());
    return false;
  }
  return ::testing::ExplainMatchResult(m, *arg, result_listener);
}

/// Matches an error (or failed expected) with a detail of type `T` somewhere in
/// its tree whose value matches `m` (any value when `m` is omitted).
template <class T, class M>
auto HasDetail(M m) {
  return ::testing::Truly([m](const auto& x) {
    auto d = keel::as<T>(detail::error_of(x));
    return d.has_value() && ::testing::Matches(m)(*d);
  });
}

template <class T>
auto HasDetail() {
  return HasDetail<T>(::testing::A<const T&>());
}

} // namespace keel::testing
