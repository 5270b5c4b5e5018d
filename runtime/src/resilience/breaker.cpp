// keel::circuit_breaker: state machine, sliding windows, JSON configuration.

#include "keel/resilience/breaker.hpp"

#include "detail/json_fields.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <ostream>
#include <stdexcept>

namespace keel {

namespace {

using std::chrono::duration_cast;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr uint8_t outcome_failure = 1;
constexpr uint8_t outcome_slow = 2;

constexpr uint32_t max_count_window = 1'000'000;
constexpr uint32_t max_time_window = 3600;

uint64_t make_word(uint64_t epoch, breaker_state s) noexcept {
  return (epoch << 8) | static_cast<uint8_t>(s);
}

uint64_t epoch_of(uint64_t w) noexcept {
  return w >> 8;
}

using detail::number_text;

std::string duration_text(nanoseconds d) {
  char buf[48];
  auto ns = static_cast<double>(d.count());
  if (d >= seconds{1})
    std::snprintf(buf, sizeof buf, "%.3gs", ns / 1e9);
  else if (d >= std::chrono::milliseconds{1})
    std::snprintf(buf, sizeof buf, "%.3gms", ns / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.3gus", ns / 1e3);
  return buf;
}

std::string rate_text(const char* what, double rate, double threshold, uint32_t calls) {
  return std::string{what} + " " + number_text(rate) + " % >= " + number_text(threshold)
         + " % over " + std::to_string(calls) + " calls";
}

double rate(uint32_t part, uint32_t whole) noexcept {
  return whole == 0 ? -1.0 : 100.0 * part / whole;
}

} // namespace

// -- enums -----------------------------------------------------------------------

std::string_view to_string(breaker_state s) noexcept {
  switch (s) {
    case breaker_state::closed:
      return "closed";
    case breaker_state::open:
      return "open";
    case breaker_state::half_open:
      return "half_open";
    case breaker_state::forced_open:
      return "forced_open";
    case breaker_state::disabled:
      return "disabled";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& os, breaker_state s) {
  return os << to_string(s);
}

std::string_view to_string(sliding_window w) noexcept {
  return w == sliding_window::time_based ? "time_based" : "count_based";
}

std::string_view to_string(transition_reason r) noexcept {
  switch (r) {
    case transition_reason::failure_rate:
      return "failure_rate";
    case transition_reason::slow_call_rate:
      return "slow_call_rate";
    case transition_reason::consecutive_failures:
      return "consecutive_failures";
    case transition_reason::open_duration_elapsed:
      return "open_duration_elapsed";
    case transition_reason::trial_calls_passed:
      return "trial_calls_passed";
    case transition_reason::trial_calls_failed:
      return "trial_calls_failed";
    case transition_reason::max_wait_in_half_open:
      return "max_wait_in_half_open";
    case transition_reason::forced_open:
      return "forced_open";
    case transition_reason::disabled:
      return "disabled";
    case transition_reason::reset:
      return "reset";
  }
  return "unknown";
}

// -- failure predicates ------------------------------------------------------------

bool default_is_failure(const error& err) noexcept {
  switch (err.code()) {
    case code::unavailable:
    case code::resource_exhausted:
    case code::deadline_exceeded:
    case code::internal:
    case code::unknown:
    case code::panic:
      return true;
    default:
      return false;
  }
}

failure_predicate failure_codes(std::vector<code> codes) {
  return [codes = std::move(codes)](const error& err) {
    return err && std::find(codes.begin(), codes.end(), err.code()) != codes.end();
  };
}

// -- configuration -----------------------------------------------------------------

error validate(const breaker_config& cfg, const std::string& path) {
  auto bad = [&](std::string_view field, std::string_view expected, std::string got) {
    return invalid_argument_error(path + "." + std::string{field} + ": expected "
                                  + std::string{expected} + ", got " + got);
  };
  auto bad_rate = [](double x) { return !(x > 0 && x <= 100); };
  if (cfg.window_type == sliding_window::count_based
      && (cfg.window_size < 1 || cfg.window_size > max_count_window))
    return bad("window_size", "an integer in 1..1000000 (calls)", std::to_string(cfg.window_size));
  if (cfg.window_type == sliding_window::time_based
      && (cfg.window_size < 1 || cfg.window_size > max_time_window))
    return bad("window_size", "an integer in 1..3600 (seconds)", std::to_string(cfg.window_size));
  if (bad_rate(cfg.failure_rate_threshold))
    return bad("failure_rate_threshold", "a number in (0, 100]",
               number_text(cfg.failure_rate_threshold));
  if (bad_rate(cfg.slow_call_rate_threshold))
    return bad("slow_call_rate_threshold", "a number in (0, 100]",
               number_text(cfg.slow_call_rate_threshold));
  if (cfg.slow_call_duration <= nanoseconds::zero())
    return bad("slow_call_duration", "a duration > 0", duration_text(cfg.slow_call_duration));
  if (cfg.minimum_calls < 1)
    return bad("minimum_calls", "an integer >= 1", "0");
  if (cfg.open_duration <= nanoseconds::zero())
    return bad("open_duration", "a duration > 0", duration_text(cfg.open_duration));
  if (cfg.permitted_calls_in_half_open < 1 || cfg.permitted_calls_in_half_open > max_count_window)
    return bad("permitted_calls_in_half_open", "an integer in 1..1000000",
               std::to_string(cfg.permitted_calls_in_half_open));
  if (cfg.max_wait_in_half_open <= nanoseconds::zero())
    return bad("max_wait_in_half_open",
               "a duration > 0 (a half-open breaker must not wait forever)",
               duration_text(cfg.max_wait_in_half_open));
  return {};
}

namespace {

namespace json = boost::json;

error read_rate(const json::object& o, std::string_view key, const std::string& path, double& out) {
  auto it = o.find(key);
  if (it == o.end())
    return {};
  auto where = path + "." + std::string{key};
  if (!it->value().is_number())
    return detail::json_bad_field(where, "a number in (0, 100]", it->value());
  double x = it->value().to_number<double>();
  if (!(x > 0 && x <= 100))
    return invalid_argument_error(where + ": expected a number in (0, 100], got " + number_text(x));
  out = x;
  return {};
}

/// A duration given in (possibly fractional) milliseconds, > 0 and at most a day.
error read_ms(const json::object& o, std::string_view key, const std::string& path,
              nanoseconds& out) {
  auto it = o.find(key);
  if (it == o.end())
    return {};
  auto where = path + "." + std::string{key};
  constexpr auto range = "a number of milliseconds in (0, 86400000]";
  if (!it->value().is_number())
    return detail::json_bad_field(where, range, it->value());
  double ms = it->value().to_number<double>();
  if (!(ms > 0 && ms <= 86'400'000.0))
    return invalid_argument_error(where + ": expected " + range + ", got " + number_text(ms));
  out = nanoseconds{std::max<int64_t>(1, static_cast<int64_t>(ms * 1e6))};
  return {};
}

} // namespace

expected<breaker_config> breaker_config_from_json(const boost::json::value& v, breaker_config base,
                                                  const std::string& path) {
  auto obj = detail::object_at(v, path);
  if (!obj)
    return obj.error();
  const auto& o = **obj;
  if (auto err = detail::check_keys(
          o, path,
          {"name", "window_type", "window_size", "failure_rate_threshold", "slow_call_duration_ms",
           "slow_call_rate_threshold", "minimum_calls", "consecutive_failures", "open_duration_ms",
           "permitted_calls_in_half_open", "max_wait_in_half_open_ms", "failure_codes"}))
    return err;
  auto cfg = std::move(base);
  auto name = detail::json_string_field(o, "name", path, false);
  if (!name)
    return name.error();
  if (o.contains("name"))
    cfg.name = *name;
  if (auto it = o.find("window_type"); it != o.end()) {
    auto where = path + ".window_type";
    constexpr auto kinds = "\"count_based\" or \"time_based\"";
    if (!it->value().is_string())
      return detail::json_bad_field(where, kinds, it->value());
    auto s = it->value().get_string();
    if (s == "count_based")
      cfg.window_type = sliding_window::count_based;
    else if (s == "time_based")
      cfg.window_type = sliding_window::time_based;
    else
      return invalid_argument_error(where + ": expected " + kinds + ", got \"" + std::string{s}
                                    + "\"");
  }
  for (auto [key, out] :
       {std::pair{"window_size", &cfg.window_size}, std::pair{"minimum_calls", &cfg.minimum_calls},
        std::pair{"consecutive_failures", &cfg.consecutive_failures},
        std::pair{"permitted_calls_in_half_open", &cfg.permitted_calls_in_half_open}})
    if (auto err = detail::read_int(o, key, path, 0, std::numeric_limits<uint32_t>::max(), *out))
      return err;
  if (auto err = read_rate(o, "failure_rate_threshold", path, cfg.failure_rate_threshold))
    return err;
  if (auto err = read_rate(o, "slow_call_rate_threshold", path, cfg.slow_call_rate_threshold))
    return err;
  if (auto err = read_ms(o, "slow_call_duration_ms", path, cfg.slow_call_duration))
    return err;
  if (auto err = read_ms(o, "open_duration_ms", path, cfg.open_duration))
    return err;
  if (auto err = read_ms(o, "max_wait_in_half_open_ms", path, cfg.max_wait_in_half_open))
    return err;
  if (auto it = o.find("failure_codes"); it != o.end()) {
    auto where = path + ".failure_codes";
    if (!it->value().is_array())
      return detail::json_bad_field(where, "an array of code names", it->value());
    std::vector<code> codes;
    size_t i = 0;
    for (const auto& x : it->value().get_array()) {
      auto at = where + "[" + std::to_string(i++) + "]";
      if (!x.is_string())
        return detail::json_bad_field(at, "a code name (e.g. \"unavailable\")", x);
      auto c = code_from_string(x.get_string());
      if (!c || *c == code::ok)
        return invalid_argument_error(at + ": unknown code \"" + std::string{x.get_string()}
                                      + "\"");
      codes.push_back(*c);
    }
    cfg.is_failure = failure_codes(std::move(codes));
  }
  if (auto err = validate(cfg, path))
    return err;
  return cfg;
}

// -- circuit_breaker: state guarded by the mutex -----------------------------------------

struct circuit_breaker::window {
  struct bucket {
    int64_t second = std::numeric_limits<int64_t>::min();
    uint32_t calls = 0;
    uint32_t failures = 0;
    uint32_t slow = 0;
  };

  // Closed: count-based ring of outcome bits, or one bucket per second.
  std::vector<uint8_t> ring;
  uint32_t head = 0;
  std::vector<bucket> buckets;
  int64_t newest_second = std::numeric_limits<int64_t>::min();
  uint32_t calls = 0;
  uint32_t failures = 0;
  uint32_t slow = 0;
  uint32_t consecutive = 0;

  // Half-open.
  time_point half_open_since{};
  uint32_t trials_in_flight = 0;
  uint32_t trials_recorded = 0;
  uint32_t trial_failures = 0;
  uint32_t trial_slow = 0;

  // Events.
  uint64_t transitions = 0;
  std::vector<state_change> pending;
  std::shared_ptr<const state_listener> listener;

  void clear() {
    std::fill(ring.begin(), ring.end(), uint8_t{0});
    head = 0;
    for (auto& b : buckets)
      b = bucket{};
    newest_second = std::numeric_limits<int64_t>::min();
    calls = failures = slow = consecutive = 0;
  }

  // Time-based: drops the buckets that fell out of the window ending at `s`.
  void advance(int64_t s) {
    if (newest_second == std::numeric_limits<int64_t>::min()) {
      newest_second = s;
      return;
    }
    if (s <= newest_second)
      return;
    auto n = static_cast<int64_t>(buckets.size());
    for (int64_t k = newest_second + 1, end = std::min(s, newest_second + n); k <= end; ++k) {
      auto& b = buckets[index(k)];
      calls -= b.calls;
      failures -= b.failures;
      slow -= b.slow;
      b = bucket{};
    }
    newest_second = s;
  }

  size_t index(int64_t s) const {
    auto n = static_cast<int64_t>(buckets.size());
    return static_cast<size_t>(((s % n) + n) % n);
  }

  void add(uint8_t outcome) {
    uint32_t f = outcome & outcome_failure ? 1 : 0;
    uint32_t sl = outcome & outcome_slow ? 1 : 0;
    if (!ring.empty()) {
      auto& slot = ring[head];
      if (calls == ring.size()) {
        failures -= slot & outcome_failure ? 1 : 0;
        slow -= slot & outcome_slow ? 1 : 0;
      } else {
        ++calls;
      }
      slot = outcome;
      head = head + 1 == ring.size() ? 0 : head + 1;
    } else {
      auto& b = buckets[index(newest_second)];
      b.second = newest_second;
      ++b.calls;
      b.failures += f;
      b.slow += sl;
      ++calls;
    }
    failures += f;
    slow += sl;
  }
};

// -- circuit_breaker ------------------------------------------------------------------------

circuit_breaker::circuit_breaker(breaker_config cfg)
    : cfg_(std::move(cfg)), word_(make_word(0, breaker_state::closed)),
      window_(std::make_unique<window>()) {
  if (auto err = validate(cfg_))
    throw std::invalid_argument(std::string{err.message()});
  coarse_clock_ = cfg_.slow_call_duration >= std::chrono::milliseconds{250};
  if (cfg_.window_type == sliding_window::count_based)
    window_->ring.assign(cfg_.window_size, 0);
  else
    window_->buckets.assign(cfg_.window_size, window::bucket{});
}

circuit_breaker::~circuit_breaker() = default;

bool circuit_breaker::counts_as_failure(const error& err) const {
  if (!err)
    return false;
  return cfg_.is_failure ? cfg_.is_failure(err) : default_is_failure(err);
}

error circuit_breaker::refuse_open(time_point now) {
  not_permitted_.fetch_add(1, std::memory_order_relaxed);
  auto until = time_point{duration{open_until_.load(std::memory_order_relaxed)}};
  auto left = std::max(duration::zero(), duration_cast<duration>(until - now));
  return make_error(resilience_code::circuit_open,
                    "circuit breaker '" + cfg_.name + "' is open: calls refused for another "
                        + duration_text(left) + ", then it lets "
                        + std::to_string(cfg_.permitted_calls_in_half_open)
                        + " trial call(s) through");
}

expected<breaker_permit> circuit_breaker::acquire_slow(uint64_t w) {
  for (;;) {
    switch (state_of(w)) {
      case breaker_state::closed:
      case breaker_state::disabled:
        return breaker_permit{this, w};
      case breaker_state::forced_open:
        not_permitted_.fetch_add(1, std::memory_order_relaxed);
        return make_error(resilience_code::circuit_open,
                          "circuit breaker '" + cfg_.name
                              + "' is forced open: calls refused until it is reset");
      case breaker_state::open: {
        auto t = now();
        if (t.time_since_epoch().count() < open_until_.load(std::memory_order_relaxed))
          return refuse_open(t);
        break; // may half-open: decided under the lock
      }
      case breaker_state::half_open:
        break;
    }
    std::unique_lock lk{mtx_};
    auto cur = word_.load(std::memory_order_relaxed);
    auto t = now();
    auto& win = *window_;
    if (state_of(cur) == breaker_state::open) {
      if (t.time_since_epoch().count() < open_until_.load(std::memory_order_relaxed)) {
        lk.unlock();
        return refuse_open(t);
      }
      transition_locked(breaker_state::half_open, transition_reason::open_duration_elapsed,
                        "open for " + duration_text(cfg_.open_duration), t);
      cur = word_.load(std::memory_order_relaxed);
    }
    if (state_of(cur) != breaker_state::half_open) {
      // Changed under our feet (reset, forced open, ...): start over.
      flush(lk);
      w = word_.load(std::memory_order_acquire);
      continue;
    }
    if (t - win.half_open_since >= cfg_.max_wait_in_half_open) {
      transition_locked(breaker_state::open, transition_reason::max_wait_in_half_open,
                        std::to_string(win.trials_recorded) + " of "
                            + std::to_string(cfg_.permitted_calls_in_half_open)
                            + " trial call(s) recorded after "
                            + duration_text(cfg_.max_wait_in_half_open),
                        t);
      flush(lk);
      return refuse_open(t);
    }
    if (win.trials_in_flight + win.trials_recorded < cfg_.permitted_calls_in_half_open) {
      ++win.trials_in_flight;
      flush(lk);
      return breaker_permit{this, cur};
    }
    auto left = cfg_.max_wait_in_half_open - (t - win.half_open_since);
    flush(lk);
    not_permitted_.fetch_add(1, std::memory_order_relaxed);
    return make_error(resilience_code::circuit_open,
                      "circuit breaker '" + cfg_.name + "' is half-open and its "
                          + std::to_string(cfg_.permitted_calls_in_half_open)
                          + " trial call(s) are taken: it closes or opens again once they "
                            "are recorded (at the latest in "
                          + duration_text(duration_cast<duration>(left)) + ")");
  }
}

void circuit_breaker::record(uint64_t w, bool failure, duration elapsed) {
  auto s = state_of(w);
  if (s == breaker_state::disabled)
    return;
  uint8_t outcome =
      (failure ? outcome_failure : 0) | (elapsed >= cfg_.slow_call_duration ? outcome_slow : 0);
  std::unique_lock lk{mtx_};
  if (word_.load(std::memory_order_relaxed) != w) {
    // The state this call was admitted in has ended: its outcome says nothing
    // about the current one (and a stale trial call must not fill a new
    // half-open round).
    lk.unlock();
    ignored_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto& win = *window_;
  if (s == breaker_state::closed) {
    if (!win.buckets.empty())
      win.advance(duration_cast<seconds>(now().time_since_epoch()).count());
    win.add(outcome);
    win.consecutive = failure ? win.consecutive + 1 : 0;
    if (cfg_.consecutive_failures > 0 && win.consecutive >= cfg_.consecutive_failures) {
      transition_locked(breaker_state::open, transition_reason::consecutive_failures,
                        std::to_string(win.consecutive) + " failures in a row", now());
    } else {
      auto needed =
          win.ring.empty() ? cfg_.minimum_calls : std::min(cfg_.minimum_calls, cfg_.window_size);
      if (win.calls >= needed) {
        auto fr = rate(win.failures, win.calls);
        auto sr = rate(win.slow, win.calls);
        if (fr >= cfg_.failure_rate_threshold)
          transition_locked(breaker_state::open, transition_reason::failure_rate,
                            rate_text("failure rate", fr, cfg_.failure_rate_threshold, win.calls),
                            now());
        else if (sr >= cfg_.slow_call_rate_threshold)
          transition_locked(
              breaker_state::open, transition_reason::slow_call_rate,
              rate_text("slow-call rate", sr, cfg_.slow_call_rate_threshold, win.calls), now());
      }
    }
  } else if (s == breaker_state::half_open) {
    --win.trials_in_flight;
    ++win.trials_recorded;
    win.trial_failures += failure ? 1 : 0;
    win.trial_slow += outcome & outcome_slow ? 1 : 0;
    if (win.trials_recorded == cfg_.permitted_calls_in_half_open) {
      auto n = win.trials_recorded;
      auto fr = rate(win.trial_failures, n);
      auto sr = rate(win.trial_slow, n);
      if (fr >= cfg_.failure_rate_threshold)
        transition_locked(breaker_state::open, transition_reason::trial_calls_failed,
                          rate_text("failure rate", fr, cfg_.failure_rate_threshold, n), now());
      else if (sr >= cfg_.slow_call_rate_threshold)
        transition_locked(breaker_state::open, transition_reason::trial_calls_failed,
                          rate_text("slow-call rate", sr, cfg_.slow_call_rate_threshold, n), now());
      else
        transition_locked(breaker_state::closed, transition_reason::trial_calls_passed,
                          "failure rate " + number_text(fr) + " %, slow-call rate "
                              + number_text(sr) + " % over " + std::to_string(n) + " trial call(s)",
                          now());
    }
  }
  flush(lk);
}

void circuit_breaker::release(uint64_t w) noexcept {
  ignored_.fetch_add(1, std::memory_order_relaxed);
  if (state_of(w) != breaker_state::half_open)
    return;
  std::lock_guard lk{mtx_};
  if (word_.load(std::memory_order_relaxed) == w)
    --window_->trials_in_flight;
}

void circuit_breaker::transition_locked(breaker_state to, transition_reason why, std::string detail,
                                        time_point now) {
  auto w = word_.load(std::memory_order_relaxed);
  auto from = state_of(w);
  auto& win = *window_;
  switch (to) {
    case breaker_state::open:
      open_until_.store((now + cfg_.open_duration).time_since_epoch().count(),
                        std::memory_order_relaxed);
      break;
    case breaker_state::half_open:
      win.half_open_since = now;
      win.trials_in_flight = win.trials_recorded = win.trial_failures = win.trial_slow = 0;
      break;
    case breaker_state::closed:
      win.clear();
      break;
    case breaker_state::forced_open:
    case breaker_state::disabled:
      break;
  }
  // Release: a thread that sees the new state also sees open_until_.
  word_.store(make_word(epoch_of(w) + 1, to), std::memory_order_release);
  ++win.transitions;
  win.pending.push_back(state_change{from, to, why, std::move(detail), win.transitions});
}

void circuit_breaker::flush(std::unique_lock<std::mutex>& lk) {
  auto& win = *window_;
  if (win.pending.empty()) {
    lk.unlock();
    return;
  }
  auto events = std::move(win.pending);
  win.pending.clear();
  auto listener = win.listener;
  lk.unlock();
  if (listener && *listener)
    for (const auto& e : events)
      (*listener)(e);
}

void circuit_breaker::force_open() {
  std::unique_lock lk{mtx_};
  if (state() != breaker_state::forced_open)
    transition_locked(breaker_state::forced_open, transition_reason::forced_open, "force_open()",
                      now());
  flush(lk);
}

void circuit_breaker::disable() {
  std::unique_lock lk{mtx_};
  if (state() != breaker_state::disabled)
    transition_locked(breaker_state::disabled, transition_reason::disabled, "disable()", now());
  flush(lk);
}

void circuit_breaker::reset() {
  std::unique_lock lk{mtx_};
  if (state() != breaker_state::closed)
    transition_locked(breaker_state::closed, transition_reason::reset, "reset()", now());
  else
    window_->clear();
  flush(lk);
}

void circuit_breaker::on_state_change(state_listener listener) {
  auto p = listener ? std::make_shared<const state_listener>(std::move(listener)) : nullptr;
  std::lock_guard lk{mtx_};
  window_->listener = std::move(p);
}

breaker_metrics circuit_breaker::metrics() const {
  breaker_metrics m;
  m.not_permitted_calls = not_permitted_.load(std::memory_order_relaxed);
  m.ignored_calls = ignored_.load(std::memory_order_relaxed);
  std::lock_guard lk{mtx_};
  auto& win = *window_;
  m.state = state();
  m.transitions = win.transitions;
  if (m.state == breaker_state::closed) {
    if (!win.buckets.empty())
      win.advance(duration_cast<seconds>(now().time_since_epoch()).count());
    m.buffered_calls = win.calls;
    m.failed_calls = win.failures;
    m.slow_calls = win.slow;
    auto needed =
        win.ring.empty() ? cfg_.minimum_calls : std::min(cfg_.minimum_calls, cfg_.window_size);
    if (win.calls >= needed) {
      m.failure_rate = rate(win.failures, win.calls);
      m.slow_call_rate = rate(win.slow, win.calls);
    }
  } else if (m.state == breaker_state::half_open) {
    m.buffered_calls = win.trials_recorded;
    m.failed_calls = win.trial_failures;
    m.slow_calls = win.trial_slow;
    m.trial_calls_in_flight = win.trials_in_flight;
    m.failure_rate = rate(win.trial_failures, win.trials_recorded);
    m.slow_call_rate = rate(win.trial_slow, win.trials_recorded);
  }
  return m;
}

} // namespace keel
