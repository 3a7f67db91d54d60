//! Resolving references between objects the way Mixer did.
//!
//! A reference is `name.kind.namespace`, `name.kind` or `name`; the short forms are in the
//! referring object's namespace. The kind part may be the kind as written (`metric`,
//! `prometheus`), the generic word (`instance`, `handler`) or the template/adapter name, so
//! both Istio spellings refer to either definition.

use std::collections::HashMap;

use crate::diagnostic::{Code, Sink, WithHint};
use crate::fields::suggest;
use crate::objects::{Category, Object, ADAPTERS, TEMPLATES};
use crate::yaml::Node;

/// Objects by (family, namespace, name).
pub(crate) struct Table<'o, 'n> {
    objects: &'o [Object<'n>],
    by_key: HashMap<(u8, &'o str, &'o str), usize>,
}

impl<'o, 'n> Table<'o, 'n> {
    /// Indexes the `alive` objects.
    pub(crate) fn new(objects: &'o [Object<'n>], alive: &[bool]) -> Self {
        let mut by_key = HashMap::new();
        for (i, o) in objects.iter().enumerate() {
            if alive[i] {
                by_key.insert(
                    (o.category.family(), o.namespace.as_str(), o.name.as_str()),
                    i,
                );
            }
        }
        Self { objects, by_key }
    }

    /// Resolves the reference in `node` (a scalar) to an object of `family`, as seen from
    /// `namespace`. Problems are reported; `None` then.
    pub(crate) fn resolve(
        &self,
        node: &Node,
        family: Category,
        namespace: &str,
        sink: &mut Sink<'_>,
    ) -> Option<usize> {
        let reference = node.as_str()?;
        let parts: Vec<&str> = reference.split('.').collect();
        let (name, kind, ns) = match parts.as_slice() {
            [name] => (*name, None, namespace),
            [name, kind] => (*name, Some(*kind), namespace),
            [name @ .., kind, ns] => {
                // Names may contain dots; the last two parts are always kind and namespace.
                let len = name.iter().map(|p| p.len() + 1).sum::<usize>() - 1;
                (&reference[..len], Some(*kind), *ns)
            }
            [] => (reference, None, namespace),
        };
        let noun = family.noun();
        if name.is_empty() {
            sink.report(
                Code::BadReference,
                node.span,
                format!("empty {noun} reference"),
            );
            return None;
        }
        let found = self.by_key.get(&(family.family(), ns, name)).copied();
        let Some(i) = found else {
            let code = if matches!(family, Category::Handler(_)) {
                Code::UnknownHandler
            } else {
                Code::UnknownInstance
            };
            let d = sink.report(
                code,
                node.span,
                format!(
                    "{noun} '{reference}' is not defined (looked for '{name}' in namespace '{ns}')"
                ),
            );
            let mut same_ns: Vec<&str> = self
                .by_key
                .keys()
                .filter(|(f, n, _)| *f == family.family() && *n == ns)
                .map(|(_, _, name)| *name)
                .collect();
            same_ns.sort_unstable();
            if let Some(s) = suggest(name, same_ns) {
                let o = &self.objects[self.by_key[&(family.family(), ns, s)]];
                d.hint(format!(
                    "did you mean '{}.{}.{}'?",
                    o.name, o.kind, o.namespace
                ));
            } else if let Some(o) = self
                .by_key
                .iter()
                .filter(|((f, _, n), _)| *f == family.family() && *n == name)
                .map(|(_, &i)| &self.objects[i])
                .min_by(|a, b| a.namespace.cmp(&b.namespace))
            {
                d.hint(format!(
                    "a {noun} '{name}' exists in namespace '{}': write '{}.{}.{}'",
                    o.namespace, o.name, o.kind, o.namespace
                ));
            }
            return None;
        };
        let o = &self.objects[i];
        if o.broken {
            return Some(i);
        }
        if let Some(kind) = kind {
            let (generic, specific) = match o.category {
                Category::Instance(t) => ("instance", TEMPLATES[t]),
                Category::Handler(a) => ("handler", ADAPTERS[a]),
                Category::Rule => ("rule", "rule"),
                Category::Manifest => ("attributemanifest", "attributemanifest"),
            };
            if kind != o.kind && kind != generic && kind != specific {
                sink.report(
                    Code::BadReference,
                    node.span,
                    format!("'{reference}' names kind '{kind}', but {noun} '{name}' in namespace '{ns}' is a {specific}"),
                )
                .hint(format!("write '{}.{}.{}'", o.name, o.kind, o.namespace));
                return None;
            }
        }
        Some(i)
    }
}
