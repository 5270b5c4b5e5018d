// The parts of supervision that are plain C++: deciders, events, sinks, specs
// and renderings. The actors are in supervisor.cpp.

#include "keel/supervision.hpp"

#include "keel/error/format.hpp"
#include "keel/error/panic.hpp"

#include <algorithm>
#include <ctime>
#include <sstream>

namespace keel {

// -- decider ------------------------------------------------------------------

std::string_view to_string(directive d) noexcept {
  switch (d) {
    case directive::restart:
      return "restart";
    case directive::resume:
      return "resume";
    case directive::stop:
      return "stop";
    case directive::escalate:
      return "escalate";
  }
  return "unknown";
}

decider decider::always(directive d) {
  decider result;
  result.otherwise(d);
  return result;
}

decider decider::standard() {
  return always(directive::restart);
}

// -- specs --------------------------------------------------------------------

std::string_view to_string(restart_type x) noexcept {
  switch (x) {
    case restart_type::permanent:
      return "permanent";
    case restart_type::transient:
      return "transient";
    case restart_type::temporary:
      return "temporary";
  }
  return "unknown";
}

std::string_view to_string(restart_strategy x) noexcept {
  switch (x) {
    case restart_strategy::one_for_one:
      return "one_for_one";
    case restart_strategy::one_for_all:
      return "one_for_all";
    case restart_strategy::rest_for_one:
      return "rest_for_one";
  }
  return "unknown";
}

std::string_view to_string(stash_full_policy x) noexcept {
  switch (x) {
    case stash_full_policy::reject_new:
      return "reject_new";
    case stash_full_policy::drop_oldest:
      return "drop_oldest";
  }
  return "unknown";
}

std::string_view to_string(child_state x) noexcept {
  switch (x) {
    case child_state::running:
      return "running";
    case child_state::failed:
      return "failed";
    case child_state::restarting:
      return "restarting";
    case child_state::stopped:
      return "stopped";
  }
  return "unknown";
}

child_spec stage_spec(std::string id, stage_factory f) {
  child_spec result;
  result.id = std::move(id);
  result.kind = child_spec::kind_t::stage;
  result.stage = std::move(f);
  return result;
}

child_spec worker_spec(std::string id, worker_factory f) {
  child_spec result;
  result.id = std::move(id);
  result.kind = child_spec::kind_t::worker;
  result.worker = std::move(f);
  return result;
}

child_spec supervisor_spec(std::string id, supervisor_config cfg) {
  child_spec result;
  result.id = std::move(id);
  result.kind = child_spec::kind_t::supervisor;
  cfg.name = result.id;
  result.supervisor = std::make_shared<const supervisor_config>(std::move(cfg));
  // A nested supervisor gets time to stop its own children.
  result.shutdown_timeout = std::chrono::seconds(30);
  return result;
}

void stage_context::report_exception(std::exception_ptr ep) {
  fail(make_panic_error(std::move(ep)));
}

// -- events -------------------------------------------------------------------

std::string_view to_string(event_kind k) noexcept {
  switch (k) {
    case event_kind::started:
      return "started";
    case event_kind::failed:
      return "failed";
    case event_kind::restarted:
      return "restarted";
    case event_kind::resumed:
      return "resumed";
    case event_kind::stopped:
      return "stopped";
    case event_kind::escalated:
      return "escalated";
    case event_kind::quarantined:
      return "quarantined";
    case event_kind::stash_overflow:
      return "stash_overflow";
    case event_kind::undeliverable:
      return "undeliverable";
  }
  return "unknown";
}

namespace {

std::string clock_text(std::chrono::system_clock::time_point t) {
  auto secs = std::chrono::system_clock::to_time_t(t);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms));
  return buf;
}

std::string duration_text(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  std::ostringstream out;
  if (d >= seconds(1))
    out << duration_cast<duration<double>>(d).count() << "s";
  else if (d >= milliseconds(1))
    out << duration_cast<duration<double, std::milli>>(d).count() << "ms";
  else
    out << duration_cast<duration<double, std::micro>>(d).count() << "us";
  return out.str();
}

} // namespace

std::string to_string(const supervision_event& e) {
  std::string out = clock_text(e.time);
  out += ' ';
  out += e.supervisor;
  out += ": ";
  out += e.child;
  out += ' ';
  out += to_string(e.kind);
  switch (e.kind) {
    case event_kind::failed:
      out += " -> ";
      out += to_string(e.decision);
      break;
    case event_kind::restarted:
      out += " #" + std::to_string(e.attempt) + " after " + duration_text(e.delay);
      break;
    case event_kind::started:
      if (e.attempt > 0)
        out += " (restart #" + std::to_string(e.attempt) + ")";
      break;
    case event_kind::quarantined:
      out += " after " + std::to_string(e.attempt) + " attempts";
      break;
    default:
      break;
  }
  if (e.error) {
    out += ": ";
    out += to_string(e.error);
  }
  return out;
}

uint64_t event_hub::subscribe(callback f) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto next = std::make_shared<std::vector<std::pair<uint64_t, callback>>>(*subs_);
  auto token = next_++;
  next->emplace_back(token, std::move(f));
  subs_ = std::move(next);
  return token;
}

void event_hub::unsubscribe(uint64_t token) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto next = std::make_shared<std::vector<std::pair<uint64_t, callback>>>(*subs_);
  std::erase_if(*next, [token](const auto& x) { return x.first == token; });
  subs_ = std::move(next);
}

void event_hub::on_event(const supervision_event& e) {
  std::shared_ptr<const std::vector<std::pair<uint64_t, callback>>> subs;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    subs = subs_;
  }
  for (const auto& [token, f] : *subs)
    f(e);
}

void event_recorder::on_event(const supervision_event& e) {
  std::lock_guard<std::mutex> guard{mtx_};
  events_.push_back(e);
}

std::vector<supervision_event> event_recorder::events() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return events_;
}

size_t event_recorder::count(event_kind k, std::string_view child) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return static_cast<size_t>(std::count_if(events_.begin(), events_.end(), [&](const auto& e) {
    return e.kind == k && (child.empty() || e.child == child);
  }));
}

void memory_dead_letter_sink::put(dead_letter letter) {
  std::lock_guard<std::mutex> guard{mtx_};
  entries_.push_back(std::move(letter));
}

std::vector<dead_letter> memory_dead_letter_sink::entries() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return entries_;
}

size_t memory_dead_letter_sink::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return entries_.size();
}

// -- trees --------------------------------------------------------------------

namespace {

std::string_view kind_name(child_spec::kind_t k) {
  switch (k) {
    case child_spec::kind_t::stage:
      return "stage";
    case child_spec::kind_t::worker:
      return "worker";
    case child_spec::kind_t::supervisor:
      return "supervisor";
  }
  return "unknown";
}

void render(const tree_node& n, int depth, std::string& out) {
  out.append(static_cast<size_t>(depth) * 2, ' ');
  out += n.id;
  out += " [";
  out += kind_name(n.kind);
  if (n.kind == child_spec::kind_t::supervisor) {
    out += ' ';
    out += to_string(n.strategy);
  }
  out += ", ";
  out += to_string(n.state);
  if (depth > 0) {
    out += ", ";
    out += to_string(n.restart);
  }
  out += ", restarts ";
  out += std::to_string(n.restarts);
  out += ']';
  if (n.last_error) {
    out += " last error: ";
    out += to_string(n.last_error);
  }
  out += '\n';
  for (const auto& c : n.children)
    render(c, depth + 1, out);
}

} // namespace

std::string to_string(const tree_node& tree) {
  std::string out;
  render(tree, 0, out);
  return out;
}

} // namespace keel
