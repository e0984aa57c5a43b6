//! A DNS resolver for outbound requests that refuses names resolving to private, loopback,
//! link-local or metadata addresses. Checking at connection time (rather than once before the
//! request) closes the DNS-rebinding gap: the address connected to is the address checked.

use std::net::SocketAddr;

use crate::urlguard::is_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                    return Err(format!(
                        "{host} resolves to a private or reserved address ({}); \
                         set CONVEYOR_ALLOW_PRIVATE_TARGETS=true to allow it",
                        bad.ip()
                    )
                    .into());
                }
            }
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn get_localhost(allow_private: bool) -> String {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(allow_private)))
            .build()
            .unwrap();
        // Nothing listens on port 9: the request fails either way; the question is why.
        let err = client.get("http://localhost:9/").send().await.unwrap_err();
        format!("{err:?}")
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        assert!(get_localhost(false).await.contains("private or reserved"));
        assert!(!get_localhost(true).await.contains("private or reserved"));
    }
}
