/// @file
/// keel's event bus: topics, subscribers, and events that name the saga they
/// belong to (capability C6, choreography).
///
/// Participants of a choreographed saga never know each other: each one
/// subscribes to a topic, reacts to the events it cares about and publishes
/// new events. The bus is one actor that keeps, per topic, the actors
/// subscribed to it and forwards every published event to each of them (the
/// subscriber receives the `keel::bus::event` itself as a message).
///
/// @code
///   struct config : caf::actor_system_config {
///     config() { keel::bus::add_bus_types(*this); }
///   };
///   auto bus = keel::bus::spawn_event_bus(sys);
///   auto inventory = sys.spawn([bus](caf::event_based_actor* self) -> caf::behavior {
///     return {[=](const keel::bus::event& e) {
///       if (e.type == "payment.done")
///         keel::bus::publish(bus, keel::bus::make_event("orders", "inventory.done", e.saga_id));
///     }};
///   });
///   keel::bus::subscribe(bus, "orders", inventory);
///   keel::bus::publish(bus, keel::bus::make_event("orders", "order.placed", "order-17",
///                                                 R"({"amount": 42})"));
/// @endcode
///
/// Why an actor of our own and not CAF groups: a group cannot tell us who
/// listens, gives no hook to drop dead members explicitly, and its remote form
/// in 0.17 needs a group server per node. The bus is an ordinary actor whose
/// subscribers are ordinary actor handles, so it can span nodes later without
/// a new design: a remote subscriber is a CAF proxy (its handle arrives in a
/// `subscribe_atom` message from another node, or through
/// `io::remote_actor`), the bus forwards to the proxy like to a local actor,
/// and the monitor it places on every subscriber fires (with
/// `remote_link_unreachable`) when the subscriber's node goes away, which
/// drops it. Everything in a message is registered under a stable name
/// (`add_bus_types`: "keel::bus::event"), so both nodes agree on the wire
/// format.
///
/// Guarantees: events from one publisher reach a subscriber in the order they
/// were published (CAF keeps the order per sender-receiver pair, and the bus is
/// one actor); delivery is at most once (a crashed subscriber misses what was
/// sent to it while it was down). Choreography builds reliability on top:
/// events carry unique ids (`event::id`) so receivers deduplicate, and the
/// saga coordinator re-emits what was not acknowledged.
#pragma once

#include <cstddef>
#include <string>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>

namespace keel::bus {

/// One event: what happened (`type`) to which saga, on which topic.
struct event {
  /// The topic it is published on ("orders").
  std::string topic;
  /// What happened ("payment.done").
  std::string type;
  /// The saga it belongs to (empty for events outside sagas).
  std::string saga_id;
  /// Unique id of this event; receivers deduplicate by it. Events that may be
  /// re-sent (a coordinator's compensation request) keep their id on every
  /// resend.
  std::string id;
  /// JSON text, usually an object ("{}" when empty).
  std::string payload = "{}";

  friend bool operator==(const event&, const event&) = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event& x) {
  return f(caf::meta::type_name("keel::bus::event"), x.topic, x.type, x.saga_id, x.id, x.payload);
}

/// Message tag: `(subscribe_atom, topic, actor)`, no reply (an empty one when
/// requested). Subscribing twice to one topic is a no-op. The bus holds
/// subscribers weakly (it does not keep them alive) and drops them when they
/// terminate.
using subscribe_atom = caf::atom_constant<caf::atom("kb_sub")>;

/// Message tag: `(unsubscribe_atom, topic, actor)`, no reply (an empty one
/// when requested). An empty topic unsubscribes from every topic.
using unsubscribe_atom = caf::atom_constant<caf::atom("kb_unsub")>;

/// Message tag: `(publish_atom, event)`, no reply (an empty one when
/// requested, once the event is forwarded to every subscriber).
using publish_atom = caf::atom_constant<caf::atom("kb_pub")>;

/// Message tag: `(subscribers_atom, topic) -> size_t`, the number of live
/// subscribers of a topic (for tests and inspection).
using subscribers_atom = caf::atom_constant<caf::atom("kb_subs")>;

/// Registers the bus's message types ("keel::bus::event") with `cfg`. Call it
/// on every node that publishes or subscribes.
void add_bus_types(caf::actor_system_config& cfg);

/// Spawns a bus. It runs until its last handle is gone (or it gets `exit`).
caf::actor spawn_event_bus(caf::actor_system& sys);

/// A new event with a fresh unique id (128 random bits, hex).
event make_event(std::string topic, std::string type, std::string saga_id,
                 std::string payload = "{}");

/// A fresh unique event id (32 hex digits).
std::string make_event_id();

/// Publishes `e` on `bus` from outside an actor (or without a sender).
void publish(const caf::actor& bus, event e);

/// Subscribes `subscriber` to `topic` from outside an actor. Asynchronous: a
/// caller that must know the subscription is in place before publishing
/// sends `subscribe_atom` as a request instead and awaits the empty reply.
void subscribe(const caf::actor& bus, std::string topic, const caf::actor& subscriber);

/// Unsubscribes `subscriber` from `topic` (every topic when empty).
void unsubscribe(const caf::actor& bus, std::string topic, const caf::actor& subscriber);

} // namespace keel::bus
