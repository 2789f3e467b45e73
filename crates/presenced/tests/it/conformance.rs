//! Replays the conformance scenarios (`tests/conformance/scenarios`) against the real server
//! over HTTP and compares each step with the outcome recorded from the reference homeserver
//! (`tests/conformance/expected`). Where Presenced deliberately differs, the expected file
//! carries a `_presenced` object next to the step with the fields that differ and a
//! `_difference` note saying why (see `docs/differences.md`).
//!
//! The replay mirrors the reference runner: fresh users per scenario, fixed users (the ones the
//! router configuration names) reused and reset, public or private rooms, one silent initial
//! sync per user, then the steps; syncs use `set_presence=offline&timeout=0` unless a step says
//! otherwise; presence lists are compared as sorted multisets.

use std::{collections::BTreeMap, path::PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::{
    matrix::{Client, RequestBody, TestServer, User, q, test_config},
    support::Workspace,
};

const LONG_STATUS_CUTOFF: usize = 100;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

struct Replay<'a> {
    c: &'a Client,
    users: BTreeMap<String, (User, Option<String>)>,
    id_to_name: BTreeMap<String, String>,
    rooms: BTreeMap<String, String>,
}

impl Replay<'_> {
    fn user(&self, name: &str) -> &User {
        &self.users[name].0
    }

    fn mxid(&self, name: &str) -> String {
        self.users
            .get(name)
            .map_or_else(|| name.to_owned(), |(u, _)| u.user_id.clone())
    }

    fn subst(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (name, (u, _)) in &self.users {
            s = s.replace(&format!("{{mxid:{name}}}"), &u.user_id);
            s = s.replace(&format!("{{q:{name}}}"), &q(&u.user_id));
            s = s.replace(&format!("{{{name}}}"), &u.user_id);
        }
        s
    }

    fn norm_status(v: &Value) -> Value {
        match v.as_str() {
            Some(s) if s.chars().count() > LONG_STATUS_CUTOFF => {
                json!(format!("<len:{}>", s.chars().count()))
            }
            _ => v.clone(),
        }
    }

    async fn sync_raw(
        &mut self,
        name: &str,
        set_presence: &str,
        filter: Option<&Value>,
    ) -> Vec<Value> {
        let (user, since) = self.users[name].clone();
        let mut params = format!("timeout=0&set_presence={set_presence}");
        if let Some(f) = filter {
            let f = self.subst(&serde_json::to_string(f).unwrap());
            params.push_str(&format!("&filter={}", q(&f)));
        }
        if let Some(s) = &since {
            params.push_str(&format!("&since={}", q(s)));
        }
        let data = self.c.sync(&user, &params).await;
        let next = data["next_batch"].as_str().expect("next_batch").to_owned();
        self.users.get_mut(name).unwrap().1 = Some(next);
        data["presence"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn collect(&self, events: Vec<Value>) -> Vec<Value> {
        let mut out: Vec<Value> = events
            .into_iter()
            .filter(|e| e["type"] == "m.presence")
            .filter_map(|e| {
                let name = self.id_to_name.get(e["sender"].as_str()?)?;
                let c = &e["content"];
                Some(json!({
                    "user": name,
                    "presence": c["presence"],
                    "status_msg": Self::norm_status(&c["status_msg"]),
                    "currently_active": c["currently_active"],
                }))
            })
            .collect();
        out.sort_by_key(|v| v.to_string());
        out
    }

    async fn step(&mut self, op: &str, a: &Value) -> Map<String, Value> {
        let mut res = Map::new();
        let errcode = |status: StatusCode, data: &Value| {
            if status == StatusCode::OK {
                Value::Null
            } else {
                data["errcode"].clone()
            }
        };
        match op {
            "set_presence" => {
                let actor = self.user(a["user"].as_str().unwrap()).clone();
                let target = self.mxid(
                    a.get("target")
                        .and_then(Value::as_str)
                        .unwrap_or(a["user"].as_str().unwrap()),
                );
                let mut body = Map::new();
                if let Some(p) = a.get("presence") {
                    body.insert("presence".into(), p.clone());
                }
                if let Some(m) = a.get("status_msg") {
                    body.insert("status_msg".into(), m.clone());
                }
                if let Some(n) = a.get("status_msg_len").and_then(Value::as_u64) {
                    body.insert("status_msg".into(), json!("x".repeat(n as usize)));
                }
                if let Some(Value::Object(extra)) = a.get("extra_body") {
                    body.extend(extra.clone());
                }
                let (status, code) = self
                    .c
                    .put_presence(&actor, &target, Value::Object(body))
                    .await;
                res.insert("status".into(), json!(status.as_u16()));
                res.insert(
                    "errcode".into(),
                    if status == StatusCode::OK {
                        Value::Null
                    } else {
                        json!(code)
                    },
                );
            }
            "sync" => {
                let name = a["user"].as_str().unwrap();
                let sp = a
                    .get("set_presence")
                    .and_then(Value::as_str)
                    .unwrap_or("offline");
                let evs = self.sync_raw(name, sp, a.get("filter")).await;
                res.insert("presence".into(), Value::Array(self.collect(evs)));
            }
            "get_presence" => {
                let asker = self.user(a["asker"].as_str().unwrap()).clone();
                let target = self.mxid(a["target"].as_str().unwrap());
                let path = format!("/_matrix/client/v3/presence/{}/status", q(&target));
                let (status, data) = self
                    .c
                    .request(Method::GET, &path, Some(&asker.token), None)
                    .await;
                res.insert("status".into(), json!(status.as_u16()));
                if status == StatusCode::OK {
                    res.insert("presence".into(), data["presence"].clone());
                    res.insert("status_msg".into(), Self::norm_status(&data["status_msg"]));
                    res.insert("currently_active".into(), data["currently_active"].clone());
                    let mut keys: Vec<&String> = data.as_object().unwrap().keys().collect();
                    keys.sort();
                    res.insert("body_keys".into(), json!(keys));
                } else {
                    res.insert("errcode".into(), data["errcode"].clone());
                }
            }
            "join" | "leave" | "invite" => {
                let actor = self.user(a["user"].as_str().unwrap()).clone();
                let rid = self.rooms[a["room"].as_str().unwrap()].clone();
                let (path, body) = match op {
                    "join" => (format!("/_matrix/client/v3/join/{}", q(&rid)), json!({})),
                    "leave" => (
                        format!("/_matrix/client/v3/rooms/{}/leave", q(&rid)),
                        json!({}),
                    ),
                    _ => (
                        format!("/_matrix/client/v3/rooms/{}/invite", q(&rid)),
                        json!({"user_id": self.mxid(a["target"].as_str().unwrap())}),
                    ),
                };
                let (status, data) = self
                    .c
                    .request(
                        Method::POST,
                        &path,
                        Some(&actor.token),
                        Some(RequestBody::Json(body)),
                    )
                    .await;
                res.insert("status".into(), json!(status.as_u16()));
                res.insert("errcode".into(), errcode(status, &data));
            }
            "sleep_ms" => {
                tokio::time::sleep(std::time::Duration::from_millis(a.as_u64().unwrap())).await;
            }
            "raw" => {
                let token = a["user"].as_str().map(|n| self.user(n).token.clone());
                let path = self.subst(a["path"].as_str().unwrap());
                let method = Method::from_bytes(a["method"].as_str().unwrap().as_bytes()).unwrap();
                let body = if let Some(raw) = a.get("body_raw").and_then(Value::as_str) {
                    Some(RequestBody::Raw(self.subst(raw)))
                } else {
                    a.get("body").map(|b| {
                        RequestBody::Json(
                            serde_json::from_str(&self.subst(&b.to_string())).unwrap(),
                        )
                    })
                };
                let (status, data) = self.c.request(method, &path, token.as_deref(), body).await;
                res.insert("status".into(), json!(status.as_u16()));
                res.insert(
                    "errcode".into(),
                    if data.is_object() {
                        data["errcode"].clone()
                    } else {
                        Value::Null
                    },
                );
            }
            other => panic!("unknown step {other}"),
        }
        res
    }
}

fn unsubst(v: Value, ids: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(mut s) => {
            for (id, name) in ids {
                s = s.replace(id.as_str(), &format!("@{name}"));
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| unsubst(x, ids)).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, unsubst(v, ids))).collect())
        }
        other => other,
    }
}

/// The expected step: the reference's outcome with Presenced's deliberate differences
/// applied, and informational (`_`) keys removed.
fn expected_step(step: &Value) -> Value {
    let mut out: Map<String, Value> = step
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Value::Object(ours)) = step.get("_presenced") {
        for (k, v) in ours {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

async fn run_scenario(
    c: &Client,
    name: &str,
    spec: &Value,
    fixed_passwords: &BTreeMap<String, String>,
) -> Vec<Value> {
    let suffix = format!("{:08x}", rand_u32());
    let mut r = Replay {
        c,
        users: BTreeMap::new(),
        id_to_name: BTreeMap::new(),
        rooms: BTreeMap::new(),
    };
    for u in spec["users"].as_array().into_iter().flatten() {
        let u = u.as_str().unwrap();
        let user = c
            .register(&format!("{}_{suffix}", u.to_lowercase()), "pw-fresh", false)
            .await
            .unwrap();
        r.id_to_name.insert(user.user_id.clone(), u.to_owned());
        r.users.insert(u.to_owned(), (user, None));
    }
    if let Some(Value::Object(fixed)) = spec.get("fixed_users") {
        for (u, localpart) in fixed {
            let localpart = localpart.as_str().unwrap();
            let password = &fixed_passwords[localpart];
            let user = c.login(localpart, password, Some("ORACLEFIXED")).await;
            // Reset: leave every room, offline without a status.
            let rooms = c
                .ok(
                    Method::GET,
                    "/_matrix/client/v3/joined_rooms",
                    Some(&user.token),
                    Value::Null,
                )
                .await;
            for rid in rooms["joined_rooms"].as_array().unwrap() {
                let path = format!(
                    "/_matrix/client/v3/rooms/{}/leave",
                    q(rid.as_str().unwrap())
                );
                c.ok(Method::POST, &path, Some(&user.token), json!({}))
                    .await;
            }
            let uid = user.user_id.clone();
            let (s, _) = c
                .put_presence(&user, &uid, json!({"presence": "offline"}))
                .await;
            assert_eq!(s, StatusCode::OK);
            r.id_to_name.insert(user.user_id.clone(), u.clone());
            r.users.insert(u.clone(), (user, None));
        }
    }
    if let Some(Value::Object(rooms)) = spec.get("rooms") {
        for (rname, room) in rooms {
            let creator = r.user(room["creator"].as_str().unwrap()).clone();
            let private = room
                .get("private")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let rid = c.create_room(&creator, private).await;
            for m in room["members"].as_array().into_iter().flatten() {
                let member = r.user(m.as_str().unwrap()).clone();
                if private {
                    let path = format!("/_matrix/client/v3/rooms/{}/invite", q(&rid));
                    c.ok(
                        Method::POST,
                        &path,
                        Some(&creator.token),
                        json!({"user_id": member.user_id}),
                    )
                    .await;
                }
                let (s, e) = c.join(&member, &rid).await;
                assert_eq!(s, StatusCode::OK, "{name}: setup join failed: {e:?}");
            }
            for m in room
                .get("invited")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let invitee = r.mxid(m.as_str().unwrap());
                let path = format!("/_matrix/client/v3/rooms/{}/invite", q(&rid));
                c.ok(
                    Method::POST,
                    &path,
                    Some(&creator.token),
                    json!({"user_id": invitee}),
                )
                .await;
            }
            r.rooms.insert(rname.clone(), rid);
        }
    }
    let names: Vec<String> = r.users.keys().cloned().collect();
    for n in &names {
        r.sync_raw(n, "offline", None).await;
    }
    let mut results = Vec::new();
    for (i, step) in spec["steps"].as_array().unwrap().iter().enumerate() {
        let (op, args) = step.as_object().unwrap().iter().next().unwrap();
        let res = r.step(op, args).await;
        let mut entry = Map::new();
        entry.insert("i".into(), json!(i));
        entry.insert("op".into(), json!(op));
        if let Value::Object(a) = args {
            for k in [
                "user",
                "asker",
                "target",
                "room",
                "presence",
                "status_msg",
                "status_msg_len",
                "expect",
                "filter",
                "note",
            ] {
                if let Some(v) = a.get(k) {
                    entry.insert(k.into(), v.clone());
                }
            }
        }
        entry.extend(res);
        if op == "sleep_ms" {
            entry.insert("ms".into(), args.clone());
        }
        results.push(unsubst(Value::Object(entry), &r.id_to_name));
    }
    results
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_scenarios_match_the_reference() {
    replay_all(&test_config("")).await;
}

/// Replays every scenario against a server started with `config`; returns the server for
/// further checks.
pub(crate) async fn replay_all(config: &str) -> TestServer {
    let server = TestServer::start(Workspace::new(), config).await;
    let c = server.client();
    let mut fixed_passwords = BTreeMap::new();
    for localpart in ["oracle_gobbler", "oracle_gobbler2", "oracle_blocked"] {
        let pw = format!("oracle-fixed-pw-{localpart}");
        c.register(localpart, &pw, false).await.unwrap();
        fixed_passwords.insert(localpart.to_owned(), pw);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "scenarios are missing: {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(data_dir().join("expected").join(format!("{name}.json")))
                .unwrap(),
        )
        .unwrap();
        let got = run_scenario(&c, &name, &spec, &fixed_passwords).await;
        let want: Vec<Value> = expected["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(expected_step)
            .collect();
        if got.len() != want.len() {
            failures.push(format!(
                "{name}: {} steps, expected {}",
                got.len(),
                want.len()
            ));
        }
        for (g, w) in got.iter().zip(&want) {
            if g != w {
                failures.push(format!(
                    "{name} step {}:\n    got      {g}\n    expected {w}",
                    w["i"]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    server
}
