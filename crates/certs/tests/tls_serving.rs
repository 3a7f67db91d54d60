//! Serving certificates for DNS names over real loopback sockets: a plain rustls client that
//! trusts only the CA's root reaches [`https_server_config`] by name, and only by those names.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshmeter_certs::rustls::pki_types::ServerName;
use meshmeter_certs::rustls::{ClientConfig, RootCertStore};
use meshmeter_certs::{https_server_config, Authority, CertStore, ServingCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const HOUR: Duration = Duration::from_secs(3600);

fn names() -> Vec<String> {
    vec!["hook".to_string(), "hook.system.svc".to_string()]
}

/// One connection to a server presenting `store`'s certificate, asking for `name`: the ALPN
/// protocol agreed and the bytes read back, or the client's error.
async fn connect(
    store: Arc<CertStore<ServingCert>>,
    root: &Authority,
    name: &str,
) -> Result<(Option<Vec<u8>>, Vec<u8>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(https_server_config(store).unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            tls.write_all(b"hello").await.unwrap();
            tls.shutdown().await.unwrap();
        }
    });
    let mut roots = RootCertStore::empty();
    roots.add(root.root().clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(meshmeter_certs::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut read = Vec::new();
    tls.read_to_end(&mut read).await.unwrap();
    Ok((alpn, read))
}

#[tokio::test]
async fn a_client_trusting_the_root_reaches_the_server_by_each_of_its_names_only() {
    let now = SystemTime::now();
    let ca = Authority::generate_root_between("hooks", "hooks CA", now - HOUR, now + HOUR).unwrap();
    let cert = ca.issue_serving(&names(), now - HOUR, now + HOUR).unwrap();
    assert_eq!(cert.dns_names(), names().as_slice());
    // The chain served is the certificate and the root.
    assert_eq!(cert.certified_key().cert.len(), 2);
    assert_eq!(&cert.certified_key().cert[1], ca.root());
    let store = Arc::new(CertStore::default());
    store.install(cert);
    for name in names() {
        let (alpn, read) = connect(Arc::clone(&store), &ca, &name).await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(read, b"hello");
    }
    let other = connect(Arc::clone(&store), &ca, "elsewhere.svc")
        .await
        .unwrap_err();
    assert!(
        other.contains("certificate not valid for name \"elsewhere.svc\""),
        "{other}"
    );
}

#[test]
fn serving_certificates_stay_inside_the_ca_validity() {
    let now = SystemTime::now();
    let ca = Authority::generate_root_between("hooks", "hooks CA", now - HOUR, now + HOUR).unwrap();
    let cert = ca
        .issue_serving(&names(), now - 3 * HOUR, now + 3 * HOUR)
        .unwrap();
    assert_eq!(cert.validity(), ca.validity());
    let zero = ca.issue_serving(&names(), now, now).unwrap_err();
    assert_eq!(
        zero.to_string(),
        "a certificate lifetime must be longer than zero"
    );
}
