// Supervision actors: the stage cell (a supervised stage with a stable address)
// and the supervisor. Both live in this one translation unit to keep CAF's
// compile cost in one place.
//
// Protocol between a supervisor and its stage cells (private atoms):
//   cell -> supervisor  (k_failed, index, incarnation, startup, error)
//   cell -> supervisor  (k_started, index, incarnation)
//   supervisor -> cell  (k_restart, target incarnation, delay ns)
//   supervisor -> cell  (k_resume) | (k_stop, error) | exit(user_shutdown)
// Control messages travel with high priority, so that a directive overtakes the
// user messages already queued for a stage (they are stashed, not lost).
// A stage restarts in place: the cell drops its behavior (and the state the
// behavior captured) and calls the factory again; its address never changes.
// Messages arriving meanwhile go to a bounded stash and are replayed in order,
// the failed message first, with the original sender and request id.

#include "keel/supervision.hpp"

#include "keel/error/caf.hpp"
#include "keel/error/format.hpp"
#include "keel/error/panic.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/detail/invoke_result_visitor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/response_promise.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <random>

namespace keel {

namespace {

using k_failed_atom = caf::atom_constant<caf::atom("k_failed")>;
using k_started_atom = caf::atom_constant<caf::atom("k_started")>;
using k_restart_atom = caf::atom_constant<caf::atom("k_restart")>;
using k_resume_atom = caf::atom_constant<caf::atom("k_resume")>;
using k_stop_atom = caf::atom_constant<caf::atom("k_stop")>;
using k_tick_atom = caf::atom_constant<caf::atom("k_tick")>;
using k_respawn_atom = caf::atom_constant<caf::atom("k_respawn")>;
using k_kill_atom = caf::atom_constant<caf::atom("k_kill")>;

using clock_type = caf::actor_clock::clock_type;
using time_point = caf::actor_clock::time_point;

/// What a supervisor hands down to its children and nested supervisors.
struct inherited {
  decider decide;
  std::shared_ptr<dead_letter_sink> dead_letters;
  std::shared_ptr<event_sink> events;
  uint64_t seed = 0;
};

void emit(const std::shared_ptr<event_sink>& sink, supervision_event e) {
  if (!sink)
    return;
  e.time = std::chrono::system_clock::now();
  sink->on_event(e);
}

bool is_normal_exit(const caf::error& reason) {
  return !reason || reason == caf::exit_reason::normal;
}

// -- stage cell ----------------------------------------------------------------

struct stage_setup {
  std::string path;
  std::string supervisor_path;
  stage_factory factory;
  uint32_t max_attempts = 3;
  stash_policy stash;
  std::shared_ptr<dead_letter_sink> dead_letters;
  std::shared_ptr<event_sink> events;
  caf::actor supervisor;
  size_t index = 0;
  uint32_t incarnation = 0;
};

/// What running a handler on a message gave.
struct outcome {
  enum kind_t { value, delegated, unhandled, failure } kind = unhandled;
  caf::message result;
  error err;
};

/// Collects the result of invoking a behavior.
class result_visitor final : public caf::detail::invoke_result_visitor {
public:
  explicit result_visitor(outcome& out) : out_(out) {}

  void operator()() override { out_.kind = outcome::delegated; }

  void operator()(caf::error& x) override {
    if (!x) {
      out_.kind = outcome::value;
      return;
    }
    out_.kind = outcome::failure;
    out_.err = from_caf_error(x);
  }

  void operator()(caf::message& x) override {
    if (x.size() == 1 && x.match_element<error>(0)) {
      const auto& err = x.get_as<error>(0);
      if (err) {
        out_.kind = outcome::failure;
        out_.err = err;
        return;
      }
      out_.kind = outcome::value;
      return; // an empty keel::error means "no error": an empty reply
    }
    out_.kind = outcome::value;
    out_.result = std::move(x);
  }

  void operator()(const caf::none_t&) override { out_.kind = outcome::value; }

private:
  outcome& out_;
};

class stage_cell final : public caf::event_based_actor, public stage_context {
public:
  stage_cell(caf::actor_config& cfg, stage_setup setup)
      : caf::event_based_actor(cfg), setup_(std::move(setup)), incarnation_(setup_.incarnation),
        target_(setup_.incarnation) {}

  const char* name() const override { return "keel.stage"; }

  caf::behavior make_behavior() override {
    set_default_handler(
        [](caf::scheduled_actor* p, caf::message_view& mv) -> caf::result<caf::message> {
          return static_cast<stage_cell*>(p)->on_message(mv);
        });
    // Only reached by exceptions outside keel's guards (e.g. an unguarded
    // continuation): the cell cannot go on, it exits with the panic error and
    // its supervisor handles that like a crash.
    set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
      return to_caf_error(make_panic_error(ep));
    });
    set_exit_handler([](caf::scheduled_actor* p, caf::exit_msg& x) {
      static_cast<stage_cell*>(p)->quit(std::move(x.reason));
    });
    start_instance();
    return {
        [this](k_restart_atom, uint32_t target, int64_t delay_ns) { on_restart(target, delay_ns); },
        [this](k_tick_atom, uint64_t token) {
          if (token == timer_ && mode_ == mode::restarting)
            restart_now();
        },
        [this](k_resume_atom) { on_resume(); },
        [this](k_stop_atom, error& reason) { stop_for_good(std::move(reason)); },
    };
  }

  // -- stage_context ----------------------------------------------------------

  caf::event_based_actor* self() noexcept override { return this; }

  const std::string& path() const noexcept override { return setup_.path; }

  uint32_t restarts() const noexcept override { return incarnation_; }

  uint32_t attempt() const noexcept override { return attempt_; }

  void fail(error err) override {
    if (mode_ != mode::running || !err)
      return;
    on_failure(with_detail(std::move(err), stage_info{setup_.path, {}, 0}), false);
  }

  void on_exit() override {
    // Whatever is still held was not handled: dead letters, and every waiting
    // requester gets an answer.
    auto why = unavailable_error("stage " + setup_.path + " stopped before handling the message");
    if (pending_) {
      auto p = std::move(*pending_);
      pending_.reset();
      give_up(*p.elem, p.last ? p.last : why, p.attempts, event_kind::undeliverable);
    }
    while (!stash_.empty()) {
      auto el = std::move(stash_.front());
      stash_.pop_front();
      give_up(*el, why, 0, event_kind::undeliverable);
    }
    inner_ = caf::behavior{};
    setup_.supervisor = nullptr;
    // The factory's closure may hold state that refers to other actors (a
    // pipeline worker's links); a terminated cell must not keep it alive.
    setup_.factory = nullptr;
  }

private:
  enum class mode { running, failed, restarting, stopped };

  struct pending_message {
    caf::mailbox_element_ptr elem;
    uint32_t attempts = 0;
    error last;
  };

  // -- instance lifetime ------------------------------------------------------

  void start_instance() {
    error err;
    try {
      inner_ = setup_.factory(*this);
      if (!inner_)
        err = failed_precondition_error("stage factory returned an empty behavior");
    } catch (...) {
      err = make_panic_error(std::current_exception());
    }
    if (err) {
      inner_ = caf::behavior{};
      on_failure(with_detail(wrap(std::move(err), "stage " + setup_.path + " failed to start"),
                             stage_info{setup_.path, {}, 0}),
                 true);
      return;
    }
    mode_ = mode::running;
    send<caf::message_priority::high>(setup_.supervisor, k_started_atom::value, setup_.index,
                                      incarnation_);
  }

  void on_restart(uint32_t target, int64_t delay_ns) {
    if (mode_ == mode::stopped)
      return;
    target_ = std::max(target_, target);
    mode_ = mode::restarting;
    inner_ = caf::behavior{}; // the old instance's state goes now
    ++timer_;
    if (delay_ns <= 0)
      restart_now();
    else
      delayed_send<caf::message_priority::high>(this, std::chrono::nanoseconds{delay_ns},
                                                k_tick_atom::value, timer_);
  }

  void restart_now() {
    incarnation_ = target_;
    start_instance();
    if (mode_ == mode::running)
      drain();
  }

  void on_resume() {
    // The supervisor never resumes after a failed start-up (it restarts), so
    // there is always an instance here.
    if (mode_ != mode::failed)
      return;
    mode_ = mode::running;
    drain();
  }

  void stop_for_good(error reason) {
    if (mode_ == mode::stopped)
      return;
    mode_ = mode::stopped;
    inner_ = caf::behavior{};
    quit(to_caf_error(reason)); // on_exit dead-letters what is left
  }

  void on_failure(error err, bool startup) {
    mode_ = mode::failed;
    if (pending_ && pending_->attempts >= setup_.max_attempts) {
      auto p = std::move(*pending_);
      pending_.reset();
      give_up(*p.elem, p.last, p.attempts, event_kind::quarantined);
    }
    send<caf::message_priority::high>(setup_.supervisor, k_failed_atom::value, setup_.index,
                                      incarnation_, startup, std::move(err));
  }

  // -- messages ---------------------------------------------------------------

  caf::result<caf::message> on_message(caf::message_view& mv) {
    auto* el = current_mailbox_element();
    if (mode_ != mode::running) {
      stash(
          caf::make_mailbox_element(el->sender, el->mid, el->stages, mv.move_content_to_message()));
      return caf::delegated<caf::message>{};
    }
    // The hot path runs the handler on the mailbox element's own storage; a
    // copy is made only when the message has to be kept (failure, dead letter).
    attempt_ = 1;
    auto out = invoke(mv.content());
    switch (out.kind) {
      case outcome::value:
        if (!el->mid.is_request())
          return caf::delegated<caf::message>{}; // nobody waits: skip CAF's reply path
        return std::move(out.result);
      case outcome::delegated:
        return caf::delegated<caf::message>{};
      case outcome::unhandled: {
        auto err = unhandled_error();
        dead_letter_of(*el, mv.copy_content_to_message(), err, 1, event_kind::undeliverable);
        return to_caf_error(err);
      }
      case outcome::failure:
        break;
    }
    pending_ = pending_message{
        caf::make_mailbox_element(el->sender, el->mid, el->stages, mv.copy_content_to_message()), 1,
        out.err};
    on_failure(out.err, false);
    return caf::delegated<caf::message>{};
  }

  /// Runs the current instance on `msg`; exceptions become panic errors.
  outcome invoke(caf::type_erased_tuple& msg) {
    outcome out;
    result_visitor visitor{out};
    try {
      auto r = inner_(visitor, msg);
      if (r != caf::match_case::match)
        out.kind = outcome::unhandled;
    } catch (...) {
      out.kind = outcome::failure;
      out.err = make_panic_error(std::current_exception());
    }
    if (out.kind == outcome::failure)
      out.err = with_detail(std::move(out.err), stage_info{setup_.path, {}, attempt_});
    return out;
  }

  /// Replays the failed message, then the stash, in order, while running.
  void drain() {
    auto* previous = current_mailbox_element();
    while (mode_ == mode::running && (pending_ || !stash_.empty())) {
      caf::mailbox_element_ptr el;
      uint32_t attempts = 1;
      if (pending_) {
        el = std::move(pending_->elem);
        attempts = pending_->attempts + 1;
        pending_.reset();
      } else {
        el = std::move(stash_.front());
        stash_.pop_front();
      }
      current_mailbox_element(el.get());
      attempt_ = attempts;
      auto out = invoke(el->content());
      current_mailbox_element(previous);
      switch (out.kind) {
        case outcome::value:
          reply(*el, std::move(out.result));
          break;
        case outcome::delegated:
          break;
        case outcome::unhandled:
          give_up(*el, unhandled_error(), attempts, event_kind::undeliverable);
          break;
        case outcome::failure:
          pending_ = pending_message{std::move(el), attempts, out.err};
          on_failure(out.err, false);
          break;
      }
    }
  }

  void stash(caf::mailbox_element_ptr el) {
    if (stash_.size() >= setup_.stash.capacity) {
      auto err = resource_exhausted_error("stage " + setup_.path + ": stash full ("
                                          + std::to_string(setup_.stash.capacity)
                                          + " messages) while the stage restarts; policy "
                                          + std::string{to_string(setup_.stash.when_full)});
      if (setup_.stash.when_full == stash_full_policy::reject_new || stash_.empty()) {
        give_up(*el, err, 0, event_kind::stash_overflow);
        return;
      }
      auto oldest = std::move(stash_.front());
      stash_.pop_front();
      give_up(*oldest, err, 0, event_kind::stash_overflow);
    }
    stash_.push_back(std::move(el));
  }

  // -- giving up on messages ----------------------------------------------------

  error unhandled_error() const {
    return unimplemented_error("stage " + setup_.path + " has no handler for this message");
  }

  void reply(caf::mailbox_element& el, caf::message msg) {
    if (!el.mid.is_request() || el.mid.is_answered())
      return;
    caf::response_promise rp{ctrl(), el};
    rp.deliver(std::move(msg));
  }

  void reply_error(caf::mailbox_element& el, const error& err) {
    if (!el.mid.is_request() || el.mid.is_answered())
      return;
    caf::response_promise rp{ctrl(), el};
    rp.deliver(to_caf_error(err));
  }

  void dead_letter_of(caf::mailbox_element& el, caf::message payload, const error& err,
                      uint32_t attempts, event_kind why) {
    if (setup_.dead_letters) {
      dead_letter letter;
      letter.stage = setup_.path;
      letter.payload = std::move(payload);
      letter.error = err;
      letter.attempts = attempts;
      letter.time = std::chrono::system_clock::now();
      letter.was_request = el.mid.is_request();
      setup_.dead_letters->put(std::move(letter));
    }
    supervision_event e;
    e.supervisor = setup_.supervisor_path;
    e.child = setup_.path;
    e.kind = why;
    e.error = err;
    e.attempt = attempts;
    emit(setup_.events, std::move(e));
  }

  /// Dead-letters `el` and answers its requester with `err`.
  void give_up(caf::mailbox_element& el, const error& err, uint32_t attempts, event_kind why) {
    dead_letter_of(el, el.copy_content_to_message(), err, attempts, why);
    reply_error(el, err);
  }

  stage_setup setup_;
  caf::behavior inner_;
  mode mode_ = mode::failed;
  uint32_t incarnation_ = 0;
  uint32_t target_ = 0;
  uint32_t attempt_ = 0;
  uint64_t timer_ = 0;
  std::optional<pending_message> pending_;
  std::deque<caf::mailbox_element_ptr> stash_;
};

// -- supervisor ----------------------------------------------------------------

struct child_record {
  child_spec spec;
  std::string path;
  decider decide;
  caf::actor handle;
  child_state state = child_state::running;
  uint32_t restarts = 0;    // restart orders so far (a cell's target incarnation)
  uint32_t consecutive = 0; // restarts without a stable period, for backoff
  time_point last_start{};
  error last_error;
  bool stopping = false;        // we asked it to exit and wait for its down_msg
  bool respawn_pending = false; // a worker/supervisor waits to be spawned again
  bool respawn_due = false;     // its backoff has passed
  uint64_t respawn_token = 0;
  uint64_t kill_token = 0;
};

class supervisor_actor final : public caf::event_based_actor {
public:
  supervisor_actor(caf::actor_config& cfg, std::shared_ptr<const supervisor_config> conf,
                   std::string path, inherited from_parent)
      : caf::event_based_actor(cfg), conf_(std::move(conf)), path_(std::move(path)) {
    // `from_parent` always holds a decider, sinks and a seed (the root's come
    // from root_inheritance); this supervisor's own settings win.
    inh_.decide = conf_->decider.defined() ? conf_->decider : from_parent.decide;
    inh_.dead_letters = conf_->dead_letters ? conf_->dead_letters : from_parent.dead_letters;
    inh_.events = conf_->events ? conf_->events : from_parent.events;
    inh_.seed = conf_->seed != 0 ? conf_->seed : from_parent.seed;
    rng_.seed(inh_.seed);
    children_.reserve(conf_->children.size());
    for (const auto& spec : conf_->children) {
      child_record c;
      c.spec = spec;
      c.path = path_ + "/" + spec.id;
      c.decide = spec.decider.defined() ? spec.decider : inh_.decide;
      children_.push_back(std::move(c));
    }
  }

  const char* name() const override { return "keel.supervisor"; }

  caf::behavior make_behavior() override {
    set_down_handler([](caf::scheduled_actor* p, caf::down_msg& x) {
      static_cast<supervisor_actor*>(p)->on_down(x);
    });
    set_exit_handler([](caf::scheduled_actor* p, caf::exit_msg& x) {
      static_cast<supervisor_actor*>(p)->on_exit_msg(x);
    });
    set_exception_handler([](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
      return to_caf_error(make_panic_error(ep)); // a bug in keel or a decider: fail upwards
    });
    for (size_t i = 0; i < children_.size(); ++i)
      start_child(i);
    return {
        [this](k_failed_atom, size_t i, uint32_t incarnation, bool startup, error& err) {
          on_child_failure(i, incarnation, startup, std::move(err));
        },
        [this](k_started_atom, size_t i, uint32_t incarnation) {
          on_child_started(i, incarnation);
        },
        [this](k_respawn_atom, size_t i, uint64_t token) {
          if (i < children_.size() && children_[i].respawn_token == token) {
            children_[i].respawn_due = true;
            try_respawn();
          }
        },
        [this](k_kill_atom, size_t i, uint64_t token) {
          if (i < children_.size() && children_[i].handle && children_[i].kill_token == token)
            send_exit(children_[i].handle, caf::exit_reason::kill);
        },
        [this](sup_lookup_atom, std::string& path) { return lookup(path); },
        [this](sup_tree_atom) { return tree(); },
    };
  }

  void on_exit() override {
    // Killed (or quitting) with children still alive: they must not outlive us.
    for (auto& c : children_)
      if (c.handle)
        send_exit(c.handle, caf::exit_reason::kill);
    children_.clear();
    // A pending kill timer keeps this (terminated) actor object around for
    // a while; the child specs and their factories must not stay with it.
    conf_.reset();
  }

private:
  // -- events -----------------------------------------------------------------

  void event(event_kind kind, const child_record& c, error err = {}, uint32_t attempt = 0,
             std::chrono::nanoseconds delay = {}, directive d = directive::restart) {
    if (!inh_.events)
      return;
    supervision_event e;
    e.supervisor = path_;
    e.child = c.path;
    e.kind = kind;
    e.decision = d;
    e.error = std::move(err);
    e.attempt = attempt;
    e.delay = delay;
    emit(inh_.events, std::move(e));
  }

  // -- starting ---------------------------------------------------------------

  void start_child(size_t i) {
    auto& c = children_[i];
    c.state = child_state::running;
    c.stopping = false;
    switch (c.spec.kind) {
      case child_spec::kind_t::stage: {
        stage_setup setup;
        setup.path = c.path;
        setup.supervisor_path = path_;
        setup.factory = c.spec.stage;
        setup.max_attempts = std::max<uint32_t>(1, c.spec.max_attempts);
        setup.stash = c.spec.stash;
        setup.dead_letters = inh_.dead_letters;
        setup.events = inh_.events;
        setup.supervisor = caf::actor_cast<caf::actor>(this);
        setup.index = i;
        setup.incarnation = c.restarts;
        c.handle = spawn<stage_cell, caf::monitored>(std::move(setup));
        return; // the cell reports k_started or k_failed
      }
      case child_spec::kind_t::worker: {
        error err;
        try {
          c.handle = c.spec.worker(system());
          if (!c.handle)
            err = failed_precondition_error("worker factory returned no actor");
        } catch (...) {
          err = make_panic_error(std::current_exception());
        }
        if (err) {
          c.handle = nullptr;
          send(this, k_failed_atom::value, i, c.restarts, true,
               wrap(std::move(err), "worker " + c.path + " failed to start"));
          return;
        }
        monitor(c.handle);
        break;
      }
      case child_spec::kind_t::supervisor: {
        inherited down = inh_;
        down.seed = inh_.seed ^ (std::hash<std::string>{}(c.spec.id) * 0x9E3779B97F4A7C15ULL);
        c.handle = spawn<supervisor_actor, caf::monitored>(c.spec.supervisor, c.path, down);
        break;
      }
    }
    c.last_start = clock().now();
    event(event_kind::started, c, {}, c.restarts);
  }

  void on_child_started(size_t i, uint32_t incarnation) {
    if (i >= children_.size())
      return;
    auto& c = children_[i];
    if (incarnation < c.restarts || c.state == child_state::stopped)
      return;
    c.state = child_state::running;
    c.last_start = clock().now();
    event(event_kind::started, c, {}, incarnation);
  }

  // -- failures ---------------------------------------------------------------

  void on_child_failure(size_t i, uint32_t incarnation, bool startup, error err) {
    if (i >= children_.size() || shutting_down_)
      return;
    auto& c = children_[i];
    if (c.state == child_state::stopped || incarnation < c.restarts)
      return; // stale: a restart was ordered since
    c.last_error = err;
    c.state = child_state::failed;
    auto d = c.decide(err);
    bool alive_stage = c.spec.kind == child_spec::kind_t::stage && c.handle;
    if (d == directive::resume && (startup || !alive_stage))
      d = directive::restart; // nothing to resume
    if (d == directive::restart && c.spec.restart == restart_type::temporary)
      d = directive::stop;
    event(event_kind::failed, c, err, c.restarts, {}, d);
    switch (d) {
      case directive::resume:
        c.state = child_state::running;
        event(event_kind::resumed, c);
        send<caf::message_priority::high>(c.handle, k_resume_atom::value);
        break;
      case directive::restart:
        restart(i, err);
        break;
      case directive::stop:
        stop_for_good(i, err);
        break;
      case directive::escalate:
        escalate(wrap(err, "supervisor " + path_ + ": child " + c.spec.id
                               + " failed and the decider escalated"));
        break;
    }
  }

  void on_down(caf::down_msg& x) {
    auto it = std::find_if(children_.begin(), children_.end(),
                           [&](const child_record& c) { return c.handle.address() == x.source; });
    if (it == children_.end())
      return;
    auto i = static_cast<size_t>(it - children_.begin());
    auto& c = *it;
    c.handle = nullptr;
    // Disarm the kill timer of this instance (from ask_to_exit): it must not
    // fire at the instance respawned in its place (kill_token alone stays the
    // same across a respawn).
    ++c.kill_token;
    if (shutting_down_) {
      if (c.state != child_state::stopped) {
        c.state = child_state::stopped;
        event(event_kind::stopped, c);
      }
      if (i == shutdown_cursor_)
        shutdown_next();
      return;
    }
    if (c.stopping) { // we stopped it to restart it
      c.stopping = false;
      try_respawn();
      return;
    }
    if (c.state == child_state::stopped)
      return;
    if (is_normal_exit(x.reason)) {
      if (c.spec.restart == restart_type::permanent) {
        auto err = aborted_error("child " + c.path + " exited normally but is permanent");
        c.last_error = err;
        event(event_kind::failed, c, err, c.restarts, {}, directive::restart);
        restart(i, err);
      } else {
        c.state = child_state::stopped;
        event(event_kind::stopped, c);
      }
      return;
    }
    on_child_failure(i, c.restarts, false, from_caf_error(x.reason));
  }

  // -- decisions --------------------------------------------------------------

  std::chrono::nanoseconds backoff_for(child_record& c, time_point now) {
    const auto& b = conf_->backoff;
    if (c.last_start != time_point{} && now - c.last_start >= b.reset_after)
      c.consecutive = 0;
    auto n = c.consecutive++;
    if (b.min <= std::chrono::nanoseconds::zero())
      return std::chrono::nanoseconds::zero();
    auto max = std::max(b.max, b.min);
    double base = static_cast<double>(b.min.count()) * std::pow(std::max(1.0, b.multiplier), n);
    base = std::min(base, static_cast<double>(max.count()));
    if (b.jitter > 0) {
      std::uniform_real_distribution<double> u{0.0, std::min(b.jitter, 1.0)};
      base *= 1.0 + u(rng_);
    }
    base = std::min(base, static_cast<double>(max.count()));
    return std::chrono::nanoseconds{static_cast<int64_t>(base)};
  }

  void restart(size_t i, const error& cause) {
    auto now = clock().now();
    const auto& in = conf_->intensity;
    restart_times_.push_back(now);
    while (!restart_times_.empty() && now - restart_times_.front() > in.within)
      restart_times_.pop_front();
    if (restart_times_.size() > in.max_restarts) {
      escalate(wrap(cause, "supervisor " + path_ + ": more than " + std::to_string(in.max_restarts)
                               + " restarts within " + std::to_string(in.within.count())
                               + "ms (restart intensity)"));
      return;
    }
    auto delay = backoff_for(children_[i], now);
    size_t first = i;
    size_t last = i + 1;
    if (conf_->strategy == restart_strategy::one_for_all) {
      first = 0;
      last = children_.size();
    } else if (conf_->strategy == restart_strategy::rest_for_one) {
      last = children_.size();
    }
    // Siblings go down in reverse start order and come back in start order.
    for (size_t j = last; j-- > first;)
      if (j == i || children_[j].state != child_state::stopped)
        order_restart(j, delay);
    try_respawn();
  }

  void order_restart(size_t j, std::chrono::nanoseconds delay) {
    auto& c = children_[j];
    ++c.restarts;
    c.state = child_state::restarting;
    event(event_kind::restarted, c, c.last_error, c.restarts, delay);
    if (c.spec.kind == child_spec::kind_t::stage && c.handle) {
      send<caf::message_priority::high>(c.handle, k_restart_atom::value, c.restarts,
                                        static_cast<int64_t>(delay.count()));
      return;
    }
    // Workers, nested supervisors and dead cells: stop (if alive), spawn anew.
    c.respawn_pending = true;
    c.respawn_due = delay <= std::chrono::nanoseconds::zero();
    ++c.respawn_token;
    if (!c.respawn_due)
      delayed_send(this, delay, k_respawn_atom::value, j, c.respawn_token);
    if (c.handle && !c.stopping)
      ask_to_exit(j);
  }

  /// Spawns waiting children in start order: stops at the first that is not
  /// ready yet (still alive or still in backoff).
  void try_respawn() {
    for (size_t j = 0; j < children_.size(); ++j) {
      auto& c = children_[j];
      if (!c.respawn_pending)
        continue;
      if (c.handle || !c.respawn_due)
        return;
      c.respawn_pending = false;
      start_child(j);
    }
  }

  void ask_to_exit(size_t j) {
    auto& c = children_[j];
    c.stopping = true;
    send_exit(c.handle, caf::exit_reason::user_shutdown);
    delayed_send(this, c.spec.shutdown_timeout, k_kill_atom::value, j, ++c.kill_token);
  }

  void stop_for_good(size_t i, const error& why) {
    auto& c = children_[i];
    c.state = child_state::stopped;
    c.respawn_pending = false;
    event(event_kind::stopped, c, why);
    if (!c.handle)
      return;
    if (c.spec.kind == child_spec::kind_t::stage)
      send<caf::message_priority::high>(c.handle, k_stop_atom::value, why);
    else
      ask_to_exit(i);
  }

  void escalate(error why) {
    if (shutting_down_)
      return;
    supervision_event e;
    e.supervisor = path_;
    e.child = path_;
    e.kind = event_kind::escalated;
    e.decision = directive::escalate;
    e.error = why;
    emit(inh_.events, std::move(e));
    shutdown(to_caf_error(why));
  }

  // -- shutdown ---------------------------------------------------------------

  void on_exit_msg(caf::exit_msg& x) {
    if (x.reason == caf::exit_reason::kill) {
      quit(std::move(x.reason));
      return;
    }
    shutdown(std::move(x.reason));
  }

  /// Stops the children one by one in reverse start order, each given its
  /// shutdown timeout, then quits with `reason`.
  void shutdown(caf::error reason) {
    if (shutting_down_)
      return;
    shutting_down_ = true;
    exit_reason_ = std::move(reason);
    for (auto& c : children_)
      c.respawn_pending = false;
    shutdown_cursor_ = children_.size();
    shutdown_next();
  }

  void shutdown_next() {
    while (shutdown_cursor_ > 0) {
      auto i = --shutdown_cursor_;
      auto& c = children_[i];
      if (c.handle) {
        ask_to_exit(i);
        return; // continues in on_down
      }
      if (c.state != child_state::stopped) {
        c.state = child_state::stopped;
        event(event_kind::stopped, c);
      }
    }
    quit(std::move(exit_reason_));
  }

  // -- queries ----------------------------------------------------------------

  caf::result<caf::actor> lookup(const std::string& path) {
    auto slash = path.find('/');
    auto head = path.substr(0, slash);
    auto it = std::find_if(children_.begin(), children_.end(),
                           [&](const child_record& c) { return c.spec.id == head; });
    if (it == children_.end())
      return to_caf_error(not_found_error("supervisor " + path_ + " has no child '" + head + "'"));
    if (!it->handle)
      return to_caf_error(
          unavailable_error("child " + it->path + " is " + std::string{to_string(it->state)}));
    if (slash == std::string::npos)
      return it->handle;
    if (it->spec.kind != child_spec::kind_t::supervisor)
      return to_caf_error(not_found_error("child " + it->path
                                          + " is not a supervisor; cannot look up '"
                                          + path.substr(slash + 1) + "' under it"));
    auto rp = make_response_promise<caf::actor>();
    return rp.delegate(it->handle, sup_lookup_atom::value, path.substr(slash + 1));
  }

  tree_node node_of(const child_record& c) const {
    tree_node n;
    n.id = c.spec.id;
    n.path = c.path;
    n.kind = c.spec.kind;
    n.state = c.state;
    n.restart = c.spec.restart;
    n.restarts = c.restarts;
    n.last_error = c.last_error;
    n.address = c.handle;
    if (c.spec.kind == child_spec::kind_t::supervisor)
      n.strategy = c.spec.supervisor->strategy;
    return n;
  }

  caf::result<tree_node> tree() {
    struct gather {
      tree_node root;
      size_t waiting = 0;
    };
    auto g = std::make_shared<gather>();
    g->root.id = conf_->name;
    g->root.path = path_;
    g->root.kind = child_spec::kind_t::supervisor;
    g->root.strategy = conf_->strategy;
    g->root.state = shutting_down_ ? child_state::stopped : child_state::running;
    g->root.address = caf::actor_cast<caf::actor>(this);
    for (const auto& c : children_)
      g->root.children.push_back(node_of(c));
    auto rp = make_response_promise<tree_node>();
    for (size_t i = 0; i < children_.size(); ++i) {
      const auto& c = children_[i];
      if (c.spec.kind != child_spec::kind_t::supervisor || !c.handle)
        continue;
      ++g->waiting;
      request(c.handle, std::chrono::seconds(5), sup_tree_atom::value)
          .then(
              [g, i, rp](tree_node& sub) mutable {
                g->root.children[i].children = std::move(sub.children);
                if (--g->waiting == 0)
                  rp.deliver(std::move(g->root));
              },
              [g, i, rp](caf::error& err) mutable {
                g->root.children[i].last_error = from_caf_error(err);
                if (--g->waiting == 0)
                  rp.deliver(std::move(g->root));
              });
    }
    if (g->waiting == 0)
      rp.deliver(std::move(g->root));
    return rp;
  }

  std::shared_ptr<const supervisor_config> conf_;
  std::string path_;
  inherited inh_;
  std::mt19937_64 rng_;
  std::vector<child_record> children_;
  std::deque<time_point> restart_times_;
  bool shutting_down_ = false;
  size_t shutdown_cursor_ = 0;
  caf::error exit_reason_;
};

inherited root_inheritance(supervisor_config& cfg) {
  inherited inh;
  inh.decide = decider::standard();
  if (!cfg.dead_letters)
    cfg.dead_letters = std::make_shared<memory_dead_letter_sink>();
  inh.dead_letters = cfg.dead_letters;
  inh.events = cfg.events;
  inh.seed = cfg.seed != 0 ? cfg.seed : std::random_device{}();
  return inh;
}

} // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_config cfg) {
  auto inh = root_inheritance(cfg);
  auto path = cfg.name;
  return sys.spawn<supervisor_actor>(std::make_shared<const supervisor_config>(std::move(cfg)),
                                     std::move(path), std::move(inh));
}

// -- supervision_tree -------------------------------------------------------------

struct supervision_tree::state {
  mutable std::mutex mtx;
  mutable std::condition_variable cv;
  bool exited = false; // the root has exited; callbacks may still be running
  bool done = false;   // ... and they have run
  error reason;
  std::vector<std::function<void(const error&)>> callbacks;
  std::shared_ptr<dead_letter_sink> dead_letters;
};

supervision_tree::supervision_tree(caf::actor root, std::shared_ptr<state> st)
    : root_(std::move(root)), state_(std::move(st)) {}

supervision_tree supervision_tree::start(caf::actor_system& sys, supervisor_config cfg) {
  auto st = std::make_shared<state>();
  if (!cfg.dead_letters)
    cfg.dead_letters = std::make_shared<memory_dead_letter_sink>();
  st->dead_letters = cfg.dead_letters;
  auto root = spawn_supervisor(sys, std::move(cfg));
  caf::actor_cast<caf::abstract_actor*>(root)->attach_functor([st](const caf::error& reason) {
    error why;
    if (!is_normal_exit(reason) && reason != caf::exit_reason::user_shutdown)
      why = from_caf_error(reason);
    {
      std::lock_guard<std::mutex> guard{st->mtx};
      st->exited = true;
      st->reason = why;
    }
    // Callbacks run before `done` is set, so that `wait()` returns only after
    // every callback registered before the exit has run.
    for (;;) {
      std::vector<std::function<void(const error&)>> callbacks;
      {
        std::lock_guard<std::mutex> guard{st->mtx};
        callbacks.swap(st->callbacks);
        if (callbacks.empty()) {
          st->done = true;
          break;
        }
      }
      for (auto& f : callbacks)
        f(why);
    }
    st->cv.notify_all();
  });
  return supervision_tree{std::move(root), std::move(st)};
}

supervision_tree& supervision_tree::operator=(supervision_tree&& other) noexcept {
  if (this != &other) {
    if (state_ && root_ && !done())
      static_cast<void>(shutdown());
    root_ = std::move(other.root_);
    state_ = std::move(other.state_);
  }
  return *this;
}

supervision_tree::~supervision_tree() {
  if (state_ && root_ && !done())
    static_cast<void>(shutdown());
}

const caf::actor& supervision_tree::root() const noexcept {
  return root_;
}

expected<caf::actor> supervision_tree::child(std::string_view path,
                                             std::chrono::milliseconds timeout) const {
  caf::scoped_actor self{root_->home_system()};
  expected<caf::actor> result = unknown_error("no reply");
  self->request(root_, timeout, sup_lookup_atom::value, std::string{path})
      .receive([&](caf::actor& a) { result = std::move(a); },
               [&](caf::error& err) { result = from_caf_error(err); });
  return result;
}

expected<tree_node> supervision_tree::tree(std::chrono::milliseconds timeout) const {
  caf::scoped_actor self{root_->home_system()};
  expected<tree_node> result = unknown_error("no reply");
  self->request(root_, timeout, sup_tree_atom::value)
      .receive([&](tree_node& t) { result = std::move(t); },
               [&](caf::error& err) { result = from_caf_error(err); });
  return result;
}

const std::shared_ptr<dead_letter_sink>& supervision_tree::dead_letters() const noexcept {
  return state_->dead_letters;
}

void supervision_tree::on_exit(std::function<void(const error&)> f) {
  std::unique_lock<std::mutex> guard{state_->mtx};
  if (!state_->exited) {
    state_->callbacks.push_back(std::move(f));
    return;
  }
  auto why = state_->reason;
  guard.unlock();
  f(why);
}

bool supervision_tree::done() const {
  std::lock_guard<std::mutex> guard{state_->mtx};
  return state_->done;
}

error supervision_tree::wait() const {
  std::unique_lock<std::mutex> guard{state_->mtx};
  state_->cv.wait(guard, [&] { return state_->done; });
  return state_->reason;
}

std::optional<error> supervision_tree::wait_for(std::chrono::nanoseconds timeout) const {
  std::unique_lock<std::mutex> guard{state_->mtx};
  if (!state_->cv.wait_for(guard, timeout, [&] { return state_->done; }))
    return std::nullopt;
  return state_->reason;
}

error supervision_tree::shutdown() {
  caf::anon_send_exit(root_, caf::exit_reason::user_shutdown);
  return wait();
}

} // namespace keel
