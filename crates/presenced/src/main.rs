//! The `presenced` binary: everything is in the library (see `presenced::cli`).

fn main() -> std::process::ExitCode {
    presenced::cli::main()
}
