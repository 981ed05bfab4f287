//! Pagination: bounded page sizes and opaque page tokens that carry the last key seen.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::values::ValueError;

/// The page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page size accepted.
pub const MAX_PAGE_SIZE: u32 = 500;

/// A validated page request: how many rows and after which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows to return.
    pub size: u32,
    /// The sort key of the last row of the previous page, if any.
    pub after: Option<String>,
}

const TOKEN_PREFIX: &str = "p1:";

impl Page {
    /// Parses `page_size` and `page_token` from a request.
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, ValueError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(ValueError::Malformed("page_size")),
            n => (n as u32).min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| ValueError::Malformed("page_token"))?;
            let text = String::from_utf8(bytes).map_err(|_| ValueError::Malformed("page_token"))?;
            let key = text.strip_prefix(TOKEN_PREFIX).ok_or(ValueError::Malformed("page_token"))?;
            Some(key.to_owned())
        };
        Ok(Self { size, after })
    }

    /// The rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// Trims `rows` (fetched with [`Page::fetch_limit`]) to the page and returns the next token.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        if rows.len() > self.size as usize {
            rows.truncate(self.size as usize);
            let next = rows.last().map(|r| token(&key(r))).unwrap_or_default();
            (rows, next)
        } else {
            (rows, String::new())
        }
    }
}

fn token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tokens() {
        assert_eq!(Page::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(10_000, "").unwrap().size, MAX_PAGE_SIZE);
        assert!(Page::parse(-1, "").is_err());
        assert!(Page::parse(10, "!!!").is_err());
        assert!(Page::parse(10, &URL_SAFE_NO_PAD.encode("other")).is_err());
        let page = Page::parse(2, "").unwrap();
        let (rows, next) = page.finish(vec!["a", "b", "c"], |r| r.to_string());
        assert_eq!(rows, vec!["a", "b"]);
        assert_eq!(Page::parse(2, &next).unwrap().after.as_deref(), Some("b"));
        let (rows, next) = page.finish(vec!["a"], |r| r.to_string());
        assert_eq!((rows.len(), next.as_str()), (1, ""));
    }
}
