#!/usr/bin/env bash
# Read benchmark: a mount's sequential read throughput against `curl` of the same signed URL
# (the reference, measured in the same run), time to first byte, the daemon's peak memory
# while reading a file larger than its cache, and `ls -l` of a large folder.
#
# Usage: scripts/bench_read.sh   (env: SIZE_MB=1024, CACHE=256M, NFILES=10000 (0 skips the
# listing benchmark), MEDIAFS_BIN, KEEP_WORK=1). Needs FUSE (/dev/fuse, fusermount3 unless
# root), curl, python3. Prints a report; numbers are from one run on whatever else the
# machine is doing, so compare the ratios more than the absolute values.

source "$(dirname "$0")/bench_common.sh"
CACHE="${CACHE:-256M}"
NFILES="${NFILES:-10000}"
BYTES=$((SIZE_MB * 1048576))

echo "== mediafs read benchmark: ${SIZE_MB} MiB file, --cache-size $CACHE"
machine_line

# The file: pseudo-random bytes (incompressible), uploaded through the API.
head -c "$BYTES" /dev/urandom >"$WORK/src.bin"
SUM="$(sha256sum "$WORK/src.bin" | cut -d' ' -f1)"
make_body "$WORK/src.bin" big.bin "$WORK/body.json"
ID="$(upload_body "$WORK/body.json")"
rm -f "$WORK/body.json"
URL="$(signed_url "$ID")"

# Reference: curl of the signed URL (the same HTTP server, the same blob).
t0="$(now)"
curl -sS --fail -o /dev/null "$URL"
t_curl="$(elapsed "$t0")"
ttfb_curl="$(curl -sS --fail -o /dev/null -r 0-0 -w '%{time_starttransfer}' "$URL")"

# Cold `cat` through a fresh mount.
mount_fg --cache-size "$CACHE"
t0="$(now)"
cat "$MP/big.bin" >/dev/null
t_cat="$(elapsed "$t0")"
rss_cat="$(daemon_peak_rss_mib)"
# Warm: the kernel keeps the pages across opens.
t0="$(now)"
cat "$MP/big.bin" >/dev/null
t_warm="$(elapsed "$t0")"
got="$(sha256sum "$MP/big.bin" | cut -d' ' -f1)"
unmount_fg
[[ "$got" == "$SUM" ]] || { echo "FAIL: SHA-256 through the mount differs" >&2; exit 1; }

# Cold `dd bs=1M` through another fresh mount.
mount_fg --cache-size "$CACHE"
t0="$(now)"
dd if="$MP/big.bin" of=/dev/null bs=1M status=none
t_dd="$(elapsed "$t0")"
rss_dd="$(daemon_peak_rss_mib)"
unmount_fg

# Time to first byte on a fresh mount (lookup + open + first block).
mount_fg --cache-size "$CACHE"
t0="$(now)"
head -c 1 "$MP/big.bin" >/dev/null
ttfb_mount="$(elapsed "$t0")"
unmount_fg

echo
printf '%-44s %10s %10s\n' "measurement" "seconds" "MiB/s"
printf '%-44s %10s %10s\n' "curl of the signed URL (reference)" "$t_curl" "$(mibs "$BYTES" "$t_curl")"
printf '%-44s %10s %10s\n' "cat through the mount (cold)" "$t_cat" "$(mibs "$BYTES" "$t_cat")"
printf '%-44s %10s %10s\n' "dd bs=1M through the mount (cold)" "$t_dd" "$(mibs "$BYTES" "$t_dd")"
printf '%-44s %10s %10s\n' "cat again, same mount (kernel page cache)" "$t_warm" "$(mibs "$BYTES" "$t_warm")"
echo "ratio cat/curl throughput:  $(ratio "$t_curl" "$t_cat")"
echo "ratio dd/curl throughput:   $(ratio "$t_curl" "$t_dd")"
echo "time to first byte: mount ${ttfb_mount}s (lookup+open+first block), curl ${ttfb_curl}s"
echo "daemon peak RSS (VmHWM) reading ${SIZE_MB} MiB with a $CACHE cache: cat ${rss_cat} MiB, dd ${rss_dd} MiB"
echo "SHA-256 through the mount matches: yes"

if [[ "$NFILES" -gt 0 ]]; then
    # A folder of NFILES small files, created through the API by 16 concurrent clients.
    FOLDER="$(curl -sS --fail -H @"$WORK/auth-header" -H 'Content-Type: application/json' \
        -d '{"name":"many","parentId":null}' "$API/api/v1/media-manager/folders" | json_get data id)"
    t0="$(now)"
    python3 - "$API" "$WORK/token" "$FOLDER" "$NFILES" <<'EOF'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
api, token_file, folder, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
token = open(token_file).read().strip()
def create(i):
    body = json.dumps({"fileName": f"f{i:05}.txt", "title": f"f{i:05}.txt",
                       "mimeType": "text/plain", "folderId": folder,
                       "data": "aGVsbG8K"}).encode()
    req = urllib.request.Request(api + "/api/v1/media-manager/files", data=body, method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
with ThreadPoolExecutor(16) as ex:
    list(ex.map(create, range(n)))
EOF
    t_create="$(elapsed "$t0")"
    mount_fg --cache-size "$CACHE"
    curl -sS -H @"$WORK/auth-header" -X DELETE "$API/_emulator/stats" >/dev/null
    t0="$(now)"
    lines="$(ls -l "$MP/many" | wc -l)"
    t_ls="$(elapsed "$t0")"
    stats="$(curl -sS -H @"$WORK/auth-header" "$API/_emulator/stats")"
    t0="$(now)"
    ls -l "$MP/many" >/dev/null
    t_ls2="$(elapsed "$t0")"
    unmount_fg
    pages="$(echo "$stats" | json_get byRoute 'GET /api/v1/media-manager/files')"
    echo
    echo "ls -l of a $NFILES-file folder: ${t_ls}s cold ($((lines - 1)) entries, $pages list calls), ${t_ls2}s within the TTL"
    echo "(creating the $NFILES files through the API, 16 concurrent clients: ${t_create}s)"
fi
