//! The `presenced` binary: everything is in the library (see `presenced::cli`).

/// jemalloc instead of the C allocator: every request builds and drops many small objects,
/// which glibc's malloc serves markedly slower (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    presenced::cli::main()
}
