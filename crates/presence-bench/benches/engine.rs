//! Criterion benchmarks of the engine's hot paths on a small synthetic server (20,000 users,
//! the `presence-bench engine` defaults otherwise): one update batch applied, routed and
//! finished; one sync read; `shares_room`.

// A benchmark whose fixture cannot be built has nothing to measure: failing loudly is right.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use presence_bench::{
    engine_bench::{Bench, EngineArgs},
    rng::Rng,
    world::World,
};

const USERS: usize = 20_000;
const BATCH: usize = 100;

fn engine(c: &mut Criterion) {
    let args = EngineArgs::new(USERS);
    let world = World::generate(&args.world_config()).unwrap();
    let mut bench = Bench::build(&world, BATCH, args.seed).unwrap();
    for _ in 0..3 {
        bench.step(BATCH);
    }

    c.bench_function("apply_route_finish_batch_100", |b| {
        b.iter(|| black_box(bench.write(BATCH)))
    });

    // Readers woken by one batch, each reading from the token it had before that batch.
    let before = bench.engine().current_token();
    let woken = bench.write(BATCH).wake;
    let mut next = 0;
    c.bench_function("sync_read_one_batch_behind", |b| {
        b.iter(|| {
            let reader = woken[next % woken.len()];
            next += 1;
            black_box(bench.read(reader, Some(before)))
        })
    });

    let mut rng = Rng::new(9);
    let online = world.online();
    c.bench_function("shares_room", |b| {
        b.iter(|| {
            let x = bench.user(online[rng.below(online.len())]);
            let y = bench.user(online[rng.below(online.len())]);
            black_box(bench.engine().shares_room(x, y))
        })
    });
}

criterion_group!(benches, engine);
criterion_main!(benches);
