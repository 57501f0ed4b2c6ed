use std::process::ExitCode;

use natshook::cli;

fn main() -> ExitCode {
    let cli = cli::parse();
    cli::init_logging(cli.log_format, cli.command.default_log_level());
    cli::execute(cli)
}
