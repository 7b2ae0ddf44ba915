//! `mesh`: run the demo scenario or the benchmark against local infrastructure, generate
//! signing keys and mint a dev token, or list and replay the services' dead letters.

use clap::{Parser, Subcommand};
use mesh_kit::auth::{Caller, Role};

#[derive(Parser)]
#[command(
    name = "mesh",
    about = "Community-corrections monitoring mesh: operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The records services set aside as unusable: list them, replay them after a fix.
    Dlq {
        /// Database of each service to look at (comma separated or repeated); defaults to
        /// the service's own `MESH_DATABASE_URL`.
        #[arg(
            long = "database-url",
            env = "MESH_DATABASE_URL",
            hide_env_values = true,
            value_delimiter = ',',
            global = true
        )]
        database_urls: Vec<String>,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Start the services against the local broker and PostgreSQL and play the demo scenario.
    Demo,
    /// Measure the mesh end to end beside its ceilings (0 skips a stage); writes bench.json
    /// and bench.md under --out.
    Bench {
        /// Check-ins through the check-in service (and produced straight to risk-alert).
        #[arg(long, default_value_t = 20_000)]
        checkins: usize,
        /// Concurrent gRPC clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        offline_batches: usize,
        #[arg(long, default_value_t = 100)]
        offline_batch_size: usize,
        #[arg(long, default_value_t = 500)]
        supervisees: usize,
        #[arg(long, default_value_t = 200)]
        deadlines: usize,
        /// Supervisees seeded for the scale stage (e.g. 1000000; 0 skips it).
        #[arg(long, default_value_t = 0)]
        scale: usize,
        /// Deadlines passing in the same second in the scale stage.
        #[arg(long, default_value_t = 100_000)]
        wave: usize,
        /// Check-ins per second of churn while deadlines are measured at scale.
        #[arg(long, default_value_t = 200)]
        churn: u64,
        /// A run of seconds through every stage (overrides the sizes).
        #[arg(long)]
        smoke: bool,
        #[arg(long, default_value = "bench-results")]
        out: std::path::PathBuf,
    },
    /// Signing keys and the key set that trusts them.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a bearer token for a caller, signed with the identity provider's key
    /// (development only).
    Token {
        /// The identity provider's private key (`idp-….pem` from `mesh keys generate`).
        #[arg(long, env = "MESH_IDP_KEY_FILE")]
        key_file: std::path::PathBuf,
        /// The key's id in the key set; defaults to the key file's name without `.pem`.
        #[arg(long)]
        kid: Option<String>,
        #[arg(long)]
        role: Role,
        #[arg(long, default_value = "dev-user")]
        subject: String,
        #[arg(long)]
        township: Option<String>,
        #[arg(long)]
        county: Option<String>,
        #[arg(long)]
        prison: Option<String>,
        /// The services the token is for (comma separated; default all).
        #[arg(long, value_delimiter = ',')]
        audience: Vec<String>,
        /// Validity in hours (services accept at most `MESH_TOKEN_MAX_LIFETIME_SECS`).
        #[arg(long, default_value_t = 8)]
        hours: i64,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Writes new signing keys (the identity provider's, risk-alert's) as `<kid>.pem` and
    /// the key set trusting them as `jwks.json` into --dir.
    Generate {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists dead letters not yet replayed (with --all, every one).
    List {
        /// Only this service's dead letters.
        #[arg(long, default_value = "")]
        service: String,
        /// Also those replayed already.
        #[arg(long)]
        all: bool,
    },
    /// Asks the service's consumer to apply dead letter <ID> again (or, with --all, every
    /// one of --service), after the cause was fixed.
    Replay {
        /// The dead letter's id, as `mesh dlq list` prints it.
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// The service whose dead letter(s) to replay (needed with --all, or when one id is
        /// in several of the databases given).
        #[arg(long, default_value = "")]
        service: String,
        /// Every dead letter of --service not yet replayed.
        #[arg(long, requires = "service", conflicts_with = "id")]
        all: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo => mesh::demo::run(mesh::harness::Infra::from_env()).await,
        Command::Dlq {
            database_urls,
            command,
        } => {
            let output = match command {
                DlqCommand::List { service, all } => mesh::dlq::list(&database_urls, &service, all).await?,
                DlqCommand::Replay { id, service, all } => {
                    let what = match id {
                        Some(id) if !all => mesh::dlq::Replay::One { id, service },
                        _ => mesh::dlq::Replay::AllOf { service },
                    };
                    mesh::dlq::replay(&database_urls, &what).await?
                }
            };
            print!("{output}");
            if !output.ends_with('\n') {
                println!();
            }
            Ok(())
        }
        Command::Bench {
            checkins,
            clients,
            offline_batches,
            offline_batch_size,
            supervisees,
            deadlines,
            scale,
            wave,
            churn,
            smoke,
            out,
        } => {
            let options = if smoke {
                mesh::bench::Options::smoke(out)
            } else {
                mesh::bench::Options {
                    checkins,
                    clients,
                    offline_batches,
                    offline_batch_size: offline_batch_size.clamp(1, 500),
                    supervisees: supervisees.max(1),
                    deadlines,
                    scale,
                    wave,
                    churn,
                    out,
                }
            };
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            mesh::bench::run(mesh::harness::Infra::from_env(), options, command)
                .await
                .map(drop)
        }
        Command::Keys {
            command: KeysCommand::Generate { dir },
        } => {
            print!("{}", mesh::keys::generate(&dir)?);
            Ok(())
        }
        Command::Token {
            key_file,
            kid,
            role,
            subject,
            township,
            county,
            prison,
            audience,
            hours,
        } => {
            let county = county.or_else(|| township.as_ref().and_then(|t| t.get(..6)).map(str::to_owned));
            let caller = Caller {
                subject,
                role,
                township,
                county,
                prison,
            };
            let request = mesh::keys::TokenRequest {
                key_file,
                kid,
                caller,
                audiences: audience,
                hours,
            };
            println!("{}", mesh::keys::token(&request)?);
            Ok(())
        }
    }
}
