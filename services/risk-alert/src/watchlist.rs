//! Recomputing a subject's deadlines from what is known of it, inside the caller's
//! transaction and under the subject's row lock: after every event, after a person resolves
//! a deadline alert, and when the coverage reconciliation restores a broken watch. Rows
//! that a recomputation would rebuild unchanged keep their rolled or fired state
//! (`domain::schedule::merge`).

use chrono_tz::Tz;
use mesh_kit::error::ServiceError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{policy::Policy, schedule, watch},
    store,
};

/// Where deadlines are computed: the policy and the office's time zone.
#[derive(Debug, Clone, Copy)]
pub struct Watchlist {
    pub policy: Policy,
    pub tz: Tz,
}

impl Watchlist {
    /// Recomputes a supervisee's deadlines (none while not watched); false when the
    /// supervisee is not known.
    pub async fn reschedule_supervisee(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<bool, ServiceError> {
        let Some(known) = store::watch::supervisee_for_update(conn, id).await? else {
            store::deadlines::replace(conn, id, &[]).await?;
            return Ok(false);
        };
        let computed = watch::supervisee_deadlines(&self.policy, self.tz, &known);
        self.keep(conn, id, &computed).await?;
        Ok(true)
    }

    /// Recomputes a handover's deadlines (none once settled); false when it is not known.
    pub async fn reschedule_handover(&self, conn: &mut PgConnection, id: Uuid) -> Result<bool, ServiceError> {
        let Some(known) = store::watch::handover_for_update(conn, id).await? else {
            store::deadlines::replace(conn, id, &[]).await?;
            return Ok(false);
        };
        let computed = watch::handover_deadlines(&self.policy.handover, self.tz, &known);
        self.keep(conn, id, &computed).await?;
        Ok(true)
    }

    async fn keep(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        computed: &[crate::domain::policy::Deadline],
    ) -> Result<(), ServiceError> {
        let stored = store::deadlines::of_subject(conn, id).await?;
        let merged = schedule::merge(&stored, computed);
        if merged != stored {
            store::deadlines::replace(conn, id, &merged).await?;
        }
        Ok(())
    }
}
