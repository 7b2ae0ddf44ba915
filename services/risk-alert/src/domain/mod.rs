//! The risk-alert domain as pure functions of values: what is watched and from when
//! (`watch`), what a run of check-ins does to contacts (`contacts`), when a deadline falls
//! due (`policy`), what a missed deadline means (`rules`) and what its alert says
//! (`compose`), what firing a batch of due deadlines does (`firing`), how an alert moves
//! through its lifecycle (`alert`), which alerts an event answers (`answers`), who may see
//! them (`access`), what a dead-lettered or stalled event raises (`operations`), who is told
//! of them (`notice`), what follows a failed notification (`redelivery`) and which addresses
//! a notification may be sent to (`destination`). The clock is
//! passed in as a value; no protobuf messages, SQL or gRPC statuses appear here (`request`,
//! `inbound` and `convert` translate at the edge, `store` keeps the rows).

pub mod access;
pub mod alert;
pub mod answers;
pub mod compose;
pub mod contacts;
pub mod coverage;
pub mod destination;
pub mod firing;
pub mod notice;
pub mod operations;
pub mod policy;
pub mod redelivery;
pub mod rules;
pub mod schedule;
pub mod watch;

use mesh_kit::auth::Caller;

/// A township office (both codes), or a whole county bureau (township code empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Jurisdiction {
    pub township_code: String,
    pub county_code: String,
}

impl Jurisdiction {
    /// No township and no county: what operational alerts whose record names nobody are
    /// filed under, seen by admins (the operators) only.
    pub fn operations() -> Self {
        Self::default()
    }

    pub fn is_operations(&self) -> bool {
        self.county_code.is_empty() && self.township_code.is_empty()
    }

    /// Whether this names a whole county rather than one township.
    pub fn is_county_wide(&self) -> bool {
        self.township_code.is_empty()
    }

    /// Whether `other` lies within this township, or within this county when county-wide.
    pub fn contains(&self, other: &Jurisdiction) -> bool {
        other.county_code == self.county_code
            && (self.is_county_wide() || other.township_code == self.township_code)
    }
}

/// Who made a change, as recorded on the alert and in its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub subject: String,
    pub role: String,
}

impl Actor {
    pub fn caller(caller: &Caller) -> Self {
        Self {
            subject: caller.subject.clone(),
            role: caller.role.as_str().to_owned(),
        }
    }

    /// The service itself, for automatic changes (deadlines, withdrawals, resolutions).
    pub fn system() -> Self {
        Self {
            subject: "risk-alert".to_owned(),
            role: "system".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(township: &str, county: &str) -> Jurisdiction {
        Jurisdiction {
            township_code: township.into(),
            county_code: county.into(),
        }
    }

    #[test]
    fn a_county_contains_its_townships_and_a_township_only_itself() {
        let county = place("", "620702");
        let township = place("620702001", "620702");
        assert!(county.contains(&township));
        assert!(county.contains(&place("620702002", "620702")));
        assert!(!county.contains(&place("620721001", "620721")));
        assert!(township.contains(&township));
        assert!(!township.contains(&place("620702002", "620702")));
    }
}
