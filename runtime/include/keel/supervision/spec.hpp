#pragma once

/// @file
/// How a supervision tree is declared: child specs and supervisor config.
///
/// @code
///   keel::supervisor_config cfg;
///   cfg.name = "ingest";
///   cfg.strategy = keel::restart_strategy::rest_for_one;
///   cfg.intensity = {.max_restarts = 5, .within = std::chrono::seconds(10)};
///   cfg.backoff = {.min = 10ms, .max = 1s, .jitter = 0.2};
///   cfg.children.push_back(keel::stage_spec("parse", [](keel::stage_context& ctx) {
///     return caf::behavior{[](const std::string& row) { return parse(row); }};
///   }).with_max_attempts(3));
///   cfg.children.push_back(keel::supervisor_spec("store", store_cfg));
/// @endcode
///
/// Three kinds of children:
/// - **stages** (`stage_spec`, `typed_stage_spec`): keel's supervised actors.
///   A stage keeps one address for its whole life; a restart replaces its
///   behavior (and the state it captured) in place. Exceptions and error
///   returns from its handlers are failures handled by the decider; the failed
///   message is retried and finally quarantined; requesters always get a reply.
/// - **workers** (`worker_spec`): any CAF actor from a factory. A restart
///   spawns a new actor (new address); failures are its exit reasons.
/// - **supervisors** (`supervisor_spec`): nested trees of any depth. A nested
///   supervisor that escalates exits with the escalation error, which its
///   parent's decider sees like any other failure.

#include "keel/supervision/decider.hpp"
#include "keel/supervision/events.hpp"

#include <caf/actor.hpp>
#include <caf/behavior.hpp>
#include <caf/detail/type_list.hpp>
#include <caf/detail/type_traits.hpp>
#include <caf/fwd.hpp>
#include <caf/typed_behavior.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace keel {

/// When a child is restarted (Erlang/OTP's restart types).
enum class restart_type : uint8_t {
  /// Always restarted, even after a normal exit.
  permanent,
  /// Restarted only after an abnormal exit (a failure).
  transient,
  /// Never restarted: a restart directive stops it instead.
  temporary,
};

/// Which children a restart affects.
enum class restart_strategy : uint8_t {
  /// Only the failed child.
  one_for_one,
  /// All children.
  one_for_all,
  /// The failed child and every child started after it.
  rest_for_one,
};

/// What a stage does with a new message when its stash (the messages kept
/// while it restarts) is full.
enum class stash_full_policy : uint8_t {
  /// Refuse the new message: it goes to the dead letters and its requester
  /// gets a `resource_exhausted` error.
  reject_new,
  /// Drop the oldest stashed message the same way and keep the new one.
  drop_oldest,
};

std::string_view to_string(restart_type x) noexcept;
std::string_view to_string(restart_strategy x) noexcept;
std::string_view to_string(stash_full_policy x) noexcept;

/// More than `max_restarts` restarts within `within` make the supervisor
/// escalate (Erlang's intensity and period; counted over all children).
struct restart_intensity {
  uint32_t max_restarts = 3;
  std::chrono::milliseconds within{5000};
};

/// Delay before a restarted child starts: `min * multiplier^n` for the n-th
/// consecutive restart, plus up to `jitter` (a fraction, 0..1) of itself at
/// random, never more than `max`. The count n goes back to 0 once the child
/// has run for `reset_after` without failing. All zero: restart at once.
struct backoff_policy {
  std::chrono::nanoseconds min{0};
  std::chrono::nanoseconds max{0};
  double jitter = 0.0;
  double multiplier = 2.0;
  std::chrono::nanoseconds reset_after{std::chrono::seconds(30)};
};

/// The bounded stash of a stage.
struct stash_policy {
  size_t capacity = 10'000;
  stash_full_policy when_full = stash_full_policy::reject_new;
};

/// The handle a stage's behavior factory gets on every (re)start. It lives as
/// long as the stage (across restarts); do not keep it beyond the stage.
class stage_context {
public:
  virtual ~stage_context() = default;

  /// The stage's actor, for sending, requesting, delayed sends.
  virtual caf::event_based_actor* self() noexcept = 0;

  /// The stage's path in the tree, e.g. "root/ingest/parse".
  virtual const std::string& path() const noexcept = 0;

  /// How often the stage was restarted (0 on its first start).
  virtual uint32_t restarts() const noexcept = 0;

  /// Which attempt the message being handled is (1 for the first).
  virtual uint32_t attempt() const noexcept = 0;

  /// Reports a failure from outside a message handler (e.g. from a `.then`
  /// continuation); the decider handles it as if a handler had failed, but
  /// there is no message to retry.
  virtual void fail(error err) = 0;

  /// Wraps a continuation so that an exception escaping it becomes a failure
  /// of this stage (`fail(panic error)`) instead of terminating the actor
  /// (which would give the stage a new address). The wrapper has the same
  /// parameter list as `f`, so it can go straight into `.then(...)`:
  /// @code
  ///   ctx.self()->request(db, 1s, query).then(ctx.guard([](const row& r) { use(r); }));
  /// @endcode
  template <class F>
  auto guard(F f) {
    using args = typename caf::detail::get_callable_trait<F>::arg_types;
    return guard_with(std::move(f), args{});
  }

private:
  template <class F, class... Ts>
  auto guard_with(F f, caf::detail::type_list<Ts...>) {
    return [this, f = std::move(f)](Ts... xs) mutable {
      try {
        f(std::forward<Ts>(xs)...);
      } catch (...) {
        report_exception(std::current_exception());
      }
    };
  }

  void report_exception(std::exception_ptr ep);
};

/// Creates a stage's behavior; called on its start and on every restart. State
/// captured by the behavior's handlers is thrown away on restart.
using stage_factory = std::function<caf::behavior(stage_context&)>;

/// Creates a worker (any CAF actor); called on its start and every restart.
using worker_factory = std::function<caf::actor(caf::actor_system&)>;

struct supervisor_config;

/// One child of a supervisor. Make one with `stage_spec`, `typed_stage_spec`,
/// `worker_spec` or `supervisor_spec`, then adjust with the `with_*` setters.
struct child_spec {
  enum class kind_t : uint8_t { stage, worker, supervisor };

  /// Unique among its siblings; no '/' (it is a path segment).
  std::string id;
  kind_t kind = kind_t::stage;
  stage_factory stage;
  worker_factory worker;
  std::shared_ptr<const supervisor_config> supervisor;
  restart_type restart = restart_type::permanent;
  /// Time a child is given to stop on shutdown before it is killed.
  std::chrono::milliseconds shutdown_timeout{5000};
  /// Empty: the supervisor's decider.
  keel::decider decider;
  /// Stages: how often a message is tried before it is quarantined.
  uint32_t max_attempts = 3;
  /// Stages: the stash used while restarting.
  stash_policy stash;

  child_spec& with_restart(restart_type x) & {
    restart = x;
    return *this;
  }
  child_spec&& with_restart(restart_type x) && {
    restart = x;
    return std::move(*this);
  }
  child_spec& with_shutdown_timeout(std::chrono::milliseconds x) & {
    shutdown_timeout = x;
    return *this;
  }
  child_spec&& with_shutdown_timeout(std::chrono::milliseconds x) && {
    shutdown_timeout = x;
    return std::move(*this);
  }
  child_spec& with_decider(keel::decider x) & {
    decider = std::move(x);
    return *this;
  }
  child_spec&& with_decider(keel::decider x) && {
    decider = std::move(x);
    return std::move(*this);
  }
  child_spec& with_max_attempts(uint32_t x) & {
    max_attempts = x;
    return *this;
  }
  child_spec&& with_max_attempts(uint32_t x) && {
    max_attempts = x;
    return std::move(*this);
  }
  child_spec& with_stash(stash_policy x) & {
    stash = x;
    return *this;
  }
  child_spec&& with_stash(stash_policy x) && {
    stash = x;
    return std::move(*this);
  }
};

/// A stage whose behavior comes from `f`.
child_spec stage_spec(std::string id, stage_factory f);

/// A stage with a typed interface `Handle` (a `caf::typed_actor<...>`); look
/// it up with `supervision_tree::child<Handle>(path)`.
template <class Handle, class F>
child_spec typed_stage_spec(std::string id, F f) {
  return stage_spec(std::move(id), [f = std::move(f)](stage_context& ctx) mutable {
    typename Handle::behavior_type typed = f(ctx);
    return std::move(typed.unbox());
  });
}

/// A worker: any CAF actor made by `f`.
child_spec worker_spec(std::string id, worker_factory f);

/// A nested supervisor.
child_spec supervisor_spec(std::string id, supervisor_config cfg);

/// A supervisor: its children, strategy, limits and the sinks it reports to.
struct supervisor_config {
  /// The supervisor's id (its path segment).
  std::string name = "supervisor";
  restart_strategy strategy = restart_strategy::one_for_one;
  restart_intensity intensity;
  backoff_policy backoff;
  /// Empty: the parent's (at the root, `decider::standard()`).
  keel::decider decider;
  /// Started in this order, stopped in reverse.
  std::vector<child_spec> children;
  /// Null: the parent's (at the root, a new `memory_dead_letter_sink`).
  std::shared_ptr<dead_letter_sink> dead_letters;
  /// Null: the parent's (at the root, none).
  std::shared_ptr<event_sink> events;
  /// Seed of the backoff jitter (0: the parent's, derived per child; at the
  /// root, a random seed).
  uint64_t seed = 0;
};

} // namespace keel
