//! The one error type of every service, and the one place gRPC statuses are made.
//!
//! Domain rules, stores and handlers return [`ServiceError`]; `From<ServiceError> for Status`
//! turns it into a status at the edge. Bad input becomes `InvalidArgument` with a
//! `BadRequest` detail naming each offending field; database errors are classified by
//! SQLSTATE (a unique violation is `AlreadyExists`, a lost connection or a serialization
//! failure is the retryable `Unavailable`); internal details are logged, never returned.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Why a request or an event could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed: every offending field is named.
    #[error("invalid request: {0}")]
    Invalid(FieldViolations),
    /// The caller presented no valid identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller may not do this (role or jurisdiction).
    #[error("permission denied: {0}")]
    Denied(String),
    /// The record does not exist (or, to the caller, must look as if it did not).
    #[error("not found: {0}")]
    NotFound(String),
    /// The record already exists (a unique key is taken).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The request is well formed but the record's state does not allow it now.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The caller missed data it asked for (a live stream fell behind) and must start over.
    #[error("data lost: {0}")]
    DataLoss(String),
    /// A temporary infrastructure failure: the caller may retry the same request.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the detail is logged, the caller sees nothing of it.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    /// `Invalid` for a single field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        let mut violations = FieldViolations::new();
        violations.add(field, description);
        Self::Invalid(violations)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    pub fn denied(why: impl Into<String>) -> Self {
        Self::Denied(why.into())
    }

    pub fn conflict(what: impl Into<String>) -> Self {
        Self::Conflict(what.into())
    }

    pub fn precondition(why: impl Into<String>) -> Self {
        Self::FailedPrecondition(why.into())
    }

    /// An internal error from a message (a broken invariant, not a user mistake).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(anyhow::anyhow!("{detail}"))
    }

    /// Whether retrying the same request (or event) later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Internal(_))
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Denied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::Conflict(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::DataLoss(_) => Code::DataLoss,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The first field an `Invalid` error blames (offline sync reports it per item).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid(violations) => violations.0.first().map(|violation| violation.field.as_str()),
            _ => None,
        }
    }

    /// A message fit for the caller: what the status carries (never internal detail).
    pub fn public_message(&self) -> String {
        match self {
            Self::Invalid(violations) => violations.to_string(),
            Self::Unauthenticated(message)
            | Self::Denied(message)
            | Self::NotFound(message)
            | Self::Conflict(message)
            | Self::FailedPrecondition(message)
            | Self::DataLoss(message) => message.clone(),
            Self::Unavailable(_) => "temporarily unavailable; retry".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        let message = error.public_message();
        match error {
            ServiceError::Invalid(violations) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations.0),
            ),
            ServiceError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "temporarily unavailable");
                Status::unavailable(message)
            }
            ServiceError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                Status::internal(message)
            }
            other => Status::new(other.code(), message),
        }
    }
}

/// SQLSTATE classes and codes the classification below relies on.
mod sqlstate {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// Connection exceptions (class 08), insufficient resources (53), operator
    /// intervention such as an administrator shutdown (57): the server, not the request.
    pub const RETRYABLE_CLASSES: [&str; 3] = ["08", "53", "57"];
    /// Data exceptions (22: out-of-range values, NUL bytes, bad encodings) and integrity
    /// constraint violations (23): the same statement with the same data fails every time.
    pub const PERMANENT_CLASSES: [&str; 2] = ["22", "23"];
}

/// Whether `error` is one the same statement with the same data can never get past: a
/// data exception or an integrity constraint violation (SQLSTATE classes 22 and 23).
/// Consumers dead-letter such records at once instead of retrying them forever.
pub fn is_permanent_data_error(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| {
            sqlstate::PERMANENT_CLASSES
                .iter()
                .any(|class| code.starts_with(class))
        })
}

impl From<sqlx::Error> for ServiceError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database) => {
                let code = database.code().unwrap_or_default();
                if code == sqlstate::UNIQUE_VIOLATION {
                    ServiceError::conflict("already exists")
                } else if code == sqlstate::SERIALIZATION_FAILURE
                    || code == sqlstate::DEADLOCK_DETECTED
                    || sqlstate::RETRYABLE_CLASSES
                        .iter()
                        .any(|class| code.starts_with(class))
                {
                    ServiceError::Unavailable(error.to_string())
                } else {
                    ServiceError::Internal(error.into())
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => ServiceError::Unavailable(error.to_string()),
            _ => ServiceError::Internal(error.into()),
        }
    }
}

/// Collects every invalid field of a request so the caller can fix them all at once.
#[derive(Debug, Default)]
pub struct FieldViolations(Vec<FieldViolation>);

impl FieldViolations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid because of `description`.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records a violation when `condition` is false.
    pub fn require(&mut self, condition: bool, field: &str, description: &str) {
        if !condition {
            self.add(field, description);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same violations with fields renamed by `rename` (unchanged where it says
    /// `None`): a value checked as another message's field (a report-in event validated as
    /// a registration) is named where it came from.
    pub fn renamed(mut self, rename: impl Fn(&str) -> Option<String>) -> Self {
        for violation in &mut self.0 {
            if let Some(name) = rename(&violation.field) {
                violation.field = name;
            }
        }
        self
    }

    /// The names of the fields recorded so far, in order.
    pub fn fields(&self) -> Vec<String> {
        self.0.iter().map(|violation| violation.field.clone()).collect()
    }

    /// The validated `value` when no field was refused, else every violation at once.
    /// Validators record a violation whenever they yield nothing, so `value` is missing only
    /// when a violation says why: handlers never re-check a validated request.
    pub fn complete<T>(self, value: Option<T>) -> Result<T, ServiceError> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => {
                debug_assert!(
                    !self.is_empty(),
                    "a check yielded nothing without naming the field"
                );
                Err(ServiceError::Invalid(self))
            }
        }
    }

    /// `Ok` when nothing was recorded, else [`ServiceError::Invalid`].
    pub fn into_result(self) -> Result<(), ServiceError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(self))
        }
    }
}

impl std::fmt::Display for FieldViolations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, violation) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", violation.field, violation.description)?;
        }
        Ok(())
    }
}

/// The names of the fields a status's `BadRequest` detail blames (for clients and tests).
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Whether `error` is a unique-constraint violation (an insert lost a race to a twin).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == sqlstate::UNIQUE_VIOLATION)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn violations_name_every_field() {
        let mut violations = FieldViolations::new();
        violations.add("name", "must not be empty");
        violations.require(false, "national_id", "wrong check character");
        violations.require(true, "phone", "never recorded");
        let status = Status::from(violations.into_result().expect_err("two violations"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "name: must not be empty; national_id: wrong check character"
        );
        assert_eq!(violated_fields(&status), vec!["name", "national_id"]);
    }

    #[test]
    fn no_violations_is_ok() {
        assert!(FieldViolations::new().into_result().is_ok());
    }

    #[test]
    fn internal_detail_never_reaches_the_caller() {
        let status = Status::from(ServiceError::internal("password=hunter2 in row 7"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn pool_exhaustion_is_retryable_unavailable() {
        let error = ServiceError::from(sqlx::Error::PoolTimedOut);
        assert!(error.is_retryable());
        let status = Status::from(error);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("pool"), "{}", status.message());
    }

    #[test]
    fn a_decoding_bug_is_internal() {
        let error = ServiceError::from(sqlx::Error::ColumnNotFound("x".into()));
        assert_eq!(error.code(), Code::Internal);
    }

    #[test]
    fn each_kind_has_its_code() {
        assert_eq!(ServiceError::invalid("f", "bad").code(), Code::InvalidArgument);
        assert_eq!(ServiceError::invalid("f", "bad").field(), Some("f"));
        assert_eq!(ServiceError::denied("no").code(), Code::PermissionDenied);
        assert_eq!(ServiceError::not_found("no").code(), Code::NotFound);
        assert_eq!(ServiceError::conflict("dup").code(), Code::AlreadyExists);
        assert_eq!(
            ServiceError::precondition("later").code(),
            Code::FailedPrecondition
        );
        assert!(!ServiceError::conflict("dup").is_retryable());
    }

    #[test]
    fn data_exceptions_and_constraint_violations_are_permanent() {
        for code in ["22008", "22021", "22P02", "23502", "23503", "23505", "23514"] {
            assert!(is_permanent_data_error(&database_error(code)), "{code}");
        }
        for code in ["40001", "40P01", "08006", "53300", "57P01", "42P01", "XX000"] {
            assert!(!is_permanent_data_error(&database_error(code)), "{code}");
        }
        assert!(!is_permanent_data_error(&sqlx::Error::PoolTimedOut));
    }

    /// A database error with a chosen SQLSTATE, for classification tests here and in the
    /// consumer (sqlx offers no public constructor for PostgreSQL's own).
    pub(crate) fn database_error(code: &str) -> sqlx::Error {
        #[derive(Debug)]
        struct Fake(String);
        impl std::fmt::Display for Fake {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "fake database error {}", self.0)
            }
        }
        impl std::error::Error for Fake {}
        impl sqlx::error::DatabaseError for Fake {
            fn message(&self) -> &str {
                "fake database error"
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(std::borrow::Cow::Borrowed(&self.0))
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> sqlx::error::ErrorKind {
                sqlx::error::ErrorKind::Other
            }
        }
        sqlx::Error::Database(Box::new(Fake(code.to_owned())))
    }
}
