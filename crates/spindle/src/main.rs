//! The `spindle` binary: parses flags, sets up logging and the compute runtime, runs one command
//! and maps its outcome to an exit code (0 success, 2 usage error, 1 any other failure) with a
//! one-line cause on stderr.

mod cmd;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use spindle_model::Runtime;
use tracing_subscriber::EnvFilter;

use cmd::cli::{Cli, Command};

/// How a command failed: the two kinds map to different exit codes.
#[derive(Debug)]
enum Failure {
    /// The user asked for something this build cannot do as asked: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// A command whose issue has not landed: say so, exit 2, produce nothing.
fn init_logging(verbose: u8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        })
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    let runtime = Runtime::init(cli.device, cli.threads)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    tracing::info!(device = ?runtime.device, threads = runtime.threads, "runtime");
    match cli.command {
        Command::Convert(args) => cmd::convert::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Induce(args) => cmd::induce::run(args, runtime, cli.data_dir.as_deref()),
        Command::Prune(args) => cmd::prune::run(args, runtime, cli.data_dir.as_deref()),
        Command::Eval(args) => cmd::eval::run(args, runtime, cli.data_dir.as_deref()),
        Command::Data(cmd) => cmd::data::run(cmd, cli.data_dir.as_deref()),
    }
}

fn main() -> ExitCode {
    spindle::mem::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap's message is several lines (tips, usage); keep its first, clearest line.
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("spindle: error: {first} (see `spindle --help`)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("spindle: error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Other(err)) => {
            eprintln!("spindle: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
