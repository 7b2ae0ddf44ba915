//! The consumer of registry, check-in and handover events. Each event is applied once, in
//! the transaction that records it: the projection of what is watched moves, the alerts it
//! answers are resolved (and an out-of-area check-in raises its own), and the subject's
//! deadlines are computed again — once per subject for a whole batch of events, and for a
//! check-in only when it moves the last contact. Check-ins, the bulk of the traffic, are
//! applied a run at a time with a few statements per run rather than per check-in; the
//! deadlines of a batch's people are computed again together (`Watchlist`).

use std::collections::{BTreeSet, HashMap};

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
        alert::Alert,
        answers::{self, Answers, Contact, Withdrawal},
        compose, contacts,
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
        let supervisees: Vec<Uuid> = self.supervisees.into_iter().collect();
        watchlist.reschedule_supervisees(conn, &supervisees).await?;
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

    /// Applies the events in order. Consecutive plain check-ins (verified, in the permitted
    /// area: the bulk of the traffic) are applied as one run, set-based; any other event,
    /// a flagged check-in included, is applied on its own between runs, so each subject's
    /// events keep their order.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[InboundEvent],
    ) -> Result<(), HandleError> {
        let mut dirty = Dirty::default();
        let mut run: Vec<Checkin> = Vec::new();
        for event in events {
            if event.event_type == CHECKIN_RECORDED {
                let checkin = inbound::checkin(event.decode::<CheckinRecorded>()?)?;
                if is_plain(&checkin) {
                    run.push(checkin);
                    continue;
                }
                self.apply_checkins(conn, &std::mem::take(&mut run), &mut dirty)
                    .await?;
                self.apply_checkins(conn, &[checkin], &mut dirty).await?;
                continue;
            }
            self.apply_checkins(conn, &std::mem::take(&mut run), &mut dirty)
                .await?;
            self.apply(conn, event, &mut dirty).await?;
        }
        self.apply_checkins(conn, &run, &mut dirty).await?;
        dirty
            .reschedule(&self.watchlist, conn)
            .await
            .map_err(HandleError::from)
    }
}

const CHECKIN_RECORDED: &str = "checkin.recorded";

/// A check-in that proves contact and raises nothing: applied in a run with its neighbours.
fn is_plain(checkin: &Checkin) -> bool {
    checkin.identity_verified && checkin.out_of_area.is_none()
}

impl Projection {
    /// Applies one event other than a check-in; the subjects whose deadlines it changed go
    /// to `dirty`.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
        dirty: &mut Dirty,
    ) -> Result<(), HandleError> {
        let occurred_at = event.occurred_at.unwrap_or_else(|| self.clock.now());
        let applied = if let Some(snapshot) = events::supervisee_snapshot(event)? {
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

    /// Applies check-ins in order, with a few statements for the whole run: the people's
    /// rows are locked at once, the verified ones' contacts written at once (one row per
    /// person), their open alerts read at once and resolved where a contact answers them;
    /// the people whose last contact moved go to `dirty`. A flagged check-in raises its
    /// out-of-area alert (it comes in a run of its own, so the alert follows what came
    /// before it and precedes what comes after).
    async fn apply_checkins(
        &self,
        conn: &mut PgConnection,
        checkins: &[Checkin],
        dirty: &mut Dirty,
    ) -> Result<(), ServiceError> {
        if checkins.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let people: Vec<Uuid> = checkins
            .iter()
            .map(|checkin| checkin.supervisee)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let known = store::watch::lock_supervisees(conn, &people).await?;
        let verified: Vec<&Checkin> = checkins
            .iter()
            .filter(|checkin| checkin.identity_verified)
            .collect();
        if !verified.is_empty() {
            let contacts = contacts::apply(&known, verified.iter().copied());
            dirty.supervisees.extend(contacts.moved);
            store::watch::record_contacts(conn, &contacts.updates).await?;
            let subjects: Vec<String> = verified
                .iter()
                .map(|checkin| checkin.subject_id.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut open: HashMap<String, Vec<Alert>> = HashMap::new();
            for alert in store::alerts::open_for_subjects(conn, &subjects).await? {
                open.entry(alert.subject.id.clone()).or_default().push(alert);
            }
            for checkin in verified {
                let Some(alerts) = open.get_mut(&checkin.subject_id) else {
                    continue;
                };
                let answered = Withdrawal {
                    answers: Answers::Contact(Contact {
                        at: checkin.device_time,
                        in_person: checkin.in_person(),
                    }),
                    note: "contact restored by a check-in".to_owned(),
                };
                let reference = format!("checkin:{}", checkin.checkin_id);
                self.lifecycle
                    .withdraw_from(conn, alerts, &answered, &reference, now)
                    .await?;
            }
        }
        for checkin in checkins {
            let name = known
                .get(&checkin.supervisee)
                .map(|watch| watch.name.clone())
                .unwrap_or_default();
            if let Some(draft) = compose::out_of_area_alert(checkin, name) {
                self.lifecycle.raise(conn, draft, now).await?;
            }
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
