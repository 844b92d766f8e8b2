//! The `testdrive` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use testdrive::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    version,
    about = "Try-before-you-buy sandboxes of your product, on the prospect's own data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// A settings file layered over config/default.toml (environment variables win).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A demo manifest to register under the demo vendor at start (repeatable).
        #[arg(long = "seed")]
        seeds: Vec<PathBuf>,
    },
    /// Print the OpenAPI document.
    Openapi,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TESTDRIVE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or journal keeps plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn serve(config: Config, seeds: Vec<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    // Everything the service writes (database, spool, keys) is its user's alone.
    testdrive::secrets::private_by_default();
    let data_dir = config.data_dir.clone();
    let running = testdrive::app::start(config).await?;
    if let Some(token) = &running.new_admin_token {
        println!(
            "testdrive: generated the admin token (stored in {}): {}",
            data_dir.join("admin-token").display(),
            token.expose()
        );
    }
    if !seeds.is_empty() {
        let key_file = data_dir.join("demo-vendor-key");
        let seeded = testdrive::seed::apply(
            &running.state.registry,
            running.state.store.as_ref(),
            &seeds,
            &key_file,
        )
        .await?;
        if let Some(key) = seeded.new_vendor_key {
            println!(
                "testdrive: created the vendor {:?}; its API key (stored in {}): {}",
                testdrive::seed::VENDOR_NAME,
                key_file.display(),
                key.expose()
            );
        }
        for slug in seeded.registered {
            println!("testdrive: registered the demo {slug}");
        }
    }
    println!(
        "testdrive: listening on http://{} — demos at /, operators at /ops, vendors at /vendor",
        running.addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down; running sandboxes keep their deadlines");
    running.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            let doc = testdrive::http::openapi();
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("the document serialises")
            );
            ExitCode::SUCCESS
        }
        Command::Serve { config, seeds } => {
            let config = match Config::load(config.as_deref()) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("testdrive: {err}");
                    return ExitCode::from(2);
                }
            };
            init_logging(config.log_format);
            match serve(config, seeds).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("testdrive: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
