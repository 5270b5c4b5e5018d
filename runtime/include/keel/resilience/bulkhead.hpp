/// @file
/// Bulkheads: a concurrency limit with a bounded, fair waiting queue, per
/// tenant or resource.
///
/// A bulkhead keeps one slow or flooded dependency (or tenant) from taking
/// every worker: at most `max_concurrent` calls hold a permit at a time, at
/// most `max_queued` callers wait for one (first come, first served), and
/// everyone else is refused at once with `resilience_code::bulkhead_full`
/// (canonical `resource_exhausted`: retry later, with backoff), an error that
/// names the bulkhead and the key. A `keyed_bulkhead` gives each key (tenant,
/// resource) its own bulkhead, so a flood on one key cannot use up the slots
/// or the queue of another.
///
/// @code
///   keel::keyed_bulkhead tenants{keel::bulkhead_config{.name = "db", .max_concurrent = 8,
///                                                      .max_queued = 32}};
///   // Synchronous: a permit or an immediate refusal.
///   if (auto p = tenants.try_acquire(tenant)) {
///     call_db();        // the slot is released when `*p` is destroyed
///   } else {
///     return p.error(); // bulkhead_full: "bulkhead db full for key acme: ..."
///   }
///   // Asynchronous (actors): the callback runs once, with a permit (at once or
///   // when a slot frees up) or with the refusal; it never blocks the caller.
///   tenants.acquire(tenant, [self](keel::expected<keel::permit> p) {
///     caf::anon_send(self, admitted_atom::value, std::make_shared<...>(std::move(p)));
///   });
/// @endcode
///
/// Waiters have no timer thread: with `max_wait` set, a waiter older than
/// `max_wait` is refused when a slot is handed over or when someone calls
/// `expire()` (e.g. from an actor's periodic tick). The clock is injectable, so
/// tests move time by hand.
///
/// Callbacks run outside the bulkhead's lock, on the thread that admitted or
/// refused them (the caller of `acquire`, the thread releasing a permit, or the
/// caller of `expire`). They must not throw and should be short (send a
/// message); a callback that releases its permit at once does not recurse
/// (hand-overs on one thread are queued and run in a loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/value.hpp>

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"
#include "keel/resilience/clock.hpp"
#include "keel/resilience/codes.hpp"

namespace keel {

namespace detail {
struct bulkhead_core;
} // namespace detail

/// The configuration of a bulkhead (plain values, also loadable from JSON).
struct bulkhead_config {
  /// Named in refusals and statistics.
  std::string name = "bulkhead";
  /// Calls holding a permit at a time (at least 1).
  uint32_t max_concurrent = 16;
  /// Callers waiting for a permit (asynchronous `acquire` only); 0 = refuse
  /// at once when every slot is taken.
  uint32_t max_queued = 0;
  /// Longest wait in the queue; 0 = no limit.
  std::chrono::nanoseconds max_wait{0};
};

/// Reads a bulkhead configuration; every field optional:
///
///     {"name": "db", "max_concurrent": 8, "max_queued": 32, "max_wait_ms": 250}
///
/// Errors are `invalid_argument` naming the field under `path`.
expected<bulkhead_config> bulkhead_config_from_json(const boost::json::value& v,
                                                    const std::string& path = "bulkhead");

/// Parses JSON text and reads it.
expected<bulkhead_config> bulkhead_config_from_json_string(std::string_view text);

/// What a bulkhead holds and has done, for dashboards and tests.
struct bulkhead_stats {
  /// Permits held now.
  uint32_t in_use = 0;
  /// Callers waiting now.
  uint32_t queued = 0;
  /// Permits granted so far (at once or after waiting).
  uint64_t admitted = 0;
  /// Callers refused so far (full, queue full, or waited too long).
  uint64_t rejected = 0;
  /// Of `rejected`: waiters refused after `max_wait`.
  uint64_t expired = 0;
};

/// A slot in a bulkhead, held until destroyed or `release()`d (RAII).
/// Move-only; keeps its bulkhead's state alive, so it may outlive the
/// `bulkhead` object it came from.
class permit {
public:
  // -- constructors -----------------------------------------------------------

  /// An empty permit (holds nothing).
  permit() noexcept = default;

  permit(permit&& other) noexcept : core_(std::move(other.core_)) {}

  permit& operator=(permit&& other) noexcept {
    if (this != &other) {
      release();
      core_ = std::move(other.core_);
    }
    return *this;
  }

  permit(const permit&) = delete;
  permit& operator=(const permit&) = delete;

  ~permit() { release(); }

  // -- properties -------------------------------------------------------------

  /// True while the permit holds a slot.
  bool valid() const noexcept { return core_ != nullptr; }

  explicit operator bool() const noexcept { return valid(); }

  // -- modifiers --------------------------------------------------------------

  /// Gives the slot back (to the first waiter, if any); idempotent.
  void release() noexcept;

private:
  friend struct detail::bulkhead_core;
  friend class bulkhead;

  explicit permit(std::shared_ptr<detail::bulkhead_core> core) noexcept : core_(std::move(core)) {}

  std::shared_ptr<detail::bulkhead_core> core_;
};

/// Called once with a permit or with the refusal.
using bulkhead_waiter = std::function<void(expected<permit>)>;

/// What `acquire` did at once. "Ran" means: before `acquire` returned, or,
/// when `acquire` is called from inside a bulkhead callback, right after that
/// callback on the same thread.
enum class admission : uint8_t {
  /// The callback ran with a permit.
  admitted,
  /// The caller waits in the queue; the callback runs later.
  queued,
  /// The callback ran with `bulkhead_full`.
  rejected,
};

std::string_view to_string(admission a) noexcept;

/// One bulkhead; thread-safe. See the file overview.
class bulkhead {
public:
  using clock_type = std::chrono::steady_clock;
  using clock_fn = resilience_clock;

  // -- constructors -----------------------------------------------------------

  /// A bulkhead for `key` (named in refusals; may be empty) reading time
  /// from `clock` (default `steady_clock::now`).
  explicit bulkhead(bulkhead_config cfg, std::string key = {}, clock_fn clock = {});

  bulkhead(const bulkhead&) = delete;
  bulkhead& operator=(const bulkhead&) = delete;

  /// Refuses every waiter still queued (`bulkhead_full`, "shut down").
  ~bulkhead();

  // -- acquiring --------------------------------------------------------------

  /// A permit if a slot is free now, else `bulkhead_full` at once (this
  /// form never waits, so it never queues).
  expected<permit> try_acquire();

  /// A permit through `on_done`: at once if a slot is free, later if the
  /// queue has room (FIFO), else a refusal at once. Never blocks.
  admission acquire(bulkhead_waiter on_done);

  /// Refuses waiters that have waited `max_wait` or longer at `now`;
  /// returns how many.
  size_t expire(clock_type::time_point now);

  /// `expire(clock())`.
  size_t expire();

  // -- properties -------------------------------------------------------------

  bulkhead_stats stats() const;

  const bulkhead_config& config() const noexcept;

  const std::string& key() const noexcept;

private:
  std::shared_ptr<detail::bulkhead_core> core_;
};

/// One bulkhead per key, made on first use with the default configuration or
/// the key's override; thread-safe. Keys are independent: each has its own
/// slots, queue and counters.
class keyed_bulkhead {
public:
  using clock_type = bulkhead::clock_type;
  using clock_fn = bulkhead::clock_fn;

  // -- constructors -----------------------------------------------------------

  explicit keyed_bulkhead(bulkhead_config defaults, clock_fn clock = {});

  keyed_bulkhead(const keyed_bulkhead&) = delete;
  keyed_bulkhead& operator=(const keyed_bulkhead&) = delete;

  // -- configuration ----------------------------------------------------------

  /// Gives `key` its own configuration (its `name` is kept as given). Applies
  /// to the key's bulkhead when it is made: call before first use, or after
  /// `trim()` dropped it.
  void set_override(std::string key, bulkhead_config cfg);

  // -- acquiring --------------------------------------------------------------

  /// `bulkhead::try_acquire` on `key`'s bulkhead.
  expected<permit> try_acquire(std::string_view key);

  /// `bulkhead::acquire` on `key`'s bulkhead.
  admission acquire(std::string_view key, bulkhead_waiter on_done);

  /// `bulkhead::expire(now)` on every key; returns how many waiters were refused.
  size_t expire(clock_type::time_point now);

  // -- properties -------------------------------------------------------------

  /// The counters of `key` (zeros for a key never used).
  bulkhead_stats stats(std::string_view key) const;

  /// The counters of every key, by key.
  std::map<std::string, bulkhead_stats, std::less<>> snapshot() const;

  /// Keys with a bulkhead now.
  size_t size() const;

  // -- memory -----------------------------------------------------------------

  /// Drops the bulkheads of idle keys (nothing in use, nothing queued) and
  /// their counters; returns how many. Permits still held stay valid.
  size_t trim();

private:
  std::shared_ptr<bulkhead> at(std::string_view key);

  bulkhead_config defaults_;
  clock_fn clock_;
  mutable std::mutex mtx_;
  std::map<std::string, std::shared_ptr<bulkhead>, std::less<>> heads_;
  std::map<std::string, bulkhead_config, std::less<>> overrides_;
};

} // namespace keel
