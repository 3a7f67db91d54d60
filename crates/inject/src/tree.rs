//! Small helpers over `yaml_rust2::Yaml` trees: building, reading and editing maps by string key,
//! and converting to and from JSON.

use yaml_rust2::yaml::Hash;
use yaml_rust2::Yaml;

/// A string node.
pub(crate) fn s(v: &str) -> Yaml {
    Yaml::String(v.to_string())
}

/// An integer node.
pub(crate) fn int(v: i64) -> Yaml {
    Yaml::Integer(v)
}

/// A map node, keys in the given order.
pub(crate) fn map(pairs: Vec<(&str, Yaml)>) -> Yaml {
    let mut h = Hash::new();
    for (k, v) in pairs {
        h.insert(s(k), v);
    }
    Yaml::Hash(h)
}

/// A sequence node.
pub(crate) fn seq(items: Vec<Yaml>) -> Yaml {
    Yaml::Array(items)
}

/// A sequence of strings.
pub(crate) fn strs<S: AsRef<str>>(items: &[S]) -> Yaml {
    Yaml::Array(items.iter().map(|i| s(i.as_ref())).collect())
}

/// `node[key]` when `node` is a map holding `key`.
pub(crate) fn get<'a>(node: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    match node {
        Yaml::Hash(h) => h.get(&s(key)),
        _ => None,
    }
}

/// Mutable `node[key]` when `node` is a map holding `key`.
pub(crate) fn get_mut<'a>(node: &'a mut Yaml, key: &str) -> Option<&'a mut Yaml> {
    match node {
        Yaml::Hash(h) => h.get_mut(&s(key)),
        _ => None,
    }
}

/// Follows a path of map keys.
pub(crate) fn path<'a>(node: &'a Yaml, keys: &[&str]) -> Option<&'a Yaml> {
    keys.iter().try_fold(node, |n, k| get(n, k))
}

/// Follows a path of map keys, mutably.
pub(crate) fn path_mut<'a>(node: &'a mut Yaml, keys: &[&str]) -> Option<&'a mut Yaml> {
    let mut n = node;
    for k in keys {
        n = get_mut(n, k)?;
    }
    Some(n)
}

/// `node[key]` as a string, when it is one.
pub(crate) fn str_at<'a>(node: &'a Yaml, key: &str) -> Option<&'a str> {
    get(node, key).and_then(Yaml::as_str)
}

/// `node[key]`, inserted as `empty` when absent or null. `None` when `node` is not a map.
pub(crate) fn entry<'a>(node: &'a mut Yaml, key: &str, empty: Yaml) -> Option<&'a mut Yaml> {
    let Yaml::Hash(h) = node else { return None };
    let slot = h.entry(s(key)).or_insert(Yaml::Null);
    if slot.is_null() {
        *slot = empty;
    }
    Some(slot)
}

/// Converts a YAML tree to JSON. Map keys that are not strings are written as their YAML text;
/// aliases and bad values become null (the loader has already resolved aliases).
pub(crate) fn to_json(node: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Yaml::Real(text) => match text.parse::<f64>() {
            Ok(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Err(_) => Value::String(text.clone()),
        },
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(v) => Value::String(v.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(h.iter().map(|(k, v)| (key_text(k), to_json(v))).collect()),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

fn key_text(k: &Yaml) -> String {
    match k {
        Yaml::String(v) | Yaml::Real(v) => v.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

/// Converts JSON to a YAML tree (object keys in the JSON's order).
pub(crate) fn from_json(value: &serde_json::Value) -> Yaml {
    use serde_json::Value;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(v) => Yaml::String(v.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(from_json).collect()),
        Value::Object(o) => {
            let mut h = Hash::new();
            for (k, v) in o {
                h.insert(s(k), from_json(v));
            }
            Yaml::Hash(h)
        }
    }
}
