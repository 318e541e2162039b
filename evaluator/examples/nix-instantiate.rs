//! A stand-alone `nix-instantiate` built from the evaluator crate alone, for
//! fast iteration on the language tests (the `b3` binary offers the same
//! command line as `b3 instantiate`).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(b3_evaluator::nix_cli::run_args(
        std::env::args().skip(1).collect(),
    ))
}
