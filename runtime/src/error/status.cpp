#include "keel/error/status.hpp"

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace keel {

namespace {

/// Longest public message, in bytes. Status lines and gRPC trailers are no
/// place for essays, and a short cap limits what a bug could leak.
constexpr std::size_t max_public_message = 200;

/// The text shown for a server-side failure without a `public_message`:
/// describes the class of failure and nothing of its circumstances.
std::string_view generic_text(code c) noexcept {
  switch (c) {
    case code::ok:
      return "";
    case code::cancelled:
      return "cancelled";
    case code::invalid_argument:
      return "invalid argument";
    case code::deadline_exceeded:
      return "deadline exceeded";
    case code::not_found:
      return "not found";
    case code::already_exists:
      return "already exists";
    case code::permission_denied:
      return "permission denied";
    case code::resource_exhausted:
      return "resource exhausted";
    case code::failed_precondition:
      return "failed precondition";
    case code::aborted:
      return "aborted";
    case code::out_of_range:
      return "out of range";
    case code::unimplemented:
      return "not implemented";
    case code::unavailable:
      return "service unavailable";
    case code::data_loss:
      return "data loss";
    case code::unauthenticated:
      return "unauthenticated";
    case code::internal:
    case code::panic:
      // A panic is a bug like any other to the outside; that it was an
      // exception is nobody's business but the logs'.
      return "internal error";
    case code::unknown:
      break;
  }
  return "unknown error";
}

/// Length of the UTF-8 sequence that starts with `lead`; 1 for stray bytes, so
/// that malformed input still advances.
std::size_t utf8_length(unsigned char lead) noexcept {
  if (lead >= 0xF0 && lead <= 0xF4)
    return 4;
  if (lead >= 0xE0)
    return lead <= 0xEF ? 3 : 1;
  if (lead >= 0xC2)
    return 2;
  return 1;
}

/// Replaces control characters (C0, DEL and the two-byte C1 range) by spaces,
/// so that a message cannot forge log lines or headers, and cuts it to
/// `max_public_message` bytes without splitting a UTF-8 sequence: the cap
/// is in bytes because that is what headers and trailers limit.
std::string sanitize(std::string_view text) {
  std::string out;
  out.reserve(std::min(text.size(), max_public_message));
  std::size_t i = 0;
  while (i < text.size()) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7F) {
      if (out.size() + 1 > max_public_message)
        break;
      out.push_back(' ');
      ++i;
      continue;
    }
    if (c == 0xC2 && i + 1 < text.size()) {
      auto c2 = static_cast<unsigned char>(text[i + 1]);
      if (c2 >= 0x80 && c2 <= 0x9F) {
        if (out.size() + 1 > max_public_message)
          break;
        out.push_back(' ');
        i += 2;
        continue;
      }
    }
    auto n = std::min(utf8_length(c), text.size() - i);
    if (out.size() + n > max_public_message)
      break;
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

/// The `std_error_info` among the details of node `n` itself (not its cause or
/// children), decoded from JSON when it came from a peer.
std::optional<std_error_info> own_std_error_info(const error& n) {
  for (const auto& d : n.details()) {
    if (auto p = d->local<std_error_info>())
      return *p;
    if (d->type_name() == detail_traits<std_error_info>::name)
      if (auto decoded = detail_traits<std_error_info>::from_json(d->to_json()))
        return std::move(*decoded);
  }
  return std::nullopt;
}

/// The canonical code for an errno-like condition; nullopt when none fits.
std::optional<code> code_for_errc(const std::error_code& ec) {
  using std::errc;
  // Comparing with std::errc goes through error_condition equivalence, so
  // this works for the generic and system categories alike (and for any
  // category that maps its values onto the generic one, e.g. Boost's).
  auto any = [&ec](std::initializer_list<errc> xs) {
    for (auto x : xs)
      if (ec == x)
        return true;
    return false;
  };
  if (any({errc::timed_out, errc::stream_timeout}))
    return code::deadline_exceeded;
  // EINTR is included because the standard answer to it is to call again.
  if (any({errc::connection_refused, errc::connection_reset, errc::connection_aborted,
           errc::host_unreachable, errc::network_unreachable, errc::network_down,
           errc::network_reset, errc::resource_unavailable_try_again, errc::broken_pipe,
           errc::not_connected, errc::interrupted}))
    return code::unavailable;
  if (any({errc::no_such_file_or_directory, errc::no_such_device, errc::no_such_device_or_address}))
    return code::not_found;
  if (any({errc::invalid_argument, errc::filename_too_long}))
    return code::invalid_argument;
  if (any({errc::permission_denied, errc::operation_not_permitted}))
    return code::permission_denied;
  if (any({errc::no_space_on_device, errc::too_many_files_open, errc::not_enough_memory,
           errc::too_many_files_open_in_system, errc::no_buffer_space}))
    return code::resource_exhausted;
  if (any({errc::file_exists}))
    return code::already_exists;
  if (any({errc::operation_canceled}))
    return code::cancelled;
  if (any({errc::directory_not_empty, errc::read_only_file_system, errc::device_or_resource_busy,
           errc::is_a_directory, errc::not_a_directory}))
    return code::failed_precondition;
  if (any({errc::not_supported, errc::function_not_supported, errc::operation_not_supported}))
    return code::unimplemented;
  if (any({errc::result_out_of_range, errc::value_too_large}))
    return code::out_of_range;
  // EIO says the device failed, not that data is known to be lost
  // (data_loss) nor that trying again helps (unavailable): an internal
  // failure the operator has to look at. A bad descriptor is a bug.
  if (any({errc::io_error, errc::bad_file_descriptor}))
    return code::internal;
  return std::nullopt;
}

} // namespace

int http_status(code c) noexcept {
  switch (c) {
    case code::ok:
      return 200;
    case code::invalid_argument:
    case code::failed_precondition:
    case code::out_of_range:
      return 400;
    case code::unauthenticated:
      return 401;
    case code::permission_denied:
      return 403;
    case code::not_found:
      return 404;
    case code::already_exists:
    case code::aborted:
      return 409;
    case code::resource_exhausted:
      return 429;
    case code::cancelled:
      // nginx's "client closed request": the caller gave up.
      return 499;
    case code::unimplemented:
      return 501;
    case code::unavailable:
      return 503;
    case code::deadline_exceeded:
      return 504;
    case code::unknown:
    case code::internal:
    case code::data_loss:
    case code::panic:
      break;
  }
  return 500;
}

int grpc_status(code c) noexcept {
  auto v = static_cast<int>(c);
  // gRPC has no panic; 1..16 are gRPC's own numbers.
  if (c == code::panic)
    return static_cast<int>(code::internal);
  if (v > static_cast<int>(code::unauthenticated))
    return static_cast<int>(code::unknown);
  return v;
}

bool is_client_error(code c) noexcept {
  switch (c) {
    case code::cancelled:
    case code::invalid_argument:
    case code::not_found:
    case code::already_exists:
    case code::permission_denied:
    case code::failed_precondition:
    // A conflict with a concurrent writer: the caller retries its whole
    // read-modify-write, and needs to know which entity conflicted.
    case code::aborted:
    case code::out_of_range:
    case code::unauthenticated:
      return true;
    default:
      // resource_exhausted is 429, but its message usually describes the
      // server (a full disk or queue), not the request: keep it generic.
      return false;
  }
}

public_status to_public_status(const error& err) {
  public_status st;
  auto c = err.code();
  st.http_status = http_status(c);
  st.grpc_status = grpc_status(c);
  // A panic is an internal error to the outside: which exception escaped is
  // for the logs.
  st.code = std::string{to_string(c == code::panic ? code::internal : c)};
  if (!err)
    return st;
  if (auto pm = as<public_message>(err)) {
    st.message = sanitize(pm->text);
  } else if (is_client_error(c)) {
    // Only the top node: it describes the request at the boundary the
    // caller talked to. Causes may describe internals (queries, secrets).
    st.message = sanitize(err.message().empty() ? std::string_view{st.code} : err.message());
  } else {
    st.message = std::string{generic_text(c)};
  }
  return st;
}

std::error_code to_error_code(const error& err) {
  if (!err)
    return {};
  auto c = err.code();
  std::optional<std::error_code> original;
  // The first node that came from an OS error with the same canonical code
  // as the whole error: a wrapper that reclassified the failure (wrap with a
  // new code) must not be reported as the errno it hides.
  walk(err, [&](const error& n) {
    if (n.code() != c)
      return true;
    auto info = own_std_error_info(n);
    if (!info)
      return true;
    if (info->category == std::generic_category().name())
      original = std::error_code{info->value, std::generic_category()};
    else if (info->category == std::system_category().name())
      original = std::error_code{info->value, std::system_category()};
    return !original;
  });
  if (original)
    return *original;
  return {static_cast<int>(c), canonical_std_category()};
}

error from_error_code(std::error_code ec, std::string_view context) {
  if (!ec)
    return {};
  code c = code::unknown;
  if (ec.category() == canonical_std_category()) {
    auto v = ec.value();
    if (v > 0 && v <= max_canonical_code)
      c = static_cast<code>(v);
  } else if (auto mapped = code_for_errc(ec)) {
    c = *mapped;
  }
  std::string message;
  if (!context.empty()) {
    message.append(context);
    message += ": ";
  }
  message += ec.message();
  return error_builder{canonical_category(), static_cast<uint8_t>(c)}
      .message(std::move(message))
      .detail(make_detail(std_error_info{ec.category().name(), ec.value()}))
      .build();
}

} // namespace keel
