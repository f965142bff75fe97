//! Reading raw replies without trusting them: every shape mismatch becomes `StoreError::Corrupt`.

use ::redis::Value;

use crate::store::StoreError;

pub(super) fn corrupt(key: &str, why: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        why: why.into(),
    }
}

/// A string-like reply (`None` for nil or another type).
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|s| s.parse().ok()),
    }
}

pub(super) fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// Field/value pairs from a flat array (RESP2) or a map (RESP3).
pub(super) fn pairs(v: &Value) -> Option<Vec<(String, String)>> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| Some((text(k)?, text(v)?))).collect(),
        Value::Array(a) if a.len() % 2 == 0 => a
            .chunks(2)
            .map(|c| Some((text(&c[0])?, text(&c[1])?)))
            .collect(),
        _ => None,
    }
}

/// A stream entry's id and its field/value pairs.
pub(super) type StreamEntry = (String, Vec<(String, String)>);

/// A stream entry: `[id, [field, value, ...]]`; `Ok(None)` for a deleted entry (nil).
pub(super) fn stream_entry(key: &str, v: &Value) -> Result<Option<StreamEntry>, StoreError> {
    if matches!(v, Value::Nil) {
        return Ok(None);
    }
    let parts = items(v).ok_or_else(|| corrupt(key, "stream entry is not an array"))?;
    let [id, fields] = parts else {
        return Err(corrupt(key, "stream entry is not [id, fields]"));
    };
    let id = text(id).ok_or_else(|| corrupt(key, "stream entry id is not a string"))?;
    if matches!(fields, Value::Nil) {
        return Ok(None);
    }
    let fields =
        pairs(fields).ok_or_else(|| corrupt(key, format!("entry {id} has unreadable fields")))?;
    Ok(Some((id, fields)))
}

/// The entries of one stream in an XREADGROUP reply (RESP2 array or RESP3 map of streams).
pub(super) fn xread_entries(key: &str, v: &Value) -> Result<Vec<Value>, StoreError> {
    let streams: Vec<(&Value, &Value)> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(a) => a
            .iter()
            .map(|s| match items(s) {
                Some([k, e]) => Ok((k, e)),
                _ => Err(corrupt(key, "XREADGROUP stream is not [key, entries]")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(corrupt(key, "unexpected XREADGROUP reply")),
    };
    let mut out = Vec::new();
    for (k, entries) in streams {
        if text(k).as_deref() != Some(key) {
            continue;
        }
        if matches!(entries, Value::Nil) {
            continue;
        }
        let entries =
            items(entries).ok_or_else(|| corrupt(key, "XREADGROUP entries are not an array"))?;
        out.extend(entries.iter().cloned());
    }
    Ok(out)
}
