#!/usr/bin/env python3
"""A real Matrix client (matrix-nio) against Presenced: two room-mates and a routed watcher.

Registers users with the shared-secret admin API, logs them in with matrix-nio, sets presence
through nio, and checks that a room-mate and a user the presence router sends everything to
both see it in /sync. Exits non-zero with a message on any mismatch.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import secrets
import sys
import urllib.request

from nio import AsyncClient, LoginResponse, RoomCreateResponse, JoinResponse, SyncResponse
from nio.api import RoomPreset


def http(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def register(base, secret, localpart, password):
    nonce = http(base, "GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"notadmin"]))
    http(base, "POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": localpart, "password": password,
        "admin": False, "mac": mac.hexdigest()})


async def login(base, user_id, password):
    client = AsyncClient(base, user_id)
    resp = await client.login(password, device_name="nio-test")
    if not isinstance(resp, LoginResponse):
        raise SystemExit("login of %s failed: %r" % (user_id, resp))
    return client


async def presence_seen(client, since):
    resp = await client.sync(timeout=0, since=since, set_presence="offline")
    if not isinstance(resp, SyncResponse):
        raise SystemExit("sync failed: %r" % (resp,))
    return resp.next_batch, {e.user_id: e for e in resp.presence_events}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--shared-secret", required=True)
    ap.add_argument("--server-name", required=True)
    ap.add_argument("--watcher", required=True, help="localpart the router sends everything to")
    a = ap.parse_args()
    suffix = secrets.token_hex(3)
    password = "nio-" + secrets.token_hex(6)
    names = {"alice": "alice_" + suffix, "bob": "bob_" + suffix, "watcher": a.watcher}
    for localpart in names.values():
        register(a.base_url, a.shared_secret, localpart, password)
    ids = {k: "@%s:%s" % (v, a.server_name) for k, v in names.items()}
    alice = await login(a.base_url, ids["alice"], password)
    bob = await login(a.base_url, ids["bob"], password)
    watcher = await login(a.base_url, ids["watcher"], password)
    try:
        room = await alice.room_create(preset=RoomPreset.public_chat, name="nio-" + suffix)
        if not isinstance(room, RoomCreateResponse):
            raise SystemExit("createRoom failed: %r" % (room,))
        joined = await bob.join(room.room_id)
        if not isinstance(joined, JoinResponse):
            raise SystemExit("join failed: %r" % (joined,))
        bob_since, _ = await presence_seen(bob, None)
        watcher_since, _ = await presence_seen(watcher, None)

        await alice.set_presence("online", "typing from nio")

        _, seen = await presence_seen(bob, bob_since)
        ev = seen.get(ids["alice"])
        if ev is None or ev.presence != "online" or ev.status_msg != "typing from nio":
            raise SystemExit("bob (room-mate) did not see alice's presence: %r" % (seen,))
        _, seen = await presence_seen(watcher, watcher_since)
        ev = seen.get(ids["alice"])
        if ev is None or ev.presence != "online":
            raise SystemExit("the routed watcher did not see alice's presence: %r" % (seen,))
        if ids["bob"] in seen:
            raise SystemExit("bob never changed presence but was reported: %r" % (seen,))
        print("nio: room-mate and routed watcher both saw alice online")
    finally:
        for c in (alice, bob, watcher):
            await c.close()


if __name__ == "__main__":
    asyncio.run(main())
