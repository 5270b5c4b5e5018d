// The journal interface's non-virtual parts: batch builders, saga state
// names, and what both journals share (ops.hpp).

#include "keel/store/journal.hpp"

#include "store/ops.hpp"

#include <array>
#include <chrono>

namespace keel {

namespace {

constexpr std::array<std::string_view, 6> saga_state_names = {
    "pending", "running", "compensating", "completed", "rolled_back", "needs_intervention",
};

} // namespace

std::string_view to_string(saga_state s) noexcept {
  auto i = static_cast<size_t>(s);
  return i < saga_state_names.size() ? saga_state_names[i] : std::string_view{"unknown"};
}

expected<saga_state> saga_state_from_string(std::string_view text) {
  for (size_t i = 0; i < saga_state_names.size(); ++i)
    if (saga_state_names[i] == text)
      return static_cast<saga_state>(i);
  return invalid_argument_error("unknown saga state \"" + std::string{text} + "\"");
}

namespace store {

// -- write_batch ---------------------------------------------------------------

write_batch& write_batch::put_saga(saga_record r) {
  ops_.emplace_back(op::put_saga{std::move(r)});
  return *this;
}

write_batch& write_batch::append_event(std::string stream, std::string type, std::string name,
                                       uint32_t attempt, std::string detail, unix_ms at) {
  event_record e;
  e.stream = std::move(stream);
  e.type = std::move(type);
  e.name = std::move(name);
  e.attempt = attempt;
  e.detail = std::move(detail);
  e.at = at;
  return append_event(std::move(e));
}

write_batch& write_batch::append_event(event_record e) {
  ops_.emplace_back(op::append_event{std::move(e)});
  return *this;
}

write_batch& write_batch::put_dlq(dlq_entry e) {
  ops_.emplace_back(op::put_dlq{std::move(e)});
  return *this;
}

write_batch& write_batch::remove_dlq(uint64_t id) {
  ops_.emplace_back(op::remove_dlq{id});
  return *this;
}

write_batch& write_batch::update_dlq(uint64_t id, uint32_t attempts, unix_ms last_seen,
                                     error failure) {
  ops_.emplace_back(op::update_dlq{id, attempts, last_seen, std::move(failure)});
  return *this;
}

write_batch& write_batch::set_checkpoint(std::string name, std::string value) {
  ops_.emplace_back(op::set_checkpoint{std::move(name), std::move(value)});
  return *this;
}

write_batch& write_batch::mark_processed(std::string consumer, std::string id) {
  ops_.emplace_back(op::mark_processed{std::move(consumer), std::move(id)});
  return *this;
}

write_batch& write_batch::acquire_lease(std::string name, std::string owner, unix_ms now,
                                        int64_t ttl_ms) {
  ops_.emplace_back(op::acquire_lease{std::move(name), std::move(owner), now, ttl_ms});
  return *this;
}

write_batch& write_batch::release_lease(std::string name, std::string owner) {
  ops_.emplace_back(op::release_lease{std::move(name), std::move(owner)});
  return *this;
}

// -- journal -------------------------------------------------------------------

journal::~journal() = default;

expected<void> journal::commit(const write_batch& batch) {
  const write_batch* one[] = {&batch};
  auto errs = commit_group(one);
  if (errs.empty())
    return internal_error(describe() + ": commit_group returned no result for one batch");
  if (errs.front())
    return std::move(errs.front());
  return {};
}

std::string saga_stream(std::string_view id) {
  return "saga/" + std::string{id};
}

std::string saga_lease(std::string_view id) {
  return "saga/" + std::string{id};
}

// -- shared by the implementations ----------------------------------------------

namespace detail {

unix_ms wall_now() noexcept {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

namespace {

error empty_field(std::string_view op_name, std::string_view field) {
  return invalid_argument_error(std::string{op_name} + ": empty " + std::string{field});
}

struct validator {
  error operator()(const op::put_saga& x) const {
    return x.record.id.empty() ? empty_field("put_saga", "saga id") : error{};
  }
  error operator()(const op::append_event& x) const {
    if (x.event.stream.empty())
      return empty_field("append_event", "stream");
    if (x.event.type.empty())
      return empty_field("append_event", "type");
    return {};
  }
  error operator()(const op::put_dlq& x) const {
    return x.entry.queue.empty() ? empty_field("put_dlq", "queue") : error{};
  }
  error operator()(const op::remove_dlq&) const { return {}; }
  error operator()(const op::update_dlq&) const { return {}; }
  error operator()(const op::set_checkpoint& x) const {
    return x.name.empty() ? empty_field("set_checkpoint", "name") : error{};
  }
  error operator()(const op::mark_processed& x) const {
    if (x.consumer.empty())
      return empty_field("mark_processed", "consumer");
    if (x.id.empty())
      return empty_field("mark_processed", "id");
    return {};
  }
  error operator()(const op::acquire_lease& x) const {
    if (x.name.empty())
      return empty_field("acquire_lease", "name");
    if (x.owner.empty())
      return empty_field("acquire_lease", "owner");
    if (x.ttl_ms <= 0)
      return invalid_argument_error("acquire_lease " + x.name + ": ttl_ms must be positive, got "
                                    + std::to_string(x.ttl_ms));
    return {};
  }
  error operator()(const op::release_lease& x) const {
    if (x.name.empty())
      return empty_field("release_lease", "name");
    if (x.owner.empty())
      return empty_field("release_lease", "owner");
    return {};
  }
};

} // namespace

error validate(const write_op& op) {
  return std::visit(validator{}, op);
}

error duplicate_error(std::string_view consumer, std::string_view id) {
  return already_exists_error("consumer " + std::string{consumer} + " already processed message "
                              + std::string{id});
}

error lease_held_error(const op::acquire_lease& op, std::string_view holder, unix_ms expires) {
  return failed_precondition_error("lease " + op.name + " is held by " + std::string{holder}
                                   + " until " + std::to_string(expires) + " (now "
                                   + std::to_string(op.now) + "), not by " + op.owner);
}

error batch_error(const journal& j, size_t index, error err) {
  return wrap(std::move(err), j.describe() + ": batch " + std::to_string(index));
}

} // namespace detail

} // namespace store
} // namespace keel
