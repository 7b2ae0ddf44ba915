//! ListHandovers: exactly one scope (a prison, a township or a county), optional statuses,
//! and a page.

use chrono::{DateTime, Utc};
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    jurisdiction::Directory,
    page::{Cursors, Page},
};
use mesh_proto::handover as pb;
use uuid::Uuid;

use super::refused;
use crate::domain::{Status, access::Scope};

/// Where a page of handovers starts: after this (notified_at, id), the list's order.
pub type ListCursor = (DateTime<Utc>, Uuid);

/// A checked list request.
#[derive(Debug)]
pub struct ListQuery {
    pub scope: Scope,
    /// Empty: every status.
    pub statuses: Vec<Status>,
    pub page: Page<ListCursor>,
    /// What a cursor of this list is bound to: the RPC and its filters.
    pub cursor_scope: String,
}

pub fn list(request: &pb::ListHandoversRequest, cursors: &Cursors) -> Result<ListQuery, ServiceError> {
    let mut violations = FieldViolations::new();
    let prison_id = request.prison_id.trim();
    let township_code = request.township_code.trim();
    let county_code = request.county_code.trim();
    let given: Vec<(&str, &str)> = [
        ("prison_id", prison_id),
        ("township_code", township_code),
        ("county_code", county_code),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .collect();
    let scope = match given.as_slice() {
        [("prison_id", prison)] => Some(Scope::Prison((*prison).to_owned())),
        [("township_code", township)] => {
            let known = Directory::get().township(township).is_some();
            violations.require(known, "township_code", "unknown township office code");
            known.then(|| Scope::Township((*township).to_owned()))
        }
        [("county_code", county)] => {
            let known = Directory::get().county(county).is_some();
            violations.require(known, "county_code", "unknown county bureau code");
            known.then(|| Scope::County((*county).to_owned()))
        }
        [] => {
            for field in ["prison_id", "township_code", "county_code"] {
                violations.add(
                    field,
                    "exactly one of prison_id, township_code or county_code is required",
                );
            }
            None
        }
        several => {
            for (field, _) in several {
                violations.add(
                    field,
                    "exactly one of prison_id, township_code or county_code is allowed",
                );
            }
            None
        }
    };
    let mut statuses = Vec::new();
    for &value in &request.statuses {
        match Status::from_proto(value) {
            Some(status) => statuses.push(status),
            None => violations.add("statuses", "must list known statuses only"),
        }
    }
    let cursor_scope = format!(
        "handover.list|{prison_id}|{township_code}|{county_code}|{:?}",
        request.statuses
    );
    let page = cursors.page(&cursor_scope, request.page.as_ref(), &mut violations);
    let Some(scope) = scope else {
        return Err(refused(violations));
    };
    violations.into_result()?;
    Ok(ListQuery {
        scope,
        statuses,
        page,
        cursor_scope,
    })
}

#[cfg(test)]
mod tests {
    use mesh_proto::common::PageRequest;
    use secrecy::SecretString;

    use super::*;
    use crate::request::testing::refused_fields;

    fn cursors() -> Cursors {
        Cursors::new(&SecretString::from(
            "a secret of at least thirty-two bytes!!".to_owned(),
        ))
    }

    #[test]
    fn a_list_has_exactly_one_known_scope() {
        let request = pb::ListHandoversRequest {
            township_code: " 620702001 ".into(),
            statuses: vec![pb::HandoverStatus::Released as i32],
            ..Default::default()
        };
        let query = list(&request, &cursors()).expect("valid");
        assert_eq!(query.scope, Scope::Township("620702001".into()));
        assert_eq!(query.statuses, [Status::Released]);
        assert_eq!(query.page.after, None);

        assert_eq!(
            refused_fields(list(&pb::ListHandoversRequest::default(), &cursors())),
            ["prison_id", "township_code", "county_code"]
        );
        let several = pb::ListHandoversRequest {
            prison_id: "zhangye-prison".into(),
            county_code: "620702".into(),
            ..Default::default()
        };
        assert_eq!(
            refused_fields(list(&several, &cursors())),
            ["prison_id", "county_code"]
        );
        let unknown = pb::ListHandoversRequest {
            county_code: "999999".into(),
            statuses: vec![0],
            page: Some(PageRequest {
                page_size: 2,
                page_token: "garbage!".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            refused_fields(list(&unknown, &cursors())),
            ["county_code", "statuses", "page.page_token"]
        );
    }

    #[test]
    fn a_cursor_serves_only_its_own_list_and_filters() {
        let cursors = cursors();
        let request = pb::ListHandoversRequest {
            prison_id: "zhangye-prison".into(),
            ..Default::default()
        };
        let query = list(&request, &cursors).expect("valid");
        let (_, response) = cursors.finish(
            &query.cursor_scope,
            1,
            vec![(Utc::now(), Uuid::now_v7()); 2],
            |row| *row,
        );
        let next = pb::ListHandoversRequest {
            page: Some(PageRequest {
                page_size: 1,
                page_token: response.next_page_token,
            }),
            ..request
        };
        assert!(list(&next, &cursors).expect("valid").page.after.is_some());
        let other_filters = pb::ListHandoversRequest {
            statuses: vec![pb::HandoverStatus::Notified as i32],
            ..next
        };
        assert_eq!(
            refused_fields(list(&other_filters, &cursors)),
            ["page.page_token"]
        );
    }
}
