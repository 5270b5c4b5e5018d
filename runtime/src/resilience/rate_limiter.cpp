// Token buckets per key. A bucket stores its tokens at its last update and
// refills lazily from the clock when next looked at, so idle keys cost nothing
// but their memory, and full idle buckets are dropped (they equal no bucket).

#include "keel/resilience/rate_limiter.hpp"

#include "detail/json_fields.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace keel {

namespace {

std::string tokens_text(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", x);
  return buf;
}

std::string ms_text(std::chrono::nanoseconds d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3f ms", static_cast<double>(d.count()) / 1e6);
  return buf;
}

} // namespace

rate_limiter::rate_limiter(rate_limiter_config cfg, clock_fn clock)
    : cfg_(std::move(cfg)),
      clock_(clock ? std::move(clock) : clock_fn{[] { return clock_type::now(); }}),
      per_shard_(std::max<size_t>(1, cfg_.max_keys / shard_count)) {
  if (!(cfg_.rate > 0))
    cfg_.rate = 1e-9; // a bucket that practically never refills
  cfg_.burst = std::max(1.0, cfg_.burst);
  for (auto& s : shards_)
    s.sweep_at = per_shard_;
}

rate_limiter::~rate_limiter() = default;

double rate_limiter::tokens_at(const bucket& b, clock_type::time_point now) const noexcept {
  auto dt = std::chrono::duration<double>(now - b.last).count();
  if (dt <= 0)
    return b.tokens;
  return std::min(cfg_.burst, b.tokens + dt * cfg_.rate);
}

std::chrono::nanoseconds rate_limiter::wait_for(double missing) const noexcept {
  if (missing <= 0)
    return std::chrono::nanoseconds{0};
  double ns = std::ceil(missing / cfg_.rate * 1e9);
  if (!(ns < 0x1p62))
    return std::chrono::nanoseconds::max();
  return std::chrono::nanoseconds{static_cast<int64_t>(ns)};
}

size_t rate_limiter::sweep(shard& s, clock_type::time_point now) {
  size_t n = 0;
  for (auto it = s.buckets.begin(); it != s.buckets.end();) {
    if (tokens_at(it->second, now) >= cfg_.burst) {
      it = s.buckets.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  // Amortised: the next sweep waits until the shard has doubled.
  s.sweep_at = std::max(per_shard_, 2 * s.buckets.size());
  return n;
}

expected<void> rate_limiter::try_acquire(std::string_view key, uint32_t n) {
  if (static_cast<double>(n) > cfg_.burst)
    return invalid_argument_error("rate limiter " + cfg_.name + ": " + std::to_string(n)
                                  + " tokens asked, more than the burst of "
                                  + tokens_text(cfg_.burst));
  const auto now = clock_();
  const auto need = static_cast<double>(n);
  auto& s = shard_of(key);
  std::lock_guard<std::mutex> g{s.mtx};
  auto it = s.buckets.find(key);
  double have = it == s.buckets.end() ? cfg_.burst : tokens_at(it->second, now);
  if (have >= need) {
    if (it != s.buckets.end()) {
      it->second = bucket{have - need, now};
    } else {
      if (s.buckets.size() >= s.sweep_at)
        sweep(s, now);
      s.buckets.emplace(std::string{key}, bucket{have - need, now});
    }
    ++s.admitted;
    return {};
  }
  ++s.rejected;
  return make_error(resilience_code::rate_limited,
                    "rate limiter " + cfg_.name + ": key " + std::string{key} + " has "
                        + tokens_text(have) + " of " + std::to_string(n) + " tokens; enough in "
                        + ms_text(wait_for(need - have)) + " (rate " + tokens_text(cfg_.rate)
                        + "/s, burst " + tokens_text(cfg_.burst) + ")");
}

std::chrono::nanoseconds rate_limiter::time_until_available(std::string_view key,
                                                            uint32_t n) const {
  if (static_cast<double>(n) > cfg_.burst)
    return std::chrono::nanoseconds::max();
  const auto now = clock_();
  auto& s = shard_of(key);
  std::lock_guard<std::mutex> g{s.mtx};
  auto it = s.buckets.find(key);
  if (it == s.buckets.end())
    return std::chrono::nanoseconds{0};
  return wait_for(static_cast<double>(n) - tokens_at(it->second, now));
}

rate_limiter_stats rate_limiter::stats() const {
  rate_limiter_stats out;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> g{s.mtx};
    out.admitted += s.admitted;
    out.rejected += s.rejected;
    out.keys += s.buckets.size();
  }
  return out;
}

size_t rate_limiter::trim() {
  const auto now = clock_();
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> g{s.mtx};
    n += sweep(s, now);
  }
  return n;
}

expected<rate_limiter_config> rate_limiter_config_from_json(const boost::json::value& v,
                                                            const std::string& path) {
  using detail::check_keys;
  using detail::object_at;
  using detail::read_int;
  using detail::read_number;
  using detail::read_string;
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err = check_keys(**o, path, {"name", "rate", "burst", "max_keys"}))
    return err;
  rate_limiter_config c;
  if (auto err = read_string(**o, "name", path, c.name))
    return err;
  if (auto err = read_number(**o, "rate", path, 1e-6, 1e9, c.rate))
    return err;
  if (auto err = read_number(**o, "burst", path, 1.0, 1e9, c.burst))
    return err;
  if (auto err = read_int(**o, "max_keys", path, 1, INT64_MAX, c.max_keys))
    return err;
  return c;
}

expected<rate_limiter_config> rate_limiter_config_from_json_string(std::string_view text) {
  auto v = detail::parse_text(text, "rate_limiter");
  if (!v)
    return v.error();
  return rate_limiter_config_from_json(*v);
}

} // namespace keel
