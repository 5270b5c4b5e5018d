// Retry policies: decisions, backoff kinds and the JSON reader.

#include "keel/resilience/retry.hpp"

#include "detail/json_fields.hpp"

#include <algorithm>
#include <cmath>

namespace keel {

namespace {

using detail::check_keys;
using detail::code_named;
using detail::object_at;
using detail::read_int;
using detail::read_ms;
using detail::read_number;

// Delays are computed in double nanoseconds and clamped before converting:
// a cap of nanoseconds::max() means "no cap" and must not overflow int64.
constexpr double max_delay_ns = 0x1p62;

std::chrono::nanoseconds to_ns(double d) {
  return std::chrono::nanoseconds{static_cast<int64_t>(std::clamp(d, 0.0, max_delay_ns))};
}

double uniform01(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u{0.0, 1.0};
  return u(rng);
}

/// min(cap, base * multiplier^(next_attempt - 2)), without jitter.
double exponential_ns(const retry_policy& p, uint32_t next_attempt) {
  double d = static_cast<double>(p.initial_backoff.count())
             * std::pow(std::max(1.0, p.multiplier), next_attempt >= 2 ? next_attempt - 2 : 0);
  return std::min(d, static_cast<double>(p.max_backoff.count()));
}

double decorrelated_ns(const retry_policy& p, double previous, std::mt19937_64& rng) {
  auto base = static_cast<double>(p.initial_backoff.count());
  auto prev = std::max(previous, base);
  // AWS: sleep = min(cap, random_between(base, sleep * 3)).
  double d = base + uniform01(rng) * (3.0 * prev - base);
  return std::min(d, static_cast<double>(p.max_backoff.count()));
}

} // namespace

std::string_view to_string(backoff_kind k) noexcept {
  switch (k) {
    case backoff_kind::constant:
      return "constant";
    case backoff_kind::exponential:
      return "exponential";
    case backoff_kind::full_jitter:
      return "full_jitter";
    case backoff_kind::decorrelated_jitter:
      return "decorrelated_jitter";
  }
  return "unknown";
}

std::optional<backoff_kind> backoff_kind_from_string(std::string_view name) noexcept {
  for (auto k : {backoff_kind::constant, backoff_kind::exponential, backoff_kind::full_jitter,
                 backoff_kind::decorrelated_jitter})
    if (to_string(k) == name)
      return k;
  return std::nullopt;
}

std::string_view to_string(retry_verdict v) noexcept {
  switch (v) {
    case retry_verdict::retry:
      return "retry";
    case retry_verdict::success:
      return "success";
    case retry_verdict::not_retryable:
      return "not_retryable";
    case retry_verdict::attempts_spent:
      return "attempts_spent";
    case retry_verdict::time_spent:
      return "time_spent";
  }
  return "unknown";
}

bool retry_policy::retryable_error(const error& err) const {
  if (!err || max_attempts <= 1)
    return false;
  // The top-level code: the classification at the last boundary decides,
  // for the default set and for an explicit list alike.
  auto c = err.code();
  if (retryable.empty())
    return retry_advice_of(c) == retry_advice::retry_call || c == code::aborted || c == code::panic;
  return std::find(retryable.begin(), retryable.end(), c) != retryable.end();
}

std::chrono::nanoseconds retry_policy::delay(uint32_t next_attempt, std::mt19937_64& rng) const {
  switch (backoff) {
    case backoff_kind::constant:
      return to_ns(std::min(static_cast<double>(initial_backoff.count()),
                            static_cast<double>(max_backoff.count())));
    case backoff_kind::full_jitter:
      return to_ns(uniform01(rng) * exponential_ns(*this, next_attempt));
    case backoff_kind::decorrelated_jitter:
      return to_ns(decorrelated_ns(
          *this, next_attempt >= 3 ? exponential_ns(*this, next_attempt - 1) : 0.0, rng));
    case backoff_kind::exponential:
      break;
  }
  double d = exponential_ns(*this, next_attempt);
  if (jitter > 0)
    d *= 1.0 - std::min(jitter, 1.0) * uniform01(rng);
  return to_ns(d);
}

std::chrono::nanoseconds retry_policy::next_delay(const retry_state& st,
                                                  std::mt19937_64& rng) const {
  if (backoff == backoff_kind::decorrelated_jitter)
    return to_ns(decorrelated_ns(*this, static_cast<double>(st.previous_delay.count()), rng));
  auto next = st.attempts == UINT32_MAX ? UINT32_MAX : st.attempts + 1;
  return delay(next, rng);
}

retry_decision retry_policy::decide(const error& err, retry_state& st,
                                    std::chrono::nanoseconds elapsed, std::mt19937_64& rng) const {
  if (!err)
    return {retry_verdict::success, {}};
  if (!retryable_error(err))
    return {retry_verdict::not_retryable, {}};
  if (st.attempts >= max_attempts)
    return {retry_verdict::attempts_spent, {}};
  auto d = next_delay(st, rng);
  if (!within_budget(elapsed, d))
    return {retry_verdict::time_spent, d};
  st.attempts += 1;
  st.previous_delay = d;
  return {retry_verdict::retry, d};
}

expected<retry_policy> retry_policy_from_json(const boost::json::value& v,
                                              const std::string& path) {
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err = check_keys(**o, path,
                            {"max_attempts", "initial_backoff_ms", "max_backoff_ms", "multiplier",
                             "jitter", "backoff", "max_elapsed_ms", "retryable"}))
    return err;
  retry_policy r;
  if (auto err = read_int(**o, "max_attempts", path, 1, 1000, r.max_attempts))
    return err;
  if (auto err = read_ms(**o, "initial_backoff_ms", path, r.initial_backoff))
    return err;
  if (auto err = read_ms(**o, "max_backoff_ms", path, r.max_backoff))
    return err;
  if (auto err = read_number(**o, "multiplier", path, 1.0, 100.0, r.multiplier))
    return err;
  if (auto err = read_number(**o, "jitter", path, 0.0, 1.0, r.jitter))
    return err;
  if (auto err = read_ms(**o, "max_elapsed_ms", path, r.max_elapsed, 7 * 86'400'000.0))
    return err;
  if (r.max_backoff < r.initial_backoff)
    return invalid_argument_error(path + ": max_backoff_ms is below initial_backoff_ms");
  if ((*o)->contains("backoff")) {
    auto name = detail::json_string_field(**o, "backoff", path, true);
    if (!name)
      return name.error();
    auto k = backoff_kind_from_string(*name);
    if (!k)
      return invalid_argument_error(
          path + ".backoff: unknown backoff \"" + *name
          + "\" (constant, exponential, full_jitter or decorrelated_jitter)");
    r.backoff = *k;
  }
  if (auto it = (*o)->find("retryable"); it != (*o)->end()) {
    if (!it->value().is_array())
      return detail::json_bad_field(path + ".retryable", "an array of code names", it->value());
    const auto& arr = it->value().get_array();
    for (size_t i = 0; i < arr.size(); ++i) {
      auto c = code_named(arr[i], path + ".retryable[" + std::to_string(i) + "]");
      if (!c)
        return c.error();
      r.retryable.push_back(*c);
    }
  }
  return r;
}

} // namespace keel
