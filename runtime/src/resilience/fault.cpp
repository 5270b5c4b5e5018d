// Fault injection: one mutex serialises decisions, so that a seeded injector
// draws the same sequence for the same order of calls.

#include "keel/resilience/fault.hpp"

#include "detail/json_fields.hpp"

#include <algorithm>

namespace keel {

namespace {

uint64_t splitmix64(uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// FNV-1a: the same on every platform, unlike std::hash.
uint64_t fnv1a(std::string_view s) noexcept {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

double unit_of(uint64_t h) noexcept {
  return static_cast<double>(h >> 11) * 0x1p-53;
}

} // namespace

std::string_view to_string(fault_action a) noexcept {
  switch (a) {
    case fault_action::fail:
      return "fail";
    case fault_action::latency:
      return "latency";
    case fault_action::throw_exception:
      return "throw";
  }
  return "unknown";
}

injected_exception::injected_exception(keel::error err)
    : std::runtime_error(std::string{err.message()}), err_(std::move(err)) {}

fault_injector::fault_injector(fault_config cfg)
    : cfg_(std::move(cfg)), enabled_(cfg_.enabled), rng_(cfg_.seed), hits_(cfg_.rules.size(), 0) {}

bool fault_injector::matches(const fault_rule& r, std::string_view key) const {
  if (!r.keys.empty() && std::find(r.keys.begin(), r.keys.end(), key) == r.keys.end())
    return false;
  return !r.predicate || r.predicate(key);
}

bool fault_injector::fires(size_t i, std::string_view key) {
  const auto& r = cfg_.rules[i];
  if (r.max_hits > 0 && hits_[i] >= r.max_hits)
    return false;
  if (r.by_key)
    return unit_of(splitmix64(cfg_.seed ^ splitmix64(i + 1) ^ fnv1a(key))) < r.probability;
  if (r.probability >= 1.0)
    return true;
  if (r.probability <= 0.0)
    return false;
  std::uniform_real_distribution<double> u{0.0, 1.0};
  return u(rng_) < r.probability;
}

fault_decision fault_injector::decide(std::string_view key) {
  fault_decision d;
  std::lock_guard<std::mutex> g{mtx_};
  ++calls_;
  if (!enabled())
    return d;
  for (size_t i = 0; i < cfg_.rules.size(); ++i) {
    const auto& r = cfg_.rules[i];
    if (!matches(r, key) || !fires(i, key))
      continue;
    ++hits_[i];
    if (r.action == fault_action::latency) {
      d.delay += r.latency;
      continue;
    }
    auto msg = "injected fault (rule " + r.name + ")"
               + (key.empty() ? std::string{} : " for key " + std::string{key});
    d.err = make_error(resilience_code::injected_fault, msg);
    if (r.code && *r.code != code::ok)
      d.err = keel::wrap(std::move(d.err), *r.code, std::move(msg));
    d.throws = r.action == fault_action::throw_exception;
    return d;
  }
  return d;
}

keel::error fault_injector::inject(std::string_view key) {
  auto d = decide(key);
  if (d.delay.count() > 0)
    std::this_thread::sleep_for(d.delay);
  if (d.throws)
    throw injected_exception(std::move(d.err));
  return std::move(d.err);
}

uint64_t fault_injector::injected() const {
  std::lock_guard<std::mutex> g{mtx_};
  uint64_t n = 0;
  for (auto h : hits_)
    n += h;
  return n;
}

uint64_t fault_injector::injected(std::string_view name) const {
  std::lock_guard<std::mutex> g{mtx_};
  uint64_t n = 0;
  for (size_t i = 0; i < cfg_.rules.size(); ++i)
    if (cfg_.rules[i].name == name)
      n += hits_[i];
  return n;
}

uint64_t fault_injector::calls() const {
  std::lock_guard<std::mutex> g{mtx_};
  return calls_;
}

// -- configuration ---------------------------------------------------------------

namespace {

using detail::check_keys;
using detail::code_named;
using detail::object_at;
using detail::parse_text;
using detail::read_bool;
using detail::read_int;
using detail::read_ms;
using detail::read_number;
using detail::read_string;

expected<fault_rule> rule_from_json(const boost::json::value& v, const std::string& path) {
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err = check_keys(
          **o, path,
          {"name", "action", "keys", "probability", "by_key", "max_hits", "latency_ms", "code"}))
    return err;
  fault_rule r;
  if (auto err = read_string(**o, "name", path, r.name))
    return err;
  if ((*o)->contains("action")) {
    auto a = detail::json_string_field(**o, "action", path, true);
    if (!a)
      return a.error();
    bool found = false;
    for (auto x : {fault_action::fail, fault_action::latency, fault_action::throw_exception})
      if (to_string(x) == *a) {
        r.action = x;
        found = true;
      }
    if (!found)
      return invalid_argument_error(path + ".action: unknown action \"" + *a
                                    + "\" (fail, latency or throw)");
  }
  if (auto it = (*o)->find("keys"); it != (*o)->end()) {
    if (!it->value().is_array())
      return detail::json_bad_field(path + ".keys", "an array of strings", it->value());
    const auto& arr = it->value().get_array();
    for (size_t i = 0; i < arr.size(); ++i) {
      if (!arr[i].is_string())
        return detail::json_bad_field(path + ".keys[" + std::to_string(i) + "]", "a string",
                                      arr[i]);
      r.keys.emplace_back(arr[i].get_string());
    }
  }
  if (auto err = read_number(**o, "probability", path, 0.0, 1.0, r.probability))
    return err;
  if (auto err = read_bool(**o, "by_key", path, r.by_key))
    return err;
  if (auto err = read_int(**o, "max_hits", path, 0, INT64_MAX, r.max_hits))
    return err;
  if (auto err = read_ms(**o, "latency_ms", path, r.latency))
    return err;
  if (auto it = (*o)->find("code"); it != (*o)->end()) {
    auto c = code_named(it->value(), path + ".code");
    if (!c)
      return c.error();
    r.code = *c;
  }
  if (r.action == fault_action::latency && r.latency.count() == 0)
    return invalid_argument_error(path + ".latency_ms: a latency rule needs a latency above 0");
  return r;
}

} // namespace

expected<fault_config> fault_config_from_json(const boost::json::value& v,
                                              const std::string& path) {
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err = check_keys(**o, path, {"seed", "enabled", "rules"}))
    return err;
  fault_config c;
  if (auto err = read_int(**o, "seed", path, 0, INT64_MAX, c.seed))
    return err;
  if (auto err = read_bool(**o, "enabled", path, c.enabled))
    return err;
  if (auto it = (*o)->find("rules"); it != (*o)->end()) {
    if (!it->value().is_array())
      return detail::json_bad_field(path + ".rules", "an array of rules", it->value());
    const auto& arr = it->value().get_array();
    for (size_t i = 0; i < arr.size(); ++i) {
      auto r = rule_from_json(arr[i], path + ".rules[" + std::to_string(i) + "]");
      if (!r)
        return r.error();
      c.rules.push_back(std::move(*r));
    }
  }
  return c;
}

expected<fault_config> fault_config_from_json_string(std::string_view text) {
  auto v = parse_text(text, "fault_injection");
  if (!v)
    return v.error();
  return fault_config_from_json(*v);
}

} // namespace keel
