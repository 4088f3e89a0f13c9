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
cargo test --all-targets -- --test-threads=2

echo "== schemathesis (server vs openapi.yaml)"
bash scripts/schemathesis.sh
