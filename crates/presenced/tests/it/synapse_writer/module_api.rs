//! The module API calls only the presence writer may make, with Presenced as the writer:
//! `send_local_online_presence_to` (a full snapshot on the sync worker's next `/sync`, once;
//! remote targets through the `presence_federation` stream) and `set_presence_for_users`,
//! from Presenced's admin API on its client listener and from a Python module it hosts.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Account, SEEN_WITHIN, Scenario, Watch, run_id, txn_id};

impl Scenario {
    /// `POST {presenced client listener}/_presenced/admin/v1/{call}` as `who`.
    async fn admin_call(&self, who: &Account, call: &str, body: &Value) -> (StatusCode, Value) {
        let url = format!(
            "{}/_presenced/admin/v1/{call}",
            self.d.presenced_client_url()
        );
        let auth = format!("Bearer {}", who.token);
        self.call(Method::POST, &url, Some(&auth), Some(body)).await
    }

    /// Polls `w` until a poll delivers presence of `of` (every event of that poll returned),
    /// failing after `within`.
    async fn poll_until_of(&self, w: &mut Watch, of: &Account, within: Duration) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let events = self.poll(w).await;
            if events.iter().any(|e| e["sender"] == of.user_id.as_str()) {
                return events;
            }
            if t.elapsed() > within {
                self.fail(&format!(
                    "{}'s /sync on the sync worker brought no presence of {} within {}s",
                    w.account.user_id,
                    of.user_id,
                    within.as_secs()
                ));
            }
        }
    }

    /// Asserts that one incremental `/sync` of `w` (a second of long-polling) brings no
    /// presence of any of `of`.
    async fn quiet(&self, w: &mut Watch, of: &[&Account], why: &str) {
        let events = self.poll(w).await;
        let unexpected: Vec<&Value> = events
            .iter()
            .filter(|e| of.iter().any(|a| e["sender"] == a.user_id.as_str()))
            .collect();
        self.check(unexpected.is_empty(), || {
            format!("{}'s /sync {why} brought {unexpected:?}", w.account.user_id)
        });
    }

    /// `users_to_send_full_presence_to.presence_stream_id` of `of`; `None` without `psql` or
    /// without a row.
    fn full_presence_mark(&self, of: &Account) -> Option<i64> {
        let sql = format!(
            "SELECT presence_stream_id FROM users_to_send_full_presence_to WHERE user_id = '{}'",
            of.user_id.replace('\'', "''")
        );
        self.d.psql(&sql)?.trim().parse().ok()
    }

    /// The highest `presence_federation` token Presenced serves, and whether a row
    /// `[destination, user]` is among those after `after`.
    pub(super) async fn federation_rows(
        &self,
        after: u64,
        destination: &str,
        user: &Account,
    ) -> (u64, bool) {
        let url = self.replication(&format!(
            "get_repl_stream_updates/presence_federation/{}?from_token={after}&upto_token=1000000000",
            txn_id()
        ));
        let auth = self.replication_auth();
        let (status, data) = self.call(Method::GET, &url, Some(&auth), None).await;
        self.check(status == StatusCode::OK, || {
            format!("{url}: {status} {data}")
        });
        let rows = data["updates"].as_array().cloned().unwrap_or_default();
        let found = rows.iter().any(|r| {
            r[1][0].as_str() == Some(destination) && r[1][1].as_str() == Some(user.user_id.as_str())
        });
        let top = rows
            .iter()
            .filter_map(|r| r[0].as_u64())
            .max()
            .unwrap_or(after);
        (top, found)
    }
}

/// Alice (online, with a status) and Carol (offline) share rooms with Bob, who is caught up.
/// An admin calls `send_local_online_presence_to([bob])` on Presenced's client listener: Bob's
/// next incremental `/sync` on the worker gives Alice's presence again although nothing
/// changed, not Carol's (offline users are left out of the snapshot), and the one after it
/// nothing (the snapshot comes once). Bob, whose state Presenced moved to the tip of the
/// stream, keeps his status message. A non-admin is refused.
#[tokio::test]
async fn send_local_online_presence_to_on_the_admin_api_gives_one_full_snapshot() {
    let Some(s) = Scenario::start(
        "send_local_online_presence_to_on_the_admin_api_gives_one_full_snapshot",
        "fullsnap",
    )
    .await
    else {
        return;
    };
    let admin = s.register_admin("admin").await;
    let (alice, bob, carol) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    );
    s.share_room(&alice, &bob).await;
    s.share_room(&carol, &bob).await;
    let worker = s.d.worker_url();
    let mut w = s.watch(&bob).await;
    let alice_msg = format!("alice here {}", run_id());
    s.put_presence(
        worker,
        &alice,
        json!({"presence": "online", "status_msg": alice_msg}),
    )
    .await;
    s.put_presence(worker, &carol, json!({"presence": "offline"}))
        .await;
    s.wait_for(&mut w, &alice, &json!({"presence": "online"}), SEEN_WITHIN)
        .await;
    s.put_presence(
        worker,
        &bob,
        json!({"presence": "online", "status_msg": "bob's own status"}),
    )
    .await;
    s.poll_until_of(&mut w, &bob, SEEN_WITHIN).await;
    s.quiet(&mut w, &[&alice], "with nothing changed").await;
    let bob_id = s.stream_id_of(&bob).await;

    let body = json!({"users": [bob.user_id]});
    let (status, data) = s
        .admin_call(&bob, "send_local_online_presence_to", &body)
        .await;
    s.check(status == StatusCode::FORBIDDEN, || {
        format!("a non-admin's call answered {status} {data}, want 403")
    });
    let (status, data) = s
        .admin_call(&admin, "send_local_online_presence_to", &body)
        .await;
    s.check(status == StatusCode::OK, || {
        format!("the admin's call answered {status} {data}")
    });

    let events = s.poll_until_of(&mut w, &alice, SEEN_WITHIN).await;
    let of_alice: Vec<&Value> = events
        .iter()
        .filter(|e| e["sender"] == alice.user_id.as_str())
        .map(|e| &e["content"])
        .collect();
    s.check(
        of_alice
            .iter()
            .any(|c| c["presence"] == "online" && c["status_msg"] == alice_msg.as_str()),
        || format!("the snapshot's presence of alice: {of_alice:?}"),
    );
    s.check(
        !events.iter().any(|e| e["sender"] == carol.user_id.as_str()),
        || format!("the snapshot holds offline carol: {events:?}"),
    );
    s.quiet(&mut w, &[&alice, &carol], "after the snapshot")
        .await;

    // The mark is at or before the position Bob's state was moved to.
    if let (Some(before), Some(after), Some(mark)) = (
        bob_id,
        s.stream_id_of(&bob).await,
        s.full_presence_mark(&bob),
    ) {
        s.check(after > before && mark < after && mark >= before, || {
            format!(
                "bob's presence_stream id {before} -> {after}, \
                 users_to_send_full_presence_to mark {mark}"
            )
        });
    }
    s.check_row(&bob, "online", "bob's own status").await;
    s.check_row(&alice, "online", &alice_msg).await;
    s.finish().await;
}

/// `set_presence_for_users` on the admin API: the forced state reaches a room-mate's `/sync`
/// on the worker and Synapse's table; an unknown presence value is 400.
#[tokio::test]
async fn set_presence_for_users_on_the_admin_api_reaches_the_worker() {
    let Some(s) = Scenario::start(
        "set_presence_for_users_on_the_admin_api_reaches_the_worker",
        "forced",
    )
    .await
    else {
        return;
    };
    let admin = s.register_admin("admin").await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.share_room(&alice, &bob).await;
    let mut w = s.watch(&bob).await;

    let (status, data) = s
        .admin_call(
            &admin,
            "set_presence_for_users",
            &json!({"users": {alice.user_id.as_str(): {"presence": "sleeping"}}}),
        )
        .await;
    s.check(
        status == StatusCode::BAD_REQUEST && data["errcode"] == "M_INVALID_PARAM",
        || format!("an unknown presence answered {status} {data}"),
    );
    let msg = format!("set by the server {}", run_id());
    let (status, data) = s
        .admin_call(
            &admin,
            "set_presence_for_users",
            &json!({"users": {alice.user_id.as_str(): {"presence": "unavailable", "status_msg": msg}}}),
        )
        .await;
    s.check(status == StatusCode::OK, || format!("{status} {data}"));
    s.wait_for(
        &mut w,
        &alice,
        &json!({"presence": "unavailable", "status_msg": msg}),
        SEEN_WITHIN,
    )
    .await;
    s.check_row(&alice, "unavailable", &msg).await;
    s.finish().await;
}

/// A Python module hosted in Presenced (`announcer.AnnouncerModule`, started by a trigger
/// file) calls `set_presence_for_users` for Carol, then `send_local_online_presence_to` for
/// Bob (local) and a remote user the router sends everyone's presence to: Bob's `/sync` on
/// the worker shows Carol's forced state and Alice's unchanged presence again (the
/// snapshot), and the remote user's server is asked for Alice's presence on
/// `presence_federation` although she did not change.
#[tokio::test]
async fn a_python_module_in_presenced_calls_the_writer_only_module_api() {
    const TEST: &str = "a_python_module_in_presenced_calls_the_writer_only_module_api";
    let run = run_id();
    // The users are registered after Presenced starts, so their IDs are fixed up front.
    let Some(server) = deployment_server_name(TEST) else {
        return;
    };
    let user = |role: &str| format!("@{role}-pymod-{run}:{server}");
    let (alice_id, bob_id, carol_id) = (user("alice"), user("bob"), user("carol"));
    let trigger = std::env::temp_dir().join(format!("presenced-announce-{run}"));
    let _ = std::fs::remove_file(&trigger);
    let remote = "@far-watcher:remote.invalid";
    let msg = format!("set by a module {run}");
    let Some(s) = Scenario::start_with(TEST, "pymod", |d| {
        let file = d.dir().join(format!("modules-{run}.yaml"));
        let config = json!({
            "modules": [
                {"module": "deployment_modules.InternalsSpamChecker", "config": {}},
                {"module": "announcer.AnnouncerModule", "config": {
                    "announce": [[bob_id, remote]],
                    "set_presence": {carol_id.as_str(): ["online", msg]},
                    "after_file": trigger.to_string_lossy(),
                }},
            ],
        });
        // JSON is YAML.
        std::fs::write(&file, config.to_string()).unwrap();
        vec!["-c".to_owned(), file.to_string_lossy().into_owned()]
    })
    .await
    else {
        return;
    };
    let (alice, bob, carol) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    );
    s.check(
        [&alice.user_id, &bob.user_id, &carol.user_id] == [&alice_id, &bob_id, &carol_id],
        || format!("registered {alice:?} {bob:?} {carol:?}"),
    );
    s.share_room(&alice, &bob).await;
    s.share_room(&carol, &bob).await;
    let mut w = s.watch(&bob).await;
    s.put_presence(s.d.worker_url(), &alice, json!({"presence": "unavailable"}))
        .await;
    s.wait_for(
        &mut w,
        &alice,
        &json!({"presence": "unavailable"}),
        SEEN_WITHIN,
    )
    .await;
    s.quiet(&mut w, &[&alice], "with nothing changed").await;
    let (from, _) = s.federation_rows(0, "remote.invalid", &alice).await;

    std::fs::write(&trigger, b"go").unwrap();
    let t = Instant::now();
    let (mut forced, mut snapshot) = (false, false);
    while !(forced && snapshot) {
        for e in s.poll(&mut w).await {
            let c = &e["content"];
            if e["sender"] == carol.user_id.as_str()
                && c["presence"] == "online"
                && c["status_msg"] == msg.as_str()
            {
                forced = true;
            }
            if e["sender"] == alice.user_id.as_str() && c["presence"] == "unavailable" {
                snapshot = true;
            }
        }
        if t.elapsed() > SEEN_WITHIN {
            s.fail(&format!(
                "after the module ran, bob's /sync showed carol's forced state: {forced}, \
                 alice again in a snapshot: {snapshot}"
            ));
        }
    }
    let t = Instant::now();
    while !s.federation_rows(from, "remote.invalid", &alice).await.1 {
        if t.elapsed() > SEEN_WITHIN {
            s.fail(&format!(
                "no presence_federation row [remote.invalid, {}] after token {from} once the \
                 module ran",
                alice.user_id
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(&trigger);
    if s.d.psql("SELECT 1").is_some() {
        s.check(s.full_presence_mark(&bob).is_some(), || {
            format!("no users_to_send_full_presence_to row for {}", bob.user_id)
        });
    }
    s.check_row(&carol, "online", &msg).await;
    s.check_row(&alice, "unavailable", "").await;
    s.finish().await;
}

/// The deployment's server name (from its routed watcher's ID), or `None` when skipped.
fn deployment_server_name(test: &str) -> Option<String> {
    let d = super::deployment(test)?;
    let watcher = d.var("SYNAPSE_ROUTED_WATCHER");
    watcher.split_once(':').map(|(_, server)| server.to_owned())
}
