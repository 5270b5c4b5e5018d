// Fault injection for the payment example.

#include "payment/faults.hpp"

namespace payment {

namespace {

uint64_t mix(uint64_t x) {
  // splitmix64's finalizer.
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hash(std::string_view s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

} // namespace

bool faults::hits(const fault& f, size_t rule_index, const std::string& order_id) const {
  if (!f.orders.empty() && f.orders.count(order_id) == 0)
    return false;
  if (f.share >= 1.0)
    return true;
  auto h = mix(seed_ ^ mix(rule_index + 1) ^ hash(order_id));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < f.share;
}

decision faults::decide(std::string_view step, bool compensator, const std::string& order_id) {
  std::lock_guard guard{mtx_};
  decision d;
  for (size_t i = 0; i < rules_.size(); ++i) {
    const auto& f = rules_[i];
    if ((f.step != "*" && f.step != step) || f.compensator != compensator || !hits(f, i, order_id))
      continue;
    if (f.latency_max > std::chrono::milliseconds::zero()) {
      auto lo = f.latency_min.count();
      auto hi = std::max(lo, f.latency_max.count());
      d.latency += std::chrono::milliseconds(std::uniform_int_distribution<int64_t>{lo, hi}(rng_));
    } else {
      d.latency += f.latency_min;
    }
    if (f.kind == fault_kind::none || d.kind != fault_kind::none)
      continue;
    auto& n = calls_[{i, order_id}];
    if (n >= f.times)
      continue;
    ++n;
    d.kind = f.kind;
    d.err = keel::make_error(f.code, std::string{step} + (compensator ? " (compensate)" : "") + ": "
                                         + f.message);
  }
  return d;
}

} // namespace payment
