//! Registry service: owns supervisees (people under community corrections), their orders,
//! supervision levels, township assignment and status, and publishes `supervisee.*` events.
//! It also registers the people prisons hand over, when they report in.
//!
//! Layers: `api` (gRPC handlers) → `request` (incoming protos → validated domain values) →
//! `domain` (pure rules) and `store` (SQL), with `registration` the one path that registers
//! a person for the API and for the `handover` consumer alike; `response` and `events` are
//! what goes out, `sealing` keeps personal data encrypted at rest.

pub mod api;
pub mod domain;
pub mod enums;
pub mod events;
pub mod handover;
pub mod registration;
pub mod request;
pub mod response;
pub mod sealing;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

use mesh_kit::{
    CancellationToken,
    clock::{SharedClock, SystemClock},
    config::{CommonSettings, ConfigError, Reader, Source},
    grpc,
    host::Host,
};
use mesh_proto::registry::registry_service_server::RegistryServiceServer;
use secrecy::{ExposeSecret, SecretBox};
use sqlx::{PgPool, migrate::Migrator};

/// The registry's own schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/registry");

/// Conventional gRPC port of the registry.
pub const DEFAULT_PORT: u16 = 50051;

/// Registry settings, read from the environment.
pub struct Settings {
    pub common: CommonSettings,
    /// AES-256 key for personal fields at rest (`MESH_FIELD_ENCRYPTION_KEY`, base64).
    pub field_encryption_key: SecretBox<[u8; 32]>,
    /// HMAC key for the national-ID blind index (`MESH_BLIND_INDEX_KEY`, base64).
    pub blind_index_key: SecretBox<[u8; 32]>,
}

impl Settings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let common = CommonSettings::read(&mut reader, "registry", DEFAULT_PORT);
        let field_encryption_key = reader.key_32("MESH_FIELD_ENCRYPTION_KEY");
        let blind_index_key = reader.key_32("MESH_BLIND_INDEX_KEY");
        if let (Some(a), Some(b)) = (&field_encryption_key, &blind_index_key)
            && a.expose_secret() == b.expose_secret()
        {
            reader.problem("MESH_FIELD_ENCRYPTION_KEY and MESH_BLIND_INDEX_KEY must differ");
        }
        reader.finish()?;
        match (common, field_encryption_key, blind_index_key) {
            (Some(common), Some(field_encryption_key), Some(blind_index_key)) => Ok(Self {
                common,
                field_encryption_key,
                blind_index_key,
            }),
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// A built registry: database migrated, listener bound, ready to run.
pub struct Application {
    host: Host,
    api: api::Registry,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let mut host = Host::build("registry", &settings.common, &MIGRATOR).await?;
        let sealer = Arc::new(sealing::Sealer::new(
            &settings.field_encryption_key,
            settings.blind_index_key,
        ));
        let events = events::Events::new(settings.common.topics.registry.clone());
        let report_ins = handover::ReportInHandler {
            sealer: sealer.clone(),
            events: events.clone(),
            clock: clock.clone(),
        };
        host.consume(report_ins, &[settings.common.topics.handover.as_str()])?;
        let api = api::Registry::new(host.changes(), host.cursors(), sealer, events, clock);
        Ok(Self { host, api })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.local_addr()
    }

    pub fn pool(&self) -> &PgPool {
        self.host.pool()
    }

    /// Serves until `shutdown`, then drains calls and flushes the outbox.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let service = RegistryServiceServer::new(self.api).max_decoding_message_size(grpc::MAX_REQUEST_BYTES);
        self.host.serve(service, shutdown).await
    }
}
