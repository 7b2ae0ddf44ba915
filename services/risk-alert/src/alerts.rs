//! The alert store: raising an alert exactly once per dedup key, acknowledging and resolving
//! it, and publishing every change the same way — the `alert.*` event (outbox), webhook
//! notifications for the jurisdiction's endpoints, and a `pg_notify` that wakes the live
//! streams of every replica — all inside the caller's transaction.

use chrono::{DateTime, Utc};
use mesh_kit::{
    outbox::{self, NewEvent},
    proto_time::to_timestamp,
};
use mesh_proto::{
    alert::{self as pb, AlertChange, AlertStatus},
    common::{Actor, Jurisdiction},
};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{notify, rules::AlertSpec};

/// PostgreSQL channel that carries `<alert id>:<change>` to every replica's live streams.
pub const CHANGES_CHANNEL: &str = "mesh_alert_changes";

/// Where alert events go.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub topic: String,
}

/// Everything needed to raise an alert.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub spec: AlertSpec,
    pub subject: pb::AlertSubject,
    pub subject_id: String,
    pub jurisdiction: Jurisdiction,
    pub deadline: DateTime<Utc>,
    pub dedup_key: String,
    pub evidence: pb::AlertEvidence,
}

/// The actor recorded for automatic changes.
pub fn system_actor() -> Actor {
    Actor {
        subject: "risk-alert".to_owned(),
        role: "system".to_owned(),
    }
}

fn status_text(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Acknowledged => "acknowledged",
        AlertStatus::Resolved => "resolved",
        _ => "open",
    }
}

/// Raises the alert unless one with the same dedup key exists; returns it when raised.
pub async fn raise(
    conn: &mut PgConnection,
    publisher: &Publisher,
    draft: NewAlert,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<pb::Alert>> {
    let alert_id = Uuid::now_v7();
    let alert = pb::Alert {
        alert_id: alert_id.to_string(),
        kind: draft.spec.kind as i32,
        severity: draft.spec.severity as i32,
        status: AlertStatus::Open as i32,
        subject: Some(draft.subject),
        jurisdiction: Some(draft.jurisdiction.clone()),
        escalation_target: draft.spec.target as i32,
        recommended_measure: draft.spec.measure as i32,
        rule: Some(pb::AlertRule {
            rule_id: draft.spec.rule_id,
            description: draft.spec.description,
        }),
        legal_basis: draft.spec.legal_basis.to_owned(),
        evidence: Some(draft.evidence),
        raised_at: Some(to_timestamp(now)),
        deadline: Some(to_timestamp(draft.deadline)),
        dedup_key: draft.dedup_key.clone(),
        updated_at: Some(to_timestamp(now)),
        version: 1,
        ..Default::default()
    };
    let inserted = sqlx::query(
        "INSERT INTO alerts (alert_id, dedup_key, kind, status, subject_id, township_code, county_code, raised_at, body)
         VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(alert_id)
    .bind(&draft.dedup_key)
    .bind(crate::rules::kind_key(draft.spec.kind))
    .bind(&draft.subject_id)
    .bind(&draft.jurisdiction.township_code)
    .bind(&draft.jurisdiction.county_code)
    .bind(now)
    .bind(alert.encode_to_vec())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    let payload = pb::AlertRaised {
        alert: Some(alert.clone()),
    }
    .encode_to_vec();
    publish(
        conn,
        publisher,
        &alert,
        "alert.raised",
        AlertChange::Raised,
        payload,
        now,
    )
    .await?;
    tracing::info!(
        alert_id = %alert.alert_id,
        kind = crate::rules::kind_key(draft.spec.kind),
        subject_id = %draft.subject_id,
        "alert raised"
    );
    Ok(Some(alert))
}

/// Loads an alert for update.
pub async fn load_for_update(conn: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<Option<pb::Alert>> {
    let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM alerts WHERE alert_id = $1 FOR UPDATE")
        .bind(alert_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(body.and_then(|bytes| pb::Alert::decode(bytes.as_slice()).ok()))
}

/// Loads an alert.
pub async fn load(conn: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<Option<pb::Alert>> {
    let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM alerts WHERE alert_id = $1")
        .bind(alert_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(body.and_then(|bytes| pb::Alert::decode(bytes.as_slice()).ok()))
}

/// Decodes stored alert bodies, skipping (and logging) any that cannot be decoded.
pub fn decode_all(bodies: Vec<Vec<u8>>) -> Vec<pb::Alert> {
    bodies
        .into_iter()
        .filter_map(|bytes| match pb::Alert::decode(bytes.as_slice()) {
            Ok(alert) => Some(alert),
            Err(error) => {
                tracing::error!(error = %error, "undecodable stored alert");
                None
            }
        })
        .collect()
}

/// Writes a changed alert back.
async fn store(conn: &mut PgConnection, alert: &pb::Alert) -> sqlx::Result<()> {
    let jurisdiction = alert.jurisdiction.clone().unwrap_or_default();
    sqlx::query(
        "UPDATE alerts SET status = $2, township_code = $3, county_code = $4, body = $5 WHERE alert_id = $1",
    )
    .bind(alert.alert_id.parse::<Uuid>().unwrap_or_default())
    .bind(status_text(alert.status()))
    .bind(&jurisdiction.township_code)
    .bind(&jurisdiction.county_code)
    .bind(alert.encode_to_vec())
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an open alert acknowledged (no-op when already acknowledged).
pub async fn acknowledge(
    conn: &mut PgConnection,
    publisher: &Publisher,
    mut alert: pb::Alert,
    actor: Actor,
    now: DateTime<Utc>,
) -> sqlx::Result<pb::Alert> {
    if alert.status() != AlertStatus::Open {
        return Ok(alert);
    }
    alert.status = AlertStatus::Acknowledged as i32;
    alert.acknowledged_by = Some(actor.clone());
    alert.acknowledged_at = Some(to_timestamp(now));
    touch(&mut alert, now);
    store(conn, &alert).await?;
    let payload = pb::AlertAcknowledged {
        alert: Some(alert.clone()),
        actor: Some(actor),
    }
    .encode_to_vec();
    publish(
        conn,
        publisher,
        &alert,
        "alert.acknowledged",
        AlertChange::Acknowledged,
        payload,
        now,
    )
    .await?;
    Ok(alert)
}

/// How an alert is being resolved.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub actor: Actor,
    pub note: String,
    /// Set for automatic resolutions: what resolved it (e.g. `checkin:<id>`).
    pub reference: Option<String>,
}

/// Resolves an open or acknowledged alert (no-op when already resolved).
pub async fn resolve(
    conn: &mut PgConnection,
    publisher: &Publisher,
    mut alert: pb::Alert,
    resolution: Resolution,
    now: DateTime<Utc>,
) -> sqlx::Result<pb::Alert> {
    if alert.status() == AlertStatus::Resolved {
        return Ok(alert);
    }
    alert.status = AlertStatus::Resolved as i32;
    alert.resolved_by = Some(resolution.actor.clone());
    alert.resolved_at = Some(to_timestamp(now));
    alert.resolution_note = resolution.note;
    alert.auto_resolved = resolution.reference.is_some();
    alert.resolved_by_reference = resolution.reference.unwrap_or_default();
    touch(&mut alert, now);
    store(conn, &alert).await?;
    let payload = pb::AlertResolved {
        alert: Some(alert.clone()),
        actor: Some(resolution.actor),
    }
    .encode_to_vec();
    publish(
        conn,
        publisher,
        &alert,
        "alert.resolved",
        AlertChange::Resolved,
        payload,
        now,
    )
    .await?;
    tracing::info!(alert_id = %alert.alert_id, auto = alert.auto_resolved, "alert resolved");
    Ok(alert)
}

/// Moves an alert to another jurisdiction (after a transfer); no event, as nothing about
/// the alert itself changed except who owns it.
pub async fn move_to(
    conn: &mut PgConnection,
    mut alert: pb::Alert,
    jurisdiction: Jurisdiction,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    alert.jurisdiction = Some(jurisdiction);
    touch(&mut alert, now);
    store(conn, &alert).await
}

/// The unresolved alerts about a subject, locked for update.
pub async fn open_for_subject(conn: &mut PgConnection, subject_id: &str) -> sqlx::Result<Vec<pb::Alert>> {
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT body FROM alerts WHERE subject_id = $1 AND status <> 'resolved' ORDER BY raised_at FOR UPDATE",
    )
    .bind(subject_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(decode_all(bodies))
}

fn touch(alert: &mut pb::Alert, now: DateTime<Utc>) {
    alert.updated_at = Some(to_timestamp(now));
    alert.version += 1;
}

async fn publish(
    conn: &mut PgConnection,
    publisher: &Publisher,
    alert: &pb::Alert,
    event_type: &'static str,
    change: AlertChange,
    payload: Vec<u8>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let key = alert
        .subject
        .as_ref()
        .and_then(|subject| subject.id.as_ref())
        .map(|id| match id {
            pb::alert_subject::Id::SuperviseeId(id) | pb::alert_subject::Id::HandoverId(id) => id.clone(),
        })
        .unwrap_or_else(|| alert.alert_id.clone());
    outbox::enqueue(
        &mut *conn,
        NewEvent {
            topic: publisher.topic.clone(),
            key,
            event_type,
            payload,
            occurred_at: now,
        },
    )
    .await?;
    notify::enqueue_for_alert(&mut *conn, alert, event_type, now).await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(format!("{}:{}", alert.alert_id, change as i32))
        .execute(conn)
        .await?;
    Ok(())
}
