#include "keel/bus/event_bus.hpp"

#include <array>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "keel/error/caf.hpp"
#include "keel/error/panic.hpp"

namespace keel::bus {

namespace {

/// The bus actor. Subscribers are kept as addresses (weak references): the bus
/// never keeps an actor alive, and a subscriber holding the bus's handle makes
/// no reference cycle (which would hang the actor system's shutdown). Every
/// subscriber is monitored once, whatever the number of its topics.
class bus_actor final : public caf::event_based_actor {
public:
  explicit bus_actor(caf::actor_config& cfg) : caf::event_based_actor(cfg) {}

  const char* name() const override { return "keel.event_bus"; }

  caf::behavior make_behavior() override {
    set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
      return to_caf_error(make_panic_error(ep)); // a bug in the bus: fail loudly
    });
    // Subscribers may answer an event; their replies are of no interest.
    set_default_handler(caf::drop);
    set_down_handler([](caf::scheduled_actor* p, caf::down_msg& x) {
      static_cast<bus_actor*>(p)->drop_subscriber(x.source);
    });
    return {
        [this](subscribe_atom, std::string& topic, const caf::actor& who) {
          if (!who)
            return;
          auto addr = who.address();
          if (topics_[topic].insert(addr).second && monitored_.insert(addr).second)
            monitor(addr);
        },
        [this](unsubscribe_atom, const std::string& topic, const caf::actor& who) {
          if (topic.empty()) {
            drop_subscriber(who.address());
            return;
          }
          if (auto i = topics_.find(topic); i != topics_.end()) {
            i->second.erase(who.address());
            if (i->second.empty())
              topics_.erase(i);
          }
        },
        [this](publish_atom, const event& e) {
          auto i = topics_.find(e.topic);
          if (i == topics_.end())
            return;
          for (const auto& addr : i->second)
            if (auto who = caf::actor_cast<caf::actor>(addr))
              send(who, e);
        },
        [this](subscribers_atom, const std::string& topic) -> size_t {
          auto i = topics_.find(topic);
          return i == topics_.end() ? 0 : i->second.size();
        },
    };
  }

private:
  void drop_subscriber(const caf::actor_addr& addr) {
    for (auto i = topics_.begin(); i != topics_.end();) {
      for (auto j = i->second.begin(); j != i->second.end();) {
        if (*j == addr)
          j = i->second.erase(j);
        else
          ++j;
      }
      i = i->second.empty() ? topics_.erase(i) : std::next(i);
    }
    if (monitored_.erase(addr) > 0)
      demonitor(addr);
  }

  std::map<std::string, std::set<caf::actor_addr>> topics_;
  std::set<caf::actor_addr> monitored_;
};

} // namespace

void add_bus_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<event>("keel::bus::event");
}

caf::actor spawn_event_bus(caf::actor_system& sys) {
  return sys.spawn<bus_actor>();
}

std::string make_event_id() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t half = 0; half < 2; ++half) {
    auto bits = gen();
    for (size_t k = 0; k < 16; ++k, bits >>= 4)
      out[half * 16 + k] = digits[bits & 0xf];
  }
  return out;
}

event make_event(std::string topic, std::string type, std::string saga_id, std::string payload) {
  return event{std::move(topic), std::move(type), std::move(saga_id), make_event_id(),
               std::move(payload)};
}

void publish(const caf::actor& bus, event e) {
  caf::anon_send(bus, publish_atom::value, std::move(e));
}

void subscribe(const caf::actor& bus, std::string topic, const caf::actor& subscriber) {
  caf::anon_send(bus, subscribe_atom::value, std::move(topic), subscriber);
}

void unsubscribe(const caf::actor& bus, std::string topic, const caf::actor& subscriber) {
  caf::anon_send(bus, unsubscribe_atom::value, std::move(topic), subscriber);
}

} // namespace keel::bus
