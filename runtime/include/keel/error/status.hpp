/// @file
/// Errors at a service's edges: HTTP and gRPC status, sanitised messages, and
/// `std::error_code`.
///
/// What leaves the service must not leak internals: the cause chain, stack
/// traces and details stay in the logs. `to_public_status` picks the status
/// from the canonical code and a message that is safe to show: the text of a
/// `public_message` detail if the application attached one; else, for client
/// errors (the request was wrong: `invalid_argument`, `not_found`, ...), the
/// top-level message, which describes the request; else a generic text for
/// the code ("internal error", "service unavailable").
///
/// @code
///   auto st = keel::to_public_status(err);
///   res.result(st.http_status);
///   res.body() = st.message;
///   log.error("{}", keel::format(err, {.multiline = true}));  // the full chain
/// @endcode
#pragma once

#include <string>
#include <system_error>

#include "keel/error/error.hpp"

namespace keel {

/// The HTTP status for a canonical code: 400 for invalid_argument,
/// failed_precondition and out_of_range; 401, 403, 404; 409 for
/// already_exists and aborted; 429 resource_exhausted; 499 cancelled;
/// 501 unimplemented; 503 unavailable; 504 deadline_exceeded; 500 otherwise;
/// 200 for ok.
int http_status(code c) noexcept;

/// The gRPC status code for a canonical code (equal numbers; `panic` is
/// reported as 13, INTERNAL).
int grpc_status(code c) noexcept;

/// True for codes that say the request was wrong (4xx), whose messages
/// describe the request and may be shown to its sender.
bool is_client_error(code c) noexcept;

/// What an outside caller is told about a failure.
struct public_status {
  int http_status = 200;
  int grpc_status = 0;
  /// The canonical code name, e.g. "not_found" ("internal" for a panic).
  std::string code;
  /// Safe to show; see the file overview.
  std::string message;
};

/// The public face of `err`; see the file overview. Messages are cut to
/// 200 characters and control characters are replaced by spaces.
public_status to_public_status(const error& err);

/// A `std::error_code` for `err`: the original one when `err` came from
/// `from_error_code` with the generic or system category, else the canonical
/// code in `canonical_std_category()`. Empty error: a default `error_code`.
std::error_code to_error_code(const error& err);

/// An error for a `std::error_code` from the OS or Boost: the canonical code
/// that fits the errno (ETIMEDOUT: deadline_exceeded, ECONNREFUSED:
/// unavailable, ENOENT: not_found, ...), `ec.message()`, optional context as
/// the message's prefix, and a `std_error_info` detail with the original
/// category and value. A zero `ec` gives an empty error.
error from_error_code(std::error_code ec, std::string_view context = {});

} // namespace keel
