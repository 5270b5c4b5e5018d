// The choreography coordinator: one actor that watches the bus, keeps every
// saga it runs in memory, and persists through one journal writer.
//
// Each accepted event becomes one atomic batch: the event itself
// ("event_received"), the decisions it caused ("step_completed", "step_failed",
// "compensation_requested", ...), the new saga record and the saga's lease
// (fencing). The effects of a decision (publishing a compensation event,
// arming a timer, answering waiters) run only once that batch is durable, so
// a crash can lose a decision but never act on one the journal does not know.
// The writer commits in arrival order, so effects run in decision order.

#include "keel/saga/choreography.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <caf/all.hpp>

#include "keel/bus/event_bus.hpp"
#include "keel/error/caf.hpp"
#include "keel/error/format.hpp"
#include "keel/error/json.hpp"
#include "keel/error/panic.hpp"
#include "keel/store/writer.hpp"

namespace keel::saga {

// -- definition ---------------------------------------------------------------------

choreography_step choreography_step::conventional(std::string name,
                                                  std::chrono::milliseconds timeout) {
  choreography_step s;
  s.done = name + ".done";
  s.failed = name + ".failed";
  s.compensate = name + ".compensate";
  s.compensated = name + ".compensated";
  s.timeout = timeout;
  s.name = std::move(name);
  return s;
}

choreography::choreography(std::string kind, std::string topic, std::string start_event)
    : kind_(std::move(kind)), topic_(std::move(topic)), start_event_(std::move(start_event)) {}

choreography& choreography::step(choreography_step s) {
  steps_.push_back(std::move(s));
  return *this;
}

int choreography::index_of(std::string_view name) const noexcept {
  for (size_t i = 0; i < steps_.size(); ++i)
    if (steps_[i].name == name)
      return static_cast<int>(i);
  return -1;
}

expected<void> choreography::validate() const {
  auto bad = [this](std::string what) {
    return invalid_argument_error("choreography '" + kind_ + "': " + std::move(what));
  };
  if (kind_.empty())
    return bad("the kind is empty");
  if (topic_.empty())
    return bad("the topic is empty");
  if (start_event_.empty())
    return bad("the start event is empty");
  if (steps_.empty())
    return bad("no steps");
  if (compensation_attempts_ < 1)
    return bad("compensation_attempts must be at least 1");
  if (compensation_timeout_.count() <= 0)
    return bad("compensation_timeout must be positive");
  if (rollback_deadline_.count() <= 0)
    return bad("rollback_deadline must be positive");
  std::set<std::string> names;
  std::map<std::string, std::string> types{{start_event_, "the start event"}};
  auto type_ok = [&](const std::string& type, const std::string& owner) -> expected<void> {
    if (type.empty())
      return {};
    auto [i, added] = types.emplace(type, owner);
    if (!added)
      return bad("event type '" + type + "' is used by " + i->second + " and by " + owner);
    return {};
  };
  bool seen_final = false; // a non-compensatable step was seen
  for (const auto& s : steps_) {
    if (s.name.empty())
      return bad("a step has an empty name");
    if (!names.insert(s.name).second)
      return bad("step name '" + s.name + "' is used twice");
    auto step = "step '" + s.name + "'";
    if (s.done.empty())
      return bad(step + ": the done event type is empty");
    if (s.compensate.empty() != s.compensated.empty())
      return bad(step + ": compensate and compensated event types must be set together");
    if (s.timeout.count() <= 0)
      return bad(step + ": the timeout must be positive");
    if (s.compensatable() && seen_final)
      return bad(step
                 + " is compensatable but follows a step that cannot be compensated "
                   "(non-compensatable steps must come last)");
    seen_final = seen_final || !s.compensatable();
    for (const auto* t : {&s.done, &s.failed, &s.compensate, &s.compensated})
      if (auto r = type_ok(*t, step); !r)
        return r;
  }
  return {};
}

// -- coordinator internals --------------------------------------------------------

namespace {

using k_resume_atom = caf::atom_constant<caf::atom("kc_resume")>;
using k_step_tmo_atom = caf::atom_constant<caf::atom("kc_stmo")>;
using k_comp_tmo_atom = caf::atom_constant<caf::atom("kc_ctmo")>;
using k_rollback_atom = caf::atom_constant<caf::atom("kc_rbdl")>;
using k_renew_atom = caf::atom_constant<caf::atom("kc_renew")>;
using k_lease_atom = caf::atom_constant<caf::atom("kc_lease")>;
using k_count_atom = caf::atom_constant<caf::atom("kc_count")>;
using k_stop_atom = caf::atom_constant<caf::atom("kc_stop")>;

constexpr const char* mode_name = "choreographed";

store::unix_ms now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string default_owner() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0)
    host[0] = '\0';
  return std::string{host} + ":" + std::to_string(getpid());
}

std::string text(const boost::json::object& o) {
  return boost::json::serialize(o);
}

std::string ms_text(std::chrono::milliseconds d) {
  return std::to_string(d.count()) + " ms";
}

/// The JSON of an event for history entries (payload parsed when possible).
boost::json::object event_json(const bus::event& e, const boost::json::value* payload) {
  boost::json::object o;
  o["event_id"] = e.id;
  o["type"] = e.type;
  o["topic"] = e.topic;
  o["saga_id"] = e.saga_id;
  if (payload)
    o["payload"] = *payload;
  else
    o["payload_text"] = e.payload;
  return o;
}

/// The id of the compensation event of `step`: the same on every send.
std::string compensation_event_id(const std::string& saga_id, const std::string& step) {
  return saga_id + "/" + step + "/compensate";
}

/// One saga run by this coordinator.
struct run {
  const choreography* def = nullptr;
  store::saga_record rec;
  /// Ids of the events already accepted (rebuilt from the history on resume).
  std::set<std::string> seen;
  /// Bumped on every transition that re-arms a step or compensation timer:
  /// a timer carrying an older token is stale.
  uint64_t token = 0;
  /// Sends of the pending compensation event.
  uint32_t attempt = 0;
  /// When the rollback started (0 while running forward).
  store::unix_ms rollback_started = 0;
  /// Terminal state decided; waiting for its write.
  bool finished = false;
  /// Distinguishes this run from a later one of the same id (after a lost
  /// lease and a take-over).
  uint64_t incarnation = 0;
  std::vector<caf::response_promise> waiters;

  const choreography_step& step_def(const std::string& name) const {
    return def->steps()[static_cast<size_t>(def->index_of(name))];
  }

  bool is_completed(const std::string& name) const {
    return std::find(rec.completed.begin(), rec.completed.end(), name) != rec.completed.end();
  }

  /// Index of the first step not completed (steps().size() when all are).
  int32_t awaited() const {
    for (size_t i = 0; i < def->steps().size(); ++i)
      if (!is_completed(def->steps()[i].name))
        return static_cast<int32_t>(i);
    return static_cast<int32_t>(def->steps().size());
  }
};

/// A run rebuilt from the journal: record plus what its history says.
run load_run(store::journal& j, const choreography& def, store::saga_record rec,
             expected<void>& status) {
  run r;
  r.def = &def;
  auto hist = j.events(store::saga_stream(rec.id));
  if (!hist) {
    status = wrap(std::move(hist).error(), "saga " + rec.id + ": reading its history");
    return r;
  }
  for (const auto& e : *hist) {
    if ((e.type == "step_failed" || e.type == "timeout") && r.rollback_started == 0)
      r.rollback_started = e.at;
    std::error_code ec;
    auto v = boost::json::parse(e.detail, ec);
    if (ec || !v.is_object())
      continue;
    if (auto* id = v.as_object().if_contains("event_id"); id && id->is_string())
      r.seen.emplace(id->as_string().c_str());
  }
  if (rec.state == saga_state::compensating && r.rollback_started == 0)
    r.rollback_started = rec.updated;
  r.rec = std::move(rec);
  status = {};
  return r;
}

/// What `start` hands the actor.
struct setup {
  std::shared_ptr<store::journal> journal;
  caf::actor writer;
  caf::actor bus;
  std::shared_ptr<const std::vector<choreography>> defs;
  coordinator_config cfg;
  /// Resumed sagas (lease taken).
  std::vector<run> resumed;
  /// Unfinished sagas whose lease another owner holds.
  std::vector<std::string> blocked;
};

/// What a decision does once its batch is durable.
struct effects {
  std::vector<bus::event> publish;
  /// (timer kind, token, delay): 0 step timeout, 1 compensation timeout.
  struct timer {
    int kind;
    uint64_t token;
    std::chrono::milliseconds delay;
  };
  std::vector<timer> timers;
  std::optional<std::chrono::milliseconds> rollback_deadline;
  bool finish = false;
};

class coordinator_actor final : public caf::event_based_actor {
public:
  coordinator_actor(caf::actor_config& cfg, std::shared_ptr<setup> s)
      : caf::event_based_actor(cfg), env_(std::move(s)) {
    for (const auto& d : *env_->defs)
      defs_.emplace(d.kind(), &d);
  }

  const char* name() const override { return "keel.choreography_coordinator"; }

  caf::behavior make_behavior() override {
    set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
      return to_caf_error(make_panic_error(ep)); // a bug in the coordinator
    });
    set_default_handler(caf::drop);
    return {
        [this](const bus::event& e) { guarded_event(e); },
        [this](choreo_begin_atom, std::string& kind, std::string& id, std::string& data) {
          auto rp = make_response_promise<error>();
          begin(std::move(kind), std::move(id), data, rp);
          return rp;
        },
        [this](choreo_wait_atom, const std::string& id) {
          auto rp = make_response_promise<error>();
          wait(id, rp);
          return rp;
        },
        [this](k_count_atom) {
          return static_cast<size_t>(std::count_if(runs_.begin(), runs_.end(),
                                                   [](auto& kv) { return !kv.second.finished; }));
        },
        [this](k_resume_atom) { resume_all(); },
        [this](k_step_tmo_atom, const std::string& id, uint64_t token) {
          on_step_timeout(id, token);
        },
        [this](k_comp_tmo_atom, const std::string& id, uint64_t token) {
          on_compensation_timeout(id, token);
        },
        [this](k_rollback_atom, const std::string& id, uint64_t incarnation) {
          on_rollback_deadline(id, incarnation);
        },
        [this](k_renew_atom) { renew_leases(); },
        [this](k_lease_atom, const std::string& id) { try_take_over(id); },
        [this](k_stop_atom) {
          auto rp = make_response_promise<bool>();
          stop(rp);
          return rp;
        },
    };
  }

private:
  // -- helpers ----------------------------------------------------------------

  caf::actor self_handle() { return caf::actor_cast<caf::actor>(this); }

  std::chrono::milliseconds lease_ttl() const { return env_->cfg.lease_ttl; }

  store::write_batch leased_batch(const std::string& id) {
    store::write_batch b;
    b.acquire_lease(store::saga_lease(id), env_->cfg.owner, now_ms(), lease_ttl().count());
    return b;
  }

  static void entry(store::write_batch& b, const std::string& id, std::string type,
                    std::string name, boost::json::object detail, uint32_t attempt = 0) {
    b.append_event(store::saga_stream(id), std::move(type), std::move(name), attempt, text(detail),
                   now_ms());
  }

  /// Writes `b`, then (once durable) runs `fx` for saga `id`.
  void commit(const std::string& id, store::write_batch b, effects fx) {
    auto inc = runs_.count(id) ? runs_.at(id).incarnation : 0;
    request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
        .then(
            [this, id, inc, fx = std::move(fx)](const error& err) { committed(id, inc, err, fx); },
            [this, id, inc](caf::error& err) {
              committed(id, inc, from_caf_error(err), effects{});
            });
  }

  void committed(const std::string& id, uint64_t inc, const error& err, const effects& fx) {
    auto i = runs_.find(id);
    if (i == runs_.end() || i->second.incarnation != inc)
      return; // the run was dropped (lost lease, failed write) meanwhile
    auto& r = i->second;
    if (err) {
      if (is(err, code::failed_precondition)) {
        // Fenced: another owner holds the lease. Note it, outside the lease.
        store::write_batch b;
        entry(b, id, "lease_lost", {}, {{"owner", env_->cfg.owner}, {"error", to_json(err)}});
        request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
            .then([](const error&) {}, [](caf::error&) {});
      }
      drop(id, wrap(err, code::unavailable,
                    "saga " + id + ": journal write failed; this coordinator stops running it"));
      return;
    }
    for (const auto& e : fx.publish)
      send(env_->bus, bus::publish_atom::value, e);
    for (const auto& t : fx.timers) {
      if (t.kind == 0)
        delayed_send(self_handle(), t.delay, k_step_tmo_atom::value, id, t.token);
      else
        delayed_send(self_handle(), t.delay, k_comp_tmo_atom::value, id, t.token);
    }
    if (fx.rollback_deadline)
      delayed_send(self_handle(), *fx.rollback_deadline, k_rollback_atom::value, id, inc);
    if (fx.finish) {
      for (auto& rp : r.waiters)
        rp.deliver(error{});
      runs_.erase(i);
    }
  }

  /// Stops running saga `id` (it stays unfinished in the journal).
  void drop(const std::string& id, error why) {
    auto i = runs_.find(id);
    if (i == runs_.end())
      return;
    for (auto& rp : i->second.waiters)
      rp.deliver(why);
    runs_.erase(i);
  }

  // -- begin / wait -------------------------------------------------------------

  void begin(std::string kind, std::string id, const std::string& data,
             caf::typed_response_promise<error> rp) {
    auto d = defs_.find(kind);
    if (d == defs_.end()) {
      rp.deliver(not_found_error("unknown choreography kind '" + kind + "'"));
      return;
    }
    if (id.empty()) {
      rp.deliver(invalid_argument_error("empty saga id"));
      return;
    }
    if (runs_.count(id)) {
      rp.deliver(already_exists_error("saga " + id + " exists"));
      return;
    }
    auto known = env_->journal->saga(id);
    if (!known) {
      rp.deliver(wrap(std::move(known).error(), "begin saga " + id));
      return;
    }
    if (*known) {
      rp.deliver(already_exists_error("saga " + id + " exists"));
      return;
    }
    std::error_code ec;
    auto v = boost::json::parse(data, ec);
    if (ec || !v.is_object()) {
      rp.deliver(invalid_argument_error("saga " + id + ": the data is not a JSON object"));
      return;
    }
    const auto& def = *d->second;
    run r;
    r.def = &def;
    r.incarnation = ++incarnations_;
    r.rec.id = id;
    r.rec.kind = kind;
    r.rec.mode = mode_name;
    r.rec.state = saga_state::running;
    r.rec.step = 0;
    r.rec.data = text(v.as_object());
    r.rec.created = r.rec.updated = now_ms();
    r.token = 1;
    auto b = leased_batch(id);
    b.put_saga(r.rec);
    entry(b, id, "started", def.start_event(), {{"data", v}});
    effects fx;
    fx.publish.push_back(bus::event{def.topic(), def.start_event(), id, id + "/start", r.rec.data});
    fx.timers.push_back({0, r.token, def.steps().front().timeout});
    runs_.emplace(id, std::move(r));
    auto inc = runs_.at(id).incarnation;
    // Answer the caller once the start event is on its way (or the write failed).
    request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
        .then(
            [this, id, inc, fx = std::move(fx), rp](const error& err) mutable {
              committed(id, inc, err, fx);
              rp.deliver(err ? wrap(err, "begin saga " + id) : error{});
            },
            [this, id, inc, rp](caf::error& e) mutable {
              auto err = from_caf_error(e);
              committed(id, inc, err, effects{});
              rp.deliver(wrap(err, "begin saga " + id));
            });
  }

  void wait(const std::string& id, caf::typed_response_promise<error> rp) {
    if (auto i = runs_.find(id); i != runs_.end()) {
      i->second.waiters.push_back(rp);
      return;
    }
    auto rec = env_->journal->saga(id);
    if (!rec)
      rp.deliver(rec.error());
    else if (!*rec)
      rp.deliver(not_found_error("saga " + id + " not found"));
    else if (is_terminal((*rec)->state))
      rp.deliver(error{});
    else
      rp.deliver(unavailable_error("saga " + id + " is not run by this coordinator (owner "
                                   + env_->cfg.owner + ")"));
  }

  // -- events -----------------------------------------------------------------

  void guarded_event(const bus::event& e) {
    auto r = invoke_guarded([&] { on_event(e); });
    if (!r) {
      // A bug met by this event: keep it in the history, keep running.
      auto err = wrap(r.error(), "handling event " + e.id + " (" + e.type + ")");
      store::write_batch b;
      b.append_event(e.saga_id.empty() ? "bus/" + e.topic : store::saga_stream(e.saga_id),
                     "event_rejected", e.type, 0,
                     text({{"event_id", e.id}, {"error", to_json(err)}}), now_ms());
      request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
          .then([](const error&) {}, [](caf::error&) {});
    }
  }

  void on_event(const bus::event& e) {
    auto i = runs_.find(e.saga_id);
    if (i == runs_.end() || i->second.finished) {
      unknown_saga(e, i == runs_.end() ? nullptr : &i->second);
      return;
    }
    auto& r = i->second;
    const auto& def = *r.def;
    if (e.topic != def.topic())
      return; // another kind's topic: not about this saga's choreography
    // Our own events come back to us through the bus.
    if (e.type == def.start_event())
      return;
    for (const auto& s : def.steps())
      if (!s.compensate.empty() && e.type == s.compensate)
        return;
    const auto& id = r.rec.id;
    if (r.seen.count(e.id)) {
      auto b = leased_batch(id);
      entry(b, id, "event_ignored", e.type, {{"event_id", e.id}, {"reason", "duplicate event id"}});
      commit(id, std::move(b), {});
      return;
    }
    r.seen.insert(e.id);
    std::error_code ec;
    auto payload = boost::json::parse(e.payload, ec);
    if (ec) {
      auto err = invalid_argument_error("saga " + id + ": event " + e.id + " ('" + e.type
                                        + "') has a malformed JSON payload: " + ec.message());
      auto detail = event_json(e, nullptr);
      detail["error"] = to_json(err);
      auto b = leased_batch(id);
      entry(b, id, "event_rejected", e.type, std::move(detail));
      commit(id, std::move(b), {});
      return;
    }
    // Which step, and what about it.
    const choreography_step* step = nullptr;
    enum { done, failed, acked } what = done;
    for (const auto& s : def.steps()) {
      if (e.type == s.done)
        step = &s, what = done;
      else if (!s.failed.empty() && e.type == s.failed)
        step = &s, what = failed;
      else if (!s.compensated.empty() && e.type == s.compensated)
        step = &s, what = acked;
      if (step)
        break;
    }
    auto b = leased_batch(id);
    effects fx;
    if (!step) {
      auto detail = event_json(e, &payload);
      detail["reason"] = "event type not part of choreography '" + def.kind() + "'";
      entry(b, id, "event_ignored", e.type, std::move(detail));
      commit(id, std::move(b), {});
      return;
    }
    entry(b, id, "event_received", e.type, event_json(e, &payload));
    auto ignore = [&](std::string reason) {
      entry(b, id, "event_ignored", e.type, {{"event_id", e.id}, {"reason", std::move(reason)}});
    };
    auto& rec = r.rec;
    switch (what) {
      case done:
        if (r.is_completed(step->name)) {
          ignore("step '" + step->name + "' already completed");
          break;
        }
        if (payload.is_object())
          merge_data(r, payload.as_object());
        if (rec.state == saga_state::running) {
          auto before = r.awaited();
          rec.completed.push_back(step->name);
          entry(b, id, "step_completed", step->name, {{"event_id", e.id}});
          auto next = r.awaited();
          rec.step = next;
          if (static_cast<size_t>(next) == def.steps().size()) {
            finish(r, b, fx, saga_state::completed, {});
          } else if (next != before) {
            ++r.token;
            fx.timers.push_back({0, r.token, def.steps()[static_cast<size_t>(next)].timeout});
          }
        } else {
          // Late: the step did happen after all. Undo it right after the
          // compensation in flight (or now, when none is).
          entry(b, id, "step_completed", step->name, {{"event_id", e.id}, {"late", true}});
          if (rec.step > 0) {
            rec.completed.insert(rec.completed.begin() + (rec.step - 1), step->name);
            ++rec.step;
          } else {
            rec.completed.insert(rec.completed.begin(), step->name);
            rec.step = 1;
            next_compensation(r, b, fx);
          }
        }
        break;
      case failed:
        if (rec.state != saga_state::running) {
          ignore("the saga is already " + std::string{to_string(rec.state)});
          break;
        }
        if (r.is_completed(step->name)) {
          ignore("step '" + step->name + "' already completed");
          break;
        }
        {
          auto err = failure_of(r, *step, e, payload);
          entry(b, id, "step_failed", step->name, {{"event_id", e.id}, {"error", to_json(err)}});
          begin_rollback(r, std::move(err), b, fx);
        }
        break;
      case acked:
        if (rec.state != saga_state::compensating || rec.step <= 0
            || rec.completed[static_cast<size_t>(rec.step - 1)] != step->name) {
          ignore("no compensation of step '" + step->name + "' is pending");
          break;
        }
        entry(b, id, "compensation_completed", step->name, {{"event_id", e.id}}, r.attempt);
        --rec.step;
        next_compensation(r, b, fx);
        break;
    }
    rec.updated = now_ms();
    if (!fx.finish)
      b.put_saga(rec);
    commit(id, std::move(b), std::move(fx));
  }

  static void merge_data(run& r, const boost::json::object& add) {
    std::error_code ec;
    auto v = boost::json::parse(r.rec.data, ec);
    boost::json::object data = (!ec && v.is_object()) ? v.as_object() : boost::json::object{};
    for (const auto& kv : add)
      data[kv.key()] = kv.value();
    r.rec.data = text(data);
  }

  static error failure_of(const run& r, const choreography_step& s, const bus::event& e,
                          const boost::json::value& payload) {
    auto msg = "saga " + r.rec.id + ": step '" + s.name + "' failed (event '" + e.type + "')";
    if (payload.is_object())
      if (auto* v = payload.as_object().if_contains("error")) {
        if (auto inner = error_from_json(*v); inner && *inner)
          return wrap(*inner, std::move(msg));
        if (v->is_string())
          return aborted_error(msg + ": " + std::string{v->as_string().c_str()});
      }
    return aborted_error(std::move(msg));
  }

  /// An event for a saga this coordinator does not run.
  void unknown_saga(const bus::event& e, const run* finished) {
    bool ours = false;
    for (const auto& [kind, d] : defs_)
      ours = ours || d->topic() == e.topic;
    if (!ours)
      return;
    // Our own events come back, also right after a saga ended.
    if (e.id == e.saga_id + "/start" || e.id.ends_with("/compensate"))
      return;
    if (finished) {
      auto b = store::write_batch{};
      entry(b, e.saga_id, "event_ignored", e.type,
            {{"event_id", e.id}, {"reason", "the saga has ended"}});
      request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
          .then([](const error&) {}, [](caf::error&) {});
      return;
    }
    std::optional<store::saga_record> rec;
    if (!e.saga_id.empty()) {
      auto got = env_->journal->saga(e.saga_id);
      if (!got)
        return; // unreadable journal: nothing sensible to record either
      rec = std::move(*got);
    }
    store::write_batch b;
    if (!rec) {
      std::error_code ec;
      auto payload = boost::json::parse(e.payload, ec);
      auto detail = event_json(e, ec ? nullptr : &payload);
      detail["reason"] = "unknown saga";
      b.append_event("bus/" + e.topic, "event_ignored", e.type, 0, text(detail), now_ms());
    } else if (is_terminal(rec->state)) {
      entry(b, e.saga_id, "event_ignored", e.type,
            {{"event_id", e.id}, {"reason", "the saga is " + std::string{to_string(rec->state)}}});
    } else {
      return; // unfinished and run by another owner (or waiting for its lease)
    }
    request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
        .then([](const error&) {}, [](caf::error&) {});
  }

  // -- transitions ------------------------------------------------------------------

  void begin_rollback(run& r, error failure, store::write_batch& b, effects& fx) {
    r.rec.failure = std::move(failure);
    r.rec.state = saga_state::compensating;
    r.rec.step = static_cast<int32_t>(r.rec.completed.size());
    r.rollback_started = now_ms();
    fx.rollback_deadline = r.def->rollback_deadline();
    next_compensation(r, b, fx);
  }

  /// Requests the next compensation, or ends the rollback when none is left.
  void next_compensation(run& r, store::write_batch& b, effects& fx) {
    auto& rec = r.rec;
    const auto& id = rec.id;
    while (rec.step > 0) {
      const auto& name = rec.completed[static_cast<size_t>(rec.step - 1)];
      const auto& s = r.step_def(name);
      if (s.compensatable()) {
        r.attempt = 1;
        request_compensation(r, s, b, fx, false);
        return;
      }
      auto err = failed_precondition_error("saga " + id + ": step '" + name
                                           + "' completed and cannot be compensated");
      entry(b, id, "compensation_failed", name, {{"error", to_json(err)}});
      rec.compensation_failure = keel::join(rec.compensation_failure, err);
      --rec.step;
    }
    if (rec.compensation_failure)
      finish(r, b, fx, saga_state::needs_intervention,
             "compensation did not finish: " + to_string(rec.compensation_failure));
    else
      finish(r, b, fx, saga_state::rolled_back, {});
  }

  void request_compensation(run& r, const choreography_step& s, store::write_batch& b, effects& fx,
                            bool resumed) {
    const auto& id = r.rec.id;
    auto eid = compensation_event_id(id, s.name);
    boost::json::object detail{{"event_id", eid}, {"event", s.compensate}};
    if (resumed)
      detail["resumed"] = true;
    entry(b, id, "compensation_requested", s.name, std::move(detail), r.attempt);
    fx.publish.push_back(bus::event{r.def->topic(), s.compensate, id, eid, r.rec.data});
    ++r.token;
    fx.timers.push_back({1, r.token, r.def->compensation_timeout()});
  }

  void finish(run& r, store::write_batch& b, effects& fx, saga_state end, std::string reason) {
    auto& rec = r.rec;
    rec.state = end;
    rec.reason = std::move(reason);
    rec.updated = now_ms();
    boost::json::object detail;
    if (!rec.reason.empty())
      detail["reason"] = rec.reason;
    if (rec.failure)
      detail["error"] = to_json(rec.failure);
    entry(b, rec.id, std::string{to_string(end)}, {}, std::move(detail));
    b.put_saga(rec);
    b.release_lease(store::saga_lease(rec.id), env_->cfg.owner);
    r.finished = true;
    ++r.token;
    fx.finish = true;
  }

  // -- timers -----------------------------------------------------------------------

  run* current(const std::string& id, uint64_t token) {
    auto i = runs_.find(id);
    if (i == runs_.end() || i->second.finished || i->second.token != token)
      return nullptr;
    return &i->second;
  }

  void on_step_timeout(const std::string& id, uint64_t token) {
    auto* r = current(id, token);
    if (!r || r->rec.state != saga_state::running)
      return;
    const auto& s = r->def->steps()[static_cast<size_t>(r->awaited())];
    auto err = deadline_exceeded_error("saga " + id + ": step '" + s.name + "' timed out: no '"
                                       + s.done + "' event within " + ms_text(s.timeout));
    auto b = leased_batch(id);
    effects fx;
    entry(b, id, "timeout", s.name, {{"error", to_json(err)}});
    begin_rollback(*r, std::move(err), b, fx);
    r->rec.updated = now_ms();
    if (!fx.finish)
      b.put_saga(r->rec);
    commit(id, std::move(b), std::move(fx));
  }

  void on_compensation_timeout(const std::string& id, uint64_t token) {
    auto* r = current(id, token);
    if (!r || r->rec.state != saga_state::compensating || r->rec.step <= 0)
      return;
    const auto& name = r->rec.completed[static_cast<size_t>(r->rec.step - 1)];
    const auto& s = r->step_def(name);
    auto b = leased_batch(id);
    effects fx;
    if (r->attempt < r->def->compensation_attempts()) {
      ++r->attempt;
      request_compensation(*r, s, b, fx, false);
    } else {
      auto err = deadline_exceeded_error(
          "saga " + id + ": compensation of step '" + name + "' (event '" + s.compensate
          + "') not acknowledged with '" + s.compensated + "' after " + std::to_string(r->attempt)
          + " attempts of " + ms_text(r->def->compensation_timeout()));
      entry(b, id, "compensation_failed", name, {{"error", to_json(err)}}, r->attempt);
      r->rec.compensation_failure = keel::join(r->rec.compensation_failure, err);
      --r->rec.step;
      next_compensation(*r, b, fx);
    }
    r->rec.updated = now_ms();
    if (!fx.finish)
      b.put_saga(r->rec);
    commit(id, std::move(b), std::move(fx));
  }

  void on_rollback_deadline(const std::string& id, uint64_t incarnation) {
    auto i = runs_.find(id);
    if (i == runs_.end() || i->second.incarnation != incarnation || i->second.finished
        || i->second.rec.state != saga_state::compensating)
      return;
    auto& r = i->second;
    std::string pending;
    for (int32_t k = r.rec.step; k > 0; --k)
      pending +=
          (pending.empty() ? "'" : ", '") + r.rec.completed[static_cast<size_t>(k - 1)] + "'";
    auto err = deadline_exceeded_error("saga " + id + ": rollback deadline of "
                                       + ms_text(r.def->rollback_deadline())
                                       + " passed; not compensated: " + pending);
    auto b = leased_batch(id);
    effects fx;
    entry(b, id, "compensation_failed", {}, {{"error", to_json(err)}});
    r.rec.compensation_failure = keel::join(r.rec.compensation_failure, err);
    finish(r, b, fx, saga_state::needs_intervention, to_string(err));
    commit(id, std::move(b), std::move(fx));
  }

  // -- leases, resume, stop -----------------------------------------------------------

  void schedule_renewal() {
    auto every = std::max(lease_ttl() / 3, std::chrono::milliseconds(1));
    delayed_send(self_handle(), every, k_renew_atom::value);
  }

  void renew_leases() {
    for (auto& [id, r] : runs_)
      if (!r.finished)
        commit(id, leased_batch(id), {});
    schedule_renewal();
  }

  /// Continues a run loaded from the journal (lease held).
  void resume(run r) {
    auto id = r.rec.id;
    r.incarnation = ++incarnations_;
    r.token = 1;
    auto [i, added] = runs_.emplace(id, std::move(r));
    if (!added)
      return;
    auto& rn = i->second;
    auto b = leased_batch(id);
    effects fx;
    entry(b, id, "resumed", {}, {{"owner", env_->cfg.owner}});
    if (rn.rec.state == saga_state::compensating) {
      auto left = rn.rollback_started + rn.def->rollback_deadline().count() - now_ms();
      fx.rollback_deadline = std::chrono::milliseconds(std::max<int64_t>(left, 0));
      if (rn.rec.step > 0) {
        const auto& s = rn.step_def(rn.rec.completed[static_cast<size_t>(rn.rec.step - 1)]);
        if (s.compensatable()) {
          rn.attempt = 1;
          request_compensation(rn, s, b, fx, true);
        } else {
          next_compensation(rn, b, fx);
        }
      } else {
        next_compensation(rn, b, fx);
      }
    } else {
      rn.rec.state = saga_state::running;
      rn.rec.step = rn.awaited();
      if (static_cast<size_t>(rn.rec.step) == rn.def->steps().size())
        finish(rn, b, fx, saga_state::completed, {});
      else
        fx.timers.push_back(
            {0, rn.token, rn.def->steps()[static_cast<size_t>(rn.rec.step)].timeout});
    }
    rn.rec.updated = now_ms();
    if (!fx.finish)
      b.put_saga(rn.rec);
    commit(id, std::move(b), std::move(fx));
  }

  void resume_all() {
    for (auto& r : env_->resumed)
      resume(std::move(r));
    env_->resumed.clear();
    for (const auto& id : env_->blocked)
      delayed_send(self_handle(), env_->cfg.lease_retry, k_lease_atom::value, id);
    env_->blocked.clear();
    schedule_renewal();
  }

  /// Another owner held saga `id`'s lease at start: try to take it over.
  void try_take_over(const std::string& id) {
    if (runs_.count(id) || stopping_)
      return;
    auto rec = env_->journal->saga(id);
    if (!rec || !*rec || is_terminal((*rec)->state) || (*rec)->mode != mode_name)
      return; // gone, ended, or unreadable
    auto d = defs_.find((*rec)->kind);
    if (d == defs_.end())
      return;
    request(env_->writer, caf::infinite, store::commit_atom::value, leased_batch(id))
        .then(
            [this, id, def = d->second](const error& err) {
              if (stopping_ || runs_.count(id))
                return;
              if (err) {
                delayed_send(self_handle(), env_->cfg.lease_retry, k_lease_atom::value, id);
                return;
              }
              // Ours now: read what the previous owner left.
              auto rec = env_->journal->saga(id);
              if (!rec || !*rec || is_terminal((*rec)->state))
                return;
              expected<void> ok;
              auto r = load_run(*env_->journal, *def, std::move(**rec), ok);
              if (ok)
                resume(std::move(r));
            },
            [](caf::error&) {});
  }

  void stop(caf::typed_response_promise<bool> rp) {
    stopping_ = true;
    store::write_batch b;
    for (auto& [id, r] : runs_) {
      if (!r.finished)
        b.release_lease(store::saga_lease(id), env_->cfg.owner);
      for (auto& w : r.waiters)
        w.deliver(unavailable_error("saga " + id + ": the coordinator stopped"));
      r.waiters.clear();
    }
    runs_.clear();
    if (b.empty()) {
      rp.deliver(true);
      quit();
      return;
    }
    request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
        .then(
            [this, rp](const error&) mutable {
              rp.deliver(true);
              quit();
            },
            [this, rp](caf::error&) mutable {
              rp.deliver(true);
              quit();
            });
  }

  std::shared_ptr<setup> env_;
  std::map<std::string, const choreography*> defs_;
  std::map<std::string, run> runs_;
  uint64_t incarnations_ = 0;
  bool stopping_ = false;
};

} // namespace

// -- handle -----------------------------------------------------------------------

struct choreography_coordinator::impl {
  caf::actor_system& sys;
  std::shared_ptr<store::journal> journal;
  std::shared_ptr<const std::vector<choreography>> defs;
  caf::actor actor;
  caf::actor writer;
  std::vector<std::string> resumed;
  bool stopped = false;

  explicit impl(caf::actor_system& s) : sys(s) {}
};

choreography_coordinator::choreography_coordinator(std::shared_ptr<store::journal> j,
                                                   std::unique_ptr<impl> p)
    : saga_queries(std::move(j)), impl_(std::move(p)) {}
choreography_coordinator::choreography_coordinator(choreography_coordinator&&) noexcept = default;
choreography_coordinator&
choreography_coordinator::operator=(choreography_coordinator&& other) noexcept {
  if (this != &other) {
    if (impl_)
      stop();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

choreography_coordinator::~choreography_coordinator() {
  if (impl_)
    stop();
}

expected<choreography_coordinator>
choreography_coordinator::start(caf::actor_system& sys, std::shared_ptr<store::journal> j,
                                caf::actor event_bus, std::vector<choreography> defs,
                                coordinator_config cfg) {
  if (!j)
    return invalid_argument_error("choreography coordinator: no journal");
  if (!event_bus)
    return invalid_argument_error("choreography coordinator: no event bus");
  std::set<std::string> kinds;
  for (const auto& d : defs) {
    if (auto ok = d.validate(); !ok)
      return ok.error();
    if (!kinds.insert(d.kind()).second)
      return invalid_argument_error("choreography kind '" + d.kind() + "' is defined twice");
  }
  if (cfg.owner.empty())
    cfg.owner = default_owner();
  if (cfg.lease_ttl.count() <= 0)
    return invalid_argument_error("choreography coordinator: lease_ttl must be positive");
  auto s = std::make_shared<setup>();
  s->journal = j;
  s->bus = event_bus;
  s->defs = std::make_shared<const std::vector<choreography>>(std::move(defs));
  s->cfg = cfg;
  auto p = std::make_unique<impl>(sys);
  p->journal = j;
  p->defs = s->defs;
  if (cfg.resume) {
    store::saga_filter unfinished;
    unfinished.unfinished_only = true;
    auto open = j->sagas(unfinished);
    if (!open)
      return wrap(std::move(open).error(), "choreography coordinator: loading unfinished sagas");
    for (auto& rec : *open) {
      if (rec.mode != mode_name)
        continue;
      auto d = std::find_if(s->defs->begin(), s->defs->end(),
                            [&](const choreography& c) { return c.kind() == rec.kind; });
      if (d == s->defs->end())
        continue;
      // Outside any actor: committing directly is fine here.
      store::write_batch b;
      b.acquire_lease(store::saga_lease(rec.id), cfg.owner, now_ms(), cfg.lease_ttl.count());
      if (auto got = j->commit(b); !got) {
        if (got.error().code() == code::failed_precondition) {
          s->blocked.push_back(rec.id);
          continue;
        }
        return wrap(got.error(), "choreography coordinator: taking the lease of saga " + rec.id);
      }
      expected<void> ok;
      auto id = rec.id;
      auto r = load_run(*j, *d, std::move(rec), ok);
      if (!ok)
        return ok.error();
      p->resumed.push_back(id);
      s->resumed.push_back(std::move(r));
    }
  }
  s->writer = store::spawn_journal_writer(sys, j);
  p->writer = s->writer;
  p->actor = sys.spawn<coordinator_actor>(s);
  // Subscribe before anything is published, so no event of ours is missed.
  caf::scoped_actor self{sys};
  error failure;
  std::set<std::string> topics;
  for (const auto& d : *s->defs)
    topics.insert(d.topic());
  for (const auto& topic : topics) {
    self->request(event_bus, std::chrono::seconds(10), bus::subscribe_atom::value, topic, p->actor)
        .receive([] {},
                 [&](caf::error& e) {
                   failure = wrap(from_caf_error(e), "subscribing to topic '" + topic + "'");
                 });
    if (failure)
      break;
  }
  auto journal = p->journal;
  choreography_coordinator out{std::move(journal), std::move(p)};
  if (failure)
    return failure;
  self->send(out.impl_->actor, k_resume_atom::value);
  return out;
}

expected<void> choreography_coordinator::begin(const std::string& kind, const std::string& id,
                                               saga::data d) {
  caf::scoped_actor self{impl_->sys};
  error out;
  self->request(impl_->actor, caf::infinite, choreo_begin_atom::value, kind, id,
                boost::json::serialize(d.json()))
      .receive([&](const error& err) { out = err; },
               [&](caf::error& e) { out = from_caf_error(e); });
  if (out)
    return out;
  return {};
}

expected<outcome> choreography_coordinator::wait(const std::string& id,
                                                 std::chrono::milliseconds timeout) {
  caf::scoped_actor self{impl_->sys};
  error out;
  self->request(impl_->actor, timeout, choreo_wait_atom::value, id)
      .receive([&](const error& err) { out = err; },
               [&](caf::error& e) {
                 out = from_caf_error(e);
                 if (out.code() == code::deadline_exceeded)
                   out = deadline_exceeded_error("saga " + id + " did not end within "
                                                 + ms_text(timeout));
               });
  if (out)
    return out;
  return status(id);
}

expected<outcome> choreography_coordinator::run(const std::string& kind, const std::string& id,
                                                saga::data d, std::chrono::milliseconds timeout) {
  if (auto ok = begin(kind, id, std::move(d)); !ok)
    return ok.error();
  return wait(id, timeout);
}

const std::vector<std::string>& choreography_coordinator::resumed() const noexcept {
  return impl_->resumed;
}

size_t choreography_coordinator::in_flight() {
  caf::scoped_actor self{impl_->sys};
  size_t n = 0;
  self->request(impl_->actor, std::chrono::seconds(10), k_count_atom::value)
      .receive([&](size_t x) { n = x; }, [](caf::error&) {});
  return n;
}

caf::actor choreography_coordinator::actor() const {
  return impl_->actor;
}

void choreography_coordinator::stop() {
  if (!impl_ || impl_->stopped)
    return;
  impl_->stopped = true;
  caf::scoped_actor self{impl_->sys};
  self->request(impl_->actor, std::chrono::seconds(30), k_stop_atom::value)
      .receive([](bool) {}, [](caf::error&) {});
  self->send_exit(impl_->actor, caf::exit_reason::user_shutdown);
  self->wait_for(impl_->actor);
  self->send_exit(impl_->writer, caf::exit_reason::user_shutdown);
  self->wait_for(impl_->writer);
  impl_->actor = nullptr;
  impl_->writer = nullptr;
}

} // namespace keel::saga
