#include "keel/pipeline/dead_letters.hpp"

#include <boost/core/demangle.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>

#include <chrono>
#include <exception>
#include <system_error>

namespace keel {

namespace {

std::string unserializable(const std::string& why) {
  boost::json::object o;
  o["unserializable"] = "payload not serializable: " + why;
  return boost::json::serialize(o);
}

std::string what_of(std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

store::unix_ms to_unix_ms(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  return duration_cast<milliseconds>(t.time_since_epoch()).count();
}

} // namespace

store::dlq_entry dead_letter_codec::encode(const dead_item& d) const {
  store::dlq_entry e;
  e.key = std::to_string(d.origin);
  e.failure = d.error;
  e.attempts = d.attempts;
  e.first_seen = e.last_seen = to_unix_ms(d.time);
  e.source = d.stage;
  if (!d.value.has_value()) {
    e.payload = unserializable("the dead item holds no value");
    return e;
  }
  auto type = boost::core::demangle(d.value.type().name());
  auto i = types_.find(std::type_index(d.value.type()));
  if (i == types_.end()) {
    e.payload = unserializable("no to_json for type " + type + " in the dead_letter_codec");
    return e;
  }
  try {
    auto text = i->second.to_json(d.value);
    std::error_code ec;
    boost::json::parse(text, ec);
    e.payload =
        ec ? unserializable("to_json for type " + type + " gave invalid JSON: " + ec.message())
           : std::move(text);
  } catch (...) {
    e.payload =
        unserializable("to_json for type " + type + " threw: " + what_of(std::current_exception()));
  }
  if (i->second.key) {
    try {
      e.key = i->second.key(d.value);
    } catch (...) {
      // Keep the origin as the key: the entry matters more than its key.
    }
  }
  return e;
}

void dead_letter_writer::write(const dead_item& d) {
  auto r = dlq_.put(codec_.encode(d));
  std::lock_guard guard{mtx_};
  if (r)
    ++written_;
  else
    errors_.push_back(
        wrap(r.error(), "dead item " + std::to_string(d.item) + " of stage " + d.stage));
}

size_t dead_letter_writer::written() const {
  std::lock_guard guard{mtx_};
  return written_;
}

error dead_letter_writer::error() const {
  std::lock_guard guard{mtx_};
  return join(errors_);
}

expected<size_t> persist_dead_letters(const run_report& report, dead_letter_queue& dlq,
                                      const dead_letter_codec& codec) {
  if (report.dead_letters.empty())
    return size_t{0};
  store::write_batch batch;
  for (const auto& d : report.dead_letters)
    if (auto r = dlq.put(batch, codec.encode(d)); !r)
      return r.error();
  if (auto r = dlq.journal()->commit(batch); !r)
    return wrap(r.error(),
                "persisting the dead letters of run " + report.name + " into " + dlq.name());
  return report.dead_letters.size();
}

} // namespace keel
