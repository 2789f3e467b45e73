//! The synthetic server the benchmarks run on: users, rooms with Zipf-like sizes, and which
//! users are online and which are the router's `All` users.
//!
//! Room sizes follow `size(rank) = max_room / rank^s`, floored at two members, with the
//! exponent `s` solved so that the sizes add up to `users × rooms_per_user` memberships just as
//! they reach the floor: a few very large rooms, a long tail of small ones, and no artificial
//! pile of minimum-size rooms. Members are drawn uniformly at random without repeats, so a
//! user's number of rooms is roughly Poisson around the mean. Everything is a function of the
//! seed.

use crate::{BenchError, rng::Rng};

/// The smallest room the size law produces: a room of two is a direct message.
pub const MIN_ROOM: usize = 2;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldConfig {
    /// Users on the server.
    pub users: usize,
    /// Mean number of rooms per user.
    pub rooms_per_user: f64,
    /// Members of the largest room, before scaling down for small servers.
    pub max_room: usize,
    /// Share of users online and syncing.
    pub online_fraction: f64,
    /// Share of users for whom the router answers `All` (always online and syncing).
    pub all_fraction: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl WorldConfig {
    /// The benchmark's defaults for `users` users.
    pub fn new(users: usize) -> Self {
        Self {
            users,
            rooms_per_user: 5.0,
            max_room: 20_000,
            online_fraction: 0.1,
            all_fraction: 0.001,
            seed: 1,
        }
    }

    /// The largest room actually used: `max_room`, capped at a tenth of the users so that
    /// small smoke sizes still have a realistic spread of rooms.
    pub fn effective_max_room(&self) -> usize {
        self.max_room.min(self.users / 10).max(MIN_ROOM)
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |what: &str| Err(BenchError::InvalidArgs(what.to_owned()));
        if self.users < 10 {
            return bad("--users must be at least 10");
        }
        if self.users > u32::MAX as usize / 2 {
            return bad("--users is too large");
        }
        if !(self.rooms_per_user > 0.0 && self.rooms_per_user <= 1000.0) {
            return bad("--rooms-per-user must be in (0, 1000]");
        }
        if !(self.online_fraction > 0.0 && self.online_fraction <= 1.0) {
            return bad("--online-fraction must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.all_fraction) {
            return bad("--all-fraction must be in [0, 1]");
        }
        Ok(())
    }
}

/// A generated server. Rooms are listed by rank, largest first; member lists are sorted.
#[derive(Debug, Clone)]
pub struct World {
    users: usize,
    /// Room `r`'s members are `members[offsets[r]..offsets[r + 1]]`.
    offsets: Vec<usize>,
    members: Vec<u32>,
    online: Vec<u32>,
    all_users: usize,
    exponent: f64,
}

impl World {
    /// Generates the server described by `config`.
    pub fn generate(config: &WorldConfig) -> Result<Self, BenchError> {
        config.validate()?;
        let n = config.users;
        let mut rng = Rng::new(config.seed);
        let total = (n as f64 * config.rooms_per_user).round() as usize;
        let (sizes, exponent) = zipf_sizes(total, config.effective_max_room());

        let mut offsets = Vec::with_capacity(sizes.len() + 1);
        let mut members = Vec::with_capacity(total);
        // `seen[u] == r + 1` while filling room `r`: no duplicate members, no clearing.
        let mut seen = vec![0u32; n];
        offsets.push(0);
        for (r, &size) in sizes.iter().enumerate() {
            let pass = r as u32 + 1;
            let start = members.len();
            while members.len() - start < size {
                let u = rng.below(n);
                if seen[u] != pass {
                    seen[u] = pass;
                    members.push(u as u32);
                }
            }
            members[start..].sort_unstable();
            offsets.push(members.len());
        }

        let mut ids: Vec<u32> = (0..n as u32).collect();
        let online_count = ((n as f64 * config.online_fraction).round() as usize).clamp(1, n);
        let online = rng.choose_front(&mut ids, online_count).to_vec();
        let all_users = ((n as f64 * config.all_fraction).round() as usize).min(online.len());
        Ok(Self {
            users: n,
            offsets,
            members,
            online,
            all_users,
            exponent,
        })
    }

    /// Number of users; user `i` is `@u<i>:bench`.
    pub fn users(&self) -> usize {
        self.users
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The sorted members of room `r` (rank order: room 0 is the largest).
    pub fn room(&self, r: usize) -> &[u32] {
        &self.members[self.offsets[r]..self.offsets[r + 1]]
    }

    /// Total memberships.
    pub fn memberships(&self) -> usize {
        self.members.len()
    }

    /// The online users, in random order; the first [`World::all_users`] of them are the
    /// router's `All` users.
    pub fn online(&self) -> &[u32] {
        &self.online
    }

    /// How many of [`World::online`] (from the front) the router answers `All` for.
    pub fn all_users(&self) -> usize {
        self.all_users
    }

    /// The Zipf exponent that the room sizes were solved with.
    pub fn exponent(&self) -> f64 {
        self.exponent
    }

    /// Each user's rooms, ascending, as offsets into a flat list: user `u`'s rooms are
    /// `rooms[offsets[u]..offsets[u + 1]]`.
    pub fn user_rooms(&self) -> (Vec<usize>, Vec<u32>) {
        let mut counts = vec![0usize; self.users + 1];
        for &m in &self.members {
            counts[m as usize + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let offsets = counts.clone();
        let mut rooms = vec![0u32; self.members.len()];
        let mut fill = counts;
        for r in 0..self.room_count() {
            for &m in self.room(r) {
                rooms[fill[m as usize]] = r as u32;
                fill[m as usize] += 1;
            }
        }
        (offsets, rooms)
    }
}

/// Room sizes, largest first, adding up to exactly `total`, and the exponent used.
pub fn zipf_sizes(total: usize, max_room: usize) -> (Vec<usize>, f64) {
    let max_room = max_room.max(MIN_ROOM);
    // The memberships the size law yields before hitting the floor, capped at `total + 1`
    // (all that the search needs to know). Decreasing in `s`.
    let law_total = |s: f64| -> usize {
        let mut sum = 0usize;
        for rank in 1.. {
            let size = (max_room as f64 / f64::powf(rank as f64, s)).floor() as usize;
            if size < MIN_ROOM || sum > total {
                break;
            }
            sum += size;
        }
        sum
    };
    let (mut lo, mut hi) = (0.05f64, 8.0f64);
    if law_total(hi) >= total {
        lo = hi;
    } else {
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if law_total(mid) >= total {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let s = lo;
    let mut sizes = Vec::new();
    let mut sum = 0usize;
    let mut rank = 1usize;
    while sum < total {
        let law = (max_room as f64 / f64::powf(rank as f64, s)).floor() as usize;
        let size = law.max(MIN_ROOM).min(total - sum);
        sizes.push(size);
        sum += size;
        rank += 1;
    }
    (sizes, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_add_up_and_follow_the_law() {
        let (sizes, s) = zipf_sizes(500_000, 10_000);
        assert_eq!(sizes.iter().sum::<usize>(), 500_000);
        assert_eq!(sizes[0], 10_000);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "largest first");
        assert!(s > 0.3 && s < 1.0, "exponent {s}");
        // Few rooms at the floor: the exponent was solved so the law reaches it at the end.
        let at_floor = sizes.iter().filter(|&&x| x <= MIN_ROOM).count();
        assert!(at_floor < sizes.len() / 2, "{at_floor} of {}", sizes.len());
    }

    #[test]
    fn tiny_totals_still_add_up() {
        let (sizes, _) = zipf_sizes(7, 2);
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        let (sizes, _) = zipf_sizes(5, 100);
        assert_eq!(sizes, [5]);
    }

    #[test]
    fn world_has_distinct_sorted_members_and_the_right_shares() {
        let cfg = WorldConfig::new(5_000);
        let w = World::generate(&cfg).unwrap();
        assert_eq!(w.memberships(), 25_000);
        assert_eq!(w.room(0).len(), 500, "largest room capped at users / 10");
        for r in 0..w.room_count() {
            let m = w.room(r);
            assert!(
                m.windows(2).all(|p| p[0] < p[1]),
                "room {r} sorted, no repeats"
            );
            assert!(m.iter().all(|&u| (u as usize) < 5_000));
        }
        assert_eq!(w.online().len(), 500);
        assert_eq!(w.all_users(), 5);
        let mut online = w.online().to_vec();
        online.sort_unstable();
        online.dedup();
        assert_eq!(online.len(), 500);

        let (offsets, rooms) = w.user_rooms();
        assert_eq!(rooms.len(), 25_000);
        let u = w.room(0)[0] as usize;
        let mine = &rooms[offsets[u]..offsets[u + 1]];
        assert!(mine.contains(&0));
        assert!(mine.windows(2).all(|p| p[0] < p[1]));

        let again = World::generate(&cfg).unwrap();
        assert_eq!(again.room(3), w.room(3), "deterministic for a seed");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let mut cfg = WorldConfig::new(5);
        assert!(World::generate(&cfg).is_err());
        cfg.users = 100;
        cfg.online_fraction = 0.0;
        assert!(World::generate(&cfg).is_err());
    }
}
