//! Presence over real federation: the deployment (Presenced as its presence writer) and the
//! harness's remote Synapse, a server of its own on loopback. Outbound sends go through
//! Synapse's federation sender on main, which follows what Presenced writes and asks for on
//! `presence_federation`; inbound EDUs reach Presenced through `fed_send_edu`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::{Account, Scenario, run_id};
use crate::matrix::q;

/// How long a change may take to cross: two servers' federation queues, on a busy machine.
const ACROSS_WITHIN: Duration = Duration::from_secs(45);

impl Scenario {
    /// Whether the deployment has the remote Synapse (not started with `--no-remote`); says
    /// so when it has not.
    fn has_remote(&self, test: &str) -> bool {
        let has = self.d.var("SYNAPSE_REMOTE") == "1";
        if !has {
            eprintln!("skipped synapse_writer::federation::{test}: the deployment has no remote");
        }
        has
    }

    /// The remote Synapse's client listener.
    fn remote_url(&self) -> &str {
        self.d.var("SYNAPSE_REMOTE_URL")
    }

    /// Registers `{role}-{tag}-{run}` on the remote Synapse.
    async fn register_remote(&self, role: &str) -> Account {
        let localpart = format!("{role}-{}-{}", self.tag, run_id());
        match self
            .try_register_at(self.remote_url(), &localpart, "pw-presenced-test", false)
            .await
        {
            Ok(account) => account,
            Err((status, data)) => self.fail(&format!(
                "registering {localpart} on the remote: {status} {data}"
            )),
        }
    }
}

/// The remote watcher Presenced's router sends everyone's presence to sees a deployment
/// user's presence and its update, although they share no room (Synapse's processes do not
/// route to it: only what Presenced asks for on `presence_federation` goes there); and the
/// deployment's routed watcher sees a remote user's presence, which the remote's router sends
/// it (inbound through main and `fed_send_edu`).
#[tokio::test]
async fn routed_presence_crosses_to_a_remote_server_and_back() {
    const TEST: &str = "routed_presence_crosses_to_a_remote_server_and_back";
    let run = run_id();
    let Some(s) = Scenario::start_with(TEST, "fedroute", |d| {
        d.presence_section(
            &format!("fedroute-{run}"),
            &[d.var("SYNAPSE_REMOTE_WATCHER")],
            None,
        )
    })
    .await
    else {
        return;
    };
    if !s.has_remote(TEST) {
        return s.finish().await;
    }
    let remote = s.remote_url().to_owned();
    let far_watcher = s
        .fixed_account(&remote, s.d.var("SYNAPSE_REMOTE_WATCHER"))
        .await;
    let near_watcher = s.routed_watcher().await;
    let alice = s.register("alice").await;
    let rbob = s.register_remote("rbob").await;
    let mut far = s.watch_at(&remote, &far_watcher).await;
    let mut near = s.watch(&near_watcher).await;

    for (state, msg) in [("online", "first"), ("unavailable", "second")] {
        let msg = format!("{msg} {}", run_id());
        s.put_presence(
            s.d.worker_url(),
            &alice,
            json!({"presence": state, "status_msg": msg}),
        )
        .await;
        let want = json!({"presence": state, "status_msg": msg});
        let (_, took) = s.wait_for(&mut far, &alice, &want, ACROSS_WITHIN).await;
        eprintln!(
            "the remote watcher saw alice {state} after {:.1}s",
            took.as_secs_f64()
        );
    }

    let msg = format!("from the remote {}", run_id());
    s.put_presence(
        &remote,
        &rbob,
        json!({"presence": "online", "status_msg": msg}),
    )
    .await;
    let want = json!({"presence": "online", "status_msg": msg});
    let (_, took) = s.wait_for(&mut near, &rbob, &want, ACROSS_WITHIN).await;
    eprintln!(
        "the deployment's routed watcher saw the remote user after {:.1}s",
        took.as_secs_f64()
    );
    s.finish().await;
}

/// A remote user joins a room of the deployment: the remote server is sent the presence of
/// the room's local member (Presenced follows the join on the `events` stream and asks for
/// the send on `presence_federation`). Then a local user who is online joins: the room's
/// remote server is sent their presence. Neither user changes presence after the join.
#[tokio::test]
async fn joins_send_presence_to_and_from_a_remote_server() {
    const TEST: &str = "joins_send_presence_to_and_from_a_remote_server";
    let Some(s) = Scenario::start(TEST, "fedjoin").await else {
        return;
    };
    if !s.has_remote(TEST) {
        return s.finish().await;
    }
    let remote = s.remote_url().to_owned();
    let (alice, dave) = (s.register("alice").await, s.register("dave").await);
    let rcarol = s.register_remote("rcarol").await;
    let alice_msg = format!("alice before the join {}", run_id());
    let dave_msg = format!("dave before his join {}", run_id());
    let main = s.d.main_url();
    let body = json!({"preset": "public_chat"});
    let url = format!("{main}/_matrix/client/v3/createRoom");
    let room = s.ok(Method::POST, &url, &alice, Some(&body)).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let mut w = s.watch_at(&remote, &rcarol).await;
    // Set just before each join: a user who neither syncs nor acts goes offline after
    // `sync_online_timeout`.
    s.put_presence(
        s.d.worker_url(),
        &alice,
        json!({"presence": "online", "status_msg": alice_msg}),
    )
    .await;
    let url = format!(
        "{remote}/_matrix/client/v3/join/{}?server_name={}",
        q(&room),
        q(s.d.var("SYNAPSE_SERVER_NAME"))
    );
    s.ok(Method::POST, &url, &rcarol, Some(&json!({}))).await;
    let want = json!({"presence": "online", "status_msg": alice_msg});
    let (_, took) = s.wait_for(&mut w, &alice, &want, ACROSS_WITHIN).await;
    eprintln!(
        "the joining remote user saw the room's member after {:.1}s",
        took.as_secs_f64()
    );

    s.put_presence(
        s.d.worker_url(),
        &dave,
        json!({"presence": "online", "status_msg": dave_msg}),
    )
    .await;
    let url = format!("{main}/_matrix/client/v3/join/{}", q(&room));
    s.ok(Method::POST, &url, &dave, Some(&json!({}))).await;
    let want = json!({"presence": "online", "status_msg": dave_msg});
    let (_, took) = s.wait_for(&mut w, &dave, &want, ACROSS_WITHIN).await;
    eprintln!(
        "the remote member saw the joining local user after {:.1}s",
        took.as_secs_f64()
    );
    s.finish().await;
}
