//! Reading handovers: one by id, or a page of a prison's, a township's or a county's. Every
//! read is audited (it shows personal data).

use mesh_kit::{
    auth::{Caller, Role},
    change::Tx,
    error::{FieldViolations, ServiceError},
};
use mesh_proto::handover as pb;
use uuid::Uuid;

use super::{Handovers, record_handover_id};
use crate::{
    domain::access::{self, READERS},
    request, response, store,
};

impl Handovers {
    pub(super) async fn get(
        &self,
        caller: &Caller,
        request: &pb::GetHandoverRequest,
    ) -> Result<pb::Handover, ServiceError> {
        caller.ensure_role(READERS)?;
        let id = request::handover_id(&request.handover_id)?;
        record_handover_id(id);
        let mut change = self.changes.begin().await?;
        let handover = store::find(&mut change, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("no such handover"))?;
        access::ensure_can_read(caller, &handover)?;
        change
            .audit(caller, "handover.get", Some(id), None, serde_json::json!({}))
            .await?;
        let answer = self.full(&mut change, &handover).await?;
        change.commit().await?;
        Ok(answer)
    }

    pub(super) async fn list(
        &self,
        caller: &Caller,
        request: &pb::ListHandoversRequest,
    ) -> Result<pb::ListHandoversResponse, ServiceError> {
        caller.ensure_role(READERS)?;
        let query = request::list(request, &self.cursors)?;
        query.scope.ensure_access(caller)?;
        let mut change = self.changes.begin().await?;
        let rows = store::list(
            &mut change,
            &query.scope,
            &query.statuses,
            query.page.after,
            query.page.fetch_limit(),
        )
        .await?;
        let (rows, page) = self
            .cursors
            .finish(&query.cursor_scope, query.page.size, rows, |handover| {
                (handover.notified_at, handover.id)
            });
        let ids: Vec<_> = rows.iter().map(|handover| handover.id).collect();
        let mut amendments = store::amendments(&mut change, &ids).await?;
        let detail = serde_json::json!({
            "scope": query.scope.field(),
            "value": query.scope.value(),
            "returned": rows.len(),
        });
        change.audit(caller, "handover.list", None, None, detail).await?;
        change.commit().await?;
        let handovers = rows
            .iter()
            .map(|handover| {
                let amendments = amendments.remove(&handover.id).unwrap_or_default();
                response::handover(handover, &amendments, &self.sealer)
            })
            .collect::<Result<_, _>>()?;
        Ok(pb::ListHandoversResponse {
            handovers,
            page: Some(page),
        })
    }

    /// Every handover awaiting report-in, for the coverage reconciliation (system and
    /// admin callers; nothing sealed is opened).
    pub(super) async fn awaiting_report_in(
        &self,
        caller: &Caller,
        request: &pb::ListAwaitingReportInRequest,
    ) -> Result<pb::ListAwaitingReportInResponse, ServiceError> {
        caller.ensure_role(&[Role::System, Role::Admin])?;
        const SCOPE: &str = "handover.awaiting_report_in";
        let mut violations = FieldViolations::new();
        let page = self
            .cursors
            .page::<Uuid>(SCOPE, request.page.as_ref(), &mut violations);
        violations.into_result()?;
        let mut change = self.changes.begin().await?;
        let rows = store::awaiting_report_in(&mut change, page.after, page.fetch_limit()).await?;
        change.commit().await?;
        let (rows, page) = self
            .cursors
            .finish(SCOPE, page.size, rows, |handover| handover.id);
        Ok(pb::ListAwaitingReportInResponse {
            handovers: rows.iter().map(response::awaiting_report_in).collect(),
            page: Some(page),
        })
    }
}
