// A general-purpose client (matrix-js-sdk, the SDK Element is built on) against Presenced.
//
// Registers alice and bob with the shared-secret admin API and puts them in one room; bob
// logs in with the SDK and runs `startClient`, which reads /versions, /capabilities,
// /pushrules/, a stored filter and then syncs. Once the first sync is done, alice sets her
// presence and bob must see it as a `User.presence` event. Exits non-zero with a message on
// any failure.
//
// Usage: node js_sdk_presence.mjs --sdk DIR --base-url URL --shared-secret S --server-name N
// where DIR holds node_modules/matrix-js-sdk (tests/js-sdk/package.json, installed by npm ci).

import { createHmac, randomBytes } from "node:crypto";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

// The SDK's 43.x line targets Node 22; this is the one Node 22 API it needs that Node 20 lacks.
if (!Promise.withResolvers) {
    Promise.withResolvers = () => {
        let resolve, reject;
        const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
        return { promise, resolve, reject };
    };
}

const { values: args } = parseArgs({
    options: {
        sdk: { type: "string" },
        "base-url": { type: "string" },
        "shared-secret": { type: "string" },
        "server-name": { type: "string" },
    },
});
const base = args["base-url"];
const lib = (file) => pathToFileURL(join(args.sdk, "node_modules", "matrix-js-sdk", "lib", file)).href;
const sdk = await import(lib("index.js"));
// The SDK logs every request at debug level; only its warnings matter here.
(await import(lib("logger.js"))).logger.setLevel("warn");

function fail(message) {
    console.error(message);
    process.exit(1);
}

async function http(method, path, token, body) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await resp.json().catch(() => null);
    if (!resp.ok) fail(`${method} ${path}: ${resp.status} ${JSON.stringify(data)}`);
    return data;
}

async function register(localpart, password) {
    const { nonce } = await http("GET", "/_synapse/admin/v1/register");
    const mac = createHmac("sha1", args["shared-secret"])
        .update([nonce, localpart, password, "notadmin"].join("\x00"))
        .digest("hex");
    return http("POST", "/_synapse/admin/v1/register", undefined, {
        nonce, username: localpart, password, admin: false, mac,
    });
}

function within(ms, promise, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const password = randomBytes(12).toString("hex");
const alice = await register("alice", password);
await register("bob", password);
const room = await http("POST", "/_matrix/client/v3/createRoom", alice.access_token, {
    preset: "public_chat",
});

// bob logs in through the SDK, as a client's login screen does.
const login = await sdk.createClient({ baseUrl: base }).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: "bob" },
    password,
    initial_device_display_name: "js-sdk-test",
});
const client = sdk.createClient({
    baseUrl: base,
    accessToken: login.access_token,
    userId: login.user_id,
    deviceId: login.device_id,
});
await client.joinRoom(room.room_id);

const capabilities = await client.getCapabilities();
if (capabilities["m.change_password"]?.enabled !== false) {
    fail(`capabilities: ${JSON.stringify(capabilities)}`);
}
const profile = await client.getProfileInfo(alice.user_id);
if (profile.displayname !== "alice") fail(`profile: ${JSON.stringify(profile)}`);

const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "PREPARED") resolve();
        if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
    });
});
await client.startClient({ initialSyncLimit: 1 });
await within(30000, prepared, "the first sync");
if (!client.pushRules?.global?.override?.some((r) => r.rule_id === ".m.rule.master")) {
    fail(`push rules: ${JSON.stringify(client.pushRules)}`);
}
if (!client.getRoom(room.room_id)) fail("the room is not in the first sync");
console.log("first sync done");

const status = `hello ${randomBytes(4).toString("hex")}`;
const seen = new Promise((resolve) => {
    client.on(sdk.UserEvent.Presence, (_event, user) => {
        if (user.userId === alice.user_id && user.presence === "online"
            && user.presenceStatusMsg === status) {
            resolve(user);
        }
    });
});
await http(
    "PUT",
    `/_matrix/client/v3/presence/${encodeURIComponent(alice.user_id)}/status`,
    alice.access_token,
    { presence: "online", status_msg: status },
);
await within(30000, seen, "alice's presence");
console.log("bob saw alice online");
client.stopClient();
process.exit(0);
