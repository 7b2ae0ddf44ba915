//! The consumer of registry, check-in and handover events. Each event is applied once, in
//! the transaction that records it: the projection of what is watched moves, the alerts it
//! answers are resolved (and an out-of-area check-in raises its own), and the subject's
//! deadlines are computed again — once per subject for a whole batch of events, and for a
//! check-in only when it moves the last contact.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use mesh_kit::{
    clock::SharedClock,
    consumer::{HandleError, Handler, InboundEvent},
    error::ServiceError,
    events,
};
use mesh_proto::checkin::CheckinRecorded;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{
        answers::{self, Answers, Contact, Withdrawal},
        compose,
        watch::{self, Checkin, HandoverSnapshot, SuperviseeSnapshot, SuperviseeStatus},
    },
    inbound,
    lifecycle::Lifecycle,
    store,
    watchlist::Watchlist,
};

/// Applies events to the projection.
pub struct Projection {
    pub watchlist: Watchlist,
    pub clock: SharedClock,
    pub lifecycle: Lifecycle,
}

/// The subjects whose deadlines must be computed again before the transaction commits,
/// each once however many events of the batch changed it.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    supervisees: BTreeSet<Uuid>,
    handovers: BTreeSet<Uuid>,
}

impl Dirty {
    async fn reschedule(self, watchlist: &Watchlist, conn: &mut PgConnection) -> Result<(), ServiceError> {
        for id in self.supervisees {
            watchlist.reschedule_supervisee(conn, id).await?;
        }
        for id in self.handovers {
            watchlist.reschedule_handover(conn, id).await?;
        }
        Ok(())
    }
}

impl Handler for Projection {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        self.handle_batch(conn, std::slice::from_ref(event)).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[InboundEvent],
    ) -> Result<(), HandleError> {
        let mut dirty = Dirty::default();
        for event in events {
            self.apply(conn, event, &mut dirty).await?;
        }
        dirty
            .reschedule(&self.watchlist, conn)
            .await
            .map_err(HandleError::from)
    }
}

impl Projection {
    /// Applies one event; the subjects whose deadlines it changed go to `dirty`.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
        dirty: &mut Dirty,
    ) -> Result<(), HandleError> {
        let occurred_at = event.occurred_at.unwrap_or_else(|| self.clock.now());
        let applied = if event.event_type == "checkin.recorded" {
            let checkin = inbound::checkin(event.decode::<CheckinRecorded>()?)?;
            self.apply_checkin(conn, checkin, dirty).await
        } else if let Some(snapshot) = events::supervisee_snapshot(event)? {
            let from_handover = inbound::registered_handover(event, &snapshot)?;
            let snapshot = inbound::supervisee(snapshot)?;
            let (id, supervised) = (
                snapshot.id,
                snapshot.status.is_some_and(SuperviseeStatus::is_watched),
            );
            let applied = self.apply_supervisee(conn, snapshot, occurred_at, dirty).await;
            // The 漏管 watch ends once the person is under supervision (a pending record
            // linked to the handover is not yet).
            match from_handover {
                Some(handover_id) if applied.is_ok() && supervised => {
                    let reference = format!("{}:{}", event.event_type, event.event_id);
                    self.apply_registration(conn, handover_id, id, &reference, dirty)
                        .await
                }
                _ => applied,
            }
        } else if let Some(snapshot) = events::handover_snapshot(event)? {
            // A stale snapshot is skipped before the rest of it is read, so an old one that
            // lacks what a current one needs is not dead-lettered.
            let id = inbound::handover_id(&snapshot)?;
            let existing = store::watch::handover_for_update(conn, id)
                .await
                .map_err(HandleError::from)?;
            if watch::is_stale(existing.as_ref().map(|watch| watch.version), snapshot.version) {
                return Ok(());
            }
            let snapshot = inbound::handover(snapshot)?;
            let reference = format!("{}:{}", event.event_type, event.event_id);
            self.apply_handover(conn, snapshot, existing, (&reference, occurred_at), dirty)
                .await
        } else {
            // Other event types on these topics are not about deadlines.
            Ok(())
        };
        applied.map_err(HandleError::from)
    }

    /// Applies a registry snapshot unless a newer one was applied already.
    pub(crate) async fn apply_supervisee(
        &self,
        conn: &mut PgConnection,
        snapshot: SuperviseeSnapshot,
        occurred_at: DateTime<Utc>,
        dirty: &mut Dirty,
    ) -> Result<(), ServiceError> {
        let existing = store::watch::supervisee_for_update(conn, snapshot.id).await?;
        if watch::is_stale(existing.as_ref().map(|watch| watch.version), snapshot.version) {
            return Ok(());
        }
        let first_contact = watch::first_contact(existing.as_ref(), &snapshot, occurred_at);
        let episode = watch::episode(existing.as_ref(), &snapshot, occurred_at);
        let report_in_from = snapshot
            .term_start
            .and_then(|day| watch::start_of(day, self.watchlist.tz));
        store::watch::save_supervisee(conn, &snapshot, first_contact, episode, report_in_from).await?;

        let now = self.clock.now();
        if watch::transferred(existing.as_ref(), &snapshot.jurisdiction) {
            // Open alerts follow the person to the new township.
            for alert in store::alerts::open_for_subject(conn, &snapshot.subject_id).await? {
                self.lifecycle
                    .move_to(conn, alert, snapshot.jurisdiction.clone(), now)
                    .await?;
            }
        }
        let withdrawals = answers::status_withdrawal(snapshot.status)
            .into_iter()
            .chain(answers::report_in_answered(snapshot.status));
        for withdrawal in withdrawals {
            let reference = format!(
                "supervisee.status:{}",
                snapshot.status.map(|status| status.as_str()).unwrap_or_default()
            );
            self.lifecycle
                .withdraw(conn, &snapshot.subject_id, &withdrawal, &reference, now)
                .await?;
        }
        dirty.supervisees.insert(snapshot.id);
        Ok(())
    }

    /// Applies a check-in: a verified one moves the last contact, resolves what it answers
    /// and moves the deadlines (when it is the newest contact); a flagged one raises the
    /// out-of-area alert.
    async fn apply_checkin(
        &self,
        conn: &mut PgConnection,
        checkin: Checkin,
        dirty: &mut Dirty,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let existing = store::watch::supervisee_for_update(conn, checkin.supervisee).await?;
        if checkin.identity_verified {
            if watch::moves_contact(existing.as_ref(), &checkin) {
                dirty.supervisees.insert(checkin.supervisee);
            }
            store::watch::record_contact(conn, &checkin).await?;
            let answered = Withdrawal {
                answers: Answers::Contact(Contact {
                    at: checkin.device_time,
                    in_person: checkin.in_person(),
                }),
                note: "contact restored by a check-in".to_owned(),
            };
            let reference = format!("checkin:{}", checkin.checkin_id);
            self.lifecycle
                .withdraw(conn, &checkin.subject_id, &answered, &reference, now)
                .await?;
        }
        let name = existing.map(|watch| watch.name).unwrap_or_default();
        if let Some(draft) = compose::out_of_area_alert(&checkin, name) {
            self.lifecycle.raise(conn, draft, now).await?;
        }
        Ok(())
    }

    /// Applies a (fresh) handover snapshot: projection, resolutions, and its deadlines.
    async fn apply_handover(
        &self,
        conn: &mut PgConnection,
        snapshot: HandoverSnapshot,
        existing: Option<watch::HandoverWatch>,
        (reference, occurred_at): (&str, DateTime<Utc>),
        dirty: &mut Dirty,
    ) -> Result<(), ServiceError> {
        let redirected = watch::redirected(existing.as_ref(), &snapshot.destination);
        let ack_since = watch::ack_since(existing.as_ref(), redirected, snapshot.notified_at, occurred_at);
        store::watch::save_handover(conn, &snapshot, ack_since).await?;
        let settled = store::watch::handover_for_update(conn, snapshot.id)
            .await?
            .is_some_and(|watch| watch.is_settled());
        let now = self.clock.now();
        for withdrawal in answers::handover_withdrawals(&snapshot, redirected, settled) {
            self.lifecycle
                .withdraw(conn, &snapshot.subject_id, &withdrawal, reference, now)
                .await?;
        }
        dirty.handovers.insert(snapshot.id);
        Ok(())
    }

    /// Applies the registry's registration of the person a handover released: the handover
    /// is settled (its 漏管 watch ends) once it was also reported in.
    async fn apply_registration(
        &self,
        conn: &mut PgConnection,
        handover_id: Uuid,
        supervisee_id: Uuid,
        reference: &str,
        dirty: &mut Dirty,
    ) -> Result<(), ServiceError> {
        let Some(handover) = store::watch::handover_for_update(conn, handover_id).await? else {
            tracing::warn!(%handover_id, "registration names a handover not known here");
            return Ok(());
        };
        store::watch::mark_registered(conn, handover_id, supervisee_id).await?;
        let settled = watch::HandoverWatch {
            registered: true,
            ..handover
        };
        if settled.is_settled() {
            let now = self.clock.now();
            self.lifecycle
                .withdraw(
                    conn,
                    &handover_id.to_string(),
                    &answers::registration_withdrawal(),
                    reference,
                    now,
                )
                .await?;
        }
        dirty.handovers.insert(handover_id);
        Ok(())
    }
}
