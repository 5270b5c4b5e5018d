/// @file
/// `keel::error` and CAF: conversion to and from `caf::error`, and registration
/// with an actor system.
///
/// A `keel::error` travels inside CAF messages as it is (it has an `inspect`
/// overload); `add_error_types` registers it so it can also cross the network.
/// Where CAF wants a `caf::error` (a response promise, `quit(reason)`),
/// `to_caf_error` wraps the keel error in the context of a `caf::error` in
/// category "keel"; `from_caf_error` gets it back intact. CAF's own errors
/// (`caf::sec`, `caf::exit_reason`, ...) map onto the canonical codes (e.g.
/// `sec::request_timeout` to `deadline_exceeded`, `sec::request_receiver_down`
/// to `unavailable`) and keep their category and code.
///
/// @code
///   struct config : caf::actor_system_config {
///     config() { keel::add_error_types(*this); }
///   };
///   rp.deliver(keel::to_caf_error(err));
///   keel::error e = keel::from_caf_error(reply_error);
/// @endcode
#pragma once

#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include "keel/error/error.hpp"

namespace keel {

/// The CAF error category atom of keel errors.
inline constexpr caf::atom_value caf_category = caf::atom("keel");

/// Registers `keel::error` as a message type (name "keel::error") and a
/// renderer for the "keel" error category.
void add_error_types(caf::actor_system_config& cfg);

/// A `caf::error` holding `err` (code = canonical code, category "keel",
/// context = the keel error itself). Empty gives an empty `caf::error`.
caf::error to_caf_error(const error& err);

/// The keel error behind `x`: the original one for errors made by
/// `to_caf_error`; for other CAF errors a node whose category is the CAF
/// category name ("system", "exit"), whose value is CAF's code, whose
/// canonical code fits it, and whose message is CAF's rendering.
error from_caf_error(const caf::error& x);

} // namespace keel
