#!/usr/bin/env bash
# Builds keel (release preset) and runs the examples: the error model, a
# supervision tree surviving a poison message, a pipeline stage restarted by its
# supervisor with nothing lost, then an ETL import into SQLite that commits
# despite bad and poison rows and rolls back on a critical error, then the
# payment saga (orchestrated and choreographed, over a SQLite ledger, checked
# for consistency) and its crash-resume demo (killed with SIGKILL midway,
# restarted: every saga ends completed or rolled back).
# Usage, from anywhere: scripts/main-job.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

cmake --preset release
cmake --build --preset release -j 2 --target error_model supervision pipeline_restart etl_importer \
  payment_saga

build/release/examples/error_model
build/release/examples/supervision
build/release/examples/pipeline_restart
build/release/examples/etl_importer
build/release/examples/payment_saga
build/release/examples/payment_saga --crash-resume
