#!/usr/bin/env python3
"""bench/security/flood.py: what hostile clients cost a running `parc serve` (loopback only).

  flood.py logins URL PID REQUESTS THREADS   password guesses (Basic, POST /api/v1/tokens), each
      thread from its own 127.0.3.x address and each guess for a fresh login, so that few are
      stopped by throttling and as many as possible reach password hashing; meanwhile a boot
      script is timed from 127.0.0.1 every 0.2 s; VmRSS/VmHWM of PID sampled every 0.1 s.
  flood.py idle URL PID CONNECTIONS          CONNECTIONS idle TCP connections from 127.0.0.2, then
      the boot script and the console's login page timed from 127.0.0.1, against the same
      timed before the connections were opened.

Prints one JSON object.
"""
import base64
import http.client
import json
import re
import resource
import socket
import sys
import threading
import time
from urllib.parse import urlsplit


def rss(pid):
    st = open(f"/proc/{pid}/status").read()
    kb = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+)", st, re.M))
    return int(kb["VmRSS"]), int(kb["VmHWM"])


def request(host, port, method, path, body=None, headers=None, source=None, timeout=30):
    c = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0) if source else None)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def timed(fn):
    t0 = time.perf_counter()
    status = fn()
    return time.perf_counter() - t0, status


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def logins(url, pid, total, threads):
    u = urlsplit(url)
    stop = threading.Event()
    statuses, lat, mem = {}, [], []
    lock = threading.Lock()
    before = rss(pid)

    def guesser(t):
        src = f"127.0.3.{1 + t}"
        for i in range(t, total, threads):
            auth = base64.b64encode(f"guess{i}:wrong-password-{i}".encode()).decode()
            try:
                s = request(u.hostname, u.port, "POST", "/api/v1/tokens", b'{"name":"x"}',
                            {"authorization": "Basic " + auth, "content-type": "application/json"}, src)
            except Exception:
                s = 0
            with lock:
                statuses[s] = statuses.get(s, 0) + 1

    def prober():
        while not stop.is_set():
            d, s = timed(lambda: request(u.hostname, u.port, "GET", "/boot.ipxe?mac=52:54:00:99:00:01"))
            lat.append(d)
            stop.wait(0.2)

    def sampler():
        while not stop.is_set():
            mem.append(rss(pid))
            stop.wait(0.1)

    helpers = [threading.Thread(target=prober), threading.Thread(target=sampler)]
    for h in helpers:
        h.start()
    t0 = time.monotonic()
    ts = [threading.Thread(target=guesser, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seconds = time.monotonic() - t0
    stop.set()
    for h in helpers:
        h.join()
    after = rss(pid)
    return {
        "guesses": total, "threads": threads, "seconds": round(seconds, 1), "statuses": statuses,
        "rss_kb_before": before[0], "rss_kb_peak": max(m[0] for m in mem), "rss_kb_after": after[0],
        "hwm_kb_after": after[1],
        "boot_script_ms_p50": round(1000 * pct(lat, 50), 1), "boot_script_ms_p99": round(1000 * pct(lat, 99), 1),
        "boot_script_samples": len(lat),
    }


def probe(u, n=20):
    out = {}
    for name, path in (("boot_script", "/boot.ipxe?mac=52:54:00:99:00:02"), ("console_login", "/login")):
        xs, bad = [], 0
        for _ in range(n):
            d, s = timed(lambda: request(u.hostname, u.port, "GET", path, timeout=20))
            xs.append(d)
            bad += s != 200
        out[name] = {"ms_p50": round(1000 * pct(xs, 50), 2), "ms_max": round(1000 * max(xs), 2), "non_200": bad}
    return out


def idle(url, pid, n):
    u = urlsplit(url)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    base = probe(u)
    held, t0 = [], time.monotonic()
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        try:
            s.connect((u.hostname, u.port))
            held.append(s)
        except OSError:
            s.close()
    open_s = time.monotonic() - t0
    loaded = probe(u)
    closed = 0
    for s in held:
        s.settimeout(0.001)
        try:
            closed += s.recv(1) == b""
        except OSError:
            pass
    for s in held:
        s.close()
    return {"connections": n, "opened": len(held), "open_seconds": round(open_s, 1), "closed_by_server": closed,
            "rss_kb": rss(pid)[0], "without": base, "with": loaded}


if __name__ == "__main__":
    mode, url, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "logins":
        print(json.dumps(logins(url, pid, int(sys.argv[4]), int(sys.argv[5]))))
    else:
        print(json.dumps(idle(url, pid, int(sys.argv[4]))))
