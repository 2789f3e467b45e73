#!/usr/bin/env python3
"""Concurrent bad logins against a Presenced binary: peak resident memory and latencies.

    scripts/login-flood.py PRESENCED_BIN [--concurrency 200] [--defaults]

Starts the binary on a loopback port with the default password hash cost (Argon2id,
19 MiB), registers one user with the shared secret, then:

- times 20 sequential bad logins for the existing user and 20 for unknown users (medians);
- sends CONCURRENCY bad logins at once (half for the user, half for unknown users) and
  reports the process's peak resident memory (VmHWM) before and after, and the answers.

The rc_login limits are raised so that the flood reaches password hashing (that is what is
measured); --defaults keeps them at the reference's defaults instead. Standard library only.
"""

import argparse
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SECRET = "flood-secret"
RAISED = """rc_login:
  address: {per_second: 1000000, burst_count: 1000000}
  account: {per_second: 1000000, burst_count: 1000000}
  failed_attempts: {per_second: 1000000, burst_count: 1000000}
"""


def request(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def register(base, user, password):
    _, n = request(base, "GET", "/_synapse/admin/v1/register")
    nonce = n["nonce"]
    mac = hmac.new(
        SECRET.encode(),
        b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]),
        hashlib.sha1,
    ).hexdigest()
    status, body = request(
        base,
        "POST",
        "/_synapse/admin/v1/register",
        {"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac},
    )
    assert status == 200, (status, body)


def login(base, user, password):
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    return request(base, "POST", "/_matrix/client/v3/login", body)


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024  # MiB
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--defaults", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="login-flood-")
    config = os.path.join(work, "presenced.yaml")
    with open(config, "w") as f:
        f.write(
            f"""server_name: flood.test
listeners:
  - {{port: 0, type: http, bind_addresses: ['127.0.0.1'], resources: [{{names: [client]}}]}}
database: {{name: sqlite3, args: {{database: {work}/presenced.db}}}}
registration_shared_secret: {SECRET}
"""
            + ("" if args.defaults else RAISED)
        )
    server = subprocess.Popen(
        [args.binary, "-c", config, "--print-listen-addrs"],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(work, "presenced.log"), "w"),
        text=True,
    )
    try:
        addr = server.stdout.readline().strip().removeprefix("listening on ")
        base = f"http://{addr}"
        register(base, "ann", "right")
        known, unknown = [], []
        for i in range(20):
            t = time.perf_counter()
            login(base, "ann", "wrong")
            known.append(time.perf_counter() - t)
            t = time.perf_counter()
            login(base, f"nobody{i}", "wrong")
            unknown.append(time.perf_counter() - t)
        print(
            f"sequential bad logins: existing user {statistics.median(known) * 1000:.1f} ms, "
            f"unknown user {statistics.median(unknown) * 1000:.1f} ms (medians of 20)"
        )
        print(f"before the flood: VmRSS {vm(server.pid, 'VmRSS')} MiB, "
              f"VmHWM {vm(server.pid, 'VmHWM')} MiB")
        answers = {}
        lock = threading.Lock()

        def one(i):
            user = "ann" if i % 2 == 0 else f"ghost{i}"
            status, body = login(base, user, "wrong")
            key = f"{status} {body.get('errcode')}"
            with lock:
                answers[key] = answers.get(key, 0) + 1

        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.concurrency)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        took = time.perf_counter() - t
        print(
            f"{args.concurrency} concurrent bad logins in {took:.1f} s: "
            + ", ".join(f"{v}x {k}" for k, v in sorted(answers.items()))
        )
        print(f"after the flood: VmRSS {vm(server.pid, 'VmRSS')} MiB, "
              f"peak VmHWM {vm(server.pid, 'VmHWM')} MiB")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
