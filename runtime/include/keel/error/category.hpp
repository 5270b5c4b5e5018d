/// @file
/// Error categories: the canonical one and those an application adds.
///
/// Every error has a code in a category. keel's own category, "keel", holds the
/// canonical codes (`keel::code`). An application adds its own category by
/// specializing `keel::error_code_enum` for a `uint8_t` enum; each of its codes
/// names the canonical code that carries its retry meaning, so supervisors and
/// retry policies understand codes they have never seen.
///
/// @code
///   namespace shop {
///   enum class db_errc : uint8_t { connection_lost = 1, constraint = 2 };
///   }
///   template <>
///   struct keel::error_code_enum<shop::db_errc> {
///     static constexpr std::string_view category = "shop.db";
///     static std::string_view name(shop::db_errc e) noexcept {
///       return e == shop::db_errc::connection_lost ? "connection_lost" : "constraint";
///     }
///     static keel::code canonical(shop::db_errc e) noexcept {
///       return e == shop::db_errc::connection_lost ? keel::code::unavailable
///                                                  : keel::code::failed_precondition;
///     }
///   };
///   auto err = keel::make_error(shop::db_errc::connection_lost, "socket closed");
///   keel::is(err, shop::db_errc::connection_lost);  // true
///   keel::is(err, keel::code::unavailable);         // true, by canonical code
/// @endcode
///
/// Categories are identified by name, not by address: an error read from a peer
/// or a journal compares equal to a local one with the same category name and
/// value. Names must therefore be unique in a system (use a dotted prefix).
/// An error from a category this process does not know keeps its category name,
/// value, code name and canonical code.
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "keel/error/code.hpp"

namespace keel {

/// A family of error codes. Implementations are immutable.
class error_category {
public:
  virtual ~error_category() = default;

  /// The stable name of the category; it goes on the wire.
  virtual std::string_view name() const noexcept = 0;

  /// The name of `value` in this category, e.g. "connection_lost".
  virtual std::string code_name(uint8_t value) const = 0;

  /// The canonical code that carries the retry meaning of `value`.
  virtual code canonical(uint8_t value) const noexcept = 0;
};

/// The category of the canonical codes, named "keel".
const error_category& canonical_category() noexcept;

/// The name of the canonical category.
inline constexpr std::string_view canonical_category_name = "keel";

/// Specialize for an application's error enum (see the file overview). The
/// specialization provides `category` (a `std::string_view` constant),
/// `name(E)` and `canonical(E)`.
template <class E>
struct error_code_enum;

/// Satisfied by enums that keel can use as error codes.
template <class E>
concept error_code_enum_type = std::is_enum_v<E> && sizeof(std::underlying_type_t<E>) == 1
                               && requires(E e) {
  { error_code_enum<E>::category } -> std::convertible_to<std::string_view>;
  { error_code_enum<E>::name(e) } -> std::convertible_to<std::string_view>;
  { error_code_enum<E>::canonical(e) } -> std::same_as<code>;
};

namespace detail {

template <class E>
class enum_category final : public error_category {
public:
  std::string_view name() const noexcept override { return error_code_enum<E>::category; }

  std::string code_name(uint8_t value) const override {
    return std::string{error_code_enum<E>::name(static_cast<E>(value))};
  }

  code canonical(uint8_t value) const noexcept override {
    return error_code_enum<E>::canonical(static_cast<E>(value));
  }
};

} // namespace detail

/// The category object of an application enum. One immutable instance per enum.
template <error_code_enum_type E>
const error_category& category_of() noexcept {
  static const detail::enum_category<E> instance;
  return instance;
}

} // namespace keel
