#pragma once

// What the journals share beyond the interface: validation of operations and
// the errors both raise, so that the in-memory journal and the SQLite one
// fail the same batches with the same codes and messages.

#include "keel/store/journal.hpp"

#include <string>
#include <string_view>

namespace keel::store::detail {

/// The wall clock in milliseconds since the Unix epoch.
unix_ms wall_now() noexcept;

/// `invalid_argument` when `op` cannot be applied whatever the journal holds
/// (an empty key, a non-positive ttl); empty otherwise.
error validate(const write_op& op);

/// `already_exists`: `consumer` already processed `id`.
error duplicate_error(std::string_view consumer, std::string_view id);

/// `failed_precondition`: `holder` holds lease `name` until `expires`.
error lease_held_error(const op::acquire_lease& op, std::string_view holder, unix_ms expires);

/// Whether `op` may take a lease held by `holder` until `expires`: it is free,
/// expired, or already `op.owner`'s (a renewal).
inline bool may_take_lease(const op::acquire_lease& op, std::string_view holder,
                           unix_ms expires) noexcept {
  return holder == op.owner || expires <= op.now;
}

/// Wraps a batch's own error so that it names the journal and the batch's
/// position in its group.
error batch_error(const journal& j, size_t index, error err);

} // namespace keel::store::detail
