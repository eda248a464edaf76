//! `fieldvault`: the one binary. Every subcommand lives in `cli/` as `pub async fn run(...)`.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fieldvault: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the problem and the fix; never a backtrace or a secret.
            eprintln!("fieldvault: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
