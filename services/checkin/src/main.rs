//! Check-in service binary: reads config (exit 64 on error), starts telemetry, runs the app.

use mesh_kit::config::{ProcessEnv, exit_on_error, load_config_file};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    exit_on_error(load_config_file());
    let settings = exit_on_error(checkin::Settings::from_source(&ProcessEnv));
    let _telemetry = mesh_kit::telemetry::init("checkin")?;
    let app = checkin::build(settings).await?;
    app.run_until_stopped(mesh_kit::grpc::shutdown_on_signal()).await
}
