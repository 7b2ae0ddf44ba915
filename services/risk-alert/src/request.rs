//! The edge of the API: requests → validated domain values. Every problem is named by its
//! field, and what a validator returns is complete, so handlers never check again.

use chrono::{DateTime, Utc};
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    jurisdiction::Directory,
    page::{Cursors, Page},
    validate::{check_jurisdiction, check_text},
};
use mesh_proto::{
    alert as pb,
    common::{self, PageRequest},
};
use serde::de::DeserializeOwned;
use url::Url;
use uuid::Uuid;

use crate::{
    convert::jurisdiction_from_proto,
    domain::{
        Jurisdiction,
        alert::{AlertKind, AlertStatus},
    },
    store::alerts::AlertFilter,
};

/// Longest resolution note.
const MAX_NOTE_CHARS: usize = 1000;
/// Longest webhook URL, in bytes.
const MAX_URL_LEN: usize = 2048;
/// Longest endpoint description.
const MAX_DESCRIPTION_CHARS: usize = 200;
/// Most notifications an endpoint may take in one POST: a batch of this many alerts is a
/// few megabytes, which a receiver still reads and acknowledges within the request timeout.
const MAX_BATCH_SIZE: u32 = 1000;

/// An alert id.
pub fn alert_id(value: &str) -> Result<Uuid, ServiceError> {
    let mut violations = FieldViolations::new();
    let id = check_alert_id(&mut violations, value);
    violations.into_result()?;
    Ok(id)
}

fn check_alert_id(violations: &mut FieldViolations, value: &str) -> Uuid {
    value.trim().parse().unwrap_or_else(|_| {
        violations.add("alert_id", "must be a UUID");
        Uuid::nil()
    })
}

/// The township (both codes) or whole county (township empty) a request names in `field`,
/// checked against the directory, or neither: the operators' scope. Whether the caller may work there is
/// `domain::access::ensure_scope`.
pub fn scope(field: &str, jurisdiction: Option<&common::Jurisdiction>) -> Result<Jurisdiction, ServiceError> {
    let scope = jurisdiction_from_proto(jurisdiction);
    if jurisdiction.is_some() && scope.is_operations() {
        // Named explicitly empty: the operational alerts whose record names nobody (admins
        // only, see `access`).
        return Ok(scope);
    }
    let mut violations = FieldViolations::new();
    if scope.is_county_wide() {
        if Directory::get().county(&scope.county_code).is_none() {
            violations.add(&format!("{field}.county_code"), "unknown county bureau code");
        }
    } else {
        check_jurisdiction(
            &mut violations,
            &format!("{field}.township_code"),
            &scope.township_code,
            &format!("{field}.county_code"),
            &scope.county_code,
        );
    }
    violations.into_result()?;
    Ok(scope)
}

/// A page of a list, its cursor checked against the list's `scope` (the list and its
/// filters).
pub fn page<K: DeserializeOwned>(
    cursors: &Cursors,
    scope: &str,
    request: Option<&PageRequest>,
) -> Result<Page<K>, ServiceError> {
    let mut violations = FieldViolations::new();
    let page = cursors.page(scope, request, &mut violations);
    violations.into_result()?;
    Ok(page)
}

/// A validated `ListAlerts`.
#[derive(Debug)]
pub struct ListAlerts {
    pub filter: AlertFilter,
    /// Names the list and its filters: a cursor of another list is refused.
    pub cursor_scope: String,
    /// After (raised_at, alert_id) of the last alert seen.
    pub page: Page<(DateTime<Utc>, Uuid)>,
}

pub fn list_alerts(
    request: &pb::ListAlertsRequest,
    scope: Jurisdiction,
    cursors: &Cursors,
) -> Result<ListAlerts, ServiceError> {
    let mut violations = FieldViolations::new();
    let statuses = known(
        &mut violations,
        "statuses",
        "unknown status",
        &request.statuses,
        AlertStatus::from_proto,
    );
    let kinds = known(
        &mut violations,
        "kinds",
        "unknown kind",
        &request.kinds,
        AlertKind::from_proto,
    );
    let subject_id = request.subject_id.trim().to_owned();
    let cursor_scope = format!(
        "alert.list|{}|{}|{}|{}|{subject_id}",
        scope.county_code,
        scope.township_code,
        statuses
            .iter()
            .map(|status| status.as_str())
            .collect::<Vec<_>>()
            .join(","),
        kinds
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    let page = cursors.page(&cursor_scope, request.page.as_ref(), &mut violations);
    violations.into_result()?;
    Ok(ListAlerts {
        filter: AlertFilter {
            scope,
            statuses,
            kinds,
            subject_id,
        },
        cursor_scope,
        page,
    })
}

/// The enum values of a repeated filter field; UNSPECIFIED and unknown numbers are invalid.
fn known<T>(
    violations: &mut FieldViolations,
    field: &str,
    why: &str,
    values: &[i32],
    from_proto: impl Fn(i32) -> Option<T>,
) -> Vec<T> {
    let mut known = Vec::with_capacity(values.len());
    for &value in values {
        match from_proto(value) {
            Some(value) => known.push(value),
            None => {
                violations.add(field, why);
                break;
            }
        }
    }
    known
}

/// A validated `ResolveAlert`.
#[derive(Debug)]
pub struct Resolve {
    pub alert_id: Uuid,
    pub note: String,
}

pub fn resolve(request: &pb::ResolveAlertRequest) -> Result<Resolve, ServiceError> {
    let mut violations = FieldViolations::new();
    let alert_id = check_alert_id(&mut violations, &request.alert_id);
    let note = check_text(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
    violations.into_result()?;
    Ok(Resolve { alert_id, note })
}

/// A validated `RegisterEndpoint` (its jurisdiction is checked by [`scope`]).
#[derive(Debug)]
pub struct Endpoint {
    /// As parsed: what is stored, and what `egress` judged, is this normal form.
    pub url: Url,
    pub secret: String,
    pub description: String,
    /// 1: one notification per POST; more: batches of up to this many.
    pub max_batch_size: i32,
}

/// The endpoint of a registration: an https URL (or http, when `allow_http`, for
/// development) with a host and no user name or password, a secret of 32 to 256
/// characters, a short description, and at most [`MAX_BATCH_SIZE`] notifications per POST
/// (0, unset, means one, as 1 does). Where the host leads is `egress`'s to judge, next.
pub fn endpoint(request: &pb::RegisterEndpointRequest, allow_http: bool) -> Result<Endpoint, ServiceError> {
    let mut violations = FieldViolations::new();
    let url = endpoint_url(request.url.trim(), allow_http);
    if let Err(problem) = &url {
        violations.add("url", *problem);
    }
    if !(32..=256).contains(&request.secret.chars().count()) {
        violations.add("secret", "must be 32 to 256 characters");
    }
    if request.description.chars().count() > MAX_DESCRIPTION_CHARS {
        violations.add("description", "must be at most 200 characters");
    }
    if request.max_batch_size > MAX_BATCH_SIZE {
        violations.add("max_batch_size", "must be at most 1000");
    }
    violations.into_result()?;
    Ok(Endpoint {
        url: url.map_err(|problem| ServiceError::invalid("url", problem))?,
        secret: request.secret.clone(),
        description: request.description.trim().to_owned(),
        max_batch_size: i32::try_from(request.max_batch_size.max(1)).unwrap_or(1),
    })
}

fn endpoint_url(text: &str, allow_http: bool) -> Result<Url, &'static str> {
    let scheme = if allow_http {
        "must be an http(s) URL of at most 2048 characters"
    } else {
        "must be an https URL of at most 2048 characters"
    };
    let url = Url::parse(text)
        .ok()
        .filter(|url| {
            text.len() <= MAX_URL_LEN && (url.scheme() == "https" || (allow_http && url.scheme() == "http"))
        })
        .ok_or(scheme)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password");
    }
    if url.host().is_none() {
        return Err("must name a host");
    }
    Ok(url)
}

/// The violation of a URL whose host leads somewhere webhooks may not go (`egress`), or
/// does not resolve. It does not say which address the host resolved to.
pub fn destination_refused() -> ServiceError {
    ServiceError::invalid("url", "must name a host that resolves only to public addresses")
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn fields(result: Result<impl std::fmt::Debug, ServiceError>) -> Vec<String> {
        match result.expect_err("invalid") {
            ServiceError::Invalid(violations) => violations.fields(),
            other => panic!("not a validation error: {other}"),
        }
    }

    fn cursors() -> Cursors {
        Cursors::new(&SecretString::from(
            "a secret of at least thirty-two bytes!!".to_owned(),
        ))
    }

    fn place(township: &str, county: &str) -> common::Jurisdiction {
        common::Jurisdiction {
            township_code: township.into(),
            county_code: county.into(),
        }
    }

    #[test]
    fn scopes_are_a_known_township_or_county() {
        assert!(scope("jurisdiction", Some(&place("620702001", "620702"))).is_ok());
        assert!(scope("jurisdiction", Some(&place("", "620702"))).is_ok());
        assert_eq!(
            fields(scope("jurisdiction", Some(&place("", "999999")))),
            ["jurisdiction.county_code"]
        );
        assert_eq!(fields(scope("jurisdiction", None)), ["jurisdiction.county_code"]);
        assert!(scope("jurisdiction", Some(&place("", ""))).is_ok_and(|scope| scope.is_operations()));
        assert_eq!(
            fields(scope("jurisdiction", Some(&place("620702999", "620702")))),
            ["jurisdiction.township_code"]
        );
    }

    #[test]
    fn list_filters_must_name_real_values() {
        let county = jurisdiction_from_proto(Some(&place("", "620702")));
        let request = pb::ListAlertsRequest {
            statuses: vec![pb::AlertStatus::Open as i32, 0],
            kinds: vec![99],
            ..Default::default()
        };
        assert_eq!(
            fields(list_alerts(&request, county.clone(), &cursors())),
            ["statuses", "kinds"]
        );
        let request = pb::ListAlertsRequest {
            statuses: vec![pb::AlertStatus::Resolved as i32],
            kinds: vec![pb::AlertKind::OutOfArea as i32],
            subject_id: " s1 ".into(),
            ..Default::default()
        };
        let list = list_alerts(&request, county, &cursors()).expect("valid");
        assert_eq!(list.filter.statuses, [AlertStatus::Resolved]);
        assert_eq!(list.filter.kinds, [AlertKind::OutOfArea]);
        assert_eq!(list.filter.subject_id, "s1");
        assert_eq!(list.cursor_scope, "alert.list|620702||resolved|out_of_area|s1");
    }

    #[test]
    fn a_cursor_of_other_filters_is_refused() {
        let county = jurisdiction_from_proto(Some(&place("", "620702")));
        let token = cursors().encode("alert.list|620702||open||", &(Utc::now(), Uuid::nil()));
        let request = pb::ListAlertsRequest {
            statuses: vec![pb::AlertStatus::Resolved as i32],
            page: Some(PageRequest {
                page_size: 10,
                page_token: token,
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(list_alerts(&request, county, &cursors())),
            ["page.page_token"]
        );
    }

    #[test]
    fn a_resolution_needs_an_id_and_a_note() {
        let request = pb::ResolveAlertRequest {
            alert_id: "nope".into(),
            note: "  ".into(),
        };
        assert_eq!(fields(resolve(&request)), ["alert_id", "note"]);
        let request = pb::ResolveAlertRequest {
            alert_id: format!(" {} ", Uuid::from_u128(1)),
            note: " 已核实 ".into(),
        };
        let resolve = resolve(&request).expect("valid");
        assert_eq!(resolve.alert_id, Uuid::from_u128(1));
        assert_eq!(resolve.note, "已核实");
    }

    #[test]
    fn endpoints_need_https_a_long_secret_and_a_short_description() {
        let valid = pb::RegisterEndpointRequest {
            jurisdiction: None,
            url: " https://office.example/hook ".into(),
            secret: "s".repeat(32),
            description: " 值班系统 ".into(),
            max_batch_size: 0,
        };
        let endpoint = endpoint(&valid, false).expect("valid");
        assert_eq!(endpoint.url.as_str(), "https://office.example/hook");
        assert_eq!(endpoint.description, "值班系统");
        assert_eq!(endpoint.max_batch_size, 1, "unset: one notification per POST");
        let plain = pb::RegisterEndpointRequest {
            url: "http://office.example/hook".into(),
            ..valid.clone()
        };
        assert_eq!(fields(super::endpoint(&plain, false)), ["url"]);
        assert!(super::endpoint(&plain, true).is_ok());
        let bad = pb::RegisterEndpointRequest {
            secret: "short".into(),
            description: "长".repeat(201),
            ..valid
        };
        assert_eq!(fields(super::endpoint(&bad, false)), ["secret", "description"]);
    }

    #[test]
    fn an_endpoint_url_names_a_host_without_credentials_and_is_kept_in_normal_form() {
        let request = |url: &str| pb::RegisterEndpointRequest {
            jurisdiction: None,
            url: url.into(),
            secret: "s".repeat(32),
            description: String::new(),
            max_batch_size: 0,
        };
        for refused in [
            "https://user:password@office.example/hook",
            "https://user@office.example/hook",
            "https://:password@office.example/hook",
            "https://",
            "https://:443/hook",
            "ftp://office.example/hook",
            "office.example/hook",
            "",
        ] {
            assert_eq!(fields(endpoint(&request(refused), true)), ["url"], "{refused:?}");
        }
        let long = format!("https://office.example/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(fields(endpoint(&request(&long), false)), ["url"]);
        let normal = endpoint(&request("https://OFFICE.example:443/hook"), false).expect("valid");
        assert_eq!(normal.url.as_str(), "https://office.example/hook");
        let literal = endpoint(&request("https://2130706433:5432/x"), false).expect("well formed");
        assert_eq!(
            literal.url.as_str(),
            "https://127.0.0.1:5432/x",
            "judged as what it is"
        );
    }

    #[test]
    fn an_endpoint_opts_in_to_batches_of_at_most_a_thousand() {
        let request = |max_batch_size| pb::RegisterEndpointRequest {
            jurisdiction: None,
            url: "https://office.example/hook".into(),
            secret: "s".repeat(32),
            description: String::new(),
            max_batch_size,
        };
        let size = |max| endpoint(&request(max), false).map(|e| e.max_batch_size);
        assert_eq!(size(1).expect("valid"), 1);
        assert_eq!(size(100).expect("valid"), 100);
        assert_eq!(size(1000).expect("valid"), 1000);
        assert_eq!(fields(size(1001)), ["max_batch_size"]);
    }
}
