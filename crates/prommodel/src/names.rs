//! Which names Prometheus accepts.

/// Whether `name` is a valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid label name a user may choose: `[a-zA-Z_][a-zA-Z0-9_]*`, not
/// starting with `__` (reserved for Prometheus' own labels).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        assert!(valid_metric_name("istio_mongo_sent_bytes"));
        assert!(valid_metric_name(":a:b_9"));
        assert!(!valid_metric_name("mongo-sent"));
        assert!(!valid_metric_name("1abc"));
        assert!(!valid_metric_name(""));
    }

    #[test]
    fn label_names() {
        assert!(valid_label_name("source_version"));
        assert!(valid_label_name("_x"));
        assert!(!valid_label_name("__reserved"));
        assert!(!valid_label_name("a:b"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name("9a"));
        assert!(!valid_label_name(""));
    }
}
