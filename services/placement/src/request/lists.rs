//! List and match requests: where a list is restricted to, its filters and its page.
//!
//! A page cursor is sealed (by the kit's [`Cursors`]) with the list's *cursor scope*: the
//! RPC and every filter of the request, so a cursor taken from another list, or from the
//! same list with other filters, is refused on `page.page_token`.

use mesh_kit::{
    error::{FieldViolations, ServiceError},
    jurisdiction::Directory,
    page::{Cursors, Page},
};
use mesh_proto::placement as pb;
use uuid::Uuid;

use super::{DEFAULT_MATCHES, MAX_MATCHES, check_optional, check_uuid};
use crate::domain::{BaseType, CandidateSource, OpeningStatus, Sector};

/// Sort key of lists ordered by name, then id.
pub type NameCursor = (String, Uuid);
/// Sort key of lists ordered newest first: creation time (microseconds since the epoch),
/// then id.
pub type TimeCursor = (i64, Uuid);

/// The township or county a list is restricted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Area {
    Township {
        township_code: String,
        county_code: String,
    },
    County {
        county_code: String,
    },
}

impl Area {
    pub fn county_code(&self) -> &str {
        match self {
            Area::Township { county_code, .. } | Area::County { county_code } => county_code,
        }
    }

    /// The township, when the list is restricted to one.
    pub fn township_code(&self) -> Option<&str> {
        match self {
            Area::Township { township_code, .. } => Some(township_code),
            Area::County { .. } => None,
        }
    }
}

/// What a list of openings is restricted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Base(Uuid),
    Area(Area),
}

/// The one field of `fields` (name, value) that is given: its index in `fields` and its
/// trimmed value. A violation on each given field when several are, on the first when none
/// is.
fn check_one_of<'a>(
    violations: &mut FieldViolations,
    fields: &[(&str, &'a str)],
) -> Option<(usize, &'a str)> {
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let choices = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    };
    let given: Vec<(usize, &str, &str)> = fields
        .iter()
        .enumerate()
        .map(|(index, (name, value))| (index, *name, value.trim()))
        .filter(|(_, _, value)| !value.is_empty())
        .collect();
    match given.as_slice() {
        [(index, _, value)] => Some((*index, *value)),
        [] => {
            violations.add(names[0], format!("give exactly one of {choices}"));
            None
        }
        several => {
            for (_, name, _) in several {
                violations.add(name, format!("give exactly one of {choices}"));
            }
            None
        }
    }
}

/// Placeholder of a refused scope (never leaves this module: the request is refused).
fn nowhere() -> Area {
    Area::County {
        county_code: String::new(),
    }
}

fn township_area(violations: &mut FieldViolations, code: &str) -> Area {
    match Directory::get().township(code) {
        Some(township) => Area::Township {
            township_code: township.code.clone(),
            county_code: township.county_code.clone(),
        },
        None => {
            violations.add("township_code", "unknown township office code");
            nowhere()
        }
    }
}

fn county_area(violations: &mut FieldViolations, code: &str) -> Area {
    match Directory::get().county(code) {
        Some(county) => Area::County {
            county_code: county.code.clone(),
        },
        None => {
            violations.add("county_code", "unknown county bureau code");
            nowhere()
        }
    }
}

/// Exactly one of township_code / county_code, and a known one.
fn check_area(violations: &mut FieldViolations, township_code: &str, county_code: &str) -> Area {
    match check_one_of(
        violations,
        &[("township_code", township_code), ("county_code", county_code)],
    ) {
        Some((0, code)) => township_area(violations, code),
        Some((_, code)) => county_area(violations, code),
        None => nowhere(),
    }
}

/// Exactly one of base_id / township_code / county_code, and a valid one.
fn check_scope(
    violations: &mut FieldViolations,
    base_id: &str,
    township_code: &str,
    county_code: &str,
) -> Scope {
    match check_one_of(
        violations,
        &[
            ("base_id", base_id),
            ("township_code", township_code),
            ("county_code", county_code),
        ],
    ) {
        Some((0, id)) => Scope::Base(check_uuid(violations, "base_id", id)),
        Some((1, code)) => Scope::Area(township_area(violations, code)),
        Some((_, code)) => Scope::Area(county_area(violations, code)),
        None => Scope::Area(nowhere()),
    }
}

/// A validated ListBases request.
#[derive(Debug, Clone)]
pub struct BaseQuery {
    pub area: Area,
    pub base_type: Option<BaseType>,
    pub include_inactive: bool,
    pub page: Page<NameCursor>,
    /// Seals this list's cursors.
    pub cursor_scope: String,
}

pub fn validate_list_bases(
    request: &pb::ListBasesRequest,
    cursors: &Cursors,
) -> Result<BaseQuery, ServiceError> {
    let mut violations = FieldViolations::new();
    let area = check_area(&mut violations, &request.township_code, &request.county_code);
    let base_type = check_optional(
        &mut violations,
        "type",
        request.r#type,
        BaseType::from_proto,
        "unknown base type",
    );
    let cursor_scope = format!(
        "placement.bases|{}|{}|{}|{}",
        request.township_code.trim(),
        request.county_code.trim(),
        request.r#type,
        request.include_inactive
    );
    let page = cursors.page(&cursor_scope, request.page.as_ref(), &mut violations);
    violations.into_result()?;
    Ok(BaseQuery {
        area,
        base_type,
        include_inactive: request.include_inactive,
        page,
        cursor_scope,
    })
}

/// A validated ListOpenings request.
#[derive(Debug, Clone)]
pub struct OpeningQuery {
    pub scope: Scope,
    pub status: Option<OpeningStatus>,
    pub sector: Option<Sector>,
    pub page: Page<TimeCursor>,
    /// Seals this list's cursors.
    pub cursor_scope: String,
}

pub fn validate_list_openings(
    request: &pb::ListOpeningsRequest,
    cursors: &Cursors,
) -> Result<OpeningQuery, ServiceError> {
    let mut violations = FieldViolations::new();
    let scope = check_scope(
        &mut violations,
        &request.base_id,
        &request.township_code,
        &request.county_code,
    );
    let status = check_optional(
        &mut violations,
        "status",
        request.status,
        OpeningStatus::from_proto,
        "unknown opening status",
    );
    let sector = check_optional(
        &mut violations,
        "sector",
        request.sector,
        Sector::from_proto,
        "unknown sector",
    );
    let cursor_scope = format!(
        "placement.openings|{}|{}|{}|{}|{}",
        request.base_id.trim(),
        request.township_code.trim(),
        request.county_code.trim(),
        request.status,
        request.sector
    );
    let page = cursors.page(&cursor_scope, request.page.as_ref(), &mut violations);
    violations.into_result()?;
    Ok(OpeningQuery {
        scope,
        status,
        sector,
        page,
        cursor_scope,
    })
}

/// A validated ListCandidates request.
#[derive(Debug, Clone)]
pub struct CandidateQuery {
    pub area: Area,
    pub source: Option<CandidateSource>,
    pub include_inactive: bool,
    pub only_unplaced: bool,
    pub page: Page<NameCursor>,
    /// Seals this list's cursors.
    pub cursor_scope: String,
}

pub fn validate_list_candidates(
    request: &pb::ListCandidatesRequest,
    cursors: &Cursors,
) -> Result<CandidateQuery, ServiceError> {
    let mut violations = FieldViolations::new();
    let area = check_area(&mut violations, &request.township_code, &request.county_code);
    let source = check_optional(
        &mut violations,
        "source",
        request.source,
        CandidateSource::from_proto,
        "unknown candidate source",
    );
    let cursor_scope = format!(
        "placement.candidates|{}|{}|{}|{}|{}",
        request.township_code.trim(),
        request.county_code.trim(),
        request.source,
        request.include_inactive,
        request.only_unplaced
    );
    let page = cursors.page(&cursor_scope, request.page.as_ref(), &mut violations);
    violations.into_result()?;
    Ok(CandidateQuery {
        area,
        source,
        include_inactive: request.include_inactive,
        only_unplaced: request.only_unplaced,
        page,
        cursor_scope,
    })
}

/// A validated MatchOpenings request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchQuery {
    pub candidate_id: Uuid,
    pub max_results: usize,
}

pub fn validate_match(request: &pb::MatchOpeningsRequest) -> Result<MatchQuery, ServiceError> {
    let mut violations = FieldViolations::new();
    let candidate_id = check_uuid(&mut violations, "candidate_id", &request.candidate_id);
    if request.max_results > MAX_MATCHES {
        violations.add("max_results", format!("must be at most {MAX_MATCHES}"));
    }
    violations.into_result()?;
    let max_results = match request.max_results {
        0 => DEFAULT_MATCHES,
        max => max,
    };
    Ok(MatchQuery {
        candidate_id,
        max_results: max_results as usize,
    })
}

#[cfg(test)]
mod tests {
    use mesh_kit::page::DEFAULT_PAGE_SIZE;
    use mesh_proto::common;

    use super::*;
    use crate::request::testing::fields;

    fn cursors() -> Cursors {
        Cursors::new(&"0123456789abcdef0123456789abcdef".to_owned().into())
    }

    #[test]
    fn lists_take_exactly_one_scope_and_real_tokens() {
        let cursors = cursors();
        let none = pb::ListBasesRequest::default();
        assert_eq!(
            fields(validate_list_bases(&none, &cursors)),
            vec!["township_code"]
        );
        let both = pb::ListBasesRequest {
            township_code: "620702001".into(),
            county_code: "620702".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(validate_list_bases(&both, &cursors)),
            vec!["township_code", "county_code"]
        );
        let none = pb::ListOpeningsRequest::default();
        assert_eq!(fields(validate_list_openings(&none, &cursors)), vec!["base_id"]);
        let bad_token = pb::ListCandidatesRequest {
            county_code: "620702".into(),
            page: Some(common::PageRequest {
                page_size: 501,
                page_token: "garbage".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(validate_list_candidates(&bad_token, &cursors)),
            vec!["page.page_size", "page.page_token"]
        );
        let mut good = pb::ListCandidatesRequest {
            township_code: "620702001".into(),
            ..Default::default()
        };
        let scope = validate_list_candidates(&good, &cursors)
            .expect("valid")
            .cursor_scope;
        good.page = Some(common::PageRequest {
            page_size: 0,
            page_token: cursors.encode(&scope, &("张三", Uuid::nil())),
        });
        let query = validate_list_candidates(&good, &cursors).expect("valid");
        assert_eq!(query.page.size, DEFAULT_PAGE_SIZE);
        assert_eq!(query.page.after, Some(("张三".to_owned(), Uuid::nil())));
        assert_eq!(
            query.area,
            Area::Township {
                township_code: "620702001".into(),
                county_code: "620702".into()
            }
        );
        // The same cursor with another filter belongs to another list.
        good.only_unplaced = true;
        assert_eq!(
            fields(validate_list_candidates(&good, &cursors)),
            vec!["page.page_token"]
        );
    }

    #[test]
    fn openings_are_listed_by_base_or_place() {
        let cursors = cursors();
        let base = Uuid::now_v7();
        let by_base = pb::ListOpeningsRequest {
            base_id: format!(" {base} "),
            ..Default::default()
        };
        let query = validate_list_openings(&by_base, &cursors).expect("valid");
        assert_eq!(query.scope, Scope::Base(base));
        let unknown = pb::ListOpeningsRequest {
            county_code: "999999".into(),
            status: 9,
            ..Default::default()
        };
        assert_eq!(
            fields(validate_list_openings(&unknown, &cursors)),
            vec!["county_code", "status"]
        );
    }

    #[test]
    fn matches_are_bounded() {
        let matching = pb::MatchOpeningsRequest {
            candidate_id: Uuid::now_v7().to_string(),
            max_results: 51,
        };
        assert_eq!(fields(validate_match(&matching)), vec!["max_results"]);
        let default = pb::MatchOpeningsRequest {
            max_results: 0,
            ..matching
        };
        assert_eq!(
            validate_match(&default).map(|query| query.max_results).ok(),
            Some(DEFAULT_MATCHES as usize)
        );
    }
}
