//! Fuzz entry points (feature `fuzzing`): the identifier validation every untrusted ID goes
//! through, including the user IDs a Python router's answer names. The `fuzz/` workspace
//! calls these; the unit test below replays the committed corpus so CI runs them on stable.

use crate::{DeviceId, RoomId, ServerName, UserId};

/// `fuzz/fuzz_targets/ids.rs`: parses the input as each kind of ID; whatever parses must
/// round-trip and its parts must parse on their own.
pub fn ids(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(user) = UserId::parse(text) {
        assert_eq!(user.as_str(), text);
        let server = user.server_name();
        assert!(user.is_on(&server));
        let again = ServerName::parse(server.as_str());
        assert!(again.is_ok(), "server name of {text:?} does not parse");
        assert!(UserId::from_parts(user.localpart(), &server).is_ok_and(|u| u == user));
    }
    if let Ok(server) = ServerName::parse(text) {
        assert_eq!(server.as_str(), text);
    }
    if let Ok(room) = RoomId::parse(text) {
        assert_eq!(room.as_str(), text);
        let _ = room.server_name();
    }
    if let Ok(device) = DeviceId::parse(text) {
        assert_eq!(device.as_str(), text);
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
    fn ids_corpus_replays() {
        replay("ids", super::ids);
    }
}
