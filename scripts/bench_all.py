#!/usr/bin/env python3
"""Every row of the performance goals in one run, each next to its reference.

Starts `mediafs serve` on a throwaway library (loopback), mounts it, and measures:

  read-1g     cold sequential read of one file (dd bs=1M and cat) vs curl of its signed URL
  read-4x     4 readers of 4 different files at once vs 4 parallel curls
  cp-in       cp of one file into the mount until close returns vs curl -T of the prebuilt
              base64 JSON body (and the daemon's peak RSS)
  small       first byte of a small file on a fresh mount; cat of N small files one by one
              vs one curl process fetching the same N signed URLs over keep-alive
  ls          ls -l of a folder of 10,000 files, cold and warm vs sequential curl of its pages
  cp-r        cp -r of N small files until close returns (every file is on the server then)
  mem         100 files read at once with --cache-size 64M: peak RSS vs cache + 64 MiB

When rclone and nginx are installed (Debian packages `rclone`, `nginx-light`), the read and
listing rows also run `rclone mount` of the http backend on nginx serving the same bytes,
with curl of nginx as rclone's own reference.

"Cold": before each timed read the page cache is dropped (as root) and, for mediafs, the
mount is fresh; the server side is warmed by one read first, so both sides read the blob
from memory. Prints a table of ratios, writes results.json and bench.png (matplotlib, if
installed) into --out. Numbers are from one run on a shared machine: compare ratios.

Usage: scripts/bench_all.py [--size-mb 1024] [--runs 1] [--out DIR] [--only ROW,...]
       [--bin target/release/mediafs]
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_PREFIX = "/api/v1/media-manager"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def drop_caches():
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: the client side may start warm; said in the report


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


class Api:
    """A keep-alive client of the embedded server (the token never leaves this object)."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        return c

    def call(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.token}
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(3):
            try:
                c = self.conn()
                c.request(method, API_PREFIX + path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                if r.status >= 300:
                    raise RuntimeError(f"{method} {path}: HTTP {r.status}")
                return json.loads(data) if data else None
            except (ConnectionError, http.client.HTTPException):
                self.local.c = None
                if attempt == 2:
                    raise

    def mkdir(self, name, parent=None):
        return self.call("POST", "/folders", {"name": name, "parentId": parent})["data"]["id"]

    def upload_bytes(self, name, data, folder=None):
        body = {"fileName": name, "title": name, "mimeType": "application/octet-stream",
                "folderId": folder, "data": base64.b64encode(data).decode()}
        return self.call("POST", "/files", body)["data"]["id"]

    def url(self, file_id):
        return self.call("GET", f"/files/{file_id}")["data"]["upload"]["fileUrl"]

    def list_files(self, folder):
        out, page = [], 1
        while True:
            r = self.call("GET", f"/files?folderId={folder}&page={page}&pageSize=100")
            out += r["data"]
            if page >= r.get("lastPage", page) or not r["data"]:
                return out
            page += 1


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.realpath(args.bin)
        self.work = tempfile.mkdtemp(prefix="mediafs-benchall.")
        os.chmod(self.work, 0o700)
        self.procs = []
        self.mounts = []
        self.results = {}  # row -> list of dicts (one per run)
        self.token = base64.b32encode(os.urandom(15)).decode().lower()
        tok = os.path.join(self.work, "token")
        with open(os.open(tok, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(self.token + "\n")
        self.token_file = tok
        self.curl_cfg = os.path.join(self.work, "curl-auth")
        with open(os.open(self.curl_cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(f'header = "Authorization: Bearer {self.token}"\n')
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        serve = [self.bin, "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--data-dir", os.path.join(self.work, "data"), "--token-file", tok,
                 "--url-ttl", "3600"]
        self.spawn(serve, "server.log")
        self.api = Api(self.port, self.token)
        for _ in range(200):
            try:
                self.api.call("GET", "/folders")
                break
            except Exception:
                self.api.local.c = None
                time.sleep(0.05)
        self.rclone = shutil.which("rclone") and shutil.which("nginx") and args.rclone
        if self.rclone:
            self.start_nginx()

    # ----- processes -----------------------------------------------------------------

    def spawn(self, cmd, log):
        f = open(os.path.join(self.work, log), "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=f, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def mount(self, *flags):
        mp = tempfile.mkdtemp(prefix="mnt.", dir=self.work)
        cmd = [self.bin, "mount", mp, "--api-url", self.api_url, "--token-file",
               self.token_file, "--cache-dir", os.path.join(self.work, "cache"),
               "--foreground", *flags]
        p = self.spawn(cmd, "mount.log")
        self.wait_mounted(mp, p)
        self.mounts.append((mp, p, "mediafs"))
        return mp, p

    def wait_mounted(self, mp, p):
        for _ in range(600):
            with open("/proc/self/mounts") as f:
                if any(line.split()[1] == mp for line in f):
                    return
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"mount of {mp} failed; see {self.work}/*.log")

    def unmount(self, mp):
        for i, (m, p, kind) in enumerate(self.mounts):
            if m == mp:
                if kind == "mediafs":
                    subprocess.run([self.bin, "unmount", mp], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                else:
                    subprocess.run(["fusermount", "-u", mp], stderr=subprocess.DEVNULL)
                    p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                del self.mounts[i]
                return

    def start_nginx(self):
        self.www = os.path.join(self.work, "www")
        os.makedirs(self.www)
        self.ng_port = free_port()
        conf = os.path.join(self.work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
user root; worker_processes 1; daemon off; pid {self.work}/nginx.pid; error_log {self.work}/nginx.err;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; tcp_nodelay on; keepalive_requests 100000;
  client_body_temp_path {self.work}/ngtmp; proxy_temp_path {self.work}/ngtmp;
  fastcgi_temp_path {self.work}/ngtmp; uwsgi_temp_path {self.work}/ngtmp;
  scgi_temp_path {self.work}/ngtmp;
  server {{ listen 127.0.0.1:{self.ng_port}; root {self.www}; autoindex on; }} }}
""")
        self.spawn(["nginx", "-c", conf], "nginx.log")
        time.sleep(0.3)

    def rclone_mount(self):
        mp = tempfile.mkdtemp(prefix="rclone.", dir=self.work)
        cmd = ["rclone", "mount", ":http:", mp, "--http-url", f"http://127.0.0.1:{self.ng_port}/",
               "--read-only", "--buffer-size", "64M", "--vfs-read-chunk-size", "64M",
               "--config", "/dev/null", "--dir-cache-time", "30s"]
        p = self.spawn(cmd, "rclone.log")
        self.wait_mounted(mp, p)
        self.mounts.append((mp, p, "rclone"))
        return mp

    def close(self):
        for mp, _, _ in list(self.mounts):
            self.unmount(mp)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.args.keep:
            print(f"work dir kept: {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ----- helpers -------------------------------------------------------------------

    def make_file(self, name, size_mb, folder=None, www=True):
        """A file of random bytes on the server (and under nginx's root); returns its id."""
        src = os.path.join(self.work, name)
        with open(src, "wb") as f:
            for _ in range(size_mb):
                f.write(os.urandom(1 << 20))
        body = os.path.join(self.work, name + ".json")
        self.make_body(src, name, body, folder)
        out = subprocess.run(["curl", "-sS", "--fail", "-X", "POST", "-T", body, "-K",
                              self.curl_cfg, "-H", "Content-Type: application/json",
                              "-H", "Expect:", self.api_url + API_PREFIX + "/files"],
                             check=True, capture_output=True).stdout
        os.unlink(body)
        if www and self.rclone:
            os.rename(src, os.path.join(self.www, name))
        else:
            os.unlink(src)
        return json.loads(out)["data"]["id"]

    def make_body(self, src, name, out, folder=None):
        meta = {"fileName": name, "title": name, "mimeType": "application/octet-stream",
                "folderId": folder}
        with open(out, "wb") as o:
            o.write(json.dumps(meta)[:-1].encode() + b',"data":"')
            with open(src, "rb") as f:
                while True:
                    chunk = f.read(3 << 20)
                    if not chunk:
                        break
                    o.write(base64.b64encode(chunk))
            o.write(b'"}')

    def cold_client(self, urls=(), cfg=None):
        """Drop every page cache, then read the files once from the server: the reader's side
        starts cold and the server's side warm, as for the curl it is compared with (which
        ran warm). Without the second step the server would read its blobs from this VM's
        disk (about 0.4 GB/s here), and the mount would be timed against the disk."""
        drop_caches()
        if urls:
            procs = [subprocess.Popen(["curl", "-sS", "--fail", "-o", "/dev/null", u])
                     for u in urls]
            for p in procs:
                if p.wait() != 0:
                    raise RuntimeError(f"warming {urls} failed")
        if cfg:
            run(["curl", "-sS", "--fail", "-K", cfg])

    def curl_time(self, url):
        return timed(lambda: run(["curl", "-sS", "--fail", "-o", "/dev/null", url]))

    def record(self, row, **values):
        self.results.setdefault(row, []).append(values)
        shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())
        print(f"  {row}: {shown}", flush=True)

    # ----- rows ----------------------------------------------------------------------

    def row_read_1g(self):
        size = self.args.size_mb
        fid = self.make_file("big.bin", size)
        url = self.api.url(fid)
        nbytes = size << 20
        drop_caches()
        self.curl_time(url)  # warms the server's side
        curl = min(self.curl_time(url) for _ in range(2))
        vals = {"curl_GBps": nbytes / curl / 1e9}
        for tool, cmd in (("dd", ["dd", "if={}", "of=/dev/null", "bs=1M", "status=none"]),
                          ("cat", ["sh", "-c", "cat \"$0\" >/dev/null", "{}"])):
            self.cold_client([url])
            mp, _ = self.mount()
            path = os.path.join(mp, "big.bin")
            t = timed(lambda: run([c.replace("{}", path) for c in cmd]))
            self.unmount(mp)
            vals[f"{tool}_GBps"] = nbytes / t / 1e9
            vals[f"{tool}_ratio"] = curl / t
        if self.rclone:
            ng = f"http://127.0.0.1:{self.ng_port}/big.bin"
            self.curl_time(ng)
            ng_t = min(self.curl_time(ng) for _ in range(2))
            self.cold_client([ng])
            mp = self.rclone_mount()
            t = timed(lambda: run(["dd", f"if={mp}/big.bin", "of=/dev/null", "bs=1M",
                                   "status=none"]))
            self.unmount(mp)
            vals["rclone_curl_GBps"] = nbytes / ng_t / 1e9
            vals["rclone_dd_GBps"] = nbytes / t / 1e9
            vals["rclone_ratio"] = ng_t / t
        self.record("read-1g", **vals)

    def row_read_4x(self):
        size = max(1, self.args.size_mb // 4)
        ids = [self.make_file(f"par{i}.bin", size, www=False) for i in range(4)]
        urls = [self.api.url(i) for i in ids]
        nbytes = 4 * (size << 20)

        def parallel(cmds):
            ps = [subprocess.Popen(c) for c in cmds]
            for p in ps:
                if p.wait() != 0:
                    raise RuntimeError(f"{cmds} failed")

        drop_caches()
        parallel([["curl", "-sS", "--fail", "-o", "/dev/null", u] for u in urls])
        curl = timed(lambda: parallel([["curl", "-sS", "--fail", "-o", "/dev/null", u]
                                       for u in urls]))
        self.cold_client(urls)
        mp, _ = self.mount()
        t = timed(lambda: parallel([["dd", f"if={mp}/par{i}.bin", "of=/dev/null", "bs=1M",
                                     "status=none"] for i in range(4)]))
        self.unmount(mp)
        self.record("read-4x", curl_GBps=nbytes / curl / 1e9, mediafs_GBps=nbytes / t / 1e9,
                    ratio=curl / t)

    def row_cp_in(self):
        # Reference: curl -T of the prebuilt JSON body (its base64 encoding is not timed).
        # mediafs: cp until close returns; close waits for the upload, checked below
        # through the API (the file is on the server, whole, when cp returns).
        size = self.args.size_mb
        src = os.path.join(self.work, "in.bin")
        with open(src, "wb") as f:
            for _ in range(size):
                f.write(os.urandom(1 << 20))
        body = os.path.join(self.work, "in.json")
        self.make_body(src, "ref.bin", body)
        drop_caches()
        curl = timed(lambda: run(["curl", "-sS", "--fail", "-o", "/dev/null", "-X", "POST",
                                  "-T", body, "-K", self.curl_cfg, "-H",
                                  "Content-Type: application/json", "-H", "Expect:",
                                  self.api_url + API_PREFIX + "/files"]))
        os.unlink(body)
        folder = self.api.mkdir("cpin")
        mp, p = self.mount()
        drop_caches()
        t = timed(lambda: run(["cp", src, os.path.join(mp, "cpin", "in.bin")]))
        stored = [f for f in self.api.list_files(folder) if f["upload"]["fileName"] == "in.bin"]
        rss = peak_rss_mib(p.pid)
        self.unmount(mp)
        os.unlink(src)
        nbytes = size << 20
        if len(stored) != 1 or stored[0]["upload"]["fileSize"] != nbytes:
            raise RuntimeError(f"cp in: not on the server whole when cp returned: {stored}")
        self.record("cp-in", curl_GBps=nbytes / curl / 1e9, mediafs_GBps=nbytes / t / 1e9,
                    ratio=curl / t, rss_MiB=rss)

    def row_small(self):
        n = self.args.small
        folder = self.api.mkdir("small")
        data = os.urandom(4096)
        with ThreadPoolExecutor(8) as ex:
            ids = list(ex.map(lambda i: self.api.upload_bytes(f"s{i:04}.bin", data, folder),
                              range(n)))
        cfg = os.path.join(self.work, "urls.cfg")
        with open(os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            for i in ids:
                f.write(f'url = "{self.api.url(i)}"\noutput = "/dev/null"\n')
        run(["curl", "-sS", "--fail", "-K", cfg])  # server side warm
        curl = timed(lambda: run(["curl", "-sS", "--fail", "-K", cfg]))
        self.cold_client(cfg=cfg)
        self.api.list_files(folder)  # the server's side of the listing warm too
        mp, _ = self.mount()
        first = timed(lambda: run(["head", "-c", "1", os.path.join(mp, "small", "s0000.bin")],
                                  stdout=subprocess.DEVNULL))
        self.unmount(mp)
        self.cold_client(cfg=cfg)
        mp, _ = self.mount()
        names = [os.path.join(mp, "small", f"s{i:04}.bin") for i in range(n)]
        os.listdir(os.path.join(mp, "small"))

        def cat_all():
            for path in names:
                with open(path, "rb") as f:
                    f.read()

        t = timed(cat_all)
        self.unmount(mp)
        self.record("small", first_byte_ms=first * 1000, curl_files_per_s=n / curl,
                    mediafs_files_per_s=n / t, ratio=curl / t)

    def row_ls(self):
        n = self.args.nfiles
        folder = self.api.mkdir("many")
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda i: self.api.upload_bytes(f"f{i:05}.txt", b"hello\n", folder),
                        range(n)))
        pages = (n + 99) // 100
        cfg = os.path.join(self.work, "pages.cfg")
        with open(os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f'header = "Authorization: Bearer {self.token}"\n')
            for p in range(1, pages + 1):
                f.write(f'url = "{self.api_url}{API_PREFIX}/files?folderId={folder}'
                        f'&page={p}&pageSize=100"\noutput = "/dev/null"\n')
        curl = timed(lambda: run(["curl", "-sS", "--fail", "-K", cfg]))
        mp, _ = self.mount()
        d = os.path.join(mp, "many")
        ls = ["ls", "-l", d]
        cold = timed(lambda: run(ls, stdout=subprocess.DEVNULL))
        warm = min(timed(lambda: run(ls, stdout=subprocess.DEVNULL)) for _ in range(3))
        self.unmount(mp)
        # The same listing on a local filesystem, warm, in the same run: what `ls -l` itself
        # costs here (its statx, xattr probes, sorting and formatting).
        local = os.path.join(self.work, "local-many")
        os.makedirs(local)
        for i in range(n):
            with open(os.path.join(local, f"f{i:05}.txt"), "wb") as f:
                f.write(b"hello\n")
        local_ms = 1000 * min(
            timed(lambda: run(["ls", "-l", local], stdout=subprocess.DEVNULL)) for _ in range(3))
        vals = {"curl_pages_s": curl, "cold_s": cold, "warm_ms": warm * 1000,
                "cold_ratio": cold / curl, "local_warm_ms": local_ms,
                "warm_vs_local": warm * 1000 / local_ms}
        if self.rclone:
            wd = os.path.join(self.www, "many")
            os.makedirs(wd, exist_ok=True)
            for i in range(n):
                with open(os.path.join(wd, f"f{i:05}.txt"), "wb") as f:
                    f.write(b"hello\n")
            mp = self.rclone_mount()
            d = os.path.join(mp, "many")
            vals["rclone_cold_s"] = timed(lambda: run(["ls", "-l", d], stdout=subprocess.DEVNULL))
            vals["rclone_warm_ms"] = 1000 * min(
                timed(lambda: run(["ls", "-l", d], stdout=subprocess.DEVNULL)) for _ in range(3))
            self.unmount(mp)
        self.record("ls", **vals)

    def row_cp_r(self):
        n = self.args.small
        src = os.path.join(self.work, "tree")
        os.makedirs(src)
        for i in range(n):
            with open(os.path.join(src, f"t{i:04}.bin"), "wb") as f:
                f.write(os.urandom(4096))
        mp, _ = self.mount()
        # Timed until every file is listed by the server, not only until cp returns.
        t0 = time.perf_counter()
        run(["cp", "-r", src, os.path.join(mp, "tree")])
        t_cp = time.perf_counter() - t0
        while True:
            t = time.perf_counter() - t0  # all are on the server by now if this check passes
            folders = self.api.call("GET", "/folders?parentId=root&pageSize=100")["data"]
            tree = next((f["id"] for f in folders if f["name"] == "tree"), None)
            stored = len(self.api.list_files(tree)) if tree else 0
            if stored == n or time.perf_counter() - t0 > t_cp + 120:
                break
            time.sleep(0.02)
        self.unmount(mp)
        if stored != n:
            raise RuntimeError(f"cp -r: {stored} of {n} files on the server")
        shutil.rmtree(src)
        self.record("cp-r", files_per_s=n / t, cp_return_files_per_s=n / t_cp, on_server=stored)

    def row_mem(self):
        folder = self.api.mkdir("mem")
        data = [os.urandom(4 << 20) for _ in range(4)]
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda i: self.api.upload_bytes(f"m{i:03}.bin", data[i % 4], folder),
                        range(100)))
        drop_caches()
        mp, p = self.mount("--cache-size", "64M")
        d = os.path.join(mp, "mem")
        os.listdir(d)

        def read(i):
            h = hashlib.sha256()
            with open(os.path.join(d, f"m{i:03}.bin"), "rb") as f:
                while True:
                    b = f.read(1 << 16)
                    if not b:
                        break
                    h.update(b)
            return h.hexdigest() == hashlib.sha256(data[i % 4]).hexdigest()

        with ThreadPoolExecutor(100) as ex:
            ok = all(ex.map(read, range(100)))
        rss = peak_rss_mib(p.pid)
        self.unmount(mp)
        if not ok:
            raise RuntimeError("mem: bytes read differ")
        self.record("mem", rss_MiB=rss, budget_MiB=64 + 64)


GOALS = [
    ("read-1g", "dd_ratio", ">=", 0.8, "cold read dd bs=1M / curl"),
    ("read-1g", "cat_ratio", ">=", 0.8, "cold read cat / curl"),
    ("read-1g", "rclone_ratio", None, None, "rclone mount dd / curl of nginx"),
    ("read-4x", "ratio", ">=", 0.8, "4 readers / 4 curls"),
    ("cp-in", "ratio", ">=", 0.7, "cp in / curl -T"),
    ("cp-in", "rss_MiB", "<=", 64, "cp in: daemon peak RSS MiB"),
    ("small", "first_byte_ms", "<=", 5, "small file first byte ms"),
    ("small", "ratio", ">=", 0.5, "cat small files / curl keep-alive"),
    ("ls", "warm_ms", "<", 50, "ls -l 10k warm ms"),
    ("ls", "local_warm_ms", None, None, "ls -l 10k warm ms, local disk"),
    ("ls", "warm_vs_local", None, None, "ls -l 10k warm / local disk"),
    ("ls", "rclone_warm_ms", None, None, "rclone ls -l 10k warm ms"),
    ("ls", "cold_ratio", "<=", 0.7, "ls -l 10k cold / curl of pages"),
    ("ls", "rclone_cold_s", None, None, "rclone ls -l 10k cold s"),
    ("cp-r", "files_per_s", ">=", 500, "cp -r small files/s"),
    ("mem", "rss_MiB", "<=", 128, "100 readers RSS MiB (64M cache)"),
]


def report(bench, out):
    print("\n| workload | measured (min–max over runs) | goal | met |")
    print("|---|---|---|---|")
    rows = []
    for row, key, op, goal, label in GOALS:
        vals = [r[key] for r in bench.results.get(row, []) if key in r]
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        worst = lo if op in (">=", ">") else hi
        met = "" if op is None else (
            "yes" if eval(f"{worst} {op} {goal}") else "no")  # noqa: S307 (our own table)
        rng = f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}"
        print(f"| {label} | {rng} | {'' if op is None else f'{op} {goal}'} | {met} |")
        rows.append((label, lo, hi, op, goal))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(bench.results, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    pairs = []  # (label, reference, mediafs, rclone or None) in GB/s or files/s
    r = bench.results
    if "read-1g" in r:
        x = r["read-1g"][-1]
        pairs.append(("cold read, dd bs=1M", x["curl_GBps"], x["dd_GBps"],
                      x.get("rclone_dd_GBps"), x.get("rclone_curl_GBps")))
    if "read-4x" in r:
        x = r["read-4x"][-1]
        pairs.append(("4 readers at once", x["curl_GBps"], x["mediafs_GBps"], None, None))
    if "cp-in" in r:
        x = r["cp-in"][-1]
        pairs.append(("cp of a file in", x["curl_GBps"], x["mediafs_GBps"], None, None))
    if "small" in r:
        x = r["small"][-1]
        pairs.append(("cat of small files", x["curl_files_per_s"] / 1000,
                      x["mediafs_files_per_s"] / 1000, None, None))
    if "ls" in r:
        x = r["ls"][-1]
        pairs.append(("ls -l 10k files, cold", 1 / x["curl_pages_s"], 1 / x["cold_s"],
                      1 / x["rclone_cold_s"] if "rclone_cold_s" in x else None, None))
    # Each workload normalised to its own reference (= 1.0): mediafs against curl of the
    # embedded server, rclone against curl of nginx, so the bars compare like with like.
    fig, ax = plt.subplots(figsize=(10, 4.5))
    w = 0.28
    for i, (label, ref, me, rc, rcref) in enumerate(pairs):
        ax.bar(i - w / 2, me / ref, w, color="#1f77b4", label="mediafs" if i == 0 else None)
        if rc is not None:
            base = rcref if rcref is not None else ref
            ax.bar(i + w / 2, rc / base, w, color="#ff7f0e",
                   label="rclone mount" if not ax.get_legend_handles_labels()[1].count(
                       "rclone mount") else None)
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1, label="reference (curl) = 1")
    ax.set_xticks(range(len(pairs)), [p[0] for p in pairs], fontsize=8)
    ax.set_ylabel("throughput / reference (higher is better)")
    ax.set_title("mediafs and rclone mount, each against its own reference (one run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bench.png"), dpi=100)
    print(f"plot: {os.path.join(out, 'bench.png')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/mediafs"))
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--nfiles", type=int, default=10000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", default="read-1g,read-4x,cp-in,small,ls,cp-r,mem")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--no-rclone", dest="rclone", action="store_false")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if os.geteuid() != 0:
        print("note: not root, so page caches cannot be dropped between runs", file=sys.stderr)
    rows = args.only.split(",")
    results = {}
    for run_no in range(args.runs):
        print(f"== run {run_no + 1}/{args.runs}", flush=True)
        bench = Bench(args)
        try:
            for row in rows:
                getattr(bench, "row_" + row.replace("-", "_"))()
        finally:
            bench.close()
        for k, v in bench.results.items():
            results.setdefault(k, []).extend(v)
    bench.results = results
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"\ncommit {commit}; {os.cpu_count()} cores; rclone: "
          f"{'yes' if bench.rclone else 'not installed or --no-rclone'}")
    report(bench, args.out)


if __name__ == "__main__":
    main()
