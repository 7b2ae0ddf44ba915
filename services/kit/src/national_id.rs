//! Validation of national ID numbers (居民身份证号码) per GB 11643-1999: 17 digits (6-digit
//! address code, 8-digit birth date, 3-digit sequence) followed by an ISO 7064 MOD 11-2 check
//! character (`0`-`9` or `X`).
//!
//! Errors never echo the number itself, so they are safe to return and to log.

use chrono::NaiveDate;

/// Weights of the 17 leading digits in the MOD 11-2 checksum.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each remainder 0..=10.
const CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Why a national ID number is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NationalIdError {
    #[error("must be 18 characters, got {0}")]
    WrongLength(usize),
    #[error("the first 17 characters must be digits and the last a digit or X")]
    BadCharacter,
    #[error("the birth date (characters 7-14) is not a valid date")]
    BadBirthDate,
    #[error("the birth date (characters 7-14) is in the future or before 1900")]
    BirthDateOutOfRange,
    #[error("the check character does not match (GB 11643 checksum)")]
    WrongCheckCharacter,
}

/// A national ID number that passed validation, normalised to upper case.
#[derive(Clone, PartialEq, Eq)]
pub struct NationalId(String);

impl std::fmt::Debug for NationalId {
    // Never print the number, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NationalId({})", self.masked())
    }
}

impl NationalId {
    /// Validates `input` against the format, the birth date (not after `today`) and checksum.
    pub fn parse(input: &str, today: NaiveDate) -> Result<Self, NationalIdError> {
        let normalised = input.trim().to_ascii_uppercase();
        let chars: Vec<char> = normalised.chars().collect();
        if chars.len() != 18 {
            return Err(NationalIdError::WrongLength(chars.len()));
        }
        let mut digits = [0u32; 17];
        for (index, slot) in digits.iter_mut().enumerate() {
            *slot = chars[index].to_digit(10).ok_or(NationalIdError::BadCharacter)?;
        }
        let last = chars[17];
        if !(last.is_ascii_digit() || last == 'X') {
            return Err(NationalIdError::BadCharacter);
        }
        let birth = NaiveDate::parse_from_str(&normalised[6..14], "%Y%m%d")
            .map_err(|_| NationalIdError::BadBirthDate)?;
        let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or(NationalIdError::BadBirthDate)?;
        if birth > today || birth < earliest {
            return Err(NationalIdError::BirthDateOutOfRange);
        }
        if check_character(&digits) != last {
            return Err(NationalIdError::WrongCheckCharacter);
        }
        Ok(Self(normalised))
    }

    /// The full number, for encryption and blind indexing only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The date of birth encoded in the number.
    pub fn birth_date(&self) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(&self.0[6..14], "%Y%m%d").ok()
    }

    /// The number masked for display: first 6 and last 4 characters kept.
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.0[..6], &self.0[14..])
    }
}

/// Computes the MOD 11-2 check character of the 17 leading digits.
pub fn check_character(digits: &[u32; 17]) -> char {
    let sum: u32 = digits
        .iter()
        .zip(WEIGHTS)
        .map(|(digit, weight)| digit * weight)
        .sum();
    CHECK_CHARS[(sum % 11) as usize]
}

/// Builds a valid number from a 6-digit area code, a birth date and a 3-digit sequence, for
/// demos and tests (the check character is computed, not invented).
pub fn synthesize(area_code: &str, birth: NaiveDate, sequence: u16) -> String {
    let body = format!(
        "{area_code:0>6.6}{}{:03}",
        birth.format("%Y%m%d"),
        sequence % 1000
    );
    let mut digits = [0u32; 17];
    for (slot, ch) in digits.iter_mut().zip(body.chars()) {
        *slot = ch.to_digit(10).unwrap_or(0);
    }
    format!("{body}{}", check_character(&digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).expect("valid date")
    }

    #[test]
    fn accepts_the_standard_example() {
        // The worked example of GB 11643-1999 appendix: 11010519491231002X.
        let id = NationalId::parse("11010519491231002x", today()).expect("valid");
        assert_eq!(id.expose(), "11010519491231002X");
        assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1949, 12, 31));
        assert_eq!(id.masked(), "110105********002X");
    }

    #[test]
    fn accepts_a_numeric_check_digit() {
        let id = synthesize("620702", NaiveDate::from_ymd_opt(1990, 3, 7).expect("date"), 123);
        assert!(NationalId::parse(&id, today()).is_ok(), "{id}");
    }

    #[test]
    fn rejects_a_wrong_check_digit() {
        assert_eq!(
            NationalId::parse("110105194912310021", today()),
            Err(NationalIdError::WrongCheckCharacter)
        );
    }

    #[test]
    fn rejects_wrong_lengths() {
        assert_eq!(
            NationalId::parse("11010519491231002", today()),
            Err(NationalIdError::WrongLength(17))
        );
        assert_eq!(
            NationalId::parse("11010519491231002X1", today()),
            Err(NationalIdError::WrongLength(19))
        );
        assert_eq!(
            NationalId::parse("", today()),
            Err(NationalIdError::WrongLength(0))
        );
    }

    #[test]
    fn rejects_bad_characters() {
        assert_eq!(
            NationalId::parse("1101051949123100X2", today()),
            Err(NationalIdError::BadCharacter)
        );
        assert_eq!(
            NationalId::parse("11010519491231002Y", today()),
            Err(NationalIdError::BadCharacter)
        );
        // Non-ASCII input of the right character count must not panic on slicing.
        assert_eq!(
            NationalId::parse("一一〇一〇五一九四九一二三一〇〇二X", today()),
            Err(NationalIdError::BadCharacter)
        );
    }

    #[test]
    fn rejects_bad_dates() {
        // 30 February does not exist.
        let id = synthesize("110105", NaiveDate::from_ymd_opt(1990, 2, 28).expect("date"), 1)
            .replacen("19900228", "19900230", 1);
        assert_eq!(
            NationalId::parse(&id, today()),
            Err(NationalIdError::BadBirthDate)
        );
        let future = synthesize("110105", NaiveDate::from_ymd_opt(2030, 1, 1).expect("date"), 1);
        assert_eq!(
            NationalId::parse(&future, today()),
            Err(NationalIdError::BirthDateOutOfRange)
        );
        let ancient = synthesize("110105", NaiveDate::from_ymd_opt(1899, 12, 31).expect("date"), 1);
        assert_eq!(
            NationalId::parse(&ancient, today()),
            Err(NationalIdError::BirthDateOutOfRange)
        );
    }

    #[test]
    fn debug_output_is_masked() {
        let id = NationalId::parse("11010519491231002X", today()).expect("valid");
        assert_eq!(format!("{id:?}"), "NationalId(110105********002X)");
    }
}
