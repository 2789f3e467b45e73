//! Who is in which room, who watches, and how many watchers each user's updates should reach.

use crate::{
    BenchError,
    world::{World, WorldConfig},
};

/// How the users are put into rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoomsMode {
    /// Every user (and every room watcher) in one room: the reference homeserver's own
    /// benchmark.
    One,
    /// Zipf-sized rooms, as the engine benchmark builds them (a few large rooms, a long tail
    /// of small ones); room watchers are drawn at random among the users.
    Zipf,
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutConfig {
    /// Users who update their presence.
    pub users: usize,
    /// How many of them also keep a `/sync` open.
    pub room_watchers: usize,
    /// Extra users, in no room, who keep a `/sync` open and receive every update through the
    /// router's `always_send_to_users`.
    pub router_watchers: usize,
    /// Room layout.
    pub mode: RoomsMode,
    /// Mean rooms per user (`Zipf` only).
    pub rooms_per_user: f64,
    /// Largest room (`Zipf` only; capped at a tenth of the users).
    pub max_room: usize,
    /// Seed of the layout.
    pub seed: u64,
}

/// The built layout. Users are indices `0..users`; the first member of a room creates it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Room members, creator first.
    pub rooms: Vec<Vec<u32>>,
    /// Users (indices) who keep a `/sync` open as room members.
    pub room_watchers: Vec<u32>,
    /// Number of router watchers.
    pub router_watchers: usize,
    /// Per user: how many watchers (room and router) should see each of their updates.
    pub visible: Vec<u32>,
}

impl Layout {
    /// Builds the layout described by `config`.
    pub fn build(config: &LayoutConfig) -> Result<Self, BenchError> {
        let n = config.users;
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(BenchError::InvalidArgs(
                "--users must be in 1..2^31".to_owned(),
            ));
        }
        if config.room_watchers > n {
            return Err(BenchError::InvalidArgs(
                "--watchers cannot exceed --users".to_owned(),
            ));
        }
        let (rooms, room_watchers) = match config.mode {
            RoomsMode::One => {
                let members: Vec<u32> = (0..n as u32).collect();
                let watchers = (0..config.room_watchers as u32).collect();
                (vec![members], watchers)
            }
            RoomsMode::Zipf => {
                let world = World::generate(&WorldConfig {
                    users: n,
                    rooms_per_user: config.rooms_per_user,
                    max_room: config.max_room,
                    online_fraction: (config.room_watchers.max(1) as f64 / n as f64).min(1.0),
                    all_fraction: 0.0,
                    seed: config.seed,
                })?;
                let rooms = (0..world.room_count())
                    .map(|r| world.room(r).to_vec())
                    .collect();
                let online = world.online();
                let watchers = online[..config.room_watchers.min(online.len())].to_vec();
                (rooms, watchers)
            }
        };
        let visible = visibility(n, &rooms, &room_watchers, config.router_watchers);
        Ok(Self {
            rooms,
            room_watchers,
            router_watchers: config.router_watchers,
            visible,
        })
    }

    /// Total memberships.
    pub fn memberships(&self) -> usize {
        self.rooms.iter().map(Vec::len).sum()
    }
}

/// For every user, the watchers who share a room with them (each once, themselves included
/// when they watch) plus every router watcher.
fn visibility(n: usize, rooms: &[Vec<u32>], watchers: &[u32], router_watchers: usize) -> Vec<u32> {
    let mut user_rooms: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (r, members) in rooms.iter().enumerate() {
        for &m in members {
            user_rooms[m as usize].push(r as u32);
        }
    }
    let mut visible = vec![router_watchers as u32; n];
    // `stamp[u] == w + 1` once watcher number `w` has been counted for `u`.
    let mut stamp = vec![0u32; n];
    for (w, &watcher) in watchers.iter().enumerate() {
        let pass = w as u32 + 1;
        stamp[watcher as usize] = pass;
        visible[watcher as usize] += 1;
        for &r in &user_rooms[watcher as usize] {
            for &m in &rooms[r as usize] {
                if stamp[m as usize] != pass {
                    stamp[m as usize] = pass;
                    visible[m as usize] += 1;
                }
            }
        }
    }
    visible
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: RoomsMode) -> LayoutConfig {
        LayoutConfig {
            users: 2_000,
            room_watchers: 50,
            router_watchers: 2,
            mode,
            rooms_per_user: 2.0,
            max_room: 1_000,
            seed: 7,
        }
    }

    #[test]
    fn one_room_everyone_sees_every_watcher() {
        let layout = Layout::build(&config(RoomsMode::One)).unwrap();
        assert_eq!(layout.rooms.len(), 1);
        assert_eq!(layout.memberships(), 2_000);
        assert!(layout.visible.iter().all(|&v| v == 52));
    }

    #[test]
    fn zipf_visibility_matches_a_direct_count() {
        let layout = Layout::build(&config(RoomsMode::Zipf)).unwrap();
        assert_eq!(layout.room_watchers.len(), 50);
        let shares = |a: u32, b: u32| {
            a == b
                || layout
                    .rooms
                    .iter()
                    .any(|r| r.contains(&a) && r.contains(&b))
        };
        for u in (0..2_000u32).step_by(37) {
            let direct = layout
                .room_watchers
                .iter()
                .filter(|&&w| shares(u, w))
                .count() as u32
                + 2;
            assert_eq!(layout.visible[u as usize], direct, "user {u}");
        }
    }
}
