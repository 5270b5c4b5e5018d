/// @file
/// The journal writer actor: the one writer of a journal, with group commit.
///
/// Actors never call `journal::commit` from a handler (it blocks on fsync).
/// They send their batch to the writer, which runs on its own thread
/// (detached) and commits every batch that queued up while it was busy in
/// one transaction (`journal::commit_group`), so durability costs one fsync
/// per group, not per saga step:
///
/// @code
///   auto writer = keel::store::spawn_journal_writer(sys, journal);
///   self->request(writer, caf::infinite, keel::store::commit_atom::value, batch)
///     .then([=](const keel::error& err) { if (err) ...; else ...; });
/// @endcode
///
/// The reply is an empty `keel::error` once the batch is durable, or the
/// batch's error (its own, e.g. a lease held by another owner, or the
/// transaction's). The writer quits when its last handle is gone or on
/// `exit`; batches it has already received are committed first.
///
/// The writer is process-local (it holds the journal by pointer): a
/// `write_batch` is an unsafe message type that cannot cross the network.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <caf/fwd.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>

#include "keel/store/journal.hpp"

namespace keel::store {

/// Message tag: `(commit_atom, write_batch) -> keel::error`.
using commit_atom = caf::atom_constant<caf::atom("kj_commit")>;

/// Message tag: `(writer_stats_atom) -> writer_stats`.
using writer_stats_atom = caf::atom_constant<caf::atom("kj_stats")>;

/// Options of the writer.
struct writer_options {
  /// Most batches in one transaction. 1 disables group commit (one
  /// transaction per batch: the baseline the benchmarks compare with).
  size_t max_group = 512;
};

/// What the writer did so far.
struct writer_stats {
  uint64_t batches = 0;
  uint64_t transactions = 0;
  uint64_t failed_batches = 0;
  uint64_t largest_group = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, writer_stats& x) {
  return f(caf::meta::type_name("keel::store::writer_stats"), x.batches, x.transactions,
           x.failed_batches, x.largest_group);
}

/// Spawns the writer of `j` (detached: it blocks on I/O).
caf::actor spawn_journal_writer(caf::actor_system& sys, std::shared_ptr<journal> j,
                                writer_options opts = {});

} // namespace keel::store

// Batches only travel between actors of one process (the writer is local to
// its journal), so they need no serialization.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::store::write_batch)
