#include "keel/resilience/dlq.hpp"

#include "keel/error/panic.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <set>
#include <system_error>
#include <utility>

namespace keel {

namespace {

store::unix_ms wall_clock_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

bool matches(const store::dlq_entry& e, const dlq_filter& f) {
  if (f.key && e.key != *f.key)
    return false;
  if (f.source && e.source != *f.source)
    return false;
  if (f.code && !error_has_code(e.failure, *f.code))
    return false;
  return true;
}

bool matches(const store::dlq_entry& e, const dlq_selection& s) {
  if (s.empty())
    return false;
  if (!s.ids.empty() && std::find(s.ids.begin(), s.ids.end(), e.id) == s.ids.end())
    return false;
  if (s.key && e.key != *s.key)
    return false;
  if (s.source && e.source != *s.source)
    return false;
  if (s.older_than && e.last_seen >= *s.older_than)
    return false;
  return true;
}

std::string describe(const store::dlq_entry& e) {
  return "dead letter " + std::to_string(e.id) + " (key " + e.key + ")";
}

} // namespace

std::string dlq_replay_id(const store::dlq_entry& entry) {
  return entry.key + "#dlq-" + std::to_string(entry.id);
}

bool error_has_code(const error& err, std::string_view name) {
  return !walk(err, [&](const error& n) {
    auto code_name = n.code_name();
    if (code_name == name || to_string(n.code()) == name)
      return false;
    auto category = n.category();
    return !(name.size() == category.size() + 1 + code_name.size() && name.starts_with(category)
             && name[category.size()] == '.' && name.ends_with(code_name));
  });
}

// -- constructors -------------------------------------------------------------

dead_letter_queue::dead_letter_queue(std::shared_ptr<store::journal> journal, std::string name,
                                     dlq_options opts)
    : journal_(std::move(journal)), name_(std::move(name)), opts_(std::move(opts)) {}

// -- writing ------------------------------------------------------------------

expected<void> dead_letter_queue::put(store::dlq_entry entry) {
  store::write_batch batch;
  if (auto r = put(batch, std::move(entry)); !r)
    return r;
  if (auto r = journal_->commit(batch); !r)
    return wrap(r.error(), "dead-letter queue " + name_ + ": put");
  return {};
}

expected<void> dead_letter_queue::put(store::write_batch& batch, store::dlq_entry entry) {
  if (entry.payload.empty())
    entry.payload = "null";
  std::error_code ec;
  boost::json::parse(entry.payload, ec);
  if (ec)
    return invalid_argument_error("dead-letter queue " + name_ + ": the payload of key " + entry.key
                                  + " is not JSON: " + ec.message());
  entry.id = 0;
  entry.queue = name_;
  if (entry.attempts == 0)
    entry.attempts = 1;
  if (entry.first_seen == 0)
    entry.first_seen = entry.last_seen != 0 ? entry.last_seen : now();
  entry.last_seen = std::max(entry.last_seen, entry.first_seen);
  batch.put_dlq(std::move(entry));
  return {};
}

// -- reading ------------------------------------------------------------------

expected<std::vector<store::dlq_entry>> dead_letter_queue::list(const dlq_filter& f) {
  auto all = journal_->dlq(name_);
  if (!all)
    return wrap(all.error(), "dead-letter queue " + name_ + ": list");
  std::vector<store::dlq_entry> result;
  for (auto& e : *all) {
    if (f.limit != 0 && result.size() == f.limit)
      break;
    if (matches(e, f))
      result.push_back(std::move(e));
  }
  return result;
}

expected<store::dlq_entry> dead_letter_queue::show(uint64_t id) {
  auto all = journal_->dlq(name_);
  if (!all)
    return wrap(all.error(), "dead-letter queue " + name_ + ": show");
  for (auto& e : *all)
    if (e.id == id)
      return std::move(e);
  return not_found_error("dead-letter queue " + name_ + " has no entry " + std::to_string(id));
}

expected<size_t> dead_letter_queue::size() {
  auto all = journal_->dlq(name_);
  if (!all)
    return wrap(all.error(), "dead-letter queue " + name_ + ": size");
  return all->size();
}

// -- acting -------------------------------------------------------------------

expected<dlq_replay_report> dead_letter_queue::replay(const dlq_selection& sel,
                                                      const dlq_replay_handler& handler,
                                                      const dlq_replay_options& opts) {
  auto entries = select(sel);
  if (!entries)
    return wrap(entries.error(), "dead-letter queue " + name_ + ": replay");
  dlq_replay_report rep;
  rep.dry_run = opts.dry_run;
  std::vector<error> errs;
  // Keys with a failed (or held) entry: their later entries wait, in order.
  std::set<std::string, std::less<>> stopped;
  for (auto& e : *entries) {
    if (stopped.contains(e.key)
        || (opts.limit != 0 && rep.replayed.size() + rep.failed.size() == opts.limit)) {
      stopped.insert(e.key);
      rep.held.push_back(e.id);
      continue;
    }
    if (opts.dry_run) {
      rep.replayed.push_back(e.id);
      continue;
    }
    dlq_replay_item item{e, dlq_replay_id(e), e.attempts + 1};
    error err;
    try {
      if (auto r = handler(item); !r)
        err = r.error();
    } catch (...) {
      err = make_panic_error(std::current_exception());
    }
    if (err && opts.duplicate_is_done && err.code() == code::already_exists)
      err = {};
    store::write_batch batch;
    if (err)
      batch.update_dlq(
          e.id, item.attempt, now(),
          wrap(err, "replay " + std::to_string(item.attempt - 1) + " of " + describe(e)));
    else
      batch.remove_dlq(e.id);
    if (auto r = journal_->commit(batch); !r) {
      // The handler may have succeeded: the entry stays and its next replay
      // carries the same message id, which the consumer's dedup recognises.
      err = join(std::move(err),
                 wrap(r.error(), (err ? "recording the failed replay of " : "removing replayed ")
                                     + describe(e)));
    }
    if (err) {
      errs.push_back(wrap(err, describe(e)));
      rep.failed.push_back(e.id);
      stopped.insert(e.key);
    } else {
      rep.replayed.push_back(e.id);
    }
  }
  rep.error = join(std::move(errs));
  return rep;
}

expected<size_t> dead_letter_queue::purge(const dlq_selection& sel) {
  auto entries = select(sel);
  if (!entries)
    return wrap(entries.error(), "dead-letter queue " + name_ + ": purge");
  if (entries->empty())
    return size_t{0};
  store::write_batch batch;
  for (const auto& e : *entries)
    batch.remove_dlq(e.id);
  if (auto r = journal_->commit(batch); !r)
    return wrap(r.error(), "dead-letter queue " + name_ + ": purge");
  return entries->size();
}

// -- private ------------------------------------------------------------------

store::unix_ms dead_letter_queue::now() const {
  return opts_.clock ? opts_.clock() : wall_clock_ms();
}

expected<std::vector<store::dlq_entry>> dead_letter_queue::select(const dlq_selection& sel) {
  auto all = journal_->dlq(name_);
  if (!all)
    return all.error();
  std::vector<store::dlq_entry> result;
  for (auto& e : *all)
    if (matches(e, sel))
      result.push_back(std::move(e));
  return result;
}

} // namespace keel
