//! Check-in service: records check-ins (proof of contact with a supervisee) from officers and
//! the supervisee app, including offline batches uploaded when signal returns; flags
//! positions outside the township's permitted area; keeps a projection of the registry's
//! supervisees to know who may check in and where they are supervised; publishes
//! `checkin.recorded` so risk-alert can move deadlines and raise out-of-area alerts.

pub mod api;
pub mod domain;
pub mod ingest;
pub mod projection;
pub mod record;
pub mod request;
pub mod response;
pub mod store;

use std::sync::Arc;

use mesh_kit::{
    clock::{SharedClock, SystemClock},
    config::{CommonSettings, ConfigError, Reader, Source},
    grpc,
    host::{Host, Served},
};
use mesh_proto::checkin::checkin_service_server::CheckinServiceServer;
use sqlx::migrate::Migrator;

use crate::{
    domain::{AreaPolicy, Rules},
    projection::RegistryProjection,
};

/// The check-in service's own schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/checkin");

/// Conventional gRPC port of the check-in service.
pub const DEFAULT_PORT: u16 = 50052;

/// Longest sync window an operator may configure: beyond a month a "check-in" says little
/// about the supervision period it is supposed to prove.
const MAX_SYNC_WINDOW_SECS: i64 = 30 * 24 * 3600;

/// Check-in settings, read from the environment.
pub struct Settings {
    pub common: CommonSettings,
    /// Device-time window and identity threshold (`MESH_CHECKIN_MAX_FUTURE_SECS`,
    /// `MESH_CHECKIN_SYNC_WINDOW_SECS`, `MESH_CHECKIN_FACE_MATCH_THRESHOLD`).
    pub rules: Rules,
    /// Radius of the permitted area around the county seat for townships that have set none
    /// (`MESH_CHECKIN_DEFAULT_AREA_RADIUS_M`, default 60 km; 0 = no default area).
    pub default_area_radius_m: f64,
}

impl Settings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let common = CommonSettings::read(&mut reader, "checkin", DEFAULT_PORT);
        let max_future_secs: i64 = reader.optional("MESH_CHECKIN_MAX_FUTURE_SECS", 300);
        if !(0..=3600).contains(&max_future_secs) {
            reader.problem("MESH_CHECKIN_MAX_FUTURE_SECS must be between 0 and 3600");
        }
        let sync_window_secs: i64 = reader.optional("MESH_CHECKIN_SYNC_WINDOW_SECS", 72 * 3600);
        if !(60..=MAX_SYNC_WINDOW_SECS).contains(&sync_window_secs) {
            reader.problem(format!(
                "MESH_CHECKIN_SYNC_WINDOW_SECS must be between 60 and {MAX_SYNC_WINDOW_SECS}"
            ));
        }
        let face_match_threshold: f64 = reader.optional("MESH_CHECKIN_FACE_MATCH_THRESHOLD", 0.8);
        if !(0.0..=1.0).contains(&face_match_threshold) {
            reader.problem("MESH_CHECKIN_FACE_MATCH_THRESHOLD must be between 0 and 1");
        }
        let default_area_radius_m: f64 = reader.optional("MESH_CHECKIN_DEFAULT_AREA_RADIUS_M", 60_000.0);
        if !(default_area_radius_m == 0.0
            || (domain::MIN_RADIUS_M..=domain::MAX_RADIUS_M).contains(&default_area_radius_m))
        {
            reader.problem(format!(
                "MESH_CHECKIN_DEFAULT_AREA_RADIUS_M must be 0 (no default area) or between {} and {} metres",
                domain::MIN_RADIUS_M,
                domain::MAX_RADIUS_M
            ));
        }
        reader.finish()?;
        let common = common.ok_or_else(|| ConfigError {
            problems: vec!["incomplete configuration".into()],
        })?;
        Ok(Self {
            common,
            rules: Rules {
                max_future: chrono::Duration::seconds(max_future_secs),
                sync_window: chrono::Duration::seconds(sync_window_secs),
                face_match_threshold,
            },
            default_area_radius_m,
        })
    }
}

/// A built check-in service: database migrated, listener bound, projection subscribed.
pub type Application = Served<CheckinServiceServer<api::Checkins>>;

/// Builds the service on the system clock: database migrated, listener bound.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    build_with_clock(settings, Arc::new(SystemClock)).await
}

/// Builds the service on `clock` (tests move time instead of sleeping).
pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Application> {
    let mut host = Host::build("checkin", &settings.common, &MIGRATOR).await?;
    host.consume(RegistryProjection, &[&settings.common.topics.registry])?;
    let areas = AreaPolicy {
        default_radius_m: settings.default_area_radius_m,
    };
    let api = api::Checkins::new(
        host.changes(),
        host.cursors(),
        clock,
        settings.common.topics.checkin.clone(),
        settings.rules,
        areas,
    );
    let server = CheckinServiceServer::new(api)
        .max_decoding_message_size(grpc::MAX_REQUEST_BYTES)
        .max_encoding_message_size(grpc::MAX_RESPONSE_BYTES);
    Ok(Served::new(host, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 4] = [
        ("MESH_DATABASE_URL", "postgres://postgres@127.0.0.1/mesh_checkin"),
        ("MESH_KAFKA_BROKERS", "127.0.0.1:9092"),
        ("MESH_JWKS_FILE", "/etc/mesh/jwks.json"),
        ("MESH_CURSOR_SECRET", "0123456789abcdef0123456789abcdef"),
    ];

    fn with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        BASE.iter()
            .chain(extra)
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_rules() {
        let settings = Settings::from_source(&with(&[])).expect("valid");
        assert_eq!(settings.common.grpc_addr.port(), DEFAULT_PORT);
        assert_eq!(settings.common.consumer_group, "checkin");
        assert_eq!(settings.rules.max_future, chrono::Duration::minutes(5));
        assert_eq!(settings.rules.sync_window, chrono::Duration::hours(72));
        assert_eq!(settings.rules.face_match_threshold, 0.8);
        assert_eq!(settings.default_area_radius_m, 60_000.0);
    }

    #[test]
    fn every_bad_checkin_setting_is_reported() {
        let source = with(&[
            ("MESH_CHECKIN_MAX_FUTURE_SECS", "-1"),
            ("MESH_CHECKIN_SYNC_WINDOW_SECS", "10"),
            ("MESH_CHECKIN_FACE_MATCH_THRESHOLD", "1.5"),
            ("MESH_CHECKIN_DEFAULT_AREA_RADIUS_M", "5"),
        ]);
        let message = Settings::from_source(&source)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        for name in [
            "MESH_CHECKIN_MAX_FUTURE_SECS",
            "MESH_CHECKIN_SYNC_WINDOW_SECS",
            "MESH_CHECKIN_FACE_MATCH_THRESHOLD",
            "MESH_CHECKIN_DEFAULT_AREA_RADIUS_M",
        ] {
            assert!(message.contains(name), "{name} missing from {message}");
        }
        let disabled = Settings::from_source(&with(&[("MESH_CHECKIN_DEFAULT_AREA_RADIUS_M", "0")]))
            .expect("0 disables the default area");
        assert_eq!(disabled.default_area_radius_m, 0.0);
    }
}
