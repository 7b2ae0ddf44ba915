//! Handover service: owns release handovers (刑释人员衔接). A prison or detention centre
//! submits a release notice; the destination township office acknowledges it; the prison
//! confirms the release; the office records gate collection (必接必送) and the person's
//! report-in (报到). Every step publishes a `handover.*` event through the outbox, so that
//! risk-alert can watch the report-in deadline and no released person goes unreceived (漏管).

mod api;
pub mod domain;
mod events;
mod request;
mod response;
mod sealing;
mod store;

use std::{net::SocketAddr, sync::Arc};

use mesh_kit::{
    CancellationToken,
    clock::{SharedClock, SystemClock},
    config::{CommonSettings, ConfigError, Reader, Source},
    crypto::FieldCrypto,
    grpc,
    host::Host,
};
use mesh_proto::handover::handover_service_server::HandoverServiceServer;
use secrecy::{ExposeSecret, SecretBox};
use sqlx::{PgPool, migrate::Migrator};

use crate::domain::{DEFAULT_PAST_TOLERANCE_DAYS, Rules};

/// The handover service's own schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/handover");

/// Conventional gRPC port of the handover service.
pub const DEFAULT_PORT: u16 = 50053;

/// Longest tolerated lateness of a notice, in days (beyond that it is a data-entry error).
const MAX_PAST_TOLERANCE_DAYS: u32 = 30;
/// Handover settings, read from the environment.
pub struct Settings {
    pub common: CommonSettings,
    /// AES-256 key for personal fields at rest (`MESH_FIELD_ENCRYPTION_KEY`, base64).
    pub field_encryption_key: SecretBox<[u8; 32]>,
    /// HMAC key for the national-ID blind index and request fingerprints
    /// (`MESH_BLIND_INDEX_KEY`, base64).
    pub blind_index_key: SecretBox<[u8; 32]>,
    /// Domain rules: `MESH_HANDOVER_PAST_TOLERANCE_DAYS`. (Report-in deadlines are
    /// risk-alert's: it owns every deadline of the mesh.)
    pub rules: Rules,
}

impl Settings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let common = CommonSettings::read(&mut reader, "handover", DEFAULT_PORT);
        let field_encryption_key = reader.key_32("MESH_FIELD_ENCRYPTION_KEY");
        let blind_index_key = reader.key_32("MESH_BLIND_INDEX_KEY");
        if let (Some(a), Some(b)) = (&field_encryption_key, &blind_index_key)
            && a.expose_secret() == b.expose_secret()
        {
            reader.problem("MESH_FIELD_ENCRYPTION_KEY and MESH_BLIND_INDEX_KEY must differ");
        }
        let past_tolerance_days: u32 =
            reader.optional("MESH_HANDOVER_PAST_TOLERANCE_DAYS", DEFAULT_PAST_TOLERANCE_DAYS);
        if past_tolerance_days > MAX_PAST_TOLERANCE_DAYS {
            reader.problem(format!(
                "MESH_HANDOVER_PAST_TOLERANCE_DAYS must be at most {MAX_PAST_TOLERANCE_DAYS}, got {past_tolerance_days}"
            ));
        }
        reader.finish()?;
        match (common, field_encryption_key, blind_index_key) {
            (Some(common), Some(field_encryption_key), Some(blind_index_key)) => Ok(Self {
                common,
                field_encryption_key,
                blind_index_key,
                rules: Rules { past_tolerance_days },
            }),
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// A built handover service: database migrated, listener bound, ready to run.
pub struct Application {
    host: Host,
    api: api::Handovers,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let host = Host::build("handover", &settings.common, &MIGRATOR).await?;
        let sealer = sealing::Sealer::new(FieldCrypto::new(
            &settings.field_encryption_key,
            settings.blind_index_key,
        ));
        let api = api::Handovers::new(
            host.changes(),
            host.cursors(),
            sealer,
            clock,
            settings.common.topics.handover.clone(),
            settings.rules,
        );
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
        let service = HandoverServiceServer::new(self.api).max_decoding_message_size(grpc::MAX_REQUEST_BYTES);
        self.host.serve(service, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    fn base() -> Vec<(String, String)> {
        [
            ("MESH_DATABASE_URL", "postgres://postgres@127.0.0.1/mesh_handover"),
            ("MESH_KAFKA_BROKERS", "127.0.0.1:9092"),
            ("MESH_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("MESH_FIELD_ENCRYPTION_KEY", KEY_A),
            ("MESH_BLIND_INDEX_KEY", KEY_B),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        // Earlier entries win in `Source for Vec`, so overrides go first.
        let mut source: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        source.extend(base());
        source
    }

    #[test]
    fn defaults_follow_the_law() {
        let settings = Settings::from_source(&base())
            .map_err(|e| e.to_string())
            .expect("valid");
        assert_eq!(settings.common.grpc_addr.port(), DEFAULT_PORT);
        assert_eq!(settings.rules, Rules::default());
        assert_eq!(settings.rules.past_tolerance_days, 1);
    }

    #[test]
    fn rules_are_configurable_and_checked() {
        let settings = Settings::from_source(&with(&[("MESH_HANDOVER_PAST_TOLERANCE_DAYS", "3")]))
            .map_err(|e| e.to_string())
            .expect("valid");
        assert_eq!(settings.rules.past_tolerance_days, 3);

        let error = Settings::from_source(&with(&[
            ("MESH_HANDOVER_PAST_TOLERANCE_DAYS", "400"),
            ("MESH_BLIND_INDEX_KEY", KEY_A),
        ]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            error.contains("MESH_HANDOVER_PAST_TOLERANCE_DAYS must be at most 30"),
            "{error}"
        );
        assert!(error.contains("must differ"), "{error}");
    }
}
