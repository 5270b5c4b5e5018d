// keel's event bus: topics, delivery, unsubscribe, dead subscribers, wire form.

#include "keel/bus/event_bus.hpp"

#include <set>

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include "choreography_helpers.hpp"

namespace {

using namespace keel_test::choreo;
using keel::bus::event;

/// A subscriber that forwards every event it gets to `sink` (a scoped actor).
caf::behavior forwarder(caf::event_based_actor* self, caf::actor sink) {
  self->set_default_handler(caf::drop);
  return {[=](const event& e) { self->send(sink, e); }};
}

class EventBus : public ::testing::Test {
protected:
  config cfg;
  caf::actor_system sys{cfg};
  caf::actor bus = keel::bus::spawn_event_bus(sys);

  size_t subscribers(const std::string& topic) {
    caf::scoped_actor self{sys};
    size_t n = 0;
    self->request(bus, 10s, keel::bus::subscribers_atom::value, topic)
        .receive([&](size_t x) { n = x; }, [](caf::error&) { ADD_FAILURE() << "no reply"; });
    return n;
  }

  void sync_subscribe(const std::string& topic, const caf::actor& who) {
    caf::scoped_actor self{sys};
    self->request(bus, 10s, keel::bus::subscribe_atom::value, topic, who)
        .receive([] {}, [](caf::error&) { ADD_FAILURE() << "subscribe failed"; });
  }

  ~EventBus() override { caf::anon_send_exit(bus, caf::exit_reason::user_shutdown); }
};

TEST_F(EventBus, DeliversToEverySubscriberOfTheTopicOnly) {
  caf::scoped_actor sink{sys};
  auto a = sys.spawn(forwarder, caf::actor{sink});
  auto b = sys.spawn(forwarder, caf::actor{sink});
  auto other = sys.spawn(forwarder, caf::actor{sink});
  sync_subscribe("orders", a);
  sync_subscribe("orders", b);
  sync_subscribe("orders", b); // twice: still one delivery
  sync_subscribe("billing", other);
  EXPECT_EQ(subscribers("orders"), 2u);
  auto e = keel::bus::make_event("orders", "order.placed", "o-1", R"({"amount": 3})");
  keel::bus::publish(bus, e);
  std::vector<event> got;
  for (int i = 0; i < 2; ++i)
    sink->receive([&](const event& x) { got.push_back(x); },
                  caf::after(10s) >> [] { ADD_FAILURE() << "no event"; });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], e);
  EXPECT_EQ(got[1], e);
  // Nothing else arrives (the billing subscriber saw nothing).
  bool extra = false;
  sink->receive([&](const event&) { extra = true; }, caf::after(50ms) >> [] {});
  EXPECT_FALSE(extra);
  for (auto& x : {a, b, other})
    caf::anon_send_exit(x, caf::exit_reason::user_shutdown);
}

TEST_F(EventBus, UnsubscribeStopsDelivery) {
  caf::scoped_actor sink{sys};
  auto a = sys.spawn(forwarder, caf::actor{sink});
  sync_subscribe("orders", a);
  sync_subscribe("billing", a);
  {
    caf::scoped_actor self{sys};
    self->request(bus, 10s, keel::bus::unsubscribe_atom::value, std::string{"orders"}, a)
        .receive([] {}, [](caf::error&) { ADD_FAILURE(); });
  }
  EXPECT_EQ(subscribers("orders"), 0u);
  EXPECT_EQ(subscribers("billing"), 1u);
  {
    caf::scoped_actor self{sys};
    // Empty topic: every topic.
    self->request(bus, 10s, keel::bus::unsubscribe_atom::value, std::string{}, a)
        .receive([] {}, [](caf::error&) { ADD_FAILURE(); });
  }
  EXPECT_EQ(subscribers("billing"), 0u);
  keel::bus::publish(bus, keel::bus::make_event("orders", "x", "o-1"));
  bool got = false;
  sink->receive([&](const event&) { got = true; }, caf::after(50ms) >> [] {});
  EXPECT_FALSE(got);
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

TEST_F(EventBus, DropsDeadSubscribers) {
  caf::scoped_actor sink{sys};
  auto a = sys.spawn(forwarder, caf::actor{sink});
  sync_subscribe("orders", a);
  sync_subscribe("billing", a);
  caf::anon_send_exit(a, caf::exit_reason::kill);
  a = nullptr;
  EXPECT_TRUE(
      eventually([&] { return subscribers("orders") == 0 && subscribers("billing") == 0; }));
  keel::bus::publish(bus, keel::bus::make_event("orders", "x", "o-1")); // no one: no crash
  EXPECT_EQ(subscribers("orders"), 0u);
}

TEST_F(EventBus, NonActorHelpersSubscribeAndPublish) {
  caf::scoped_actor sink{sys};
  auto a = sys.spawn(forwarder, caf::actor{sink});
  keel::bus::subscribe(bus, "orders", a);
  keel::bus::publish(bus, keel::bus::make_event("orders", "t", "o-9"));
  sink->receive([](const event& e) { EXPECT_EQ(e.saga_id, "o-9"); },
                caf::after(10s) >> [] { ADD_FAILURE() << "no event"; });
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

TEST(EventBusEvent, IdsAreUnique) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i)
    ids.insert(keel::bus::make_event_id());
  EXPECT_EQ(ids.size(), 1000u);
  EXPECT_EQ(keel::bus::make_event_id().size(), 32u);
}

TEST(EventBusEvent, SerializesUnderItsStableName) {
  config cfg;
  caf::actor_system sys{cfg};
  EXPECT_EQ(sys.types().portable_name(0, &typeid(event)), "keel::bus::event");
  event in{"orders", "charge.done", "o-1", "id-1", R"({"x": 1})"};
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  ASSERT_FALSE(sink(in));
  event out;
  caf::binary_deserializer source{sys, buf};
  ASSERT_FALSE(source(out));
  EXPECT_EQ(in, out);
}

} // namespace
