// The payment saga's steps, and the delayer actor.

#include "payment/flow.hpp"

#include <map>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

namespace payment {

// -- delayer -------------------------------------------------------------------------

namespace {

using fire_atom = caf::atom_constant<caf::atom("pay_fire")>;

struct delayer_state {
  uint64_t next = 0;
  std::unordered_map<uint64_t, caf::response_promise> timed;
  std::vector<caf::response_promise> parked;
  static inline const char* name = "payment.delayer";
};

caf::behavior delayer(caf::stateful_actor<delayer_state>* self) {
  return {
      [=](delay_atom, int64_t ms) -> caf::response_promise {
        auto rp = self->make_response_promise();
        auto id = self->state.next++;
        self->state.timed.emplace(id, rp);
        self->delayed_send(self, std::chrono::milliseconds(ms), fire_atom::value, id);
        return rp;
      },
      [=](fire_atom, uint64_t id) {
        if (auto i = self->state.timed.find(id); i != self->state.timed.end()) {
          i->second.deliver(ok_atom::value);
          self->state.timed.erase(i);
        }
      },
      [=](park_atom) -> caf::response_promise {
        self->state.parked.push_back(self->make_response_promise());
        return self->state.parked.back();
      },
      [=](release_atom) {
        auto parked = std::move(self->state.parked);
        self->state.parked.clear();
        for (auto& rp : parked)
          rp.deliver(ok_atom::value);
        return parked.size();
      },
  };
}

} // namespace

caf::actor spawn_delayer(caf::actor_system& sys) {
  return sys.spawn(delayer);
}

// -- order data ------------------------------------------------------------------------

keel::saga::data to_data(const order& o) {
  std::map<std::string, int32_t> items;
  for (const auto& i : o.items)
    items[i.sku] += i.qty;
  keel::saga::data d;
  d.set("amount", o.amount).set("items", items);
  return d;
}

keel::expected<order> from_data(const std::string& id, const keel::saga::data& d) {
  auto amount = d.get<int64_t>("amount");
  if (!amount)
    return keel::wrap(amount.error(), "order " + id);
  auto items = d.get<std::map<std::string, int32_t>>("items");
  if (!items)
    return keel::wrap(items.error(), "order " + id);
  order o{id, *amount, {}};
  for (auto& [sku, qty] : *items)
    o.items.push_back({sku, qty});
  return o;
}

// -- steps -----------------------------------------------------------------------------

namespace {

using ctx_ptr = std::shared_ptr<keel::saga::step_context>;

/// The ledger operation of an action.
using effect = std::function<keel::expected<void>(keel::saga::step_context&)>;

/// Runs `fn` under the fault injector: latency first (asynchronously when
/// there is a delayer), then the injected failure or the effect.
keel::saga::async_action guarded(const flow_env& env, effect fn) {
  return [faults = env.faults, delayer = env.delayer, fn = std::move(fn)](ctx_ptr ctx) {
    auto d = faults ? faults->decide(ctx->step(), ctx->compensating(), ctx->saga_id()) : decision{};
    // Thrown here, in the action itself: keel turns it into a panic. (A throw
    // from a continuation would escape into the runner actor instead.)
    if (d.kind == fault_kind::throw_exception)
      throw std::runtime_error(std::string{d.err.message()});
    auto finish = [ctx, d, fn] {
      if (ctx->finished()) // timed out meanwhile: the step is not ours any more
        return;
      if (d.kind == fault_kind::fail) {
        ctx->fail(d.err);
        return;
      }
      if (auto r = fn(*ctx); !r) {
        ctx->fail(std::move(r).error());
        return;
      }
      if (d.kind == fault_kind::fail_after_effect)
        ctx->fail(d.err);
      else
        ctx->done();
    };
    if (d.latency <= std::chrono::milliseconds::zero()) {
      finish();
    } else if (delayer && ctx->self()) {
      ctx->self()
          ->request(delayer, caf::infinite, delay_atom::value, int64_t{d.latency.count()})
          .then([finish](ok_atom) { finish(); },
                [ctx](caf::error& e) { ctx->fail(keel::from_caf_error(e)); });
    } else {
      std::this_thread::sleep_for(d.latency);
      finish();
    }
  };
}

/// The order of the running saga, from its data.
keel::expected<order> order_of(const keel::saga::step_context& ctx) {
  return from_data(ctx.saga_id(), ctx.data());
}

} // namespace

keel::saga::definition make_definition(const flow_env& env) {
  auto ledger = env.ledger;
  keel::saga::step_options opts;
  opts.retry = env.retry;
  opts.compensation_retry = env.compensation_retry;
  opts.timeout = env.step_timeout;

  auto validate_opts = opts;
  validate_opts.retry = keel::retry_policy::none();
  auto notify_opts = opts;
  notify_opts.compensatable = false;

  keel::saga::definition def{kind};
  def.rollback_deadline(env.rollback_deadline);
  def.async_step(
      "validate",
      guarded(env,
              [](keel::saga::step_context& ctx) -> keel::expected<void> {
                auto o = order_of(ctx);
                if (!o)
                  return o.error();
                if (o->amount <= 0)
                  return keel::invalid_argument_error("order " + o->id + ": amount "
                                                      + std::to_string(o->amount) + " <= 0");
                if (o->items.empty())
                  return keel::invalid_argument_error("order " + o->id + " has no items");
                return {};
              }),
      {}, validate_opts);
  def.async_step("charge",
                 guarded(env,
                         [ledger](keel::saga::step_context& ctx) -> keel::expected<void> {
                           auto o = order_of(ctx);
                           if (!o)
                             return o.error();
                           auto pid = ledger->charge(ctx.idempotency_key(), o->id, o->amount);
                           if (!pid)
                             return pid.error();
                           ctx.data().set("payment_id", *pid);
                           return {};
                         }),
                 guarded(env,
                         [ledger](keel::saga::step_context& ctx) -> keel::expected<void> {
                           // By order id: robust to a charge whose payment id never reached
                           // the saga data, and to no charge at all.
                           auto r = ledger->refund(ctx.idempotency_key(), ctx.saga_id());
                           if (!r)
                             return r.error();
                           return {};
                         }),
                 opts);
  def.async_step("allocate",
                 guarded(env,
                         [ledger](keel::saga::step_context& ctx) -> keel::expected<void> {
                           auto o = order_of(ctx);
                           if (!o)
                             return o.error();
                           return ledger->reserve(ctx.idempotency_key(), o->id, o->items);
                         }),
                 guarded(env,
                         [ledger](keel::saga::step_context& ctx) {
                           return ledger->release(ctx.idempotency_key(), ctx.saga_id());
                         }),
                 opts);
  def.async_step("ship",
                 guarded(env,
                         [ledger](keel::saga::step_context& ctx) -> keel::expected<void> {
                           auto sid = ledger->ship(ctx.idempotency_key(), ctx.saga_id());
                           if (!sid)
                             return sid.error();
                           ctx.data().set("shipment_id", *sid);
                           return {};
                         }),
                 guarded(env,
                         [ledger](keel::saga::step_context& ctx) {
                           return ledger->cancel_shipment(ctx.idempotency_key(), ctx.saga_id());
                         }),
                 opts);
  def.async_step("notify",
                 guarded(env,
                         [ledger](keel::saga::step_context& ctx) {
                           return ledger->notify(ctx.idempotency_key(), ctx.saga_id());
                         }),
                 {}, notify_opts);
  return def;
}

} // namespace payment
