#!/usr/bin/env bash
# Full verification of keel, as run by CI (.ci/run):
#   1. asan preset: build everything (library, tests, examples, benchmarks),
#      run unit, example and install tests under ASan+UBSan
#   2. tsan preset: build and run the 'concurrency' tests under TSan
#   3. release preset: build the benchmarks and run their smoke tests
# Usage, from anywhere: scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

results=()
phase=""
phase_start=0

begin() {
  phase=$1
  phase_start=$SECONDS
  printf '\n==== keel: %s\n' "$phase"
}

end() {
  results+=("PASS  $phase ($((SECONDS - phase_start))s)")
  phase=""
}

summary() {
  local rc=$?
  printf '\n==== keel: summary\n'
  local r
  for r in "${results[@]}"; do
    printf '%s\n' "$r"
  done
  if [[ -n $phase ]]; then
    printf 'FAIL  %s (exit %d)\n' "$phase" "$rc"
  fi
  if ((rc == 0)); then
    printf 'keel: all phases passed\n'
  else
    printf 'keel: FAILED\n'
  fi
}
trap summary EXIT

begin "dependencies"
bash scripts/install-deps.sh
end

begin "asan: configure + build (all targets)"
cmake --preset asan
cmake --build --preset asan -j 2
end

begin "asan: ctest (unit, example, install)"
ctest --preset asan
end

begin "tsan: configure + build (concurrency tests)"
cmake --preset tsan
cmake --build --preset tsan -j 2
end

# GCC 12's TSan runtime cannot map its shadow memory when the kernel uses more
# than 28 bits of mmap randomisation; run without ASLR in that case.
tsan_wrapper=()
if [[ -r /proc/sys/vm/mmap_rnd_bits ]] && (($(cat /proc/sys/vm/mmap_rnd_bits) > 28)); then
  tsan_wrapper=(setarch "$(uname -m)" -R)
fi

begin "tsan: ctest (label concurrency)"
"${tsan_wrapper[@]}" ctest --preset tsan
end

begin "release: configure + build benchmarks"
cmake --preset release
cmake --build --preset release -j 2 --target keel_benchmarks
end

begin "release: ctest -L bench (benchmark smoke runs)"
ctest --preset release -L bench
end
