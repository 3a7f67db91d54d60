use super::*;

#[test]
fn default_v4_renders_exact_rules() {
    let want = "*nat
:MESHMETER_INBOUND - [0:0]
:MESHMETER_IN_REDIRECT - [0:0]
:MESHMETER_OUTPUT - [0:0]
:MESHMETER_REDIRECT - [0:0]
-A MESHMETER_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A MESHMETER_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A MESHMETER_INBOUND -p tcp -j MESHMETER_IN_REDIRECT
-A MESHMETER_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MESHMETER_OUTPUT -o lo -j RETURN
-A MESHMETER_OUTPUT -d 127.0.0.1/32 -j RETURN
-A MESHMETER_OUTPUT -p tcp -j MESHMETER_REDIRECT
-A PREROUTING -p tcp -j MESHMETER_INBOUND
-A OUTPUT -p tcp -j MESHMETER_OUTPUT
COMMIT
";
    assert_eq!(CaptureSpec::default().render(Family::V4), want);
}

#[test]
fn ports_and_cidrs_are_split_by_family() {
    let spec = CaptureSpec {
        inbound_ports: InboundPorts::Only(vec![27017, 9080]),
        exclude_inbound_ports: vec![22],
        exclude_outbound_ports: vec![53],
        exclude_outbound_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        include_outbound_cidrs: vec!["10.253.0.0/16".parse().unwrap()],
        proxy_uid: 2000,
        ..CaptureSpec::default()
    };
    let v6 = spec.render(Family::V6);
    let v4 = spec.render(Family::V4);
    let body = |s: &str| {
        s.lines()
            .filter(|l| {
                l.starts_with("-A MESHMETER_INBOUND") || l.starts_with("-A MESHMETER_OUTPUT")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        body(&v4),
        "-A MESHMETER_INBOUND -p tcp --dport 22 -j RETURN
-A MESHMETER_INBOUND -p tcp --dport 27017 -j MESHMETER_IN_REDIRECT
-A MESHMETER_INBOUND -p tcp --dport 9080 -j MESHMETER_IN_REDIRECT
-A MESHMETER_OUTPUT -m owner --uid-owner 2000 -j RETURN
-A MESHMETER_OUTPUT -o lo -j RETURN
-A MESHMETER_OUTPUT -d 127.0.0.1/32 -j RETURN
-A MESHMETER_OUTPUT -p tcp --dport 53 -j RETURN
-A MESHMETER_OUTPUT -d 10.0.0.0/8 -j RETURN
-A MESHMETER_OUTPUT -p tcp -d 10.253.0.0/16 -j MESHMETER_REDIRECT"
    );
    // No IPv6 block is included, so IPv6 outbound is not captured at all.
    assert_eq!(
        body(&v6),
        "-A MESHMETER_INBOUND -p tcp --dport 22 -j RETURN
-A MESHMETER_INBOUND -p tcp --dport 27017 -j MESHMETER_IN_REDIRECT
-A MESHMETER_INBOUND -p tcp --dport 9080 -j MESHMETER_IN_REDIRECT
-A MESHMETER_OUTPUT -m owner --uid-owner 2000 -j RETURN
-A MESHMETER_OUTPUT -o lo -j RETURN
-A MESHMETER_OUTPUT -d ::1/128 -j RETURN
-A MESHMETER_OUTPUT -p tcp --dport 53 -j RETURN
-A MESHMETER_OUTPUT -d fd00::/8 -j RETURN"
    );
}

#[test]
fn bad_cidrs_are_named() {
    assert_eq!(
        "10.0.0.0/33".parse::<Cidr>(),
        Err(CaptureError::BadCidr("10.0.0.0/33".into()))
    );
    assert_eq!(
        "nope/8".parse::<Cidr>(),
        Err(CaptureError::BadCidr("nope/8".into()))
    );
    assert_eq!(
        "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
        "10.1.2.3/32"
    );
    let e = CaptureSpec {
        outbound_proxy_port: 0,
        ..CaptureSpec::default()
    }
    .validate();
    assert_eq!(e, Err(CaptureError::ZeroPort("outbound proxy port")));
}

#[test]
fn clean_removes_jumps_before_chains() {
    let cmds = clean_commands();
    assert_eq!(cmds.len(), 10);
    assert_eq!(
        cmds[0].join(" "),
        "-t nat -D PREROUTING -p tcp -j MESHMETER_INBOUND"
    );
    assert_eq!(cmds[9].join(" "), "-t nat -X MESHMETER_REDIRECT");
}
