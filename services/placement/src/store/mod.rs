//! The one place with SQL: the rows of bases, openings, candidates and placements, the
//! locking reads, inserts and updates of the API, and the candidate projection's writes.
//! Every function runs on a connection the caller owns (a [`Change`] or the consumer's
//! transaction) and returns [`ServiceError`] (via `From<sqlx::Error>`).
//!
//! Lock order, everywhere: candidate, then placement, then opening — so concurrent handlers
//! (and the event projection) never deadlock. Changes to one record take its row with
//! `FOR NO KEY UPDATE`: it excludes other writers but not the foreign-key checks of rows
//! being inserted meanwhile that reference it (ids never change).
//!
//! [`Change`]: mesh_kit::change::Change

pub mod bases;
pub mod candidates;
pub mod openings;
pub mod placements;
pub mod sources;

use mesh_kit::{error::ServiceError, page::Page};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{
        BaseType, CandidateSource, DeclinedBy, EndReason, Offence, OpeningStatus, PlacementStatus, Sector,
    },
    request::NameCursor,
};

pub use bases::Base;
pub use candidates::Candidate;
pub use openings::Opening;
pub use placements::Placement;

/// How a single-record read locks its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// A plain read.
    None,
    /// `FOR SHARE`: the row may not change until the transaction ends (a base while an
    /// opening is added to it).
    Share,
    /// `FOR NO KEY UPDATE`: the row lock that serialises changes to one record.
    Update,
}

impl Lock {
    /// The clause, locking only `of` (e.g. `o`) in a join.
    fn clause(self, of: Option<&str>) -> String {
        let mode = match self {
            Lock::None => return String::new(),
            Lock::Share => "FOR SHARE",
            Lock::Update => "FOR NO KEY UPDATE",
        };
        match of {
            Some(table) => format!(" {mode} OF {table}"),
            None => format!(" {mode}"),
        }
    }
}

/// The one row `sql` selects for `id` (its only parameter), or `NotFound` with `missing`.
async fn load_one<R>(conn: &mut PgConnection, sql: &str, id: Uuid, missing: &str) -> Result<R, ServiceError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let row: Option<R> = sqlx::query_as(sql).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ServiceError::not_found(missing))
}

/// The SQL predicate of a placement that is not final (proposed, accepted or started). Kept
/// as a literal, not a parameter: it is the predicate of the partial unique index
/// `placements_one_current_per_candidate`, which the planner only matches literally.
const LIVE_PLACEMENT: &str = "status IN ('proposed', 'accepted', 'started')";

/// Columns the domain's stored enumerations are kept in are plain `text`: this lets rows
/// decode them, and queries bind them, as the enums themselves. A stored value the enum does
/// not know is a decoding error (an internal error, as it means a schema/code mismatch).
///
/// Local to this crate for now: proposed for the kit's `stored_enum!` (see the report).
macro_rules! stored_as_text {
    ($($name:ty),+ $(,)?) => {$(
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
            fn array_compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::postgres::PgHasArrayType>::array_compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                <$name>::parse(text)
                    .ok_or_else(|| format!("unknown stored {} {text:?}", stringify!($name)).into())
            }
        }
    )+};
}

stored_as_text!(
    BaseType,
    CandidateSource,
    DeclinedBy,
    EndReason,
    Offence,
    OpeningStatus,
    PlacementStatus,
    Sector
);

/// Where a page of a list ordered by name, then id, starts (after this name and id).
fn resume_after(page: &Page<NameCursor>) -> (Option<&str>, Option<Uuid>) {
    page.after.as_ref().map(|(name, id)| (name.as_str(), *id)).unzip()
}

/// A count column (positions) as the domain counts: never negative (the schema checks it).
fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A count as stored.
fn stored_count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_placements_are_the_ones_not_final() {
        let live: Vec<String> = PlacementStatus::ALL
            .iter()
            .filter(|status| !status.is_final())
            .map(|status| format!("'{status}'"))
            .collect();
        assert_eq!(LIVE_PLACEMENT, format!("status IN ({})", live.join(", ")));
    }

    #[test]
    fn lock_clauses() {
        assert_eq!(Lock::None.clause(Some("o")), "");
        assert_eq!(Lock::Share.clause(None), " FOR SHARE");
        assert_eq!(Lock::Update.clause(Some("o")), " FOR NO KEY UPDATE OF o");
    }
}
