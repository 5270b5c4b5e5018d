// Run configuration from JSON.

#include "keel/pipeline/config.hpp"
#include "keel/pipeline/resilience.hpp"

#include "detail/json_fields.hpp"

#include <boost/json.hpp>

namespace keel {

namespace json = boost::json;

namespace {

using detail::check_keys;
using detail::code_named;
using detail::json_bad_field;
using detail::object_at;
using detail::read_bool;
using detail::read_int;
using detail::read_ms;
using detail::read_number;

expected<error_class> class_named(std::string_view name, const std::string& path) {
  for (auto x : {error_class::item, error_class::critical, error_class::poison, error_class::skip})
    if (to_string(x) == name)
      return x;
  return invalid_argument_error(path + ": unknown class \"" + std::string{name}
                                + "\" (item, critical, poison or skip)");
}

expected<stage_overrides> stage_from_json(const json::value& v, const std::string& path) {
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err =
          check_keys(**o, path, {"workers", "ordered", "credit", "retry", "policy", "resilience"}))
    return err;
  stage_overrides s;
  bool missing = false;
  auto w = detail::json_int_field(**o, "workers", path, 1, 1024, missing);
  if (!w)
    return w.error();
  if (!missing)
    s.workers = static_cast<uint32_t>(*w);
  auto c = detail::json_int_field(**o, "credit", path, 1, 1 << 16, missing);
  if (!c)
    return c.error();
  if (!missing)
    s.credit = static_cast<uint32_t>(*c);
  if ((*o)->contains("ordered")) {
    bool b = false;
    if (auto err = read_bool(**o, "ordered", path, b))
      return err;
    s.ordered = b;
  }
  if (auto it = (*o)->find("retry"); it != (*o)->end()) {
    auto r = retry_policy_from_json(it->value(), path + ".retry");
    if (!r)
      return r.error();
    s.retry = std::move(*r);
  }
  if (auto it = (*o)->find("policy"); it != (*o)->end()) {
    auto p = error_policy_from_json(it->value(), path + ".policy");
    if (!p)
      return p.error();
    s.policy = std::move(*p);
  }
  if (auto it = (*o)->find("resilience"); it != (*o)->end()) {
    auto r = stage_resilience_from_json(it->value(), {}, path + ".resilience");
    if (!r)
      return r.error();
    if (r->retry) {
      if (s.retry)
        return invalid_argument_error(path
                                      + ".resilience.retry: the stage has a 'retry' too;"
                                        " give one of them");
      s.retry = *r->retry;
    }
    s.resilience = std::make_shared<const stage_resilience>(std::move(*r));
  }
  return s;
}

} // namespace

expected<error_policy> error_policy_from_json(const json::value& v, const std::string& path) {
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err = check_keys(**o, path, {"mode", "rules"}))
    return err;
  auto mode = detail::json_string_field(**o, "mode", path, false);
  if (!mode)
    return mode.error();
  error_policy p;
  if (mode->empty() || *mode == "hybrid")
    p = error_policy::hybrid();
  else if (*mode == "fail_fast")
    p = error_policy::fail_fast();
  else if (*mode == "collect_all")
    p = error_policy::collect_all();
  else
    return invalid_argument_error(path + ".mode: unknown mode \"" + *mode
                                  + "\" (fail_fast, collect_all or hybrid)");
  auto it = (*o)->find("rules");
  if (it == (*o)->end())
    return p;
  if (!it->value().is_array())
    return json_bad_field(path + ".rules", "an array of rules", it->value());
  // The file's rules come first: they refine the mode's defaults.
  error_policy rules;
  const auto& arr = it->value().get_array();
  for (size_t i = 0; i < arr.size(); ++i) {
    auto where = path + ".rules[" + std::to_string(i) + "]";
    auto r = object_at(arr[i], where);
    if (!r)
      return r.error();
    if (auto err = check_keys(**r, where, {"code", "category", "class"}))
      return err;
    auto cls_name = detail::json_string_field(**r, "class", where, true);
    if (!cls_name)
      return cls_name.error();
    auto cls = class_named(*cls_name, where + ".class");
    if (!cls)
      return cls.error();
    bool has_code = (*r)->contains("code");
    if (has_code == (*r)->contains("category"))
      return invalid_argument_error(where + ": a rule needs exactly one of 'code' or 'category'");
    if (has_code) {
      auto c = code_named((*r)->at("code"), where + ".code");
      if (!c)
        return c.error();
      rules.on(*c, *cls);
    } else {
      auto cat = detail::json_string_field(**r, "category", where, true);
      if (!cat)
        return cat.error();
      rules.on_category(*cat, *cls);
    }
  }
  p.prepend(rules);
  return p;
}

expected<run_config> run_config_from_json(const json::value& v, run_config base) {
  const std::string path = "run_config";
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err = check_keys(**o, path,
                            {"name", "batch_size", "credit", "deadline_ms", "max_errors",
                             "ordered_results", "latency_sample", "progress_every_ms", "seed",
                             "policy", "retry", "budget", "stages"}))
    return err;
  auto name = detail::json_string_field(**o, "name", path, false);
  if (!name)
    return name.error();
  if (!name->empty())
    base.name = *name;
  if (auto err = read_int(**o, "batch_size", path, 1, 1 << 20, base.batch_size))
    return err;
  if (auto err = read_int(**o, "credit", path, 1, 1 << 16, base.credit))
    return err;
  if (auto err = read_int(**o, "max_errors", path, 1, 1 << 30, base.max_errors))
    return err;
  if (auto err = read_int(**o, "latency_sample", path, 1, 1 << 30, base.latency_sample))
    return err;
  if (auto err = read_int(**o, "seed", path, 0, INT64_MAX, base.seed))
    return err;
  if (auto err = read_bool(**o, "ordered_results", path, base.ordered_results))
    return err;
  if ((*o)->contains("deadline_ms")) {
    std::chrono::nanoseconds d{0};
    if (auto err = read_ms(**o, "deadline_ms", path, d))
      return err;
    base.deadline = d;
  }
  if ((*o)->contains("progress_every_ms")) {
    std::chrono::nanoseconds d{0};
    if (auto err = read_ms(**o, "progress_every_ms", path, d))
      return err;
    base.progress_every = std::chrono::duration_cast<std::chrono::milliseconds>(d);
  }
  if (auto it = (*o)->find("policy"); it != (*o)->end()) {
    auto p = error_policy_from_json(it->value(), path + ".policy");
    if (!p)
      return p.error();
    base.policy = std::move(*p);
  }
  if (auto it = (*o)->find("retry"); it != (*o)->end()) {
    auto r = retry_policy_from_json(it->value(), path + ".retry");
    if (!r)
      return r.error();
    base.retry = std::move(*r);
  }
  if (auto it = (*o)->find("budget"); it != (*o)->end()) {
    auto where = path + ".budget";
    auto b = object_at(it->value(), where);
    if (!b)
      return b.error();
    if (auto err = check_keys(**b, where, {"ratio", "min_retries"}))
      return err;
    if (auto err = read_number(**b, "ratio", where, 0.0, 1e6, base.budget.ratio))
      return err;
    if (auto err = read_int(**b, "min_retries", where, 0, INT64_MAX, base.budget.min_retries))
      return err;
  }
  if (auto it = (*o)->find("stages"); it != (*o)->end()) {
    auto where = path + ".stages";
    auto s = object_at(it->value(), where);
    if (!s)
      return s.error();
    for (const auto& kv : **s) {
      auto st = stage_from_json(kv.value(), where + "." + std::string{kv.key()});
      if (!st)
        return st.error();
      base.stages[std::string{kv.key()}] = std::move(*st);
    }
  }
  return base;
}

expected<run_config> run_config_from_json_string(std::string_view text, run_config base) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec)
    return invalid_argument_error("run_config: invalid JSON: " + ec.message());
  return run_config_from_json(v, std::move(base));
}

} // namespace keel
