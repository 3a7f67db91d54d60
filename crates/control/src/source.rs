//! Where views come from: a [`ViewSource`] compiles a sidecar's [`View`] from the control
//! plane's inputs and says when those inputs change.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use meshmeter_routing::view::Node;
use tokio::sync::watch;

use crate::view::View;

/// A stream that yields once per change of a source's inputs (bursts may be merged); its end
/// means the inputs will not change any more.
pub type Changes = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// What a sidecar's view depends on besides the inputs: sidecars of one shape get one view,
/// compiled once per input change however many of them are connected.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// Whatever else the source's views depend on, in a form of the source's choosing (the
    /// services the pod's addresses back, or the addresses themselves); sidecars that differ
    /// here get views of their own.
    pub extra: Vec<String>,
}

impl Shape {
    /// The shape of `node` for a source whose views depend on its namespace and labels only.
    pub fn of(node: &Node) -> Self {
        Shape {
            namespace: node.namespace.clone(),
            labels: node.labels.clone(),
            extra: Vec::new(),
        }
    }

    /// The shape of `node` for a source whose views also depend on its addresses (each
    /// sidecar then has a shape of its own).
    pub fn with_ips(node: &Node) -> Self {
        let mut ips = node.ips.clone();
        ips.sort_unstable();
        ips.dedup();
        Shape {
            extra: ips,
            ..Shape::of(node)
        }
    }
}

/// The control plane's inputs, compiled per sidecar.
///
/// [`ViewSource::view`] must be a function of the inputs and of [`ViewSource::shape`] only:
/// the server calls it once per shape and input change and hands the result to every sidecar
/// of that shape.
pub trait ViewSource: Send + Sync + 'static {
    /// The part of `node` its view depends on, given the current inputs (asked again after
    /// every input change). The default: namespace and labels.
    fn shape(&self, node: &Node) -> Shape {
        Shape::of(node)
    }

    /// The view for sidecars shaped like `node`, from the current inputs.
    fn view(&self, node: &Node) -> View;

    /// Yields whenever the inputs change.
    fn changes(&self) -> Changes;
}

/// The compile function of a [`WatchSource`].
pub type CompileFn<I> = dyn Fn(&I, &Node) -> View + Send + Sync;

/// The shape function of a [`WatchSource`].
pub type ShapeFn<I> = dyn Fn(&I, &Node) -> Shape + Send + Sync;

/// A [`ViewSource`] over inputs published on a `tokio::sync::watch` channel, compiled by a
/// function (for example `meshmeter_routing`'s compiler over the networking configuration and
/// the service catalog).
pub struct WatchSource<I> {
    inputs: watch::Receiver<Arc<I>>,
    compile: Arc<CompileFn<I>>,
    shape: Option<Arc<ShapeFn<I>>>,
}

impl<I> std::fmt::Debug for WatchSource<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSource")
            .field("custom_shape", &self.shape.is_some())
            .finish_non_exhaustive()
    }
}

impl<I: Send + Sync + 'static> WatchSource<I> {
    /// Views compiled by `compile` from the value `inputs` holds when asked.
    pub fn new(
        inputs: watch::Receiver<Arc<I>>,
        compile: impl Fn(&I, &Node) -> View + Send + Sync + 'static,
    ) -> Self {
        WatchSource {
            inputs,
            compile: Arc::new(compile),
            shape: None,
        }
    }

    /// Declares what `compile` reads of a node, given the inputs: sidecars with equal shapes
    /// must get equal views (the default: namespace and labels).
    pub fn with_shape(
        mut self,
        shape: impl Fn(&I, &Node) -> Shape + Send + Sync + 'static,
    ) -> Self {
        self.shape = Some(Arc::new(shape));
        self
    }
}

impl<I: Send + Sync + 'static> ViewSource for WatchSource<I> {
    fn shape(&self, node: &Node) -> Shape {
        match &self.shape {
            Some(f) => f(&self.inputs.borrow(), node),
            None => Shape::of(node),
        }
    }

    fn view(&self, node: &Node) -> View {
        let inputs = Arc::clone(&self.inputs.borrow());
        (self.compile)(&inputs, node)
    }

    fn changes(&self) -> Changes {
        let mut rx = self.inputs.clone();
        rx.mark_unchanged();
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok().map(|()| ((), rx))
        }))
    }
}
