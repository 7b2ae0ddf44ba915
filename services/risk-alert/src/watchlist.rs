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
        policy::{Deadline, Policy},
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
        let computed = ids
            .iter()
            .map(|id| {
                let deadlines = known
                    .get(id)
                    .map(|known| watch::supervisee_deadlines(&self.policy, self.tz, known));
                (*id, deadlines)
            })
            .collect();
        self.keep(conn, computed).await?;
        Ok(known.len())
    }

    /// Recomputes a handover's deadlines (none once settled); false when it is not known.
    pub async fn reschedule_handover(&self, conn: &mut PgConnection, id: Uuid) -> Result<bool, ServiceError> {
        let deadlines = store::watch::handover_for_update(conn, id)
            .await?
            .map(|known| watch::handover_deadlines(&self.policy.handover, self.tz, &known));
        let known = deadlines.is_some();
        self.keep(conn, vec![(id, deadlines)]).await?;
        Ok(known)
    }

    /// Stores each subject's computed deadlines (`None`: the subject is not known, so it has
    /// none), rows rebuilt unchanged keeping their rolled or fired state
    /// (`schedule::merge`); only the subjects whose deadlines change are rewritten, with one
    /// read and one rewrite for them all.
    async fn keep(
        &self,
        conn: &mut PgConnection,
        computed: Vec<(Uuid, Option<Vec<Deadline>>)>,
    ) -> Result<(), ServiceError> {
        let ids: Vec<Uuid> = computed.iter().map(|(id, _)| *id).collect();
        let mut stored = store::deadlines::of_subjects(conn, &ids).await?;
        let changed: Vec<(Uuid, Vec<Scheduled>)> = computed
            .into_iter()
            .filter_map(|(id, computed)| {
                let stored = stored.remove(&id).unwrap_or_default();
                let merged = computed.map_or_else(Vec::new, |computed| schedule::merge(&stored, &computed));
                (merged != stored).then_some((id, merged))
            })
            .collect();
        store::deadlines::replace_all(conn, &changed).await
    }
}
