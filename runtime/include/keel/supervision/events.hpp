#pragma once

/// @file
/// What supervision tells the outside world: structured events and dead
/// letters.
///
/// Every decision a supervisor takes (a failure seen, a restart with its
/// attempt and backoff delay, a resume, a stop, an escalation) and every
/// message a stage gives up on (quarantine, stash overflow, shut down before it
/// ran) is reported as a value. A service subscribes through an `event_sink`
/// (`event_hub` fans out to callbacks, `event_recorder` keeps them) and reads
/// poison messages from a `dead_letter_sink` (`memory_dead_letter_sink` now; the
/// persistent DLQ comes with the journal). Sinks are called from actor threads
/// and must be thread-safe; the ones here are.

#include "keel/error/error.hpp"
#include "keel/supervision/decider.hpp"

#include <caf/message.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

/// What happened.
enum class event_kind : uint8_t {
  /// A child (re)started successfully; `attempt` is its restart count.
  started,
  /// A child failed; `error` is the failure, `decision` what was decided.
  failed,
  /// A child is being restarted: `attempt` is its restart count (1 for the
  /// first restart), `delay` the backoff before the new instance starts.
  restarted,
  /// A child resumes with its state kept.
  resumed,
  /// A child was stopped for good (decider, restart type, or shutdown).
  stopped,
  /// A supervisor gave up (restart intensity exceeded or a decider said so)
  /// and failed to its parent; `error` says why.
  escalated,
  /// A message was quarantined after `attempt` failed attempts; `error` is
  /// the last failure.
  quarantined,
  /// A message was refused or dropped because the stage's stash was full.
  stash_overflow,
  /// A message could not be handled: no handler matched it, or the stage
  /// stopped before it ran.
  undeliverable,
};

/// "started", "failed", ...
std::string_view to_string(event_kind k) noexcept;

/// One supervision event.
struct supervision_event {
  /// Wall-clock time of the event.
  std::chrono::system_clock::time_point time;
  /// Path of the supervisor that decided, e.g. "root/ingest".
  std::string supervisor;
  /// Path of the child concerned, e.g. "root/ingest/parse"; for `escalated`
  /// the supervisor itself.
  std::string child;
  event_kind kind = event_kind::failed;
  /// The directive taken (meaningful for `failed`).
  directive decision = directive::restart;
  /// The failure, or the reason a message was dead-lettered.
  keel::error error;
  /// Restart count (started, restarted) or attempts of a message
  /// (quarantined).
  uint32_t attempt = 0;
  /// Backoff before a restart.
  std::chrono::nanoseconds delay{0};
};

/// "12:00:01.123 root/ingest: root/ingest/parse failed -> restart: panic: ..."
std::string to_string(const supervision_event& e);

/// Receives supervision events. Called from actor threads: must be
/// thread-safe and should be quick.
class event_sink {
public:
  virtual ~event_sink() = default;
  virtual void on_event(const supervision_event& e) = 0;
};

/// An event sink that forwards every event to the callbacks subscribed to it.
class event_hub final : public event_sink {
public:
  using callback = std::function<void(const supervision_event&)>;

  /// Adds `f`; returns a token for `unsubscribe`.
  uint64_t subscribe(callback f);

  /// Removes the subscription `token` (no-op when unknown).
  void unsubscribe(uint64_t token);

  void on_event(const supervision_event& e) override;

private:
  std::mutex mtx_;
  uint64_t next_ = 1;
  // Copy-on-write, so that callbacks run without the lock held.
  std::shared_ptr<const std::vector<std::pair<uint64_t, callback>>> subs_ =
      std::make_shared<const std::vector<std::pair<uint64_t, callback>>>();
};

/// An event sink that keeps every event (for tests, and for services that
/// poll).
class event_recorder final : public event_sink {
public:
  void on_event(const supervision_event& e) override;

  /// A copy of all events so far, in arrival order.
  std::vector<supervision_event> events() const;

  /// Number of events of kind `k` (optionally only for child path `child`).
  size_t count(event_kind k, std::string_view child = {}) const;

private:
  mutable std::mutex mtx_;
  std::vector<supervision_event> events_;
};

/// A message a stage gave up on, with everything needed to understand and
/// replay it.
struct dead_letter {
  /// Path of the stage, e.g. "root/ingest/parse".
  std::string stage;
  /// The message itself.
  caf::message payload;
  /// Why: the last failure (quarantine), or a `resource_exhausted` (stash
  /// full), `unavailable` (stage stopped) or `unimplemented` (no handler) error.
  keel::error error;
  /// How many times a handler ran on it (0 when it never ran).
  uint32_t attempts = 0;
  /// Wall-clock time it was dead-lettered.
  std::chrono::system_clock::time_point time;
  /// True when the sender was waiting for a reply (it got `error`).
  bool was_request = false;
};

/// Where stages put the messages they give up on. Called from actor threads:
/// must be thread-safe.
class dead_letter_sink {
public:
  virtual ~dead_letter_sink() = default;
  virtual void put(dead_letter letter) = 0;
};

/// A dead-letter sink in memory (the default when none is configured).
class memory_dead_letter_sink final : public dead_letter_sink {
public:
  void put(dead_letter letter) override;

  /// A copy of all entries, in arrival order.
  std::vector<dead_letter> entries() const;

  /// Number of entries.
  size_t size() const;

private:
  mutable std::mutex mtx_;
  std::vector<dead_letter> entries_;
};

} // namespace keel
