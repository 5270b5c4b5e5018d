/// @file
/// The canonical error codes of keel and what a caller should do about each.
///
/// keel decides by code, never by message text: supervisors, retry policies and
/// circuit breakers look at `code` (or at `retry_advice_of(code)`) to choose what
/// to do. The set follows gRPC / Abseil so that it maps 1:1 onto gRPC status
/// codes, plus `panic` for exceptions caught at an actor boundary.
///
/// @code
///   if (keel::retry_advice_of(err.code()) == keel::retry_advice::retry_call)
///     schedule_retry(item);
/// @endcode
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string_view>
#include <system_error>

namespace keel {

/// Applies `X(name, value)` to every canonical code. One list serves the
/// names, the factories (`unavailable_error(...)`) and the predicates
/// (`is_unavailable(err)`), and is checked against the documented enum below,
/// so they cannot drift apart.
#define KEEL_CANONICAL_CODES(X)                                                                    \
  X(cancelled, 1)                                                                                  \
  X(unknown, 2)                                                                                    \
  X(invalid_argument, 3)                                                                           \
  X(deadline_exceeded, 4)                                                                          \
  X(not_found, 5)                                                                                  \
  X(already_exists, 6)                                                                             \
  X(permission_denied, 7)                                                                          \
  X(resource_exhausted, 8)                                                                         \
  X(failed_precondition, 9)                                                                        \
  X(aborted, 10)                                                                                   \
  X(out_of_range, 11)                                                                              \
  X(unimplemented, 12)                                                                             \
  X(internal, 13)                                                                                  \
  X(unavailable, 14)                                                                               \
  X(data_loss, 15)                                                                                 \
  X(unauthenticated, 16)                                                                           \
  X(panic, 17)

/// The canonical codes. The numbers are pinned: they go on the wire and in
/// journals, and 1..16 equal the gRPC status codes. Never renumber.
enum class code : uint8_t {
  /// Not an error. An empty `keel::error` has this code.
  ok = 0,
  /// The operation was cancelled, usually by the caller or because a sibling
  /// failed (fail-fast). Do not retry: whoever cancelled knows why.
  cancelled = 1,
  /// An error without a better code, e.g. from a foreign system. Do not retry.
  unknown = 2,
  /// The input is wrong whatever the state of the system. Do not retry.
  invalid_argument = 3,
  /// The deadline passed before the operation finished; it may or may not have
  /// taken effect. Retry the call only if it is idempotent.
  deadline_exceeded = 4,
  /// A requested entity does not exist. Do not retry.
  not_found = 5,
  /// The entity a caller tried to create already exists. Do not retry.
  already_exists = 6,
  /// The caller may not do this. Do not retry.
  permission_denied = 7,
  /// A quota, a bulkhead, a queue or a disk is full. Retry the call later,
  /// with backoff.
  resource_exhausted = 8,
  /// The system is not in a state the operation needs (e.g. a directory is
  /// not empty). Do not retry until the state has been fixed.
  failed_precondition = 9,
  /// A concurrency conflict (lease lost, transaction aborted). Retry at a
  /// higher level: the whole read-modify-write sequence or saga.
  aborted = 10,
  /// Past the end of a valid range. Do not retry.
  out_of_range = 11,
  /// Not implemented or not supported. Do not retry.
  unimplemented = 12,
  /// An invariant is broken: a bug. Do not retry.
  internal = 13,
  /// The service is unavailable right now; the failure is transient.
  /// Retry the call, with backoff.
  unavailable = 14,
  /// Unrecoverable data loss or corruption. Do not retry.
  data_loss = 15,
  /// The caller has no valid credentials. Do not retry.
  unauthenticated = 16,
  /// An exception (C++'s panic) escaped a handler and was caught at an actor
  /// boundary. A supervisor decides: restart, resume, stop or escalate.
  panic = 17,
};

#define KEEL_CHECK_CODE(name, num)                                                                 \
  static_assert(static_cast<uint8_t>(code::name) == (num), "pinned value of code::" #name);
KEEL_CANONICAL_CODES(KEEL_CHECK_CODE)
#undef KEEL_CHECK_CODE

/// The highest canonical code value.
inline constexpr uint8_t max_canonical_code = 17;

/// What a caller should do after a failure with a given code.
enum class retry_advice : uint8_t {
  /// Retrying the same request cannot help: the request or the code is wrong.
  do_not_retry = 0,
  /// The failure is transient: retry the same call, with backoff and jitter.
  retry_call = 1,
  /// Retry the enclosing transaction (read-modify-write, saga, run), not the call.
  retry_higher_level = 2,
  /// Do not retry until the state of the system has been fixed.
  retry_after_fix = 3,
};

/// The advice for `c`. Only `unavailable`, `resource_exhausted` and
/// `deadline_exceeded` advise `retry_call`; `aborted` advises
/// `retry_higher_level`; `failed_precondition` advises `retry_after_fix`.
constexpr retry_advice retry_advice_of(code c) noexcept {
  switch (c) {
    case code::unavailable:
    case code::resource_exhausted:
    case code::deadline_exceeded:
      return retry_advice::retry_call;
    case code::aborted:
      return retry_advice::retry_higher_level;
    case code::failed_precondition:
      return retry_advice::retry_after_fix;
    default:
      return retry_advice::do_not_retry;
  }
}

/// The snake_case name of `c`, e.g. "unavailable"; "code(<n>)" is not returned:
/// values outside the canonical set give "unknown".
std::string_view to_string(code c) noexcept;

/// Parses a name produced by `to_string(code)`.
std::optional<code> code_from_string(std::string_view name) noexcept;

/// Converts a raw value, e.g. read from the wire; nullopt when out of range.
constexpr std::optional<code> code_from_value(uint8_t v) noexcept {
  if (v > max_canonical_code)
    return std::nullopt;
  return static_cast<code>(v);
}

/// Writes `to_string(c)` (also what GoogleTest prints).
std::ostream& operator<<(std::ostream& os, code c);

/// The name of an advice, e.g. "retry_call".
std::string_view to_string(retry_advice a) noexcept;

/// The `std::error_category` of canonical codes, named "keel". Lets a
/// `keel::code` become a `std::error_code` at OS and Boost edges.
const std::error_category& canonical_std_category() noexcept;

/// Enables `std::error_code ec = keel::code::unavailable;`.
inline std::error_code make_error_code(code c) noexcept {
  return {static_cast<int>(c), canonical_std_category()};
}

} // namespace keel

template <>
struct std::is_error_code_enum<keel::code> : std::true_type {};
