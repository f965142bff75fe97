//! `clinic-gateway`: `serve` runs a node, `demo` runs one with an in-process sandbox, `keygen`
//! makes an API key for the config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clinic_gateway::app::Application;
use clinic_gateway::config::Settings;
use clinic_gateway::{demo, telemetry, tenants};

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
        Command::Keygen => {
            let key = tenants::generate_api_key();
            println!("api key (shown once): {key}");
            println!("api_key_sha256 = \"{}\"", tenants::hash_api_key(&key));
        }
    }
    Ok(())
}
