//! Keyset paging for every list RPC: one page-size rule and one cursor codec.
//!
//! A cursor (the `page_token` a caller passes back) is the sort key of the last row of the
//! previous page, serialized as JSON, prefixed with a format version and sealed with an
//! HMAC over the list's *scope* (the RPC and its filters). It is opaque to callers and
//! tamper-evident: a cursor that was altered, forged without the key, or taken from another
//! list or other filters is `InvalidArgument` on `page.page_token` — never a SQL error,
//! never a silent jump to someone else's rows. Keyset paging never skips or repeats a row
//! when rows are inserted between pages.

use base64::Engine;
use hmac::{Hmac, Mac};
use mesh_proto::common::{PageRequest, PageResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;

use crate::error::FieldViolations;

/// Page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u32 = 500;

/// The cursor format written now; a cursor of another version is refused.
const VERSION: u8 = 1;
/// Bytes of the HMAC kept in a cursor: enough that guessing one is hopeless.
const TAG_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Seals and opens cursors with a key derived from the service's cursor secret, so every
/// replica of a service reads every other replica's cursors, and no other deployment's.
#[derive(Clone)]
pub struct Cursors {
    key: [u8; 32],
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cursors(..)")
    }
}

/// A validated page request: its size and the position after which it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<K> {
    pub size: u32,
    pub after: Option<K>,
}

impl<K> Page<K> {
    /// How many rows to fetch: one more than the page, to tell whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }
}

impl Cursors {
    /// Cursors keyed by `secret` (the service's `MESH_CURSOR_SECRET`; a label keeps the
    /// derived key apart from any other use of the secret).
    pub fn new(secret: &SecretString) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"mesh page cursor key v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn tag(&self, scope: &str, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The cursor that continues `scope` after the row whose sort key is `key`.
    pub fn encode<K: Serialize>(&self, scope: &str, key: &K) -> String {
        let mut body = vec![VERSION];
        // A sort key is plain data (strings, numbers, ids): serializing it cannot fail.
        body.extend(serde_json::to_vec(key).unwrap_or_default());
        let tag = self.tag(scope, &body);
        body.extend_from_slice(&tag);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }

    /// The sort key a cursor of `scope` holds, or `None` for anything else.
    pub fn decode<K: DeserializeOwned>(&self, scope: &str, token: &str) -> Option<K> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let split = bytes.len().checked_sub(TAG_LEN)?;
        let (body, tag) = bytes.split_at(split);
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        match body.split_first() {
            Some((&VERSION, json)) => serde_json::from_slice(json).ok(),
            _ => None,
        }
    }

    /// Validates a list request's page: the size (at most [`MAX_PAGE_SIZE`], 0 meaning
    /// [`DEFAULT_PAGE_SIZE`]) and the cursor, recording violations on `page.page_size` and
    /// `page.page_token`.
    pub fn page<K: DeserializeOwned>(
        &self,
        scope: &str,
        request: Option<&PageRequest>,
        violations: &mut FieldViolations,
    ) -> Page<K> {
        let default = PageRequest::default();
        let request = request.unwrap_or(&default);
        if request.page_size > MAX_PAGE_SIZE {
            violations.add("page.page_size", format!("must be at most {MAX_PAGE_SIZE}"));
        }
        let after = match request.page_token.as_str() {
            "" => None,
            token => {
                let decoded = self.decode(scope, token);
                violations.require(
                    decoded.is_some(),
                    "page.page_token",
                    "not a token from a previous page of this list",
                );
                decoded
            }
        };
        Page {
            size: match request.page_size {
                0 => DEFAULT_PAGE_SIZE,
                size => size.min(MAX_PAGE_SIZE),
            },
            after,
        }
    }

    /// Cuts the rows fetched with [`Page::fetch_limit`] to the page and makes the response's
    /// next cursor from the last row kept (none when this was the last page).
    pub fn finish<R, K: Serialize>(
        &self,
        scope: &str,
        page_size: u32,
        mut rows: Vec<R>,
        sort_key: impl Fn(&R) -> K,
    ) -> (Vec<R>, PageResponse) {
        let has_more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => self.encode(scope, &sort_key(last)),
            _ => String::new(),
        };
        (rows, PageResponse { next_page_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn cursors(secret: &str) -> Cursors {
        Cursors::new(&SecretString::from(secret.to_owned()))
    }

    #[test]
    fn a_cursor_round_trips_in_its_scope() {
        let cursors = cursors("a secret of at least thirty-two bytes!!");
        let key = (1_700_000_000_000_000_i64, Uuid::now_v7());
        let token = cursors.encode("checkin.list", &key);
        assert_eq!(cursors.decode("checkin.list", &token), Some(key));
    }

    #[test]
    fn foreign_forged_and_garbage_cursors_are_refused() {
        let cursors = cursors("a secret of at least thirty-two bytes!!");
        let key = ("张三".to_owned(), Uuid::now_v7());
        let token = cursors.encode("placement.bases|620702", &key);
        // another list, other filters, another deployment's key
        assert_eq!(
            cursors.decode::<(String, Uuid)>("placement.bases|620703", &token),
            None
        );
        assert_eq!(
            self::cursors("another deployment's secret, also long")
                .decode::<(String, Uuid)>("placement.bases|620702", &token),
            None
        );
        // one flipped character anywhere
        let mut tampered = token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(
            cursors.decode::<(String, Uuid)>("placement.bases|620702", &tampered),
            None
        );
        // a well-sealed cursor of the wrong shape
        assert_eq!(
            cursors.decode::<(i64, Uuid)>("placement.bases|620702", &token),
            None
        );
        for garbage in ["", "%%%", "AAAA", "garbage!"] {
            assert_eq!(cursors.decode::<(String, Uuid)>("x", garbage), None, "{garbage}");
        }
    }

    #[test]
    fn page_requests_are_bounded_and_checked() {
        let cursors = cursors("a secret of at least thirty-two bytes!!");
        let mut violations = FieldViolations::new();
        let page: Page<(i64, Uuid)> = cursors.page("s", None, &mut violations);
        assert_eq!(
            page,
            Page {
                size: DEFAULT_PAGE_SIZE,
                after: None
            }
        );
        assert!(violations.is_empty());

        let request = PageRequest {
            page_size: MAX_PAGE_SIZE + 1,
            page_token: "forged".into(),
        };
        let _: Page<(i64, Uuid)> = cursors.page("s", Some(&request), &mut violations);
        assert_eq!(
            violations.to_string(),
            "page.page_size: must be at most 500; page.page_token: not a token from a previous page of this list"
        );
    }

    #[test]
    fn finish_cuts_the_extra_row_and_points_after_the_last_kept() {
        let cursors = cursors("a secret of at least thirty-two bytes!!");
        let (rows, response) = cursors.finish("s", 2, vec![1_i64, 2, 3], |row| *row);
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(cursors.decode::<i64>("s", &response.next_page_token), Some(2));

        let (rows, response) = cursors.finish("s", 2, vec![1_i64, 2], |row| *row);
        assert_eq!(rows, vec![1, 2]);
        assert!(response.next_page_token.is_empty());
    }
}
