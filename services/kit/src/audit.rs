//! The audit log every service keeps (`kit_audit_log`, an append-only table created by the
//! kit's migrations in each service database): who read or changed which record, and whose
//! personal data that touched. Handlers call [`record`] inside the transaction of the read or
//! change it audits, so an action is never stored without its audit record, nor the reverse.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::Caller;

/// Appends an audit record in the caller's transaction.
///
/// `subject_id` is the record acted on (`None` for lists and jurisdiction-wide actions);
/// `person_id` is whose personal data was read or changed, when known and not the subject
/// itself (a placement's candidate). `detail` holds what else identifies the action, such
/// as a list's scope and size; it must not repeat the personal data itself.
pub async fn record(
    conn: &mut PgConnection,
    caller: &Caller,
    action: &str,
    subject_id: Option<Uuid>,
    person_id: Option<Uuid>,
    detail: serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO kit_audit_log (actor_subject, actor_role, action, subject_id, person_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&caller.subject)
    .bind(caller.role.as_str())
    .bind(action)
    .bind(subject_id)
    .bind(person_id)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}
