/// @file
/// `keel::expected<T>`: a value or the `keel::error` that prevented it.
///
/// The API follows C++23's `std::expected<T, keel::error>` (has_value, value,
/// error, value_or, and_then, transform, or_else) so that code reads the same;
/// libstdc++ 12 offers `std::expected` only under -std=c++23, and keel builds
/// as C++20. Unlike `std::expected`, a failure converts implicitly from a
/// `keel::error`, as `caf::expected` does: `return keel::not_found_error("x");`.
///
/// @code
///   keel::expected<int> parse_port(std::string_view s);
///   auto port = parse_port(text);
///   if (!port)
///     return keel::wrap(port.error(), "reading config");
///   listen(*port);
/// @endcode
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "keel/error/error.hpp"

namespace keel {

/// Thrown by `expected<T>::value()` when there is no value.
class bad_expected_access : public std::exception {
public:
  explicit bad_expected_access(keel::error err);

  const char* what() const noexcept override { return what_.c_str(); }

  const keel::error& error() const noexcept { return err_; }

private:
  keel::error err_;
  std::string what_;
};

namespace detail {

/// Turns an empty error into a failure: an `expected` never holds an empty error.
keel::error nonempty_or_internal(keel::error err);

} // namespace detail

template <class T>
class expected;

/// Success or a non-empty error, for operations without a value.
template <>
class [[nodiscard]] expected<void> {
public:
  using value_type = void;
  using error_type = keel::error;

  /// Success.
  expected() noexcept = default;

  /// A failure (an empty error becomes an `internal` error, as for `expected<T>`).
  expected(keel::error err) : err_(detail::nonempty_or_internal(std::move(err))) {}

  bool has_value() const noexcept { return !err_; }

  explicit operator bool() const noexcept { return has_value(); }

  /// Throws `bad_expected_access` on failure.
  void value() const {
    if (err_)
      throw bad_expected_access(err_);
  }

  const keel::error& error() const& noexcept { return err_; }

  keel::error error() && noexcept { return std::move(err_); }

  friend bool operator==(const expected& x, const expected& y) { return x.err_ == y.err_; }

private:
  keel::error err_;
};

/// A `T` or a non-empty `keel::error`. See the file overview.
template <class T>
class [[nodiscard]] expected {
public:
  using value_type = T;
  using error_type = keel::error;

  // -- constructors -----------------------------------------------------------

  /// A default-constructed value.
  expected() requires std::is_default_constructible_v<T> : storage_(std::in_place_index<0>) {}

  /// A value.
  template <class U = T>
  requires(
      std::is_constructible_v<
          T,
          U&&> && !std::is_same_v<std::remove_cvref_t<U>, expected> && !std::is_same_v<std::remove_cvref_t<U>, keel::error>)
      expected(U&& value)
      : storage_(std::in_place_index<0>, std::forward<U>(value)) {}

  /// A value constructed in place from `args`; the only way to make an
  /// `expected<keel::error>` that holds an error as its value.
  template <class... Args>
  explicit expected(std::in_place_t, Args&&... args)
      : storage_(std::in_place_index<0>, std::forward<Args>(args)...) {}

  /// A failure. An empty error becomes an `internal` error that says so, since
  /// "failed without an error" would lose the failure.
  expected(keel::error err)
      : storage_(std::in_place_index<1>, detail::nonempty_or_internal(std::move(err))) {}

  // -- properties -------------------------------------------------------------

  bool has_value() const noexcept { return storage_.index() == 0; }

  explicit operator bool() const noexcept { return has_value(); }

  /// The value; throws `bad_expected_access` holding the error when there is none.
  T& value() & {
    check();
    return std::get<0>(storage_);
  }

  const T& value() const& {
    check();
    return std::get<0>(storage_);
  }

  T&& value() && {
    check();
    return std::get<0>(std::move(storage_));
  }

  T& operator*() & noexcept { return *std::get_if<0>(&storage_); }

  const T& operator*() const& noexcept { return *std::get_if<0>(&storage_); }

  T&& operator*() && noexcept { return std::move(*std::get_if<0>(&storage_)); }

  T* operator->() noexcept { return std::get_if<0>(&storage_); }

  const T* operator->() const noexcept { return std::get_if<0>(&storage_); }

  /// The error; an empty error when there is a value.
  const keel::error& error() const& noexcept {
    if (auto p = std::get_if<1>(&storage_))
      return *p;
    return empty_error();
  }

  keel::error error() && noexcept {
    if (auto p = std::get_if<1>(&storage_))
      return std::move(*p);
    return {};
  }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? **this : static_cast<T>(std::forward<U>(fallback));
  }

  template <class U>
  T value_or(U&& fallback) && {
    return has_value() ? std::move(**this) : static_cast<T>(std::forward<U>(fallback));
  }

  // -- monadic operations -----------------------------------------------------

  /// `f(value)` (which returns an `expected`) when there is a value, else the error.
  template <class F>
  auto and_then(F&& f) const& {
    using R = std::remove_cvref_t<std::invoke_result_t<F, const T&>>;
    if (has_value())
      return R(std::forward<F>(f)(**this));
    return R(error());
  }

  /// `expected` of `f(value)` when there is a value, else the error.
  template <class F>
  auto transform(F&& f) const& {
    using U = std::remove_cvref_t<std::invoke_result_t<F, const T&>>;
    if (has_value()) {
      if constexpr (std::is_void_v<U>) {
        std::forward<F>(f)(**this);
        return expected<void>{};
      } else {
        return expected<U>(std::forward<F>(f)(**this));
      }
    }
    return expected<U>(error());
  }

  /// `f(error)` (which returns `expected<T>`) when there is an error, else this.
  template <class F>
  expected or_else(F&& f) const& {
    if (has_value())
      return *this;
    return std::forward<F>(f)(error());
  }

  friend bool operator==(const expected& x, const expected& y) { return x.storage_ == y.storage_; }

private:
  static const keel::error& empty_error() noexcept {
    static const keel::error instance;
    return instance;
  }

  void check() const {
    if (!has_value())
      throw bad_expected_access(std::get<1>(storage_));
  }

  std::variant<T, keel::error> storage_;
};

} // namespace keel
