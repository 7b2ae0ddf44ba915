//! Each step of an alert's lifecycle is written the same way, inside the transaction that
//! caused it: the alert row, the `alert.*` event (outbox), one webhook notification per
//! endpoint that must hear of it (who: `domain::notice`), and a `pg_notify` that wakes the
//! live streams of every replica. The rules of each step are the domain's (`domain::alert`).

use chrono::{DateTime, Utc};
use mesh_kit::{
    change::Tx,
    error::ServiceError,
    outbox::{NewEvent, TracedEvent},
};
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
    store::{self, webhooks::NewNotification},
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
    /// Raises the alert unless one with its dedup key exists; returns it when raised. Its
    /// event continues the current trace.
    pub async fn raise(
        &self,
        tx: &mut impl Tx,
        draft: NewAlert,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, ServiceError> {
        let raising = Raising {
            draft,
            span: tracing::Span::current(),
        };
        Ok(self.raise_all(tx, vec![raising], now).await?.pop())
    }

    /// Raises each alert unless one with its dedup key exists, all in a few statements (a
    /// wave of missed deadlines is written per batch, not per alert); returns those raised,
    /// in order.
    pub async fn raise_all(
        &self,
        tx: &mut impl Tx,
        raisings: Vec<Raising>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>, ServiceError> {
        let (alerts, spans): (Vec<Alert>, Vec<tracing::Span>) = raisings
            .into_iter()
            .map(|raising| (Alert::raise(Uuid::now_v7(), raising.draft, now), raising.span))
            .unzip();
        let inserted = store::alerts::insert_all(tx.conn(), &alerts).await?;
        let raised: Vec<(Alert, tracing::Span)> = alerts
            .into_iter()
            .zip(spans)
            .filter(|(alert, _)| inserted.contains(&alert.id))
            .collect();
        let announcements: Vec<Announcement<'_>> = raised
            .iter()
            .map(|(alert, span)| Announcement {
                alert,
                step: Step::Raised,
                span: span.clone(),
            })
            .collect();
        self.announce_all(tx, &announcements, now).await?;
        for (alert, span) in &raised {
            span.in_scope(|| {
                tracing::info!(
                    alert_id = %alert.id,
                    kind = alert.kind.as_str(),
                    subject_id = %alert.subject.id,
                    "alert raised"
                );
            });
        }
        Ok(raised.into_iter().map(|(alert, _)| alert).collect())
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
        let mut open = store::alerts::open_for_subject(tx.conn(), subject_id).await?;
        self.withdraw_from(tx, &mut open, withdrawal, reference, now)
            .await
    }

    /// [`Lifecycle::withdraw`] over a subject's open alerts read already (locked): those
    /// the withdrawal answers are resolved and taken out of `open`, the rest stay (a run of
    /// check-ins reads its people's open alerts once).
    pub async fn withdraw_from(
        &self,
        tx: &mut impl Tx,
        open: &mut Vec<Alert>,
        withdrawal: &Withdrawal,
        reference: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let (answered, rest): (Vec<Alert>, Vec<Alert>) = std::mem::take(open)
            .into_iter()
            .partition(|alert| withdrawal.answers.covers(alert));
        *open = rest;
        for alert in answered {
            let resolution = Resolution {
                by: Actor::system(),
                note: withdrawal.note.clone(),
                reference: Some(reference.to_owned()),
            };
            self.resolve(tx, alert, resolution, now).await?;
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
        let announcement = Announcement {
            alert,
            step: *step,
            span: tracing::Span::current(),
        };
        self.announce_all(tx, &[announcement], now).await
    }

    /// Tells the mesh, the endpoints and the live streams of many steps, a statement each
    /// for the events, the endpoints, the notifications and the live-stream notices.
    async fn announce_all(
        &self,
        tx: &mut impl Tx,
        announcements: &[Announcement<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        if announcements.is_empty() {
            return Ok(());
        }
        let events: Vec<TracedEvent> = announcements
            .iter()
            .map(|Announcement { alert, step, span }| {
                let event = NewEvent {
                    topic: self.topic.clone(),
                    // One subject's alert events stay in order.
                    key: alert.subject.id.clone(),
                    event_type: step.event().event_type(),
                    payload: event_payload(step, alert),
                    occurred_at: now,
                };
                span.in_scope(|| event.traced())
            })
            .collect();
        tx.publish_all_unaudited(&events).await?;
        let conn = tx.conn();
        // Who is told depends on whether the alert's township office has an endpoint, so
        // those are read first, then the other offices told.
        let townships = distinct(announcements.iter().map(|a| &a.alert.jurisdiction), |_| true);
        let mut endpoints = store::queue::endpoints_of(&mut *conn, &townships).await?;
        let audiences: Vec<Vec<notice::Notice>> = announcements
            .iter()
            .map(|a| notice::audience(a.alert, &a.step, endpoints.contains_key(&a.alert.jurisdiction)))
            .collect();
        let others = distinct(audiences.iter().flatten().map(|n| &n.office), |office| {
            !townships.contains(office)
        });
        endpoints.extend(store::queue::endpoints_of(&mut *conn, &others).await?);
        let notifications: Vec<NewNotification<'_>> = announcements
            .iter()
            .zip(&audiences)
            .flat_map(|(a, audience)| {
                let endpoints = &endpoints;
                audience.iter().filter_map(move |notice| {
                    let endpoint_id = *endpoints.get(&notice.office)?;
                    let event_type = a.step.event().event_type();
                    Some(notification(
                        a.alert,
                        event_type,
                        endpoint_id,
                        &notice.reason,
                        now,
                    ))
                })
            })
            .collect();
        store::queue::queue_all(&mut *conn, &notifications, now).await?;
        let changes: Vec<String> = announcements
            .iter()
            .map(|a| change_payload(a.alert, &a.step))
            .collect();
        sqlx::query("SELECT pg_notify($1, change) FROM UNNEST($2::text[]) AS change")
            .bind(CHANGES_CHANNEL)
            .bind(&changes)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// An alert to raise, with the span whose trace its event carries on (a missed deadline
/// starts a trace of its own).
#[derive(Debug)]
pub struct Raising {
    pub draft: NewAlert,
    pub span: tracing::Span,
}

/// A step to announce, with the span whose trace its event carries on.
struct Announcement<'a> {
    alert: &'a Alert,
    step: Step<'a>,
    span: tracing::Span,
}

/// The offices among `offices` that `keep` keeps, each once, in first-seen order.
fn distinct<'a>(
    offices: impl Iterator<Item = &'a Jurisdiction>,
    keep: impl Fn(&Jurisdiction) -> bool,
) -> Vec<Jurisdiction> {
    let mut seen = Vec::new();
    for office in offices {
        if keep(office) && !seen.contains(office) {
            seen.push(office.clone());
        }
    }
    seen
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
    let one = [notification(alert, event_type, endpoint_id, reason, now)];
    store::queue::queue_all(conn, &one, now).await
}

/// A notification of `alert` to `endpoint_id`, its body written now (signed when sent).
fn notification<'a>(
    alert: &Alert,
    event_type: &'a str,
    endpoint_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> NewNotification<'a> {
    let notification_id = Uuid::now_v7();
    NewNotification {
        notification_id,
        alert_id: alert.id,
        event_type,
        endpoint_id,
        body: notify::body(notification_id, event_type, alert, now, reason),
    }
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
