#pragma once

// Shared by the event bus and choreography tests: the actor system config, a
// polling helper and small participant actors reacting to bus events.

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "keel/bus/event_bus.hpp"
#include "keel/error/caf.hpp"

namespace keel_test::choreo {

using namespace std::chrono_literals;

struct config : caf::actor_system_config {
  config() {
    keel::add_error_types(*this);
    keel::bus::add_bus_types(*this);
    set("scheduler.max-threads", 2);
    set("logger.file-verbosity", caf::atom("quiet"));
  }
};

/// Polls `done` until it holds or `limit` passes (a hang guard, not a timing
/// assertion).
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

/// What the participants of one test saw, shared with the test.
struct probe {
  std::mutex mtx;
  /// Step names of the compensation events received, in arrival order
  /// (repeats included).
  std::vector<std::string> compensations;
  /// Their event ids.
  std::vector<std::string> compensation_ids;
  /// Undos actually done (a repeated request is acknowledged, not redone).
  std::vector<std::string> undone;
  /// Forward steps run.
  std::vector<std::string> forward;

  std::vector<std::string> compensations_copy() {
    std::lock_guard<std::mutex> guard{mtx};
    return compensations;
  }
  std::vector<std::string> compensation_ids_copy() {
    std::lock_guard<std::mutex> guard{mtx};
    return compensation_ids;
  }
  std::vector<std::string> undone_copy() {
    std::lock_guard<std::mutex> guard{mtx};
    return undone;
  }
  size_t forward_count() {
    std::lock_guard<std::mutex> guard{mtx};
    return forward.size();
  }
};

enum class forward_mode { succeed, fail, silent };

/// A participant owning step `step` (conventional event names "<step>.done",
/// ...): it runs when it sees `react_to`.
struct participant_spec {
  std::string topic = "orders";
  std::string step;
  std::string react_to;
  forward_mode mode = forward_mode::succeed;
  /// Publishes its done event twice with one id (an at-least-once sender).
  bool duplicate_done = false;
  /// Acknowledges compensation requests (switchable while the test runs).
  std::shared_ptr<std::atomic<bool>> ack = std::make_shared<std::atomic<bool>>(true);
};

inline caf::behavior participant(caf::event_based_actor* self, caf::actor bus,
                                 participant_spec spec, std::shared_ptr<probe> p) {
  auto seen = std::make_shared<std::set<std::string>>();
  self->set_default_handler(caf::drop);
  return {[=](const keel::bus::event& e) {
    if (e.type == spec.react_to) {
      if (!seen->insert(e.id).second)
        return; // idempotent by event id
      {
        std::lock_guard<std::mutex> guard{p->mtx};
        p->forward.push_back(spec.step);
      }
      switch (spec.mode) {
        case forward_mode::succeed: {
          auto out = keel::bus::make_event(spec.topic, spec.step + ".done", e.saga_id,
                                           R"({")" + spec.step + R"(_ref": ")" + e.saga_id + "/"
                                               + spec.step + R"("})");
          keel::bus::publish(bus, out);
          if (spec.duplicate_done)
            keel::bus::publish(bus, out);
          break;
        }
        case forward_mode::fail:
          keel::bus::publish(bus, keel::bus::make_event(spec.topic, spec.step + ".failed",
                                                        e.saga_id, R"({"error": "out of stock"})"));
          break;
        case forward_mode::silent:
          break;
      }
    } else if (e.type == spec.step + ".compensate") {
      bool first = seen->insert(e.id).second;
      {
        std::lock_guard<std::mutex> guard{p->mtx};
        p->compensations.push_back(spec.step);
        p->compensation_ids.push_back(e.id);
        if (first)
          p->undone.push_back(spec.step);
      }
      if (spec.ack->load())
        keel::bus::publish(
            bus, keel::bus::make_event(spec.topic, spec.step + ".compensated", e.saga_id));
    }
  }};
}

} // namespace keel_test::choreo
