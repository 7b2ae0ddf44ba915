//! The one place with SQL: the alerts (`alerts`), what is watched (`watch`) and its
//! deadlines (`deadlines`), webhook endpoints and their queued notifications (`webhooks`),
//! notifications queued many at once (`queue`), delivery leases and attempts (`deliveries`),
//! the retention of finished notifications' bodies (`purge`).
//! Functions run on the connection or transaction they are given (the caller decides the
//! transaction), return domain values or plain rows, and fail with `ServiceError` (database
//! errors classified by the kit).

pub mod alerts;
pub mod deadlines;
pub mod deliveries;
pub mod purge;
pub mod queue;
pub mod watch;
pub mod webhooks;
