//! `presence-bench`: benchmarks of Presenced from the command line.
//!
//! `presence-bench engine --users N` builds a synthetic server and drives the presence engine
//! on one thread; see `presence_bench::engine_bench`. Its last stdout line is the summary.
//!
//! `presence-bench http --base-url URL --shared-secret S --users N ...` loads a running
//! homeserver over the client-server API; see `presence_bench::http_bench`.
//!
//! `presence-bench soak --server-bin PATH [--duration 20m]` runs the real server under mixed
//! load with restarts; see `presence_bench::soak_bench`.
//!
//! `presence-bench writer --replication-url URL ...` loads the presence writer of a Synapse
//! deployment; see `presence_bench::writer_bench` and `scripts/bench-synapse-writer.sh`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use presence_bench::{
    engine_bench::{self, EngineArgs},
    heap::{self, CountingAlloc},
    http_bench::{self, HttpArgs},
    soak_bench::{self, SoakArgs},
    writer_bench::{self, WriterArgs},
};

/// Counts live heap bytes so the engine benchmark can report memory per user.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Benchmarks of Presenced.
#[derive(Debug, Parser)]
#[command(name = "presence-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive the presence engine with a synthetic server on one thread.
    Engine(EngineArgs),
    /// Load a homeserver over the client-server API: presence updates against open syncs.
    Http(HttpArgs),
    /// Load the presence writer of a Synapse deployment: `presence_set_state` throughput and
    /// latency, and the time from a `PUT` on a sync worker to a room-mate's `/sync` there.
    Writer(WriterArgs),
    /// Run the real `presenced` under mixed load with periodic restarts (SIGTERM and SIGKILL
    /// in turn): its memory over time, and no acknowledged presence update lost.
    Soak(SoakArgs),
}

fn main() -> ExitCode {
    heap::activate();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Engine(args) => {
            engine_bench::main(args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Http(args) => http_bench::main(args, &mut std::io::stdout()),
        Command::Writer(args) => writer_bench::main(args, &mut std::io::stdout()),
        Command::Soak(args) => soak_bench::main(args, &mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presence-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
