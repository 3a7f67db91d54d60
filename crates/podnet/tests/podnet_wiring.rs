//! `PodNet` wiring: pods reach each other and the switch over the bridge; a service address
//! (VIP) is on the pods' subnet but answers nobody; processes run in their pod and can be
//! killed. Needs root and `ip netns`; skips with a message otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use meshmeter_podnet::{unavailable, PodNet, SWITCH};

#[test]
#[ignore = "needs root and ip netns"]
fn pods_reach_each_other_and_vips_reach_nobody() {
    if let Some(why) = unavailable() {
        eprintln!("SKIP: {why}");
        return;
    }
    let pid = std::process::id();
    let net_no = u8::try_from(pid % 50 + 200).expect("below 256");
    let mut net = PodNet::new(&format!("mw{pid}"), net_no, &["a", "b", "c"]).unwrap();
    assert_eq!(net.ip("a").to_string(), format!("10.213.{net_no}.2"));
    assert_eq!(net.ip("c").to_string(), format!("10.213.{net_no}.4"));
    assert_eq!(net.ip(SWITCH).to_string(), format!("10.213.{net_no}.1"));
    assert_eq!(net.vip(1).to_string(), format!("10.213.{net_no}.201"));

    let listener = net
        .run_in("c", || TcpListener::bind("0.0.0.0:7000"))
        .unwrap()
        .unwrap();
    let served = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        s.write_all(&got).unwrap();
        peer
    });
    let target = SocketAddr::new(net.ip("c"), 7000);
    let mut client = net
        .run_in("a", move || TcpStream::connect(target))
        .unwrap()
        .unwrap();
    client.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello");
    assert_eq!(served.join().unwrap().ip(), net.ip("a"));

    // Nobody holds the VIP: without a proxy to take it, a connection to it goes nowhere.
    let vip = SocketAddr::new(net.vip(0), 7000);
    let to_vip = net
        .run_in("a", move || {
            TcpStream::connect_timeout(&vip, Duration::from_millis(500))
        })
        .unwrap();
    assert!(to_vip.is_err(), "{to_vip:?}");

    // A process in a pod, killed by name.
    net.spawn("sleeper", "b", None, Path::new("sleep"), &["600"], &[])
        .unwrap();
    assert!(net.kill("sleeper"));
    assert!(!net.kill("sleeper"));
}
