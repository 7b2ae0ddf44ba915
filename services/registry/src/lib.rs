//! Registry service: owns supervisees (people under community corrections), their orders,
//! supervision levels, township assignment and status, and publishes `supervisee.*` events.
//! It also registers the people prisons hand over, when they report in.

pub mod domain;
pub mod handover;
pub mod service;

use std::{net::SocketAddr, sync::Arc};

use mesh_kit::{
    CancellationToken,
    auth::TokenKeys,
    clock::{SharedClock, SystemClock},
    config::{CommonSettings, ConfigError, Reader, Source},
    consumer::{ConsumerConfig, EventConsumer},
    crypto::FieldCrypto,
    db, grpc,
    outbox::{OutboxSignal, Relay, RelayConfig},
};
use mesh_proto::registry::registry_service_server::RegistryServiceServer;
use secrecy::{ExposeSecret, SecretBox};
use sqlx::{PgPool, migrate::Migrator};
use tokio::net::TcpListener;

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
    listener: TcpListener,
    pool: PgPool,
    registry: service::Registry,
    keys: TokenKeys,
    relay: Relay,
    consumer: EventConsumer<handover::ReportInHandler>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&settings.common, &MIGRATOR).await?;
        let crypto = Arc::new(FieldCrypto::new(
            &settings.field_encryption_key,
            settings.blind_index_key,
        ));
        let signal = OutboxSignal::default();
        let relay = Relay::new(
            pool.clone(),
            RelayConfig::from_settings(&settings.common, "registry"),
            signal.clone(),
        )?;
        let registry = service::Registry::new(
            pool.clone(),
            crypto,
            clock.clone(),
            signal,
            settings.common.topics.registry.clone(),
        );
        let consumer = EventConsumer::new(
            pool.clone(),
            handover::ReportInHandler {
                registry: registry.clone(),
                clock,
            },
            ConsumerConfig::from_settings(&settings.common, &[settings.common.topics.handover.as_str()]),
        )?;
        let listener = TcpListener::bind(settings.common.grpc_addr).await?;
        let keys = TokenKeys::new(&settings.common.jwt_secret);
        Ok(Self {
            listener,
            pool,
            registry,
            keys,
            relay,
            consumer,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown`, then drains calls and flushes the outbox.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let consumer = tokio::spawn(self.consumer.run(shutdown.clone()));
        let service = tonic::service::interceptor::InterceptedService::new(
            RegistryServiceServer::new(self.registry).max_decoding_message_size(grpc::MAX_REQUEST_BYTES),
            self.keys.interceptor(),
        );
        tracing::info!(addr = %self.listener.local_addr()?, "registry listening");
        let served = grpc::serve(self.listener, service, shutdown.clone()).await;
        shutdown.cancel();
        consumer.await?;
        relay.await?;
        self.pool.close().await;
        served
    }
}
