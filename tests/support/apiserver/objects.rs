//! Small helpers on JSON objects: metadata access, timestamps (Time and MicroTime) and UIDs.

use serde_json::{Map, Value};

/// `metav1.Time`: RFC 3339 in whole seconds.
pub fn now_time() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn format_time(ts: jiff::Timestamp) -> String {
    format!("{ts:.0}")
}

/// `metav1.MicroTime`: RFC 3339 with 6 fractional digits.
pub fn now_micro_time() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}

pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// A random RFC 4122 version 4 UUID, like the server's `uuid.NewUUID()`.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Random lowercase alphanumerics without vowels-lookalikes, like `utilrand.String`.
pub fn random_suffix(n: usize) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHANUMS[rand::random_range(0..ALPHANUMS.len())] as char)
        .collect()
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// The object's metadata map, created if absent or not a map.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("just made an object");
    let m = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("just made an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// Follows a dotted path of object fields.
pub fn path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, k| v.get(k))
}

pub fn path_str<'a>(obj: &'a Value, dotted: &str) -> &'a str {
    path(obj, dotted).and_then(Value::as_str).unwrap_or("")
}

/// Sets `obj[k1][k2]…` creating intermediate maps.
pub fn set_path(obj: &mut Value, dotted: &str, value: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, k) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let map = cur.as_object_mut().expect("just made an object");
        if i == parts.len() - 1 {
            map.insert((*k).to_string(), value);
            return;
        }
        cur = map.entry(*k).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Inserts `key: value` when the key is absent or null (API defaulting).
pub fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// Whole seconds since an RFC 3339 timestamp, for printers.
pub fn age_seconds(ts: &str) -> Option<i64> {
    let t = parse_time(ts)?;
    Some(jiff::Timestamp::now().as_second() - t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_has_uuid_shape() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn times_have_the_wire_formats() {
        let ts: jiff::Timestamp = "2024-01-02T03:04:05.123456789Z".parse().unwrap();
        assert_eq!(format_time(ts), "2024-01-02T03:04:05Z");
        assert_eq!(format!("{ts:.6}"), "2024-01-02T03:04:05.123456Z");
    }
}
