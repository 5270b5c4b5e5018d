/// @file
/// The persistent dead-letter queue: items that gave up, kept on the journal
/// until an operator replays or purges them.
///
/// A `dead_letter_queue` is a named queue on a `keel::store::journal`. Each
/// entry holds the item as JSON, its error chain, how often it was tried,
/// when it was first and last seen, the stage that gave up on it and its key.
/// Entries of one key are listed and replayed oldest first: replay stops a
/// key at its first failure, so a later entry never overtakes an earlier one.
///
/// @code
///   keel::dead_letter_queue dlq{journal, "orders"};
///   dlq.put({.key = "order-17", .payload = R"({"id":17})", .failure = err, .source = "charge"});
///   auto stuck = dlq.list({.code = "unavailable"});
///   auto plan = dlq.replay({.key = "order-17"}, handler, {.dry_run = true}); // what would run
///   auto done = dlq.replay({.all = true}, [&](const keel::dlq_replay_item& x) {
///     return charge(x.entry.payload, x.message_id);   // expected<void>
///   });
///   dlq.purge({.older_than = now_ms - 7 * 24 * 3600 * 1000});
/// @endcode
///
/// Replays and dedup: a consumer that records the ids of the messages it
/// processed (`write_batch::mark_processed(consumer, id)` in the work's own
/// batch) would reject a replay carrying the original message id as a
/// duplicate. A replay therefore carries its own message id,
/// `<key>#dlq-<entry id>` (`dlq_replay_id`): distinct from the original's,
/// and stable across replays of the same entry (the journal updates a failed
/// entry in place, so its id never changes). So a replay whose handler
/// succeeded but whose removal from the queue was lost (a crash in between)
/// is recognised as a duplicate the next time: the handler's `already_exists`
/// then counts as done and the entry is removed.
#pragma once

#include "keel/error.hpp"
#include "keel/store/journal.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

/// Which entries `dead_letter_queue::list` returns; every field set must match.
struct dlq_filter {
  // The `{}` spare callers GCC's -Wmissing-field-initializers on designated
  // initializers such as `{.key = "k"}`.
  /// Only this key.
  std::optional<std::string> key{};
  /// Only entries given up by this stage or step.
  std::optional<std::string> source{};
  /// Only entries whose error chain has this code somewhere: a code name of
  /// any category ("circuit_open"), qualified with its category
  /// ("keel.resilience.circuit_open"), or a canonical code ("unavailable",
  /// matching every code whose canonical code it is).
  std::optional<std::string> code{};
  /// At most this many, oldest first (0: no limit).
  size_t limit = 0;
};

/// Which entries `replay` and `purge` act on. Every field set must match; a
/// selection with no field set selects nothing, so that a forgotten field
/// never purges a whole queue: say `all`.
struct dlq_selection {
  /// Only these entries.
  std::vector<uint64_t> ids{};
  /// Only this key.
  std::optional<std::string> key{};
  /// Only entries given up by this stage or step.
  std::optional<std::string> source{};
  /// Only entries last seen before this time.
  std::optional<store::unix_ms> older_than{};
  /// Every entry (still narrowed by the fields above when they are set).
  bool all = false;

  /// Whether no field is set (selects nothing).
  bool empty() const noexcept { return ids.empty() && !key && !source && !older_than && !all; }
};

/// Options of `dead_letter_queue::replay`.
struct dlq_replay_options {
  /// Report what would be replayed without calling the handler or changing
  /// the queue.
  bool dry_run = false;
  /// A handler failing with `already_exists` (its dedup saw the replay's
  /// message id before: an earlier replay got through but its removal was
  /// lost) counts as a success and the entry is removed.
  bool duplicate_is_done = true;
  /// Replay at most this many entries (0: no limit); the rest stay queued.
  size_t limit = 0;
};

/// What a replay handler gets.
struct dlq_replay_item {
  store::dlq_entry entry;
  /// The replay's message id, for the consumer's dedup (see the file overview).
  std::string message_id;
  /// This replay's attempt number: `entry.attempts + 1`.
  uint32_t attempt = 0;
};

/// Replays an entry: success removes it, an error keeps it (and holds back
/// the later entries of its key). An exception counts as a `panic` error.
using dlq_replay_handler = std::function<expected<void>(const dlq_replay_item&)>;

/// What a replay did (or, in a dry run, would do).
struct dlq_replay_report {
  bool dry_run = false;
  /// Entries replayed and removed (dry run: would be replayed), in order.
  std::vector<uint64_t> replayed;
  /// Entries whose replay failed; kept, with attempts, last_seen and failure updated.
  std::vector<uint64_t> failed;
  /// Entries not tried because an earlier entry of their key failed, or the limit was reached.
  std::vector<uint64_t> held;
  /// The failures, joined (each wrapped with its entry id and key); empty when none failed.
  keel::error error;
};

/// Options of a dead-letter queue.
struct dlq_options {
  /// The clock for `first_seen`, `last_seen` and replays (wall clock, ms
  /// since the Unix epoch, by default); tests put a fake one here.
  std::function<store::unix_ms()> clock{};
};

/// The message id a replay of `entry` carries: `<key>#dlq-<id>`.
std::string dlq_replay_id(const store::dlq_entry& entry);

/// A named dead-letter queue on a journal; see the file overview. Thread-safe
/// as the journal is; concurrent replays of one queue may replay an entry twice
/// (the consumer's dedup on `message_id` makes that harmless).
class dead_letter_queue {
public:
  // -- constructors -------------------------------------------------------------

  dead_letter_queue(std::shared_ptr<store::journal> journal, std::string name,
                    dlq_options opts = {});

  // -- properties ---------------------------------------------------------------

  const std::string& name() const noexcept { return name_; }

  const std::shared_ptr<store::journal>& journal() const noexcept { return journal_; }

  // -- writing ------------------------------------------------------------------

  /// Adds an entry (its `id` and `queue` are ignored). Defaults: attempts 1,
  /// first_seen and last_seen now (last_seen at least first_seen), payload
  /// `null`. The payload must be JSON text (`invalid_argument` otherwise).
  expected<void> put(store::dlq_entry entry);

  /// Adds an entry to `batch` instead, so that it commits atomically with
  /// other work (e.g. the consumer's own writes); same defaults and checks.
  expected<void> put(store::write_batch& batch, store::dlq_entry entry);

  // -- reading ------------------------------------------------------------------

  /// The entries matching `f`, oldest first (so in order per key).
  expected<std::vector<store::dlq_entry>> list(const dlq_filter& f = {});

  /// Entry `id` of this queue; `not_found` otherwise.
  expected<store::dlq_entry> show(uint64_t id);

  /// Number of entries.
  expected<size_t> size();

  // -- acting -------------------------------------------------------------------

  /// Replays the selected entries through `handler`, oldest first; see
  /// `dlq_replay_handler` and `dlq_replay_report`. Fails (without replaying
  /// anything) only when the queue cannot be read; an entry whose removal or
  /// update cannot be committed counts as failed.
  expected<dlq_replay_report> replay(const dlq_selection& sel, const dlq_replay_handler& handler,
                                     const dlq_replay_options& opts = {});

  /// Removes the selected entries in one batch; returns how many.
  expected<size_t> purge(const dlq_selection& sel);

private:
  store::unix_ms now() const;

  expected<std::vector<store::dlq_entry>> select(const dlq_selection& sel);

  std::shared_ptr<store::journal> journal_;
  std::string name_;
  dlq_options opts_;
};

/// Whether some node of `err` has code `name` (see `dlq_filter::code`).
bool error_has_code(const error& err, std::string_view name);

} // namespace keel
