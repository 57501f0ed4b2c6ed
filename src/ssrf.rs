//! The SSRF policy: which addresses and host names a webhook may be sent to.
//!
//! natshook runs inside clusters, so a webhook URL (or a DNS answer for it) must not
//! become a way to reach the cluster's own services or the cloud metadata endpoint.
//! URLs are checked when the config is loaded, and every address a name resolves to
//! is checked again at connect time, which defeats DNS rebinding.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// True for addresses a webhook must not reach without `allow_private`: loopback,
/// RFC 1918, CGNAT, link-local (cloud metadata), ULA, unspecified, multicast,
/// broadcast/reserved, documentation, benchmarking, IETF protocol assignments, ORCHID,
/// and IPv4 addresses embedded in IPv6 forms of these.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let seg = v6.segments();
            let o = v6.octets();
            // NAT64 (64:ff9b::/96), SIIT (::ffff:0:a.b.c.d) and deprecated
            // IPv4-compatible (::a.b.c.d): the IPv4 address in the last 32 bits.
            if (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4])
                || (seg[0..4] == [0; 4] && seg[4] == 0xffff && seg[5] == 0)
                || (seg[0..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified())
            {
                return is_private_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            // 6to4 (2002::/16): the IPv4 address in bits 16–47.
            if seg[0] == 0x2002 {
                return is_private_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
            }
            v6.is_loopback()
                || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64 64:ff9b:1::/48
                || (seg[0] == 0x2001 && seg[1] == 0) // Teredo 2001::/32 (hides an IPv4 address)
                || (seg[0] == 0x100 && seg[1..4] == [0; 3]) // discard-only 100::/64
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x3fff && seg[1] & 0xf000 == 0) // documentation 3fff::/20
                || (seg[0] == 0x2001 && seg[1] == 2 && seg[2] == 0) // benchmarking 2001:2::/48
                || (seg[0] == 0x2001 && (seg[1] & 0xfff0) == 0x0020) // ORCHIDv2 2001:20::/28
                || (seg[0] == 0x2001 && (seg[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
                || seg[0] == 0x5f00 // SRv6 SIDs 5f00::/16: segment routing, not hosts
                || v6 == Ipv6Addr::UNSPECIFIED
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0 // "this network", incl. 0.0.0.0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast 192.88.99/24
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0/24
        || o[0] >= 240 // reserved
}

/// Host names that only make sense inside a cluster or LAN.
pub fn is_internal_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || [
            ".localhost",
            ".internal",
            ".local",
            ".svc",
            ".cluster.local",
        ]
        .iter()
        .any(|s| h.ends_with(s))
}

/// Parses an IPv4 address as the C library's resolver does (`inet_aton`): one to four
/// parts separated by dots, each decimal, octal (leading `0`) or hexadecimal (`0x`),
/// the last part filling the bytes that remain. `getaddrinfo` turns such a name into
/// an address without asking DNS, so `127.1`, `2130706433`, `0x7f000001` and
/// `0177.0.0.1` all reach 127.0.0.1 and the guard must read them the same way.
pub fn parse_ipv4_like_resolver(text: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u32; 4];
    let mut count = 0;
    for part in text.split('.') {
        if count == parts.len() {
            return None;
        }
        parts[count] = parse_ipv4_part(part)?;
        count += 1;
    }
    let (head, last) = (&parts[..count - 1], parts[count - 1]);
    if head.iter().any(|&b| b > 0xff) {
        return None;
    }
    // The last part fills 32, 24, 16 or 8 bits.
    let bits = 32 - 8 * head.len() as u32;
    if bits < 32 && last >> bits != 0 {
        return None;
    }
    let mut value = last;
    for (i, &b) in head.iter().enumerate() {
        value |= b << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(value))
}

/// One part of [`parse_ipv4_like_resolver`]: like `strtoul(part, _, 0)`, which must
/// use up the whole part and stay within 32 bits.
fn parse_ipv4_part(part: &str) -> Option<u32> {
    let (digits, radix) = match part.as_bytes() {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        [b'0', rest @ ..] => (rest, 8),
        _ => (part.as_bytes(), 10),
    };
    if digits.is_empty() && radix != 8 {
        return None; // "" and "0x"; a lone "0" is zero
    }
    let mut value: u64 = 0;
    for &c in digits {
        let digit = char::from(c).to_digit(radix)?;
        value = value * u64::from(radix) + u64::from(digit);
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some(value as u32)
}

/// Why the guard refuses a target. The same words serve `natshook check` and the
/// connect-time refusal, so a config that passes check is not refused later for a
/// reason check could have seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is an internal host name (set allow_private = true to permit it)")]
    InternalName(String),
    /// An address written in the URL, perhaps in another spelling (`0x7f000001`).
    #[error("{}", private_address(.host, .ip))]
    PrivateAddress { host: String, ip: IpAddr },
    #[error("{host} resolves to private address {ip} (set allow_private = true or allow_cidrs to permit it)")]
    ResolvesToPrivate { host: String, ip: IpAddr },
    /// A scope (`[fe80::1%25eth0]`) names an interface of this machine: never a
    /// webhook receiver, and not something the resolver reads from a URL.
    #[error("{0} is an IPv6 address with a zone id, which a webhook URL cannot use")]
    ZoneId(String),
    #[error("[{0}] is not an IPv6 address")]
    NotAnAddress(String),
}

fn private_address(host: &str, ip: &IpAddr) -> String {
    let written = if *host == ip.to_string() {
        format!("{ip} is")
    } else {
        format!("{host} is {ip},")
    };
    format!("{written} a private, loopback or link-local address (set allow_private = true or allow_cidrs to permit it)")
}

/// Where one endpoint may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TargetPolicy {
    /// Permit every private, loopback and link-local target.
    pub allow_private: bool,
    /// Permit these ranges even without `allow_private`.
    pub allow_cidrs: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allow_private || !is_private(ip) || self.allow_cidrs.iter().any(|c| c.contains(&ip))
    }

    pub fn permits_host(&self, host: &str) -> bool {
        self.allow_private || !is_internal_host(host)
    }

    /// Decides on the host of a URL before any lookup, for config validation and the
    /// resolver alike: an address in any spelling the system resolver accepts is
    /// judged as the address it is (and returned, so no lookup is needed), a name by
    /// its suffix (`None`: its addresses are judged by [`Self::filter`]).
    pub fn check_host(&self, host: &str) -> Result<Option<IpAddr>, Refusal> {
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let bare = bracketed.unwrap_or(host);
        if let Some((addr, _zone)) = bare.split_once('%') {
            if addr.parse::<Ipv6Addr>().is_ok() {
                return Err(Refusal::ZoneId(bare.to_string()));
            }
        }
        // Brackets hold an IPv6 address or nothing a client can reach (`[v1.x]`, an
        // IPvFuture literal).
        if bracketed.is_some_and(|b| b.parse::<Ipv6Addr>().is_err()) {
            return Err(Refusal::NotAnAddress(bare.to_string()));
        }
        // The resolver reads `127.0.0.1.` (a fully qualified name's dot) as the
        // address, and so does the guard, as it does for names (`is_internal_host`).
        let unrooted = bare.trim_end_matches('.');
        let literal = unrooted
            .parse::<IpAddr>()
            .ok()
            .or_else(|| parse_ipv4_like_resolver(unrooted).map(IpAddr::V4));
        match literal {
            Some(ip) if self.permits_ip(ip) => Ok(Some(ip)),
            Some(ip) => Err(Refusal::PrivateAddress {
                host: bare.to_string(),
                ip,
            }),
            None if self.permits_host(bare) => Ok(None),
            None => Err(Refusal::InternalName(bare.to_string())),
        }
    }

    /// [`Self::check_host`] where natshook resolves no name (a proxy does): the URL's
    /// host is all the policy can judge, refused in the connect-time words.
    pub fn check_unresolved_host(&self, host: &str) -> io::Result<()> {
        self.check_host(host).map(|_| ()).map_err(refused)
    }

    /// Applies the policy to the addresses `host` resolved to.
    pub fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
        if !self.permits_host(host) {
            return Err(refused(Refusal::InternalName(host.to_string())));
        }
        let (ok, bad): (Vec<SocketAddr>, Vec<SocketAddr>) =
            addrs.into_iter().partition(|a| self.permits_ip(a.ip()));
        match (ok.is_empty(), bad.first()) {
            (true, Some(first)) => Err(refused(Refusal::ResolvesToPrivate {
                host: host.to_string(),
                ip: first.ip(),
            })),
            _ => Ok(ok),
        }
    }
}

fn refused(why: Refusal) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("refused: {why}"))
}

type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

fn system_lookup(host: String) -> LookupFuture {
    Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
}

/// DNS resolution for hyper's connector that applies a [`TargetPolicy`] to every
/// resolved address.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
    lookup: Lookup,
}

impl GuardedResolver {
    pub fn new(policy: TargetPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            lookup: Arc::new(system_lookup),
        }
    }

    /// With another name lookup (tests: a name that resolves to loopback).
    pub fn with_lookup(
        policy: TargetPolicy,
        lookup: impl Fn(String) -> LookupFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            policy: Arc::new(policy),
            lookup: Arc::new(lookup),
        }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs = match policy.check_host(&host).map_err(refused)? {
                Some(ip) => vec![SocketAddr::new(ip, 0)],
                None => policy.filter(&host, lookup(host.clone()).await?)?,
            };
            Ok(addrs.into_iter())
        })
    }
}

/// Other spellings of private addresses, each with the start of its refusal: `check`
/// (config validation) and the connect-time guard must refuse them in the same words.
#[cfg(test)]
pub(crate) const PRIVATE_SPELLINGS: &[(&str, &str)] = &[
    ("2130706433", "2130706433 is 127.0.0.1, a private, loopback or link-local address (set allow_private = true or allow_cidrs to permit it)"),
    ("0x7f000001", "0x7f000001 is 127.0.0.1, a private"),
    ("017700000001", "017700000001 is 127.0.0.1, a private"),
    ("127.1", "127.1 is 127.0.0.1, a private"),
    ("0177.0.0.1", "0177.0.0.1 is 127.0.0.1, a private"),
    ("0xa9fea9fe", "0xa9fea9fe is 169.254.169.254, a private"),
    ("[fe80::1%25lo]", "fe80::1%25lo is an IPv6 address with a zone id, which a webhook URL cannot use"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tower_service::Service;

    #[test]
    fn private_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::808:808",
            "::ffff:0:a00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2002:c058:6301::",
            "192.88.99.1",
            "2001:0:4136:e378::1",
            "100::1",
            "ff02::1",
            "192.0.0.1",
            "192.0.0.170",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "3fff::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip} should be private");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "100.128.0.1",
            "2002:808:808::1",
            "2001:4860::8888",
            "192.0.1.1",
            "2001:3::1",
            "2001:30::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn ipv4_is_read_as_the_resolver_reads_it() {
        for (text, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0xa9fea9fe", "169.254.169.254"),
            ("169.254.43518", "169.254.169.254"),
            ("010.0.0.1", "8.0.0.1"),
            ("127.000.0.1", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("4294967295", "255.255.255.255"),
            ("0x00000000000000000000000008080808", "8.8.8.8"),
        ] {
            assert_eq!(
                parse_ipv4_like_resolver(text),
                Some(ip.parse().unwrap()),
                "{text}"
            );
        }
        // What inet_aton refuses is a name, looked up (and its answers checked).
        for text in [
            "",
            ".",
            "1.2.3.4.5",
            "1.2.3.",
            ".1.2.3",
            "1..2",
            "0x",
            "0x.1",
            "08",
            "09.1.1.1",
            "256.0.0.1",
            "1.256.0.1",
            "1.2.65536",
            "1.16777216",
            "4294967296",
            "0x100000000",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1e3",
            "0xg",
            "hooks.example.com",
            "1.2.3.4.example.com",
        ] {
            assert_eq!(parse_ipv4_like_resolver(text), None, "{text:?}");
        }
    }

    #[test]
    fn hosts_are_judged_as_the_addresses_they_spell() {
        let policy = TargetPolicy::default();
        let more = [
            (
                "10.0.0.1",
                "10.0.0.1 is a private, loopback or link-local address",
            ),
            ("[::1]", "::1 is a private"),
            (
                "[2001:db8::1%eth0]",
                "2001:db8::1%eth0 is an IPv6 address with a zone id",
            ),
            (
                "metadata.google.internal",
                "metadata.google.internal is an internal host name",
            ),
            ("127.0.0.1.", "127.0.0.1. is 127.0.0.1, a private"),
            ("127.0.0.1..", "127.0.0.1.. is 127.0.0.1, a private"),
            ("[5f00::1]", "5f00::1 is a private"),
            ("[v1.x]", "[v1.x] is not an IPv6 address"),
        ];
        for &(host, words) in PRIVATE_SPELLINGS.iter().chain(&more) {
            let refusal = policy.check_host(host).unwrap_err().to_string();
            assert!(refusal.starts_with(words), "{host}: {refusal}");
        }
        assert_eq!(
            policy.check_host("134744072"),
            Ok(Some("8.8.8.8".parse().unwrap()))
        );
        assert_eq!(policy.check_host("hooks.example.com"), Ok(None));
        let open = TargetPolicy {
            allow_private: true,
            allow_cidrs: vec![],
        };
        assert_eq!(
            open.check_host("127.1"),
            Ok(Some("127.0.0.1".parse().unwrap()))
        );
        // A zone id is refused even where private addresses are allowed.
        assert!(matches!(
            open.check_host("[fe80::1%25lo]"),
            Err(Refusal::ZoneId(_))
        ));
        let cidr = TargetPolicy {
            allow_private: false,
            allow_cidrs: vec![IpNet::from_str("127.0.0.0/8").unwrap()],
        };
        assert!(cidr.check_host("0x7f000001").is_ok());
    }

    #[test]
    fn internal_host_names() {
        assert!(is_internal_host("localhost"));
        assert!(is_internal_host("api.default.svc.cluster.local"));
        assert!(is_internal_host("api.default.svc"));
        assert!(is_internal_host("metadata.google.internal"));
        assert!(is_internal_host("printer.local."));
        assert!(!is_internal_host("hooks.example.com"));
    }

    #[test]
    fn allow_cidrs_open_only_their_ranges() {
        let p = TargetPolicy {
            allow_private: false,
            allow_cidrs: vec![IpNet::from_str("10.1.0.0/16").unwrap()],
        };
        assert!(p.permits_ip("10.1.2.3".parse().unwrap()));
        assert!(p.permits_ip("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.permits_ip("10.2.0.1".parse().unwrap()));
        assert!(!p.permits_ip("127.0.0.1".parse().unwrap()));
        assert!(p.permits_ip("8.8.8.8".parse().unwrap()));
    }

    fn resolve(policy: TargetPolicy, host: &str, answer: &[&str]) -> io::Result<Vec<SocketAddr>> {
        let answer: Vec<SocketAddr> = answer
            .iter()
            .map(|a| SocketAddr::new(a.parse().unwrap(), 0))
            .collect();
        let mut r = GuardedResolver::with_lookup(policy, move |_| {
            let a = answer.clone();
            Box::pin(async move { Ok(a) })
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(r.call(Name::from_str(host).unwrap()))
            .map(|i| i.collect())
    }

    #[test]
    fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
        let err = resolve(TargetPolicy::default(), "evil.example.com", &["127.0.0.1"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            err.to_string()
                .contains("resolves to private address 127.0.0.1"),
            "{err}"
        );
        let err = resolve(
            TargetPolicy::default(),
            "evil.example.com",
            &["::ffff:127.0.0.1"],
        )
        .unwrap_err();
        assert!(err.to_string().contains("private address"), "{err}");
        let err = resolve(
            TargetPolicy::default(),
            "meta.example.com",
            &["169.254.169.254"],
        )
        .unwrap_err();
        assert!(err.to_string().contains("169.254.169.254"), "{err}");
        // Mixed answers: only the public addresses are used.
        let ok = resolve(
            TargetPolicy::default(),
            "mixed.example.com",
            &["10.0.0.1", "93.184.216.34"],
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![SocketAddr::new("93.184.216.34".parse().unwrap(), 0)]
        );
        let allowed = TargetPolicy {
            allow_private: true,
            allow_cidrs: vec![],
        };
        assert!(resolve(allowed, "evil.example.com", &["127.0.0.1"]).is_ok());
        let err = resolve(
            TargetPolicy::default(),
            "api.svc.cluster.local",
            &["93.184.216.34"],
        )
        .unwrap_err();
        assert!(err.to_string().contains("internal host name"), "{err}");
    }

    /// The resolver reads another spelling of an address as that address, whatever a
    /// lookup would answer, with the words `natshook check` uses.
    #[test]
    fn an_address_in_another_spelling_is_refused_at_connect_time() {
        for host in ["0x7f000001", "2130706433", "127.1", "0xa9fea9fe"] {
            let err = resolve(TargetPolicy::default(), host, &["93.184.216.34"]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            let expected = TargetPolicy::default()
                .check_host(host)
                .unwrap_err()
                .to_string();
            assert_eq!(err.to_string(), format!("refused: {expected}"));
        }
        let public = resolve(TargetPolicy::default(), "134744072", &["127.0.0.1"]).unwrap();
        assert_eq!(public, vec![SocketAddr::new("8.8.8.8".parse().unwrap(), 0)]);
    }
}
