use std::sync::Arc;

use arc_swap::ArcSwap;
use meshmeter_adapters::workloads::{FileRegistry, WorkloadTable};

/// Where workload identity comes from.
#[derive(Clone, Debug)]
pub enum Workloads {
    /// A fixed table (tests, the demo, or no identity at all with an empty table).
    Static(Arc<WorkloadTable>),
    /// A workloads file, reloaded by its own watcher.
    File(Arc<FileRegistry>),
    /// A table another component replaces as identity changes (the Kubernetes watches).
    Shared(Arc<ArcSwap<WorkloadTable>>),
}

impl Workloads {
    /// No workloads: bags keep only the identity their reporters sent.
    pub fn none() -> Self {
        Workloads::Static(Arc::new(
            WorkloadTable::new(Vec::new()).expect("an empty table is valid"),
        ))
    }

    /// The table in force now. Hold it for the duration of one request: bags borrow from it.
    pub fn current(&self) -> Arc<WorkloadTable> {
        match self {
            Workloads::Static(t) => Arc::clone(t),
            Workloads::File(f) => Arc::clone(&f.load()),
            Workloads::Shared(s) => s.load_full(),
        }
    }
}
