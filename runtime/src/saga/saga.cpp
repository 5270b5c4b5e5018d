// Saga definitions, data and step contexts: plain C++ (no CAF code runs here).

#include "keel/saga/data.hpp"
#include "keel/saga/definition.hpp"

#include <set>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace keel::saga {

// -- data ---------------------------------------------------------------------

expected<data> data::parse(std::string_view text) {
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec)
    return invalid_argument_error("saga data: not JSON: " + ec.message());
  if (!v.is_object())
    return invalid_argument_error("saga data: expected a JSON object, got "
                                  + std::string{boost::json::to_string(v.kind())});
  return data{std::move(v.as_object())};
}

std::string data::to_string() const {
  return boost::json::serialize(obj_);
}

error data::missing(std::string_view key) {
  return not_found_error("saga data has no value \"" + std::string{key} + "\"");
}

error data::mismatch(std::string_view key, std::string_view what) {
  return invalid_argument_error("saga data value \"" + std::string{key}
                                + "\" has another type: " + std::string{what});
}

// -- step_context ---------------------------------------------------------------

step_context::step_context(std::string saga_id, std::string step, bool compensating,
                           uint32_t attempt, bool after_crash, saga::data d,
                           caf::event_based_actor* self, completion done)
    : saga_id_(std::move(saga_id)), step_(std::move(step)),
      key_(saga_id_ + "/" + step_ + (compensating ? "/compensate" : "")),
      compensating_(compensating), attempt_(attempt), after_crash_(after_crash),
      data_(std::move(d)), self_(self), done_(std::move(done)) {}

void step_context::fail(error err) {
  if (!err)
    err = unknown_error("step " + step_ + " failed without an error");
  finish(std::move(err));
}

void step_context::finish(error err) {
  if (finished_.exchange(true))
    return;
  if (done_) {
    // Moved out first: the callback may drop the last reference to *this.
    auto f = std::move(done_);
    f(std::move(err));
  }
}

// -- definition -------------------------------------------------------------------

retry_policy step_options::default_compensation_retry() {
  retry_policy r;
  r.max_attempts = 5;
  r.initial_backoff = std::chrono::milliseconds(10);
  r.max_backoff = std::chrono::seconds(2);
  r.retryable = {code::cancelled,          code::unknown,        code::deadline_exceeded,
                 code::not_found,          code::already_exists, code::permission_denied,
                 code::resource_exhausted, code::aborted,        code::out_of_range,
                 code::internal,           code::unavailable,    code::data_loss,
                 code::unauthenticated,    code::panic};
  return r;
}

namespace {

/// Adapts a synchronous action to the asynchronous form: its return value (or
/// exception, as a panic) completes the context at once.
async_action to_async(action f) {
  if (!f)
    return {};
  return [f = std::move(f)](std::shared_ptr<step_context> ctx) {
    auto r = invoke_guarded([&] { return f(*ctx); });
    if (r)
      ctx->done();
    else
      ctx->fail(std::move(r).error());
  };
}

} // namespace

definition& definition::step(std::string name, action forward, action compensate,
                             step_options opts) {
  return async_step(std::move(name), to_async(std::move(forward)), to_async(std::move(compensate)),
                    std::move(opts));
}

definition& definition::async_step(std::string name, async_action forward, async_action compensate,
                                   step_options opts) {
  if (!compensate && opts.compensatable)
    compensate = [](std::shared_ptr<step_context> ctx) { ctx->done(); };
  steps_.push_back(
      saga::step{std::move(name), std::move(forward), std::move(compensate), std::move(opts)});
  return *this;
}

int definition::index_of(std::string_view name) const noexcept {
  for (size_t i = 0; i < steps_.size(); ++i)
    if (steps_[i].name == name)
      return static_cast<int>(i);
  return -1;
}

expected<void> definition::validate() const {
  auto bad = [&](const std::string& what) {
    return invalid_argument_error("saga definition \"" + kind_ + "\": " + what);
  };
  if (kind_.empty())
    return invalid_argument_error("saga definition: the kind is empty");
  if (steps_.empty())
    return bad("has no steps");
  std::set<std::string_view> seen;
  for (size_t i = 0; i < steps_.size(); ++i) {
    const auto& s = steps_[i];
    if (s.name.empty())
      return bad("step " + std::to_string(i + 1) + " has no name");
    if (!seen.insert(s.name).second)
      return bad("step \"" + s.name + "\" appears twice");
    if (!s.forward)
      return bad("step \"" + s.name + "\" has no forward action");
    if (s.options.timeout <= std::chrono::milliseconds::zero())
      return bad("step \"" + s.name + "\" has a timeout <= 0");
    if (s.options.retry.max_attempts == 0 || s.options.compensation_retry.max_attempts == 0)
      return bad("step \"" + s.name + "\" allows 0 attempts");
    if (s.options.compensatable && !s.compensate)
      return bad("step \"" + s.name + "\" is compensatable but has no compensator");
    if (!s.options.compensatable && !s.options.pivot) {
      // Anything after it that fails would need it undone.
      for (size_t k = i + 1; k < steps_.size(); ++k)
        if (steps_[k].options.compensatable)
          return bad("step \"" + s.name + "\" cannot be compensated but step \"" + steps_[k].name
                     + "\" after it can fail and would need it undone: make it last, or "
                       "declare it a pivot");
    }
  }
  if (rollback_deadline_ <= std::chrono::milliseconds::zero())
    return bad("the rollback deadline is <= 0");
  return {};
}

} // namespace keel::saga
