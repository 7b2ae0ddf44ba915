//! Typed configuration from environment variables (and an optional `KEY=VALUE` file named by
//! `MESH_CONFIG_FILE`), validated as a whole before anything binds a port.
//!
//! Every problem is collected so an operator sees all of them at once; `exit_on_error` prints
//! them as one message and exits with 64 (`EX_USAGE`).

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use base64::Engine;
use secrecy::{ExposeSecret, SecretBox, SecretString};

mod keys;

pub use keys::{FIELD_RING, FieldKeys, HANDOVER_TRANSIT_RING, RingVars, read_ring, read_transit};

/// Exit code for invalid configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// All the problems found in the configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.problems.join("; "))
    }
}

/// Source of configuration values: the process environment, or a fixed map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment, after loading `MESH_CONFIG_FILE` if set (the environment wins
/// over the file, so a deployment can override one value without editing the file).
#[derive(Debug, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

impl Source for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
}

/// Loads the optional config file into the process environment. Call once at start, before
/// any threads exist (setting variables is not thread-safe).
pub fn load_config_file() -> Result<(), ConfigError> {
    match std::env::var("MESH_CONFIG_FILE") {
        Ok(path) => dotenvy::from_path(&path).map_err(|error| ConfigError {
            problems: vec![format!("MESH_CONFIG_FILE={path}: cannot read: {error}")],
        }),
        Err(_) => Ok(()),
    }
}

/// Reads variables, collecting every problem instead of stopping at the first.
pub struct Reader<'a> {
    source: &'a dyn Source,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(source: &'a dyn Source) -> Self {
        Self {
            source,
            problems: Vec::new(),
        }
    }

    fn raw(&self, name: &str) -> Option<String> {
        self.source.get(name).filter(|value| !value.trim().is_empty())
    }

    /// A required value parsed with `FromStr`.
    pub fn required<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => {
                self.problems.push(format!("{name} is required"));
                None
            }
            Some(value) => self.parse(name, &value),
        }
    }

    /// An optional value parsed with `FromStr`, `default` when unset.
    pub fn optional<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => default,
            Some(value) => self.parse(name, &value).unwrap_or(default),
        }
    }

    /// An optional value with no default.
    pub fn maybe<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let value = self.raw(name)?;
        self.parse(name, &value)
    }

    /// A socket address such as `0.0.0.0:50051`.
    pub fn socket_addr(&mut self, name: &str, default: SocketAddr) -> SocketAddr {
        self.optional(name, default)
    }

    /// A duration in whole seconds, at least `min_secs`.
    pub fn seconds(&mut self, name: &str, default_secs: u64, min_secs: u64) -> Duration {
        let secs: u64 = self.optional(name, default_secs);
        if secs < min_secs {
            self.problems
                .push(format!("{name} must be at least {min_secs} seconds, got {secs}"));
        }
        Duration::from_secs(secs)
    }

    /// A required secret string of at least `min_len` bytes; never printed.
    pub fn secret(&mut self, name: &str, min_len: usize) -> Option<SecretString> {
        let Some(value) = self.raw(name) else {
            self.problems.push(format!("{name} is required"));
            return None;
        };
        if value.len() < min_len {
            self.problems.push(format!(
                "{name} must be at least {min_len} bytes long (value not shown)"
            ));
            return None;
        }
        Some(SecretString::from(value))
    }

    /// A required 32-byte key given as standard base64; never printed.
    pub fn key_32(&mut self, name: &str) -> Option<SecretBox<[u8; 32]>> {
        let Some(value) = self.raw(name) else {
            self.problems
                .push(format!("{name} is required (32 bytes, base64)"));
            return None;
        };
        decode_key_32(&value)
            .map_err(|problem| self.problems.push(format!("{name} {problem}")))
            .ok()
    }

    /// Records a problem found by a cross-field check.
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    fn parse<T: FromStr>(&mut self, name: &str, value: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match value.trim().parse() {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                self.problems
                    .push(format!("{name}={value:?} is invalid: {error}"));
                None
            }
        }
    }

    /// Ends reading: `Ok` only when nothing was wrong.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// A 32-byte key from standard base64, or what is wrong with it (the value never shown).
pub(crate) fn decode_key_32(value: &str) -> Result<SecretBox<[u8; 32]>, String> {
    match base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            Ok(SecretBox::new(Box::new(key)))
        }
        Ok(bytes) => Err(format!(
            "must decode to 32 bytes, got {} (value not shown)",
            bytes.len()
        )),
        Err(_) => Err("is not valid base64 (value not shown)".to_owned()),
    }
}

/// Settings every service shares.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// Address the gRPC server binds (port 0 picks a free port, as tests do).
    pub grpc_addr: SocketAddr,
    /// PostgreSQL URL of this service's own database.
    pub database_url: SecretString,
    /// Maximum pool connections.
    pub database_max_connections: u32,
    /// How long one statement may run before PostgreSQL cancels it
    /// (`MESH_DATABASE_STATEMENT_TIMEOUT_SECS`, default 60; 0: no limit). Migrations run
    /// without it.
    pub database_statement_timeout: Option<Duration>,
    /// Writes each caller may make (`MESH_WRITE_RATE_PER_SEC`, `MESH_WRITE_BURST`); `None`:
    /// not limited. See [`crate::grpc::rate`].
    pub write_rate: Option<crate::grpc::rate::WriteRate>,
    /// Kafka bootstrap servers, comma separated.
    pub kafka_brokers: String,
    /// How long a publish waits for an unreachable broker before the outbox retries it.
    pub kafka_message_timeout: Duration,
    /// Whether producers use Kafka's idempotence (`MESH_KAFKA_IDEMPOTENT_PRODUCER`, default
    /// true; set false for Tansu, see [`crate::kafka::producer_config`]).
    pub kafka_idempotent_producer: bool,
    /// Extra librdkafka properties for every Kafka client of the process
    /// (`MESH_KAFKA_CLIENT_CONFIG`, `name=value` pairs separated by commas; default none, as
    /// Apache Kafka needs), applied after the kit's own, see [`crate::kafka::client_config`].
    pub kafka_client_config: Vec<(String, String)>,
    /// Where the key set that verifies caller tokens is read (`MESH_JWKS_FILE` or
    /// `MESH_JWKS_URL`, exactly one).
    pub token_keys: crate::auth::KeySource,
    /// How often the key set is re-read (`MESH_JWKS_REFRESH_SECS`, default 60).
    pub token_keys_refresh: Duration,
    /// The longest lifetime (`exp - iat`) of a token accepted
    /// (`MESH_TOKEN_MAX_LIFETIME_SECS`, default 43200: a working day).
    pub token_max_lifetime: Duration,
    /// This service's own signing key, for the calls it makes to other services
    /// (`MESH_SIGNING_KEY_FILE`, a PKCS#8 PEM Ed25519 key, with `MESH_SIGNING_KID`).
    pub signing_key: Option<SigningKey>,
    /// Secret that seals list cursors (`MESH_CURSOR_SECRET`, at least 32 bytes, the same
    /// for every replica of the service).
    pub cursor_secret: SecretString,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
    /// How often the outbox relay polls when idle.
    pub outbox_poll_interval: Duration,
    /// How long a published outbox row is kept before the relay deletes it
    /// (`MESH_OUTBOX_RETENTION_SECS`, default 300).
    pub outbox_retention: Duration,
    /// How long a processed event id stays in the consumer inbox before it is deleted
    /// (`MESH_INBOX_RETENTION_SECS`, default 604800: seven days, Kafka's default topic
    /// retention, so every record the broker can still deliver is deduplicated).
    pub inbox_retention: Duration,
    /// Topic names.
    pub topics: crate::kafka::Topics,
    /// Consumer group of this service (`MESH_CONSUMER_GROUP`, default the service name).
    pub consumer_group: String,
    /// How long one record may keep failing before its consumer reports itself stalled
    /// (`MESH_CONSUMER_STALL_AFTER_SECS`, default 300).
    pub consumer_stall_after: Duration,
    /// How long a consumer's Kafka client may deliver nothing while records wait before it
    /// is rebuilt (`MESH_CONSUMER_WATCHDOG_SECS`, default 10).
    pub consumer_watchdog_window: Duration,
    /// Fault injection for tests and drills (`MESH_FAULT_STICK_CONSUMER_AFTER`, default 0:
    /// off): each consumer's first Kafka client stops fetching after this many records.
    pub fault_stick_consumer_after: Option<u64>,
    /// The most records a consumer applies together (`MESH_CONSUMER_BATCH_MAX`, default 500;
    /// 1 applies each record in its own transaction).
    pub consumer_batch_max: usize,
    /// How long a consumer's batch waits for more records after its first
    /// (`MESH_CONSUMER_BATCH_LINGER_MS`, default 2).
    pub consumer_batch_linger: Duration,
}

impl CommonSettings {
    /// Reads the shared settings; `default_port` is the service's conventional gRPC port.
    pub fn read(reader: &mut Reader<'_>, service: &str, default_port: u16) -> Option<Self> {
        let grpc_addr =
            reader.socket_addr("MESH_GRPC_ADDR", SocketAddr::from(([127, 0, 0, 1], default_port)));
        let database_url = reader.secret("MESH_DATABASE_URL", 1);
        if let Some(url) = &database_url
            && !url.expose_secret().starts_with("postgres")
        {
            reader.problem("MESH_DATABASE_URL must be a postgres:// URL");
        }
        let database_max_connections = reader.optional("MESH_DATABASE_MAX_CONNECTIONS", 10u32);
        if database_max_connections == 0 {
            reader.problem("MESH_DATABASE_MAX_CONNECTIONS must be at least 1");
        }
        let statement_timeout = reader.seconds("MESH_DATABASE_STATEMENT_TIMEOUT_SECS", 60, 0);
        let write_rate = crate::grpc::rate::WriteRate::read(reader);
        let kafka_brokers: Option<String> = reader.required("MESH_KAFKA_BROKERS");
        let kafka_message_timeout_ms: u64 = reader.optional("MESH_KAFKA_MESSAGE_TIMEOUT_MS", 15_000);
        if kafka_message_timeout_ms < 1_000 {
            reader.problem("MESH_KAFKA_MESSAGE_TIMEOUT_MS must be at least 1000");
        }
        let kafka_idempotent_producer = reader.optional("MESH_KAFKA_IDEMPOTENT_PRODUCER", true);
        let kafka_client_config = match reader.maybe::<String>("MESH_KAFKA_CLIENT_CONFIG") {
            None => Vec::new(),
            Some(value) => crate::kafka::parse_client_config(&value).unwrap_or_else(|problem| {
                reader.problem(format!("MESH_KAFKA_CLIENT_CONFIG: {problem}"));
                Vec::new()
            }),
        };
        let token_keys = read_key_source(reader);
        let token_keys_refresh = reader.seconds("MESH_JWKS_REFRESH_SECS", 60, 1);
        let token_max_lifetime = reader.seconds("MESH_TOKEN_MAX_LIFETIME_SECS", 43_200, 60);
        let signing_key = SigningKey::read(reader);
        let cursor_secret = reader.secret("MESH_CURSOR_SECRET", 32);
        let shutdown_grace = reader.seconds("MESH_SHUTDOWN_GRACE_SECS", 10, 1);
        let outbox_poll_ms: u64 = reader.optional("MESH_OUTBOX_POLL_MS", 200);
        let outbox_retention = reader.seconds("MESH_OUTBOX_RETENTION_SECS", 300, 1);
        let inbox_retention = reader.seconds("MESH_INBOX_RETENTION_SECS", 7 * 86_400, 1);
        let topics = crate::kafka::Topics::read(reader);
        let consumer_group = reader.optional("MESH_CONSUMER_GROUP", service.to_owned());
        let consumer_stall_after = reader.seconds("MESH_CONSUMER_STALL_AFTER_SECS", 300, 1);
        let consumer_watchdog_window = reader.seconds("MESH_CONSUMER_WATCHDOG_SECS", 10, 1);
        let stick_after: u64 = reader.optional("MESH_FAULT_STICK_CONSUMER_AFTER", 0);
        let consumer_batch_max: usize = reader.optional("MESH_CONSUMER_BATCH_MAX", 500);
        if consumer_batch_max == 0 {
            reader.problem("MESH_CONSUMER_BATCH_MAX must be at least 1");
        }
        let consumer_batch_linger_ms: u64 = reader.optional("MESH_CONSUMER_BATCH_LINGER_MS", 2);
        // Consumers, the lag monitor and the outbox each build their own client from
        // `crate::kafka`; the extra properties reach all of them through the process.
        crate::kafka::set_client_config(kafka_client_config.clone());
        Some(Self {
            grpc_addr,
            database_url: database_url?,
            database_max_connections,
            database_statement_timeout: (!statement_timeout.is_zero()).then_some(statement_timeout),
            write_rate,
            kafka_brokers: kafka_brokers?,
            kafka_message_timeout: Duration::from_millis(kafka_message_timeout_ms),
            kafka_idempotent_producer,
            kafka_client_config,
            token_keys: token_keys?,
            token_keys_refresh,
            token_max_lifetime,
            signing_key,
            cursor_secret: cursor_secret?,
            shutdown_grace,
            outbox_poll_interval: Duration::from_millis(outbox_poll_ms.max(10)),
            outbox_retention,
            inbox_retention,
            topics,
            consumer_group,
            consumer_stall_after,
            consumer_watchdog_window,
            fault_stick_consumer_after: (stick_after > 0).then_some(stick_after),
            consumer_batch_max,
            consumer_batch_linger: Duration::from_millis(consumer_batch_linger_ms),
        })
    }
}

/// Exactly one of `MESH_JWKS_FILE` and `MESH_JWKS_URL`.
fn read_key_source(reader: &mut Reader<'_>) -> Option<crate::auth::KeySource> {
    use crate::auth::KeySource;
    let file: Option<String> = reader.maybe("MESH_JWKS_FILE");
    let url: Option<String> = reader.maybe("MESH_JWKS_URL");
    match (file, url) {
        (Some(file), None) => Some(KeySource::File(file.into())),
        (None, Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {
            Some(KeySource::Url(url))
        }
        (None, Some(_)) => {
            reader.problem("MESH_JWKS_URL must be an http(s):// URL");
            None
        }
        (Some(_), Some(_)) => {
            reader.problem("set one of MESH_JWKS_FILE and MESH_JWKS_URL, not both");
            None
        }
        (None, None) => {
            reader.problem("MESH_JWKS_FILE or MESH_JWKS_URL is required (the key set that verifies tokens)");
            None
        }
    }
}

/// Where a service's own token signing key is, and its key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub file: std::path::PathBuf,
    pub kid: String,
}

impl SigningKey {
    /// Both `MESH_SIGNING_KEY_FILE` and `MESH_SIGNING_KID`, or neither.
    fn read(reader: &mut Reader<'_>) -> Option<Self> {
        let file: Option<String> = reader.maybe("MESH_SIGNING_KEY_FILE");
        let kid: Option<String> = reader.maybe("MESH_SIGNING_KID");
        match (file, kid) {
            (Some(file), Some(kid)) => Some(Self {
                file: file.into(),
                kid,
            }),
            (None, None) => None,
            _ => {
                reader.problem("MESH_SIGNING_KEY_FILE and MESH_SIGNING_KID go together");
                None
            }
        }
    }
}

/// Prints the configuration problem as one clear message and exits with [`EXIT_CONFIG`].
pub fn exit_on_error<T>(result: Result<T, ConfigError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const JWKS: &str = "/etc/mesh/jwks.json";

    fn read(source: &dyn Source) -> Result<CommonSettings, ConfigError> {
        let mut reader = Reader::new(source);
        let settings = CommonSettings::read(&mut reader, "registry", 50051);
        reader.finish()?;
        Ok(settings.expect("no problems means every value was read"))
    }

    #[test]
    fn complete_config_is_accepted_with_defaults() {
        let source = [
            ("MESH_DATABASE_URL", "postgres://postgres@127.0.0.1/mesh_registry"),
            ("MESH_KAFKA_BROKERS", "127.0.0.1:9092"),
            ("MESH_JWKS_FILE", JWKS),
            ("MESH_CURSOR_SECRET", SECRET),
        ];
        let settings = read(&source).expect("valid");
        assert_eq!(settings.token_keys, crate::auth::KeySource::File(JWKS.into()));
        assert_eq!(settings.token_max_lifetime, Duration::from_secs(43_200));
        assert_eq!(settings.signing_key, None);
        assert_eq!(settings.grpc_addr.port(), 50051);
        assert_eq!(settings.shutdown_grace, Duration::from_secs(10));
        assert_eq!(settings.kafka_brokers, "127.0.0.1:9092");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let source = [
            ("MESH_GRPC_ADDR", "not-an-address"),
            ("MESH_CURSOR_SECRET", "short"),
            ("MESH_SIGNING_KID", "risk-alert-1"),
            ("MESH_SHUTDOWN_GRACE_SECS", "0"),
        ];
        let error = read(&source).expect_err("invalid");
        let message = error.to_string();
        assert!(
            message.contains("MESH_GRPC_ADDR=\"not-an-address\" is invalid"),
            "{message}"
        );
        assert!(message.contains("MESH_DATABASE_URL is required"), "{message}");
        assert!(message.contains("MESH_KAFKA_BROKERS is required"), "{message}");
        assert!(
            message.contains("MESH_CURSOR_SECRET must be at least 32 bytes"),
            "{message}"
        );
        assert!(
            message.contains("MESH_JWKS_FILE or MESH_JWKS_URL is required"),
            "{message}"
        );
        assert!(
            message.contains("MESH_SIGNING_KEY_FILE and MESH_SIGNING_KID go together"),
            "{message}"
        );
        assert!(
            message.contains("MESH_SHUTDOWN_GRACE_SECS must be at least 1"),
            "{message}"
        );
        assert!(!message.contains("short"), "secret value leaked: {message}");
    }

    #[test]
    fn non_postgres_database_url_is_rejected() {
        let source = [
            ("MESH_DATABASE_URL", "mysql://root@localhost/x"),
            ("MESH_KAFKA_BROKERS", "127.0.0.1:9092"),
            ("MESH_JWKS_URL", "ftp://idp/jwks"),
            ("MESH_CURSOR_SECRET", SECRET),
        ];
        let message = read(&source).expect_err("invalid").to_string();
        assert!(
            message.contains("MESH_JWKS_URL must be an http(s):// URL"),
            "{message}"
        );
        assert!(message.contains("must be a postgres:// URL"), "{message}");
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let source = [("GOOD", good.as_str()), ("SHORT", short.as_str()), ("BAD", "%%%")];
        let mut reader = Reader::new(&source);
        assert_eq!(reader.key_32("GOOD").map(|k| *k.expose_secret()), Some([7u8; 32]));
        assert!(reader.key_32("SHORT").is_none());
        assert!(reader.key_32("BAD").is_none());
        assert!(reader.key_32("MISSING").is_none());
        let message = reader.finish().expect_err("three problems").to_string();
        assert!(
            message.contains("SHORT must decode to 32 bytes, got 16"),
            "{message}"
        );
        assert!(message.contains("BAD is not valid base64"), "{message}");
        assert!(message.contains("MISSING is required"), "{message}");
    }
}
