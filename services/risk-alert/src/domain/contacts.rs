//! A run of verified check-ins applied together: the contact each supervisee is left with
//! (one row write per person, however many of their check-ins the run holds) and whose last
//! contact moved (their deadlines are computed again) — exactly what applying the check-ins
//! one by one, in order, would leave.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Jurisdiction,
    watch::{Checkin, SuperviseeWatch},
};

/// What the deadlines count from: the last verified contact and the last in-person one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastContact {
    pub at: Option<DateTime<Utc>>,
    pub in_person_at: Option<DateTime<Utc>>,
}

impl LastContact {
    pub fn of(watch: &SuperviseeWatch) -> Self {
        Self {
            at: watch.last_contact_at,
            in_person_at: watch.last_in_person_at,
        }
    }

    /// Whether a verified check-in moves it: newer than the last contact, or an in-person
    /// one newer than the last in-person contact (a late-arriving home visit still counts
    /// for the in-person track).
    pub fn moved_by(&self, checkin: &Checkin) -> bool {
        let newer = |last: Option<DateTime<Utc>>| last.is_none_or(|last| checkin.device_time > last);
        newer(self.at) || (checkin.in_person() && newer(self.in_person_at))
    }
}

/// One person's contact as a run of check-ins leaves it, to be merged with the stored row
/// the way one check-in is (each time only moves forward; the check-in id follows the newest
/// contact).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactUpdate {
    pub supervisee: Uuid,
    /// The first check-in's township: where a person not yet known is filed until the
    /// registry's snapshot arrives.
    pub jurisdiction: Jurisdiction,
    pub last_contact_at: DateTime<Utc>,
    pub last_in_person_at: Option<DateTime<Utc>>,
    /// The check-in of `last_contact_at` (the last of the run at that time).
    pub last_checkin_id: String,
}

/// What a run of verified check-ins does to contacts.
#[derive(Debug, Default, PartialEq)]
pub struct Contacts {
    /// One per person, in order of first appearance.
    pub updates: Vec<ContactUpdate>,
    /// Those whose last contact moved: their deadlines are computed again.
    pub moved: BTreeSet<Uuid>,
}

/// Applies `checkins` (verified, in order) to the contacts of `known` (the locked rows of
/// the people they name; a person missing is not known yet).
pub fn apply<'a>(
    known: &HashMap<Uuid, SuperviseeWatch>,
    checkins: impl IntoIterator<Item = &'a Checkin>,
) -> Contacts {
    let mut contacts = Contacts::default();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for checkin in checkins {
        let id = checkin.supervisee;
        // Against the stored contact alone: a check-in that moves nothing leaves the contact
        // as it was, so the earlier check-ins of the run change no later one's answer, only
        // whether the person moved, which one is enough for.
        if known
            .get(&id)
            .is_none_or(|watch| LastContact::of(watch).moved_by(checkin))
        {
            contacts.moved.insert(id);
        }
        match index.get(&id) {
            Some(&at) => {
                let update = &mut contacts.updates[at];
                if checkin.device_time >= update.last_contact_at {
                    update.last_contact_at = checkin.device_time;
                    update.last_checkin_id = checkin.checkin_id.clone();
                }
                if checkin.in_person() {
                    update.last_in_person_at = update.last_in_person_at.max(Some(checkin.device_time));
                }
            }
            None => {
                index.insert(id, contacts.updates.len());
                contacts.updates.push(ContactUpdate {
                    supervisee: id,
                    jurisdiction: checkin.jurisdiction.clone(),
                    last_contact_at: checkin.device_time,
                    last_in_person_at: checkin.in_person().then_some(checkin.device_time),
                    last_checkin_id: checkin.checkin_id.clone(),
                });
            }
        }
    }
    contacts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        alert::tests::utc,
        policy::Level,
        watch::{
            CheckinMethod,
            tests::{home, supervisee},
        },
    };

    fn checkin(person: u128, id: &str, at: &str, method: CheckinMethod) -> Checkin {
        Checkin {
            checkin_id: id.into(),
            supervisee: Uuid::from_u128(person),
            subject_id: Uuid::from_u128(person).to_string(),
            device_time: utc(at),
            jurisdiction: Jurisdiction {
                township_code: format!("62070200{person}"),
                county_code: "620702".into(),
            },
            method: Some(method),
            identity_verified: true,
            out_of_area: None,
        }
    }

    fn known(person: u128, contact: &str, in_person: Option<&str>) -> (Uuid, SuperviseeWatch) {
        let mut watch = supervisee(Level::Normal, contact);
        watch.last_in_person_at = in_person.map(utc);
        (Uuid::from_u128(person), watch)
    }

    #[test]
    fn one_row_per_person_following_the_newest_contact() {
        let app = CheckinMethod::AppSelfCheckin;
        let visit = CheckinMethod::HomeVisit;
        let run = [
            checkin(1, "a", "2026-12-01T08:00:00Z", app),
            checkin(2, "b", "2026-12-01T08:05:00Z", visit),
            // Arrives late: older than person 1's first; it changes neither time nor id.
            checkin(1, "c", "2026-12-01T07:00:00Z", app),
            checkin(1, "d", "2026-12-01T09:00:00Z", visit),
            // The same time as the newest: the later check-in names the contact, as one by
            // one would.
            checkin(1, "e", "2026-12-01T09:00:00Z", app),
        ];
        let contacts = apply(&HashMap::new(), &run);
        assert_eq!(
            contacts.updates,
            [
                ContactUpdate {
                    supervisee: Uuid::from_u128(1),
                    jurisdiction: run[0].jurisdiction.clone(),
                    last_contact_at: utc("2026-12-01T09:00:00Z"),
                    last_in_person_at: Some(utc("2026-12-01T09:00:00Z")),
                    last_checkin_id: "e".into(),
                },
                ContactUpdate {
                    supervisee: Uuid::from_u128(2),
                    jurisdiction: run[1].jurisdiction.clone(),
                    last_contact_at: utc("2026-12-01T08:05:00Z"),
                    last_in_person_at: Some(utc("2026-12-01T08:05:00Z")),
                    last_checkin_id: "b".into(),
                },
            ]
        );
        assert_eq!(
            contacts.moved,
            BTreeSet::from([Uuid::from_u128(1), Uuid::from_u128(2)]),
            "people not known yet always move"
        );
    }

    #[test]
    fn only_check_ins_newer_than_what_is_known_move_the_deadlines() {
        let app = CheckinMethod::AppSelfCheckin;
        let known = HashMap::from([
            known(1, "2026-12-01T10:00:00Z", Some("2026-11-20T10:00:00Z")),
            known(2, "2026-12-01T10:00:00Z", Some("2026-11-20T10:00:00Z")),
            known(3, "2026-12-01T10:00:00Z", None),
        ]);
        let run = [
            // Older than the known contact: nothing moves …
            checkin(1, "a", "2026-12-01T09:00:00Z", app),
            // … unless it is an in-person contact newer than the last in-person one.
            checkin(2, "b", "2026-12-01T09:00:00Z", CheckinMethod::OfficeReport),
            // Newer: moves.
            checkin(3, "c", "2026-12-01T11:00:00Z", app),
        ];
        let contacts = apply(&known, &run);
        assert_eq!(
            contacts.moved,
            BTreeSet::from([Uuid::from_u128(2), Uuid::from_u128(3)])
        );
        // Rows are still written: the store merges them, keeping the newer stored time.
        assert_eq!(contacts.updates.len(), 3);
    }

    #[test]
    fn a_run_of_late_check_ins_moves_nothing() {
        let app = CheckinMethod::AppSelfCheckin;
        let known = HashMap::from([known(1, "2026-12-01T10:00:00Z", None)]);
        // Offline uploads older than the known contact: the rows are merged (the store keeps
        // the newer time) and no deadline is computed again.
        let late = [
            checkin(1, "a", "2026-12-01T08:00:00Z", app),
            checkin(1, "b", "2026-12-01T09:00:00Z", app),
        ];
        let contacts = apply(&known, &late);
        assert!(contacts.moved.is_empty());
        assert_eq!(contacts.updates[0].last_checkin_id, "b");
        // One newer among them, and the person moves.
        let mixed = [
            late[0].clone(),
            checkin(1, "c", "2026-12-01T11:00:00Z", app),
            late[1].clone(),
        ];
        assert_eq!(apply(&known, &mixed).moved, BTreeSet::from([Uuid::from_u128(1)]));
    }

    #[test]
    fn only_a_newer_contact_moves_the_deadlines() {
        let known = supervisee(Level::Normal, "2026-11-26T02:00:00Z");
        let checkin = |at: &str, method| Checkin {
            checkin_id: "c2".into(),
            supervisee: Uuid::nil(),
            subject_id: "s1".into(),
            device_time: utc(at),
            jurisdiction: home(),
            method: Some(method),
            identity_verified: true,
            out_of_area: None,
        };
        assert!(
            LastContact::of(&known)
                .moved_by(&checkin("2026-11-27T02:00:00Z", CheckinMethod::PhoneVerification))
        );
        assert!(
            !LastContact::of(&known)
                .moved_by(&checkin("2026-11-25T02:00:00Z", CheckinMethod::PhoneVerification))
        );
        assert!(
            LastContact::of(&known).moved_by(&checkin("2026-11-25T02:00:00Z", CheckinMethod::HomeVisit)),
            "the first in-person contact moves the in-person track"
        );
        assert!(
            LastContact::default()
                .moved_by(&checkin("2026-11-25T02:00:00Z", CheckinMethod::PhoneVerification)),
            "no contact yet: any moves it"
        );
    }
}
