/// @file
/// Saga definitions: ordered steps, each with a forward action and a
/// compensating action (capability C6, orchestration).
///
/// A saga is a long-running transaction: forward steps run in order; when one
/// fails, the steps that completed are compensated in reverse order (what D
/// built on C must go before C). keel persists the saga before and after each
/// step, so a crashed process resumes it where it was (see
/// keel/saga/coordinator.hpp).
///
/// @code
///   keel::saga::definition payment{"payment"};
///   payment
///     .step("charge",
///           [&](keel::saga::step_context& ctx) -> keel::expected<void> {
///             auto id = ledger.charge(ctx.idempotency_key(), amount);   // idempotent
///             if (!id) return id.error();
///             ctx.data().set("payment_id", *id);
///             return {};
///           },
///           [&](keel::saga::step_context& ctx) -> keel::expected<void> {
///             auto id = ctx.data().get<std::string>("payment_id");
///             if (!id) return {};            // the charge never happened
///             return ledger.refund(ctx.idempotency_key(), *id);
///           })
///     .step("notify", send_mail, {}, {.compensatable = false});   // last: cannot be undone
/// @endcode
///
/// Actions may also be asynchronous and message other actors: an
/// `async_action` gets a shared `step_context` whose `self()` is the actor
/// running the saga, and calls `done()` / `fail(err)` when it knows:
///
/// @code
///   .async_step("reserve", [inv](std::shared_ptr<keel::saga::step_context> ctx) {
///       ctx->self()->request(inv, 2s, reserve_atom::value, ctx->idempotency_key())
///         .then([ctx](const std::string& rid) { ctx->data().set("reservation", rid); ctx->done();
///         },
///               [ctx](caf::error& e) { ctx->fail(keel::from_caf_error(e)); });
///     }, release_reservation)
/// @endcode
///
/// Rules the definition enforces (`validate`): names unique and non-empty; a
/// step that cannot be compensated is either followed only by other
/// non-compensatable steps or is declared a pivot. After a pivot completes the
/// saga is committed to going forward: a later failure is not rolled back; it
/// ends in needs_intervention.
///
/// Actions must be idempotent per `idempotency_key()` (the key does not change
/// between attempts or after a crash), and compensators must also handle a
/// forward action that never ran or only half ran.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "keel/error.hpp"
#include "keel/pipeline/policy.hpp"
#include "keel/saga/data.hpp"

namespace keel::saga {

/// What an action gets: who it runs for, the saga data, and (for async
/// actions) the completion calls.
class step_context {
public:
  /// Called with the action's outcome (empty error on success) exactly once.
  using completion = std::function<void(error)>;

  step_context(std::string saga_id, std::string step, bool compensating, uint32_t attempt,
               bool after_crash, saga::data d, caf::event_based_actor* self, completion done);

  const std::string& saga_id() const noexcept { return saga_id_; }
  const std::string& step() const noexcept { return step_; }

  /// "<saga id>/<step>" for the forward action, "<saga id>/<step>/compensate"
  /// for the compensator: the same on every attempt and after a crash.
  const std::string& idempotency_key() const noexcept { return key_; }

  /// 1 for the first attempt of this run of the action.
  uint32_t attempt() const noexcept { return attempt_; }

  /// True when the journal shows an earlier run of this action that did not
  /// finish (the process crashed while it ran): its side effect may exist.
  bool after_crash() const noexcept { return after_crash_; }

  /// True inside a compensator.
  bool compensating() const noexcept { return compensating_; }

  /// The saga data. Forward actions may change it; changes are kept only when
  /// the action succeeds (and are persisted with the step's completion).
  saga::data& data() noexcept { return data_; }
  const saga::data& data() const noexcept { return data_; }

  /// The actor running the saga, for requests to other actors. Only use it
  /// from inside the action or its continuations (the actor's thread).
  caf::event_based_actor* self() const noexcept { return self_; }

  /// Reports success. Later calls (and calls after a timeout) are ignored.
  /// done() and fail() may be called from any thread.
  void done() { finish(error{}); }

  /// Reports failure (an empty error counts as `unknown`).
  void fail(error err);

  /// True once done() or fail() was called.
  bool finished() const noexcept { return finished_.load(); }

private:
  void finish(error err);

  std::string saga_id_;
  std::string step_;
  std::string key_;
  bool compensating_;
  uint32_t attempt_;
  bool after_crash_;
  saga::data data_;
  caf::event_based_actor* self_;
  completion done_;
  std::atomic<bool> finished_{false};
};

/// A synchronous action: returns its outcome; an exception is a `panic`.
using action = std::function<expected<void>(step_context&)>;

/// An asynchronous action: calls `ctx->done()` or `ctx->fail(err)` later (an
/// exception thrown before that is a `panic`).
using async_action = std::function<void(std::shared_ptr<step_context>)>;

/// Per-step options.
struct step_options {
  /// Retries of the forward action (on retryable codes).
  retry_policy retry = {};
  /// Retries of the compensator: by default 5 attempts, on every code but
  /// `invalid_argument`, `failed_precondition` and `unimplemented` (a
  /// compensator should keep trying).
  retry_policy compensation_retry = default_compensation_retry();
  /// Time allowed per attempt of either action (then `deadline_exceeded`).
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  /// False for steps whose effect cannot be undone (sending an e-mail).
  bool compensatable = true;
  /// The point of no return: once it completes, the saga only goes forward.
  bool pivot = false;
  /// Also compensate this step when its forward action's outcome is unknown
  /// (it timed out, or the saga was cancelled while it ran): the action may
  /// have half happened, as the seed's "best-effort cleanup" says.
  bool compensate_unknown_outcome = true;

  static retry_policy default_compensation_retry();
};

/// One step of a definition.
struct step {
  std::string name;
  async_action forward;
  /// Empty when the step cannot be compensated.
  async_action compensate;
  step_options options;
};

/// A named, ordered list of steps plus the saga-wide options.
class definition {
public:
  explicit definition(std::string kind) : kind_(std::move(kind)) {}

  /// Adds a step with synchronous actions. An empty `compensate` means the
  /// step has nothing to undo only when `opts.compensatable` is false;
  /// otherwise it is a no-op compensator.
  definition& step(std::string name, action forward, action compensate = {},
                   step_options opts = {});

  /// Adds a step with asynchronous actions.
  definition& async_step(std::string name, async_action forward, async_action compensate = {},
                         step_options opts = {});

  /// Time allowed for the whole rollback, counted from its start (default
  /// 5 minutes). Cancelling or timing out the forward run does not shorten it.
  definition& rollback_deadline(std::chrono::milliseconds d) {
    rollback_deadline_ = d;
    return *this;
  }

  /// Time allowed for the forward run (default: none). When it passes, the
  /// saga is rolled back with `deadline_exceeded`.
  definition& forward_deadline(std::chrono::milliseconds d) {
    forward_deadline_ = d;
    return *this;
  }

  const std::string& kind() const noexcept { return kind_; }
  const std::vector<saga::step>& steps() const noexcept { return steps_; }
  std::chrono::milliseconds rollback_deadline() const noexcept { return rollback_deadline_; }
  std::chrono::milliseconds forward_deadline() const noexcept { return forward_deadline_; }

  /// Index of step `name`, or -1.
  int index_of(std::string_view name) const noexcept;

  /// Checks the rules above; `invalid_argument` naming the step otherwise.
  expected<void> validate() const;

private:
  std::string kind_;
  std::vector<saga::step> steps_;
  std::chrono::milliseconds rollback_deadline_ = std::chrono::minutes(5);
  std::chrono::milliseconds forward_deadline_ = std::chrono::milliseconds::zero();
};

} // namespace keel::saga
