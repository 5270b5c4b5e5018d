// The orchestrating saga coordinator: one coordinator actor, one runner actor
// per saga, all persisting through one journal writer (group commit).
//
// A runner is a small state machine. Every transition is written to the
// journal *before* the work it announces (step_started before the forward
// action, compensation_started before the compensator) and *after* the work
// it records (step_completed with the data the step produced), so that after
// a crash the record says exactly which action may have been in flight. All
// writes carry the saga's lease (fencing): a runner whose lease was taken by
// another owner fails its next write and stops without touching the saga.

#include "keel/saga/coordinator.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <unistd.h>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <caf/all.hpp>

#include "keel/error/caf.hpp"
#include "keel/error/json.hpp"
#include "keel/error/panic.hpp"
#include "keel/store/writer.hpp"

namespace keel::saga::detail {

using record_list = std::shared_ptr<const std::vector<store::saga_record>>;

} // namespace keel::saga::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::saga::detail::record_list)

namespace keel::saga {

namespace detail {
namespace {

using ks_begin_atom = begin_atom;
using ks_wait_atom = wait_atom;
using ks_cancel_atom = cancel_atom;
using ks_resume_atom = caf::atom_constant<caf::atom("ks_resume")>;
using ks_count_atom = caf::atom_constant<caf::atom("ks_count")>;
using ks_stop_atom = caf::atom_constant<caf::atom("ks_stop")>;
using ks_done_atom = caf::atom_constant<caf::atom("ks_done")>;
using ks_step_atom = caf::atom_constant<caf::atom("ks_step")>;
using ks_tmo_atom = caf::atom_constant<caf::atom("ks_tmo")>;
using ks_retry_atom = caf::atom_constant<caf::atom("ks_retry")>;
using ks_renew_atom = caf::atom_constant<caf::atom("ks_renew")>;
using ks_fdl_atom = caf::atom_constant<caf::atom("ks_fdl")>;
using ks_lease_atom = caf::atom_constant<caf::atom("ks_lease")>;

using clock_type = std::chrono::steady_clock;

store::unix_ms now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

/// What the coordinator and its runners share; immutable after start.
struct env {
  std::shared_ptr<store::journal> journal;
  caf::actor writer;
  std::map<std::string, definition, std::less<>> defs;
  coordinator_config cfg;
};

std::string json_text(boost::json::object o) {
  return boost::json::serialize(o);
}

caf::error to_caf(error e) {
  return to_caf_error(std::move(e));
}

// -- the runner -----------------------------------------------------------------

/// Runs one saga from `rec` (fresh, or as the journal had it).
class runner : public caf::event_based_actor {
public:
  /// `begun` (fresh sagas) is answered once the saga is recorded.
  runner(caf::actor_config& cfg, std::shared_ptr<const env> e, caf::actor parent,
         store::saga_record rec, bool fresh, caf::response_promise begun)
      : caf::event_based_actor(cfg), env_(std::move(e)), parent_(std::move(parent)),
        def_(&env_->defs.find(rec.kind)->second), rec_(std::move(rec)), fresh_(fresh),
        begun_(std::move(begun)), lease_(store::saga_lease(rec_.id)),
        stream_(store::saga_stream(rec_.id)),
        rng_(env_->cfg.seed ^ std::hash<std::string>{}(rec_.id)) {
    if (auto d = saga::data::parse(rec_.data))
      data_ = std::move(*d);
    else
      bad_data_ = std::move(d).error();
  }

  caf::behavior make_behavior() override {
    set_exception_handler([this](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
      auto err = wrap(make_panic_error(ep), "saga " + rec_.id + ": runner failed");
      report_abort(err);
      return to_caf(err);
    });
    send(this, ks_lease_atom::value);
    return {
        [this](ks_lease_atom) { open(); },
        [this](ks_step_atom, uint64_t token, error& err) { on_result(token, std::move(err)); },
        [this](ks_tmo_atom, uint64_t token) { on_timeout(token); },
        [this](ks_retry_atom, uint64_t token) {
          if (token == token_)
            retry();
        },
        [this](ks_renew_atom) { renew(); },
        [this](ks_fdl_atom) {
          cancel(deadline_exceeded_error("saga " + rec_.id + ": forward deadline of "
                                         + std::to_string(def_->forward_deadline().count())
                                         + " ms passed"));
        },
        [this](ks_cancel_atom) { cancel(cancelled_error("saga " + rec_.id + " cancelled")); },
    };
  }

  void on_exit() override {
    // Breaks the runner -> context -> completion cycle.
    ctx_.reset();
    answer_begin(aborted_error("saga " + rec_.id
                               + ": the coordinator stopped before the saga was recorded"));
  }

private:
  enum class phase : uint8_t { opening, forward, compensating, finished };

  // -- journal writes -----------------------------------------------------------

  store::write_batch batch() {
    store::write_batch b;
    b.acquire_lease(lease_, env_->cfg.owner, now_ms(), env_->cfg.lease_ttl.count());
    return b;
  }

  void put_record(store::write_batch& b) {
    rec_.updated = now_ms();
    rec_.data = data_.to_string();
    b.put_saga(rec_);
  }

  void event(store::write_batch& b, std::string type, std::string name, uint32_t attempt,
             boost::json::object detail = {}) {
    b.append_event(stream_, std::move(type), std::move(name), attempt, json_text(std::move(detail)),
                   now_ms());
  }

  /// Commits `b` through the writer, then runs `next`. A failed write stops
  /// the runner: the saga stays unfinished in the journal for the next start.
  template <class F>
  void persist(store::write_batch b, F next) {
    request(env_->writer, caf::infinite, store::commit_atom::value, std::move(b))
        .then(
            [this, next](const error& err) mutable {
              if (err)
                journal_failed(err);
              else if (phase_ != phase::finished)
                next();
            },
            [this](caf::error& err) { journal_failed(from_caf_error(err)); });
  }

  void journal_failed(const error& err) {
    if (phase_ == phase::finished)
      return;
    if (phase_ == phase::opening && err.code() == code::failed_precondition) {
      if (fresh_) {
        // Another owner runs a saga with this id: refuse it.
        report_abort(err);
        quit();
        return;
      }
      // A resumed saga: try again until its lease is released or expires.
      delayed_send(this, env_->cfg.lease_retry, ks_lease_atom::value);
      return;
    }
    report_abort(wrap(err, code::aborted,
                      "saga " + rec_.id + ": journal write failed; the saga stays "
                          + std::string{to_string(rec_.state)}
                          + " in the journal and resumes on the next start"));
    quit();
  }

  void renew() {
    if (phase_ == phase::finished)
      return;
    persist(batch(), [] {});
    delayed_send(this, env_->cfg.lease_ttl / 3, ks_renew_atom::value);
  }

  // -- start ----------------------------------------------------------------------

  void open() {
    if (bad_data_) {
      report_abort(wrap(bad_data_, code::data_loss, "saga " + rec_.id + ": unreadable data"));
      quit();
      return;
    }
    auto b = batch();
    if (fresh_) {
      rec_.state = saga_state::pending;
      rec_.step = 0;
      rec_.created = now_ms();
      put_record(b);
      event(b, "created", def_->kind(), 0, {{"data", data_.json()}});
    } else {
      event(b, "resumed", "", 0,
            {{"state", to_string(rec_.state)}, {"step", rec_.step}, {"owner", env_->cfg.owner}});
    }
    persist(std::move(b), [this] { opened(); });
  }

  void opened() {
    answer_begin(error{}); // recorded: `begin` returns now
    delayed_send(this, env_->cfg.lease_ttl / 3, ks_renew_atom::value);
    if (rec_.state == saga_state::compensating) {
      phase_ = phase::compensating;
      after_crash_ = true;
      rollback_due_ = clock_type::now() + def_->rollback_deadline();
      compensate_next();
      return;
    }
    phase_ = phase::forward;
    after_crash_ = !fresh_ && rec_.state == saga_state::running;
    if (def_->forward_deadline() > std::chrono::milliseconds::zero())
      delayed_send(this, def_->forward_deadline(), ks_fdl_atom::value);
    run_step(static_cast<size_t>(std::max(rec_.step, 0)));
  }

  // -- forward ----------------------------------------------------------------------

  /// Starts step `i`. `done` holds the previous step's completion, if any:
  /// "after step i-1" and "before step i" are then one write (one commit per
  /// step boundary instead of two; the record is written here).
  void run_step(size_t i, store::write_batch done = {}) {
    if (i >= def_->steps().size()) {
      // Every step completed: a cancel that came after the last one is late.
      finish(saga_state::completed, "completed", std::move(done));
      return;
    }
    if (cancel_error_) {
      rec_.step = static_cast<int32_t>(i);
      if (done.empty()) {
        forward_failed(cancel_error_, false);
        return;
      }
      put_record(done);
      persist(std::move(done), [this] { forward_failed(cancel_error_, false); });
      return;
    }
    rec_.state = saga_state::running;
    rec_.step = static_cast<int32_t>(i);
    start_attempts();
    // A step in flight at a crash may have happened.
    maybe_applied_ = after_crash_;
    auto b = done.empty() ? batch() : std::move(done);
    put_record(b);
    event(b, "step_started", current().name, attempt_, {{"after_crash", after_crash_}});
    persist(std::move(b), [this] { invoke(false); });
  }

  const saga::step& current() const { return def_->steps()[static_cast<size_t>(rec_.step)]; }

  /// Runs the forward action or compensator of the current step (forward) or
  /// of `comp_step_` (compensating).
  void invoke(bool compensating) {
    const auto& s = compensating ? *comp_step_ : current();
    auto token = ++token_;
    unknown_outcome_ = false;
    auto me = caf::actor_cast<caf::actor_addr>(this);
    ctx_ = std::make_shared<step_context>(
        rec_.id, s.name, compensating, attempt_, after_crash_, data_, this, [me, token](error err) {
          if (auto a = caf::actor_cast<caf::actor>(me))
            caf::anon_send(a, ks_step_atom::value, token, std::move(err));
        });
    auto timeout = s.options.timeout;
    clipped_ = false;
    if (compensating) {
      // Rounded up, so that the timeout never fires before the deadline.
      auto left = std::chrono::ceil<std::chrono::milliseconds>(rollback_due_ - clock_type::now());
      if (left < timeout) {
        timeout = std::max(std::chrono::milliseconds(1), left);
        clipped_ = true;
      }
    }
    delayed_send(this, timeout, ks_tmo_atom::value, token);
    const auto& f = compensating ? s.compensate : s.forward;
    auto ctx = ctx_;
    try {
      f(ctx);
    } catch (...) {
      ctx->fail(make_panic_error(std::current_exception()));
    }
  }

  void on_timeout(uint64_t token) {
    if (token != token_ || !ctx_ || ctx_->finished())
      return;
    const auto& s = phase_ == phase::compensating ? *comp_step_ : current();
    unknown_outcome_ = true;
    maybe_applied_ = true;
    if (clipped_) {
      ctx_->fail(deadline_exceeded_error(
          "compensator of step " + s.name + " cut short: the rollback deadline of "
          + std::to_string(def_->rollback_deadline().count()) + " ms passed"));
      return;
    }
    ctx_->fail(deadline_exceeded_error(
        (phase_ == phase::compensating ? "compensator of step " : "step ") + s.name
        + " timed out after " + std::to_string(s.options.timeout.count()) + " ms"));
  }

  void cancel(error why) {
    if (phase_ == phase::compensating || phase_ == phase::finished || cancel_error_)
      return;
    cancel_error_ = std::move(why);
    if (phase_ == phase::forward && ctx_ && !ctx_->finished()) {
      // Abandon the action in flight: its outcome is unknown.
      unknown_outcome_ = true;
      maybe_applied_ = true;
      ctx_->fail(cancel_error_);
    }
  }

  void on_result(uint64_t token, error err) {
    if (token != token_ || phase_ == phase::finished)
      return;
    after_crash_ = false;
    if (phase_ == phase::compensating) {
      compensation_result(std::move(err));
      return;
    }
    auto& s = current();
    if (!err) {
      data_ = ctx_->data();
      ctx_.reset();
      rec_.completed.push_back(s.name);
      rec_.step += 1;
      auto b = batch();
      event(b, "step_completed", s.name, attempt_, {{"data", data_.json()}});
      run_step(static_cast<size_t>(rec_.step), std::move(b));
      return;
    }
    ctx_.reset();
    auto unknown = unknown_outcome_;
    if (!cancel_error_) {
      auto d = decide_retry(s.options.retry, err);
      if (d) {
        schedule_retry(err, d.delay, "step_failed", s.name);
        return;
      }
      if (d.verdict == retry_verdict::time_spent)
        err = out_of_time(s.options.retry, std::move(err));
    }
    forward_failed(cancel_error_ ? cancel_error_ : err, unknown);
  }

  /// A new step or compensator: its first attempt starts now.
  void start_attempts() {
    attempt_ = 1;
    first_attempt_at_ = clock_type::now();
    retry_delay_ = std::chrono::nanoseconds{0};
  }

  /// The retry policy's answer to the failure of the current attempt; on
  /// `retry` remembers the delay (decorrelated jitter grows from it).
  retry_decision decide_retry(const retry_policy& rp, const error& err) {
    retry_state st{attempt_, retry_delay_};
    auto d = rp.decide(err, st, clock_type::now() - first_attempt_at_, rng_);
    if (d)
      retry_delay_ = st.previous_delay;
    return d;
  }

  error out_of_time(const retry_policy& rp, error err) const {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(rp.max_elapsed).count();
    return wrap(std::move(err), "retry time budget of " + std::to_string(ms) + " ms spent after "
                                    + std::to_string(attempt_) + " attempts");
  }

  void schedule_retry(const error& err, std::chrono::nanoseconds delay, std::string type,
                      const std::string& name) {
    auto b = batch();
    event(b, std::move(type), name, attempt_,
          {{"error", to_json(err)},
           {"retry_in_ms", std::chrono::duration_cast<std::chrono::milliseconds>(delay).count()}});
    auto token = token_;
    persist(std::move(b), [this, delay, token] {
      delayed_send(this, std::chrono::duration_cast<std::chrono::microseconds>(delay),
                   ks_retry_atom::value, token);
    });
  }

  void retry() {
    ++attempt_;
    if (phase_ == phase::forward) {
      if (cancel_error_) {
        forward_failed(cancel_error_, false);
        return;
      }
      auto b = batch();
      event(b, "step_started", current().name, attempt_);
      persist(std::move(b), [this] { invoke(false); });
    } else if (phase_ == phase::compensating) {
      auto b = batch();
      event(b, "compensation_started", comp_step_->name, attempt_);
      persist(std::move(b), [this] { invoke(true); });
    }
  }

  void forward_failed(error err, bool unknown) {
    // Any attempt whose outcome was unknown may have left an effect.
    unknown = unknown || maybe_applied_;
    const auto& s = current();
    rec_.failure = wrap(err, "step " + s.name);
    auto b = batch();
    event(b, "step_failed", s.name, attempt_,
          {{"error", to_json(err)}, {"final", true}, {"outcome_unknown", unknown}});
    // After a pivot, the saga only goes forward.
    for (const auto& done : rec_.completed) {
      auto k = def_->index_of(done);
      if (k >= 0 && def_->steps()[static_cast<size_t>(k)].options.pivot) {
        rec_.reason = "step " + s.name + " failed after the pivot step " + done
                      + " completed: the saga cannot be rolled back; finish step " + s.name
                      + " by hand";
        finish(saga_state::needs_intervention, "needs_intervention", std::move(b));
        return;
      }
    }
    if (unknown && s.options.compensatable && s.options.compensate_unknown_outcome) {
      rec_.completed.push_back(s.name);
      event(b, "step_outcome_unknown", s.name, attempt_,
            {{"note", "compensated too: the action may have half happened"}});
    }
    phase_ = phase::compensating;
    rec_.state = saga_state::compensating;
    rec_.step = static_cast<int32_t>(rec_.completed.size());
    rollback_due_ = clock_type::now() + def_->rollback_deadline();
    put_record(b);
    event(b, "compensation_begun", "", 0,
          {{"steps", rec_.step}, {"rollback_deadline_ms", def_->rollback_deadline().count()}});
    persist(std::move(b), [this] { compensate_next(); });
  }

  // -- compensation ---------------------------------------------------------------

  void compensate_next() {
    while (rec_.step > 0) {
      const auto& name = rec_.completed[static_cast<size_t>(rec_.step - 1)];
      auto k = def_->index_of(name);
      if (k < 0) {
        compensation_gave_up(name,
                             not_found_error("step " + name + " is no longer in the definition"));
        return;
      }
      comp_step_ = &def_->steps()[static_cast<size_t>(k)];
      if (!comp_step_->options.compensatable || !comp_step_->compensate) {
        rec_.step -= 1;
        continue;
      }
      if (clock_type::now() >= rollback_due_) {
        compensation_gave_up(
            name, deadline_exceeded_error("rollback deadline of "
                                          + std::to_string(def_->rollback_deadline().count())
                                          + " ms passed before compensating step " + name));
        return;
      }
      start_attempts();
      auto b = batch();
      put_record(b);
      event(b, "compensation_started", name, attempt_, {{"after_crash", after_crash_}});
      persist(std::move(b), [this] { invoke(true); });
      return;
    }
    if (rec_.compensation_failure) {
      rec_.reason = "compensation failed for " + failed_compensations()
                    + "; their side effects may remain: see the saga's failure and history";
      finish(saga_state::needs_intervention, "needs_intervention");
    } else {
      finish(saga_state::rolled_back, "rolled_back");
    }
  }

  std::string failed_compensations() const {
    std::string out;
    for (const auto& n : failed_comp_names_)
      out += (out.empty() ? "step " : ", step ") + n;
    return out.empty() ? "a step (before a restart)" : out;
  }

  void compensation_result(error err) {
    const auto& name = comp_step_->name;
    ctx_.reset();
    if (!err) {
      rec_.step -= 1;
      auto b = batch();
      put_record(b);
      event(b, "compensation_completed", name, attempt_);
      persist(std::move(b), [this] { compensate_next(); });
      return;
    }
    const auto& rp = comp_step_->options.compensation_retry;
    auto d = decide_retry(rp, err);
    if (d && clock_type::now() + d.delay < rollback_due_) {
      schedule_retry(err, d.delay, "compensation_failed", name);
      return;
    }
    if (d.verdict == retry_verdict::time_spent)
      err = out_of_time(rp, std::move(err));
    compensation_gave_up(name, std::move(err));
  }

  /// Records a compensator that will not succeed and goes on with the others.
  void compensation_gave_up(const std::string& name, error err) {
    auto e = wrap(err, "compensate step " + name);
    failed_comp_names_.push_back(name);
    rec_.compensation_failure = keel::join(rec_.compensation_failure, e);
    rec_.step -= 1;
    auto b = batch();
    put_record(b);
    event(b, "compensation_failed", name, attempt_, {{"error", to_json(err)}, {"final", true}});
    persist(std::move(b), [this] { compensate_next(); });
  }

  // -- the end ------------------------------------------------------------------

  void finish(saga_state s, std::string type, store::write_batch b = {}) {
    rec_.state = s;
    if (s == saga_state::rolled_back || s == saga_state::completed)
      rec_.step = s == saga_state::completed ? static_cast<int32_t>(def_->steps().size()) : 0;
    if (b.empty())
      b = batch();
    put_record(b);
    boost::json::object detail;
    if (rec_.failure)
      detail["error"] = to_json(rec_.failure);
    if (rec_.compensation_failure)
      detail["compensation_errors"] = to_json(rec_.compensation_failure);
    if (!rec_.reason.empty())
      detail["reason"] = rec_.reason;
    event(b, std::move(type), "", 0, std::move(detail));
    b.release_lease(lease_, env_->cfg.owner);
    persist(std::move(b), [this] {
      phase_ = phase::finished;
      auto out = to_outcome(rec_);
      auto ptr = std::make_shared<const outcome>(
          out ? std::move(*out)
              : outcome{rec_.id, rec_.kind, rec_.state, out.error(), rec_.reason, data_});
      send(parent_, ks_done_atom::value, rec_.id, ptr);
      quit();
    });
  }

  /// Answers the `begin` of a fresh saga (once).
  void answer_begin(error err) {
    if (begun_.pending())
      begun_.deliver(std::move(err));
  }

  void report_abort(const error& err) {
    answer_begin(err);
    if (phase_ == phase::finished)
      return;
    phase_ = phase::finished;
    auto ptr = std::make_shared<const outcome>(
        outcome{rec_.id, rec_.kind, rec_.state, err, std::string{}, data_});
    send(parent_, ks_done_atom::value, rec_.id, ptr);
  }

  std::shared_ptr<const env> env_;
  caf::actor parent_;
  const definition* def_;
  store::saga_record rec_;
  bool fresh_;
  caf::response_promise begun_;
  std::string lease_;
  std::string stream_;
  std::mt19937_64 rng_;
  saga::data data_;
  error bad_data_;
  phase phase_ = phase::opening;
  uint64_t token_ = 0;
  uint32_t attempt_ = 1;
  clock_type::time_point first_attempt_at_ = clock_type::now(); // of the current step
  std::chrono::nanoseconds retry_delay_{0};                     // before the current attempt
  bool after_crash_ = false;
  bool unknown_outcome_ = false;
  bool clipped_ = false;       // the action's timeout is the rollback deadline
  bool maybe_applied_ = false; // an attempt of the current step timed out or was abandoned
  std::shared_ptr<step_context> ctx_;
  const saga::step* comp_step_ = nullptr;
  error cancel_error_;
  std::vector<std::string> failed_comp_names_;
  clock_type::time_point rollback_due_;
};

// -- the coordinator actor ---------------------------------------------------------

struct coordinator_state {
  std::map<std::string, caf::actor, std::less<>> runners;
  std::map<caf::actor_addr, std::string> by_addr;
  std::map<std::string, std::vector<caf::response_promise>, std::less<>> waiters;
  std::vector<caf::response_promise> stoppers;
  bool stopping = false;
};

caf::behavior coordinator_actor(caf::stateful_actor<coordinator_state>* self,
                                std::shared_ptr<const env> e) {
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
    return to_caf(wrap(make_panic_error(ep), "saga coordinator failed"));
  });
  auto spawn_runner = [self, e](store::saga_record rec, bool fresh,
                                caf::response_promise begun = {}) {
    auto id = rec.id;
    auto r = self->spawn<runner, caf::monitored>(e, caf::actor_cast<caf::actor>(self),
                                                 std::move(rec), fresh, std::move(begun));
    self->state.by_addr.emplace(r.address(), id);
    self->state.runners.emplace(std::move(id), std::move(r));
  };
  auto deliver = [self](const std::string& id, const outcome_ptr& out, const error& err) {
    auto it = self->state.waiters.find(id);
    if (it == self->state.waiters.end())
      return;
    for (auto& rp : it->second) {
      if (err)
        rp.deliver(to_caf(err));
      else
        rp.deliver(out);
    }
    self->state.waiters.erase(it);
  };
  auto maybe_stopped = [self] {
    if (self->state.stopping && self->state.runners.empty()) {
      for (auto& rp : self->state.stoppers)
        rp.deliver(ks_stop_atom::value);
      self->state.stoppers.clear();
    }
  };
  self->set_down_handler([self, deliver, maybe_stopped](caf::down_msg& dm) {
    auto it = self->state.by_addr.find(dm.source);
    if (it == self->state.by_addr.end())
      return;
    auto id = it->second;
    self->state.by_addr.erase(it);
    // A runner that reported its end (ks_done) was already removed.
    if (self->state.runners.erase(id) == 0) {
      maybe_stopped();
      return;
    }
    deliver(id, nullptr,
            aborted_error("saga " + id + ": its runner stopped ("
                          + (dm.reason ? self->system().render(dm.reason) : std::string{"normal"})
                          + ") before the saga ended; it resumes on the next start"));
    maybe_stopped();
  });
  return {
      [self, e, spawn_runner](ks_begin_atom, const std::string& kind, const std::string& id,
                              const std::string& data_text) -> caf::result<error> {
        if (self->state.stopping)
          return error{unavailable_error("saga coordinator is stopping")};
        if (!e->defs.count(kind))
          return error{not_found_error("no saga definition named \"" + kind + "\"")};
        if (id.empty())
          return error{invalid_argument_error("saga id is empty")};
        if (self->state.runners.count(id))
          return error{already_exists_error("saga " + id + " is already running")};
        auto known = e->journal->saga(id);
        if (!known)
          return known.error();
        if (*known)
          return error{already_exists_error("saga " + id + " already exists in "
                                            + e->journal->describe() + " (state "
                                            + std::string{to_string((*known)->state)} + ")")};
        if (auto d = saga::data::parse(data_text); !d)
          return d.error();
        store::saga_record rec;
        rec.id = id;
        rec.kind = kind;
        rec.mode = "orchestrated";
        rec.data = data_text;
        // The reply waits until the runner has recorded the saga: once
        // `begin` returns, the saga survives a crash.
        spawn_runner(std::move(rec), true, self->make_response_promise());
        return caf::delegated<error>{};
      },
      [self, spawn_runner](ks_resume_atom, const record_list& recs) {
        for (const auto& r : *recs)
          if (!self->state.runners.count(r.id))
            spawn_runner(r, false);
      },
      [self, e](ks_wait_atom, const std::string& id) -> caf::result<outcome_ptr> {
        if (self->state.runners.count(id)) {
          self->state.waiters[id].push_back(self->make_response_promise());
          return caf::delegated<outcome_ptr>{};
        }
        auto rec = e->journal->saga(id);
        if (!rec)
          return to_caf(rec.error());
        if (!*rec)
          return to_caf(not_found_error("no saga " + id + " in " + e->journal->describe()));
        if (!is_terminal((*rec)->state))
          return to_caf(failed_precondition_error(
              "saga " + id + " is " + std::string{to_string((*rec)->state)}
              + " but not running in this coordinator (another owner holds it, or it was not "
                "resumed)"));
        auto out = to_outcome(**rec);
        if (!out)
          return to_caf(out.error());
        return std::make_shared<const outcome>(std::move(*out));
      },
      [self, deliver, maybe_stopped](ks_done_atom, const std::string& id, const outcome_ptr& out) {
        self->state.runners.erase(id);
        deliver(id, out, is_terminal(out->state) ? error{} : out->failure);
        maybe_stopped();
      },
      [self](ks_cancel_atom, const std::string& id) -> error {
        auto it = self->state.runners.find(id);
        if (it == self->state.runners.end())
          return not_found_error("saga " + id + " is not running here");
        self->send(it->second, ks_cancel_atom::value);
        return {};
      },
      [self](ks_count_atom) { return static_cast<uint64_t>(self->state.runners.size()); },
      [self, maybe_stopped](ks_stop_atom) -> caf::result<ks_stop_atom> {
        self->state.stopping = true;
        if (self->state.runners.empty())
          return ks_stop_atom::value;
        self->state.stoppers.push_back(self->make_response_promise());
        for (auto& [id, r] : self->state.runners)
          self->send_exit(r, caf::exit_reason::user_shutdown);
        return caf::delegated<ks_stop_atom>{};
      },
  };
}

std::string default_owner() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0)
    host[0] = '\0';
  return std::string{host} + ":" + std::to_string(getpid());
}

} // namespace
} // namespace detail

// -- coordinator --------------------------------------------------------------------

struct coordinator::impl {
  caf::actor_system& sys;
  std::shared_ptr<const detail::env> env;
  caf::actor actor;
  caf::actor writer;
  std::vector<std::string> resumed;
  bool stopped = false;

  impl(caf::actor_system& s, std::shared_ptr<const detail::env> e) : sys(s), env(std::move(e)) {}
};

coordinator::coordinator(std::shared_ptr<store::journal> j, std::unique_ptr<impl> p)
    : saga_queries(std::move(j)), impl_(std::move(p)) {}
coordinator::coordinator(coordinator&&) noexcept = default;
coordinator& coordinator::operator=(coordinator&&) noexcept = default;

coordinator::~coordinator() {
  if (impl_)
    stop();
}

expected<coordinator> coordinator::start(caf::actor_system& sys, std::shared_ptr<store::journal> j,
                                         std::vector<definition> defs, coordinator_config cfg) {
  if (!j)
    return invalid_argument_error("saga coordinator: no journal");
  if (cfg.owner.empty())
    cfg.owner = detail::default_owner();
  if (cfg.lease_ttl < std::chrono::milliseconds(3))
    return invalid_argument_error("saga coordinator: lease_ttl must be at least 3 ms");
  auto e = std::make_shared<detail::env>();
  for (auto& d : defs) {
    if (auto ok = d.validate(); !ok)
      return ok.error();
    auto kind = d.kind();
    if (!e->defs.emplace(kind, std::move(d)).second)
      return invalid_argument_error("saga coordinator: two definitions named \"" + kind + "\"");
  }
  // Read before anything runs: a journal that cannot be read fails the start.
  store::saga_filter open_only;
  open_only.unfinished_only = true;
  auto unfinished = j->sagas(open_only);
  if (!unfinished)
    return wrap(std::move(unfinished).error(), "saga coordinator: cannot load unfinished sagas");
  e->journal = j;
  e->cfg = std::move(cfg);
  e->writer = store::spawn_journal_writer(sys, j, e->cfg.writer);
  auto p = std::make_unique<impl>(sys, e);
  p->writer = e->writer;
  p->actor = sys.spawn(detail::coordinator_actor, std::shared_ptr<const detail::env>{e});
  if (e->cfg.resume) {
    auto recs = std::make_shared<std::vector<store::saga_record>>();
    for (auto& r : *unfinished) {
      if (r.mode != "orchestrated" || !e->defs.count(r.kind))
        continue;
      p->resumed.push_back(r.id);
      recs->push_back(std::move(r));
    }
    if (!recs->empty())
      caf::anon_send(p->actor, detail::ks_resume_atom::value, detail::record_list{std::move(recs)});
  }
  return coordinator{j, std::move(p)};
}

namespace {

/// A blocking request to the coordinator actor.
template <class T, class... Ts>
expected<T> ask(caf::actor_system& sys, const caf::actor& a, std::chrono::milliseconds timeout,
                Ts&&... xs) {
  caf::scoped_actor self{sys};
  expected<T> result = internal_error("saga coordinator: no reply");
  self->request(a, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& x) { result = std::move(x); },
               [&](caf::error& err) { result = from_caf_error(err); });
  return result;
}

/// A blocking request whose reply is a keel::error (empty: success).
template <class... Ts>
error ask_status(caf::actor_system& sys, const caf::actor& a, Ts&&... xs) {
  caf::scoped_actor self{sys};
  error result = internal_error("saga coordinator: no reply");
  self->request(a, std::chrono::minutes(1), std::forward<Ts>(xs)...)
      .receive([&](error& x) { result = std::move(x); },
               [&](caf::error& err) { result = from_caf_error(err); });
  return result;
}

} // namespace

expected<void> coordinator::begin(const std::string& kind, const std::string& id, saga::data d) {
  if (auto err = ask_status(impl_->sys, impl_->actor, begin_atom::value, kind, id, d.to_string()))
    return err;
  return {};
}

expected<outcome> coordinator::wait(const std::string& id, std::chrono::milliseconds timeout) {
  auto r = ask<outcome_ptr>(impl_->sys, impl_->actor, timeout, detail::ks_wait_atom::value, id);
  if (!r)
    return std::move(r).error();
  return **r;
}

expected<outcome> coordinator::run(const std::string& kind, const std::string& id, saga::data d,
                                   std::chrono::milliseconds timeout) {
  if (auto ok = begin(kind, id, std::move(d)); !ok)
    return ok.error();
  return wait(id, timeout);
}

expected<void> coordinator::cancel(const std::string& id) {
  if (auto err = ask_status(impl_->sys, impl_->actor, cancel_atom::value, id))
    return err;
  return {};
}

const std::vector<std::string>& coordinator::resumed() const noexcept {
  return impl_->resumed;
}

size_t coordinator::in_flight() {
  auto r = ask<uint64_t>(impl_->sys, impl_->actor, std::chrono::minutes(1),
                         detail::ks_count_atom::value);
  return r ? static_cast<size_t>(*r) : 0;
}

caf::actor coordinator::actor() const {
  return impl_->actor;
}

void coordinator::stop() {
  if (!impl_ || impl_->stopped)
    return;
  impl_->stopped = true;
  caf::scoped_actor self{impl_->sys};
  // Runners first (their queued writes still commit), then the coordinator,
  // then the writer, which commits what is queued before it quits.
  self->request(impl_->actor, std::chrono::minutes(1), detail::ks_stop_atom::value)
      .receive([](detail::ks_stop_atom) {}, [](caf::error&) {});
  for (const auto& a : {impl_->actor, impl_->writer}) {
    self->monitor(a);
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
  }
  // Leases of sagas left unfinished are given back, so another owner can
  // take them at once.
  store::saga_filter open_only;
  open_only.unfinished_only = true;
  auto unfinished = impl_->env->journal->sagas(open_only);
  if (unfinished) {
    store::write_batch b;
    for (const auto& r : *unfinished)
      b.release_lease(store::saga_lease(r.id), impl_->env->cfg.owner);
    if (!b.empty())
      (void)impl_->env->journal->commit(b);
  }
}

} // namespace keel::saga
