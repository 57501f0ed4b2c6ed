use std::process::ExitCode;

use clap::Parser;
use natshook::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::to_stderr(format_args!("natshook: cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::execute(cli))
}
