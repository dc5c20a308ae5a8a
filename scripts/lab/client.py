#!/usr/bin/python3
"""Lab traffic: many short connections to a VIP, counted by the backend that answered.

  client.py tcp  --vip 192.0.2.10 [--port 80] -n 600 [--concurrency 8] [--sport-base 20000]
  client.py udp  --vip 192.0.2.10 [--port 53] -n 100 [--sport-base 30000]

Each TCP connection sends one `GET /` with `Connection: close`; the backend answers its name.
Each UDP request comes from its own source port and expects "<name>: <payload>" back.
Prints one JSON object: {"answers": {"be1": n, ...}, "errors": n, "error_kinds": {...},
"seconds": s}. Every operation has a timeout and the total run a deadline, so this always
ends.

With --sport-base the i-th connection binds source port base+i, so a run is a fixed set of
five-tuples and its spread over backends is reproducible (fulcrum's flow hash and Maglev
table are deterministic); without it the kernel picks ports.
"""

import argparse
import json
import socket
import sys
import threading
import time


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.answers = {}
        self.errors = {}

    def answer(self, name):
        with self.lock:
            self.answers[name] = self.answers.get(name, 0) + 1

    def error(self, kind):
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def one_tcp(args, sport, tally):
    fam = family_of(args.vip)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(args.timeout)
    try:
        if sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
        s.connect((args.vip, args.port))
        host = f"[{args.vip}]" if fam == socket.AF_INET6 else args.vip
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while len(data) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
            tally.error("bad_response")
            return
        name = body.decode(errors="replace").strip()
        tally.answer(name or "?")
    except socket.timeout:
        tally.error("timeout")
    except ConnectionRefusedError:
        tally.error("refused")
    except ConnectionResetError:
        tally.error("reset")
    except OSError as e:
        tally.error(type(e).__name__)
    finally:
        s.close()


def run_tcp(args, tally):
    deadline = time.monotonic() + args.deadline
    next_index = [0]
    lock = threading.Lock()

    def worker():
        while time.monotonic() < deadline:
            with lock:
                i = next_index[0]
                if i >= args.n:
                    return
                next_index[0] += 1
            one_tcp(args, args.sport_base + i if args.sport_base else 0, tally)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    done = sum(tally.answers.values()) + sum(tally.errors.values())
    if done < args.n:
        tally.errors["not_attempted"] = args.n - done


def run_udp(args, tally):
    fam = family_of(args.vip)
    deadline = time.monotonic() + args.deadline
    for i in range(args.n):
        if time.monotonic() >= deadline:
            tally.error("not_attempted")
            continue
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(args.timeout)
        try:
            if args.sport_base:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", args.sport_base + i))
            s.connect((args.vip, args.port))
            payload = f"hello {i}".encode()
            s.send(payload)
            data = s.recv(65535)
            name, sep, rest = data.partition(b": ")
            if not sep or rest != payload:
                tally.error("bad_response")
            else:
                tally.answer(name.decode(errors="replace"))
        except socket.timeout:
            tally.error("timeout")
        except OSError as e:
            tally.error(type(e).__name__)
        finally:
            s.close()


def main():
    ap = argparse.ArgumentParser(description="lab client")
    ap.add_argument("proto", choices=["tcp", "udp"])
    ap.add_argument("--vip", required=True)
    ap.add_argument("--port", type=int)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sport-base", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3.0, help="per operation, seconds")
    ap.add_argument("--deadline", type=float, default=60.0, help="whole run, seconds")
    args = ap.parse_args()
    if args.port is None:
        args.port = 80 if args.proto == "tcp" else 53
    tally = Tally()
    start = time.monotonic()
    if args.proto == "tcp":
        run_tcp(args, tally)
    else:
        run_udp(args, tally)
    out = {
        "answers": dict(sorted(tally.answers.items())),
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "seconds": round(time.monotonic() - start, 2),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
