/// @file
/// The embedded default journal: one SQLite file in WAL mode.
///
/// @code
///   keel::store::sqlite_options opts;
///   opts.durability = keel::store::durability::normal;
///   auto j = keel::store::open_sqlite_journal("/var/lib/orders.journal", opts);
///   if (!j) {            // corrupt, locked, newer schema, not a journal, ...
///     std::cerr << j.error() << '\n';   // names the file and the problem
///     return 1;
///   }
/// @endcode
///
/// The file carries SQLite's `application_id` (keel's magic number) and a
/// schema version in `user_version`; opening an older keel journal applies the
/// missing forward migrations in one transaction. Opening never changes a file
/// that is not a keel journal, and a failed open or commit never loses what
/// was committed before.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "keel/store/journal.hpp"

namespace keel::store {

/// How hard a commit tries to survive a crash (SQLite's `synchronous`).
enum class durability : uint8_t {
  /// fsync at every commit: survives power loss (synchronous=FULL).
  full = 0,
  /// fsync at checkpoints only: survives a process crash, may lose the last
  /// commits on power loss (synchronous=NORMAL, WAL).
  normal = 1,
  /// No fsync: for tests and throw-away runs (synchronous=OFF).
  off = 2,
};

/// "full", "normal", "off".
std::string_view to_string(durability d) noexcept;

/// Options of `open_sqlite_journal`.
struct sqlite_options {
  durability level = durability::full;
  /// How long a commit or open waits for another process's lock before
  /// failing with `unavailable` ("locked by another process").
  std::chrono::milliseconds busy_timeout = std::chrono::milliseconds(5000);
  /// Run SQLite's `quick_check` on open (detects most corruption; costs a
  /// read of the file).
  bool check_on_open = true;
  /// Create the file when missing (otherwise `not_found`).
  bool create = true;
};

/// The schema version this keel writes (`PRAGMA user_version`).
inline constexpr int sqlite_schema_version = 1;

/// keel's SQLite `application_id`: "keel" in ASCII.
inline constexpr int32_t sqlite_application_id = 0x6b65656c;

/// Opens (or creates) the journal at `path`. Errors name the file and the
/// problem: `not_found` (missing, create=false), `data_loss` (corrupt or
/// truncated), `failed_precondition` (not a keel journal, or a schema newer
/// than this keel), `unavailable` (locked by another process), `internal`.
expected<std::shared_ptr<journal>> open_sqlite_journal(const std::string& path,
                                                       const sqlite_options& opts = {});

} // namespace keel::store
