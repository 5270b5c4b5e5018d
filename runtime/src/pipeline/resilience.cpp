// Declarative resilience for pipeline stages: configuration and guards.

#include "keel/pipeline/resilience.hpp"

#include "keel/pipeline/run.hpp"

#include "detail/json_fields.hpp"

#include <boost/json.hpp>

#include <exception>
#include <stdexcept>

namespace keel {

namespace json = boost::json;

namespace {

/// Builds a guard; a constructor's exception (an invalid configuration)
/// becomes `invalid_argument` naming the part.
template <class T, class... Args>
expected<std::shared_ptr<T>> make_guard(const std::string& what, Args&&... args) {
  try {
    return std::make_shared<T>(std::forward<Args>(args)...);
  } catch (const std::exception& e) {
    return invalid_argument_error(what + ": " + e.what());
  }
}

} // namespace

expected<stage_resilience> stage_resilience_from_json(const json::value& v, stage_resilience base,
                                                      const std::string& path) {
  auto obj = detail::object_at(v, path);
  if (!obj)
    return obj.error();
  const auto& o = **obj;
  if (auto err = detail::check_keys(
          o, path, {"breaker", "bulkhead", "bulkhead_per_key", "rate_limit", "retry"}))
    return err;
  if (auto it = o.find("breaker"); it != o.end()) {
    auto b = breaker_config_from_json(it->value(), base.breaker.value_or(breaker_config{}),
                                      path + ".breaker");
    if (!b)
      return b.error();
    base.breaker = std::move(*b);
  }
  if (auto it = o.find("bulkhead"); it != o.end()) {
    auto b = bulkhead_config_from_json(it->value(), path + ".bulkhead");
    if (!b)
      return b.error();
    base.bulkhead = std::move(*b);
  }
  if (auto err = detail::read_bool(o, "bulkhead_per_key", path, base.bulkhead_per_key))
    return err;
  if (auto it = o.find("rate_limit"); it != o.end()) {
    auto r = rate_limiter_config_from_json(it->value(), path + ".rate_limit");
    if (!r)
      return r.error();
    base.rate_limit = std::move(*r);
  }
  if (auto it = o.find("retry"); it != o.end()) {
    auto r = retry_policy_from_json(it->value(), path + ".retry");
    if (!r)
      return r.error();
    base.retry = std::move(*r);
  }
  return base;
}

expected<stage_guards> make_stage_guards(const stage_resilience& cfg, std::string_view stage) {
  stage_guards g;
  const std::string path = "stage " + std::string{stage} + ": resilience";
  if (cfg.breaker) {
    auto b = *cfg.breaker;
    if (b.name == breaker_config{}.name)
      b.name = std::string{stage};
    if (auto err = validate(b, path + ".breaker"))
      return err;
    auto x = make_guard<circuit_breaker>(path + ".breaker", std::move(b));
    if (!x)
      return x.error();
    g.breaker = std::move(*x);
  }
  if (cfg.bulkhead) {
    auto b = *cfg.bulkhead;
    if (b.name == bulkhead_config{}.name)
      b.name = std::string{stage};
    if (cfg.bulkhead_per_key) {
      auto x = make_guard<keel::keyed_bulkhead>(path + ".bulkhead", std::move(b));
      if (!x)
        return x.error();
      g.keyed_bulkhead = std::move(*x);
    } else {
      auto x = make_guard<keel::bulkhead>(path + ".bulkhead", std::move(b));
      if (!x)
        return x.error();
      g.bulkhead = std::move(*x);
    }
  }
  if (cfg.rate_limit) {
    auto r = *cfg.rate_limit;
    if (r.name == rate_limiter_config{}.name)
      r.name = std::string{stage};
    auto x = make_guard<keel::rate_limiter>(path + ".rate_limit", std::move(r));
    if (!x)
      return x.error();
    g.rate_limiter = std::move(*x);
  }
  return g;
}

expected<stage_guards> make_stage_guards(const run_config& cfg, const std::string& stage) {
  auto it = cfg.stages.find(stage);
  if (it == cfg.stages.end() || !it->second.resilience)
    return stage_guards{};
  return make_stage_guards(*it->second.resilience, stage);
}

} // namespace keel
