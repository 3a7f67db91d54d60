//! Session caches tied to a [`SharedBundle`]: a resumed TLS 1.3 handshake verifies no
//! certificate, so a session must not outlive the roots that verified it. Whenever the bundle
//! changes, both caches start empty (the next handshake with each peer is a full one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::NamedGroup;

use crate::pem::SharedBundle;

/// Sessions each cache keeps (rustls' default size).
const SESSIONS: usize = 256;

/// A cache of `T`, replaced by an empty one when the bundle's generation moves on.
#[derive(Debug)]
struct PerGeneration<T> {
    bundle: SharedBundle,
    generation: AtomicU64,
    cache: ArcSwap<T>,
    fresh: fn() -> Arc<T>,
}

impl<T> PerGeneration<T> {
    fn new(bundle: SharedBundle, fresh: fn() -> Arc<T>) -> Self {
        PerGeneration {
            generation: AtomicU64::new(bundle.generation()),
            bundle,
            cache: ArcSwap::new(fresh()),
            fresh,
        }
    }

    fn current(&self) -> Arc<T> {
        let now = self.bundle.generation();
        let seen = self.generation.load(Ordering::Acquire);
        // One caller wins the swap to a fresh cache; the others use whichever they load.
        if seen != now
            && self
                .generation
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.cache.store((self.fresh)());
        }
        self.cache.load_full()
    }
}

/// The client side's cache of session tickets and key-exchange hints.
#[derive(Debug)]
pub(crate) struct ClientSessions(PerGeneration<ClientSessionMemoryCache>);

impl ClientSessions {
    pub(crate) fn new(bundle: SharedBundle) -> Self {
        ClientSessions(PerGeneration::new(bundle, || {
            Arc::new(ClientSessionMemoryCache::new(SESSIONS))
        }))
    }
}

impl ClientSessionStore for ClientSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.0.current().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.current().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.current().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.0.current().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.0.current().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.0.current().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.0.current().take_tls13_ticket(server_name)
    }
}

/// The server side's cache of sessions it issued tickets for.
#[derive(Debug)]
pub(crate) struct ServerSessions(PerGeneration<ServerSessionMemoryCache>);

impl ServerSessions {
    pub(crate) fn new(bundle: SharedBundle) -> Self {
        ServerSessions(PerGeneration::new(bundle, || {
            ServerSessionMemoryCache::new(SESSIONS)
        }))
    }
}

impl StoresServerSessions for ServerSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.current().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.current().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.current().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}
