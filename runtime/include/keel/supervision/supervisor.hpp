#pragma once

/// @file
/// Running supervision trees: `supervision_tree` (blocking API for the
/// embedding service), `spawn_supervisor` (for actors), introspection.
///
/// @code
///   caf::actor_system sys{cfg};
///   auto tree = keel::supervision_tree::start(sys, std::move(sup_cfg));
///   tree.on_exit([](const keel::error& why) { if (why) alert(why); });
///   caf::anon_send(tree.child("ingest/parse"), std::string{"row"});
///   std::cout << keel::to_string(tree.tree());
///   keel::error why = tree.shutdown();   // graceful, children in reverse order
/// @endcode
///
/// The message interface, for actors and deterministic tests: a supervisor
/// answers `(sup_lookup_atom, std::string path)` with the child's current
/// `caf::actor` (an error when there is none) and `(sup_tree_atom)` with a
/// `tree_node`. It exits on `exit_reason::user_shutdown` after stopping its
/// children in reverse order, and with the escalation error when it escalates.

#include "keel/supervision/spec.hpp"

#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

/// Ask a supervisor for a child's address: `(sup_lookup_atom, "sub/child")`.
using sup_lookup_atom = caf::atom_constant<caf::atom("k_lookup")>;
/// Ask a supervisor for its tree: `(sup_tree_atom)` -> `tree_node`.
using sup_tree_atom = caf::atom_constant<caf::atom("k_tree")>;

/// Where a child is in its life.
enum class child_state : uint8_t {
  /// Running normally.
  running,
  /// Failed; the supervisor is deciding.
  failed,
  /// Waiting for its restart (backoff) or starting.
  restarting,
  /// Stopped for good.
  stopped,
};

std::string_view to_string(child_state x) noexcept;

/// A snapshot of a supervision tree.
struct tree_node {
  /// The id (path segment) and full path, e.g. "parse" and "root/ingest/parse".
  std::string id;
  std::string path;
  child_spec::kind_t kind = child_spec::kind_t::supervisor;
  child_state state = child_state::running;
  restart_type restart = restart_type::permanent;
  /// Supervisors: their strategy.
  restart_strategy strategy = restart_strategy::one_for_one;
  /// Restarts so far.
  uint32_t restarts = 0;
  /// The last failure (empty when none).
  error last_error;
  /// The current address (null once stopped).
  caf::actor address;
  /// A nested supervisor's children, in start order.
  std::vector<tree_node> children;
};

/// An indented text rendering of a tree, one line per node.
std::string to_string(const tree_node& tree);

/// Spawns a supervisor actor with `cfg` (for use from actors; it has no
/// parent: when it escalates it exits with the escalation error, which its
/// monitors see). Its children are started, in order, before this returns.
caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_config cfg);

/// The root of a supervision tree, owned by the embedding service.
///
/// Escalation at the root never crashes the process: the root supervisor stops
/// its children and exits, and the service learns why through `wait`,
/// `wait_for` or an `on_exit` callback. Destroying a running tree shuts it down
/// (so that the actor system can be destroyed).
class supervision_tree {
public:
  /// Starts a root supervisor. Its children are started, in order, before
  /// this returns.
  static supervision_tree start(caf::actor_system& sys, supervisor_config cfg);

  supervision_tree(supervision_tree&&) noexcept = default;
  supervision_tree& operator=(supervision_tree&&) noexcept;
  ~supervision_tree();

  /// The root supervisor actor.
  const caf::actor& root() const noexcept;

  /// The current address of the child at `path` ("parse", "ingest/parse"), or
  /// an error naming the missing segment.
  expected<caf::actor> child(std::string_view path,
                             std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;

  /// Same, as the typed handle `Handle`.
  template <class Handle>
  expected<Handle> child(std::string_view path,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    auto x = child(path, timeout);
    if (!x)
      return x.error();
    return caf::actor_cast<Handle>(*x);
  }

  /// A snapshot of the whole tree.
  expected<tree_node> tree(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;

  /// The dead-letter sink of the root (the configured one, or the default
  /// in-memory one).
  const std::shared_ptr<dead_letter_sink>& dead_letters() const noexcept;

  /// Calls `f` once when the root exits: with the escalation error, or with an
  /// empty error after a normal shutdown. Called at once when it has already
  /// exited. `f` runs on an actor thread.
  void on_exit(std::function<void(const error&)> f);

  /// True once the root has exited.
  bool done() const;

  /// Blocks until the root exits and the `on_exit` callbacks registered
  /// before have run; returns why (empty after a normal shutdown).
  error wait() const;

  /// Like `wait`, but gives up after `timeout` (nullopt: still running).
  std::optional<error> wait_for(std::chrono::nanoseconds timeout) const;

  /// Stops every child in reverse start order (each given its shutdown
  /// timeout, then killed) and waits for the root to exit. Returns why it
  /// exited: empty after a clean shutdown, the escalation error if it had
  /// escalated before.
  error shutdown();

  struct state;

private:
  supervision_tree(caf::actor root, std::shared_ptr<state> st);

  caf::actor root_;
  std::shared_ptr<state> state_;
};

} // namespace keel

// Tree snapshots travel between local actors only (they hold actor handles).
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::tree_node)
