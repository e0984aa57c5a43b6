//! Webhook signing per the Standard Webhooks spec (standardwebhooks.com): secrets are
//! `whsec_` + base64 of random bytes; a signature is `v1,` + base64 of HMAC-SHA256 over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`; several live secrets give several signatures,
//! space-separated.
//!
//! [`verify`] is the receiving side, written to be read by integrators as an example: check
//! the timestamp is recent, recompute the signature over the raw body, compare in constant time.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";

/// The raw key of a signing secret. Its `Debug` hides the key, so it can sit in logged structs.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a secret is `whsec_` followed by base64")]
    Format,
    #[error("a secret must hold 24 to 64 bytes")]
    Length,
}

impl Secret {
    /// A new secret (32 random bytes), in its `whsec_…` form.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
    }

    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix(SECRET_PREFIX).ok_or(SecretError::Format)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::Format)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(Self(key))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>` of this message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// The `webhook-signature` header: one signature per live secret, space-separated.
pub fn signature_header(secrets: &[Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("the webhook-timestamp is too far from now (replay?)")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a received webhook: `body` must be the raw bytes received, before any parsing.
/// `tolerance_secs` bounds the clock distance (the spec suggests 5 minutes), which stops
/// replays of old captured messages.
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now_unix - ts).abs() > tolerance_secs {
        return Err(VerifyError::Stale);
    }
    for candidate in signatures.split(' ') {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue; // another scheme (v1a, …): not ours to check
        };
        let Ok(tag) = STANDARD.decode(b64) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if secret.mac(msg_id, ts, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks reference libraries' test suites.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_spec_example() {
        let s = Secret::parse(SECRET).unwrap();
        assert_eq!(s.sign(ID, TS, BODY), EXPECTED);
        assert_eq!(
            verify(&s, ID, "1614265330", EXPECTED, BODY, TS + 10, 300),
            Ok(())
        );
    }

    #[test]
    fn verify_refuses_tampering_staleness_and_other_secrets() {
        let s = Secret::parse(SECRET).unwrap();
        let other = Secret::parse(&Secret::generate()).unwrap();
        let ts = "1614265330";
        assert_eq!(
            verify(&s, ID, ts, EXPECTED, b"{}", TS, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, "msg_other", ts, EXPECTED, BODY, TS, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&other, ID, ts, EXPECTED, BODY, TS, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, ID, ts, EXPECTED, BODY, TS + 301, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&s, ID, "soon", EXPECTED, BODY, TS, 300),
            Err(VerifyError::BadTimestamp)
        );
        // Either of two signatures is enough (a rotation in progress).
        let both = signature_header(&[other.clone(), s.clone()], ID, TS, BODY);
        assert_eq!(both.split(' ').count(), 2);
        assert_eq!(verify(&s, ID, ts, &both, BODY, TS, 300), Ok(()));
        assert_eq!(verify(&other, ID, ts, &both, BODY, TS, 300), Ok(()));
    }

    #[test]
    fn secrets_parse_and_hide() {
        let g = Secret::generate();
        assert!(g.starts_with(SECRET_PREFIX));
        let s = Secret::parse(&g).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Format
        );
        assert_eq!(Secret::parse("whsec_!!!").unwrap_err(), SecretError::Format);
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::Length
        );
    }
}
