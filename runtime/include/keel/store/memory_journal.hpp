/// @file
/// An in-memory journal with the same behaviour as the SQLite one (atomic
/// batches, savepoint-per-batch groups, seq assignment, leases, dedup), for
/// tests and throw-away runs. Nothing survives the process.
///
/// @code
///   std::shared_ptr<keel::store::journal> j = keel::store::make_memory_journal();
/// @endcode
#pragma once

#include <memory>

#include "keel/store/journal.hpp"

namespace keel::store {

/// A new, empty in-memory journal.
std::shared_ptr<journal> make_memory_journal();

} // namespace keel::store
