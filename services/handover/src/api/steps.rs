//! The steps between notice and report-in: the township's acknowledgement, the prison's
//! release, the township's gate collection and report-in.

use mesh_kit::{auth::Caller, error::ServiceError};
use mesh_proto::handover as pb;

use super::Handovers;
use crate::{
    domain::{Actor, Decision, Level, Step, access::Side, lifecycle},
    events::Event,
    request, store,
};

impl Handovers {
    pub(super) async fn acknowledge(
        &self,
        caller: &Caller,
        request: &pb::AcknowledgeNoticeRequest,
    ) -> Result<pb::Handover, ServiceError> {
        let side = Side::ReceivingOffice;
        let id = self.step_target(caller, side, &request.handover_id)?;
        let (mut change, current) = self.lock(caller, side, id).await?;
        let Decision::Apply { transition, .. } = lifecycle::acknowledge(&current)? else {
            let step = Step::Acknowledge.target();
            return self.repeated(change, caller, step, &current).await;
        };
        let by = Actor::from(caller);
        let handover = store::acknowledge(&mut change, id, transition.to, &by, self.now()).await?;
        let detail = serde_json::json!({
            "from": transition.from.as_str(),
            "to": transition.to.as_str(),
        });
        self.publish(change, caller, &handover, Event::Acknowledged, detail)
            .await
    }

    pub(super) async fn release(
        &self,
        caller: &Caller,
        request: &pb::ConfirmReleaseRequest,
    ) -> Result<pb::Handover, ServiceError> {
        let side = Side::ReleasingPrison;
        let id = self.step_target(caller, side, &request.handover_id)?;
        let released_at = request::release_time(request, self.now())?;
        let (mut change, current) = self.lock(caller, side, id).await?;
        let Decision::Apply { transition, .. } = lifecycle::confirm_release(&current, released_at)? else {
            let step = Step::ConfirmRelease.target();
            return self.repeated(change, caller, step, &current).await;
        };
        let handover =
            store::confirm_release(&mut change, id, transition.to, released_at, self.now()).await?;
        let detail = serde_json::json!({
            "from": transition.from.as_str(),
            "to": transition.to.as_str(),
            "actual_release_time": released_at,
        });
        let answer = self
            .publish(change, caller, &handover, Event::Released, detail)
            .await?;
        tracing::info!(
            township = %handover.destination.township_code,
            key_assistance_target = handover.key_assistance_target,
            "release confirmed"
        );
        Ok(answer)
    }

    pub(super) async fn gate_collection(
        &self,
        caller: &Caller,
        request: &pb::RecordGateCollectionRequest,
    ) -> Result<pb::Handover, ServiceError> {
        let side = Side::ReceivingOffice;
        let id = self.step_target(caller, side, &request.handover_id)?;
        let collection = request::gate_collection(request, self.now())?;
        let (mut change, current) = self.lock(caller, side, id).await?;
        let Decision::Apply { transition, .. } = lifecycle::record_gate_collection(&current, &collection)?
        else {
            let step = Step::RecordGateCollection.target();
            return self.repeated(change, caller, step, &current).await;
        };
        let handover = store::record_gate_collection(&mut change, id, &collection, self.now()).await?;
        let detail = serde_json::json!({
            "status": transition.from.as_str(),
            "officer_id": collection.officer_id,
        });
        let event = Event::GateCollected {
            officer_id: &collection.officer_id,
        };
        self.publish(change, caller, &handover, event, detail).await
    }

    pub(super) async fn report_in(
        &self,
        caller: &Caller,
        request: &pb::RecordReportInRequest,
    ) -> Result<pb::Handover, ServiceError> {
        let side = Side::ReceivingOffice;
        let id = self.step_target(caller, side, &request.handover_id)?;
        let (mut change, current) = self.lock(caller, side, id).await?;
        // What is required depends on the handover's category and release time.
        let report = request::report_in(request, current.category, current.actual_release_time, self.now())?;
        let fingerprint = self.sealer.report_in_fingerprint(&report);
        let Decision::Apply { transition, .. } = lifecycle::record_report_in(&current, &fingerprint)? else {
            let step = Step::RecordReportIn.target();
            return self.repeated(change, caller, step, &current).await;
        };
        let now = self.now();
        let handover =
            store::record_report_in(&mut change, id, transition.to, &report, &fingerprint, now).await?;
        // The registry registers community-corrections persons from this event; the
        // national ID number, phone and address travel sealed for it alone.
        let sealed_personal = self.sealer.report_in_personal(&handover, &report)?;
        let detail = serde_json::json!({
            "from": transition.from.as_str(),
            "to": transition.to.as_str(),
            "officer_id": report.officer_id,
            "level": report.level.map(Level::as_str),
        });
        let event = Event::ReportedIn {
            report: &report,
            sealed_personal,
        };
        let answer = self.publish(change, caller, &handover, event, detail).await?;
        tracing::info!(township = %handover.destination.township_code, "report-in recorded");
        Ok(answer)
    }
}
