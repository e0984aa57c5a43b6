//! Small serde pieces the request types share.

use serde::{Deserialize, Deserializer};

/// For `Option<Option<T>>` fields of a change: absent is `None` (leave it as it is), `null`
/// is `Some(None)` (clear it), a value is `Some(Some(v))`.
pub(crate) fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// For free JSON that may be absent: absent is `None`, and JSON `null` is `Some(Null)`, a
/// value of its own (a job's payload may be `null`).
pub(crate) fn present<'de, D>(d: D) -> Result<Option<serde_json::Value>, D::Error>
where
    D: Deserializer<'de>,
{
    serde_json::Value::deserialize(d).map(Some)
}
