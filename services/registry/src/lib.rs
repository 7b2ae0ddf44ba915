//! Registry service: owns supervisees (people under community corrections), their orders,
//! supervision levels, township assignment and status, and publishes `supervisee.*` events.
//! It also registers the people prisons hand over, when they report in.
//!
//! Layers: `api` (gRPC handlers) → `request` (incoming protos → validated domain values) →
//! `domain` and `dates` (pure rules) and `store` (SQL), with `registration` the one path that registers
//! a person for the API and for the `handover` consumer alike; `response` and `events` are
//! what goes out, `sealing` keeps personal data encrypted at rest.

pub mod api;
pub mod dates;
pub mod domain;
pub mod enums;
pub mod events;
pub mod handover;
pub mod registration;
pub mod request;
pub mod response;
pub mod sealing;
pub mod store;

use std::sync::Arc;

use mesh_kit::{
    clock::{SharedClock, SystemClock},
    config::{self, CommonSettings, ConfigError, FieldKeys, Reader, Source},
    crypto::FieldCrypto,
    grpc,
    host::{Host, Served},
    keyring::KeyRing,
};
use mesh_proto::registry::registry_service_server::RegistryServiceServer;
use sqlx::migrate::Migrator;

/// The registry's own schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/registry");

/// Conventional gRPC port of the registry.
pub const DEFAULT_PORT: u16 = 50051;

/// Registry settings, read from the environment.
pub struct Settings {
    pub common: CommonSettings,
    /// Keys of personal fields at rest.
    pub field_keys: FieldKeys,
    /// The ring opening the report-in's personal fields sealed by the handover service
    /// (`MESH_HANDOVER_TRANSIT_KEYS`).
    pub transit: Arc<KeyRing>,
}

impl Settings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let common = CommonSettings::read(&mut reader, "registry", DEFAULT_PORT);
        let field_keys = FieldKeys::read(&mut reader);
        let transit = config::read_transit(&mut reader, field_keys.as_ref());
        reader.finish()?;
        match (common, field_keys, transit) {
            (Some(common), Some(field_keys), Some(transit)) => Ok(Self {
                common,
                field_keys,
                transit,
            }),
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// A built registry: database migrated, listener bound, ready to run.
pub type Application = Served<RegistryServiceServer<api::Registry>>;

/// Builds the service on the system clock: database migrated, listener bound.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    build_with_clock(settings, Arc::new(SystemClock)).await
}

/// Builds the service on `clock` (tests move time instead of sleeping).
pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Application> {
    let mut host = Host::build("registry", &settings.common, &MIGRATOR).await?;
    host.reseal(&settings.field_keys, sealing::SEALED_COLUMNS);
    let sealer = Arc::new(sealing::Sealer::new(FieldCrypto::new(
        settings.field_keys.ring,
        settings.field_keys.blind_index,
    )));
    let events = events::Events::new(settings.common.topics.registry.clone());
    let report_ins = handover::ReportInHandler {
        sealer: sealer.clone(),
        transit: settings.transit,
        events: events.clone(),
        clock: clock.clone(),
    };
    host.consume(report_ins, &[settings.common.topics.handover.as_str()])?;
    let api = api::Registry::new(host.changes(), host.cursors(), sealer, events, clock);
    let server = RegistryServiceServer::new(api)
        .max_decoding_message_size(grpc::MAX_REQUEST_BYTES)
        .max_encoding_message_size(grpc::MAX_RESPONSE_BYTES);
    Ok(Served::new(host, server))
}
