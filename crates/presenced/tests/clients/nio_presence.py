#!/usr/bin/env python3
"""A real Matrix client (matrix-nio) against Presenced: two room-mates and a routed watcher.

Registers users with the shared-secret admin API, logs them in with matrix-nio, sets presence
through nio, and checks that a room-mate and a user the presence router sends everything to
both see it in /sync. Exits non-zero with a message on any mismatch.

Standalone, every URL is Presenced's. Beside Synapse, `--register-url` is Synapse's main
process, `--base-url` the sync worker the clients speak to, and `--presence-url` Presenced's
client listener, where alice's presence is set (so the worker's clients see presence that
Presenced made).
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request

from nio import AsyncClient, LoginResponse, RoomCreateResponse, JoinResponse, SyncResponse
from nio.api import RoomPreset


def http(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def register(base, secret, localpart, password, exists_ok=False):
    nonce = http(base, "GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"notadmin"]))
    try:
        http(base, "POST", "/_synapse/admin/v1/register", {
            "nonce": nonce, "username": localpart, "password": password,
            "admin": False, "mac": mac.hexdigest()})
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
        if not (exists_ok and body.get("errcode") == "M_USER_IN_USE"):
            raise SystemExit("registering %s: %s %r" % (localpart, e.code, body))


def put_presence(base, token, user_id, presence, status_msg):
    path = "/_matrix/client/v3/presence/%s/status" % urllib.parse.quote(user_id)
    req = urllib.request.Request(
        base + path, method="PUT",
        data=json.dumps({"presence": presence, "status_msg": status_msg}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


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


async def wait_presence(client, since, user_id, status_msg, within=20.0):
    """Syncs until `user_id`'s presence with `status_msg` arrives (beside Synapse it travels
    through Redis to the worker) or `within` seconds pass: (that event or None, all seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen = {}
    while True:
        resp = await client.sync(timeout=1000, since=since, set_presence="offline")
        if not isinstance(resp, SyncResponse):
            raise SystemExit("sync failed: %r" % (resp,))
        since = resp.next_batch
        seen.update({e.user_id: e for e in resp.presence_events})
        ev = seen.get(user_id)
        if ev is not None and ev.status_msg == status_msg:
            return ev, seen
        if loop.time() > deadline:
            return ev, seen


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--shared-secret", required=True)
    ap.add_argument("--server-name", required=True)
    ap.add_argument("--watcher", required=True, help="localpart the router sends everything to")
    ap.add_argument("--watcher-password", help="the watcher's password, if it may exist already")
    ap.add_argument("--register-url", help="where to register (default: --base-url)")
    ap.add_argument("--presence-url", help="where alice sets presence (default: through nio)")
    a = ap.parse_args()
    register_url = a.register_url or a.base_url
    suffix = secrets.token_hex(3)
    password = "nio-" + secrets.token_hex(6)
    watcher_password = a.watcher_password or password
    names = {"alice": "alice_" + suffix, "bob": "bob_" + suffix}
    for localpart in names.values():
        register(register_url, a.shared_secret, localpart, password)
    register(register_url, a.shared_secret, a.watcher, watcher_password,
             exists_ok=a.watcher_password is not None)
    names["watcher"] = a.watcher
    ids = {k: "@%s:%s" % (v, a.server_name) for k, v in names.items()}
    alice = await login(a.base_url, ids["alice"], password)
    bob = await login(a.base_url, ids["bob"], password)
    watcher = await login(a.base_url, ids["watcher"], watcher_password)
    try:
        room = await alice.room_create(preset=RoomPreset.public_chat, name="nio-" + suffix)
        if not isinstance(room, RoomCreateResponse):
            raise SystemExit("createRoom failed: %r" % (room,))
        joined = await bob.join(room.room_id)
        if not isinstance(joined, JoinResponse):
            raise SystemExit("join failed: %r" % (joined,))
        bob_since, _ = await presence_seen(bob, None)
        watcher_since, _ = await presence_seen(watcher, None)

        if a.presence_url:
            put_presence(a.presence_url, alice.access_token, ids["alice"], "online",
                         "typing from nio")
        else:
            await alice.set_presence("online", "typing from nio")

        ev, seen = await wait_presence(bob, bob_since, ids["alice"], "typing from nio")
        if ev is None or ev.presence != "online" or ev.status_msg != "typing from nio":
            raise SystemExit("bob (room-mate) did not see alice's presence: %r" % (seen,))
        ev, seen = await wait_presence(watcher, watcher_since, ids["alice"], "typing from nio")
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
