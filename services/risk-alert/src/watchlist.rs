//! Recomputing a subject's deadlines from what is known of it, inside the caller's
//! transaction and under the subject's row lock: after every event, after a person resolves
//! a deadline alert, and when the coverage reconciliation restores a broken watch. Rows
//! that a recomputation would rebuild unchanged keep their rolled or fired state
//! (`domain::schedule::merge`).

use std::collections::BTreeSet;

use chrono_tz::Tz;
use mesh_kit::error::ServiceError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{
        policy::Policy,
        schedule::{self, Scheduled},
        watch,
    },
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
        Ok(self.reschedule_supervisees(conn, &[id]).await? == 1)
    }

    /// Recomputes the deadlines of each of `ids` with a few statements for them all (a
    /// batch of events touching many people): their rows locked and read at once, their
    /// stored deadlines read at once, and those whose deadlines change rewritten at once.
    /// Returns how many of them are known.
    pub async fn reschedule_supervisees(
        &self,
        conn: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<usize, ServiceError> {
        if ids.is_empty() {
            return Ok(0);
        }
        // Each once: a subject's rows are rewritten by one statement at most once.
        let ids: Vec<Uuid> = ids.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let known = store::watch::lock_supervisees(conn, &ids).await?;
        let mut stored = store::deadlines::of_subjects(conn, &ids).await?;
        let changed: Vec<(Uuid, Vec<Scheduled>)> = ids
            .iter()
            .filter_map(|id| {
                let stored = stored.remove(id).unwrap_or_default();
                // A person not known has no deadlines.
                let merged = known.get(id).map_or_else(Vec::new, |known| {
                    let computed = watch::supervisee_deadlines(&self.policy, self.tz, known);
                    schedule::merge(&stored, &computed)
                });
                (merged != stored).then_some((*id, merged))
            })
            .collect();
        store::deadlines::replace_all(conn, &changed).await?;
        Ok(known.len())
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
