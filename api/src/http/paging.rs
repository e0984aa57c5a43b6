//! Keyset pagination: `limit` and an opaque `cursor` (the last id of the previous page).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use conveyor_types::{Cursor, FieldError};
use uuid::Uuid;

use super::problem::Problem;

const DEFAULT_LIMIT: u32 = 50;

/// The most one list page may hold, as JSON text: past it the page ends early, with a cursor
/// for the rest (a single item larger than this still makes a page of its own).
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// A page's size and where it starts (the schema already bounded `limit` and shaped
/// `cursor`).
pub struct Paging {
    pub limit: i64,
    pub before: Option<Uuid>,
}

impl Paging {
    pub fn new(limit: Option<u32>, cursor: Option<&Cursor>) -> Result<Self, Problem> {
        let before = match cursor {
            None => None,
            Some(c) => Some(decode_cursor(&c.0).ok_or_else(|| {
                Problem::bad_query(vec![FieldError::new(
                    "cursor",
                    "is not a cursor this API returned",
                )])
            })?),
        };
        Ok(Self {
            limit: i64::from(limit.unwrap_or(DEFAULT_LIMIT)),
            before,
        })
    }

    /// Rows to read: one more than a page, to know whether another follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page of `rows` (read with `fetch`): at most `limit` of them and about
    /// `MAX_PAGE_BYTES`, with a cursor when more follow (`more`: more follow even if fewer
    /// than `limit + 1` were read, the store having cut its read short).
    pub fn page<T: serde::Serialize>(
        &self,
        rows: Vec<T>,
        more: bool,
        id: impl Fn(&T) -> Uuid,
    ) -> (Vec<T>, Option<Cursor>) {
        let read = rows.len();
        let (mut data, mut bytes) = (Vec::new(), 0usize);
        for row in rows.into_iter().take(self.limit.max(0) as usize) {
            let len = json_len(&row);
            if !data.is_empty() && bytes + len > MAX_PAGE_BYTES {
                break;
            }
            bytes += len;
            data.push(row);
        }
        let next = if more || data.len() < read {
            data.last().map(|last| Cursor(encode_cursor(id(last))))
        } else {
            None
        };
        (data, next)
    }
}

/// The length of a value as JSON text, without writing it anywhere.
fn json_len<T: serde::Serialize>(v: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(raw: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    Uuid::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not-a-cursor!"), None);
        assert_eq!(decode_cursor("AAAA"), None);
    }

    /// Every cursor the schema's pattern allows decodes: a made-up one that looks right
    /// starts the list somewhere, it is never refused.
    #[test]
    fn every_cursor_of_the_documented_form_decodes() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for last in ['A', 'Q', 'g', 'w'] {
            for c in alphabet.chars() {
                let cursor = format!("{}{last}", c.to_string().repeat(21));
                assert!(decode_cursor(&cursor).is_some(), "{cursor}");
            }
        }
        let pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$";
        let schema =
            serde_json::to_value(<conveyor_types::Cursor as utoipa::PartialSchema>::schema())
                .unwrap();
        assert_eq!(schema["pattern"], pattern);
        for id in [Uuid::nil(), Uuid::max(), Uuid::now_v7()] {
            let c = encode_cursor(id);
            assert!(
                c.len() == 22 && "AQgw".contains(c.chars().last().unwrap()),
                "{c}"
            );
        }
    }

    #[test]
    fn a_page_ends_at_its_limit_or_its_bytes() {
        let paging = Paging::new(Some(2), None).unwrap();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let (data, next) = paging.page(ids.clone(), false, |id| *id);
        assert_eq!(data, ids[..2]);
        assert_eq!(next, Some(Cursor(encode_cursor(ids[1]))));
        let (data, next) = paging.page(ids[..2].to_vec(), false, |id| *id);
        assert_eq!((data.len(), next), (2, None));
        let big = "x".repeat(MAX_PAGE_BYTES / 2 + 1);
        let paging = Paging::new(Some(3), None).unwrap();
        let (data, next) = paging.page(vec![big.clone(), big.clone(), big], false, |_| Uuid::nil());
        assert_eq!(data.len(), 1);
        assert!(next.is_some());
    }
}
