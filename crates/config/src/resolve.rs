//! Resolving references between objects the way Mixer did.
//!
//! A reference is `name.kind.namespace`, `name.kind`, `name.namespace` or `name`; the short
//! forms are in the referring object's namespace. The kind part may be the kind as written
//! (`metric`, `prometheus`), the generic word (`instance`, `handler`) or the template/adapter
//! name, so both Istio spellings refer to either definition.
//!
//! Mixer 1.1.7 was stricter in two places: a bare name of a legacy kind (`handler: hp` for a
//! `kind: prometheus` object) and a prometheus `instance_name` that is not exactly
//! `name.<own kind>.namespace` did not resolve there. We keep resolving them (configs rely on
//! it), with warning W0005 saying Istio would not.

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
        let (name, mut kind, mut ns) = match parts.as_slice() {
            [name] => (*name, None, namespace),
            [name, kind] => (*name, Some(*kind), namespace),
            [name @ .., kind, ns] => {
                // Names may contain dots; the last two parts are always kind and namespace.
                let len = name.iter().map(|p| p.len() + 1).sum::<usize>() - 1;
                (&reference[..len], Some(*kind), *ns)
            }
            [] => (reference, None, namespace),
        };
        // `hh.default`: Mixer read a two-part reference that is not `name.kind` as
        // `name.namespace`.
        if let [_, second] = parts.as_slice() {
            let as_kind = self.by_key.get(&(family.family(), ns, name));
            let kind_fits = as_kind.is_some_and(|&i| self.kind_fits(i, second));
            if !kind_fits && self.by_key.contains_key(&(family.family(), *second, name)) {
                (kind, ns) = (None, *second);
            }
        }
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
            self.not_defined(node, family, (reference, name, ns), sink);
            return None;
        };
        let o = &self.objects[i];
        if o.broken {
            return Some(i);
        }
        if kind.is_none() && parts.len() == 1 && !matches!(o.kind.as_str(), "handler" | "instance")
        {
            self.not_in_istio(
                i,
                node,
                &format!("a bare name of a '{}' {noun}", o.kind),
                sink,
            );
        }
        if let Some(kind) = kind {
            let specific = self.specific(i);
            if !self.kind_fits(i, kind) {
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

    /// Reports that `reference` (looked up as `name` in namespace `ns`) names no object of
    /// `family`, suggesting a close name in that namespace or the same name in another.
    fn not_defined(
        &self,
        node: &Node,
        family: Category,
        (reference, name, ns): (&str, &str, &str),
        sink: &mut Sink<'_>,
    ) {
        let noun = family.noun();
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
    }

    /// Resolves a prometheus metric's `instance_name`, which Mixer found only when written
    /// exactly `name.<the instance's own kind>.namespace`; other forms resolve with a warning.
    pub(crate) fn resolve_instance_name(
        &self,
        node: &Node,
        namespace: &str,
        sink: &mut Sink<'_>,
    ) -> Option<usize> {
        let before = sink.out.len();
        let i = self.resolve(node, Category::Instance(0), namespace, sink)?;
        let o = &self.objects[i];
        let exact = format!("{}.{}.{}", o.name, o.kind, o.namespace);
        // The resolver's own warning (if any) already says it.
        if node.as_str() != Some(exact.as_str()) && sink.out.len() == before {
            self.not_in_istio(
                i,
                node,
                "an instance_name not written as 'name.kind.namespace'",
                sink,
            );
        }
        Some(i)
    }

    /// Warning W0005: resolved here, but Mixer 1.1.7 would not have found the object.
    fn not_in_istio(&self, i: usize, node: &Node, what: &str, sink: &mut Sink<'_>) {
        let o = &self.objects[i];
        let reference = node.as_str().unwrap_or_default();
        sink.report(
            Code::NotResolvedByIstio,
            node.span,
            format!("'{reference}' resolves here, but Istio 1.1 would not resolve {what}"),
        )
        .hint(format!("write '{}.{}.{}'", o.name, o.kind, o.namespace));
    }

    /// The template or adapter name of object `i`.
    fn specific(&self, i: usize) -> &'static str {
        match self.objects[i].category {
            Category::Instance(t) => TEMPLATES[t],
            Category::Handler(a) => ADAPTERS[a],
            Category::Rule => "rule",
            Category::Manifest => "attributemanifest",
        }
    }

    /// Whether `kind` names object `i`'s kind: as written, the generic word or the
    /// template/adapter name.
    fn kind_fits(&self, i: usize, kind: &str) -> bool {
        let o = &self.objects[i];
        let generic = match o.category {
            Category::Instance(_) => "instance",
            Category::Handler(_) => "handler",
            Category::Rule => "rule",
            Category::Manifest => "attributemanifest",
        };
        kind == o.kind || kind == generic || kind == self.specific(i)
    }
}
