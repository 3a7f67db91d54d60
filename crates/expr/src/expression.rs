//! The public face: [`Expression`], compiled once and evaluated per bag.

use std::fmt;
use std::sync::Arc;

use meshmeter_attributes::{AttrId, Bag, Manifest, Value, ValueType};

use crate::check::Checker;
use crate::error::{CompileError, EvalError};
use crate::parser::parse;
use crate::program::Node;

struct Inner {
    source: Box<str>,
    result_type: ValueType,
    root: Node,
    attributes: Vec<AttrId>,
}

/// A compiled, type-checked expression. Clone is cheap (Arc inside); Send + Sync.
///
/// ```
/// use meshmeter_attributes::{Bag, Manifest, Value, ValueType};
/// use meshmeter_expr::Expression;
///
/// let manifest = Manifest::istio();
/// let expr = Expression::compile("connection.sent.bytes | 0", &manifest).unwrap();
/// assert_eq!(expr.result_type(), ValueType::Int64);
///
/// let mut bag = Bag::new(&manifest);
/// assert_eq!(expr.eval(&bag).unwrap(), Value::Int64(0));
/// bag.set(manifest.id("connection.sent.bytes").unwrap(), Value::Int64(512));
/// assert_eq!(expr.eval(&bag).unwrap(), Value::Int64(512));
/// ```
#[derive(Clone)]
pub struct Expression {
    inner: Arc<Inner>,
}

impl Expression {
    /// Parses `source` and type-checks it against `manifest`, resolving attribute names to
    /// the manifest's ids. Bags given to [`Expression::eval`] must be built with the same
    /// manifest (or one it was cloned from).
    pub fn compile(source: &str, manifest: &Manifest) -> Result<Expression, CompileError> {
        let ast = parse(source)?;
        let mut checker = Checker {
            manifest,
            attrs: Vec::new(),
        };
        let (root, result_type) = checker.check(&ast)?;
        let mut attributes = checker.attrs;
        attributes.sort_unstable();
        attributes.dedup();
        Ok(Expression {
            inner: Arc::new(Inner {
                source: source.into(),
                result_type,
                root,
                attributes,
            }),
        })
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The static type of every value it evaluates to.
    pub fn result_type(&self) -> ValueType {
        self.inner.result_type
    }

    /// Evaluates against one bag. Values may borrow from the bag or from the expression's own
    /// constants.
    pub fn eval<'s>(&'s self, bag: &'s Bag<'_>) -> Result<Value<'s>, EvalError> {
        self.inner.root.eval(bag)
    }

    /// Evaluates a BOOL expression (a rule's `match`) without building a [`Value`]. For an
    /// expression of another type the answer is `false`.
    pub fn eval_bool(&self, bag: &Bag<'_>) -> Result<bool, EvalError> {
        if self.inner.result_type != ValueType::Bool {
            return Ok(false);
        }
        self.inner.root.eval_bool(bag)
    }

    /// The attributes the expression reads (for docs/validation), in id order.
    pub fn attributes(&self) -> &[AttrId] {
        &self.inner.attributes
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.source())
            .field("result_type", &self.result_type())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.source())
    }
}
