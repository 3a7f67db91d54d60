use std::net::IpAddr;
use std::sync::Arc;

use meshmeter_workloads::{
    Account, FileRegistry, Service, Workload, WorkloadRegistry, WorkloadTable,
};

/// A registry that another component replaces as identity changes (the Kubernetes watches).
pub trait RegistrySource: Send + Sync + std::fmt::Debug {
    /// The registry in force now; held for one request.
    fn current(&self) -> Arc<dyn WorkloadRegistry>;
}

/// Where workload identity comes from.
#[derive(Clone, Debug)]
pub enum Workloads {
    /// A fixed table (tests, the demo, or no identity at all with an empty table).
    Static(Arc<WorkloadTable>),
    /// A workloads file, reloaded by its own watcher.
    File(Arc<FileRegistry>),
    /// A registry kept up to date by another component.
    Dynamic(Arc<dyn RegistrySource>),
}

/// The registry in force for one request; bags borrow identity from it.
#[derive(Clone)]
pub enum Current {
    /// A table (static or from the workloads file).
    Table(Arc<WorkloadTable>),
    /// A registry from a [`RegistrySource`].
    Dynamic(Arc<dyn WorkloadRegistry>),
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Current::Table(t) => f.debug_tuple("Table").field(t).finish(),
            Current::Dynamic(_) => f.write_str("Dynamic"),
        }
    }
}

impl WorkloadRegistry for Current {
    fn by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        match self {
            Current::Table(t) => t.by_ip(ip),
            Current::Dynamic(r) => r.by_ip(ip),
        }
    }

    fn by_uid(&self, uid: &str) -> Option<&Workload> {
        match self {
            Current::Table(t) => t.by_uid(uid),
            Current::Dynamic(r) => r.by_uid(uid),
        }
    }

    fn service_for(&self, ip: IpAddr, port: Option<u16>) -> Option<&Service> {
        match self {
            Current::Table(t) => t.service_for(ip, port),
            Current::Dynamic(r) => r.service_for(ip, port),
        }
    }

    fn ip_shared(&self, ip: IpAddr) -> bool {
        match self {
            Current::Table(t) => t.ip_shared(ip),
            Current::Dynamic(r) => r.ip_shared(ip),
        }
    }

    fn by_service_account(&self, namespace: &str, service_account: &str) -> Option<Account<'_>> {
        match self {
            Current::Table(t) => t.by_service_account(namespace, service_account),
            Current::Dynamic(r) => r.by_service_account(namespace, service_account),
        }
    }
}

impl Workloads {
    /// No workloads: bags keep only the identity their reporters sent.
    pub fn none() -> Self {
        Workloads::Static(Arc::new(
            WorkloadTable::new(Vec::new()).expect("an empty table is valid"),
        ))
    }

    /// The registry in force now. Hold it for the duration of one request: bags borrow from
    /// it.
    pub fn current(&self) -> Current {
        match self {
            Workloads::Static(t) => Current::Table(Arc::clone(t)),
            Workloads::File(f) => Current::Table(Arc::clone(&f.load())),
            Workloads::Dynamic(s) => Current::Dynamic(s.current()),
        }
    }
}
