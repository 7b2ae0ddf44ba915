//! Placement service: resettlement bases (安置帮教基地), their job openings and the placement
//! of people into them. Candidates are never typed in: they come from the registry's
//! `supervisee.*` events (supervisees marked as needing work) and the handover service's
//! `handover.*` events (released prisoners under resettlement, and every release's offence
//! category). Matching respects supervision — a supervisee only ever sees work inside the
//! county they may not leave without approval — and the employers' offence exclusions;
//! capacity is never overbooked. Publishes `placement.*` events.

pub mod api;
pub mod domain;
pub mod events;
pub mod projection;
pub mod request;
pub mod response;
pub mod store;

use std::sync::Arc;

use mesh_kit::{
    clock::{SharedClock, SystemClock},
    config::{CommonSettings, ConfigError, Reader, Source},
    grpc,
    host::{Host, Served},
    jurisdiction::Directory,
};
use mesh_proto::placement::placement_service_server::PlacementServiceServer;
use sqlx::migrate::Migrator;

use crate::{api::Api, projection::CandidateProjection};

/// The placement service's own schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/placement");

/// Conventional gRPC port of the placement service.
pub const DEFAULT_PORT: u16 = 50054;

/// Placement settings, read from the environment. The service needs nothing beyond the
/// common settings: it stores no field that needs encryption (the national ID in report-in
/// events is never read).
pub struct Settings {
    pub common: CommonSettings,
}

impl Settings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let common = CommonSettings::read(&mut reader, "placement", DEFAULT_PORT);
        reader.finish()?;
        let common = common.ok_or_else(|| ConfigError {
            problems: vec!["incomplete configuration".into()],
        })?;
        Ok(Self { common })
    }
}

/// A built placement service: database migrated, listener bound, projection subscribed.
pub type Application = Served<PlacementServiceServer<Api>>;

/// Builds the service on the system clock: database migrated, listener bound.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    build_with_clock(settings, Arc::new(SystemClock)).await
}

/// Builds the service on `clock` (tests move time instead of sleeping).
pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Application> {
    let mut host = Host::build("placement", &settings.common, &MIGRATOR).await?;
    let topics = &settings.common.topics;
    let projection = CandidateProjection {
        clock: clock.clone(),
        time_zone: Directory::get().time_zone,
    };
    host.consume(projection, &[topics.registry.as_str(), topics.handover.as_str()])?;
    let api = Api::new(&host, clock);
    let server = PlacementServiceServer::new(api)
        .max_decoding_message_size(grpc::MAX_REQUEST_BYTES)
        .max_encoding_message_size(grpc::MAX_RESPONSE_BYTES);
    Ok(Served::new(host, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let source = [
            (
                "MESH_DATABASE_URL",
                "postgres://postgres@127.0.0.1/mesh_placement",
            ),
            ("MESH_KAFKA_BROKERS", "127.0.0.1:9092"),
            ("MESH_JWKS_FILE", "/etc/mesh/jwks.json"),
            ("MESH_CURSOR_SECRET", "0123456789abcdef0123456789abcdef"),
        ];
        let settings = Settings::from_source(&source).expect("valid");
        assert_eq!(settings.common.grpc_addr.port(), DEFAULT_PORT);
        assert_eq!(settings.common.consumer_group, "placement");
        let message = Settings::from_source(&[("MESH_CURSOR_SECRET", "short")])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        for name in [
            "MESH_DATABASE_URL",
            "MESH_KAFKA_BROKERS",
            "MESH_CURSOR_SECRET",
            "MESH_JWKS_FILE",
        ] {
            assert!(message.contains(name), "{name} missing from {message}");
        }
    }
}
