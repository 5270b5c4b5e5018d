#!/usr/bin/env bash
# Builds keel (release preset) and runs the examples: the error model, then a
# supervision tree surviving a poison message.
# Usage, from anywhere: scripts/main-job.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

cmake --preset release
cmake --build --preset release -j 2 --target error_model supervision

build/release/examples/error_model
build/release/examples/supervision
