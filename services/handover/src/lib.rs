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

use std::sync::Arc;

use mesh_kit::{
    clock::{SharedClock, SystemClock},
    config::{self, CommonSettings, ConfigError, FieldKeys, Reader, Source},
    crypto::FieldCrypto,
    grpc,
    host::{Host, Served},
    keyring::KeyRing,
};
use mesh_proto::handover::handover_service_server::HandoverServiceServer;
use sqlx::migrate::Migrator;

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
    /// Keys of personal fields at rest.
    pub field_keys: FieldKeys,
    /// The ring sealing the report-in's personal fields for the registry
    /// (`MESH_HANDOVER_TRANSIT_KEYS`).
    pub transit: Arc<KeyRing>,
    /// Domain rules: `MESH_HANDOVER_PAST_TOLERANCE_DAYS`. (Report-in deadlines are
    /// risk-alert's: it owns every deadline of the mesh.)
    pub rules: Rules,
}

impl Settings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let common = CommonSettings::read(&mut reader, "handover", DEFAULT_PORT);
        let field_keys = FieldKeys::read(&mut reader);
        let transit = config::read_transit(&mut reader, field_keys.as_ref());
        let past_tolerance_days: u32 =
            reader.optional("MESH_HANDOVER_PAST_TOLERANCE_DAYS", DEFAULT_PAST_TOLERANCE_DAYS);
        if past_tolerance_days > MAX_PAST_TOLERANCE_DAYS {
            reader.problem(format!(
                "MESH_HANDOVER_PAST_TOLERANCE_DAYS must be at most {MAX_PAST_TOLERANCE_DAYS}, got {past_tolerance_days}"
            ));
        }
        reader.finish()?;
        match (common, field_keys, transit) {
            (Some(common), Some(field_keys), Some(transit)) => Ok(Self {
                common,
                field_keys,
                transit,
                rules: Rules { past_tolerance_days },
            }),
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// A built handover service: database migrated, listener bound, ready to run.
pub type Application = Served<HandoverServiceServer<api::Handovers>>;

/// Builds the service on the system clock: database migrated, listener bound.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    build_with_clock(settings, Arc::new(SystemClock)).await
}

/// Builds the service on `clock` (tests move time instead of sleeping).
pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Application> {
    let mut host = Host::build("handover", &settings.common, &MIGRATOR).await?;
    host.reseal(&settings.field_keys, sealing::SEALED_COLUMNS);
    let sealer = sealing::Sealer::new(
        FieldCrypto::new(settings.field_keys.ring, settings.field_keys.blind_index),
        settings.transit,
    );
    let api = api::Handovers::new(
        host.changes(),
        host.cursors(),
        sealer,
        clock,
        settings.common.topics.handover.clone(),
        settings.rules,
    );
    let server = HandoverServiceServer::new(api)
        .max_decoding_message_size(grpc::MAX_REQUEST_BYTES)
        .max_encoding_message_size(grpc::MAX_RESPONSE_BYTES);
    Ok(Served::new(host, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    const TRANSIT: &str = "t1:AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

    fn base() -> Vec<(String, String)> {
        [
            ("MESH_DATABASE_URL", "postgres://postgres@127.0.0.1/mesh_handover"),
            ("MESH_KAFKA_BROKERS", "127.0.0.1:9092"),
            ("MESH_JWKS_FILE", "/etc/mesh/jwks.json"),
            ("MESH_CURSOR_SECRET", "0123456789abcdef0123456789abcdef"),
            ("MESH_FIELD_ENCRYPTION_KEY", KEY_A),
            ("MESH_BLIND_INDEX_KEY", KEY_B),
            ("MESH_HANDOVER_TRANSIT_KEYS", TRANSIT),
            ("MESH_HANDOVER_TRANSIT_KEY_CURRENT", "t1"),
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
