// The journal writer actor; the only translation unit of the store that uses
// CAF.
//
// Group commit through the mailbox: a commit request only queues its batch
// and, unless one is on its way, sends the writer a flush message. That
// message lands behind every commit already in the mailbox, so by the time
// the writer handles it, all batches that arrived while it was busy (in the
// last fsync) are pending, and one transaction commits them. No timer and no
// waiting: an idle writer commits a lone batch at once.

#include "keel/store/writer.hpp"

#include "keel/error/caf.hpp"
#include "keel/error/panic.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <utility>
#include <vector>

namespace keel::store {

namespace {

using kj_flush_atom = caf::atom_constant<caf::atom("kj_flush")>;

struct pending_commit {
  write_batch batch;
  caf::typed_response_promise<error> promise;
};

struct writer_state {
  std::shared_ptr<journal> j;
  writer_options opts;
  std::vector<pending_commit> pending;
  bool flush_scheduled = false;
  writer_stats stats;

  static inline const char* name = "keel.journal_writer";
};

using writer_actor = caf::stateful_actor<writer_state>;

/// Commits `group` and returns one error per batch; never throws.
std::vector<error> commit_guarded(journal& j, std::span<const pending_commit> group) {
  std::vector<error> errs;
  try {
    std::vector<const write_batch*> batches;
    batches.reserve(group.size());
    for (const auto& p : group)
      batches.push_back(&p.batch);
    errs = j.commit_group(batches);
    if (errs.size() != group.size())
      errs.assign(group.size(), internal_error(j.describe() + ": commit_group returned "
                                               + std::to_string(errs.size()) + " results for "
                                               + std::to_string(group.size()) + " batches"));
  } catch (...) {
    errs.assign(group.size(), make_panic_error(std::current_exception()));
  }
  return errs;
}

/// Commits every pending batch, at most `max_group` per transaction.
void flush(writer_actor* self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  // Taken out first: delivering cannot re-enter this actor, but the list
  // must be empty again whatever happens below.
  auto work = std::exchange(st.pending, {});
  auto max_group = std::max<size_t>(1, st.opts.max_group);
  for (size_t first = 0; first < work.size(); first += max_group) {
    auto n = std::min(max_group, work.size() - first);
    std::span<const pending_commit> group{work.data() + first, n};
    std::vector<error> errs;
    if (st.j)
      errs = commit_guarded(*st.j, group);
    else
      errs.assign(n, failed_precondition_error("the journal writer has no journal"));
    st.stats.batches += n;
    st.stats.transactions += 1;
    st.stats.largest_group = std::max<uint64_t>(st.stats.largest_group, n);
    for (size_t i = 0; i < n; ++i) {
      if (errs[i])
        ++st.stats.failed_batches;
      work[first + i].promise.deliver(std::move(errs[i]));
    }
  }
}

caf::behavior writer(writer_actor* self, std::shared_ptr<journal> j, writer_options opts) {
  self->state.j = std::move(j);
  self->state.opts = opts;
  self->set_default_handler(caf::drop);
  // Only reached by exceptions outside commit_guarded (e.g. bad_alloc while
  // queueing): no requester is left waiting, the writer quits with the panic.
  self->set_exception_handler([self](std::exception_ptr& ep) -> caf::error {
    auto err = make_panic_error(ep);
    for (auto& p : std::exchange(self->state.pending, {}))
      p.promise.deliver(err);
    return to_caf_error(err);
  });
  // Batches already received are committed before the writer goes.
  self->set_exit_handler([self](caf::exit_msg& x) {
    flush(self);
    self->quit(std::move(x.reason));
  });
  return {
      [self](commit_atom, write_batch& batch) -> caf::result<error> {
        auto& st = self->state;
        st.pending.push_back({std::move(batch), self->make_response_promise<error>()});
        if (!st.flush_scheduled) {
          st.flush_scheduled = true;
          self->send(self, kj_flush_atom::value);
        }
        return caf::delegated<error>{};
      },
      [self](kj_flush_atom) { flush(self); },
      [self](writer_stats_atom) { return self->state.stats; },
  };
}

} // namespace

caf::actor spawn_journal_writer(caf::actor_system& sys, std::shared_ptr<journal> j,
                                writer_options opts) {
  return sys.spawn<caf::detached>(writer, std::move(j), opts);
}

} // namespace keel::store
