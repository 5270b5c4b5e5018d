/// @file
/// The journal: keel's one durable store (capability C5).
///
/// Everything that must survive a crash goes through one interface: saga
/// records, event logs (a saga's step history is the event stream
/// `saga/<id>`), dead-letter entries, checkpoints / cursors, processed-message
/// ids (dedup) and leases (one owner per saga at a time).
///
/// Writes are `write_batch`es: a batch is atomic (all of its operations or
/// none). `commit_group` commits many batches in one durable transaction,
/// each batch still atomic on its own (a savepoint each), which is what the
/// journal writer actor uses for group commit (keel/store/writer.hpp).
///
/// @code
///   auto j = keel::store::open_sqlite_journal("orders.journal");
///   if (!j) { std::cerr << j.error() << '\n'; return 1; }
///   keel::store::write_batch b;
///   b.put_saga(rec).append_event("saga/" + rec.id, "step_completed", "charge", 1, "{}");
///   if (auto r = (*j)->commit(b); !r) ...
///   auto running = (*j)->sagas({.state = keel::saga_state::running});
/// @endcode
///
/// Implementations: SQLite in WAL mode (keel/store/sqlite_journal.hpp, the
/// embedded default) and an in-memory one with the same behaviour
/// (keel/store/memory_journal.hpp, for tests). Both are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "keel/error.hpp"

namespace keel {

/// The life cycle of a saga. Values are stored in journals: never renumber.
enum class saga_state : uint8_t {
  /// Recorded, no step started yet.
  pending = 0,
  /// Running forward steps.
  running = 1,
  /// A step failed (or the saga was cancelled / timed out): compensating the
  /// completed steps in reverse order.
  compensating = 2,
  /// Every step completed.
  completed = 3,
  /// A step failed and every completed step was compensated.
  rolled_back = 4,
  /// Compensation could not finish (a compensator exhausted its retries, the
  /// rollback deadline passed, or a step after the pivot failed): an operator
  /// must finish it; the reason is kept in the record.
  needs_intervention = 5,
};

/// "pending", "running", ...
std::string_view to_string(saga_state s) noexcept;

/// Parses `to_string`'s form; `invalid_argument` naming the text otherwise.
expected<saga_state> saga_state_from_string(std::string_view text);

/// completed, rolled_back and needs_intervention: nothing more will happen.
constexpr bool is_terminal(saga_state s) noexcept {
  return s == saga_state::completed || s == saga_state::rolled_back
         || s == saga_state::needs_intervention;
}

namespace store {

/// Milliseconds since the Unix epoch (wall clock: records and leases are read
/// by other processes).
using unix_ms = int64_t;

/// The journal's view of one saga.
struct saga_record {
  /// Unique saga id (chosen by the caller, e.g. the order id).
  std::string id;
  /// The definition's name ("payment").
  std::string kind;
  /// "orchestrated" or "choreographed".
  std::string mode;
  saga_state state = saga_state::pending;
  /// Forward: index of the step in progress or next to run. Compensating:
  /// number of entries of `completed` still to compensate.
  int32_t step = 0;
  /// Names of the steps whose forward action completed, in order.
  std::vector<std::string> completed;
  /// The saga data: a JSON object as text ("{}" when empty).
  std::string data = "{}";
  /// The forward error that started the rollback (empty when none).
  error failure;
  /// Compensation errors, joined (empty when none).
  error compensation_failure;
  /// Why the saga needs intervention (empty otherwise).
  std::string reason;
  unix_ms created = 0;
  unix_ms updated = 0;

  friend bool operator==(const saga_record&, const saga_record&) = default;
};

/// One entry of an event stream (saga history, choreography event log).
struct event_record {
  /// The stream, e.g. "saga/order-17" or "bus/payments".
  std::string stream;
  /// Position in the stream, from 1, assigned by the journal at commit.
  uint64_t seq = 0;
  /// When it happened; 0 is replaced by the journal's clock at commit.
  unix_ms at = 0;
  /// What happened: "step_started", "step_completed", "compensation_failed", ...
  std::string type;
  /// The step or event name it concerns (may be empty).
  std::string name;
  /// Attempt number where it applies (0 otherwise).
  uint32_t attempt = 0;
  /// Free-form JSON text (an object; "{}" when empty): errors, payloads.
  std::string detail = "{}";

  friend bool operator==(const event_record&, const event_record&) = default;
};

/// A dead-letter entry.
struct dlq_entry {
  /// Assigned by the journal at commit (0 before).
  uint64_t id = 0;
  /// The queue (usually the source pipeline or saga kind).
  std::string queue;
  /// The item's key; order is kept per (queue, key).
  std::string key;
  /// The item as JSON text.
  std::string payload = "null";
  error failure;
  uint32_t attempts = 0;
  unix_ms first_seen = 0;
  unix_ms last_seen = 0;
  /// The stage or step that gave up on it.
  std::string source;

  friend bool operator==(const dlq_entry&, const dlq_entry&) = default;
};

/// A lease: `owner` holds `name` until `expires`.
struct lease_record {
  std::string name;
  std::string owner;
  unix_ms expires = 0;

  friend bool operator==(const lease_record&, const lease_record&) = default;
};

// -- write operations ---------------------------------------------------------

namespace op {

/// Inserts or replaces a saga record.
struct put_saga {
  saga_record record;
};

/// Appends to a stream; the journal assigns `seq` (last + 1).
struct append_event {
  event_record event;
};

/// Adds a dead-letter entry; the journal assigns its id.
struct put_dlq {
  dlq_entry entry;
};

/// Removes a dead-letter entry; a missing id is not an error.
struct remove_dlq {
  uint64_t id = 0;
};

/// Records another failed attempt of dead-letter entry `id` in place: sets
/// its attempts, last_seen and failure. The id, and so the entry's place in
/// the order of its key, is kept (a remove and a put would move it behind
/// the newer entries of its key). A missing id is not an error.
struct update_dlq {
  uint64_t id = 0;
  uint32_t attempts = 0;
  unix_ms last_seen = 0;
  error failure;
};

/// Sets a checkpoint / cursor.
struct set_checkpoint {
  std::string name;
  std::string value;
};

/// Records a processed message id. When `consumer` already processed `id`,
/// the batch fails with `already_exists` (dedup in the work's transaction).
struct mark_processed {
  std::string consumer;
  std::string id;
};

/// Takes or renews lease `name` for `owner` until `now + ttl_ms`. Fails the
/// batch with `failed_precondition` when another owner holds it past `now`
/// (fencing: put it in every batch written under the lease).
struct acquire_lease {
  std::string name;
  std::string owner;
  unix_ms now = 0;
  int64_t ttl_ms = 0;
};

/// Gives a lease up; only its owner can (otherwise a no-op).
struct release_lease {
  std::string name;
  std::string owner;
};

} // namespace op

/// One write operation.
using write_op =
    std::variant<op::put_saga, op::append_event, op::put_dlq, op::remove_dlq, op::set_checkpoint,
                 op::mark_processed, op::acquire_lease, op::release_lease, op::update_dlq>;

/// Operations committed together, atomically.
class write_batch {
public:
  write_batch& put_saga(saga_record r);
  write_batch& append_event(std::string stream, std::string type, std::string name = {},
                            uint32_t attempt = 0, std::string detail = "{}", unix_ms at = 0);
  write_batch& append_event(event_record e);
  write_batch& put_dlq(dlq_entry e);
  write_batch& remove_dlq(uint64_t id);
  write_batch& update_dlq(uint64_t id, uint32_t attempts, unix_ms last_seen, error failure);
  write_batch& set_checkpoint(std::string name, std::string value);
  write_batch& mark_processed(std::string consumer, std::string id);
  write_batch& acquire_lease(std::string name, std::string owner, unix_ms now, int64_t ttl_ms);
  write_batch& release_lease(std::string name, std::string owner);

  std::span<const write_op> ops() const noexcept { return ops_; }
  bool empty() const noexcept { return ops_.empty(); }
  size_t size() const noexcept { return ops_.size(); }

private:
  std::vector<write_op> ops_;
};

/// Which sagas `journal::sagas` returns.
struct saga_filter {
  // The `{}` spare callers GCC's -Wmissing-field-initializers on designated
  // initializers such as `{.limit = 10}`.
  /// Only this state.
  std::optional<saga_state> state{};
  /// Only this kind.
  std::optional<std::string> kind{};
  /// Only sagas not in a terminal state.
  bool unfinished_only = false;
  /// At most this many (0: no limit), ordered by id.
  size_t limit = 0;
};

/// The durable store. Thread-safe; every call is synchronous. Actors write
/// through the journal writer actor (keel/store/writer.hpp) instead of
/// calling `commit` from a handler.
class journal {
public:
  virtual ~journal();

  // -- writes -----------------------------------------------------------------

  /// Commits `batch` atomically and durably (per the durability setting).
  expected<void> commit(const write_batch& batch);

  /// Commits several batches in one transaction: each batch is atomic on its
  /// own (a failing batch is left out and gets its error), the others are
  /// committed together. Returns one error per batch (empty on success). When
  /// the transaction itself fails (I/O error, disk full), every batch gets
  /// that error and nothing is committed.
  virtual std::vector<error> commit_group(std::span<const write_batch* const> batches) = 0;

  // -- reads ------------------------------------------------------------------

  /// The record of saga `id`, or nullopt.
  virtual expected<std::optional<saga_record>> saga(std::string_view id) = 0;

  /// Saga records matching `f`, ordered by id.
  virtual expected<std::vector<saga_record>> sagas(const saga_filter& f = {}) = 0;

  /// Events of `stream` with seq > `after`, in order; at most `limit` (0: all).
  virtual expected<std::vector<event_record>> events(std::string_view stream, uint64_t after = 0,
                                                     size_t limit = 0) = 0;

  /// Dead-letter entries of `queue` (all queues when empty), oldest first.
  virtual expected<std::vector<dlq_entry>> dlq(std::string_view queue = {}, size_t limit = 0) = 0;

  /// A checkpoint's value, or nullopt.
  virtual expected<std::optional<std::string>> checkpoint(std::string_view name) = 0;

  /// Whether `consumer` processed `id`.
  virtual expected<bool> processed(std::string_view consumer, std::string_view id) = 0;

  /// The lease `name`, or nullopt (expired leases are returned as they are).
  virtual expected<std::optional<lease_record>> lease(std::string_view name) = 0;

  /// What the journal is, for messages: "sqlite journal /var/lib/x.journal".
  virtual std::string describe() const = 0;
};

/// The stream holding saga `id`'s history.
std::string saga_stream(std::string_view id);

/// The lease name that guards saga `id`.
std::string saga_lease(std::string_view id);

} // namespace store
} // namespace keel
