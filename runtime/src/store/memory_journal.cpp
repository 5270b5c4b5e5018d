// The in-memory journal: the SQLite journal's semantics on plain maps.
//
// A group is applied batch by batch; each operation records how to undo
// itself, and a failing batch replays its undo log backwards, so that it
// leaves no trace (SQLite gets the same from a savepoint per batch).

#include "keel/store/memory_journal.hpp"

#include "store/ops.hpp"

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

namespace keel::store {

namespace {

class memory_journal final : public journal {
public:
  std::vector<error> commit_group(std::span<const write_batch* const> batches) override {
    std::vector<error> result(batches.size());
    std::lock_guard guard{mtx_};
    for (size_t i = 0; i < batches.size(); ++i)
      if (auto err = apply(*batches[i]))
        result[i] = detail::batch_error(*this, i, std::move(err));
    return result;
  }

  expected<std::optional<saga_record>> saga(std::string_view id) override {
    std::lock_guard guard{mtx_};
    return find_copy(sagas_, id);
  }

  expected<std::vector<saga_record>> sagas(const saga_filter& f) override {
    std::lock_guard guard{mtx_};
    std::vector<saga_record> result;
    for (const auto& [id, r] : sagas_) {
      if (f.limit != 0 && result.size() == f.limit)
        break;
      if (f.state && r.state != *f.state)
        continue;
      if (f.kind && r.kind != *f.kind)
        continue;
      if (f.unfinished_only && is_terminal(r.state))
        continue;
      result.push_back(r);
    }
    return result;
  }

  expected<std::vector<event_record>> events(std::string_view stream, uint64_t after,
                                             size_t limit) override {
    std::lock_guard guard{mtx_};
    std::vector<event_record> result;
    auto i = events_.find(stream);
    if (i == events_.end())
      return result;
    // seq runs 1..n without gaps, so entry k holds seq k + 1.
    const auto& xs = i->second;
    for (auto k = std::min<uint64_t>(after, xs.size()); k < xs.size(); ++k) {
      if (limit != 0 && result.size() == limit)
        break;
      result.push_back(xs[k]);
    }
    return result;
  }

  expected<std::vector<dlq_entry>> dlq(std::string_view queue, size_t limit) override {
    std::lock_guard guard{mtx_};
    std::vector<dlq_entry> result;
    for (const auto& [id, e] : dlq_) {
      if (limit != 0 && result.size() == limit)
        break;
      if (queue.empty() || e.queue == queue)
        result.push_back(e);
    }
    return result;
  }

  expected<std::optional<std::string>> checkpoint(std::string_view name) override {
    std::lock_guard guard{mtx_};
    return find_copy(checkpoints_, name);
  }

  expected<bool> processed(std::string_view consumer, std::string_view id) override {
    std::lock_guard guard{mtx_};
    return processed_.count(std::pair{std::string{consumer}, std::string{id}}) != 0;
  }

  expected<std::optional<lease_record>> lease(std::string_view name) override {
    std::lock_guard guard{mtx_};
    return find_copy(leases_, name);
  }

  std::string describe() const override { return "memory journal"; }

private:
  using undo_log = std::vector<std::function<void()>>;

  /// A copy of `map[key]`, or nullopt.
  template <class Map, class Key>
  static std::optional<typename Map::mapped_type> find_copy(const Map& map, const Key& key) {
    if (auto i = map.find(key); i != map.end())
      return i->second;
    return std::nullopt;
  }

  /// Applies one batch; on failure undoes what it did and returns the error.
  error apply(const write_batch& batch) {
    undo_log undo;
    for (const auto& op : batch.ops()) {
      auto err = detail::validate(op);
      if (!err)
        err = std::visit([&](const auto& x) { return apply(x, undo); }, op);
      if (err) {
        for (auto i = undo.rbegin(); i != undo.rend(); ++i)
          (*i)();
        return err;
      }
    }
    return {};
  }

  /// Remembers how to restore `map[key]` to what it is now.
  template <class Map>
  void remember(Map& map, const typename Map::key_type& key, undo_log& undo) {
    undo.emplace_back([&map, key, old = find_copy(map, key)] {
      if (old)
        map.insert_or_assign(key, *old);
      else
        map.erase(key);
    });
  }

  error apply(const op::put_saga& x, undo_log& undo) {
    remember(sagas_, x.record.id, undo);
    sagas_.insert_or_assign(x.record.id, x.record);
    return {};
  }

  error apply(const op::append_event& x, undo_log& undo) {
    auto& xs = events_[x.event.stream];
    auto e = x.event;
    e.seq = xs.size() + 1;
    if (e.at == 0)
      e.at = detail::wall_now();
    xs.push_back(std::move(e));
    undo.emplace_back([this, stream = x.event.stream] {
      auto i = events_.find(stream);
      i->second.pop_back();
      if (i->second.empty())
        events_.erase(i);
    });
    return {};
  }

  error apply(const op::put_dlq& x, undo_log& undo) {
    auto e = x.entry;
    e.id = next_dlq_id_++;
    undo.emplace_back([this, id = e.id] {
      dlq_.erase(id);
      next_dlq_id_ = id;
    });
    dlq_.emplace(e.id, std::move(e));
    return {};
  }

  error apply(const op::remove_dlq& x, undo_log& undo) {
    remember(dlq_, x.id, undo);
    dlq_.erase(x.id);
    return {};
  }

  error apply(const op::update_dlq& x, undo_log& undo) {
    auto i = dlq_.find(x.id);
    if (i == dlq_.end())
      return {};
    remember(dlq_, x.id, undo);
    i->second.attempts = x.attempts;
    i->second.last_seen = x.last_seen;
    i->second.failure = x.failure;
    return {};
  }

  error apply(const op::set_checkpoint& x, undo_log& undo) {
    remember(checkpoints_, x.name, undo);
    checkpoints_.insert_or_assign(x.name, x.value);
    return {};
  }

  error apply(const op::mark_processed& x, undo_log& undo) {
    auto [i, added] = processed_.emplace(x.consumer, x.id);
    if (!added)
      return detail::duplicate_error(x.consumer, x.id);
    undo.emplace_back([this, i] { processed_.erase(i); });
    return {};
  }

  error apply(const op::acquire_lease& x, undo_log& undo) {
    if (auto i = leases_.find(x.name); i != leases_.end())
      if (!detail::may_take_lease(x, i->second.owner, i->second.expires))
        return detail::lease_held_error(x, i->second.owner, i->second.expires);
    remember(leases_, x.name, undo);
    leases_.insert_or_assign(x.name, lease_record{x.name, x.owner, x.now + x.ttl_ms});
    return {};
  }

  error apply(const op::release_lease& x, undo_log& undo) {
    auto i = leases_.find(x.name);
    if (i == leases_.end() || i->second.owner != x.owner)
      return {};
    remember(leases_, x.name, undo);
    leases_.erase(x.name);
    return {};
  }

  std::mutex mtx_;
  // std::less<> so that lookups by string_view need no copy.
  std::map<std::string, saga_record, std::less<>> sagas_;
  std::map<std::string, std::vector<event_record>, std::less<>> events_;
  std::map<uint64_t, dlq_entry> dlq_;
  uint64_t next_dlq_id_ = 1;
  std::map<std::string, std::string, std::less<>> checkpoints_;
  std::set<std::pair<std::string, std::string>> processed_;
  std::map<std::string, lease_record, std::less<>> leases_;
};

} // namespace

std::shared_ptr<journal> make_memory_journal() {
  return std::make_shared<memory_journal>();
}

} // namespace keel::store
