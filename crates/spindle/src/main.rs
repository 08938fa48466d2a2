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
    /// Standard output was closed by its reader: exit 141 (as a SIGPIPE death), no message.
    Closed,
}

impl Failure {
    /// Standard output could not be written: a reader that went away (`| head -1`) ends the
    /// run quietly, as SIGPIPE would; anything else (a full disk behind `> /dev/full`) is an error.
    fn stdout(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Other(anyhow::Error::from(e).context("cannot write to standard output"))
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// Logging on stderr at the level `-v` flags ask for (`RUST_LOG` overrides).
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

/// Set by the signal handler: the main thread then prints nothing more (the handler exits).
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGINT, SIGTERM and SIGHUP: remove the partial output directories being written, say so in
/// one line, and exit 130 at once: `_exit`, because running the exit handlers would tear libtorch
/// down under the main thread's feet.
fn on_signals() {
    let installed = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        spindle_model::remove_partials();
        eprintln!("spindle: error: interrupted; partial outputs were removed");
        #[allow(unsafe_code)]
        // SAFETY: _exit ends the process without running any handler; nothing is shared.
        unsafe {
            libc::_exit(130)
        }
    });
    if let Err(e) = installed {
        tracing::warn!("cannot handle interruption signals ({e}); an interrupted run may leave a .spindle-partial-* folder");
    }
}

/// After an interruption the main thread may fail on a removed folder: it waits for the
/// handler's exit instead of printing a second error.
fn quiet_if_interrupted() {
    while INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::park_timeout(std::time::Duration::from_secs(1));
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let runtime = Runtime::init(cli.device, cli.threads).map_err(|e| Failure::Usage(e.to_string()))?;
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
            let mut lines = rendered.lines();
            let first = lines.next().unwrap_or("invalid arguments");
            let mut first = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            // "the following required arguments were not provided:" lists them indented below.
            if first.ends_with(':') {
                let listed: Vec<&str> = lines.take_while(|l| l.starts_with(' ')).map(str::trim).collect();
                first = format!("{first} {}", listed.join(", "));
            }
            eprintln!("spindle: error: {first} (see `spindle --help`)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    on_signals();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            quiet_if_interrupted();
            eprintln!("spindle: error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Closed) => ExitCode::from(141),
        Err(Failure::Other(err)) => {
            quiet_if_interrupted();
            eprintln!("spindle: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
