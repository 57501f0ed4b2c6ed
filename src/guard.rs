//! The SSRF guard: which addresses and host names a webhook may be sent to.
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
/// broadcast/reserved, documentation, and IPv4 addresses embedded in IPv6 forms of these.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) and deprecated IPv4-compatible (::a.b.c.d).
            if (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4])
                || (seg[0..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified())
            {
                let o = v6.octets();
                return is_private_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
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

/// Where one endpoint may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    /// Applies the policy to the addresses `host` resolved to.
    pub fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
        let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
        if !self.permits_host(host) {
            return Err(refuse(format!(
                "refused: {host} is an internal host name (set allow_private = true to permit it)"
            )));
        }
        let (ok, bad): (Vec<SocketAddr>, Vec<SocketAddr>) =
            addrs.into_iter().partition(|a| self.permits_ip(a.ip()));
        if ok.is_empty() {
            let shown = bad.first().map(|a| a.ip().to_string()).unwrap_or_default();
            return Err(refuse(format!(
                "refused: {host} resolves to private address {shown} (set allow_private = true or allow_cidrs to permit it)"
            )));
        }
        Ok(ok)
    }
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
            if !policy.permits_host(&host) {
                return policy.filter(&host, Vec::new()).map(Vec::into_iter);
            }
            let addrs = lookup(host.clone()).await?;
            policy.filter(&host, addrs).map(Vec::into_iter)
        })
    }
}

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
            "ff02::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip} should be private");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip} should be public");
        }
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
}
