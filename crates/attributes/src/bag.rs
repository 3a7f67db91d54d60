use crate::{AttrId, Manifest, Value};

/// One report's attributes, indexed by the [`AttrId`]s of the manifest it was built for.
///
/// Lookups are a bounds-checked index. Clearing costs only the attributes that were set, so a
/// bag can be reused for every bag of a request (and delta-encoded bags are applied in place).
#[derive(Clone, Debug)]
pub struct Bag<'a> {
    slots: Vec<Option<Value<'a>>>,
    present: Vec<AttrId>,
}

impl<'a> Bag<'a> {
    /// An empty bag for `manifest`'s attributes.
    pub fn new(manifest: &Manifest) -> Self {
        Self::with_slots(manifest.len())
    }

    /// An empty bag with room for ids `0..slots`.
    pub fn with_slots(slots: usize) -> Self {
        Bag {
            slots: vec![None; slots],
            present: Vec::new(),
        }
    }

    /// The value of `id`, when present.
    #[inline]
    pub fn get(&self, id: AttrId) -> Option<&Value<'a>> {
        self.slots.get(id.index()).and_then(Option::as_ref)
    }

    /// The value of `id`, to change in place (a decoder refills a label map this way instead
    /// of allocating a new one for every report).
    #[inline]
    pub fn get_mut(&mut self, id: AttrId) -> Option<&mut Value<'a>> {
        self.slots.get_mut(id.index()).and_then(Option::as_mut)
    }

    /// Whether `id` has a value.
    pub fn contains(&self, id: AttrId) -> bool {
        self.get(id).is_some()
    }

    /// Sets `id`, returning the value it replaces. Grows the bag when `id` is beyond it.
    pub fn set(&mut self, id: AttrId, value: Value<'a>) -> Option<Value<'a>> {
        if id.index() >= self.slots.len() {
            self.slots.resize(id.index() + 1, None);
        }
        let old = self.slots[id.index()].replace(value);
        if old.is_none() {
            self.present.push(id);
        }
        old
    }

    /// Sets `id` unless it already has a value; returns whether it was set.
    pub fn set_if_absent(&mut self, id: AttrId, value: Value<'a>) -> bool {
        if self.contains(id) {
            return false;
        }
        self.set(id, value);
        true
    }

    /// Removes `id`'s value.
    pub fn remove(&mut self, id: AttrId) -> Option<Value<'a>> {
        let old = self.slots.get_mut(id.index()).and_then(Option::take);
        if old.is_some() {
            self.present.retain(|&p| p != id);
        }
        old
    }

    /// A checkpoint for [`Bag::rollback`]: the attributes present now.
    pub fn mark(&self) -> BagMark {
        BagMark(self.present.len())
    }

    /// Removes the attributes first set after `mark` (such as identity attributes an enricher
    /// added for one dispatch), leaving the bag as it was for the next delta-encoded report.
    /// Values *replaced* since the mark are not restored: enrich with `set_if_absent`.
    pub fn rollback(&mut self, mark: BagMark) {
        if mark.0 >= self.present.len() {
            return;
        }
        for id in self.present.drain(mark.0..) {
            self.slots[id.index()] = None;
        }
    }

    /// Removes every value, keeping the allocation.
    pub fn clear(&mut self) {
        for id in self.present.drain(..) {
            self.slots[id.index()] = None;
        }
    }

    /// The number of attributes present.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// Whether no attribute is present.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// Present attributes, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (AttrId, &Value<'a>)> + '_ {
        self.present
            .iter()
            .filter_map(|&id| self.get(id).map(|v| (id, v)))
    }

    /// A copy that borrows nothing.
    pub fn into_owned(self) -> Bag<'static> {
        Bag {
            slots: self
                .slots
                .into_iter()
                .map(|v| v.map(Value::into_owned))
                .collect(),
            present: self.present,
        }
    }
}

/// A checkpoint of a [`Bag`]'s present attributes; see [`Bag::mark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BagMark(usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValueType;

    #[test]
    fn set_get_clear() {
        let mut m = Manifest::new();
        let a = m.declare("a", ValueType::Int64).unwrap();
        let b = m.declare("b", ValueType::String).unwrap();
        let mut bag = Bag::new(&m);
        assert!(bag.is_empty());
        assert_eq!(bag.set(a, Value::Int64(1)), None);
        assert_eq!(bag.set(a, Value::Int64(2)), Some(Value::Int64(1)));
        assert!(!bag.set_if_absent(a, Value::Int64(3)));
        assert!(bag.set_if_absent(b, Value::from("x")));
        assert_eq!(bag.len(), 2);
        assert_eq!(bag.get(a), Some(&Value::Int64(2)));
        assert_eq!(bag.remove(b), Some(Value::from("x")));
        assert_eq!(bag.iter().count(), 1);
        let mark = bag.mark();
        assert!(bag.set_if_absent(b, Value::from("enriched")));
        bag.rollback(mark);
        assert_eq!(bag.get(b), None);
        assert_eq!(bag.get(a), Some(&Value::Int64(2)));
        bag.clear();
        assert_eq!(bag.get(a), None);
        assert!(bag.is_empty());
    }
}
