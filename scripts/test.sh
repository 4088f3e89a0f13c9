#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + contract + real-mount tests, and the
# server checked against its OpenAPI document. FUSE tests need /dev/fuse and root (or
# fusermount3); they fail where FUSE is missing unless MEDIAFS_SKIP_FUSE_TESTS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets -- --test-threads=2 2>&1 | tee "$log"
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$log")

echo "== schemathesis (server vs openapi.yaml)"
bash scripts/schemathesis.sh

echo "tests: ${passed} passed, ${failed} failed"
