#include "keel/resilience/breaker_actor.hpp"

#include <set>
#include <stdexcept>
#include <string>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/detail/behavior_impl.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>

#include "keel/error/caf.hpp"
#include "keel/error/panic.hpp"

namespace keel {

namespace {

class breaker_actor;

/// Takes a forwarded call's reply, whatever its type. CAF 0.17 has no
/// catch-all for response handlers of event-based actors (`others >> f` is for
/// blocking actors only; an unmatched response becomes `unexpected_response`
/// and its content is lost), so the breaker installs its own behavior whose
/// `invoke` accepts every message: the reply, or the error CAF delivers for a
/// timeout or a dead dependency. This relies on `behavior(impl_ptr)`, which
/// CAF 0.17 documents as private API; keel pins CAF 0.17.6.
class reply_handler final : public caf::detail::behavior_impl {
public:
  reply_handler(breaker_actor* self, breaker_permit permit, caf::response_promise rp,
                circuit_breaker::time_point start)
      : self_(self), permit_(std::move(permit)), rp_(std::move(rp)), start_(start) {
    begin_ = end_ = nullptr; // no match cases: invoke below does the matching
  }

  caf::match_case::result invoke(caf::detail::invoke_result_visitor& f,
                                 caf::type_erased_tuple& xs) override;

private:
  breaker_actor* self_;
  breaker_permit permit_;
  caf::response_promise rp_;
  circuit_breaker::time_point start_;
};

/// The breaker actor. Subscribers are kept as addresses (weak references) and
/// monitored, as in the event bus: the breaker never keeps one alive and a
/// subscriber holding the breaker's handle makes no reference cycle.
class breaker_actor final : public caf::event_based_actor {
public:
  breaker_actor(caf::actor_config& cfg, caf::actor dependency, breaker_actor_config bcfg)
      : caf::event_based_actor(cfg), dependency_(std::move(dependency)),
        timeout_(bcfg.request_timeout), breaker_(std::move(bcfg.breaker)) {}

  const char* name() const override { return "keel.breaker"; }

  caf::behavior make_behavior() override {
    set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
      return to_caf_error(make_panic_error(ep)); // a bug in the breaker actor: fail loudly
    });
    set_default_handler([](caf::scheduled_actor* p, caf::message_view& x) {
      return static_cast<breaker_actor*>(p)->forward(x);
    });
    set_down_handler([](caf::scheduled_actor* p, caf::down_msg& x) {
      static_cast<breaker_actor*>(p)->drop_subscriber(x.source);
    });
    // Transitions happen inside this actor's handlers (it alone uses the
    // breaker), so the listener runs on the actor's thread and may send.
    breaker_.on_state_change([this](const state_change& e) {
      breaker_event ev{breaker_.name(), e.from, e.to, e.reason, e.detail, e.sequence};
      for (const auto& addr : subscribers_)
        if (auto who = caf::actor_cast<caf::actor>(addr))
          send(who, ev);
    });
    return {
        [this](breaker_subscribe_atom, const caf::actor& who) {
          if (who && subscribers_.insert(who.address()).second)
            monitor(who);
        },
        [this](breaker_unsubscribe_atom, const caf::actor& who) { drop_subscriber(who.address()); },
        [this](breaker_metrics_atom) { return breaker_.metrics(); },
        [this](breaker_force_open_atom) { breaker_.force_open(); },
        [this](breaker_disable_atom) { breaker_.disable(); },
        [this](breaker_reset_atom) { breaker_.reset(); },
    };
  }

  void on_reply(breaker_permit& permit, caf::response_promise& rp,
                circuit_breaker::time_point start, caf::message reply) {
    auto elapsed = breaker_.now() - start;
    if (reply.match_elements<caf::error>()) {
      auto& err = reply.get_as<caf::error>(0);
      permit.record_failure(from_caf_error(err), elapsed);
      rp.deliver(err);
      return;
    }
    if (reply.match_elements<error>() && reply.get_as<error>(0))
      permit.record_failure(reply.get_as<error>(0), elapsed);
    else
      permit.record_success(elapsed);
    rp.deliver(std::move(reply));
  }

private:
  caf::result<caf::message> forward(caf::message_view& x) {
    auto permit = breaker_.try_acquire();
    if (!permit)
      return to_caf_error(permit.error());
    auto rp = make_response_promise();
    auto start = breaker_.now();
    auto handle = request(dependency_, caf::duration{timeout_}, x.move_content_to_message());
    caf::behavior::impl_ptr handler{
        caf::make_counted<reply_handler>(this, std::move(*permit), rp, start)};
    add_multiplexed_response_handler(handle.id(), caf::behavior{std::move(handler)});
    return rp;
  }

  void drop_subscriber(const caf::actor_addr& addr) {
    if (subscribers_.erase(addr) > 0)
      demonitor(addr);
  }

  caf::actor dependency_;
  std::chrono::nanoseconds timeout_;
  circuit_breaker breaker_;
  std::set<caf::actor_addr> subscribers_;
};

caf::match_case::result reply_handler::invoke(caf::detail::invoke_result_visitor& f,
                                              caf::type_erased_tuple& xs) {
  self_->on_reply(permit_, rp_, start_, caf::message::copy(xs));
  f(); // a handler without result
  return caf::match_case::match;
}

} // namespace

void add_breaker_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<breaker_event>("keel::breaker_event");
  cfg.add_message_type<breaker_metrics>("keel::breaker_metrics");
}

caf::actor spawn_breaker_actor(caf::actor_system& sys, caf::actor dependency,
                               breaker_actor_config cfg) {
  if (auto err = validate(cfg.breaker))
    throw std::invalid_argument(std::string{err.message()});
  return sys.spawn<breaker_actor>(std::move(dependency), std::move(cfg));
}

} // namespace keel
