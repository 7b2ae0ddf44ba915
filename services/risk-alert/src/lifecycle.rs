//! Each step of an alert's lifecycle is written the same way, inside the transaction that
//! caused it: the alert row, the `alert.*` event (outbox), one webhook notification per
//! endpoint that must hear of it, and a `pg_notify` that wakes the live streams of every
//! replica. The rules of each step are the domain's (`domain::alert`).

use chrono::{DateTime, Utc};
use mesh_kit::{change::Tx, error::ServiceError, outbox::NewEvent};
use uuid::Uuid;

use crate::{
    convert::event_payload,
    domain::{
        Actor, Jurisdiction,
        alert::{Alert, AlertEvent, NewAlert, Resolution},
        answers::Withdrawal,
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
        self.announce(tx, &alert, AlertEvent::Raised, None, now).await?;
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
            self.announce(tx, &alert, AlertEvent::Acknowledged, Some(&by), now)
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
            self.announce(tx, &alert, AlertEvent::Resolved, Some(&by), now)
                .await?;
            tracing::info!(alert_id = %alert.id, auto = alert.auto_resolved(), "alert resolved");
        }
        Ok(alert)
    }

    /// Hands an alert to its subject's new jurisdiction. No event: nothing about the alert
    /// itself changed except who owns it.
    pub async fn move_to(
        &self,
        tx: &mut impl Tx,
        mut alert: Alert,
        jurisdiction: Jurisdiction,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        alert.move_to(jurisdiction, now);
        store::alerts::update(tx.conn(), &alert).await
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
        event: AlertEvent,
        actor: Option<&Actor>,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let event_type = event.event_type();
        tx.publish_unaudited(NewEvent {
            topic: self.topic.clone(),
            // One subject's alert events stay in order.
            key: alert.subject.id.clone(),
            event_type,
            payload: event_payload(event, alert, actor),
            occurred_at: now,
        })
        .await?;
        let conn = tx.conn();
        let endpoints =
            store::webhooks::recipients(conn, &alert.jurisdiction, alert.notifies_county_bureau()).await?;
        for endpoint_id in endpoints {
            let notification_id = Uuid::now_v7();
            let notification = NewNotification {
                notification_id,
                alert_id: alert.id,
                event_type,
                endpoint_id,
                body: notify::body(notification_id, event_type, alert, now),
            };
            queue_notification(conn, notification, now).await?;
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(format!("{}:{}", alert.id, event.to_proto() as i32))
            .execute(conn)
            .await?;
        Ok(())
    }
}
