//! `clinic-gateway`: `serve` runs a node, `demo` runs one with an in-process sandbox, `keygen`
//! makes an API key for the config file, `templates submit` sends the template library to a
//! clinic's WABA.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clinic_gateway::app::Application;
use clinic_gateway::config::Settings;
use clinic_gateway::template_submit::{self, SubmitRequest};
use clinic_gateway::{demo, telemetry, tenants};

/// mimalloc instead of glibc malloc: allocation and freeing were about a quarter of the gateway's
/// CPU samples under load (BENCHMARKS.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "clinic-gateway",
    version,
    about = "WhatsApp gateway for clinics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: API, webhooks and dispatchers (JSON logs).
    Serve {
        /// TOML file layered over the embedded defaults (environment variables override both).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo: memory store, in-process Meta sandbox, one seeded clinic.
    Demo {
        /// Port for the gateway's HTTP API (0 = any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Print a new random API key and the SHA-256 to put in a clinic's `api_key_sha256`.
    Keygen,
    /// Manage the template library on Meta.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Create every library template (or some languages) on a configured clinic's WABA.
    /// Templates the WABA already has are reported and left alone. Exits non-zero if any failed.
    Submit {
        /// Clinic id from the configuration's [[clinics]].
        #[arg(long)]
        clinic: String,
        /// TOML file layered over the embedded defaults (environment variables override both).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this language (Meta code, e.g. hi); repeat for several. Default: all.
        #[arg(long = "language")]
        languages: Vec<String>,
        /// Show what would be created; create nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { config } => {
            telemetry::init(true);
            let settings = Settings::load(config.as_deref()).context("loading configuration")?;
            let app = Application::build(settings)
                .await
                .context("starting the gateway")?;
            app.run_until_stopped()
                .await
                .context("running the gateway")?;
        }
        Command::Demo { port } => {
            telemetry::init(false);
            demo::run(port).await.context("running the demo")?;
        }
        Command::Templates {
            command:
                TemplatesCommand::Submit {
                    clinic,
                    config,
                    languages,
                    dry_run,
                },
        } => {
            let settings = Settings::load(config.as_deref()).context("loading configuration")?;
            let request = SubmitRequest {
                clinic,
                languages,
                dry_run,
            };
            let report = template_submit::run(&settings, &request)
                .await
                .context("submitting templates")?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            for line in &report.lines {
                println!("{line}");
            }
            println!("{}", report.summary());
            if report.failed() > 0 {
                anyhow::bail!(
                    "{} of {} templates failed",
                    report.failed(),
                    report.lines.len()
                );
            }
        }
        Command::Keygen => {
            let key = tenants::generate_api_key();
            println!("api key (shown once): {key}");
            println!("api_key_sha256 = \"{}\"", tenants::hash_api_key(&key));
        }
    }
    Ok(())
}
