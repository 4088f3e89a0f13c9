#!/usr/bin/env bash
# Write benchmark: `cp` of a large file into the mount (staged locally, uploaded as one
# Create File call when cp closes it) against a `curl` upload of the same file (the
# reference, measured in the same run), the daemon's peak memory, and a SHA-256 check of
# both uploads as stored by the service.
#
# Usage: scripts/bench_write.sh   (env: SIZE_MB=1024, MEDIAFS_BIN, KEEP_WORK=1). Needs FUSE,
# curl, python3. The curl reference gets its JSON body (base64) prepared beforehand; the
# time to build that body is reported separately, since the mount has to do that work
# inside its own time.

source "$(dirname "$0")/bench_common.sh"
BYTES=$((SIZE_MB * 1048576))

# cpu_secs PID → user + system CPU seconds of PID so far. CPU time is much less sensitive
# than wall time to other work on the machine, so it is reported next to the times.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}
# cpu_delta BEFORE AFTER → AFTER - BEFORE.
cpu_delta() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

echo "== mediafs write benchmark: ${SIZE_MB} MiB file"
machine_line

head -c "$BYTES" /dev/urandom >"$WORK/src.bin"
SUM="$(sha256sum "$WORK/src.bin" | cut -d' ' -f1)"

# Reference: curl upload of the pre-encoded body.
t0="$(now)"
make_body "$WORK/src.bin" by-curl.bin "$WORK/body.json"
t_encode="$(elapsed "$t0")"
s0="$(cpu_secs "$SERVER_PID")"
t0="$(now)"
CURL_ID="$(upload_body "$WORK/body.json")"
t_curl="$(elapsed "$t0")"
cpu_server_curl="$(cpu_delta "$s0" "$(cpu_secs "$SERVER_PID")")"
rm -f "$WORK/body.json"

# Through the mount: cp returns when close() has the upload's result.
mount_fg
s0="$(cpu_secs "$SERVER_PID")"
d0="$(cpu_secs "$DAEMON_PID")"
t0="$(now)"
cp "$WORK/src.bin" "$MP/by-mount.bin"
t_cp="$(elapsed "$t0")"
cpu_server_cp="$(cpu_delta "$s0" "$(cpu_secs "$SERVER_PID")")"
cpu_daemon_cp="$(cpu_delta "$d0" "$(cpu_secs "$DAEMON_PID")")"
rss_cp="$(daemon_peak_rss_mib)"
unmount_fg

# Both uploads, read back from the service (signed URL + curl), not through the mount.
MOUNT_ID="$(file_id_by_title by-mount.bin)"
[[ -n "$MOUNT_ID" ]] || { echo "FAIL: by-mount.bin is not in the library" >&2; exit 1; }
sum_mount="$(curl -sS --fail "$(signed_url "$MOUNT_ID")" | sha256sum | cut -d' ' -f1)"
sum_curl="$(curl -sS --fail "$(signed_url "$CURL_ID")" | sha256sum | cut -d' ' -f1)"
[[ "$sum_mount" == "$SUM" ]] || { echo "FAIL: SHA-256 of the mount's upload differs" >&2; exit 1; }
[[ "$sum_curl" == "$SUM" ]] || { echo "FAIL: SHA-256 of the curl upload differs" >&2; exit 1; }

echo
printf '%-44s %10s %10s\n' "measurement" "seconds" "MiB/s"
printf '%-44s %10s %10s\n' "base64 JSON body for curl (base64 -w0)" "$t_encode" "$(mibs "$BYTES" "$t_encode")"
printf '%-44s %10s %10s\n' "curl upload of the body (reference)" "$t_curl" "$(mibs "$BYTES" "$t_curl")"
printf '%-44s %10s %10s\n' "cp into the mount (stage + upload)" "$t_cp" "$(mibs "$BYTES" "$t_cp")"
echo "ratio cp/curl throughput:               $(ratio "$t_curl" "$t_cp")"
echo "ratio cp/(encode+curl) throughput:      $(ratio "$(python3 -c "print($t_curl + $t_encode)")" "$t_cp")"
echo "CPU seconds: server ${cpu_server_curl} for the curl upload; server ${cpu_server_cp} + daemon ${cpu_daemon_cp} for cp"
echo "daemon peak RSS (VmHWM) during cp: ${rss_cp} MiB"
echo "SHA-256 of both uploads as stored by the service matches the source: yes"
