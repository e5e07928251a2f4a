//! `gitfleet`, the admin CLI. Everything lives in `gitfleet_cli::cli`.

use std::process::ExitCode;

use clap::Parser;
use gitfleet_cli::cli::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2.
    let args = Cli::parse();
    let mut stdout = std::io::stdout();
    match cli::run_with(args, &mut stdout, cli::stdout_is_terminal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_reported() {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
