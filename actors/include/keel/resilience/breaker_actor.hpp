/// @file
/// A circuit breaker as an actor, guarding a dependency actor shared by many
/// pipeline stages or saga steps: one breaker judges the dependency for all
/// of them, instead of one inline breaker per caller each learning on its own.
///
/// @code
///   struct config : caf::actor_system_config {
///     config() {
///       keel::add_error_types(*this);
///       keel::add_breaker_types(*this);
///     }
///   };
///   keel::breaker_actor_config cfg;
///   cfg.breaker.name = "inventory";
///   cfg.breaker.window_size = 20;
///   cfg.request_timeout = std::chrono::seconds{2};
///   auto guarded = keel::spawn_breaker_actor(sys, inventory_service, cfg);
///   // Talk to `guarded` exactly as to `inventory_service`:
///   self->request(guarded, 5s, reserve_atom::value, sku, 3).then(
///       [](bool reserved) { ... },
///       [](caf::error& e) {  // keel::from_caf_error(e) is circuit_open when refused
///       });
///   // Watch it:
///   self->send(guarded, keel::breaker_subscribe_atom::value, caf::actor{self});
///   // ... receives keel::breaker_event{breaker, from, to, reason, detail, sequence}
/// @endcode
///
/// Every message the actor does not handle itself (the `breaker_*_atom`
/// messages below) is a call: admitted, it is forwarded to the dependency as a
/// request with `request_timeout`, and the reply, whatever its type, goes back
/// to the original sender; refused, the sender gets `circuit_open` at once
/// (as a `caf::error`; `keel::from_caf_error` restores the keel error). A reply
/// counts as a failure when it is a `caf::error` or a non-empty `keel::error`
/// the breaker's predicate counts (a timeout is `deadline_exceeded`, a dead
/// dependency `unavailable`); the time from forwarding to reply is the call's
/// duration. Plain sends are forwarded too (as requests, whose reply is
/// dropped): their outcome is recorded all the same.
///
/// Time-driven transitions (open -> half-open, the half-open wait) happen
/// when a call arrives, as for the inline breaker; subscribers see them then.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>

#include "keel/resilience/breaker.hpp"

namespace keel {

/// Options of a breaker actor.
struct breaker_actor_config {
  /// The breaker (its clock too: tests inject one).
  breaker_config breaker;
  /// Timeout of every forwarded request; a timeout is a `deadline_exceeded`
  /// failure.
  std::chrono::nanoseconds request_timeout = std::chrono::seconds{30};
};

/// Sent to every subscriber after a state change. Registered as
/// "keel::breaker_event" by `add_breaker_types`.
struct breaker_event {
  /// The breaker's name.
  std::string breaker;
  breaker_state from = breaker_state::closed;
  breaker_state to = breaker_state::closed;
  transition_reason reason = transition_reason::reset;
  std::string detail;
  /// 1, 2, ... per breaker: events of one breaker arrive in order (one actor
  /// sends them), the number shows a subscriber what it missed.
  uint64_t sequence = 0;

  friend bool operator==(const breaker_event&, const breaker_event&) = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, breaker_event& x) {
  return f(caf::meta::type_name("keel::breaker_event"), x.breaker, x.from, x.to, x.reason, x.detail,
           x.sequence);
}

/// Registered as "keel::breaker_metrics" by `add_breaker_types`.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, breaker_metrics& x) {
  return f(caf::meta::type_name("keel::breaker_metrics"), x.state, x.failure_rate, x.slow_call_rate,
           x.buffered_calls, x.failed_calls, x.slow_calls, x.trial_calls_in_flight,
           x.not_permitted_calls, x.ignored_calls, x.transitions);
}

/// `(breaker_subscribe_atom, actor)`: `actor` receives every `breaker_event`
/// from now on (held weakly, dropped when it terminates). Replies nothing (an
/// empty reply when requested).
using breaker_subscribe_atom = caf::atom_constant<caf::atom("kbr_sub")>;

/// `(breaker_unsubscribe_atom, actor)`.
using breaker_unsubscribe_atom = caf::atom_constant<caf::atom("kbr_unsub")>;

/// `(breaker_metrics_atom) -> breaker_metrics`.
using breaker_metrics_atom = caf::atom_constant<caf::atom("kbr_metr")>;

/// `(breaker_force_open_atom)`: `circuit_breaker::force_open`.
using breaker_force_open_atom = caf::atom_constant<caf::atom("kbr_fopen")>;

/// `(breaker_disable_atom)`: `circuit_breaker::disable`.
using breaker_disable_atom = caf::atom_constant<caf::atom("kbr_disabl")>;

/// `(breaker_reset_atom)`: `circuit_breaker::reset`.
using breaker_reset_atom = caf::atom_constant<caf::atom("kbr_reset")>;

/// Registers the breaker actor's message types ("keel::breaker_event",
/// "keel::breaker_metrics"). Call it on every node that talks to a breaker
/// actor, with `add_error_types`.
void add_breaker_types(caf::actor_system_config& cfg);

/// Spawns a breaker actor guarding `dependency`. It runs until its last handle
/// is gone (or it gets `exit`); it keeps `dependency` alive meanwhile. Throws
/// `std::invalid_argument` on an invalid breaker configuration, as
/// `circuit_breaker` does.
caf::actor spawn_breaker_actor(caf::actor_system& sys, caf::actor dependency,
                               breaker_actor_config cfg);

} // namespace keel
