use std::borrow::Cow;
use std::fmt;

/// A map from text to text, such as `source.labels`.
///
/// Entries stay in insertion order and lookups scan them: label and header maps hold a handful
/// of entries, where a scan beats hashing and needs no allocation per lookup.
#[derive(Clone, Debug, Default)]
pub struct StringMap<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> StringMap<'a> {
    /// An empty map.
    pub const fn new() -> Self {
        StringMap {
            entries: Vec::new(),
        }
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        StringMap {
            entries: Vec::with_capacity(n),
        }
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) {
        let (key, value) = (key.into(), value.into());
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Removes every entry, keeping the allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &**v)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Entries sorted by key (the order Istio prints maps in).
    pub fn sorted(&self) -> Vec<(&str, &str)> {
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_unstable();
        entries
    }

    /// A copy that borrows nothing.
    pub fn into_owned(self) -> StringMap<'static> {
        StringMap {
            entries: self
                .entries
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
        }
    }
}

impl PartialEq for StringMap<'_> {
    /// Maps are equal when they hold the same entries, whatever their order.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<'a, K: Into<Cow<'a, str>>, V: Into<Cow<'a, str>>> FromIterator<(K, V)> for StringMap<'a> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = StringMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl fmt::Display for StringMap<'_> {
    /// `k1=v1&k2=v2` with keys sorted, the text Mixer gave a map used as a label value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.sorted().into_iter().enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_display_sorts() {
        let mut m: StringMap<'_> = [("version", "v1"), ("app", "ratings")]
            .into_iter()
            .collect();
        m.insert("version", "v2");
        assert_eq!(m.get("version"), Some("v2"));
        assert_eq!(m.get("missing"), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.to_string(), "app=ratings&version=v2");
        let same: StringMap<'_> = [("app", "ratings"), ("version", "v2")]
            .into_iter()
            .collect();
        assert_eq!(m, same);
    }
}
