#!/usr/bin/env bash
# A scripted test as it runs in a container: mount the embedded server's local library,
# drive the mount with ordinary tools, check the results, stop with SIGTERM, mount again
# and check that everything is still there.
#
# In a container (see README, "Containers"):
#   docker run --rm --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor:unconfined \
#       --entrypoint container-example.sh mediafs
# Without a container engine, the same scenario in namespaces (what tests/ops.rs runs):
#   sudo unshare --mount --pid --fork --propagation private -- bash scripts/container-example.sh
#
# MEDIAFS names the binary (default: mediafs on PATH). Needs bash, coreutils, grep, tar.
set -euo pipefail
MEDIAFS=${MEDIAFS:-mediafs}

work=$(mktemp -d)
mnt=$work/mnt
mkdir -p "$mnt"
pid=
fail() {
  echo "container-example: FAILED: $*" >&2
  echo "--- mediafs log:" >&2
  cat "$work/mediafs.log" >&2 || true
  exit 1
}
is_mounted() { grep -q " $mnt fuse" /proc/self/mounts; }
start() {
  "$MEDIAFS" mount "$mnt" --data-dir "$work/library" --cache-dir "$work/cache" --foreground \
    >>"$work/mediafs.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do is_mounted && return 0; sleep 0.05; done
  fail "the mount did not appear"
}
stop() {
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || fail "mediafs exited with $rc after SIGTERM"
  ! is_mounted || fail "mount left behind after SIGTERM"
}

start
# Tools on the mount: mkdir, cp, printf, mv, tar, ls, sha256sum.
mkdir -p "$mnt/run/sub"
head -c 3000000 /dev/urandom >"$work/big.bin"
want=$(sha256sum <"$work/big.bin")
cp "$work/big.bin" "$mnt/run/sub/big.bin"
printf 'hello from a container\n' >"$mnt/run/hello.txt"
mv "$mnt/run/hello.txt" "$mnt/run/sub/hello.txt"
tar -C "$mnt" -cf "$work/run.tar" run
"$MEDIAFS" status "$mnt" >"$work/status.txt" || fail "mediafs status"

[ "$(sha256sum <"$mnt/run/sub/big.bin")" = "$want" ] || fail "bytes differ"
[ "$(cat "$mnt/run/sub/hello.txt")" = "hello from a container" ] || fail "text differs"
[ ! -e "$mnt/run/hello.txt" ] || fail "the old name is still there"
tar -tf "$work/run.tar" >"$work/run.list"
grep -qx 'run/sub/big.bin' "$work/run.list" || fail "tar misses big.bin: $(cat "$work/run.list")"
grep -q "0 pending" "$work/status.txt" || fail "status: $(cat "$work/status.txt")"
stop

# Everything landed in the library: a new mount sees it.
start
[ "$(sha256sum <"$mnt/run/sub/big.bin")" = "$want" ] || fail "bytes differ after remount"
[ "$(ls "$mnt/run/sub" | tr '\n' ' ')" = "big.bin hello.txt " ] || fail "listing: $(ls "$mnt/run/sub")"
stop
rm -rf "$work"
echo "container-example: OK"
