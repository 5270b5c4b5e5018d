/// @file
/// The SQLite journal's schema migrations, exposed so that tests can open a
/// journal with a longer list (a future version) and check the migration
/// path without a second build of keel. Not part of the public API.
///
/// A migration takes a journal from `version - 1` to `version`. Opening a
/// journal at version v applies every listed migration above v, in order, in
/// one transaction together with the new `user_version`: a failing step
/// leaves the file at v. Adding schema version 2 is one more entry in
/// `sqlite_migrations()` plus `sqlite_schema_version = 2`.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "keel/store/sqlite_journal.hpp"

namespace keel::store::detail {

/// One forward migration.
struct sqlite_migration {
  /// The schema version after it.
  int version = 0;
  /// SQL statements, applied in order.
  std::vector<std::string> steps;
};

/// keel's migrations, version 1 (the initial schema) first; the last one's
/// version is `sqlite_schema_version`.
std::span<const sqlite_migration> sqlite_migrations();

/// `open_sqlite_journal` with `migrations` instead of keel's own; the newest
/// supported version is the last entry's.
expected<std::shared_ptr<journal>>
open_sqlite_journal_with(const std::string& path, const sqlite_options& opts,
                         std::span<const sqlite_migration> migrations);

} // namespace keel::store::detail
