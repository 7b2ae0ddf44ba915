//! The prison's RPCs: submit, amend and cancel a release notice.

use mesh_kit::{auth::Caller, change::Change, error::ServiceError};
use mesh_proto::handover as pb;
use uuid::Uuid;

use super::{Handovers, record_handover_id};
use crate::{
    domain::{
        Actor, Amendment, Decision, Destination, Handover, Step, SubmitError,
        access::{self, Side},
        lifecycle,
    },
    events::Event,
    request, store,
    store::Inserted,
};

impl Handovers {
    /// Submits a notice; answers the handover and whether it was a repeat of an earlier
    /// submission of the same notice.
    pub(super) async fn submit(
        &self,
        caller: &Caller,
        request: &pb::SubmitReleaseNoticeRequest,
    ) -> Result<(pb::Handover, bool), ServiceError> {
        caller.ensure_role(Side::ReleasingPrison.roles())?;
        let notice = request::notice(request, self.today(), self.rules.past_tolerance_days)?;
        access::ensure_own_notice(caller, &notice.prison_id)?;
        let now = self.now();
        let sealed = self.sealer.seal_notice(&notice);
        let (prison_id, reference) = (&notice.prison_id, &notice.prison_reference);
        let mut change = self.changes.begin().await?;
        let handover = match store::insert(&mut change, Uuid::now_v7(), &notice, &sealed, now).await? {
            Inserted::New(handover) => *handover,
            Inserted::ReferenceTaken => {
                let existing = store::submitted(&mut change, prison_id, reference)
                    .await?
                    .ok_or_else(|| ServiceError::internal("conflicting notice vanished"))?;
                return self
                    .resubmission(change, caller, &existing, &sealed.fingerprint)
                    .await;
            }
            Inserted::Refused => {
                // A concurrent submission of the same notice can trip the
                // one-open-handover-per-person index before the reference constraint; once
                // that transaction committed, the notice exists and this is a repeat.
                drop(change);
                let mut change = self.changes.begin().await?;
                let Some(existing) = store::submitted(&mut change, prison_id, reference).await? else {
                    return Err(SubmitError::OpenHandover.into());
                };
                return self
                    .resubmission(change, caller, &existing, &sealed.fingerprint)
                    .await;
            }
        };
        record_handover_id(handover.id);
        let detail = serde_json::json!({
            "prison_id": handover.prison_id,
            "prison_reference": handover.prison_reference,
            "township_code": handover.destination.township_code,
            "category": handover.category.as_str(),
        });
        let answer = self
            .publish(change, caller, &handover, Event::Notified, detail)
            .await?;
        tracing::info!(
            prison = %handover.prison_id,
            township = %handover.destination.township_code,
            category = %handover.category,
            "release notice submitted"
        );
        Ok((answer, false))
    }

    /// A notice submitted again under an existing reference: the existing handover, no event,
    /// if the content is the same (see [`lifecycle::resubmission`]).
    async fn resubmission(
        &self,
        change: Change,
        caller: &Caller,
        existing: &Handover,
        fingerprint: &[u8],
    ) -> Result<(pb::Handover, bool), ServiceError> {
        record_handover_id(existing.id);
        lifecycle::resubmission(existing, fingerprint)?;
        let answer = self.repeated(change, caller, "notified", existing).await?;
        Ok((answer, true))
    }

    pub(super) async fn amend(
        &self,
        caller: &Caller,
        request: &pb::AmendReleaseNoticeRequest,
    ) -> Result<pb::Handover, ServiceError> {
        let side = Side::ReleasingPrison;
        let id = self.step_target(caller, side, &request.handover_id)?;
        let amendment = request::amendment(request, self.today(), self.rules.past_tolerance_days)?;
        let (mut change, current) = self.lock(caller, side, id).await?;
        let Decision::Apply {
            transition,
            change: values,
        } = lifecycle::amend(&current, &amendment)?
        else {
            let step = Step::AmendReleaseDate.target();
            return self.repeated(change, caller, step, &current).await;
        };
        let now = self.now();
        let handover = store::amend(&mut change, id, transition.to, &values, now).await?;
        let record = Amendment::record(&current, values, amendment.reason, Actor::from(caller), now);
        store::insert_amendment(&mut change, &record).await?;
        let township = |destination: Option<&Destination>| destination.map(|d| d.township_code.clone());
        let detail = serde_json::json!({
            "from": transition.from.as_str(),
            "to": transition.to.as_str(),
            "previous_expected_release_date": record.previous_expected_release_date,
            "new_expected_release_date": record.new_expected_release_date,
            "previous_township_code": township(record.previous_destination.as_ref()),
            "new_township_code": township(record.new_destination.as_ref()),
            "reason": record.reason,
        });
        let event = Event::Amended { amendment: &record };
        self.publish(change, caller, &handover, event, detail).await
    }

    pub(super) async fn cancel(
        &self,
        caller: &Caller,
        request: &pb::CancelReleaseNoticeRequest,
    ) -> Result<pb::Handover, ServiceError> {
        let side = Side::ReleasingPrison;
        let id = self.step_target(caller, side, &request.handover_id)?;
        let cancellation = request::cancellation(request)?;
        let (mut change, current) = self.lock(caller, side, id).await?;
        let Decision::Apply { transition, .. } = lifecycle::cancel(&current, &cancellation)? else {
            let step = Step::Cancel.target();
            return self.repeated(change, caller, step, &current).await;
        };
        let handover = store::cancel(&mut change, id, transition.to, &cancellation, self.now()).await?;
        let detail = serde_json::json!({
            "from": transition.from.as_str(),
            "reason": cancellation.reason.as_str(),
            "note": cancellation.note,
        });
        let event = Event::Cancelled {
            cancellation: &cancellation,
        };
        self.publish(change, caller, &handover, event, detail).await
    }
}
