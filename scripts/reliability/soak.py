#!/usr/bin/python3
"""Soak: the lab's fulcrum under mixed traffic, one API change a second and a flapping
backend, for --seconds. Run through scripts/soak.sh, which brings the lab up, starts fulcrum
with a state file and runs this inside the balancer's namespace (fl-lb), where the API is.

While it runs:
  - traffic: loops of TCP connections (192.0.2.10:80 l2dsr with health checks, 192.0.2.11:80
    ipip, [2001:db8:10::10]:80) from fl-c1 and UDP requests (192.0.2.10:53) from fl-c2;
  - one change per second on 192.0.2.11:80/tcp and a scratch VIP: add be4 (203.0.113.14)
    with a weight, change its weight, drain, undrain, remove it, and create or delete the
    scratch VIP 192.0.2.20:80/tcp; every acknowledged change updates the expected state;
  - be3's HTTP server stops and starts every 20 s (its health check fails and recovers);
  - fulcrum's VmRSS every 10 s.
At the end:
  - the running VIPs and backends must equal the expected state;
  - SIGTERM: the exit totals must show no mbuf in use;
  - fulcrum restarts with the same configuration and state file: the VIPs and backends
    must again equal the expected state (every acknowledged change was persisted).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

API = "http://127.0.0.1:9180"
VIP = "192.0.2.11:80/tcp"
SCRATCH = "192.0.2.20:80/tcp"
BE4 = "203.0.113.14"


def q(vip):
    return urllib.request.quote(vip, safe="")


def call(method, path, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def view():
    """VIP -> {backend: (weight, drained)}, from the running daemon."""
    status, body = call("GET", "/v1/vips")
    if status != 200:
        raise RuntimeError(f"GET /v1/vips answered {status}: {body}")
    return {
        v["vip"]: {b["address"]: (b["weight"], b["drained"]) for b in v["backends"]}
        for v in body["vips"]
    }


class Soak:
    def __init__(self, a):
        self.a = a
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.traffic = {}
        self.changes = {"acknowledged": 0, "refused": 0, "failed": 0}
        self.rss = []
        self.flaps = 0
        self.expected = None

    def log(self, msg):
        print(f"soak: {time.strftime('%H:%M:%S')} {msg}", flush=True)

    # --- traffic -------------------------------------------------------------------------
    def traffic_loop(self, ns, args, label):
        client = os.path.join(self.a.lab_dir, "client.py")
        while not self.stop.is_set():
            cmd = ["ip", "netns", "exec", ns, "/usr/bin/python3", client] + args
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
                r = json.loads(out.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                r = {"answers": {}, "errors": 1}
            with self.lock:
                t = self.traffic.setdefault(label, {"answers": 0, "errors": 0})
                t["answers"] += sum(r.get("answers", {}).values())
                t["errors"] += r.get("errors", 0)

    # --- API changes ---------------------------------------------------------------------
    def change_loop(self):
        step = 0
        weight = 1
        while not self.stop.wait(1.0):
            kind = step % 6
            if kind == 0:
                weight = random.randint(1, 5)
                ok = self.apply("POST", f"/v1/vips/{q(VIP)}/backends", {"address": BE4, "weight": weight})
                if ok:
                    self.expected[VIP][BE4] = (weight, False)
            elif kind == 1:
                weight = random.randint(1, 5)
                if self.apply("PATCH", f"/v1/vips/{q(VIP)}/backends/{BE4}", {"weight": weight}):
                    self.expected[VIP][BE4] = (weight, False)
            elif kind == 2:
                if self.apply("POST", f"/v1/vips/{q(VIP)}/backends/{BE4}/drain"):
                    self.expected[VIP][BE4] = (weight, True)
            elif kind == 3:
                if self.apply("POST", f"/v1/vips/{q(VIP)}/backends/{BE4}/undrain"):
                    self.expected[VIP][BE4] = (weight, False)
            elif kind == 4:
                if self.apply("DELETE", f"/v1/vips/{q(VIP)}/backends/{BE4}"):
                    self.expected[VIP].pop(BE4, None)
            else:
                if SCRATCH in self.expected:
                    if self.apply("DELETE", f"/v1/vips/{q(SCRATCH)}"):
                        del self.expected[SCRATCH]
                else:
                    body = {"vip": SCRATCH, "encap": "ipip", "backends": [{"address": "203.0.113.11"}, {"address": "203.0.113.12", "weight": 3}]}
                    if self.apply("POST", "/v1/vips", body):
                        self.expected[SCRATCH] = {"203.0.113.11": (1, False), "203.0.113.12": (3, False)}
            step += 1

    def apply(self, method, path, body=None):
        try:
            status, answer = call(method, path, body)
        except OSError as e:
            self.changes["failed"] += 1
            self.log(f"change {method} {path} failed: {e}")
            return False
        if 200 <= status < 300:
            self.changes["acknowledged"] += 1
            return True
        self.changes["refused"] += 1
        self.log(f"change {method} {path} refused: {status} {answer}")
        return False

    # --- flapping and RSS ----------------------------------------------------------------
    def flap_loop(self):
        up = True
        while not self.stop.wait(20):
            action = "stop" if up else "start"
            subprocess.run(["bash", self.a.lab, "server", action, "be3", "http"], capture_output=True)
            up = not up
            self.flaps += 1

    def rss_loop(self, pid):
        t0 = time.time()
        while True:
            try:
                with open(f"/proc/{pid}/status") as f:
                    kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
                self.rss.append((round(time.time() - t0), kb))
            except (OSError, StopIteration):
                pass
            if self.stop.wait(10):
                return

    def run(self):
        a = self.a
        pid = int(open(a.pid_file).read())
        # The changes start from VIP's configured backends, without be4.
        self.expected = {VIP: view()[VIP]}
        if self.expected[VIP].pop(BE4, None) is not None:
            call("DELETE", f"/v1/vips/{q(VIP)}/backends/{BE4}")
        threads = [
            threading.Thread(target=self.traffic_loop, args=("fl-c1", ["tcp", "--vip", "192.0.2.10", "-n", "40", "--concurrency", "4"], "tcp 192.0.2.10:80 (l2dsr, health-checked)")),
            threading.Thread(target=self.traffic_loop, args=("fl-c1", ["tcp", "--vip", "192.0.2.11", "-n", "40", "--concurrency", "4"], "tcp 192.0.2.11:80 (ipip, changing)")),
            threading.Thread(target=self.traffic_loop, args=("fl-c2", ["tcp", "--vip", "2001:db8:10::10", "-n", "40", "--concurrency", "4"], "tcp [2001:db8:10::10]:80 (l2dsr)")),
            threading.Thread(target=self.traffic_loop, args=("fl-c2", ["udp", "--vip", "192.0.2.10", "--port", "53", "-n", "40"], "udp 192.0.2.10:53 (l2dsr)")),
            threading.Thread(target=self.change_loop),
            threading.Thread(target=self.flap_loop),
            threading.Thread(target=self.rss_loop, args=(pid,)),
        ]
        for t in threads:
            t.start()
        t0 = time.time()
        next_report = t0 + 60
        while time.time() - t0 < a.seconds:
            time.sleep(1)
            if time.time() >= next_report:
                next_report += 60
                with self.lock:
                    tr = {k: (v["answers"], v["errors"]) for k, v in self.traffic.items()}
                rss = self.rss[-1][1] if self.rss else None
                self.log(f"{int(time.time() - t0)} s: {self.changes['acknowledged']} changes, {self.flaps} flaps, VmRSS {rss} kB, traffic (answers, errors) {tr}")
        self.stop.set()
        for t in threads:
            t.join()
        # be3 back up, whatever state the flapping left it in.
        subprocess.run(["bash", a.lab, "server", "start", "be3", "http"], capture_output=True)
        return self.report()

    def report(self):
        a = self.a
        failures = []
        running = {k: v for k, v in view().items() if k in (VIP, SCRATCH)}
        if running != self.expected:
            failures.append(f"running state differs from the acknowledged changes: {running} != {self.expected}")
        # SIGTERM through the lab, then the exit totals from the log.
        subprocess.run(["bash", a.lab, "stop"], check=True)
        totals = None
        with open(a.log_file) as f:
            for line in f:
                try:
                    totals = json.loads(line)
                except ValueError:
                    pass
        mempool = totals.get("mempool_in_use_at_exit") if totals else None
        if mempool != 0:
            failures.append(f"mempool_in_use_at_exit is {mempool}")
        subprocess.run(["bash", a.lab, "start", "tap", a.config], check=True)
        restarted = {k: v for k, v in view().items() if k in (VIP, SCRATCH)}
        if restarted != self.expected:
            failures.append(f"after restart the state differs: {restarted} != {self.expected}")
        subprocess.run(["bash", a.lab, "stop"], check=True)

        rss = [kb for _, kb in self.rss]
        # "Flat": the last third's peak against the first third's after the first minute.
        warm = [kb for t, kb in self.rss if t >= 60] or rss
        third = max(1, len(warm) // 3)
        first, last = max(warm[:third]), max(warm[-third:])
        figures = {
            "seconds": a.seconds,
            "changes": self.changes,
            "flaps": self.flaps,
            "traffic": self.traffic,
            "rss_kb_first": rss[0] if rss else None,
            "rss_kb_min": min(rss) if rss else None,
            "rss_kb_max": max(rss) if rss else None,
            "rss_kb_first_third_peak": first,
            "rss_kb_last_third_peak": last,
            "rss_growth_kb": last - first,
            "rss_curve": self.rss,
            "mempool_in_use_at_exit": mempool,
            "state_matches": not any("state" in f for f in failures),
        }
        if last - first > 1024:
            failures.append(f"VmRSS grew by {last - first} kB between the first and the last third")
        if self.changes["acknowledged"] < a.seconds * 0.8:
            failures.append(f"only {self.changes['acknowledged']} changes acknowledged in {a.seconds} s")
        print("soak: results")
        for k, v in figures.items():
            if k != "rss_curve":
                print(f"  {k:26} {v}")
        print("  rss_curve (s, kB)          " + " ".join(f"{t}:{kb}" for t, kb in self.rss))
        with open(os.path.join(a.workdir, "soak.json"), "w") as f:
            json.dump(figures, f, indent=1)
        for f in failures:
            print(f"soak: FAIL: {f}")
        print("soak: PASS" if not failures else "soak: FAIL")
        return 0 if not failures else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=1800)
    ap.add_argument("--lab", required=True, help="scripts/lab.sh")
    ap.add_argument("--lab-dir", required=True, help="scripts/lab (client.py)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--log-file", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    sys.exit(Soak(a).run())


if __name__ == "__main__":
    main()
