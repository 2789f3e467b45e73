//! The endpoints a general-purpose client calls at login besides `/sync`: `/capabilities`,
//! `/pushrules/` and `/profile/{userId}` (real binary).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{
    matrix::{Client, RequestBody, TestServer, User, q, test_config},
    support::Workspace,
};

const PREFIXES: [&str; 2] = ["/_matrix/client/v3", "/_matrix/client/r0"];

async fn get(c: &Client, path: &str, user: Option<&User>) -> (StatusCode, Value) {
    c.request(Method::GET, path, user.map(|u| u.token.as_str()), None)
        .await
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("")
}

#[tokio::test]
async fn capabilities_say_what_is_supported() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    for p in PREFIXES {
        let path = format!("{p}/capabilities");
        let (status, body) = get(&c, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(errcode(&body), "M_MISSING_TOKEN");

        let (status, body) = get(&c, &path, Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let caps = &body["capabilities"];
        for off in [
            "m.change_password",
            "m.set_displayname",
            "m.set_avatar_url",
            "m.3pid_changes",
            "m.get_login_token",
        ] {
            assert_eq!(caps[off]["enabled"], false, "{off}: {body}");
        }
        let versions = &caps["m.room_versions"];
        assert_eq!(versions["default"], "10", "{body}");
        let available = versions["available"].as_object().unwrap();
        assert_eq!(available.len(), 11, "{body}");
        assert!(available.values().all(|v| v == "stable"), "{body}");
    }
    // The default room version is the one rooms are created with, and every listed
    // version is accepted by createRoom.
    let room = c.create_room(&alice, false).await;
    let create = c
        .ok(
            Method::GET,
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.create/", q(&room)),
            Some(&alice.token),
            Value::Null,
        )
        .await;
    assert_eq!(create["room_version"], "10", "{create}");
    for version in ["1", "11"] {
        let data = c
            .ok(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&alice.token),
                serde_json::json!({"room_version": version}),
            )
            .await;
        assert!(data["room_id"].is_string(), "{data}");
    }
}

#[tokio::test]
async fn push_rules_are_the_server_defaults() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    for p in PREFIXES {
        let (status, body) = get(&c, &format!("{p}/pushrules/"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

        let (status, all) = get(&c, &format!("{p}/pushrules/"), Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        let global = &all["global"];
        for kind in ["override", "content", "room", "sender", "underride"] {
            assert!(global[kind].is_array(), "{kind}: {all}");
        }
        assert_eq!(global["override"][0]["rule_id"], ".m.rule.master");
        assert_eq!(global["override"][0]["enabled"], false);
        // The user's own ID and localpart are filled in.
        let invite = global["override"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule_id"] == ".m.rule.invite_for_me")
            .unwrap();
        assert_eq!(
            invite["conditions"][2]["pattern"], "@alice:test",
            "{invite}"
        );
        assert_eq!(global["content"][0]["pattern"], "alice", "{all}");
        assert!(!all.to_string().contains("pattern_type"), "{all}");

        let (status, scope) = get(&c, &format!("{p}/pushrules/global/"), Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{scope}");
        assert_eq!(&scope, global);

        let (status, list) = get(
            &c,
            &format!("{p}/pushrules/global/underride/"),
            Some(&alice),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(&list, &global["underride"]);

        let rule_path = format!("{p}/pushrules/global/override/.m.rule.master");
        let (status, rule) = get(&c, &rule_path, Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{rule}");
        assert_eq!(rule, global["override"][0]);
        let (status, enabled) = get(&c, &format!("{rule_path}/enabled"), Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{enabled}");
        assert_eq!(enabled, serde_json::json!({"enabled": false}));
        let (status, actions) = get(&c, &format!("{rule_path}/actions"), Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{actions}");
        assert_eq!(actions, serde_json::json!({"actions": []}));

        let (status, body) = get(
            &c,
            &format!("{p}/pushrules/global/override/.m.rule.nope"),
            Some(&alice),
        )
        .await;
        assert_eq!(
            (status, errcode(&body)),
            (StatusCode::NOT_FOUND, "M_NOT_FOUND")
        );
        // No such kind or attribute: no such endpoint.
        for path in [
            format!("{p}/pushrules/global/nope/"),
            format!("{rule_path}/nope"),
        ] {
            let (status, body) = get(&c, &path, Some(&alice)).await;
            assert_eq!(
                (status, errcode(&body)),
                (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
                "{path}: {body}"
            );
        }
        // Read-only: the rules cannot be changed.
        let (status, body) = c
            .request(
                Method::PUT,
                &format!("{rule_path}/enabled"),
                Some(&alice.token),
                Some(RequestBody::Json(serde_json::json!({"enabled": true}))),
            )
            .await;
        assert_eq!(
            (status, errcode(&body)),
            (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn profile_has_the_display_name() {
    let server = TestServer::start(Workspace::new(), &test_config("")).await;
    let c = server.client();
    let alice = c.register("alice", "pw", false).await.unwrap();
    for p in PREFIXES {
        // No token needed, as in the reference.
        let path = format!("{p}/profile/{}", q(&alice.user_id));
        let (status, body) = get(&c, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, serde_json::json!({"displayname": "alice"}));
        let (status, body) = get(&c, &format!("{path}/displayname"), Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, serde_json::json!({"displayname": "alice"}));
        let (status, body) = get(&c, &format!("{path}/avatar_url"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, serde_json::json!({}));

        for unknown in ["@bob:test", "@alice:elsewhere"] {
            for suffix in ["", "/displayname", "/avatar_url"] {
                let path = format!("{p}/profile/{}{suffix}", q(unknown));
                let (status, body) = get(&c, &path, Some(&alice)).await;
                assert_eq!(
                    (status, errcode(&body)),
                    (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
                    "{path}: {body}"
                );
            }
        }
        let (status, body) = get(&c, &format!("{p}/profile/{}", q("not-a-user")), None).await;
        assert_eq!(
            (status, errcode(&body)),
            (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            "{body}"
        );
    }
}
