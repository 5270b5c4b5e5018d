/// @file
/// A token-bucket rate limiter, per key.
///
/// Each key (tenant, user, endpoint; "" when there is only one) has a bucket
/// holding up to `burst` tokens that refills at `rate` tokens per second. A
/// call takes `n` tokens or is refused at once with
/// `resilience_code::rate_limited` (canonical `resource_exhausted`: retry
/// later), whose message names the limiter, the key and the time until the
/// tokens are there; `time_until_available` gives that time as a value.
///
/// @code
///   keel::rate_limiter limits{{.name = "api", .rate = 50, .burst = 100}};
///   if (auto ok = limits.try_acquire(user); !ok)
///     return ok.error();  // "rate limiter api: key u42 has 0.3 of 1 tokens; ..."
///   auto wait = limits.time_until_available(user);  // 0 when a token is there
/// @endcode
///
/// Thread-safe: keys are spread over shards, each with its own mutex. The
/// clock is injectable, so tests move time by hand. Memory stays bounded with
/// many keys: a bucket that has refilled to `burst` is the same as no bucket,
/// so when a shard holds more than its share of `max_keys` it drops its full
/// buckets (the number of buckets kept is then the number of keys that took a
/// token within the last `burst / rate` seconds).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/json/value.hpp>

#include "keel/error/error.hpp"
#include "keel/error/expected.hpp"
#include "keel/resilience/clock.hpp"
#include "keel/resilience/codes.hpp"

namespace keel {

/// The configuration of a rate limiter (plain values, also loadable from JSON).
struct rate_limiter_config {
  /// Named in refusals.
  std::string name = "rate_limiter";
  /// Tokens added per second, per key (> 0).
  double rate = 100.0;
  /// Bucket size: the most tokens a key can spend at once (>= 1). A new key
  /// starts with a full bucket.
  double burst = 100.0;
  /// Buckets kept before full ones are dropped (a soft bound, see the file
  /// overview).
  size_t max_keys = 100'000;
};

/// Reads a rate limiter configuration; every field optional:
///
///     {"name": "api", "rate": 50, "burst": 100, "max_keys": 100000}
///
/// Errors are `invalid_argument` naming the field under `path`.
expected<rate_limiter_config>
rate_limiter_config_from_json(const boost::json::value& v,
                              const std::string& path = "rate_limiter");

/// Parses JSON text and reads it.
expected<rate_limiter_config> rate_limiter_config_from_json_string(std::string_view text);

/// Counters of a rate limiter.
struct rate_limiter_stats {
  uint64_t admitted = 0;
  uint64_t rejected = 0;
  /// Buckets held now.
  size_t keys = 0;
};

/// Token buckets per key; thread-safe. See the file overview.
class rate_limiter {
public:
  using clock_type = std::chrono::steady_clock;
  using clock_fn = resilience_clock;

  // -- constructors -----------------------------------------------------------

  /// A limiter reading time from `clock` (default `steady_clock::now`).
  explicit rate_limiter(rate_limiter_config cfg, clock_fn clock = {});

  rate_limiter(const rate_limiter&) = delete;
  rate_limiter& operator=(const rate_limiter&) = delete;

  ~rate_limiter();

  // -- acquiring --------------------------------------------------------------

  /// Takes `n` tokens from `key`'s bucket, or fails at once with
  /// `rate_limited` (taking nothing). `n` above `burst` can never succeed and
  /// fails with `invalid_argument`.
  expected<void> try_acquire(std::string_view key = {}, uint32_t n = 1);

  /// How long until `key`'s bucket holds `n` tokens; 0 when it does now.
  /// `nanoseconds::max()` when `n` exceeds `burst`.
  std::chrono::nanoseconds time_until_available(std::string_view key = {}, uint32_t n = 1) const;

  // -- properties -------------------------------------------------------------

  rate_limiter_stats stats() const;

  const rate_limiter_config& config() const noexcept { return cfg_; }

  // -- memory -----------------------------------------------------------------

  /// Drops every bucket that has refilled to `burst`; returns how many.
  size_t trim();

private:
  struct bucket {
    double tokens = 0;
    clock_type::time_point last;
  };

  struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  static constexpr size_t shard_count = 16;

  struct shard {
    mutable std::mutex mtx;
    std::unordered_map<std::string, bucket, string_hash, std::equal_to<>> buckets;
    size_t sweep_at = 0; // bucket count that triggers the next sweep
    uint64_t admitted = 0;
    uint64_t rejected = 0;
  };

  shard& shard_of(std::string_view key) const noexcept {
    return shards_[string_hash{}(key) % shard_count];
  }

  double tokens_at(const bucket& b, clock_type::time_point now) const noexcept;

  std::chrono::nanoseconds wait_for(double missing) const noexcept;

  size_t sweep(shard& s, clock_type::time_point now);

  rate_limiter_config cfg_;
  clock_fn clock_;
  size_t per_shard_;
  mutable std::array<shard, shard_count> shards_;
};

} // namespace keel
