//! A failed webhook attempt in the few words callers see (`ListDeliveries`, the logs): the
//! destination was refused by policy, no connection could be made, the receiver did not
//! answer in time, or it answered with an error status — the receiver's own status, which
//! is the office's own endpoint speaking. Never the addresses a name resolved to nor the
//! operating system's words: with those, an endpoint pointed at other hosts and ports
//! would map a network. For the same reason a connection that timed out and one that was
//! refused (an absent host and a closed port) are both "could not connect", and a TLS
//! failure (an open port) is too.

use std::{error::Error as StdError, fmt};

use crate::egress::Refused;

/// Why an attempt failed, as recorded and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The destination is not one webhooks may reach (`egress`).
    Refused,
    /// No connection (refused, timed out, TLS, or a name that does not resolve).
    Unreachable,
    /// Connected, but no answer within the request timeout.
    TimedOut,
    /// The receiver answered with this non-2xx status.
    Status(u16),
    /// Anything else: the request broke off, or the service could not prepare it.
    Failed,
}

impl Failure {
    /// A transport error in these words.
    pub fn of(error: &reqwest::Error) -> Self {
        let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(error) = cause {
            if error.is::<Refused>() {
                return Self::Refused;
            }
            cause = error.source();
        }
        // A connect timeout is both; it is the connection's.
        if error.is_connect() {
            Self::Unreachable
        } else if error.is_timeout() {
            Self::TimedOut
        } else {
            Self::Failed
        }
    }

    /// The HTTP status received; 0 without a response.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Status(status) => status,
            _ => 0,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str("destination refused by policy"),
            Self::Unreachable => f.write_str("could not connect"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Status(status) => write!(f, "HTTP {status}"),
            Self::Failed => f.write_str("delivery failed"),
        }
    }
}
