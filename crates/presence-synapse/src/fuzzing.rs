//! Fuzz entry points (feature `fuzzing`): what arrives over Synapse's Redis replication, a
//! command line and the stream rows it carries. The `fuzz/` workspace calls these; the unit
//! test below replays the committed corpus so CI runs them on stable.

use crate::{
    Command,
    rows::{EventsRow, PresenceFederationRow, PresenceRow},
};

/// `fuzz/fuzz_targets/replication.rs`: each line of the input as a command (an `RDATA`'s
/// row decoded by its stream), and the whole input as each kind of row. A command must
/// survive being written out and read back; so must a presence row.
pub fn replication(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.split('\n') {
        let Ok(command) = Command::parse(line) else {
            continue;
        };
        let written = command.to_line();
        let reread = Command::parse(&written);
        assert!(
            reread.as_ref().is_ok_and(|c| c.to_line() == written),
            "{line:?} was written as {written:?}, read back as {reread:?}"
        );
        if let Command::Rdata { stream, row, .. } = &command {
            match stream.as_str() {
                "presence" => presence_row(row.get()),
                "presence_federation" => {
                    let _ = PresenceFederationRow::from_json(row.get());
                }
                "events" => {
                    let _ =
                        EventsRow::from_json(row.get()).map(|r| r.member_state_change().is_some());
                }
                _ => {}
            }
        }
    }
    presence_row(text);
    if let Ok(row) = PresenceFederationRow::from_json(text) {
        assert_eq!(PresenceFederationRow::from_json(&row.to_json()), Ok(row));
    }
    let _ = EventsRow::from_json(text);
}

fn presence_row(json: &str) {
    if let Ok(row) = PresenceRow::from_json(json) {
        let written = row.to_json();
        assert_eq!(
            PresenceRow::from_json(&written),
            Ok(row),
            "written as {written}"
        );
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
    fn replication_corpus_replays() {
        replay("replication", super::replication);
    }
}
