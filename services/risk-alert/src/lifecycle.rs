//! Each step of an alert's lifecycle is written the same way, inside the transaction that
//! caused it: the alert row, the `alert.*` event (outbox), one webhook notification per
//! endpoint that must hear of it (who: `domain::notice`), and a `pg_notify` that wakes the
//! live streams of every replica. The rules of each step are the domain's (`domain::alert`).

use chrono::{DateTime, Utc};
use mesh_kit::{change::Tx, error::ServiceError, outbox::NewEvent};
use uuid::Uuid;

use crate::{
    convert::event_payload,
    domain::{
        Actor, Jurisdiction,
        alert::{Alert, NewAlert, Resolution},
        answers::Withdrawal,
        notice::{self, Step},
    },
    notify,
    store::{
        self,
        webhooks::{NewNotification, queue_notification},
    },
};

/// PostgreSQL channel that carries `<alert id>:<change>` to every replica's live streams.
pub const CHANGES_CHANNEL: &str = "mesh_alert_changes";

/// The transaction a lifecycle step is written in: a [`Change`] (API calls and the
/// scheduler), or the consumer's transaction, whose commit wakes the relay itself.
// Kit proposal: the kit could implement this for `Change` and `PgConnection` so every
// service writes events the same way whichever transaction it runs in.
/// Writes lifecycle steps; alert events go to `topic`.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub topic: String,
}

impl Lifecycle {
    /// Raises the alert unless one with its dedup key exists; returns it when raised.
    pub async fn raise(
        &self,
        tx: &mut impl Tx,
        draft: NewAlert,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, ServiceError> {
        let alert = Alert::raise(Uuid::now_v7(), draft, now);
        if !store::alerts::insert(tx.conn(), &alert).await? {
            return Ok(None);
        }
        self.announce(tx, &alert, &Step::Raised, now).await?;
        tracing::info!(
            alert_id = %alert.id,
            kind = alert.kind.as_str(),
            subject_id = %alert.subject.id,
            "alert raised"
        );
        Ok(Some(alert))
    }

    /// Acknowledges an open alert for `by` (no-op when already acknowledged).
    pub async fn acknowledge(
        &self,
        tx: &mut impl Tx,
        mut alert: Alert,
        by: Actor,
        now: DateTime<Utc>,
    ) -> Result<Alert, ServiceError> {
        if alert.acknowledge(by.clone(), now)? {
            store::alerts::update(tx.conn(), &alert).await?;
            self.announce(tx, &alert, &Step::Acknowledged { by: &by }, now)
                .await?;
        }
        Ok(alert)
    }

    /// Resolves an open or acknowledged alert (no-op when already resolved).
    pub async fn resolve(
        &self,
        tx: &mut impl Tx,
        mut alert: Alert,
        resolution: Resolution,
        now: DateTime<Utc>,
    ) -> Result<Alert, ServiceError> {
        let by = resolution.by.clone();
        if alert.resolve(resolution, now) {
            store::alerts::update(tx.conn(), &alert).await?;
            self.announce(tx, &alert, &Step::Resolved { by: &by }, now)
                .await?;
            tracing::info!(alert_id = %alert.id, auto = alert.auto_resolved(), "alert resolved");
        }
        Ok(alert)
    }

    /// Hands an alert to its subject's new jurisdiction and says so (`alert.transferred`):
    /// the new township office and county bureau must act on it, and the old township office
    /// must know it left; the live streams of both jurisdictions see it.
    pub async fn move_to(
        &self,
        tx: &mut impl Tx,
        mut alert: Alert,
        jurisdiction: Jurisdiction,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        if alert.jurisdiction == jurisdiction {
            return Ok(());
        }
        let from = alert.move_to(jurisdiction, now);
        store::alerts::update(tx.conn(), &alert).await?;
        self.announce(tx, &alert, &Step::Transferred { from: &from }, now)
            .await?;
        tracing::info!(alert_id = %alert.id, "alert transferred");
        Ok(())
    }

    /// Escalates an alert to the county bureau because `reason` (its office cannot be
    /// reached); no-op when resolved or already the county bureau's.
    pub async fn escalate(
        &self,
        tx: &mut impl Tx,
        mut alert: Alert,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Alert, ServiceError> {
        if let Some(previous) = alert.escalate(now) {
            store::alerts::update(tx.conn(), &alert).await?;
            self.announce(tx, &alert, &Step::Escalated { previous, reason }, now)
                .await?;
            tracing::info!(alert_id = %alert.id, reason, "alert escalated");
        }
        Ok(alert)
    }

    /// Queues, for an endpoint just registered for `office`, a notification of every alert
    /// still open or acknowledged that the office would have been told of (`alert.current`):
    /// what it missed while it had no endpoint.
    pub async fn tell_current(
        &self,
        tx: &mut impl Tx,
        office: &Jurisdiction,
        endpoint_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<usize, ServiceError> {
        let conn = tx.conn();
        let mut told = 0;
        for alert in store::alerts::current(&mut *conn, office).await? {
            let township_has_endpoint = store::webhooks::endpoint_of(conn, &alert.jurisdiction)
                .await?
                .is_some();
            let audience = notice::audience(&alert, &Step::Raised, township_has_endpoint);
            if let Some(notice) = audience.iter().find(|notice| notice.office == *office) {
                queue(conn, &alert, CURRENT_EVENT_TYPE, endpoint_id, &notice.reason, now).await?;
                told += 1;
            }
        }
        Ok(told)
    }

    /// Resolves, automatically, what `withdrawal` selects among a subject's open alerts
    /// (oldest first); `reference` names what resolved them.
    pub async fn withdraw(
        &self,
        tx: &mut impl Tx,
        subject_id: &str,
        withdrawal: &Withdrawal,
        reference: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        for alert in store::alerts::open_for_subject(tx.conn(), subject_id).await? {
            if withdrawal.answers.covers(&alert) {
                let resolution = Resolution {
                    by: Actor::system(),
                    note: withdrawal.note.clone(),
                    reference: Some(reference.to_owned()),
                };
                self.resolve(tx, alert, resolution, now).await?;
            }
        }
        Ok(())
    }

    /// Tells the mesh, the endpoints and the live streams of a step.
    async fn announce(
        &self,
        tx: &mut impl Tx,
        alert: &Alert,
        step: &Step<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let event_type = step.event().event_type();
        tx.publish_unaudited(NewEvent {
            topic: self.topic.clone(),
            // One subject's alert events stay in order.
            key: alert.subject.id.clone(),
            event_type,
            payload: event_payload(step, alert),
            occurred_at: now,
        })
        .await?;
        let conn = tx.conn();
        let township_has_endpoint = store::webhooks::endpoint_of(conn, &alert.jurisdiction)
            .await?
            .is_some();
        for notice in notice::audience(alert, step, township_has_endpoint) {
            if let Some(endpoint_id) = store::webhooks::endpoint_of(conn, &notice.office).await? {
                queue(conn, alert, event_type, endpoint_id, &notice.reason, now).await?;
            }
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(change_payload(alert, step))
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The event type of notifications sent to an endpoint registered after the alert was
/// raised.
pub const CURRENT_EVENT_TYPE: &str = "alert.current";

/// Queues one signed-later notification of `alert` to `endpoint_id`.
async fn queue(
    conn: &mut sqlx::PgConnection,
    alert: &Alert,
    event_type: &str,
    endpoint_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    let notification_id = Uuid::now_v7();
    let notification = NewNotification {
        notification_id,
        alert_id: alert.id,
        event_type,
        endpoint_id,
        body: notify::body(notification_id, event_type, alert, now, reason),
    };
    queue_notification(conn, notification, now).await
}

/// `<alert id>:<change number>`, and for a transfer `:<old township>:<old county>` so the
/// old jurisdiction's streams see the alert leave (read by `fanout`).
pub fn change_payload(alert: &Alert, step: &Step<'_>) -> String {
    let change = step.event().to_proto() as i32;
    match step.previous_jurisdiction() {
        Some(from) => format!(
            "{}:{change}:{}:{}",
            alert.id, from.township_code, from.county_code
        ),
        None => format!("{}:{change}", alert.id),
    }
}
