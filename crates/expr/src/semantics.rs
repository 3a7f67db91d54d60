//! The meaning of the textual types: validation for `dnsName()`, `email()`, `uri()` and
//! `ip()`, and equality by meaning rather than by text.
//!
//! - IP addresses compare as addresses; an IPv4-mapped IPv6 address equals its IPv4 address
//!   (as Go's `net.IP.Equal`, which Mixer used).
//! - DNS names compare case-insensitively, ignoring one trailing dot.
//! - Email addresses compare by local part (exactly, after removing quotes) and domain (as a
//!   DNS name).
//! - URIs compare by scheme (case-insensitively), then for http and https by host (as a DNS
//!   name) and port, and by the remaining components exactly.

use std::net::IpAddr;

/// Parses an IP address as Go's `net.ParseIP` does; IPv4-mapped IPv6 becomes IPv4, which is
/// how Go prints it.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    let ip: IpAddr = text.parse().ok()?;
    Some(canonical_ip(ip))
}

pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub(crate) fn ip_equal(a: IpAddr, b: IpAddr) -> bool {
    canonical_ip(a) == canonical_ip(b)
}

/// Checks a DNS name: labels of letters, digits and inner hyphens, 1 to 63 bytes each, at most
/// 253 bytes in all; one trailing dot is allowed. Non-ASCII letters are allowed (IDNA text).
pub(crate) fn validate_dns_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.len() > 253 {
        return Err("the name is longer than 253 bytes".into());
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("invalid label \"\"".into());
        }
        if label.len() > 63 {
            return Err(format!("label \"{label}\" is longer than 63 bytes"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("invalid label \"{label}\""));
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err(format!("invalid character in label \"{label}\""));
        }
    }
    Ok(())
}

fn dns_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_lowercase()
}

pub(crate) fn dns_equal(a: &str, b: &str) -> bool {
    let (a, b) = (
        a.strip_suffix('.').unwrap_or(a),
        b.strip_suffix('.').unwrap_or(b),
    );
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    dns_key(a) == dns_key(b)
}

const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

fn is_atext(c: char) -> bool {
    c.is_alphanumeric() || ATEXT_SPECIALS.contains(c) || !c.is_ascii() && !c.is_control()
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|part| !part.is_empty() && part.chars().all(is_atext))
}

/// An email address split into its local part (unquoted) and domain.
pub(crate) struct Email {
    pub(crate) local: String,
    pub(crate) domain: String,
}

/// Parses an address the way Go's `net/mail.ParseAddress` accepts one without a display name:
/// `local@domain` or `<local@domain>`, the local part a dot-atom or a quoted string.
pub(crate) fn parse_email(text: &str) -> Result<Email, String> {
    let mut s = text.trim();
    if s.is_empty() {
        return Err("no address".into());
    }
    if let Some(inner) = s.strip_prefix('<') {
        s = inner
            .strip_suffix('>')
            .ok_or_else(|| "unclosed angle-addr".to_owned())?;
    } else if s.contains('<') {
        return Err("display names are not allowed".into());
    }
    let (local, rest) = if let Some(quoted) = s.strip_prefix('"') {
        let mut local = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, e)) => local.push(e),
                    None => break,
                },
                c if c.is_control() => return Err("bad character in quoted-string".into()),
                c => local.push(c),
            }
        }
        let end = end.ok_or_else(|| "unclosed quoted-string".to_owned())?;
        (local, &quoted[end..])
    } else {
        let at = s.rfind('@').ok_or_else(|| "no angle-addr".to_owned())?;
        let local = &s[..at];
        if !is_dot_atom(local) {
            return Err(format!("invalid local part \"{local}\""));
        }
        (local.to_owned(), &s[at..])
    };
    let domain = rest
        .strip_prefix('@')
        .ok_or_else(|| "missing @ in addr-spec".to_owned())?;
    if !is_dot_atom(domain) {
        return Err(format!("invalid domain \"{domain}\""));
    }
    validate_dns_name(domain)?;
    Ok(Email {
        local,
        domain: domain.to_owned(),
    })
}

pub(crate) fn email_equal(a: &str, b: &str) -> Result<bool, (String, String)> {
    let ea = parse_email(a).map_err(|e| (a.to_owned(), e))?;
    let eb = parse_email(b).map_err(|e| (b.to_owned(), e))?;
    Ok(ea.local == eb.local && dns_equal(&ea.domain, &eb.domain))
}

/// A URI's components, as Go's `net/url.Parse` splits them.
#[derive(Debug, PartialEq)]
pub(crate) struct Uri<'a> {
    scheme: &'a str,
    opaque: &'a str,
    userinfo: Option<&'a str>,
    host: Option<&'a str>,
    port: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn check_escapes(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            let end = (i + 3).min(b.len());
            return Err(format!(
                "invalid URL escape \"{}\"",
                String::from_utf8_lossy(&b[i..end])
            ));
        }
    }
    Ok(())
}

/// Parses a URI (absolute or relative) with the checks Go's `url.Parse` makes.
pub(crate) fn parse_uri(text: &str) -> Result<Uri<'_>, String> {
    if text.is_empty() {
        return Err("empty string".into());
    }
    if text.chars().any(|c| (c as u32) < 0x20 || c == '\u{7f}') {
        return Err("invalid control character in URL".into());
    }
    let (rest, fragment) = match text.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (text, None),
    };
    if let Some(f) = fragment {
        check_escapes(f)?;
    }
    let mut scheme = "";
    let mut rest = rest;
    if let Some(colon) = rest.find(':') {
        let candidate = &rest[..colon];
        if colon == 0 {
            return Err("missing protocol scheme".into());
        }
        let valid = candidate.starts_with(|c: char| c.is_ascii_alphabetic())
            && candidate
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid {
            scheme = candidate;
            rest = &rest[colon + 1..];
        }
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut uri = Uri {
        scheme,
        opaque: "",
        userinfo: None,
        host: None,
        port: "",
        path: "",
        query,
        fragment,
    };
    if !scheme.is_empty() && !rest.starts_with('/') {
        uri.opaque = rest;
        return Ok(uri);
    }
    if scheme.is_empty() {
        let first = rest.split('/').next().unwrap_or("");
        if first.contains(':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    let mut path = rest;
    let authority = rest
        .strip_prefix("//")
        .filter(|_| !scheme.is_empty() || !rest.starts_with("///"));
    if let Some(after) = authority {
        let end = after.find('/').unwrap_or(after.len());
        let authority = &after[..end];
        path = &after[end..];
        let hostport = match authority.rsplit_once('@') {
            Some((user, hp)) => {
                uri.userinfo = Some(user);
                hp
            }
            None => authority,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let close = v6
                .find(']')
                .ok_or_else(|| "missing ']' in host".to_owned())?;
            let after = &v6[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => "",
                None => return Err(format!("invalid port \"{after}\" after host")),
            };
            (&hostport[..close + 2], port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (hostport, ""),
            }
        };
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port \":{port}\" after host"));
        }
        check_escapes(host)?;
        uri.host = Some(host);
        uri.port = port;
    }
    check_escapes(path)?;
    uri.path = path;
    Ok(uri)
}

pub(crate) fn uri_equal(a: &str, b: &str) -> Result<bool, (String, String)> {
    let ua = parse_uri(a).map_err(|e| (a.to_owned(), e))?;
    let ub = parse_uri(b).map_err(|e| (b.to_owned(), e))?;
    if !ua.scheme.eq_ignore_ascii_case(ub.scheme) {
        return Ok(false);
    }
    let web = ua.scheme.eq_ignore_ascii_case("http") || ua.scheme.eq_ignore_ascii_case("https");
    let hosts_equal = if web {
        let host = |u: &Uri<'_>| {
            u.host
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or("")
                .to_owned()
        };
        dns_equal(&host(&ua), &host(&ub)) && ua.port == ub.port
    } else {
        ua.host == ub.host && ua.port == ub.port
    };
    Ok(hosts_equal
        && ua.opaque == ub.opaque
        && ua.userinfo == ub.userinfo
        && ua.path == ub.path
        && ua.query == ub.query
        && ua.fragment == ub.fragment)
}

/// Mixer's glob: a trailing `*` matches a prefix, else a leading `*` a suffix, else the whole
/// text.
pub(crate) fn glob_match(text: &str, pattern: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        text.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        text.ends_with(suffix)
    } else {
        text == pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips() {
        assert_eq!(parse_ip("::ffff:1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        assert!(parse_ip("10.1.12").is_none());
        assert!(ip_equal(
            "::ffff:10.0.0.1".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
    }

    #[test]
    fn dns_names() {
        assert!(validate_dns_name("foo.Bar.baz.").is_ok());
        assert_eq!(validate_dns_name(""), Err("invalid label \"\"".into()));
        assert_eq!(
            validate_dns_name("-foo.-bar"),
            Err("invalid label \"-foo\"".into())
        );
        assert!(validate_dns_name("a..b").is_err());
        assert!(validate_dns_name("a_b.c").is_err());
        assert!(dns_equal("foo.bar.com", "fOO.bar.com."));
        assert!(!dns_equal("foo.bar.com", "bar.foo.com"));
    }

    #[test]
    fn emails() {
        assert!(parse_email("istio@istio.io").is_ok());
        assert!(parse_email("<istio@istio.io>").is_ok());
        assert!(parse_email("").is_err());
        assert!(parse_email("barfoo").is_err());
        assert!(parse_email("Istio <istio@istio.io>").is_err());
        assert_eq!(
            email_equal("\"istio\"@istio.io", "istio@ISTIO.io"),
            Ok(true)
        );
        assert_eq!(email_equal("Istio@istio.io", "istio@istio.io"), Ok(false));
    }

    #[test]
    fn uris() {
        assert!(parse_uri("urn:foo").is_ok());
        assert!(parse_uri(":/").is_err());
        assert!(parse_uri("").is_err());
        assert!(parse_uri("http://[::1").is_err());
        assert!(parse_uri("http://a:b/").is_err());
        assert!(parse_uri("www.istio.io").is_ok());
        assert_eq!(
            uri_equal("http://foo.bar.com", "HTTP://fOO.bar.com."),
            Ok(true)
        );
        assert_eq!(
            uri_equal("http://istio.io:80", "http://istio.io:81"),
            Ok(false)
        );
        assert_eq!(uri_equal("urn:a", "urn:A"), Ok(false));
        assert_eq!(uri_equal("foo.bar.com", "https://foo.bar.com"), Ok(false));
    }

    #[test]
    fn globs() {
        assert!(glob_match("svc1.ns1.cluster", "*.ns1.cluster"));
        assert!(glob_match("curlish", "curl*"));
        assert!(!glob_match("ishcurl", "curl*"));
        assert!(glob_match("anything", "*"));
        assert!(glob_match("exact", "exact"));
    }
}
