// The actors of a pipeline run; the only translation unit of pipelines that
// uses CAF.
//
// Topology of a run (-> carries batches, acknowledged per link):
//
//   source -> stage 0 workers -> stage 1 workers -> ... -> coordinator
//
// An ordered stage with several workers gets a resequencer in front:
//
//   upstream -> resequencer -> workers -> resequencer -> downstream
//
// Flow control: a link (sender, receiver) starts with `credit` batches; the
// receiver acknowledges a batch once its outputs have left (or when it drops
// them), which gives the credit back. A worker whose outputs cannot leave
// keeps them and withholds its acknowledgements, so back-pressure reaches the
// source and no queue grows past credit * links batches.
//
// End of stream: every node forwards `eos` once it has one from each of its
// upstreams, has no retries waiting and no outputs queued. The coordinator
// finishes the run when every last node has sent `eos`, then shuts the stage
// supervisor down and waits for every actor of the run to terminate.
//
// Cancellation: the coordinator sends `cancel` (high priority) to every node;
// from then on items end as cancelled instead of being processed, waiting
// retries are dropped as cancelled, and `eos` flows at once.

#include "keel/pipeline/run.hpp"
#include "keel/error/aggregate.hpp"
#include "keel/error/caf.hpp"
#include "keel/error/format.hpp"
#include "keel/error/panic.hpp"
#include "keel/supervision/supervisor.hpp"

#include <caf/all.hpp>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>

namespace keel::pipeline_detail {

using kp_batch_atom = caf::atom_constant<caf::atom("kp_batch")>;
using kp_ack_atom = caf::atom_constant<caf::atom("kp_ack")>;
using kp_eos_atom = caf::atom_constant<caf::atom("kp_eos")>;
using kp_cancel_atom = caf::atom_constant<caf::atom("kp_cancel")>;
using kp_tick_atom = caf::atom_constant<caf::atom("kp_tick")>;
using kp_flush_atom = caf::atom_constant<caf::atom("kp_flush")>;
using kp_hello_atom = caf::atom_constant<caf::atom("kp_hello")>;
using kp_wire_atom = caf::atom_constant<caf::atom("kp_wire")>;
using kp_fail_atom = caf::atom_constant<caf::atom("kp_fail")>;
using kp_feed_atom = caf::atom_constant<caf::atom("kp_feed")>;
using kp_close_atom = caf::atom_constant<caf::atom("kp_close")>;
using kp_ok_atom = caf::atom_constant<caf::atom("kp_ok")>;
using kp_dline_atom = caf::atom_constant<caf::atom("kp_dline")>;
using kp_prog_atom = caf::atom_constant<caf::atom("kp_prog")>;

/// A batch in a message. Batches move between local actors only.
struct batch_msg {
  std::shared_ptr<batch_base> ptr;
};

/// Where a node sends, and how many upstreams it waits for.
struct wiring {
  std::vector<caf::actor> downstream;
  /// Credit per downstream link.
  uint32_t credit = 4;
  /// Stage index of the downstream nodes (for queue statistics); -1: coordinator.
  int32_t down_stage = -1;
  /// Number of upstream nodes (eos expected from each).
  uint32_t upstreams = 1;
  /// Send empty output batches too (the receiver is a resequencer).
  bool send_empty = false;
  /// Resequencers: the stage's workers.
  std::vector<caf::actor> workers;
  uint32_t worker_credit = 4;
};

} // namespace keel::pipeline_detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::pipeline_detail::batch_msg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::pipeline_detail::wiring)

namespace keel::pipeline_detail {

namespace {

using clock_type = std::chrono::steady_clock;

uint64_t mix(uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// -- state shared by all nodes of a run ----------------------------------------------

struct run_shared {
  run_config config;
  std::vector<stage_def> stages;
  /// Set (after `reason`) when the run is cancelled, so that a worker in the
  /// middle of a batch stops without waiting for its cancel message.
  std::atomic<bool> cancelled{false};
  std::mutex reason_mtx;
  error reason;

  void cancel(const error& why) {
    {
      std::lock_guard<std::mutex> g{reason_mtx};
      if (!reason)
        reason = why;
    }
    cancelled.store(true, std::memory_order_release);
  }

  error cancel_reason() {
    std::lock_guard<std::mutex> g{reason_mtx};
    return reason;
  }

  std::atomic<uint64_t> next_created_id{0};
  std::atomic<uint64_t> items_seen{0};
  std::atomic<uint64_t> retries_used{0};
  std::optional<clock_type::time_point> deadline;
  uint64_t seed = 0;
};

error deadline_error(const run_shared& run) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*run.config.deadline);
  return deadline_exceeded_error("run " + run.config.name + " exceeded its "
                                 + std::to_string(ms.count()) + "ms deadline");
}

/// What one node recorded; guarded by `mtx` so the coordinator can read it
/// while the run goes on (progress) and after the node has gone.
struct node_record {
  std::mutex mtx;
  stage_stats stats;
  std::vector<item_failure> failures;
  std::vector<dead_item> dead;
  std::vector<item_note> skipped;
  std::vector<item_note> cancelled;
  /// Source only: inputs never read.
  uint64_t not_started = 0;
  /// Most items in flight on one link to the next stage / to this stage's workers.
  uint64_t peak_next = 0;
  uint64_t peak_own = 0;
};

/// Adds the counts of one pass to a stage's statistics.
void add_tally(stage_stats& s, apply_tally& t) noexcept {
  t.add_to(s);
  t = {};
}

// -- outlet: sending with credit --------------------------------------------------------

/// The sending side of a node's links.
class outlet {
public:
  struct link {
    caf::actor to;
    uint32_t credit = 0;
    uint64_t in_flight = 0; // items sent and not acknowledged
  };

  void wire(std::vector<caf::actor> to, uint32_t credit, bool send_empty) {
    links_.clear();
    for (auto& a : to)
      links_.push_back(link{std::move(a), credit, 0});
    send_empty_ = send_empty;
    wired_ = true;
  }

  bool wired() const noexcept { return wired_; }

  bool send_empty() const noexcept { return send_empty_; }

  bool idle() const noexcept { return pending_.empty(); }

  size_t links() const noexcept { return links_.size(); }

  uint64_t peak() const noexcept { return peak_; }

  /// Whether a batch sent now would leave at once.
  bool has_credit() const noexcept {
    if (!pending_.empty())
      return false;
    for (auto& l : links_)
      if (l.credit > 0)
        return true;
    return false;
  }

  /// Sends `b` on the link with the most credit, or queues it.
  void send(caf::event_based_actor* self, std::shared_ptr<batch_base> b) {
    if (b->size() == 0 && !send_empty_)
      return;
    pending_.push_back(std::move(b));
    pump(self);
  }

  /// A receiver gave credit back.
  void on_ack(caf::event_based_actor* self, uint32_t index, uint64_t items) {
    if (index >= links_.size())
      return;
    auto& l = links_[index];
    ++l.credit;
    l.in_flight -= std::min(l.in_flight, items);
    pump(self);
  }

  /// Sends what waits, as credit allows (after wiring).
  void flush(caf::event_based_actor* self) { pump(self); }

  /// Takes every queued batch (cancellation).
  std::deque<std::shared_ptr<batch_base>> take_pending() { return std::exchange(pending_, {}); }

  /// Sends `eos` on every link.
  void send_eos(caf::event_based_actor* self) {
    for (auto& l : links_)
      self->send(l.to, kp_eos_atom::value);
  }

private:
  void pump(caf::event_based_actor* self) {
    while (!pending_.empty()) {
      link* best = nullptr;
      uint32_t index = 0;
      for (size_t k = 0; k < links_.size(); ++k) {
        auto i = (next_ + k) % links_.size();
        if (links_[i].credit > 0 && (!best || links_[i].credit > best->credit)) {
          best = &links_[i];
          index = static_cast<uint32_t>(i);
        }
      }
      if (!best)
        return;
      next_ = (index + 1) % links_.size();
      auto b = std::move(pending_.front());
      pending_.pop_front();
      --best->credit;
      best->in_flight += b->size();
      peak_ = std::max(peak_, best->in_flight);
      self->send(best->to, kp_batch_atom::value, index, batch_msg{std::move(b)});
    }
  }

  std::vector<link> links_;
  std::deque<std::shared_ptr<batch_base>> pending_;
  size_t next_ = 0;
  uint64_t peak_ = 0;
  bool send_empty_ = false;
  bool wired_ = false;
};

/// An acknowledgement a node owes an upstream until its outputs have left.
struct owed_ack {
  caf::actor to;
  uint32_t link;
  uint64_t items;
};

// -- worker ---------------------------------------------------------------------------------

/// State of one stage worker. It outlives the worker's instances: a restart
/// replaces only the stage function (`instance`).
struct worker_state final : item_observer {
  std::shared_ptr<run_shared> run;
  const stage_def* def = nullptr;
  uint32_t stage = 0;
  uint32_t index = 0;
  caf::actor_addr coordinator;
  std::shared_ptr<node_record> record;

  caf::event_based_actor* self = nullptr;
  std::unique_ptr<stage_instance> instance;
  bool hello_sent = false;
  uint32_t restarts = 0;

  outlet out;
  uint32_t upstreams = 0;
  uint32_t eos_seen = 0;
  bool eos_sent = false;
  std::deque<owed_ack> owed;

  std::multimap<clock_type::time_point, std::shared_ptr<batch_base>> retries;
  uint64_t retry_token = 0;
  std::optional<clock_type::time_point> retry_due;
  uint64_t flush_token = 0;
  bool flush_armed = false;

  error cancel_reason;
  std::mt19937_64 rng;
  latency_sampler sampler;
  std::optional<item_context> ctx;
  apply_tally t;
  uint64_t items_in = 0;

  const retry_policy& retry() const {
    return def->options.retry ? *def->options.retry : run->config.retry;
  }

  error_class classify(const error& err) const {
    if (def->options.policy)
      if (auto x = def->options.policy->match(err))
        return *x;
    return run->config.policy.classify(err);
  }

  std::unique_ptr<batch_base> make_output(size_t n) const { return def->make_output(n); }

  // -- item outcomes ------------------------------------------------------------

  void end_cancelled(batch_base& b, size_t i, std::lock_guard<std::mutex>&) {
    record->stats.cancelled++;
    record->cancelled.push_back(item_note{b.key(i).id, def->name, cancel_reason});
  }

  void cancel_rest(batch_base& b) {
    std::lock_guard<std::mutex> g{record->mtx};
    for (size_t i = b.cursor; i < b.size(); ++i)
      end_cancelled(b, i, g);
    b.cursor = b.size();
    if (b.partial) {
      for (size_t i = 0; i < b.partial->size(); ++i)
        end_cancelled(*b.partial, i, g);
      b.partial.reset();
    }
  }

  /// Item `i` of `b` failed with `err` (already attributed to this stage).
  void item_failed(batch_base& b, size_t i, error err) {
    const auto key = b.key(i);
    const auto attempt = b.attempt;
    {
      std::lock_guard<std::mutex> g{record->mtx};
      record->stats.errors_by_code[std::string{keel::to_string(err.code())}]++;
    }
    const auto& rp = retry();
    const auto now = clock_type::now();
    const auto first_failure = attempt == 1 ? now : b.first_failure;
    retry_state st{attempt, b.retry_delay};
    auto decision = cancel_reason ? retry_decision{} : rp.decide(err, st, now - first_failure, rng);
    if (decision) {
      auto used = run->retries_used.fetch_add(1, std::memory_order_relaxed);
      if (run->config.budget.allows(used, run->items_seen.load(std::memory_order_relaxed))) {
        auto one = std::shared_ptr<batch_base>{b.make_empty(1)};
        one->append_from(b, i);
        one->attempt = st.attempts;
        one->trace = b.trace;
        one->ordered = false;
        one->first_failure = first_failure;
        one->retry_delay = st.previous_delay;
        auto due = now + decision.delay;
        retries.emplace(due, std::move(one));
        arm_retry_timer();
        std::lock_guard<std::mutex> g{record->mtx};
        record->stats.retries++;
        return;
      }
      run->retries_used.fetch_sub(1, std::memory_order_relaxed);
      std::lock_guard<std::mutex> g{record->mtx};
      record->stats.retries_denied++;
      err = wrap(std::move(err), "retry budget of the run exhausted");
    } else if (decision.verdict == retry_verdict::time_spent) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(rp.max_elapsed).count();
      err = wrap(std::move(err), "retry time budget of " + std::to_string(ms) + " ms spent after "
                                     + std::to_string(attempt) + " attempts");
    }
    auto cls = classify(err);
    std::lock_guard<std::mutex> g{record->mtx};
    switch (cls) {
      case error_class::skip:
        record->stats.skipped++;
        record->skipped.push_back(item_note{key.id, def->name, std::move(err)});
        return;
      case error_class::poison: {
        record->stats.dead_lettered++;
        dead_item d{key.id,
                    key.origin,
                    def->name,
                    attempt,
                    std::move(err),
                    b.value_of(i),
                    std::chrono::system_clock::now()};
        if (run->config.on_dead_letter)
          run->config.on_dead_letter(d);
        record->dead.push_back(std::move(d));
        return;
      }
      case error_class::critical:
        if (auto c = caf::actor_cast<caf::actor>(coordinator))
          self->send<caf::message_priority::high>(c, kp_fail_atom::value, err);
        [[fallthrough]];
      case error_class::item:
        record->stats.failed++;
        record->failures.push_back(
            item_failure{key.id, key.origin, def->name, attempt, std::move(err)});
        return;
    }
  }

  // -- processing ---------------------------------------------------------------

  /// Runs the stage over `b` from its cursor. A stage exception is rethrown
  /// (after `crashed` recorded the item), so that the supervisor restarts
  /// the worker; the batch is then replayed and resumes after that item.
  void process(batch_base& b) {
    if (!b.partial) // sinks get an empty scratch batch: they emit nothing
      b.partial = make_output(def->kind == stage_kind::sink ? 0 : b.size());
    if (cancel_reason) {
      cancel_rest(b);
      return;
    }
    b.partial->trace = b.trace;
    instance->run(b, *b.partial, *ctx, *this, t, sampler);
    flush_tally();
    if (b.cursor < b.size()) { // stopped by the run's cancellation or deadline
      if (ctx->take_deadline_hit()) {
        run->cancel(deadline_error(*run));
        if (auto c = caf::actor_cast<caf::actor>(coordinator))
          self->send<caf::message_priority::high>(c, kp_dline_atom::value);
      }
      on_cancel(run->cancel_reason());
      cancel_rest(b);
    }
  }

  // -- item_observer ---------------------------------------------------------------

  void failed(batch_base& b, size_t i, error err) override {
    item_failed(b, i, attribute(std::move(err), b.key(i).id, b.attempt));
  }

  void crashed(batch_base& b, size_t i, std::exception_ptr ep) override {
    flush_tally();
    item_failed(b, i, attribute(make_panic_error(ep), b.key(i).id, b.attempt));
  }

  error attribute(error err, uint64_t id, uint32_t attempt) const {
    if (!err)
      err = internal_error("stage returned an empty error");
    if (as<stage_info>(err))
      return err;
    return with_detail(std::move(err), stage_info{def->name, std::to_string(id), attempt});
  }

  /// Adds what this message did to the record, under one lock.
  void flush_tally() {
    std::lock_guard<std::mutex> g{record->mtx};
    record->stats.in += items_in;
    items_in = 0;
    add_tally(record->stats, t);
    for (auto d : sampler.samples)
      record->stats.latency.record(d);
    sampler.samples.clear();
  }

  /// Sends what `b` produced, then gives credit back (now, or once the
  /// outputs have left).
  void forward(batch_base& b, const caf::actor& sender, uint32_t link, uint64_t items) {
    if (b.partial) {
      std::shared_ptr<batch_base> outp{std::move(b.partial)};
      outp->seq = b.seq;
      outp->ordered = b.ordered;
      if (cancel_reason)
        cancel_batch(*outp);
      else if (def->kind != stage_kind::sink)
        out.send(self, std::move(outp));
    }
    if (!sender)
      return;
    if (out.idle())
      self->send(sender, kp_ack_atom::value, link, items);
    else
      owed.push_back(owed_ack{sender, link, items});
  }

  void cancel_batch(batch_base& b) {
    std::lock_guard<std::mutex> g{record->mtx};
    for (size_t i = 0; i < b.size(); ++i)
      end_cancelled(b, i, g);
  }

  void pay_owed() {
    if (!out.idle())
      return;
    for (auto& o : owed)
      self->send(o.to, kp_ack_atom::value, o.link, o.items);
    owed.clear();
  }

  void on_batch(uint32_t link, batch_msg& m) {
    auto& b = *m.ptr;
    if (b.cursor == 0 && !b.partial)
      items_in += b.size();
    auto sender = caf::actor_cast<caf::actor>(self->current_sender());
    process(b);
    arm_flush_timer();
    forward(b, sender, link, b.size());
    try_finish();
  }

  void on_ack(uint32_t link, uint64_t items) {
    out.on_ack(self, link, items);
    pay_owed();
    try_finish();
  }

  // -- retries ------------------------------------------------------------------

  void arm_retry_timer() {
    if (retries.empty())
      return;
    auto due = retries.begin()->first;
    if (retry_due && *retry_due <= due)
      return;
    retry_due = due;
    auto delay = std::max(clock_type::duration::zero(), due - clock_type::now());
    self->delayed_send(self, delay, kp_tick_atom::value, ++retry_token);
  }

  void on_retry_tick(uint64_t token) {
    if (current_retry) { // replayed after a crash on a retry: finish that one first
      auto b = current_retry;
      process(*b);
      current_retry.reset();
      forward(*b, caf::actor{}, 0, 0);
    }
    if (token != retry_token)
      return;
    retry_due.reset();
    auto now = clock_type::now();
    while (!retries.empty() && retries.begin()->first <= now) {
      auto b = std::move(retries.begin()->second);
      retries.erase(retries.begin());
      // A crash here restarts the worker; the batch must not be lost with it.
      current_retry = b;
      process(*b);
      current_retry.reset();
      forward(*b, caf::actor{}, 0, 0);
    }
    arm_retry_timer();
    try_finish();
  }

  /// The retry being processed (kept if the stage crashes on it).
  std::shared_ptr<batch_base> current_retry;

  // -- group stages ---------------------------------------------------------------

  void arm_flush_timer() {
    if (def->kind != stage_kind::group || def->flush_every.count() <= 0 || flush_armed || !instance
        || instance->pending() == 0)
      return;
    flush_armed = true;
    self->delayed_send(self, def->flush_every, kp_flush_atom::value, ++flush_token);
  }

  void on_flush(uint64_t token) {
    if (token != flush_token)
      return;
    flush_armed = false;
    flush_group();
  }

  void flush_group() {
    if (def->kind != stage_kind::group || !instance || instance->pending() == 0)
      return;
    std::shared_ptr<batch_base> b{make_output(1)};
    b->trace = run->config.trace;
    auto n = instance->flush(*b);
    b->ordered = false;
    {
      std::lock_guard<std::mutex> g{record->mtx};
      record->stats.created += n;
      record->stats.out += n;
    }
    if (cancel_reason)
      cancel_batch(*b);
    else
      out.send(self, std::move(b));
  }

  // -- end of stream and cancellation -----------------------------------------------

  void on_eos() {
    ++eos_seen;
    try_finish();
  }

  void try_finish() {
    if (eos_sent || !out.wired() || eos_seen < upstreams || !retries.empty())
      return;
    flush_group();
    if (!out.idle())
      return;
    eos_sent = true;
    {
      std::lock_guard<std::mutex> g{record->mtx};
      record->peak_next = out.peak();
    }
    out.send_eos(self);
  }

  void on_cancel(error reason) {
    if (cancel_reason)
      return;
    cancel_reason = std::move(reason);
    {
      std::lock_guard<std::mutex> g{record->mtx};
      for (auto& [due, b] : retries)
        for (size_t i = 0; i < b->size(); ++i)
          end_cancelled(*b, i, g);
      for (auto& b : out.take_pending())
        for (size_t i = 0; i < b->size(); ++i)
          end_cancelled(*b, i, g);
    }
    retries.clear();
    flush_group();
    pay_owed();
    try_finish();
  }
};

caf::behavior worker_behavior(const std::shared_ptr<worker_state>& ws) {
  return {
      [ws](kp_batch_atom, uint32_t link, batch_msg& m) { ws->on_batch(link, m); },
      [ws](kp_ack_atom, uint32_t link, uint64_t items) { ws->on_ack(link, items); },
      [ws](kp_eos_atom) { ws->on_eos(); },
      [ws](kp_cancel_atom, error& reason) { ws->on_cancel(std::move(reason)); },
      [ws](kp_tick_atom, uint64_t token) { ws->on_retry_tick(token); },
      [ws](kp_flush_atom, uint64_t token) { ws->on_flush(token); },
      [ws](kp_wire_atom, wiring& w) {
        ws->out.wire(std::move(w.downstream), w.credit, w.send_empty);
        ws->upstreams = w.upstreams;
        ws->try_finish();
      },
  };
}

// -- resequencer -------------------------------------------------------------------------

/// Keeps the input order of an ordered stage with several workers: numbers
/// the batches it hands to the workers and releases their outputs in that
/// order. Holds at most `window` batches between dispatch and release.
struct reseq_state {
  std::shared_ptr<run_shared> run;
  const stage_def* def = nullptr;
  std::shared_ptr<node_record> record;
  caf::actor_addr coordinator;
  caf::event_based_actor* self = nullptr;
  bool hello_sent = false;

  outlet to_workers;
  outlet downstream;
  uint32_t upstreams = 0;
  uint32_t eos_seen = 0;
  uint32_t worker_count = 0;
  uint32_t worker_eos = 0;
  bool workers_told = false;
  bool eos_sent = false;
  /// Set by the wiring; until then nothing is told or finished.
  bool wired = false;
  size_t window = 8;

  struct input {
    std::shared_ptr<batch_base> b;
    caf::actor sender;
    uint32_t link;
    uint64_t items;
  };
  std::deque<input> queue;                              // received, not dispatched
  std::map<uint64_t, owed_ack> acks;                    // by local seq
  std::map<uint64_t, std::shared_ptr<batch_base>> done; // outputs waiting for their turn
  uint64_t next_dispatch = 0;
  uint64_t next_release = 0;
  error cancel_reason;
  std::vector<caf::actor_addr> workers;

  bool from_worker() const {
    auto from = caf::actor_cast<caf::actor_addr>(self->current_sender());
    return std::find(workers.begin(), workers.end(), from) != workers.end();
  }

  void on_input(uint32_t link, batch_msg& m) {
    auto sender = caf::actor_cast<caf::actor>(self->current_sender());
    uint64_t items = m.ptr->size();
    if (items == 0) { // nothing to order; the workers never see empty batches
      self->send(sender, kp_ack_atom::value, link, items);
      return;
    }
    if (cancel_reason) { // arrived after the cancel: cancelled here
      {
        std::lock_guard<std::mutex> g{record->mtx};
        note_cancelled(*m.ptr);
      }
      self->send(sender, kp_ack_atom::value, link, items);
      return;
    }
    if (!m.ptr->ordered) { // a retry from upstream: no place in the order
      to_workers.send(self, std::move(m.ptr));
      self->send(sender, kp_ack_atom::value, link, items);
      return;
    }
    queue.push_back(input{std::move(m.ptr), std::move(sender), link, items});
    dispatch();
  }

  void dispatch() {
    while (!queue.empty() && next_dispatch - next_release < window && to_workers.has_credit()) {
      auto in = std::move(queue.front());
      queue.pop_front();
      in.b->seq = next_dispatch;
      in.b->ordered = true;
      acks.emplace(next_dispatch, owed_ack{std::move(in.sender), in.link, in.items});
      ++next_dispatch;
      to_workers.send(self, std::move(in.b));
    }
    maybe_tell_workers();
  }

  void on_output(batch_msg& m, uint32_t link) {
    auto worker = caf::actor_cast<caf::actor>(self->current_sender());
    self->send(worker, kp_ack_atom::value, link, uint64_t{m.ptr->size()});
    if (!m.ptr->ordered || cancel_reason) {
      downstream.send(self, std::move(m.ptr));
    } else {
      done.emplace(m.ptr->seq, std::move(m.ptr));
    }
    release();
  }

  void release() {
    while (!done.empty() && done.begin()->first == next_release) {
      auto b = std::move(done.begin()->second);
      done.erase(done.begin());
      downstream.send(self, std::move(b));
      if (auto it = acks.find(next_release); it != acks.end()) {
        self->send(it->second.to, kp_ack_atom::value, it->second.link, it->second.items);
        acks.erase(it);
      }
      ++next_release;
    }
    dispatch();
    try_finish();
  }

  /// Records every item of `b` as cancelled here (record->mtx held).
  void note_cancelled(const batch_base& b) {
    for (size_t i = 0; i < b.size(); ++i) {
      record->stats.cancelled++;
      record->cancelled.push_back(item_note{b.key(i).id, def->name, cancel_reason});
    }
  }

  void maybe_tell_workers() {
    if (!wired || workers_told || eos_seen < upstreams || !queue.empty() || !to_workers.idle())
      return;
    workers_told = true;
    to_workers.send_eos(self);
  }

  void try_finish() {
    maybe_tell_workers();
    if (!wired || eos_sent || worker_eos < worker_count || !done.empty() || !downstream.idle())
      return;
    eos_sent = true;
    {
      std::lock_guard<std::mutex> g{record->mtx};
      record->peak_next = downstream.peak();
      record->peak_own = to_workers.peak();
    }
    downstream.send_eos(self);
  }

  void on_cancel(error reason) {
    if (cancel_reason)
      return;
    cancel_reason = std::move(reason);
    {
      std::lock_guard<std::mutex> g{record->mtx};
      for (auto& in : queue)
        note_cancelled(*in.b);
      for (auto& b : downstream.take_pending())
        note_cancelled(*b);
    }
    for (auto& in : queue)
      self->send(in.sender, kp_ack_atom::value, in.link, in.items);
    queue.clear();
    // Outputs already made go on; the next stage cancels them.
    for (auto& [seq, b] : done)
      downstream.send(self, std::move(b));
    done.clear();
    for (auto& [seq, a] : acks)
      self->send(a.to, kp_ack_atom::value, a.link, a.items);
    acks.clear();
    try_finish();
  }
};

caf::behavior reseq_behavior(const std::shared_ptr<reseq_state>& rs) {
  return {
      [rs](kp_batch_atom, uint32_t link, batch_msg& m) {
        if (rs->from_worker())
          rs->on_output(m, link);
        else
          rs->on_input(link, m);
      },
      [rs](kp_ack_atom, uint32_t link, uint64_t items) {
        if (rs->from_worker()) {
          rs->to_workers.on_ack(rs->self, link, items);
          rs->dispatch();
        } else {
          rs->downstream.on_ack(rs->self, link, items);
        }
        rs->try_finish();
      },
      [rs](kp_eos_atom) {
        // Workers send eos only after the resequencer told them, which it
        // does only once every upstream has sent its own.
        if (rs->workers_told)
          ++rs->worker_eos;
        else
          ++rs->eos_seen;
        rs->try_finish();
      },
      [rs](kp_cancel_atom, error& reason) { rs->on_cancel(std::move(reason)); },
      [rs](kp_wire_atom, wiring& w) {
        rs->downstream.wire(std::move(w.downstream), w.credit, w.send_empty);
        rs->worker_count = static_cast<uint32_t>(w.workers.size());
        for (auto& x : w.workers)
          rs->workers.push_back(x.address());
        rs->to_workers.wire(std::move(w.workers), w.worker_credit, false);
        rs->window = std::max<size_t>(2, 2 * rs->worker_count * w.worker_credit);
        rs->upstreams = w.upstreams;
        rs->wired = true;
        rs->dispatch();
        rs->try_finish();
      },
  };
}

// -- source -------------------------------------------------------------------------------

struct source_state {
  std::shared_ptr<run_shared> run;
  std::shared_ptr<node_record> record;
  std::function<std::unique_ptr<batch_base>(size_t)> make_batch;
  std::function<std::unique_ptr<source_cursor>()> open;
  std::unique_ptr<source_cursor> cursor;
  caf::event_based_actor* self = nullptr;
  caf::actor coordinator;

  outlet out;
  bool exhausted = false;
  bool closed = false;
  bool eos_sent = false;
  error cancel_reason;
  uint64_t next_index = 0;
  uint64_t next_seq = 0;
  std::deque<caf::response_promise> feeders;

  bool feeder() const noexcept { return !open; }

  void stamp(batch_base& b) {
    for (auto& k : b.keys)
      k.id = k.origin = next_index++;
    b.attempt = 1;
    b.trace = run->config.trace;
    b.seq = next_seq++;
    b.ordered = true;
    run->items_seen.fetch_add(b.size(), std::memory_order_relaxed);
    std::lock_guard<std::mutex> g{record->mtx};
    record->stats.out += b.size();
  }

  void fail(error err) {
    exhausted = true;
    self->send<caf::message_priority::high>(coordinator, kp_fail_atom::value,
                                            wrap(std::move(err), "source failed"));
  }

  void produce() {
    if (!out.wired() || eos_sent)
      return;
    const size_t n = std::max<uint32_t>(1, run->config.batch_size);
    if (!feeder()) {
      if (!cursor && !exhausted) {
        try {
          cursor = open();
        } catch (...) {
          fail(make_panic_error(std::current_exception()));
        }
      }
      while (!exhausted && !cancel_reason && !run->cancelled.load(std::memory_order_relaxed)
             && out.has_credit()) {
        std::shared_ptr<batch_base> b{make_batch(n)};
        bool more = false;
        try {
          more = cursor->next(*b, n);
        } catch (...) {
          fail(make_panic_error(std::current_exception()));
        }
        if (!more)
          exhausted = true;
        if (b->size() > 0) {
          stamp(*b);
          out.send(self, std::move(b));
        }
      }
    }
    if (out.idle())
      for (auto& p : std::exchange(feeders, {}))
        p.deliver(kp_ok_atom::value);
    if ((feeder() ? closed : exhausted) && out.idle())
      finish();
  }

  caf::result<kp_ok_atom> feed(batch_msg& m) {
    if (cancel_reason)
      return to_caf_error(wrap(cancel_reason, "the run no longer accepts items"));
    if (closed || eos_sent)
      return to_caf_error(failed_precondition_error("the run's feeder was closed"));
    if (m.ptr->size() > 0) {
      stamp(*m.ptr);
      out.send(self, std::move(m.ptr));
    }
    if (out.idle())
      return kp_ok_atom::value;
    feeders.push_back(self->make_response_promise());
    return caf::delegated<kp_ok_atom>{};
  }

  void finish() {
    if (eos_sent)
      return;
    eos_sent = true;
    {
      std::lock_guard<std::mutex> g{record->mtx};
      record->peak_next = out.peak();
      if (cancel_reason && !cursor && open) {
        try { // cancelled before the first read: count the inputs not started
          cursor = open();
        } catch (...) {
        }
      }
      if (cursor && cancel_reason)
        if (auto left = cursor->remaining())
          record->not_started = *left;
    }
    out.send_eos(self);
    self->quit();
  }

  void on_cancel(error reason) {
    if (cancel_reason)
      return;
    cancel_reason = std::move(reason);
    {
      std::lock_guard<std::mutex> g{record->mtx};
      for (auto& b : out.take_pending())
        for (size_t i = 0; i < b->size(); ++i) {
          record->stats.cancelled++;
          record->cancelled.push_back(item_note{b->key(i).id, "source", cancel_reason});
        }
    }
    for (auto& p : std::exchange(feeders, {}))
      p.deliver(to_caf_error(wrap(cancel_reason, "the run no longer accepts items")));
    if (out.wired())
      finish();
  }
};

caf::behavior source_behavior(caf::event_based_actor* self, std::shared_ptr<source_state> st) {
  st->self = self;
  return {
      [st](kp_wire_atom, wiring& w) {
        st->coordinator = caf::actor_cast<caf::actor>(st->self->current_sender());
        st->out.wire(std::move(w.downstream), w.credit, w.send_empty);
        st->out.flush(st->self);
        if (st->cancel_reason)
          st->finish();
        else
          st->produce();
      },
      [st](kp_ack_atom, uint32_t link, uint64_t items) {
        st->out.on_ack(st->self, link, items);
        st->produce();
      },
      [st](kp_feed_atom, batch_msg& m) { return st->feed(m); },
      [st](kp_close_atom) {
        st->closed = true;
        st->produce();
      },
      [st](kp_cancel_atom, error& reason) { st->on_cancel(std::move(reason)); },
  };
}

// -- dead letters of the run's stages -------------------------------------------------

/// Receives batches a stopped stage never handled (only when its supervisor
/// escalated): their items end as failed with the reason.
class orphan_sink final : public dead_letter_sink {
public:
  explicit orphan_sink(std::shared_ptr<node_record> rec) : rec_(std::move(rec)) {}

  void put(dead_letter letter) override {
    if (!letter.payload.match_elements<kp_batch_atom, uint32_t, batch_msg>())
      return;
    auto& b = *letter.payload.get_as<batch_msg>(2).ptr;
    std::lock_guard<std::mutex> g{rec_->mtx};
    auto note = [&](batch_base& x, size_t i) {
      rec_->stats.failed++;
      rec_->failures.push_back(
          item_failure{x.key(i).id, x.key(i).origin, letter.stage, x.attempt, letter.error});
    };
    for (size_t i = b.cursor; i < b.size(); ++i)
      note(b, i);
    if (b.partial)
      for (size_t i = 0; i < b.partial->size(); ++i)
        note(*b.partial, i);
    b.cursor = b.size();
    b.partial.reset();
  }

private:
  std::shared_ptr<node_record> rec_;
};

// -- run control ------------------------------------------------------------------------

class control_impl final : public run_control {
public:
  explicit control_impl(caf::actor_system& sys) : sys_(&sys) {}

  void cancel(error reason) override {
    if (!reason)
      reason = cancelled_error("run cancelled by the caller");
    // Workers busy with slow items see the flag at once, even when the
    // coordinator cannot be scheduled; the coordinator then tells the rest.
    if (auto run = run_.lock())
      run->cancel(reason);
    if (coordinator_)
      caf::anon_send<caf::message_priority::high>(coordinator_, kp_cancel_atom::value,
                                                  std::move(reason));
  }

  bool done() const override {
    std::lock_guard<std::mutex> g{mtx_};
    return done_;
  }

  void wait() const override {
    std::unique_lock<std::mutex> g{mtx_};
    cv_.wait(g, [this] { return done_; });
  }

  bool wait_for(std::chrono::nanoseconds timeout) const override {
    std::unique_lock<std::mutex> g{mtx_};
    return cv_.wait_for(g, timeout, [this] { return done_; });
  }

  run_report& report() override { return report_; }

  void on_complete(std::function<void()> f) override {
    {
      std::lock_guard<std::mutex> g{mtx_};
      if (!done_) {
        callbacks_.push_back(std::move(f));
        return;
      }
    }
    f();
  }

  const caf::actor& coordinator() const override { return coordinator_; }

  error feed(std::unique_ptr<batch_base> items) override {
    if (!source_)
      return failed_precondition_error("the run has no feeder source");
    caf::scoped_actor self{*sys_};
    error result;
    self->request(source_, caf::infinite, kp_feed_atom::value,
                  batch_msg{std::shared_ptr<batch_base>{std::move(items)}})
        .receive([](kp_ok_atom) {}, [&](caf::error& e) { result = feed_error(e); });
    return result;
  }

  void feed_async(caf::event_based_actor* self, std::unique_ptr<batch_base> items,
                  std::function<void(const error&)> done) override {
    if (!source_) {
      done(failed_precondition_error("the run has no feeder source"));
      return;
    }
    self->request(source_, caf::infinite, kp_feed_atom::value,
                  batch_msg{std::shared_ptr<batch_base>{std::move(items)}})
        .then([done](kp_ok_atom) { done(error{}); },
              [done](caf::error& e) { done(feed_error(e)); });
  }

  void close() override {
    if (source_)
      caf::anon_send(source_, kp_close_atom::value);
  }

  // -- runtime side ---------------------------------------------------------------

  void set_run(const std::shared_ptr<run_shared>& run) { run_ = run; }

  void set_actors(caf::actor coordinator, caf::actor source, bool feeder) {
    coordinator_ = std::move(coordinator);
    if (feeder)
      source_ = std::move(source);
  }

  /// Stores the report (before the coordinator quits).
  void set_report(run_report r) {
    std::lock_guard<std::mutex> g{mtx_};
    report_ = std::move(r);
  }

  /// Marks the run done (after the coordinator terminated).
  void complete() {
    std::vector<std::function<void()>> fs;
    {
      std::lock_guard<std::mutex> g{mtx_};
      done_ = true;
      fs = std::move(callbacks_);
      source_ = nullptr;
    }
    cv_.notify_all();
    for (auto& f : fs)
      f();
  }

private:
  static error feed_error(const caf::error& e) {
    auto err = from_caf_error(e);
    if (e == caf::sec::request_receiver_down)
      return failed_precondition_error("the run has ended; it accepts no more items");
    return err;
  }

  caf::actor_system* sys_;
  std::weak_ptr<run_shared> run_;
  caf::actor coordinator_;
  caf::actor source_;
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  bool done_ = false;
  run_report report_;
  std::vector<std::function<void()>> callbacks_;
};

// -- coordinator ------------------------------------------------------------------------

struct node_info {
  enum kind_t { worker, reseq } kind = worker;
  uint32_t stage = 0;
  caf::actor handle;
  std::shared_ptr<node_record> record;
};

struct coordinator_state {
  std::shared_ptr<run_shared> run;
  std::shared_ptr<control_impl> ctl;
  std::shared_ptr<output_collector> outputs;
  std::shared_ptr<node_record> source_record;
  std::shared_ptr<node_record> orphans;
  caf::actor source;
  caf::actor sup;
  std::vector<node_info> nodes;
  size_t hellos = 0;
  bool wired = false;
  uint32_t terminal_upstreams = 0;
  uint32_t eos_seen = 0;
  uint64_t collected = 0;
  error first_error;
  error cancel_reason;
  error sup_exit;
  bool finishing = false;
  bool source_down = false;
  bool sup_down = false;
  clock_type::time_point started;
  static inline const char* name = "keel.pipeline.coordinator";
};

using coordinator_actor = caf::stateful_actor<coordinator_state>;

std::vector<caf::actor> nodes_of(const coordinator_state& st, uint32_t stage,
                                 node_info::kind_t kind) {
  std::vector<caf::actor> xs;
  for (auto& n : st.nodes)
    if (n.stage == stage && n.kind == kind)
      xs.push_back(n.handle);
  return xs;
}

bool has_reseq(const coordinator_state& st, uint32_t stage) {
  return std::any_of(st.nodes.begin(), st.nodes.end(), [&](const node_info& n) {
    return n.stage == stage && n.kind == node_info::reseq;
  });
}

/// The nodes that receive a stage's input (and send its output).
std::vector<caf::actor> entry_of(const coordinator_state& st, uint32_t stage) {
  return has_reseq(st, stage) ? nodes_of(st, stage, node_info::reseq)
                              : nodes_of(st, stage, node_info::worker);
}

uint32_t credit_of(const coordinator_state& st, uint32_t stage) {
  if (stage < st.run->stages.size() && st.run->stages[stage].options.credit > 0)
    return st.run->stages[stage].options.credit;
  return std::max<uint32_t>(1, st.run->config.credit);
}

void wire(coordinator_actor* self) {
  auto& st = self->state;
  st.wired = true;
  const auto n = static_cast<uint32_t>(st.run->stages.size());
  auto next_of = [&](uint32_t i) {
    wiring w;
    if (i + 1 < n) {
      w.downstream = entry_of(st, i + 1);
      w.credit = credit_of(st, i + 1);
      w.down_stage = static_cast<int32_t>(i + 1);
      w.send_empty = has_reseq(st, i + 1);
    } else {
      w.downstream = {caf::actor{self}};
      w.credit = credit_of(st, n);
    }
    return w;
  };
  auto upstreams_of = [&](uint32_t i) {
    return i == 0 ? uint32_t{1} : static_cast<uint32_t>(entry_of(st, i - 1).size());
  };
  for (uint32_t i = 0; i < n; ++i) {
    bool ordered = has_reseq(st, i);
    auto workers = nodes_of(st, i, node_info::worker);
    for (auto& w : workers) {
      wiring x;
      if (ordered) {
        x.downstream = nodes_of(st, i, node_info::reseq);
        x.credit = credit_of(st, i);
        x.down_stage = static_cast<int32_t>(i);
        x.send_empty = true;
        x.upstreams = 1;
      } else {
        x = next_of(i);
        x.upstreams = upstreams_of(i);
      }
      self->send(w, kp_wire_atom::value, std::move(x));
    }
    if (ordered) {
      auto x = next_of(i);
      x.upstreams = upstreams_of(i);
      x.workers = workers;
      x.worker_credit = credit_of(st, i);
      for (auto& r : nodes_of(st, i, node_info::reseq))
        self->send(r, kp_wire_atom::value, x);
    }
  }
  wiring src;
  if (n > 0) {
    src.downstream = entry_of(st, 0);
    src.credit = credit_of(st, 0);
    src.down_stage = 0;
    src.send_empty = has_reseq(st, 0);
  } else {
    src.downstream = {caf::actor{self}};
    src.credit = credit_of(st, 0);
  }
  st.terminal_upstreams = n == 0 ? 1 : static_cast<uint32_t>(entry_of(st, n - 1).size());
  self->send(st.source, kp_wire_atom::value, std::move(src));
  if (st.cancel_reason)
    for (auto& node : st.nodes)
      self->send<caf::message_priority::high>(node.handle, kp_cancel_atom::value, st.cancel_reason);
}

void cancel_all(coordinator_actor* self, error reason) {
  auto& st = self->state;
  if (st.cancel_reason)
    return;
  // Whoever cancelled first (caller, deadline, critical error) gives the
  // reason everyone uses.
  st.run->cancel(reason);
  st.cancel_reason = st.run->cancel_reason();
  self->send<caf::message_priority::high>(st.source, kp_cancel_atom::value, st.cancel_reason);
  for (auto& n : st.nodes)
    if (n.handle)
      self->send<caf::message_priority::high>(n.handle, kp_cancel_atom::value, st.cancel_reason);
}

void add_record(stage_stats& into, const stage_stats& s) {
  into.in += s.in;
  into.out += s.out;
  into.created += s.created;
  into.succeeded += s.succeeded;
  into.failed += s.failed;
  into.dead_lettered += s.dead_lettered;
  into.skipped += s.skipped;
  into.filtered += s.filtered;
  into.cancelled += s.cancelled;
  into.consumed += s.consumed;
  into.retries += s.retries;
  into.retries_denied += s.retries_denied;
  into.restarts += s.restarts;
  for (const auto& [k, v] : s.errors_by_code)
    into.errors_by_code[k] += v;
  into.latency.merge(s.latency);
}

void add_counts(run_counts& c, const stage_stats& s) {
  c.created += s.created;
  c.succeeded += s.succeeded;
  c.failed += s.failed;
  c.dead_lettered += s.dead_lettered;
  c.skipped += s.skipped;
  c.filtered += s.filtered;
  c.cancelled += s.cancelled;
  c.consumed += s.consumed;
}

template <class T>
void append(std::vector<T>& into, std::vector<T>& from) {
  into.insert(into.end(), std::make_move_iterator(from.begin()),
              std::make_move_iterator(from.end()));
  from.clear();
}

run_report make_report(coordinator_state& st) {
  run_report r;
  r.name = st.run->config.name;
  r.duration = clock_type::now() - st.started;
  const auto n = st.run->stages.size();
  r.stages.resize(n);
  for (size_t i = 0; i < n; ++i) {
    r.stages[i].name = st.run->stages[i].name;
    r.stages[i].workers = st.run->stages[i].options.workers;
  }
  auto take = [&](node_record& rec) {
    std::lock_guard<std::mutex> g{rec.mtx};
    append(r.failures, rec.failures);
    append(r.dead_letters, rec.dead);
    append(r.skipped, rec.skipped);
    append(r.cancelled_items, rec.cancelled);
  };
  for (auto& node : st.nodes) {
    take(*node.record);
    std::lock_guard<std::mutex> g{node.record->mtx};
    auto& s = r.stages[node.stage];
    add_record(s, node.record->stats);
    add_counts(r.counts, node.record->stats);
    if (node.record->peak_own > 0)
      s.peak_queue = std::max(s.peak_queue, node.record->peak_own);
    if (node.stage + 1 < n)
      r.stages[node.stage + 1].peak_queue =
          std::max(r.stages[node.stage + 1].peak_queue, node.record->peak_next);
  }
  {
    auto& src = *st.source_record;
    take(src);
    std::lock_guard<std::mutex> g{src.mtx};
    r.counts.from_source = src.stats.out;
    r.counts.cancelled += src.stats.cancelled;
    r.counts.not_started = src.not_started;
    if (n > 0)
      r.stages[0].peak_queue = std::max(r.stages[0].peak_queue, src.peak_next);
  }
  {
    auto& o = *st.orphans;
    take(o);
    std::lock_guard<std::mutex> g{o.mtx};
    r.counts.failed += o.stats.failed;
  }
  r.counts.succeeded += st.collected;
  auto total = r.counts.total();
  auto ended = r.counts.ended();
  r.counts.lost = total > ended ? total - ended : 0;
  auto by_item = [](const auto& a, const auto& b) { return a.item < b.item; };
  std::sort(r.failures.begin(), r.failures.end(), by_item);
  std::sort(r.dead_letters.begin(), r.dead_letters.end(), by_item);
  std::sort(r.skipped.begin(), r.skipped.end(), by_item);
  std::sort(r.cancelled_items.begin(), r.cancelled_items.end(), by_item);
  if (st.sup_exit) {
    r.error = st.sup_exit;
    r.aborted = true;
  } else if (st.first_error) {
    r.error = st.first_error;
    r.failed_fast = true;
  } else if (auto why = st.cancel_reason ? st.cancel_reason : st.run->cancel_reason()) {
    // (The caller's flag may have ended the run before its message arrived.)
    r.error = std::move(why);
    r.cancelled = true;
  } else {
    error_buffer buf{std::max<size_t>(1, st.run->config.max_errors)};
    for (const auto& f : r.failures)
      buf.add(f.error);
    r.error = buf.result();
  }
  return r;
}

run_progress progress_of(coordinator_state& st) {
  run_progress p;
  p.name = st.run->config.name;
  p.elapsed = clock_type::now() - st.started;
  {
    std::lock_guard<std::mutex> g{st.source_record->mtx};
    p.from_source = st.source_record->stats.out;
    p.ended = st.source_record->stats.cancelled;
  }
  for (auto& node : st.nodes) {
    std::lock_guard<std::mutex> g{node.record->mtx};
    const auto& s = node.record->stats;
    p.ended += s.succeeded + s.failed + s.dead_lettered + s.skipped + s.filtered + s.cancelled
               + s.consumed;
    p.failed += s.failed;
  }
  p.ended += st.collected;
  return p;
}

void maybe_quit(coordinator_actor* self) {
  auto& st = self->state;
  if (!st.source_down || !st.sup_down)
    return;
  st.ctl->set_report(make_report(st));
  self->quit();
}

void finish(coordinator_actor* self) {
  auto& st = self->state;
  if (st.finishing)
    return;
  st.finishing = true;
  if (st.sup && !st.sup_down)
    self->send_exit(st.sup, caf::exit_reason::user_shutdown);
  maybe_quit(self);
}

caf::behavior coordinator_fun(coordinator_actor* self, std::shared_ptr<run_shared> run,
                              std::shared_ptr<control_impl> ctl,
                              std::shared_ptr<output_collector> outputs, caf::actor source,
                              std::shared_ptr<node_record> source_record,
                              std::shared_ptr<node_record> orphans,
                              std::vector<std::shared_ptr<worker_state>> workers,
                              std::vector<std::shared_ptr<reseq_state>> reseqs) {
  auto& st = self->state;
  st.run = run;
  st.ctl = ctl;
  st.outputs = std::move(outputs);
  st.source = source;
  st.source_record = std::move(source_record);
  st.orphans = std::move(orphans);
  st.started = clock_type::now();
  self->attach_functor([ctl](const caf::error&) { ctl->complete(); });
  self->set_down_handler([](caf::scheduled_actor* p, caf::down_msg& dm) {
    auto* s = static_cast<coordinator_actor*>(p);
    auto& st = s->state;
    if (dm.source == st.source.address()) {
      st.source_down = true;
    } else if (dm.source == st.sup.address()) {
      st.sup_down = true;
      if (!st.finishing) {
        // The stage supervisor gave up (restart intensity): the run ends.
        st.sup_exit = wrap(from_caf_error(dm.reason),
                           "the stage supervisor of run " + st.run->config.name + " escalated");
        cancel_all(s, wrap(st.sup_exit, code::aborted, "run aborted"));
        st.finishing = true;
      }
    }
    maybe_quit(s);
  });
  self->monitor(source);
  // The stage supervisor and its children.
  supervisor_config sc;
  sc.name = run->config.name;
  sc.strategy = restart_strategy::one_for_one;
  sc.intensity = run->config.intensity;
  sc.decider = decider::always(directive::restart);
  sc.dead_letters = std::make_shared<orphan_sink>(st.orphans);
  sc.events = run->config.events;
  sc.seed = run->seed;
  auto coordinator_addr = self->address();
  uint32_t index = 0;
  for (auto& rs : reseqs) {
    rs->coordinator = coordinator_addr;
    st.nodes.push_back(node_info{node_info::reseq, 0, {}, rs->record});
    auto& node = st.nodes.back();
    for (uint32_t s = 0; s < run->stages.size(); ++s)
      if (&run->stages[s] == rs->def)
        node.stage = s;
    auto spec = stage_spec(rs->def->name + "#order", [rs, index](stage_context& ctx) {
      rs->self = ctx.self();
      if (!rs->hello_sent) {
        rs->hello_sent = true;
        if (auto c = caf::actor_cast<caf::actor>(rs->coordinator))
          ctx.self()->send(c, kp_hello_atom::value, index);
      }
      return reseq_behavior(rs);
    });
    spec.stash.capacity = 1u << 20;
    sc.children.push_back(std::move(spec));
    ++index;
  }
  for (auto& ws : workers) {
    ws->coordinator = coordinator_addr;
    st.nodes.push_back(node_info{node_info::worker, ws->stage, {}, ws->record});
    auto spec = stage_spec(
        ws->def->name + "#" + std::to_string(ws->index), [ws, index](stage_context& ctx) {
          ws->self = ctx.self();
          if (ctx.restarts() > 0) {
            std::lock_guard<std::mutex> g{ws->record->mtx};
            ws->record->stats.restarts++;
          }
          ws->instance = ws->def->make();
          if (!ws->ctx)
            ws->ctx.emplace(&ws->def->name, ws->stage + 1, ws->index, &ws->run->cancelled,
                            &ws->run->next_created_id, ws->run->deadline, ws->run->seed);
          if (!ws->hello_sent) {
            ws->hello_sent = true;
            if (auto c = caf::actor_cast<caf::actor>(ws->coordinator))
              ctx.self()->send(c, kp_hello_atom::value, index);
          }
          return worker_behavior(ws);
        });
    // Every replay of a crashed batch makes progress (it resumes after the
    // item that crashed), so the message itself is never given up on.
    spec.max_attempts = UINT32_MAX;
    spec.stash.capacity = 1u << 20;
    sc.children.push_back(std::move(spec));
    ++index;
  }
  st.sup = spawn_supervisor(self->system(), std::move(sc));
  self->monitor(st.sup);
  if (run->config.deadline)
    self->delayed_send(self, *run->config.deadline, kp_dline_atom::value);
  if (run->config.on_progress)
    self->delayed_send(self, run->config.progress_every, kp_prog_atom::value);
  if (st.nodes.empty())
    wire(self);
  return {
      [self](kp_hello_atom, uint32_t node) {
        auto& st = self->state;
        if (node < st.nodes.size() && !st.nodes[node].handle) {
          st.nodes[node].handle = caf::actor_cast<caf::actor>(self->current_sender());
          if (++st.hellos == st.nodes.size())
            wire(self);
        }
      },
      [self](kp_batch_atom, uint32_t link, batch_msg& m) {
        auto& st = self->state;
        auto items = m.ptr->size();
        st.collected += items;
        if (st.outputs)
          st.outputs->append(*m.ptr);
        self->send(caf::actor_cast<caf::actor>(self->current_sender()), kp_ack_atom::value, link,
                   uint64_t{items});
      },
      [self](kp_eos_atom) {
        auto& st = self->state;
        if (++st.eos_seen == st.terminal_upstreams)
          finish(self);
      },
      [self](kp_fail_atom, error& err) {
        auto& st = self->state;
        if (st.first_error || st.cancel_reason)
          return;
        st.first_error = err;
        cancel_all(self, wrap(std::move(err), code::cancelled,
                              "run " + st.run->config.name + " cancelled after a critical error"));
      },
      [self](kp_cancel_atom, error& reason) { cancel_all(self, std::move(reason)); },
      [self](kp_dline_atom) { // from the timer, or from a worker that saw the clock
        auto& st = self->state;
        cancel_all(self, deadline_error(*st.run));
      },
      [self](kp_prog_atom) {
        auto& st = self->state;
        if (st.finishing)
          return;
        st.run->config.on_progress(progress_of(st));
        self->delayed_send(self, st.run->config.progress_every, kp_prog_atom::value);
      },
  };
}

/// Applies `config.stages` to the plan's stages.
error apply_overrides(run_plan& plan) {
  for (auto& [name, o] : plan.config.stages) {
    auto it = std::find_if(plan.stages.begin(), plan.stages.end(),
                           [&](const stage_def& d) { return d.name == name; });
    if (it == plan.stages.end())
      return invalid_argument_error("run " + plan.config.name + ": configuration for stage \""
                                    + name + "\", which the pipeline does not have");
    auto& opts = it->options;
    if (o.workers)
      opts.workers = *o.workers;
    if (o.ordered)
      opts.ordered = *o.ordered;
    if (o.credit)
      opts.credit = *o.credit;
    if (o.retry)
      opts.retry = *o.retry;
    if (o.policy)
      opts.policy = *o.policy;
  }
  return {};
}

error validate(const run_plan& plan) {
  const auto& c = plan.config;
  if (c.batch_size == 0)
    return invalid_argument_error("run " + c.name + ": batch_size must be at least 1");
  if (c.credit == 0)
    return invalid_argument_error("run " + c.name + ": credit must be at least 1");
  if (!plan.source.make_batch)
    return invalid_argument_error("run " + c.name + ": the plan has no source");
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const auto& s = plan.stages[i];
    auto where = "run " + c.name + ", stage " + std::to_string(i) + " \"" + s.name + "\": ";
    if (s.name.empty())
      return invalid_argument_error(where + "a stage needs a name");
    if (s.options.workers == 0)
      return invalid_argument_error(where + "workers must be at least 1");
    if (s.kind == stage_kind::group && s.options.workers != 1)
      return invalid_argument_error(where + "a batch stage runs on one worker");
    if (s.options.retry && s.options.retry->max_attempts == 0)
      return invalid_argument_error(where + "retry.max_attempts must be at least 1");
    if (s.kind == stage_kind::sink && i + 1 != plan.stages.size())
      return invalid_argument_error(where + "a sink must be the last stage");
    if (!s.make || !s.make_output)
      return invalid_argument_error(where + "the stage has no function");
    for (size_t j = 0; j < i; ++j)
      if (plan.stages[j].name == s.name)
        return invalid_argument_error(where + "the name is used by stage " + std::to_string(j));
  }
  if (c.retry.max_attempts == 0)
    return invalid_argument_error("run " + c.name + ": retry.max_attempts must be at least 1");
  return {};
}

} // namespace
} // namespace keel::pipeline_detail

namespace keel {

std::shared_ptr<run_control> start_run(caf::actor_system& sys, run_plan plan) {
  using namespace pipeline_detail;
  auto ctl = std::make_shared<control_impl>(sys);
  auto err = apply_overrides(plan);
  if (!err)
    err = validate(plan);
  if (err) {
    run_report r;
    r.name = plan.config.name;
    r.error = std::move(err);
    ctl->set_report(std::move(r));
    ctl->complete();
    return ctl;
  }
  auto run = std::make_shared<run_shared>();
  run->config = std::move(plan.config);
  run->stages = std::move(plan.stages);
  run->seed =
      run->config.seed != 0 ? run->config.seed : std::random_device{}() * 0x9e3779b97f4a7c15ULL + 1;
  if (run->config.deadline)
    run->deadline = clock_type::now() + *run->config.deadline;
  if (!run->config.trace.valid()) {
    auto a = mix(run->seed), b = mix(a);
    for (size_t i = 0; i < 8; ++i) {
      run->config.trace.trace_id[i] = static_cast<uint8_t>(a >> (56 - 8 * i));
      run->config.trace.trace_id[8 + i] = static_cast<uint8_t>(b >> (56 - 8 * i));
    }
    run->config.trace.trace_id[0] |= 1; // never all zero
    run->config.trace.span_id = mix(b) | 1;
  }
  std::vector<std::shared_ptr<worker_state>> workers;
  std::vector<std::shared_ptr<reseq_state>> reseqs;
  uint64_t salt = 0;
  for (uint32_t i = 0; i < run->stages.size(); ++i) {
    const auto& def = run->stages[i];
    if (def.options.ordered && def.options.workers > 1) {
      auto rs = std::make_shared<reseq_state>();
      rs->run = run;
      rs->def = &def;
      rs->record = std::make_shared<node_record>();
      reseqs.push_back(std::move(rs));
    }
    for (uint32_t w = 0; w < def.options.workers; ++w) {
      auto ws = std::make_shared<worker_state>();
      ws->run = run;
      ws->def = &def;
      ws->stage = i;
      ws->index = w;
      ws->record = std::make_shared<node_record>();
      ws->rng.seed(mix(run->seed + ++salt));
      ws->sampler.every = std::max<uint32_t>(1, run->config.latency_sample);
      workers.push_back(std::move(ws));
    }
  }
  auto src = std::make_shared<source_state>();
  src->run = run;
  src->record = std::make_shared<node_record>();
  src->make_batch = plan.source.make_batch;
  src->open = plan.source.open;
  bool feeder = !src->open;
  auto source_record = src->record;
  auto source = sys.spawn(source_behavior, src);
  auto coordinator = sys.spawn(coordinator_fun, run, ctl, std::move(plan.outputs), source,
                               std::move(source_record), std::make_shared<node_record>(),
                               std::move(workers), std::move(reseqs));
  ctl->set_run(run);
  ctl->set_actors(std::move(coordinator), std::move(source), feeder);
  return ctl;
}

} // namespace keel
