//! Rule objects (`kind: rule`).
//!
//! The field reference (the user documentation) is in the crate docs; keep them in step.

use meshmeter_attributes::Manifest;
use meshmeter_expr::Expression;

use crate::diagnostic::{Code, Sink, WithHint};
use crate::exprs::{self, Want};
use crate::fields;
use crate::objects::Object;
use crate::yaml::Node;

/// An action before references are resolved.
#[derive(Debug)]
pub(crate) struct RawAction<'n> {
    pub(crate) name: Option<String>,
    pub(crate) handler: &'n Node,
    pub(crate) instances: Vec<&'n Node>,
}

/// A rule before references are resolved.
#[derive(Debug)]
pub(crate) struct RawRule<'n> {
    pub(crate) match_: Option<Expression>,
    pub(crate) actions: Vec<RawAction<'n>>,
}

const RULE: &[&str] = &[
    "match",
    "actions",
    "request_header_operations",
    "response_header_operations",
    "sampling",
];

/// Reads a rule; `None` when anything is wrong (reported).
pub(crate) fn read<'n>(
    obj: &Object<'n>,
    manifest: &Manifest,
    sink: &mut Sink<'_>,
) -> Option<RawRule<'n>> {
    let before = sink.out.error_count();
    let f = fields::read_opt(
        obj.body,
        &format!("the spec of rule '{}'", obj.name),
        RULE,
        sink,
    )?;
    let match_ = f
        .get(0)
        .filter(|n| n.as_str().is_none_or(|s| !s.trim().is_empty()))
        .and_then(|n| exprs::compile(n, "the match", manifest, Want::Bool, sink));
    let mut actions = Vec::new();
    if let Some(list) = f.get(1).and_then(|n| fields::list(n, "actions", sink)) {
        for a in list {
            let Some(af) = fields::read(a, "an action", &["handler", "instances", "name"], sink)
            else {
                continue;
            };
            let Some(handler) = af.get(0) else {
                if af.misspelled(0) {
                    continue;
                }
                sink.report(Code::MissingField, a.span, "action has no 'handler'")
                    .hint("name the handler, e.g. `handler: mongohandler.prometheus`");
                continue;
            };
            if fields::text(handler, "handler", sink).is_none() {
                continue;
            }
            let mut instances = Vec::new();
            if let Some(items) = af.get(1).and_then(|n| fields::list(n, "instances", sink)) {
                for i in items {
                    if fields::text(i, "an instance reference", sink).is_some() {
                        instances.push(i);
                    }
                }
            }
            let name = af
                .get(2)
                .and_then(|n| fields::text(n, "name", sink))
                .map(str::to_owned);
            actions.push(RawAction {
                name,
                handler,
                instances,
            });
        }
    }
    (sink.out.error_count() == before).then_some(RawRule { match_, actions })
}
