//! Routers in the style of the reference homeserver's own presence router tests
//! (`tests/events/test_presence_router.py` in Synapse's repository, its
//! `PresenceRouterTestModule` and `LegacyPresenceRouterTestModule`): a router giving
//! configured users everybody's presence, and one calling
//! `send_local_online_presence_to` from a looping background call.

use std::time::Duration;

use presence_router::{InterestedUsers, ModuleApiError, ModuleCommand, PresenceRouter, UserId};
use serde_json::json;

use crate::support::{
    all_logs, api_with_commands, batch, load_legacy, load_module, logged, logged_now, positions,
    shared_host, uid,
};

const GOBBLER: &str = "@presence_gobbler:test";
const ONE: &str = "@other_user_one:test";
const TWO: &str = "@other_user_two:test";

async fn receives_all_presence(router: &dyn PresenceRouter) {
    // Synapse's `test_receiving_all_presence[_legacy]` (`tests/events/test_presence_router.py`): the gobbler shares no room with anybody and still receives every update,
    // its own included; the others receive nothing through the router.
    let b = batch(&[ONE, TWO, GOBBLER]);
    let answer = router.get_users_for_states(&b).await.unwrap();
    assert_eq!(
        positions(&answer),
        [(GOBBLER.to_owned(), vec![0, 1, 2])].into()
    );
    assert_eq!(
        router.get_interested_users(&uid(GOBBLER)).await.unwrap(),
        InterestedUsers::All
    );
    for user in [ONE, TWO] {
        assert_eq!(
            router.get_interested_users(&uid(user)).await.unwrap(),
            InterestedUsers::none()
        );
    }
}

#[tokio::test]
async fn receiving_all_presence_legacy() {
    let config = json!({"users_who_should_receive_all_presence": [GOBBLER]});
    receives_all_presence(&load_legacy("gobbler_router.GobblerRouterLegacy", config)).await;
}

#[tokio::test]
async fn receiving_all_presence() {
    let config = json!({"users_who_should_receive_all_presence": [GOBBLER]});
    receives_all_presence(&load_module("gobbler_router.GobblerRouterModule", config)).await;
}

#[test]
fn the_reference_test_routers_parse_config_still_asserts() {
    let err = shared_host()
        .load_module(
            "modules[3]",
            "gobbler_router.GobblerRouterModule",
            &json!({"users_who_should_receive_all_presence": "@a:test"}),
            &crate::support::api(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("modules[3].config: "), "{err}");
    assert!(err.contains("AssertionError: users_who_should_receive_all_presence must be a list"));
}

/// Waits for the next `send_local_online_presence_to` of the module.
async fn next_send(
    commands: &mut tokio::sync::mpsc::Receiver<ModuleCommand>,
) -> (
    Vec<UserId>,
    tokio::sync::oneshot::Sender<Result<(), ModuleApiError>>,
) {
    match tokio::time::timeout(Duration::from_secs(5), commands.recv()).await {
        Ok(Some(ModuleCommand::SendLocalOnlinePresenceTo { users, reply })) => (users, reply),
        Ok(Some(other)) => panic!("unexpected command {other:?}"),
        Ok(None) => panic!("the module API was dropped"),
        Err(_) => panic!("no send_local_online_presence_to within 5 s"),
    }
}

async fn announces_from_a_looping_call(form_legacy: bool) {
    // Synapse's `test_send_local_online_presence_to_with_module[_legacy]`: the module, not the test, calls send_local_online_presence_to: first for two
    // local gobblers, then for a remote user. The first attempt is refused by the server and
    // retried on a later tick; each answer reaches the module, which only then moves on.
    let g1 = "@presence_gobbler1:test";
    let g2 = "@presence_gobbler2:test";
    let far = "@far_away_person:island";
    let config = json!({
        "users_who_should_receive_all_presence": [g1, g2, far],
        "announce": [[g1, g2], [far]],
    });
    let (api, mut commands) = api_with_commands();
    let host = shared_host();
    let router = if form_legacy {
        host.load_legacy(
            "presence.presence_router",
            "announcer.Announcer",
            &config,
            &api,
        )
    } else {
        host.load_module("modules[0]", "announcer.AnnouncerModule", &config, &api)
    }
    .unwrap()
    .unwrap();

    let (users, reply) = next_send(&mut commands).await;
    assert_eq!(users, [uid(g1), uid(g2)]);
    reply.send(Err(ModuleApiError::NotWriter)).unwrap();
    let (users, reply) = next_send(&mut commands).await;
    assert_eq!(users, [uid(g1), uid(g2)], "the refused batch is retried");
    // The module logged the refusal through Python's `logging`.
    assert!(
        logged(&["announcer", "failed (this process does not write presence"]).await,
        "{}",
        all_logs()
    );
    reply.send(Ok(())).unwrap();
    let (users, reply) = next_send(&mut commands).await;
    assert_eq!(users, [uid(far)]);
    reply.send(Ok(())).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), commands.recv())
            .await
            .is_err(),
        "nothing more to announce"
    );

    // Routing works all along, the remote recipient included.
    let b = batch(&["@other_user:test"]);
    let answer = router.get_users_for_states(&b).await.unwrap();
    assert_eq!(answer.len(), 3);
    assert_eq!(
        router.get_interested_users(&uid(far)).await.unwrap(),
        InterestedUsers::All
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_local_online_presence_to_with_module_legacy() {
    announces_from_a_looping_call(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_local_online_presence_to_with_module() {
    announces_from_a_looping_call(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_router_stops_the_modules_looping_call() {
    let (api, mut commands) = api_with_commands();
    let config = json!({"announce": [["@a:test"]], "repeat": true});
    let router = shared_host()
        .load_module("modules[0]", "announcer.AnnouncerModule", &config, &api)
        .unwrap()
        .unwrap();
    for _ in 0..2 {
        let (users, reply) = next_send(&mut commands).await;
        assert_eq!(users, [uid("@a:test")]);
        reply.send(Ok(())).unwrap();
    }
    drop(router);
    // A tick may have fired before the router was unloaded: answer what came meanwhile.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(command) = commands.try_recv() {
        if let ModuleCommand::SendLocalOnlinePresenceTo { reply, .. } = command {
            let _ = reply.send(Ok(()));
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), commands.recv())
            .await
            .is_err(),
        "the looping call stopped"
    );
    // Nor does it tick without reaching the server: the module would log each refusal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !logged_now(&["announcing to ['@a:test'] failed"]),
        "{}",
        all_logs()
    );
}
