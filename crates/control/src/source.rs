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
    /// The pod's addresses, sorted, when the source's views depend on them; empty otherwise.
    pub ips: Vec<String>,
}

impl Shape {
    /// The shape of `node` for a source whose views depend on its namespace and labels only.
    pub fn of(node: &Node) -> Self {
        Shape {
            namespace: node.namespace.clone(),
            labels: node.labels.clone(),
            ips: Vec::new(),
        }
    }

    /// The shape of `node` for a source whose views also depend on its addresses.
    pub fn with_ips(node: &Node) -> Self {
        let mut ips = node.ips.clone();
        ips.sort_unstable();
        ips.dedup();
        Shape {
            ips,
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
    /// The part of `node` its view depends on. The default: namespace and labels.
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

/// A [`ViewSource`] over inputs published on a `tokio::sync::watch` channel, compiled by a
/// function (for example `meshmeter_routing`'s compiler over the networking configuration and
/// the service catalog).
pub struct WatchSource<I> {
    inputs: watch::Receiver<Arc<I>>,
    compile: Arc<CompileFn<I>>,
    ips_matter: bool,
}

impl<I> std::fmt::Debug for WatchSource<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSource")
            .field("ips_matter", &self.ips_matter)
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
            ips_matter: false,
        }
    }

    /// Declares that `compile` reads the node's addresses too (the shape then includes them).
    pub fn ips_matter(mut self) -> Self {
        self.ips_matter = true;
        self
    }
}

impl<I: Send + Sync + 'static> ViewSource for WatchSource<I> {
    fn shape(&self, node: &Node) -> Shape {
        if self.ips_matter {
            Shape::with_ips(node)
        } else {
            Shape::of(node)
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
