/// @file
/// `keel::circuit_breaker`: stops calling a dependency that keeps failing, and
/// lets a few trial calls through after a while to see whether it recovered.
///
/// @code
///   keel::breaker_config cfg;
///   cfg.name = "payments";
///   cfg.window_size = 50;             // the last 50 calls
///   cfg.minimum_calls = 20;           // judge only after 20 calls
///   cfg.failure_rate_threshold = 50;  // open at >= 50 % failures
///   cfg.open_duration = std::chrono::seconds{10};
///   keel::circuit_breaker breaker{cfg};
///
///   // Either let the breaker time and record the call ...
///   keel::expected<receipt> r = breaker.call([&] { return payments.charge(order); });
///   // ... or hold a permit and record yourself (e.g. around an asynchronous call).
///   auto permit = breaker.try_acquire();
///   if (!permit)
///     return permit.error();  // resilience_code::circuit_open, at once
///   auto res = payments.charge(order);
///   if (res)
///     permit->record_success(elapsed);
///   else
///     permit->record_failure(res.error(), elapsed);
/// @endcode
///
/// States (`breaker_state`): *closed* lets every call through and records its
/// outcome in a sliding window (the last N calls, or the calls of the last N
/// seconds); once the window holds `minimum_calls` outcomes and the failure
/// rate or the slow-call rate reaches its threshold (or `consecutive_failures`
/// calls failed in a row) it opens. *open* refuses every call at once with
/// `resilience_code::circuit_open` until `open_duration` has passed; the next
/// call then turns it *half-open*. *half-open* admits exactly
/// `permitted_calls_in_half_open` trial calls, refuses the others, and once
/// every trial call is recorded closes (rates below the thresholds) or opens
/// again. A half-open breaker whose trial calls are not all recorded within
/// `max_wait_in_half_open` (a caller lost its permit, a reply never came)
/// opens again: it can never stay stuck half-open. *forced_open* refuses
/// everything and *disabled* admits everything and records nothing, until
/// `reset()`. Time-driven transitions happen on the next `try_acquire` (no
/// timer thread).
///
/// Thread safety: every member function may be called from any thread. The
/// state is one atomic word, so admitting a call in the closed state costs
/// one atomic load; recording an outcome takes a mutex for the few
/// instructions that update the window; transitions happen under the same
/// mutex, and listeners run after it is released.
///
/// Why not an actor: most callers are already inside an actor or a pipeline
/// stage and only need a cheap check before a call. An actor guarding a
/// dependency shared by many stages is in keel/resilience/breaker_actor.hpp
/// (keel::actors), built on this class.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <exception>
#include <functional>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/json/fwd.hpp>

#include "keel/error/code.hpp"
#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"
#include "keel/error/panic.hpp"
#include "keel/resilience/clock.hpp"
#include "keel/resilience/codes.hpp"

namespace keel {

class circuit_breaker;

// -- enums ---------------------------------------------------------------------

/// The state of a breaker. Values go on the wire (breaker actor events): never
/// renumber.
enum class breaker_state : uint8_t {
  /// Calls pass; outcomes are recorded.
  closed = 0,
  /// Calls are refused until `open_duration` has passed.
  open = 1,
  /// A limited number of trial calls pass; their outcomes decide.
  half_open = 2,
  /// Calls are refused until `reset()` (an operator's decision).
  forced_open = 3,
  /// Calls pass and nothing is recorded until `reset()`.
  disabled = 4,
};

/// "closed", "open", "half_open", "forced_open" or "disabled".
std::string_view to_string(breaker_state s) noexcept;

std::ostream& operator<<(std::ostream& os, breaker_state s);

/// How the closed state's sliding window is measured.
enum class sliding_window : uint8_t {
  /// The outcomes of the last `window_size` calls.
  count_based = 0,
  /// The outcomes of the calls completed in the last `window_size` seconds
  /// (one bucket per second).
  time_based = 1,
};

/// "count_based" or "time_based".
std::string_view to_string(sliding_window w) noexcept;

/// Why a breaker changed state. Values go on the wire: never renumber.
enum class transition_reason : uint8_t {
  /// The failure rate of the window reached `failure_rate_threshold`.
  failure_rate = 0,
  /// The slow-call rate of the window reached `slow_call_rate_threshold`.
  slow_call_rate = 1,
  /// `consecutive_failures` calls failed in a row.
  consecutive_failures = 2,
  /// `open_duration` passed: open -> half-open.
  open_duration_elapsed = 3,
  /// Every trial call was recorded and the rates are below the thresholds.
  trial_calls_passed = 4,
  /// Every trial call was recorded and a rate reached its threshold.
  trial_calls_failed = 5,
  /// The trial calls were not all recorded within `max_wait_in_half_open`.
  max_wait_in_half_open = 6,
  /// `force_open()`.
  forced_open = 7,
  /// `disable()`.
  disabled = 8,
  /// `reset()`.
  reset = 9,
};

/// The snake_case name of `r`, e.g. "failure_rate".
std::string_view to_string(transition_reason r) noexcept;

// -- configuration -------------------------------------------------------------

/// Tells whether an error counts as a failure of the guarded dependency. An
/// error that does not count is recorded as a success: the dependency
/// answered, the request was wrong (e.g. `invalid_argument`).
using failure_predicate = std::function<bool(const error&)>;

/// The default predicate: the canonical codes whose advice is to retry the
/// call (`unavailable`, `resource_exhausted`, `deadline_exceeded`) plus
/// `internal`, `unknown` and `panic`: the dependency is unwell.
/// `invalid_argument`, `not_found`, `permission_denied`, `failed_precondition`,
/// `aborted`, `cancelled` and the other codes do not count: the request was
/// wrong or lost a race, which says nothing about the dependency's health.
bool default_is_failure(const error& err) noexcept;

/// A predicate counting exactly the errors whose canonical code is in `codes`.
failure_predicate failure_codes(std::vector<code> codes);

/// The clock a breaker reads; injectable so that tests need not sleep.
using breaker_clock = resilience_clock;

/// A state change, as reported to listeners and breaker actor subscribers.
struct state_change {
  breaker_state from = breaker_state::closed;
  breaker_state to = breaker_state::closed;
  transition_reason reason = transition_reason::reset;
  /// Human-readable detail, e.g. "failure rate 60 % >= 50 % over 10 calls".
  std::string detail;
  /// Numbers the changes of one breaker 1, 2, ...: listeners run outside the
  /// breaker's lock, so two changes caused by two threads may be reported out
  /// of order; this restores it.
  uint64_t sequence = 0;

  friend bool operator==(const state_change&, const state_change&) = default;
};

/// Called after every state change, outside the breaker's lock, on the thread
/// that caused it. It may call back into the breaker.
using state_listener = std::function<void(const state_change&)>;

/// The options of a breaker. Defaults follow resilience4j, except
/// `max_wait_in_half_open`, which is finite so that a breaker cannot stay
/// stuck half-open.
struct breaker_config {
  /// Names the breaker in errors and events.
  std::string name = "breaker";
  /// Count-based (last N calls) or time-based (last N seconds).
  sliding_window window_type = sliding_window::count_based;
  /// N: calls (count-based) or seconds (time-based). 1..1,000,000 calls,
  /// 1..3600 seconds.
  uint32_t window_size = 100;
  /// Opens when the failure rate (%) reaches this. In (0, 100].
  double failure_rate_threshold = 50;
  /// A call taking at least this long is slow. > 0.
  std::chrono::nanoseconds slow_call_duration = std::chrono::seconds{60};
  /// Opens when the slow-call rate (%) reaches this. In (0, 100].
  double slow_call_rate_threshold = 100;
  /// Rates are judged only when the window holds at least this many calls
  /// (capped at `window_size` for a count-based window). >= 1.
  uint32_t minimum_calls = 100;
  /// Opens after this many failures in a row, whatever the rates; 0 = off.
  uint32_t consecutive_failures = 0;
  /// How long the breaker stays open before it half-opens. > 0.
  std::chrono::nanoseconds open_duration = std::chrono::seconds{60};
  /// How many trial calls half-open admits (and records before deciding). >= 1.
  uint32_t permitted_calls_in_half_open = 10;
  /// After this long half-open without every trial call recorded, the
  /// breaker opens again. > 0 (never wait forever).
  std::chrono::nanoseconds max_wait_in_half_open = std::chrono::seconds{60};
  /// Which errors count as failures; null means `default_is_failure`.
  failure_predicate is_failure;
  /// The clock; null means the monotonic clock: its coarse variant
  /// (CLOCK_MONOTONIC_COARSE, about 6 ns a read instead of 28 ns here, one
  /// kernel tick of 1-4 ms resolution) when `slow_call_duration` is at least
  /// 250 ms, so that timing a call stays cheap, else `steady_clock::now`.
  breaker_clock clock;
};

/// Checks `cfg`; the error (invalid_argument) names the first bad field under
/// `path`, e.g. "breaker.failure_rate_threshold: expected a number in (0, 100], got 0".
error validate(const breaker_config& cfg, const std::string& path = "breaker");

/// Reads a configuration from JSON on top of `base`; every field is optional:
///
///     {"name": "payments", "window_type": "time_based", "window_size": 30,
///      "failure_rate_threshold": 50, "slow_call_duration_ms": 2000,
///      "slow_call_rate_threshold": 80, "minimum_calls": 20,
///      "consecutive_failures": 5, "open_duration_ms": 10000,
///      "permitted_calls_in_half_open": 3, "max_wait_in_half_open_ms": 30000,
///      "failure_codes": ["unavailable", "deadline_exceeded"]}
///
/// Unknown fields, wrong types and out-of-range values fail with
/// `invalid_argument` naming the field, e.g. "breaker.window_size: ...".
expected<breaker_config> breaker_config_from_json(const boost::json::value& v,
                                                  breaker_config base = {},
                                                  const std::string& path = "breaker");

// -- metrics -------------------------------------------------------------------

/// A snapshot of a breaker, for dashboards and tests.
struct breaker_metrics {
  breaker_state state = breaker_state::closed;
  /// Failure rate (%) of the window (closed; -1 below the minimum calls) or
  /// of the trial calls recorded so far (half-open; -1 before the first).
  double failure_rate = -1;
  /// Slow-call rate (%), -1 likewise.
  double slow_call_rate = -1;
  /// Outcomes in the window (closed) or recorded trial calls (half-open).
  uint32_t buffered_calls = 0;
  uint32_t failed_calls = 0;
  uint32_t slow_calls = 0;
  /// Trial calls admitted and not yet recorded or released (half-open).
  uint32_t trial_calls_in_flight = 0;
  /// Calls refused since construction.
  uint64_t not_permitted_calls = 0;
  /// Permits dropped without an outcome, and outcomes that arrived after
  /// the state they were admitted in had ended.
  uint64_t ignored_calls = 0;
  /// State changes since construction.
  uint64_t transitions = 0;
};

// -- permit ----------------------------------------------------------------------

/// The right to make one call, from `circuit_breaker::try_acquire`. Record
/// its outcome once; a permit dropped without an outcome gives its half-open
/// slot back and counts as ignored. Must not outlive its breaker. Movable,
/// not copyable; not meant to be shared between threads.
class [[nodiscard]] breaker_permit {
public:
  using duration = std::chrono::nanoseconds;

  // -- constructors, destructors, and assignment operators --------------------

  breaker_permit() noexcept = default;

  breaker_permit(breaker_permit&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)), word_(other.word_) {}

  breaker_permit& operator=(breaker_permit&& other) noexcept {
    if (this != &other) {
      release();
      owner_ = std::exchange(other.owner_, nullptr);
      word_ = other.word_;
    }
    return *this;
  }

  breaker_permit(const breaker_permit&) = delete;
  breaker_permit& operator=(const breaker_permit&) = delete;

  ~breaker_permit() { release(); }

  // -- recording ----------------------------------------------------------------

  /// The call succeeded after `elapsed` (a slow success still counts as slow).
  void record_success(duration elapsed);

  /// The call failed with `err` after `elapsed`; an error the breaker's
  /// predicate does not count is recorded as a success.
  void record_failure(const error& err, duration elapsed);

  /// Gives the permit back without an outcome (counted as ignored).
  void release() noexcept;

  /// True until an outcome is recorded or the permit released.
  bool active() const noexcept { return owner_ != nullptr; }

  /// The state the call was admitted in: `half_open` for a trial call.
  breaker_state admitted_in() const noexcept { return static_cast<breaker_state>(word_ & 0xff); }

private:
  friend class circuit_breaker;

  breaker_permit(circuit_breaker* owner, uint64_t word) noexcept : owner_(owner), word_(word) {}

  circuit_breaker* owner_ = nullptr;
  uint64_t word_ = 0; // the breaker's state word when admitted
};

// -- circuit_breaker -----------------------------------------------------------

/// A circuit breaker; see the file overview.
class circuit_breaker {
public:
  using clock_type = std::chrono::steady_clock;
  using time_point = clock_type::time_point;
  using duration = std::chrono::nanoseconds;

  // -- constructors, destructors, and assignment operators --------------------

  /// Throws `std::invalid_argument` with `validate(cfg)`'s message when the
  /// configuration is invalid (check it first with `validate` or read it
  /// with `breaker_config_from_json` to get a `keel::error` instead).
  explicit circuit_breaker(breaker_config cfg = {});

  ~circuit_breaker();

  circuit_breaker(const circuit_breaker&) = delete;
  circuit_breaker& operator=(const circuit_breaker&) = delete;

  // -- calls --------------------------------------------------------------------

  /// Admits a call or refuses it at once with `resilience_code::circuit_open`
  /// (canonical `unavailable`), whose message names the breaker and when it
  /// may admit calls again. Closed and disabled: one atomic load.
  expected<breaker_permit> try_acquire() {
    auto w = word_.load(std::memory_order_acquire);
    auto s = state_of(w);
    if (s == breaker_state::closed || s == breaker_state::disabled) [[likely]]
      return breaker_permit{this, w};
    return acquire_slow(w);
  }

  /// Runs `f` if admitted, timing it with the breaker's clock and recording
  /// its outcome, and returns its result; refused, returns the circuit_open
  /// error without calling `f`. `f` may return `expected<T>`, `keel::error`
  /// (empty on success), `void` or any other `T` (always a success); the
  /// result is `expected<T>` (`keel::error` for an `f` returning one). An
  /// exception from `f` is recorded as a `panic` failure and rethrown.
  template <class F>
  auto call(F&& f);

  // -- administration -------------------------------------------------------------

  /// Refuses every call until `reset()`.
  void force_open();

  /// Admits every call and records nothing until `reset()`.
  void disable();

  /// Closed, with an empty window.
  void reset();

  /// Installs the state-change listener (replacing any earlier one; null
  /// removes it). Safe to call at any time.
  void on_state_change(state_listener listener);

  // -- properties ---------------------------------------------------------------

  const std::string& name() const noexcept { return cfg_.name; }

  const breaker_config& config() const noexcept { return cfg_; }

  /// The current state (time-driven transitions happen on the next call).
  breaker_state state() const noexcept { return state_of(word_.load(std::memory_order_acquire)); }

  breaker_metrics metrics() const;

  /// The breaker's clock (see `breaker_config::clock`).
  time_point now() const {
    if (cfg_.clock) [[unlikely]]
      return cfg_.clock();
#ifdef CLOCK_MONOTONIC_COARSE
    if (coarse_clock_) {
      // Same epoch as steady_clock (CLOCK_MONOTONIC), coarser ticks.
      timespec ts;
      ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
      return time_point{std::chrono::seconds{ts.tv_sec} + std::chrono::nanoseconds{ts.tv_nsec}};
    }
#endif
    return clock_type::now();
  }

private:
  friend class breaker_permit;
  struct window;
  struct pending_event;

  // The state word: state in the low 8 bits, the epoch (incremented by every
  // transition) above. A permit keeps the word it was admitted with, so an
  // outcome recorded after the state ended is recognised and ignored.
  static breaker_state state_of(uint64_t w) noexcept {
    return static_cast<breaker_state>(w & 0xff);
  }

  expected<breaker_permit> acquire_slow(uint64_t w);
  void record(uint64_t w, bool failure, duration elapsed);
  void release(uint64_t w) noexcept;
  bool counts_as_failure(const error& err) const;

  // Under mtx_: moves to `to` and queues the event for `flush`.
  void transition_locked(breaker_state to, transition_reason why, std::string detail,
                         time_point now);
  // Unlocks `lk` and delivers the queued events.
  void flush(std::unique_lock<std::mutex>& lk);

  error refuse_open(time_point now);

  breaker_config cfg_;
  bool coarse_clock_ = false;
  std::atomic<uint64_t> word_;
  // When an open breaker may half-open (clock ticks), read without the lock.
  std::atomic<int64_t> open_until_{0};
  std::atomic<uint64_t> not_permitted_{0};
  std::atomic<uint64_t> ignored_{0};

  mutable std::mutex mtx_;
  std::unique_ptr<window> window_; // guarded by mtx_
};

// -- template implementations ----------------------------------------------------

namespace detail {

template <class T>
struct breaker_call_traits {
  using result = expected<T>;
  static bool failed(const T&) { return false; }
  static const error& err(const T&) { return no_error; }
};

template <class T>
struct breaker_call_traits<expected<T>> {
  using result = expected<T>;
  static bool failed(const expected<T>& x) { return !x.has_value(); }
  static const error& err(const expected<T>& x) { return x.error(); }
};

template <>
struct breaker_call_traits<error> {
  using result = error;
  static bool failed(const error& x) { return static_cast<bool>(x); }
  static const error& err(const error& x) { return x; }
};

} // namespace detail

template <class F>
auto circuit_breaker::call(F&& f) {
  using raw = std::invoke_result_t<F&>;
  if constexpr (std::is_void_v<raw>) {
    return call([&f]() -> expected<void> {
      std::invoke(f);
      return {};
    });
  } else {
    using traits = detail::breaker_call_traits<std::remove_cvref_t<raw>>;
    using result_type = typename traits::result;
    auto p = try_acquire();
    if (!p)
      return result_type{std::move(p).error()};
    auto start = now();
    try {
      auto r = std::invoke(f);
      auto elapsed = now() - start;
      if (traits::failed(r))
        p->record_failure(traits::err(r), elapsed);
      else
        p->record_success(elapsed);
      return result_type{std::move(r)};
    } catch (...) {
      p->record_failure(make_panic_error(std::current_exception()), now() - start);
      throw;
    }
  }
}

inline void breaker_permit::record_success(duration elapsed) {
  if (auto* b = std::exchange(owner_, nullptr))
    b->record(word_, false, elapsed);
}

inline void breaker_permit::record_failure(const error& err, duration elapsed) {
  if (auto* b = std::exchange(owner_, nullptr))
    b->record(word_, b->counts_as_failure(err), elapsed);
}

inline void breaker_permit::release() noexcept {
  if (auto* b = std::exchange(owner_, nullptr))
    b->release(word_);
}

} // namespace keel
