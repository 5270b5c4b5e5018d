#pragma once

// Shared by the writer tests: the actor system, and a journal whose commits
// can be held at a gate, so that tests decide which batches queue up behind
// a busy writer instead of hoping for a race. Timeouts here are hang guards
// only; no test asserts on durations.

#include "helpers.hpp"

#include "keel/error/caf.hpp"
#include "keel/store/writer.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace keel_test {

using namespace std::chrono_literals;

/// Hang guard for every wait of the writer tests.
inline constexpr auto hang_guard = 60s;

struct writer_config : caf::actor_system_config {
  writer_config() {
    keel::add_error_types(*this);
    set("scheduler.max-threads", 2);
  }
};

/// Forwards to another journal; `close()` makes the next `commit_group` wait
/// until `open()`, and `throw_next()` makes it throw.
class gated_journal final : public keel::store::journal {
public:
  explicit gated_journal(std::shared_ptr<keel::store::journal> inner) : inner_(std::move(inner)) {}

  void close() {
    std::lock_guard guard{mtx_};
    closed_ = true;
  }

  void open() {
    std::lock_guard guard{mtx_};
    closed_ = false;
    cv_.notify_all();
  }

  /// Waits until a commit waits at the closed gate.
  bool wait_until_blocked() {
    std::unique_lock lock{mtx_};
    return cv_.wait_for(lock, hang_guard, [this] { return blocked_; });
  }

  void throw_next() {
    std::lock_guard guard{mtx_};
    throw_next_ = true;
  }

  std::vector<keel::error>
  commit_group(std::span<const keel::store::write_batch* const> batches) override {
    {
      std::unique_lock lock{mtx_};
      if (std::exchange(throw_next_, false))
        throw std::runtime_error("disk on fire");
      if (closed_) {
        blocked_ = true;
        cv_.notify_all();
        // Bounded, so that a failed test cannot hang the actor system.
        cv_.wait_for(lock, hang_guard, [this] { return !closed_; });
        blocked_ = false;
      }
    }
    return inner_->commit_group(batches);
  }

  keel::expected<std::optional<keel::store::saga_record>> saga(std::string_view id) override {
    return inner_->saga(id);
  }
  keel::expected<std::vector<keel::store::saga_record>>
  sagas(const keel::store::saga_filter& f = {}) override {
    return inner_->sagas(f);
  }
  keel::expected<std::vector<keel::store::event_record>>
  events(std::string_view stream, uint64_t after = 0, size_t limit = 0) override {
    return inner_->events(stream, after, limit);
  }
  keel::expected<std::vector<keel::store::dlq_entry>> dlq(std::string_view queue = {},
                                                          size_t limit = 0) override {
    return inner_->dlq(queue, limit);
  }
  keel::expected<std::optional<std::string>> checkpoint(std::string_view name) override {
    return inner_->checkpoint(name);
  }
  keel::expected<bool> processed(std::string_view consumer, std::string_view id) override {
    return inner_->processed(consumer, id);
  }
  keel::expected<std::optional<keel::store::lease_record>> lease(std::string_view name) override {
    return inner_->lease(name);
  }
  std::string describe() const override { return "gated " + inner_->describe(); }

private:
  std::shared_ptr<keel::store::journal> inner_;
  std::mutex mtx_;
  std::condition_variable cv_;
  bool closed_ = false;
  bool blocked_ = false;
  bool throw_next_ = false;
};

/// A batch that appends event `n` to `stream`.
inline keel::store::write_batch event_batch(const std::string& stream, int n) {
  keel::store::write_batch b;
  b.append_event(stream, "tick", std::to_string(n));
  return b;
}

/// Asks `writer` for its statistics.
inline keel::store::writer_stats stats_of(caf::scoped_actor& self, const caf::actor& writer) {
  keel::store::writer_stats result;
  self->request(writer, hang_guard, keel::store::writer_stats_atom::value)
      .receive([&](const keel::store::writer_stats& s) { result = s; },
               [&](const caf::error& e) { ADD_FAILURE() << self->system().render(e); });
  return result;
}

/// Waits for the reply to a commit request.
template <class Handle>
keel::error reply_of(Handle& h) {
  keel::error result = keel::internal_error("no reply");
  h.receive([&](const keel::error& e) { result = e; },
            [&](const caf::error& e) { result = keel::from_caf_error(e); });
  return result;
}

} // namespace keel_test
