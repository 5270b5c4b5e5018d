/// @file
/// Choreographed sagas: participants react to events on a bus and emit
/// events; a coordinator actor only watches, persists and, when something
/// fails, asks for compensation (capability C6, choreography).
///
/// No participant knows the others, and none is called by the coordinator.
/// The coordinator learns from the events it sees which steps are done,
/// persists every event it accepts in the saga's history (the journal stream
/// `saga/<id>`) together with the saga record (mode "choreographed"), and
/// times a saga out when the event it waits for does not arrive. When a step
/// fails (its failed event, or a timeout) it emits one compensation event per
/// completed step, in reverse order, each after the previous one was
/// acknowledged, with a timeout and retries per compensation and one deadline
/// for the whole rollback.
///
/// @code
///   using namespace std::chrono_literals;
///   keel::saga::choreography payment{"payment", "orders", "order.placed"};
///   payment
///     .step({.name = "charge", .done = "charge.done", .failed = "charge.failed",
///            .compensate = "charge.refund", .compensated = "charge.refunded",
///            .timeout = 5s})
///     .step(keel::saga::choreography_step::conventional("reserve"))   // "reserve.done", ...
///     .step({.name = "notify", .done = "notify.done", .timeout = 5s}) // cannot be undone: last
///     .compensation_timeout(2s)
///     .compensation_attempts(5)
///     .rollback_deadline(1min);
///
///   auto bus = keel::bus::spawn_event_bus(sys);
///   auto coord = keel::saga::choreography_coordinator::start(sys, journal, bus, {payment},
///                                                            {.owner = "orders-1"});
///   if (!coord) ...                                   // bad definition, unreadable journal
///   coord->begin("payment", "order-17", keel::saga::data{}.set("amount", 42));
///   auto out = coord->wait("order-17", 30s);           // completed / rolled_back / ...
///   for (auto& e : *coord->history("order-17")) ...   // every event seen, every decision
/// @endcode
///
/// The events the coordinator emits:
/// - the start event (`start_event`, id "<saga id>/start", payload = the saga
///   data) when `begin` is called;
/// - for each step to compensate, its `compensate` event (id
///   "<saga id>/<step>/compensate", the same on every retry and after a crash,
///   payload = the saga data). A participant must be idempotent by that id:
///   on a repeated request it does not undo twice but acknowledges again with
///   its `compensated` event.
///
/// The events it consumes: each step's `done` event (the step completed; an
/// object payload is merged into the saga data, so a later compensation gets
/// e.g. the payment id), its `failed` event (the step failed: an `error`
/// member holding keel's error JSON becomes the saga's failure), and the
/// `compensated` acknowledgements. Steps may complete in any order; the
/// timeout always applies to the first step not done yet. A done event that
/// arrives after the rollback started (the step was late, not absent) puts
/// that step into the rollback too.
///
/// Robustness: an event whose id was seen before is ignored (and recorded as
/// `event_ignored`); an event for an unknown saga is recorded in the stream
/// `bus/<topic>`; an event whose payload is not valid JSON is recorded as
/// `event_rejected` with an `invalid_argument` error naming the event, and
/// otherwise ignored. Nothing an event carries can crash the coordinator.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "keel/error.hpp"
#include "keel/saga/coordinator.hpp"
#include "keel/saga/data.hpp"
#include "keel/store/journal.hpp"

namespace keel::saga {

/// One step of a choreography: the events that tell the coordinator about it.
struct choreography_step {
  /// Unique within the choreography ("charge").
  std::string name = {};
  /// Emitted by the participant when the step completed (required).
  std::string done = {};
  /// Emitted by the participant when the step failed (optional: without it, a
  /// failure shows as a timeout).
  std::string failed = {};
  /// Emitted by the coordinator to undo the step. Empty: the step cannot be
  /// compensated (then it and every step after it must be non-compensatable).
  std::string compensate = {};
  /// Emitted by the participant once the step is undone (required when
  /// `compensate` is set).
  std::string compensated = {};
  /// How long the coordinator waits for `done` once this step is the first
  /// one not done.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);

  bool compensatable() const noexcept { return !compensate.empty(); }

  /// A compensatable step with the event types "<name>.done", "<name>.failed",
  /// "<name>.compensate" and "<name>.compensated".
  static choreography_step
  conventional(std::string name, std::chrono::milliseconds timeout = std::chrono::seconds(30));
};

/// A choreographed saga kind: its topic, the event that starts it, its steps
/// and the rollback options.
class choreography {
public:
  choreography(std::string kind, std::string topic, std::string start_event);

  /// Appends a step.
  choreography& step(choreography_step s);

  /// Time a participant has to acknowledge one compensation event before it
  /// is sent again (default 10 s).
  choreography& compensation_timeout(std::chrono::milliseconds d) {
    compensation_timeout_ = d;
    return *this;
  }

  /// Sends of one compensation event before giving up on it (default 5, at
  /// least 1). A compensation given up makes the saga end needs_intervention;
  /// the other steps are still compensated.
  choreography& compensation_attempts(uint32_t n) {
    compensation_attempts_ = n;
    return *this;
  }

  /// Time allowed for the whole rollback, from its start (default 5 min).
  choreography& rollback_deadline(std::chrono::milliseconds d) {
    rollback_deadline_ = d;
    return *this;
  }

  const std::string& kind() const noexcept { return kind_; }
  const std::string& topic() const noexcept { return topic_; }
  const std::string& start_event() const noexcept { return start_event_; }
  const std::vector<choreography_step>& steps() const noexcept { return steps_; }
  std::chrono::milliseconds compensation_timeout() const noexcept { return compensation_timeout_; }
  uint32_t compensation_attempts() const noexcept { return compensation_attempts_; }
  std::chrono::milliseconds rollback_deadline() const noexcept { return rollback_deadline_; }

  /// Index of step `name`, or -1.
  int index_of(std::string_view name) const noexcept;

  /// Checks the definition: kind, topic and start event non-empty, at least
  /// one step, step names unique and non-empty, every `done` set,
  /// `compensated` set exactly when `compensate` is, all event types distinct,
  /// non-compensatable steps only at the end, positive timeouts and at least
  /// one compensation attempt. `invalid_argument` naming the kind and step.
  expected<void> validate() const;

private:
  std::string kind_;
  std::string topic_;
  std::string start_event_;
  std::vector<choreography_step> steps_;
  std::chrono::milliseconds compensation_timeout_ = std::chrono::seconds(10);
  uint32_t compensation_attempts_ = 5;
  std::chrono::milliseconds rollback_deadline_ = std::chrono::minutes(5);
};

/// Message tag of the coordinator actor: begin a saga.
using choreo_begin_atom = caf::atom_constant<caf::atom("kc_begin")>;

/// Message tag of the coordinator actor: wait for a saga's end.
using choreo_wait_atom = caf::atom_constant<caf::atom("kc_wait")>;

/// A running choreography coordinator. Movable handle; the coordinator actor
/// stops when `stop()` is called or the handle is destroyed (unfinished sagas
/// stay in the journal, their leases released, and resume on the next start).
///
/// Of `coordinator_config` it uses `owner`, `lease_ttl` (every write carries
/// the saga's lease; renewed every third of it), `resume` and `lease_retry`
/// (a resumed saga whose lease another owner holds is tried again after this
/// long, and taken over once that lease is released or expired).
///
/// History entries (stream `keel::store::saga_stream(id)`, detail is a JSON
/// object): "started" (data), "event_received" (event id, type, payload),
/// "step_completed", "step_failed" (error), "timeout" (error),
/// "compensation_requested" (event id; `attempt` is the send number),
/// "compensation_completed", "compensation_failed" (error), "event_ignored"
/// (reason), "event_rejected" (error), "lease_lost" (error), and one of
/// "completed", "rolled_back" or "needs_intervention" (reason) at the end.
class choreography_coordinator : public saga_queries {
public:
  /// Validates the definitions (kinds unique), loads the unfinished
  /// choreographed sagas of known kinds (with `cfg.resume`) and takes their
  /// leases, spawns the coordinator and its journal writer, subscribes it to
  /// every definition's topic and then resumes: a running saga's step timeout
  /// is armed again, a pending compensation event is emitted again.
  static expected<choreography_coordinator> start(caf::actor_system& sys,
                                                  std::shared_ptr<store::journal> j, caf::actor bus,
                                                  std::vector<choreography> defs,
                                                  coordinator_config cfg = {});

  choreography_coordinator(choreography_coordinator&&) noexcept;
  choreography_coordinator& operator=(choreography_coordinator&&) noexcept;
  ~choreography_coordinator();

  /// Records saga `id` of `kind` (running, waiting for the first step) and
  /// publishes the start event with `d` as payload. Returns once the record
  /// is durable and the event published. `already_exists` when the journal
  /// knows `id`; `not_found` for an unknown kind; `failed_precondition` when
  /// another owner holds the saga's lease.
  expected<void> begin(const std::string& kind, const std::string& id, saga::data d = {});

  /// Waits until saga `id` ends (at most `timeout`, then `deadline_exceeded`).
  /// `not_found` for an unknown saga; `unavailable` when this coordinator does
  /// not run the saga (another owner has it) or lost it.
  expected<outcome> wait(const std::string& id,
                         std::chrono::milliseconds timeout = std::chrono::minutes(10));

  /// `begin` then `wait`.
  expected<outcome> run(const std::string& kind, const std::string& id, saga::data d = {},
                        std::chrono::milliseconds timeout = std::chrono::minutes(10));

  // status, list and history: see saga_queries.

  /// Ids of the sagas resumed by `start`.
  const std::vector<std::string>& resumed() const noexcept;

  /// Sagas this coordinator runs now.
  size_t in_flight();

  /// The coordinator actor: `(choreo_begin_atom, kind, id, data json text) ->
  /// keel::error` and `(choreo_wait_atom, id) -> keel::error` (empty once the
  /// saga ended; read the outcome from the journal), for actors.
  caf::actor actor() const;

  /// Stops the coordinator (sagas stay unfinished in the journal, their
  /// leases released) and its writer, and waits until both are gone.
  void stop();

private:
  struct impl;
  choreography_coordinator(std::shared_ptr<store::journal> j, std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::saga
