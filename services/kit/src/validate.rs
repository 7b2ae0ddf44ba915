//! Field checks shared by the services' request validation. Each records a precise
//! violation naming the field instead of failing fast, so callers fix everything at once.

use crate::{error::FieldViolations, jurisdiction::Directory};

/// Checks a text field: non-empty after trimming, at most `max` characters, no control
/// characters. Returns the trimmed value.
pub fn check_text(violations: &mut FieldViolations, field: &str, value: &str, max: usize) -> String {
    let value = value.trim();
    if value.is_empty() {
        violations.add(field, "must not be empty");
    } else if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        violations.add(field, "must not contain control characters");
    }
    value.to_owned()
}

/// Checks that the township office exists and belongs to the county bureau.
pub fn check_jurisdiction(
    violations: &mut FieldViolations,
    township_field: &str,
    township_code: &str,
    county_field: &str,
    county_code: &str,
) {
    let directory = Directory::get();
    if directory.county(county_code).is_none() {
        violations.add(county_field, "unknown county bureau code");
    }
    match directory.township(township_code) {
        None => violations.add(township_field, "unknown township office code"),
        Some(township) if directory.county(county_code).is_some() && township.county_code != county_code => {
            violations.add(
                county_field,
                "the township office does not belong to this county bureau",
            )
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(check: impl FnOnce(&mut FieldViolations)) -> Vec<String> {
        let mut violations = FieldViolations::new();
        check(&mut violations);
        violations.fields()
    }

    #[test]
    fn text_rules() {
        assert!(fields(|v| assert_eq!(check_text(v, "name", "  张三 ", 64), "张三")).is_empty());
        assert_eq!(fields(|v| drop(check_text(v, "name", "   ", 64))), ["name"]);
        assert_eq!(
            fields(|v| drop(check_text(v, "name", &"长".repeat(65), 64))),
            ["name"]
        );
        assert_eq!(fields(|v| drop(check_text(v, "name", "a\u{0}b", 64))), ["name"]);
    }

    #[test]
    fn jurisdiction_rules() {
        assert!(fields(|v| check_jurisdiction(v, "t", "620702001", "c", "620702")).is_empty());
        assert_eq!(
            fields(|v| check_jurisdiction(v, "t", "620702999", "c", "620702")),
            ["t"]
        );
        assert_eq!(
            fields(|v| check_jurisdiction(v, "t", "620702001", "c", "620721")),
            ["c"]
        );
        assert_eq!(
            fields(|v| check_jurisdiction(v, "t", "620702001", "c", "999999")),
            ["c"]
        );
    }
}
