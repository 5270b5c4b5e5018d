/// @file
/// The seed's payment flow as a keel saga definition: validate, charge,
/// allocate inventory, ship, notify. Notify cannot be compensated (an e-mail
/// cannot be unsent), so it is last.
///
/// @code
///   auto ledger = payment::ledger::open(dir / "ledger.db");
///   auto faults = std::make_shared<payment::faults>(seed);
///   payment::flow_env env{.ledger = *ledger, .faults = faults,
///                         .delayer = payment::spawn_delayer(sys)};
///   auto coord = keel::saga::coordinator::start(sys, journal, {payment::make_definition(env)});
///   coord->begin("payment", "order-1", payment::to_data({"order-1", 4200, {{"sku-1", 2}}}));
/// @endcode
///
/// Every action goes through the fault injector first (latency, errors,
/// exceptions), then does its ledger operation under the step's idempotency
/// key. Latency is waited for asynchronously (a request to the delayer
/// actor), so a slow step does not block a scheduler thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "keel/error.hpp"
#include "keel/pipeline/policy.hpp"
#include "keel/saga/data.hpp"
#include "keel/saga/definition.hpp"

#include "payment/faults.hpp"
#include "payment/ledger.hpp"

namespace payment {

/// Message tag: `(delay_atom, int64_t ms) -> ok_atom` after `ms`.
using delay_atom = caf::atom_constant<caf::atom("pay_delay")>;

/// Message tag: `(park_atom) -> ok_atom` once `release_atom` arrives.
using park_atom = caf::atom_constant<caf::atom("pay_park")>;

/// Message tag: `(release_atom) -> size_t`: answers every parked request
/// (returns how many).
using release_atom = caf::atom_constant<caf::atom("pay_rel")>;

/// The delayer's answer.
using ok_atom = caf::atom_constant<caf::atom("pay_ok")>;

/// Spawns the delayer: answers `delay_atom` requests after their delay and
/// `park_atom` requests when released. One actor serves every saga.
caf::actor spawn_delayer(caf::actor_system& sys);

/// An order: the saga's input.
struct order {
  std::string id;
  int64_t amount = 0;
  std::vector<line_item> items;
};

/// The saga data of a new order (`amount`, `items`).
keel::saga::data to_data(const order& o);

/// The order back from saga data (the id is the saga id).
keel::expected<order> from_data(const std::string& id, const keel::saga::data& d);

/// What the steps use.
struct flow_env {
  std::shared_ptr<payment::ledger> ledger;
  std::shared_ptr<payment::faults> faults;
  /// Waits for injected latency; without it the action sleeps.
  caf::actor delayer;
  /// Per-attempt timeout of every step.
  std::chrono::milliseconds step_timeout = std::chrono::seconds(5);
  /// Forward retries (charge, allocate, ship, notify; validate never retries).
  keel::retry_policy retry = keel::retry_policy{}.with_max_attempts(4).with_backoff(
      std::chrono::milliseconds(2), std::chrono::milliseconds(50));
  /// Compensator retries.
  keel::retry_policy compensation_retry =
      keel::saga::step_options::default_compensation_retry().with_backoff(
          std::chrono::milliseconds(2), std::chrono::milliseconds(50));
  /// Rollback deadline of the saga.
  std::chrono::milliseconds rollback_deadline = std::chrono::seconds(60);
};

/// The saga kind of `make_definition`.
inline constexpr const char* kind = "payment";

/// The step names, in order.
inline const std::vector<std::string> steps = {"validate", "charge", "allocate", "ship", "notify"};

/// The payment saga.
keel::saga::definition make_definition(const flow_env& env);

} // namespace payment
