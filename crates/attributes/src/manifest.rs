use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::vocabulary::{ISTIO_ATTRIBUTES, MESHMETER_ATTRIBUTES};
use crate::ValueType;

/// The position of an attribute in a [`Manifest`], and so of its value in a [`crate::Bag`].
///
/// Ids are only meaningful with the manifest that issued them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrId(u32);

impl AttrId {
    /// The position as an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A manifest that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Two manifests declare one name with different types.
    #[error("attribute '{name}' is declared as {existing} and again as {new}")]
    Conflict {
        /// The attribute.
        name: String,
        /// The type it had.
        existing: ValueType,
        /// The type declared again.
        new: ValueType,
    },
}

#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    value_type: ValueType,
}

/// The declared attributes: names, types and dense ids.
///
/// Cloning is cheap after the first clone: entries are shared.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    entries: Vec<Arc<Entry>>,
    by_name: HashMap<Arc<str>, AttrId>,
}

impl Manifest {
    /// An empty manifest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Istio 1.1's vocabulary plus the few attributes meshmeter's proxy adds (`source.port`).
    pub fn istio() -> Self {
        static ISTIO: OnceLock<Manifest> = OnceLock::new();
        ISTIO
            .get_or_init(|| {
                let mut m = Manifest::new();
                for &(name, t) in ISTIO_ATTRIBUTES.iter().chain(MESHMETER_ATTRIBUTES) {
                    m.declare(name, t)
                        .expect("the built-in vocabulary is consistent");
                }
                m
            })
            .clone()
    }

    /// Declares `name` with type `t`, returning its id. Declaring a name again with the same
    /// type returns the existing id.
    pub fn declare(&mut self, name: &str, t: ValueType) -> Result<AttrId, ManifestError> {
        if let Some(&id) = self.by_name.get(name) {
            let existing = self.entries[id.index()].value_type;
            return if existing == t {
                Ok(id)
            } else {
                Err(ManifestError::Conflict {
                    name: name.to_owned(),
                    existing,
                    new: t,
                })
            };
        }
        let id = AttrId(u32::try_from(self.entries.len()).expect("fewer than 2^32 attributes"));
        let name: Arc<str> = Arc::from(name);
        self.entries.push(Arc::new(Entry {
            name: Arc::clone(&name),
            value_type: t,
        }));
        self.by_name.insert(name, id);
        Ok(id)
    }

    /// The id of `name`.
    pub fn id(&self, name: &str) -> Option<AttrId> {
        self.by_name.get(name).copied()
    }

    /// The id and type of `name`.
    pub fn lookup(&self, name: &str) -> Option<(AttrId, ValueType)> {
        self.id(name)
            .map(|id| (id, self.entries[id.index()].value_type))
    }

    /// The type of `id`.
    ///
    /// # Panics
    /// When `id` was not issued by this manifest (or one it was cloned from).
    pub fn value_type(&self, id: AttrId) -> ValueType {
        self.entries[id.index()].value_type
    }

    /// The name of `id`.
    ///
    /// # Panics
    /// When `id` was not issued by this manifest (or one it was cloned from).
    pub fn name(&self, id: AttrId) -> &str {
        &self.entries[id.index()].name
    }

    /// The number of declared attributes; ids run from 0 to `len() - 1`.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every attribute in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (AttrId, &str, ValueType)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (AttrId(i as u32), &*e.name, e.value_type))
    }

    /// The declared name closest to `name`, when one is close enough to be a likely typo.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        let limit = (name.chars().count() / 3).clamp(1, 4);
        self.entries
            .iter()
            .map(|e| (edit_distance(name, &e.name), &*e.name))
            .filter(|(d, _)| *d <= limit)
            .min()
            .map(|(_, n)| n)
    }
}

/// Levenshtein distance over chars; inputs are short names, so the quadratic cost is fine.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_vocabulary() {
        let m = Manifest::istio();
        assert_eq!(
            m.lookup("connection.sent.bytes").map(|(_, t)| t),
            Some(ValueType::Int64)
        );
        assert_eq!(
            m.lookup("source.labels").map(|(_, t)| t),
            Some(ValueType::StringMap)
        );
        assert_eq!(
            m.lookup("connection.duration").map(|(_, t)| t),
            Some(ValueType::Duration)
        );
        assert_eq!(
            m.lookup("source.port").map(|(_, t)| t),
            Some(ValueType::Int64)
        );
        assert_eq!(m.len(), 92, "91 Istio names and source.port");
        let id = m.id("destination.service.host").unwrap();
        assert_eq!(m.name(id), "destination.service.host");
    }

    #[test]
    fn redeclaring() {
        let mut m = Manifest::new();
        let a = m.declare("a", ValueType::String).unwrap();
        assert_eq!(m.declare("a", ValueType::String), Ok(a));
        assert_eq!(
            m.declare("a", ValueType::Int64),
            Err(ManifestError::Conflict {
                name: "a".into(),
                existing: ValueType::String,
                new: ValueType::Int64
            })
        );
    }

    #[test]
    fn suggestions() {
        let m = Manifest::istio();
        assert_eq!(
            m.suggest("conection.sent.bytes"),
            Some("connection.sent.bytes")
        );
        assert_eq!(m.suggest("source.lables"), Some("source.labels"));
        assert_eq!(m.suggest("zzz"), None);
    }
}
