// Saga queries over a journal: plain C++, shared by both coordinators.

#include "keel/saga/queries.hpp"

namespace keel::saga {

expected<outcome> to_outcome(const store::saga_record& r) {
  auto d = saga::data::parse(r.data);
  if (!d)
    return wrap(std::move(d).error(), code::data_loss, "saga " + r.id + ": unreadable data");
  outcome out{r.id, r.kind, r.state, r.failure, r.reason, std::move(*d)};
  if (r.compensation_failure) {
    // The forward error, with the compensation errors under it.
    std::vector<error> kids;
    if (r.compensation_failure.is_join()) {
      auto cs = r.compensation_failure.children();
      kids.assign(cs.begin(), cs.end());
    } else {
      kids.push_back(r.compensation_failure);
    }
    auto fwd = r.failure ? r.failure : unknown_error("saga " + r.id + " failed");
    out.failure = error_builder{fwd}
                      .message("saga " + r.id + " (" + r.kind + ") rolled back with "
                               + std::to_string(kids.size()) + " failed compensation"
                               + (kids.size() == 1 ? "" : "s"))
                      .cause(fwd)
                      .children(std::move(kids))
                      .build();
  }
  return out;
}

expected<outcome> saga_queries::status(const std::string& id) const {
  auto rec = journal_->saga(id);
  if (!rec)
    return std::move(rec).error();
  if (!*rec)
    return not_found_error("no saga " + id + " in " + journal_->describe());
  return to_outcome(**rec);
}

expected<std::vector<store::saga_record>> saga_queries::list(const store::saga_filter& f) const {
  return journal_->sagas(f);
}

expected<std::vector<store::event_record>> saga_queries::history(const std::string& id) const {
  return journal_->events(store::saga_stream(id));
}

} // namespace keel::saga
