//! The bare fan-out loops the engine is compared with: the simplest code that does the
//! engine's fan-out job over the same rooms, online users and update picks.
//!
//! - **Pairs**: for each update, for each room of the updater, append the update to the queue
//!   of every online member; every `All` user's queue gets every update; then each touched
//!   queue is read and emptied. No deduplication (a recipient sharing two rooms with the
//!   updater gets it twice), no state, no tokens, no routers.
//! - **Marks**: for each update, for each room of the updater, set every member's bit in a
//!   bitmap (what waking recipients costs at the very least).
//!
//! The engine does more (state machine, stream logs, routers, per-reader tokens and
//! deduplication); the ratio of its deliveries per second to these loops' rates says how much
//! that costs.

use std::{fmt, hint::black_box, time::Instant};

use crate::{engine_bench::pick_rng, world::World};

/// The baseline's counts and timings over the timed batches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BaselineReport {
    /// Timed batches.
    pub batches: u64,
    /// Updates in them.
    pub updates: u64,
    /// (recipient, update) pairs appended to queues.
    pub pairs: u64,
    /// Of the pairs, those for online room members (the rest are for `All` users).
    pub room_pairs: u64,
    /// Bits set by the marking loop.
    pub marks: u64,
    /// Seconds in the pairs loop.
    pub pair_secs: f64,
    /// Of those, seconds in the room part (before `All` users' pairs and the drain).
    pub room_secs: f64,
    /// Seconds in the marking loop.
    pub mark_secs: f64,
}

impl BaselineReport {
    /// Pairs appended per second.
    pub fn pairs_per_sec(&self) -> u64 {
        rate(self.pairs, self.pair_secs)
    }

    /// Room members' pairs appended per second of the room part.
    pub fn room_pairs_per_sec(&self) -> u64 {
        rate(self.room_pairs, self.room_secs)
    }

    /// Bits set per second.
    pub fn marks_per_sec(&self) -> u64 {
        rate(self.marks, self.mark_secs)
    }
}

fn rate(n: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (n as f64 / secs).round() as u64
    } else {
        0
    }
}

impl fmt::Display for BaselineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "baseline batches={} pairs_per_sec={} room_pairs_per_sec={} marks_per_sec={}",
            self.batches,
            self.pairs_per_sec(),
            self.room_pairs_per_sec(),
            self.marks_per_sec()
        )
    }
}

/// Runs `warmup` untimed and `batches` timed batches of `batch` updates, picked exactly as
/// the engine benchmark with the same seed picks them.
pub fn run(world: &World, batch: usize, warmup: u64, batches: u64, seed: u64) -> BaselineReport {
    let n = world.users();
    let (offsets, user_rooms) = world.user_rooms();
    let words = n.div_ceil(64);
    let mut online_bits = vec![0u64; words];
    for &u in world.online() {
        online_bits[u as usize / 64] |= 1 << (u % 64);
    }
    let all_users = &world.online()[..world.all_users()];
    let mut queues: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut touched: Vec<u32> = Vec::new();
    let mut marked = vec![0u64; words];
    let mut online = world.online().to_vec();
    let mut rng = pick_rng(seed);
    let mut report = BaselineReport {
        batches,
        ..BaselineReport::default()
    };
    for b in 0..warmup + batches {
        let picks = rng.choose_front(&mut online, batch).to_vec();

        let t = Instant::now();
        let mut pairs = 0u64;
        for &u in &picks {
            let u = u as usize;
            for &r in &user_rooms[offsets[u]..offsets[u + 1]] {
                for &m in world.room(r as usize) {
                    if online_bits[m as usize / 64] & (1 << (m % 64)) != 0 {
                        let q = &mut queues[m as usize];
                        if q.is_empty() {
                            touched.push(m);
                        }
                        q.push(u as u32);
                    }
                }
            }
        }
        let room_secs = t.elapsed().as_secs_f64();
        for &u in &picks {
            for &a in all_users {
                let q = &mut queues[a as usize];
                if q.is_empty() {
                    touched.push(a);
                }
                q.push(u);
            }
        }
        for &m in &touched {
            let q = &mut queues[m as usize];
            pairs += black_box(q.len()) as u64;
            q.clear();
        }
        touched.clear();
        let pair_secs = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut marks = 0u64;
        for &u in &picks {
            let u = u as usize;
            for &r in &user_rooms[offsets[u]..offsets[u + 1]] {
                let members = world.room(r as usize);
                for &m in members {
                    marked[m as usize / 64] |= 1 << (m % 64);
                }
                marks += members.len() as u64;
            }
        }
        black_box(&marked);
        marked.fill(0);
        let mark_secs = t.elapsed().as_secs_f64();

        if b >= warmup {
            report.updates += picks.len() as u64;
            report.pairs += pairs;
            report.room_pairs += pairs - (picks.len() * all_users.len()) as u64;
            report.room_secs += room_secs;
            report.marks += marks;
            report.pair_secs += pair_secs;
            report.mark_secs += mark_secs;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::WorldConfig;

    #[test]
    fn counts_every_online_member_of_every_room_and_all_users() {
        let world = World::generate(&WorldConfig::new(2_000)).unwrap();
        let report = run(&world, 10, 0, 1, 1);
        assert_eq!(report.updates, 10);
        // Recount the same picks by hand.
        let mut online = world.online().to_vec();
        let picks = pick_rng(1).choose_front(&mut online, 10).to_vec();
        let (offsets, rooms) = world.user_rooms();
        let is_online = |m: u32| world.online().contains(&m);
        let mut pairs = 0u64;
        let mut marks = 0u64;
        for &u in &picks {
            for &r in &rooms[offsets[u as usize]..offsets[u as usize + 1]] {
                let members = world.room(r as usize);
                marks += members.len() as u64;
                pairs += members.iter().filter(|&&m| is_online(m)).count() as u64;
            }
            pairs += world.all_users() as u64;
        }
        assert_eq!(report.pairs, pairs);
        assert_eq!(
            report.room_pairs,
            pairs - 10 * world.all_users() as u64,
            "all users' pairs counted apart"
        );
        assert_eq!(report.marks, marks);
        assert!(report.pairs > 0);
    }
}
