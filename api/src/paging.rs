//! Keyset pagination: `limit` and an opaque `cursor` (the last id of the previous page).

use axum::Json;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use conveyor_core::store::{Detail, JobPage};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::problem::{FieldError, Problem};

const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// `limit` and `cursor`, plus the extra parameters `extra` accepts.
pub fn paging(
    q: &[(String, String)],
    mut extra: impl FnMut(&str, &str) -> Option<Result<(), FieldError>>,
) -> Result<(i64, Option<Uuid>), Problem> {
    let mut limit = DEFAULT_LIMIT;
    let mut before = None;
    let mut errors = Vec::new();
    for (k, v) in q {
        match k.as_str() {
            "limit" => match v.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                )),
            },
            "cursor" => match decode_cursor(v) {
                Some(id) => before = Some(id),
                None => errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API returned",
                )),
            },
            other => match extra(other, v) {
                Some(Ok(())) => {}
                Some(Err(e)) => errors.push(e),
                None => errors.push(FieldError::new(other, "unknown query parameter")),
            },
        }
    }
    if errors.is_empty() {
        Ok((limit, before))
    } else {
        Err(Problem::bad_query(errors))
    }
}

/// The most one list page may hold, as JSON text: past it the page ends early, with a cursor
/// for the rest (a single item larger than this still makes a page of its own).
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// One page: `limit + 1` rows were read, so a full page knows whether another follows.
pub fn page<T: serde::Serialize>(rows: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Json<Value> {
    page_of(rows, limit, false, id, |r| {
        serde_json::to_value(r).unwrap_or(Value::Null)
    })
}

/// A page of jobs read with `detail`: without payload and result unless they were asked for
/// (`?include=payload`); a page the store cut short has a cursor whatever its length.
pub fn job_page(page: JobPage, limit: i64, detail: Detail) -> Json<Value> {
    page_of(
        page.jobs,
        limit,
        page.cut_short,
        |j| j.id,
        |j| {
            let mut v = serde_json::to_value(j).unwrap_or(Value::Null);
            if detail == Detail::Summary {
                if let Some(o) = v.as_object_mut() {
                    o.remove("payload");
                    o.remove("result");
                }
            }
            v
        },
    )
}

/// `rows` as a page of at most `limit` items and `MAX_PAGE_BYTES`; `more`: rows follow the
/// last one read even if there are not `limit + 1` of them.
fn page_of<T>(
    rows: Vec<T>,
    limit: i64,
    more: bool,
    id: impl Fn(&T) -> Uuid,
    to_value: impl Fn(&T) -> Value,
) -> Json<Value> {
    let read = rows.len();
    let (mut data, mut bytes, mut last) = (Vec::new(), 0usize, None);
    for row in rows.iter().take(limit.max(0) as usize) {
        let v = to_value(row);
        let len = conveyor_core::model::json_len(&v);
        if !data.is_empty() && bytes + len > MAX_PAGE_BYTES {
            break;
        }
        bytes += len;
        data.push(v);
        last = Some(id(row));
    }
    let next_cursor = if more || data.len() < read {
        last.map(encode_cursor)
    } else {
        None
    };
    Json(json!({ "data": data, "next_cursor": next_cursor }))
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

    #[test]
    fn paging_names_every_bad_parameter() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(paging(&q(&[]), |_, _| None).unwrap(), (DEFAULT_LIMIT, None));
        let err = paging(
            &q(&[("limit", "0"), ("cursor", "x!"), ("what", "1")]),
            |_, _| None,
        )
        .unwrap_err();
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "cursor", "what"]);
    }
}
