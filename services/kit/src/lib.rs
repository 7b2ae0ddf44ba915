//! The service kit every mesh service is built from: typed config, telemetry, PostgreSQL with
//! embedded migrations, the transactional outbox and its relay, the append-only audit log,
//! the at-least-once consumer with its durable dead letters and operational events, retention
//! sweeps, caller authentication, gRPC plumbing, and shared domain
//! helpers (national ID validation, field encryption under rotating key rings, the
//! jurisdiction directory, an injectable clock).

pub mod audit;
pub mod auth;
pub mod change;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod crypto;
pub mod db;
pub mod dead_letter;
pub mod error;
pub mod events;
pub mod grpc;
pub mod host;
pub mod jurisdiction;
pub mod kafka;
pub mod keyring;
pub mod lag;
pub mod national_id;
pub mod ops;
pub mod outbox;
pub mod page;
pub mod proto_time;
pub mod readiness;
pub mod retention;
pub mod rotation;
pub mod stalls;
pub mod stored_enum;
pub mod telemetry;
pub mod term;
pub mod transit;
pub mod validate;

pub use tokio_util::sync::CancellationToken;
