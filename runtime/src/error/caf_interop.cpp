// keel::error and CAF: registration, and conversion to and from caf::error.
//
// This is the only translation unit of the error model that instantiates CAF's
// message machinery (type-erased values, serializers for keel::error): CAF
// templates cost 10-15 s per file, so they stay here.

#include "keel/error/caf.hpp"

#include <cstdint>
#include <string>
#include <utility>

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/exit_reason.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/pec.hpp>
#include <caf/sec.hpp>

#include "keel/error/format.hpp"

namespace keel {

namespace {

/// How CAF's own error codes map onto the canonical codes, by what a caller
/// should do about them (see code.hpp). CAF 0.17.6 defines three categories;
/// anything else (a library's own category) maps to `unknown`.
///
/// Category "system" (caf::sec):
///   request_timeout                                        -> deadline_exceeded
///   connection_timeout(*), request_receiver_down, disconnect_during_handshake,
///   no_route_to_receiving_node, cannot_connect_to_node, cannot_open_port, network_syscall_failed,
///   remote_linking_failed, socket_disconnected, socket_operation_failed,
///   unavailable_or_would_block, remote_lookup_failed      -> unavailable
///   unexpected_message, unexpected_response, unsupported_sys_key,
///   unsupported_sys_message, cannot_forward_to_invalid_actor,
///   cannot_close_invalid_port, invalid_argument, invalid_protocol_family,
///   cannot_publish_invalid_actor, cannot_spawn_actor_from_arguments,
///   invalid_upstream, invalid_downstream                  -> invalid_argument
///   no_such_group_module, no_actor_published_at_port      -> not_found
///   upstream_already_exists, downstream_already_exists,
///   redundant_connection                                   -> already_exists
///   unexpected_actor_messaging_interface, no_downstream_stages_defined,
///   invalid_stream_state, cannot_open_file, incompatible_versions,
///   incompatible_application_ids                           -> failed_precondition
///   feature_disabled                                       -> unimplemented
///   end_of_stream, malformed_basp_message,
///   serializing_basp_payload_failed                        -> data_loss
///   runtime_error (an exception escaped a handler)         -> panic
///   state_not_serializable, failed_to_assign_*_from_handle, no_context,
///   unknown_type, no_proxy_registry, cannot_add_upstream,
///   cannot_add_downstream, stream_init_failed, bad_function_call,
///   socket_invalid                                         -> internal
///   unhandled_stream_error                                 -> unknown
/// (*) connection_timeout is a peer that went silent, i.e. a node presumed
///     down, not a deadline of the caller's: unavailable.
/// Malformed or undecodable data from a peer is data_loss, as in keel's own
/// wire decoder (from_wire), so that one predicate catches both.
///
/// Category "exit" (caf::exit_reason):
///   normal          -> never seen: a caf::error with code 0 is empty, and an
///                      empty caf::error gives an empty keel::error
///   unhandled_exception -> panic
///   unknown         -> unknown
///   out_of_workers  -> resource_exhausted
///   user_shutdown, kill -> cancelled (someone decided to stop the actor)
///   remote_link_unreachable, unreachable -> unavailable
///
/// Category "parser" (caf::pec): the text being parsed was wrong -> invalid_argument.
code canonical_of_sec(caf::sec s) noexcept {
  using caf::sec;
  switch (s) {
    case sec::request_timeout:
      return code::deadline_exceeded;
    case sec::request_receiver_down:
    case sec::disconnect_during_handshake:
    case sec::no_route_to_receiving_node:
    case sec::cannot_connect_to_node:
    case sec::cannot_open_port:
    case sec::network_syscall_failed:
    case sec::remote_linking_failed:
    case sec::socket_disconnected:
    case sec::socket_operation_failed:
    case sec::unavailable_or_would_block:
    case sec::remote_lookup_failed:
    case sec::connection_timeout:
      return code::unavailable;
    case sec::unexpected_message:
    case sec::unexpected_response:
    case sec::unsupported_sys_key:
    case sec::unsupported_sys_message:
    case sec::cannot_forward_to_invalid_actor:
    case sec::cannot_close_invalid_port:
    case sec::invalid_argument:
    case sec::invalid_protocol_family:
    case sec::cannot_publish_invalid_actor:
    case sec::cannot_spawn_actor_from_arguments:
    case sec::invalid_upstream:
    case sec::invalid_downstream:
      return code::invalid_argument;
    case sec::no_such_group_module:
    case sec::no_actor_published_at_port:
      return code::not_found;
    case sec::upstream_already_exists:
    case sec::downstream_already_exists:
    case sec::redundant_connection:
      return code::already_exists;
    case sec::unexpected_actor_messaging_interface:
    case sec::no_downstream_stages_defined:
    case sec::invalid_stream_state:
    case sec::cannot_open_file:
    case sec::incompatible_versions:
    case sec::incompatible_application_ids:
      return code::failed_precondition;
    case sec::feature_disabled:
      return code::unimplemented;
    case sec::end_of_stream:
    case sec::malformed_basp_message:
    case sec::serializing_basp_payload_failed:
      return code::data_loss;
    case sec::runtime_error:
      return code::panic;
    case sec::state_not_serializable:
    case sec::failed_to_assign_scribe_from_handle:
    case sec::failed_to_assign_doorman_from_handle:
    case sec::no_context:
    case sec::unknown_type:
    case sec::no_proxy_registry:
    case sec::cannot_add_upstream:
    case sec::cannot_add_downstream:
    case sec::stream_init_failed:
    case sec::bad_function_call:
    case sec::socket_invalid:
      return code::internal;
    case sec::none:
    case sec::unhandled_stream_error:
      break;
  }
  return code::unknown;
}

code canonical_of_exit(caf::exit_reason r) noexcept {
  using caf::exit_reason;
  switch (r) {
    case exit_reason::unhandled_exception:
      return code::panic;
    case exit_reason::out_of_workers:
      return code::resource_exhausted;
    case exit_reason::user_shutdown:
    case exit_reason::kill:
      return code::cancelled;
    case exit_reason::remote_link_unreachable:
    case exit_reason::unreachable:
      return code::unavailable;
    case exit_reason::normal:
    case exit_reason::unknown:
      break;
  }
  return code::unknown;
}

// The last value of each CAF enum: CAF's to_string has no range check, and a
// peer running another CAF version may send codes this one does not know.
constexpr uint8_t last_sec = static_cast<uint8_t>(caf::sec::connection_timeout);
constexpr uint8_t last_exit_reason = static_cast<uint8_t>(caf::exit_reason::unreachable);
constexpr uint8_t last_pec = static_cast<uint8_t>(caf::pec::missing_field);

/// The code name and canonical code of a CAF error code outside category "keel".
std::pair<std::string, code> describe(caf::atom_value category, uint8_t value) {
  auto unknown_value = [value] { return "code " + std::to_string(value); };
  if (category == caf::atom("system")) {
    if (value == 0 || value > last_sec)
      return {unknown_value(), code::unknown};
    auto s = static_cast<caf::sec>(value);
    return {caf::to_string(s), canonical_of_sec(s)};
  }
  if (category == caf::atom("exit")) {
    if (value == 0 || value > last_exit_reason)
      return {unknown_value(), code::unknown};
    auto r = static_cast<caf::exit_reason>(value);
    return {caf::to_string(r), canonical_of_exit(r)};
  }
  if (category == caf::atom("parser")) {
    if (value == 0 || value > last_pec)
      return {unknown_value(), code::invalid_argument};
    return {caf::to_string(static_cast<caf::pec>(value)), code::invalid_argument};
  }
  return {unknown_value(), code::unknown};
}

} // namespace

void add_error_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<error>("keel::error");
  // Only the non-template overload of add_error_category accepts a renderer
  // that sees the context (see /work/shared/notes/caf-0.17.md).
  cfg.add_error_category(caf_category, [](uint8_t value, caf::atom_value, const caf::message& ctx) {
    std::string result = "keel: ";
    if (ctx.match_elements<error>())
      result += to_string(ctx.get_as<error>(0));
    else if (auto c = code_from_value(value))
      result += to_string(*c);
    else
      result += "code " + std::to_string(value);
    return result;
  });
}

caf::error to_caf_error(const error& err) {
  if (!err)
    return {};
  // The canonical code is never 0 for a non-empty error, so the caf::error is
  // never empty either.
  return caf::error{static_cast<uint8_t>(err.code()), caf_category, caf::make_message(err)};
}

error from_caf_error(const caf::error& x) {
  if (!x)
    return {};
  const auto& ctx = x.context();
  if (x.category() == caf_category) {
    if (ctx.match_elements<error>())
      return ctx.get_as<error>(0);
    // A "keel" error made without to_caf_error (or whose context was
    // dropped): keep what the code says.
    auto c = code_from_value(x.code()).value_or(code::unknown);
    if (c == code::ok)
      c = code::unknown;
    return make_error(c, caf::to_string(x));
  }
  auto [code_name, canonical] = describe(x.category(), x.code());
  return error_builder{caf::to_string(x.category()), x.code(), std::move(code_name), canonical}
      .message(caf::to_string(x))
      .build();
}

} // namespace keel
