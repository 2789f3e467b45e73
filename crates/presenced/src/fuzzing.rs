//! Fuzz entry points (feature `fuzzing`): what clients and operators hand the server, request
//! bodies, `/sync` query strings with their filters, and the configuration file. The `fuzz/`
//! workspace calls these; the unit test below replays the committed corpus so CI runs them
//! on stable.

use std::sync::LazyLock;

use presence_router::UserId;
use serde_json::{Map, Value};

use crate::{
    Config,
    app::sync::{SyncFilter, SyncToken, inline_definition},
    http::{
        admin::SendBody,
        admin_rooms::MembershipBody,
        client::{
            account::{LoginBody, RegisterBody},
            filter::validate,
            rooms::{CreateRoomBody, InviteBody},
            sync::parse_query,
        },
        parse_json_body,
        replication::{BumpBody, EduBody, SetStateBody},
    },
    query::percent_decode,
};

/// `fuzz/fuzz_targets/client_body.rs`: the input as the body of each endpoint that reads
/// JSON, through the same parser the endpoints use; a stored filter goes through the checks
/// of `POST /user/{userId}/filter`.
pub fn client_body(data: &[u8]) {
    let _ = parse_json_body::<RegisterBody>(data);
    let _ = parse_json_body::<LoginBody>(data);
    let _ = parse_json_body::<CreateRoomBody>(data);
    let _ = parse_json_body::<InviteBody>(data);
    let _ = parse_json_body::<MembershipBody>(data);
    let _ = parse_json_body::<SendBody>(data);
    let _ = parse_json_body::<SetStateBody>(data);
    let _ = parse_json_body::<BumpBody>(data);
    let _ = parse_json_body::<EduBody>(data);
    if let Ok(filter) = parse_json_body::<Map<String, Value>>(data) {
        let _ = validate(&filter);
    }
}

static SYNCER: LazyLock<Option<UserId>> = LazyLock::new(|| UserId::parse("@fuzz:hs").ok());

/// `fuzz/fuzz_targets/sync_query.rs`: the input as a `/sync` query string: its parameters,
/// its token (which must round-trip) and an inline filter, applied to a user and a room.
pub fn sync_query(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(request) = parse_query(Some(raw)) else {
        return;
    };
    if let Some(since) = request.since {
        assert_eq!(SyncToken::parse(&since.render()), Some(since));
    }
    let Some(encoded) = request.filter else {
        return;
    };
    let Some(Ok(definition)) = inline_definition(&percent_decode(encoded)) else {
        return;
    };
    let Ok(filter) = SyncFilter::from_filter(&definition) else {
        return;
    };
    let _ = filter.heap_size();
    let _ = filter.presence.wants_presence();
    if let Some(user) = SYNCER.as_ref() {
        let _ = filter.presence.keeps(user);
    }
    let _ = filter.room.keeps("!room:hs");
}

/// `fuzz/fuzz_targets/config.rs`: the input as a configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_yaml(text);
    }
}

#[cfg(test)]
mod tests {
    /// Runs `target` on every file of `fuzz/corpus/<name>/`.
    fn replay(name: &str, target: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(name);
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            target(&std::fs::read(entry.unwrap().path()).unwrap());
            files += 1;
        }
        assert!(files > 0, "{} is empty", dir.display());
    }

    #[test]
    fn client_body_corpus_replays() {
        replay("client_body", super::client_body);
    }

    #[test]
    fn sync_query_corpus_replays() {
        replay("sync_query", super::sync_query);
    }

    #[test]
    fn config_corpus_replays() {
        replay("config", super::config);
    }
}
