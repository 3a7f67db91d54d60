//! The JSON encoding of typed values used by `meshmeter eval`, `meshmeter report` and the
//! conformance data: text types as strings, INT64 as an integer, DOUBLE as a number, TIMESTAMP
//! as RFC 3339, DURATION in Go's form, IP_ADDRESS as text, BYTES as an array of 0-255 and
//! STRING_MAP as an object of strings.

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::{Bag, Duration, Manifest, StringMap, Timestamp, Value, ValueType};

/// A JSON value that does not encode a value of the expected type, or a bag naming an
/// attribute the manifest does not declare.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The JSON has the wrong shape or text for the type.
    #[error("attribute '{name}' is {expected}, but {found} is not a {expected} value{detail}")]
    WrongType {
        /// The attribute, or `value` outside a bag.
        name: String,
        /// Its declared type.
        expected: ValueType,
        /// The offending JSON, abbreviated.
        found: String,
        /// Why, when the shape was right but the text was not (`: invalid duration ...`).
        detail: String,
    },
    /// The bag names an attribute that no manifest declares.
    #[error("unknown attribute '{name}'{}", suggestion.as_ref().map(|s| format!("; did you mean '{s}'?")).unwrap_or_default())]
    UnknownAttribute {
        /// The name as written.
        name: String,
        /// The closest declared name.
        suggestion: Option<String>,
    },
    /// The bag is not a JSON object.
    #[error("a bag must be a JSON object of attribute names to values")]
    NotAnObject,
}

fn abbreviate(v: &Json) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

/// Decodes `json` as a value of type `t`; `name` is used in the error.
pub fn value_from_json(name: &str, t: ValueType, json: &Json) -> Result<Value<'static>, JsonError> {
    let wrong = |detail: String| JsonError::WrongType {
        name: name.to_owned(),
        expected: t,
        found: abbreviate(json),
        detail,
    };
    let text = || json.as_str().ok_or_else(|| wrong(String::new()));
    Ok(match t {
        ValueType::String => Value::String(Cow::Owned(text()?.to_owned())),
        ValueType::EmailAddress => Value::EmailAddress(Cow::Owned(text()?.to_owned())),
        ValueType::DnsName => Value::DnsName(Cow::Owned(text()?.to_owned())),
        ValueType::Uri => Value::Uri(Cow::Owned(text()?.to_owned())),
        ValueType::Int64 => Value::Int64(json.as_i64().ok_or_else(|| wrong(String::new()))?),
        ValueType::Double => Value::Double(json.as_f64().ok_or_else(|| wrong(String::new()))?),
        ValueType::Bool => Value::Bool(json.as_bool().ok_or_else(|| wrong(String::new()))?),
        ValueType::Timestamp => Value::Timestamp(
            text()?
                .parse::<Timestamp>()
                .map_err(|e| wrong(format!(": {e}")))?,
        ),
        ValueType::Duration => Value::Duration(
            text()?
                .parse::<Duration>()
                .map_err(|e| wrong(format!(": {e}")))?,
        ),
        ValueType::IpAddress => Value::IpAddress(
            text()?
                .parse()
                .map_err(|_| wrong(": not an IPv4 or IPv6 address".into()))?,
        ),
        ValueType::Bytes => {
            let items = json.as_array().ok_or_else(|| wrong(String::new()))?;
            let bytes = items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| wrong(": bytes are integers 0-255".into()))?;
            Value::Bytes(Cow::Owned(bytes))
        }
        ValueType::StringMap => {
            let obj = json.as_object().ok_or_else(|| wrong(String::new()))?;
            let mut map = StringMap::with_capacity(obj.len());
            for (k, v) in obj {
                let v = v
                    .as_str()
                    .ok_or_else(|| wrong(format!(": the value of key '{k}' is not a string")))?;
                map.insert(k.clone(), v.to_owned());
            }
            Value::StringMap(Cow::Owned(map))
        }
    })
}

/// Encodes `value` as JSON.
pub fn value_to_json(value: &Value<'_>) -> Json {
    match value {
        Value::String(s) | Value::EmailAddress(s) | Value::DnsName(s) | Value::Uri(s) => {
            Json::String(s.to_string())
        }
        Value::Int64(v) => Json::from(*v),
        // Non-finite doubles have no JSON number; they are written as text.
        Value::Double(v) => serde_json::Number::from_f64(*v)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(v.to_string())),
        Value::Bool(v) => Json::Bool(*v),
        Value::Timestamp(_) | Value::Duration(_) | Value::IpAddress(_) => {
            Json::String(value.to_string())
        }
        Value::Bytes(b) => Json::Array(b.iter().map(|&b| Json::from(b)).collect()),
        Value::StringMap(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.to_owned(), Json::String(v.to_owned())))
                .collect(),
        ),
    }
}

/// Decodes a bag: a JSON object of attribute names to values, typed by `manifest`.
pub fn bag_from_json(manifest: &Manifest, json: &Json) -> Result<Bag<'static>, JsonError> {
    let obj = json.as_object().ok_or(JsonError::NotAnObject)?;
    let mut bag = Bag::new(manifest);
    for (name, v) in obj {
        let (id, t) = manifest
            .lookup(name)
            .ok_or_else(|| JsonError::UnknownAttribute {
                name: name.clone(),
                suggestion: manifest.suggest(name).map(str::to_owned),
            })?;
        bag.set(id, value_from_json(name, t, v)?);
    }
    Ok(bag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_each_type() {
        let cases = [
            (ValueType::String, json!("v1")),
            (ValueType::Int64, json!(-3)),
            (ValueType::Double, json!(0.25)),
            (ValueType::Bool, json!(true)),
            (ValueType::Timestamp, json!("2015-01-02T15:04:35Z")),
            (ValueType::Duration, json!("1m30.5s")),
            (ValueType::IpAddress, json!("10.0.0.1")),
            (ValueType::Bytes, json!([1, 2, 255])),
            (ValueType::StringMap, json!({"app": "ratings"})),
            (ValueType::DnsName, json!("a.b.c")),
        ];
        for (t, j) in cases {
            let v = value_from_json("x", t, &j).unwrap();
            assert_eq!(v.value_type(), t);
            assert_eq!(value_to_json(&v), j);
        }
    }

    #[test]
    fn errors_name_the_attribute() {
        let m = Manifest::istio();
        let err = bag_from_json(&m, &json!({"conection.sent.bytes": 1})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown attribute 'conection.sent.bytes'; did you mean 'connection.sent.bytes'?"
        );
        let err = bag_from_json(&m, &json!({"connection.duration": "10"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "attribute 'connection.duration' is DURATION, but \"10\" is not a DURATION value: missing unit in duration '10'"
        );
        let bag = bag_from_json(&m, &json!({"connection.sent.bytes": 7})).unwrap();
        assert_eq!(
            bag.get(m.id("connection.sent.bytes").unwrap()),
            Some(&Value::Int64(7))
        );
    }
}
