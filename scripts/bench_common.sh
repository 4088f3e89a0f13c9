# Shared setup of the benchmarks (sourced by bench_read.sh and bench_write.sh).
#
# Builds the release binary, starts `mediafs serve` on a free loopback port with a
# throwaway library and token, and offers helpers: API calls with curl, timing, MiB/s,
# mounting and unmounting, the daemon's peak RSS. Everything lives in $WORK, removed on exit.
#
# Environment: SIZE_MB (default 1024), MEDIAFS_BIN (skip the build, use this binary),
# KEEP_WORK=1 (keep $WORK for inspection).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZE_MB="${SIZE_MB:-1024}"

if [[ -n "${MEDIAFS_BIN:-}" ]]; then
    BIN="$MEDIAFS_BIN"
else
    cargo build --release --quiet --bin mediafs
    BIN="${CARGO_TARGET_DIR:-target}/release/mediafs"
fi
BIN="$(realpath "$BIN")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mediafs-bench.XXXXXX")"
SERVER_PID=""
DAEMON_PID=""
MP="$WORK/mnt"
mkdir -p "$MP"

bench_cleanup() {
    if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        "$BIN" unmount "$MP" >/dev/null 2>&1 || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then
        echo "work dir kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap bench_cleanup EXIT

# The token lives in a file: never on a command line (curl reads the header from a file).
TOKEN="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$TOKEN" >"$WORK/token"
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$WORK/auth-header"
chmod 600 "$WORK/token" "$WORK/auth-header"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
API="http://127.0.0.1:$PORT"
# Long URL lifetime: the reference download must not race the expiry.
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --token-file "$WORK/token" \
    --url-ttl 3600 --test-hooks >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null -H @"$WORK/auth-header" "$API/api/v1/media-manager/folders" && break
    sleep 0.1
done

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }
# elapsed START → seconds since START.
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
# mibs BYTES SECONDS → MiB/s.
mibs() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1048576 / float(sys.argv[2]):.1f}')" "$1" "$2"; }
# ratio A B → A/B.
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
# json_get PATH… reads JSON on stdin and prints data[PATH…].
json_get() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1:]: v = v[k]
print(v)' "$@"; }

# make_body FILE NAME OUT: the Create File JSON body (base64 of FILE) written to OUT.
make_body() {
    {
        printf '{"fileName":"%s","title":"%s","mimeType":"application/octet-stream","folderId":null,"data":"' "$2" "$2"
        base64 -w0 "$1"
        printf '"}'
    } >"$3"
}

# upload_body BODY → prints the new file's id. `-T` streams the body from disk
# (`--data-binary @F` would load it whole into memory first); `Expect:` skips the 100-continue
# round trip.
upload_body() {
    curl -sS --fail -X POST -T "$1" -H @"$WORK/auth-header" -H 'Content-Type: application/json' \
        -H 'Expect:' "$API/api/v1/media-manager/files" | json_get data id
}

# signed_url ID → the file's fresh signed URL (never printed by the scripts).
signed_url() {
    curl -sS --fail -H @"$WORK/auth-header" "$API/api/v1/media-manager/files/$1" | json_get data upload fileUrl
}

# file_id_by_title TITLE → id of the root file with that title (first page of 100).
file_id_by_title() {
    curl -sS --fail -H @"$WORK/auth-header" \
        "$API/api/v1/media-manager/files?folderId=root&page=1&pageSize=100" |
        python3 -c 'import json,sys
for f in json.load(sys.stdin)["data"]:
    if f.get("title") == sys.argv[1]:
        print(f["id"]); break' "$1"
}

# mount_fg [FLAGS…]: mounts $MP in the foreground (a child of this script), waits until ready.
mount_fg() {
    "$BIN" mount "$MP" --api-url "$API" --token-file "$WORK/token" \
        --cache-dir "$WORK/cache" --foreground "$@" >>"$WORK/mount.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 300); do
        if grep -q " $MP fuse" /proc/self/mounts; then
            return 0
        fi
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "mount failed; log:" >&2
    cat "$WORK/mount.log" >&2
    exit 1
}

unmount_fg() {
    "$BIN" unmount "$MP"
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=""
}

# The daemon's peak resident memory so far, in MiB.
daemon_peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$DAEMON_PID/status"
}

machine_line() {
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))," \
        "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r), loopback"
}
