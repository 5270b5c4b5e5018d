/// @file
/// The saga coordinator (orchestration): runs sagas from their definitions,
/// persists every step, resumes unfinished sagas after a crash.
///
/// @code
///   auto journal = keel::store::open_sqlite_journal("orders.journal");
///   keel::saga::coordinator_config cfg;
///   cfg.owner = "orders-1";                  // stable per process: its leases survive a restart
///   auto coord = keel::saga::coordinator::start(sys, *journal, {payment}, cfg);
///   if (!coord) ...                           // bad definition, unreadable journal
///   // coord->resumed() sagas that were unfinished are running again now.
///   auto out = coord->run("payment", "order-17", keel::saga::data{}.set("amount", 42));
///   if (out && out->state == keel::saga_state::rolled_back)
///     std::cerr << out->failure << '\n';      // forward error, compensation errors under it
///   for (auto& r : *coord->list({.state = keel::saga_state::needs_intervention})) ...
///   for (auto& e : *coord->history("order-17")) ...
/// @endcode
///
/// How a saga runs. One runner actor per saga (sagas run concurrently), all
/// writing through one journal writer actor (group commit). Before a step the
/// record says which step is in flight (`step_started`); after it, the step is
/// in `completed` with the data it produced (`step_completed`). Each write
/// carries the saga's lease (journal name `saga/<id>`, owner
/// `coordinator_config::owner`), renewed while the saga runs: a second
/// process cannot run the same saga at the same time, and a runner that lost
/// its lease stops writing (fencing).
///
/// When a forward step fails (retries exhausted, timeout, cancel, forward
/// deadline) the saga goes to `compensating`: the completed steps (and the
/// failed step when its outcome is unknown) are compensated in reverse order,
/// each with its own retries and timeout, all within the rollback deadline,
/// which starts then (cancelling or timing out the forward run does not abort
/// compensation). A failing compensator does not stop the others. The saga
/// ends rolled_back, or needs_intervention with the reason when a compensator
/// gave up or the rollback deadline passed. The outcome's `failure` is the
/// forward error with the compensation errors joined under it.
///
/// Crash-resume: `start` loads every unfinished saga of a known kind from the
/// journal and continues it: forward from the step in flight (re-run: actions
/// are idempotent by `idempotency_key()`), or rollback where it was.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "keel/error.hpp"
#include "keel/saga/data.hpp"
#include "keel/saga/definition.hpp"
#include "keel/saga/queries.hpp"
#include "keel/store/journal.hpp"
#include "keel/store/writer.hpp"

namespace keel::saga {

/// Options of a coordinator.
struct coordinator_config {
  /// Lease owner. Must be unique among running processes and stable across
  /// restarts of one process (so it takes its own sagas back at once; another
  /// owner waits for the lease to expire). Default: "<hostname>:<pid>".
  std::string owner;
  /// Lease length; renewed every third of it while a saga runs.
  std::chrono::milliseconds lease_ttl = std::chrono::seconds(10);
  /// Resume unfinished sagas on `start`.
  bool resume = true;
  /// When a resumed saga's lease is held by another owner: try again after
  /// this long (until the lease expires or is released).
  std::chrono::milliseconds lease_retry = std::chrono::milliseconds(500);
  /// Seed of the retry jitter.
  uint64_t seed = 0x5eed;
  /// The journal writer's options (`max_group = 1` turns group commit off).
  store::writer_options writer = {};
};

/// How actors receive an outcome (it stays in the process).
using outcome_ptr = std::shared_ptr<const outcome>;

/// Message tags of the coordinator actor (see `coordinator::actor`).
using begin_atom = caf::atom_constant<caf::atom("ks_begin")>;
using wait_atom = caf::atom_constant<caf::atom("ks_wait")>;
using cancel_atom = caf::atom_constant<caf::atom("ks_cancel")>;

/// A running coordinator. Movable handle; the coordinator actor stops when
/// `stop()` is called or the handle is destroyed (running sagas stay in the
/// journal and resume on the next start).
class coordinator : public saga_queries {
public:
  /// Validates the definitions, spawns the coordinator and its journal writer
  /// and (with `cfg.resume`) resumes unfinished sagas.
  static expected<coordinator> start(caf::actor_system& sys, std::shared_ptr<store::journal> j,
                                     std::vector<definition> defs, coordinator_config cfg = {});

  coordinator(coordinator&&) noexcept;
  coordinator& operator=(coordinator&&) noexcept;
  ~coordinator();

  /// Starts saga `id` of `kind` and returns once it is recorded in the journal
  /// (from then on it survives a crash), before its first step ends.
  /// `already_exists` when the journal knows `id`; `not_found` for an unknown
  /// kind; `failed_precondition` when another owner holds the id's lease.
  expected<void> begin(const std::string& kind, const std::string& id, saga::data d = {});

  /// Waits until saga `id` ends (at most `timeout`, then `deadline_exceeded`).
  expected<outcome> wait(const std::string& id,
                         std::chrono::milliseconds timeout = std::chrono::minutes(10));

  /// `begin` then `wait`.
  expected<outcome> run(const std::string& kind, const std::string& id, saga::data d = {},
                        std::chrono::milliseconds timeout = std::chrono::minutes(10));

  /// Cancels the forward run of saga `id`: it is rolled back (with
  /// `cancelled`); a rollback in progress is not affected.
  expected<void> cancel(const std::string& id);

  // status, list and history: see saga_queries.

  /// Ids of the sagas resumed by `start`.
  const std::vector<std::string>& resumed() const noexcept;

  /// Sagas running now in this coordinator.
  size_t in_flight();

  /// The coordinator actor, for actors: `(begin_atom, kind, id, data as JSON
  /// text) -> keel::error` (empty when started), `(wait_atom, id) ->
  /// outcome_ptr` (or an error), `(cancel_atom, id) -> keel::error`.
  caf::actor actor() const;

  /// Stops the coordinator and its runners (sagas stay unfinished in the
  /// journal, their leases released) and waits until they are gone.
  void stop();

private:
  struct impl;
  coordinator(std::shared_ptr<store::journal> j, std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace keel::saga

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::saga::outcome_ptr)
