use std::process::ExitCode;

use clap::Parser;
use natshook::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format, cli.command.default_log_level());
    cli::execute(cli)
}
