#!/usr/bin/env bash
# Memory benchmark: does the daemon's memory follow what the kernel references?
#
# Seeds two trees of N entries each through the API of `mediafs serve` (tree A and tree B,
# each FOLDERS folders × N/FOLDERS tiny files), mounts, walks tree A (`find` + `ls -lR`),
# lets the kernel drop its caches (`echo 2 > /proc/sys/vm/drop_caches`, which makes it
# forget the inodes), records the daemon's RSS, then does the same with tree B. Prints both
# RSS values and their ratio: with `forget`, the second stays near the first; without, it
# grows with every entry ever seen.
#
# Usage: scripts/bench_forget.sh   (env: N=100000 entries per tree, FOLDERS=100,
# MEDIAFS_BIN, KEEP_WORK=1, BEFORE_BIN=path/to/older/mediafs to measure that binary too,
# on the same seeded library, for a before/after comparison). Needs FUSE, root
# (drop_caches), curl, python3.

# Seeding makes one Create File per entry, and the server syncs each to disk: with
# eatmydata (Debian package) the server skips those syncs, which the benchmark does not
# measure, and seeding is many times faster. Only the server gets it, not the mount.
EMD="$(ls /usr/lib/*/libeatmydata.so* 2>/dev/null | head -n1 || true)"
if [[ -n "$EMD" ]]; then export LD_PRELOAD="$EMD"; fi
source "$(dirname "$0")/bench_common.sh"
unset LD_PRELOAD
N="${N:-100000}"
FOLDERS="${FOLDERS:-100}"

echo "== mediafs forget benchmark: 2 trees of $N entries ($FOLDERS folders each)"
machine_line

# Seeding: python3, keep-alive connections, a few threads (one Create File per entry).
t0="$(now)"
python3 - "$PORT" "$WORK/token" "$N" "$FOLDERS" <<'EOF'
import http.client, json, sys, threading

port, token_file, n, folders = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
token = open(token_file).read().strip()
H = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
BASE = "/api/v1/media-manager"

def call(conn, method, path, body):
    conn.request(method, BASE + path, json.dumps(body), H)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: HTTP {r.status}: {data[:200]!r}")
    return json.loads(data)["data"]

conn = http.client.HTTPConnection("127.0.0.1", port)
jobs = []
per = n // folders
for tree in ("A", "B"):
    top = call(conn, "POST", "/folders", {"name": tree, "parentId": None})["id"]
    for d in range(folders):
        fid = call(conn, "POST", "/folders", {"name": f"dir{d:04}", "parentId": top})["id"]
        jobs.append((fid, per))

lock = threading.Lock()
def worker():
    c = http.client.HTTPConnection("127.0.0.1", port)
    while True:
        with lock:
            if not jobs:
                return
            fid, count = jobs.pop()
        for i in range(count):
            name = f"f{i:05}.txt"
            call(c, "POST", "/files", {"fileName": name, "title": name, "mimeType": "text/plain",
                                        "folderId": fid, "data": "eA=="})

threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
EOF
echo "seeded $((2 * N)) files in $(elapsed "$t0") s"

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$DAEMON_PID/status"; }

# walk TREE: every name and every attribute of the tree, then the kernel forgets it.
walk() {
    local t0
    t0="$(now)"
    find "$MP/$1" >/dev/null
    ls -lR "$MP/$1" >/dev/null
    echo "walk of $1: $(elapsed "$t0") s, $(find "$MP/$1" | wc -l) names"
    sync
    echo 2 >/proc/sys/vm/drop_caches
    # Forgets reach the daemon asynchronously: let them drain.
    sleep 3
}

# measure LABEL: mount with $BIN, walk A, walk B, print the RSS after each.
measure() {
    echo "-- $1"
    mount_fg
    echo "RSS after mount: $(rss_mib) MiB"
    walk A
    local rss_a rss_b
    rss_a="$(rss_mib)"
    echo "RSS after walking A and dropping caches: $rss_a MiB"
    walk B
    rss_b="$(rss_mib)"
    echo "RSS after walking B and dropping caches: $rss_b MiB"
    echo "ratio B/A: $(ratio "$rss_b" "$rss_a") (goal: <= 1.10)"
    unmount_fg
}

if [[ -n "${BEFORE_BIN:-}" ]]; then
    AFTER_BIN="$BIN"
    BIN="$(realpath "$BEFORE_BIN")"
    measure "before: $BIN"
    BIN="$AFTER_BIN"
fi
measure "after: $BIN"
