// Bulkheads: one mutex per bulkhead guards the slot count and the FIFO of
// waiters. A released slot is handed straight to the first live waiter (the
// count does not drop), so a `try_acquire` can never overtake a waiter: a
// free slot implies an empty queue.

#include "keel/resilience/bulkhead.hpp"

#include "detail/json_fields.hpp"

#include <algorithm>
#include <deque>

namespace keel {

// -- the shared state ------------------------------------------------------------

namespace detail {

namespace {

using pending_call = std::pair<bulkhead_waiter, expected<permit>>;

// The calls being run on this thread: a callback that releases a permit (or
// acquires one) adds to this list instead of recursing.
thread_local std::deque<pending_call>* active_calls = nullptr;

void dispatch(std::vector<pending_call>& calls) noexcept {
  if (calls.empty())
    return;
  if (active_calls) {
    for (auto& c : calls)
      active_calls->push_back(std::move(c));
    return;
  }
  std::deque<pending_call> q{std::make_move_iterator(calls.begin()),
                             std::make_move_iterator(calls.end())};
  active_calls = &q;
  while (!q.empty()) {
    auto c = std::move(q.front());
    q.pop_front();
    try {
      c.first(std::move(c.second));
    } catch (...) {
      // Documented as forbidden. Swallowed so that the bulkhead stays
      // consistent: the permit in `c` is released when `c` goes.
    }
  }
  active_calls = nullptr;
}

std::string ms_text(std::chrono::nanoseconds d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

} // namespace

struct bulkhead_core : std::enable_shared_from_this<bulkhead_core> {
  struct waiter {
    bulkhead_waiter cb;
    bulkhead::clock_type::time_point since;
  };

  bulkhead_config cfg;
  std::string key;
  bulkhead::clock_fn clock;

  mutable std::mutex mtx;
  uint32_t in_use = 0;
  std::deque<waiter> queue;
  uint64_t admitted = 0;
  uint64_t rejected = 0;
  uint64_t expired = 0;

  std::string where() const {
    return "bulkhead " + cfg.name + (key.empty() ? std::string{} : " for key " + key);
  }

  error full(std::string why) const {
    return make_error(resilience_code::bulkhead_full, where() + " full: " + std::move(why));
  }

  std::string occupancy() const {
    return std::to_string(in_use) + " of " + std::to_string(cfg.max_concurrent) + " in use";
  }

  bool too_old(const waiter& w, bulkhead::clock_type::time_point now) const {
    return cfg.max_wait.count() > 0 && now - w.since >= cfg.max_wait;
  }

  /// Refuses the waiters at the front that waited too long (lock held).
  void expire_front(bulkhead::clock_type::time_point now, std::vector<pending_call>& out) {
    while (!queue.empty() && too_old(queue.front(), now)) {
      out.emplace_back(std::move(queue.front().cb),
                       full("waited " + ms_text(now - queue.front().since) + " (max_wait "
                            + ms_text(cfg.max_wait) + ") without a slot"));
      queue.pop_front();
      ++rejected;
      ++expired;
    }
  }

  void release() noexcept {
    std::vector<pending_call> out;
    {
      std::lock_guard<std::mutex> g{mtx};
      if (!queue.empty()) {
        if (cfg.max_wait.count() > 0)
          expire_front(clock(), out);
      }
      if (!queue.empty()) {
        // The slot goes to the first waiter: in_use stays as it is.
        out.emplace_back(std::move(queue.front().cb), permit{shared_from_this()});
        queue.pop_front();
        ++admitted;
      } else {
        --in_use;
      }
    }
    dispatch(out);
  }
};

} // namespace detail

// -- permit ----------------------------------------------------------------------

void permit::release() noexcept {
  if (auto c = std::move(core_))
    c->release();
}

std::string_view to_string(admission a) noexcept {
  switch (a) {
    case admission::admitted:
      return "admitted";
    case admission::queued:
      return "queued";
    case admission::rejected:
      return "rejected";
  }
  return "unknown";
}

// -- bulkhead --------------------------------------------------------------------

bulkhead::bulkhead(bulkhead_config cfg, std::string key, clock_fn clock)
    : core_(std::make_shared<detail::bulkhead_core>()) {
  cfg.max_concurrent = std::max<uint32_t>(1, cfg.max_concurrent);
  core_->cfg = std::move(cfg);
  core_->key = std::move(key);
  core_->clock = clock ? std::move(clock) : clock_fn{[] { return clock_type::now(); }};
}

bulkhead::~bulkhead() {
  std::vector<detail::pending_call> out;
  {
    std::lock_guard<std::mutex> g{core_->mtx};
    for (auto& w : core_->queue) {
      out.emplace_back(std::move(w.cb), core_->full("shut down while waiting"));
      ++core_->rejected;
    }
    core_->queue.clear();
  }
  detail::dispatch(out);
}

expected<permit> bulkhead::try_acquire() {
  auto& c = *core_;
  std::lock_guard<std::mutex> g{c.mtx};
  if (c.in_use < c.cfg.max_concurrent) {
    ++c.in_use;
    ++c.admitted;
    return permit{core_};
  }
  ++c.rejected;
  return c.full(c.occupancy() + " (try_acquire does not wait)");
}

admission bulkhead::acquire(bulkhead_waiter on_done) {
  auto& c = *core_;
  std::vector<detail::pending_call> out;
  admission result;
  {
    std::lock_guard<std::mutex> g{c.mtx};
    if (c.in_use < c.cfg.max_concurrent) {
      ++c.in_use;
      ++c.admitted;
      out.emplace_back(std::move(on_done), permit{core_});
      result = admission::admitted;
    } else {
      auto now = c.clock();
      if (c.queue.size() >= c.cfg.max_queued)
        c.expire_front(now, out); // make room if waiters are out of time
      if (c.queue.size() < c.cfg.max_queued) {
        c.queue.push_back({std::move(on_done), now});
        result = admission::queued;
      } else {
        ++c.rejected;
        out.emplace_back(std::move(on_done),
                         c.full(c.occupancy() + ", " + std::to_string(c.queue.size()) + " of "
                                + std::to_string(c.cfg.max_queued) + " queued"));
        result = admission::rejected;
      }
    }
  }
  detail::dispatch(out);
  return result;
}

size_t bulkhead::expire(clock_type::time_point now) {
  std::vector<detail::pending_call> out;
  {
    std::lock_guard<std::mutex> g{core_->mtx};
    core_->expire_front(now, out); // FIFO: the oldest waiters are in front
  }
  auto n = out.size();
  detail::dispatch(out);
  return n;
}

size_t bulkhead::expire() {
  return expire(core_->clock());
}

bulkhead_stats bulkhead::stats() const {
  std::lock_guard<std::mutex> g{core_->mtx};
  return {core_->in_use, static_cast<uint32_t>(core_->queue.size()), core_->admitted,
          core_->rejected, core_->expired};
}

const bulkhead_config& bulkhead::config() const noexcept {
  return core_->cfg;
}

const std::string& bulkhead::key() const noexcept {
  return core_->key;
}

// -- keyed_bulkhead --------------------------------------------------------------

keyed_bulkhead::keyed_bulkhead(bulkhead_config defaults, clock_fn clock)
    : defaults_(std::move(defaults)), clock_(std::move(clock)) {}

void keyed_bulkhead::set_override(std::string key, bulkhead_config cfg) {
  std::lock_guard<std::mutex> g{mtx_};
  overrides_[std::move(key)] = std::move(cfg);
}

std::shared_ptr<bulkhead> keyed_bulkhead::at(std::string_view key) {
  std::lock_guard<std::mutex> g{mtx_};
  auto it = heads_.find(key);
  if (it != heads_.end())
    return it->second;
  auto o = overrides_.find(key);
  const auto& cfg = o != overrides_.end() ? o->second : defaults_;
  auto b = std::make_shared<bulkhead>(cfg, std::string{key}, clock_);
  heads_.emplace(std::string{key}, b);
  return b;
}

expected<permit> keyed_bulkhead::try_acquire(std::string_view key) {
  return at(key)->try_acquire();
}

admission keyed_bulkhead::acquire(std::string_view key, bulkhead_waiter on_done) {
  return at(key)->acquire(std::move(on_done));
}

size_t keyed_bulkhead::expire(clock_type::time_point now) {
  std::vector<std::shared_ptr<bulkhead>> all;
  {
    std::lock_guard<std::mutex> g{mtx_};
    all.reserve(heads_.size());
    for (const auto& kv : heads_)
      all.push_back(kv.second);
  }
  size_t n = 0;
  for (const auto& b : all)
    n += b->expire(now);
  return n;
}

bulkhead_stats keyed_bulkhead::stats(std::string_view key) const {
  std::shared_ptr<bulkhead> b;
  {
    std::lock_guard<std::mutex> g{mtx_};
    auto it = heads_.find(key);
    if (it == heads_.end())
      return {};
    b = it->second;
  }
  return b->stats();
}

std::map<std::string, bulkhead_stats, std::less<>> keyed_bulkhead::snapshot() const {
  std::vector<std::shared_ptr<bulkhead>> all;
  {
    std::lock_guard<std::mutex> g{mtx_};
    for (const auto& kv : heads_)
      all.push_back(kv.second);
  }
  std::map<std::string, bulkhead_stats, std::less<>> out;
  for (const auto& b : all)
    out.emplace(b->key(), b->stats());
  return out;
}

size_t keyed_bulkhead::size() const {
  std::lock_guard<std::mutex> g{mtx_};
  return heads_.size();
}

size_t keyed_bulkhead::trim() {
  std::lock_guard<std::mutex> g{mtx_};
  size_t n = 0;
  for (auto it = heads_.begin(); it != heads_.end();) {
    // Copies of the shared_ptr are made only under mtx_: a count of 1 means
    // no caller is between `at` and its acquire.
    auto s = it->second->stats();
    if (it->second.use_count() == 1 && s.in_use == 0 && s.queued == 0) {
      it = heads_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

// -- configuration ---------------------------------------------------------------

expected<bulkhead_config> bulkhead_config_from_json(const boost::json::value& v,
                                                    const std::string& path) {
  using detail::check_keys;
  using detail::object_at;
  using detail::read_int;
  using detail::read_ms;
  using detail::read_string;
  auto o = object_at(v, path);
  if (!o)
    return o.error();
  if (auto err = check_keys(**o, path, {"name", "max_concurrent", "max_queued", "max_wait_ms"}))
    return err;
  bulkhead_config c;
  if (auto err = read_string(**o, "name", path, c.name))
    return err;
  if (auto err = read_int(**o, "max_concurrent", path, 1, 1'000'000, c.max_concurrent))
    return err;
  if (auto err = read_int(**o, "max_queued", path, 0, 10'000'000, c.max_queued))
    return err;
  if (auto err = read_ms(**o, "max_wait_ms", path, c.max_wait))
    return err;
  return c;
}

expected<bulkhead_config> bulkhead_config_from_json_string(std::string_view text) {
  auto v = detail::parse_text(text, "bulkhead");
  if (!v)
    return v.error();
  return bulkhead_config_from_json(*v);
}

} // namespace keel
