#!/usr/bin/env python3
"""bench/serve/fleet.py: the memory benchmark's client side (stdlib only).

  fleet.py setup URL PASSWORD MACHINES INSTALLS OUT.json
      token for the admin, MACHINES machines added over the 4 example departments with
      /api/v1/batch (2,000 per request = one git commit each), INSTALLS of them queued for
      install in one batch, and each one's task token read from its /boot.ipxe script.
  fleet.py load URL SETUP.json SECONDS PID OUT.json
      every machine of SETUP.json becomes an agent thread: one hello, then a progress
      report every 2 s; one technician thread lists /api/v1/machines?limit=100&q=RAD every
      second; one sampler thread reads VmRSS/VmHWM of PID every second. Writes latencies
      (p50/p99), non-2xx counts and the RSS series to OUT.json.

Threads with http.client, one keep-alive connection each, because that is what 500 real
agents look like to the server (500 open connections), and Python's GIL is no problem at
250 requests/s.
"""
import http.client
import json
import random
import re
import sys
import threading
import time
from urllib.parse import urlsplit

DEPARTMENTS = ["radiologie", "urgences", "pharmacie", "administration"]


def mac_of(i):
    return "52:54:00:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects once if the server closed it."""

    def __init__(self, url, timeout=60, source=None):
        u = urlsplit(url)
        self.host, self.port, self.timeout, self.source = u.hostname, u.port, timeout, source
        self.conn = None

    def request(self, method, path, body=None, headers=None, auth=None):
        hdrs = dict(headers or {})
        if body is not None:
            body = json.dumps(body).encode()
            hdrs["content-type"] = "application/json"
        if auth:
            hdrs["authorization"] = auth
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    src = (self.source, 0) if self.source else None
                    self.conn = http.client.HTTPConnection(
                        self.host, self.port, timeout=self.timeout, source_address=src
                    )
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn = None
                if attempt:
                    raise


def setup(url, password, machines, installs, out):
    import base64

    c = Client(url, timeout=600)
    # The first start's one-time password makes no token: it is changed first.
    once = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
    st, data = c.request("POST", "/api/v1/password", {"new_password": "bench-admin-password"}, auth=once)
    assert st // 100 == 2, (st, data)
    basic = "Basic " + base64.b64encode(b"admin:bench-admin-password").decode()
    st, data = c.request("POST", "/api/v1/tokens", {"name": "bench"}, auth=basic)
    assert st // 100 == 2, (st, data)
    token = json.loads(data)["token"]
    bearer = "Bearer " + token
    t0 = time.monotonic()
    for start in range(0, machines, 2000):
        ops = [
            {"op": "add", "mac": mac_of(i), "department": DEPARTMENTS[i % 4]}
            for i in range(start, min(start + 2000, machines))
        ]
        st, data = c.request("POST", "/api/v1/batch", {"operations": ops}, auth=bearer)
        assert st // 100 == 2, (st, data[:500])
    add_s = time.monotonic() - t0
    # Install tasks for machines spread over the departments (every 20th machine).
    chosen = [mac_of(i) for i in range(0, machines, max(1, machines // installs))][:installs]
    t0 = time.monotonic()
    st, data = c.request(
        "POST", "/api/v1/batch", {"operations": [{"op": "install", "machine": m} for m in chosen]}, auth=bearer
    )
    assert st // 100 == 2, (st, data[:500])
    install_s = time.monotonic() - t0
    # Each agent is a PC of its own address (127.0.x.y: loopback, one address per machine, as
    # on a real network where hellos are limited per address); parc sees no PXE here, so a
    # technician's netboot-grant is the evidence that lets its boot script carry a credential.
    agents = []
    for k, m in enumerate(chosen):
        source = f"127.0.{1 + k // 250}.{1 + k % 250}"
        st, data = c.request(
            "POST", f"/api/v1/machines/{m}/netboot-grant", {"address": source, "minutes": 120}, auth=bearer
        )
        assert st // 100 == 2, (st, data[:300])
        st, data = Client(url, source=source).request("GET", "/boot.ipxe?mac=" + m)
        assert st == 200, (st, data[:300])
        tok = re.search(rb"parc\.token=(\S+)", data)
        assert tok, data[:500]
        agents.append({"mac": m, "token": tok.group(1).decode(), "source": source})
    json.dump(
        {"token": token, "agents": agents, "add_seconds": add_s, "install_batch_seconds": install_s},
        open(out, "w"),
    )
    print(f"setup: {machines} machines added in {add_s:.1f} s, {installs} installs queued in {install_s:.1f} s")


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def load(url, setup_file, seconds, pid, out):
    s = json.load(open(setup_file))
    stop = threading.Event()
    lock = threading.Lock()
    lat = {"hello": [], "progress": [], "list": []}
    bad = {"hello": 0, "progress": 0, "list": 0}
    bad_samples = []
    errors = []

    def record(kind, t, status, data):
        with lock:
            lat[kind].append(t)
            if status // 100 != 2:
                bad[kind] += 1
                if len(bad_samples) < 10:
                    bad_samples.append([kind, status, data[:200].decode(errors="replace")])

    def timed(c, kind, *a, **kw):
        t0 = time.perf_counter()
        try:
            status, data = c.request(*a, **kw)
        except Exception as e:  # a failed request counts as a non-2xx answer
            status, data = 0, repr(e).encode()
        record(kind, time.perf_counter() - t0, status, data)

    def agent(i, a):
        rnd = random.Random(i)
        c = Client(url, source=a["source"])
        auth = "Bearer " + a["token"]
        # Start the agents over the first 2 s, as machines booting do, not all in one instant.
        if stop.wait(rnd.random() * 2):
            return
        hw = {
            "mac": a["mac"],
            "serial": f"BENCH{i:06d}",
            "model": "Bench PC",
            "memory_bytes": 8589934592,
            "disks": [{"name": "nvme0n1", "size_bytes": 256060514304, "bus": "nvme"}],
        }
        t0 = time.perf_counter()
        try:
            status, data = c.request("POST", "/api/v1/agent/hello", hw, auth=auth)
        except Exception as e:
            status, data = 0, repr(e).encode()
        record("hello", time.perf_counter() - t0, status, data)
        if status != 200:
            return
        # The boot credential is single use: the hello's answer is the agent's session.
        auth = "Bearer " + json.loads(data)["session_token"]
        total, done = 4 * 2**30, 0
        while not stop.wait(2.0):
            rate = rnd.randint(20, 120) * 2**20
            done = min(total, done + rate * 2)
            body = {"phase": "deploy", "bytes_done": done, "bytes_total": total, "bytes_fetched": done, "rate_bps": rate}
            timed(c, "progress", "POST", "/api/v1/agent/progress", body, auth=auth)

    def technician():
        c = Client(url)
        auth = "Bearer " + s["token"]
        while not stop.is_set():
            t0 = time.monotonic()
            timed(c, "list", "GET", "/api/v1/machines?limit=100&q=RAD", auth=auth)
            stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    rss = []

    def sampler():
        t0 = time.monotonic()
        while not stop.is_set():
            try:
                st = open(f"/proc/{pid}/status").read()
                kb = {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", st, re.M)}
                rss.append([round(time.monotonic() - t0, 1), kb["VmRSS"], kb["VmHWM"]])
            except Exception as e:
                errors.append(repr(e))
            stop.wait(1.0)

    threading.stack_size(256 * 1024)  # 500 threads: keep the client's own memory small
    threads = [threading.Thread(target=agent, args=(i, a), daemon=True) for i, a in enumerate(s["agents"])]
    threads += [threading.Thread(target=technician, daemon=True), threading.Thread(target=sampler, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    summary = {
        "seconds": seconds,
        "agents": len(s["agents"]),
        "requests": {k: len(v) for k, v in lat.items()},
        "non_2xx": bad,
        "non_2xx_samples": bad_samples,
        "p50_ms": {k: (pct(v, 50) or 0) * 1000 for k, v in lat.items()},
        "p99_ms": {k: (pct(v, 99) or 0) * 1000 for k, v in lat.items()},
        "max_ms": {k: (max(v) if v else 0) * 1000 for k, v in lat.items()},
        "rss_kb": rss,
        "sampler_errors": errors[:5],
    }
    json.dump(summary, open(out, "w"), indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_kb"}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "setup":
        setup(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif cmd == "load":
        load(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(__doc__)
