#!/usr/bin/env python3
"""Memory one client can pin: starts Presenced and reports its resident memory under two
abuses (figures in docs/benchmarks.md, "Memory a single client can pin").

- filters: one user sends /sync with many distinct inline filters of about 63 KB each,
  from 4 connections, for --seconds;
- federation: 64 connections send forged (unsigned) transactions with 8 MiB bodies at once.

    python3 bench/memory-pin.py --bin target/debug/presenced [--seconds 30] [--only filters]

Prints VmRSS (now) and VmHWM (peak) of the server after each phase.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

CONFIG = """
server_name: "bounds.test"
listeners:
  - port: {client}
    type: http
    tls: false
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [client, metrics]
  - port: {fed}
    type: http
    tls: false
    x_forwarded: true
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [federation, keys]
database:
  name: sqlite3
  args:
    database: "{data}/presenced.db"
signing_key_path: "{data}/signing.key"
enable_registration: true
enable_registration_without_verification: true
password_hash_cost: {{memory_kib: 8, iterations: 1, parallelism: 1}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) // 1024
    return fields


def report(label, pid, extra=""):
    m = memory(pid)
    print(f"{label}: RSS {m['VmRSS']} MB, peak {m['VmHWM']} MB{extra}", flush=True)


def request(port, method, path, body=None, token=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    r.add_header("Content-Type", "application/json")
    if token:
        r.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def filters_phase(port, token, seconds):
    """Distinct ~63 KB inline filters, one user, 4 connections."""
    stop = time.monotonic() + seconds
    sent = [0]
    statuses = {}
    lock = threading.Lock()

    def worker(w):
        n = 0
        while time.monotonic() < stop:
            n += 1
            encoded = inline_filter(f"{w}x{n}")
            status, _ = request(
                port, "GET", f"/_matrix/client/v3/sync?timeout=0&filter={encoded}", token=token
            )
            with lock:
                sent[0] += 1
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent[0], len(inline_filter("0x1")), statuses


def inline_filter(tag):
    """A distinct percent-encoded filter of about 63 KB."""
    senders = [f"@s{tag}x{i:05}:bounds.test" for i in range(1700)]
    body = json.dumps({"presence": {"not_senders": senders}}, separators=(",", ":"))
    return urllib.parse.quote(body)


def federation_phase(port, count=64, size=8 * 1024 * 1024):
    """`count` forged transactions of `size` bytes each, sent at once."""
    header = (
        'X-Matrix origin="evil.example",destination="bounds.test",'
        'key="ed25519:a",sig="AAAA"'
    )
    head = b'{"pdus":[],"edus":[],"pad":"'
    chunk = head + b"x" * (size - len(head) - 2) + b'"}'
    results = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def worker(i):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(60)
        head = (
            f"PUT /_matrix/federation/v1/send/t{i} HTTP/1.1\r\nHost: bounds.test\r\n"
            f"Authorization: {header}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(chunk)}\r\n\r\n"
        ).encode()
        start.wait()
        t0 = time.monotonic()
        try:
            s.sendall(head)
            s.sendall(chunk)
        except OSError:
            pass  # The server answered and closed before reading everything.
        try:
            answer = s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError as e:
            answer = f"error {e}"
        with lock:
            results.append((answer, time.monotonic() - t0))
        s.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = {}
    for answer, _ in results:
        answers[answer] = answers.get(answer, 0) + 1
    return answers, max(d for _, d in results)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--only", choices=["filters", "federation"])
    args = p.parse_args()
    data = tempfile.mkdtemp(prefix="presenced-pin-")
    client, fed = free_port(), free_port()
    cfg = os.path.join(data, "presenced.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(client=client, fed=fed, data=data))
    log = open(os.path.join(data, "server.log"), "w")
    server = subprocess.Popen([args.bin, "-c", cfg], stdout=log, stderr=log)
    try:
        for _ in range(300):
            try:
                if request(client, "GET", "/health", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            server.kill()
            sys.exit(open(log.name).read() + "\nthe server did not start")
        report("started", server.pid)
        if args.only in (None, "filters"):
            status, body = request(
                client,
                "POST",
                "/_matrix/client/v3/register",
                {"username": "pin", "password": "pin-password", "auth": {"type": "m.login.dummy"}},
            )
            token = json.loads(body)["access_token"]
            sent, size, statuses = filters_phase(client, token, args.seconds)
            report(
                f"filters ({sent} syncs, {size // 1024} KB filters, {args.seconds:.0f} s)",
                server.pid,
                f", answers {statuses}",
            )
        if args.only in (None, "federation"):
            answers, slowest = federation_phase(fed)
            report(
                "federation (64 forged 8 MiB transactions)",
                server.pid,
                f", answers {answers}, slowest {slowest:.2f} s",
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
