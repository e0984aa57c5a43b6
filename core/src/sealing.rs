//! Secrets sealed at rest: the signing secrets of endpoints and of tenants' callbacks are
//! stored encrypted with a deployment key (XChaCha20-Poly1305, an AEAD: a random 192-bit
//! nonce per value, so random nonces never repeat in practice, and a value altered in the
//! database fails to open rather than opening wrong). A database dump, a replica or a backup
//! holds no secret that signs.
//!
//! A stored value is `sealed:v1:<key id>:<base64 nonce ‖ ciphertext>`. The key id is the first
//! 8 hex digits of the key's SHA-256, so keys need no names: rotating means setting a new
//! `CONVEYOR_SECRET_KEY` and moving the old one to `CONVEYOR_SECRET_KEY_PREVIOUS`; values are
//! opened with whichever key sealed them and sealed again with the new one at start-up (see
//! `Store::reseal_secrets`). A value stored before sealing existed (plain `whsec_…`) opens as
//! it is and is sealed the same way.
//!
//! Without `CONVEYOR_SECRET_KEY` Conveyor still starts (laptops, tests), sealing with a
//! development key built into the binary, and warns that it does: that protects nothing.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "sealed:v1:";
/// What a sealed value is bound to: a value sealed for another purpose does not open here.
const AAD: &[u8] = b"conveyor signing secret";
const DEVELOPMENT_KEY: [u8; 32] = *b"conveyor-development-key-public!";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("{0}: a secret key is 32 bytes in base64 (make one with `openssl rand -base64 32`)")]
    BadKey(&'static str),
    #[error(
        "sealed with key {0}, which this process does not have (set CONVEYOR_SECRET_KEY_PREVIOUS)"
    )]
    UnknownKey(String),
    #[error("a sealed value that does not open: altered, or not one of ours")]
    Corrupt,
}

struct SealingKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    fn new(bytes: &[u8; 32]) -> Self {
        Self {
            id: hex::encode(&Sha256::digest(bytes)[..4]),
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    fn parse(what: &'static str, b64: &str) -> Result<Self, SealError> {
        let bytes: [u8; 32] = STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SealError::BadKey(what))?;
        Ok(Self::new(&bytes))
    }
}

/// The deployment's sealing keys: the current one seals, every one opens.
pub struct Keyring {
    current: SealingKey,
    previous: Vec<SealingKey>,
    development: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ids only: never a key.
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .field("development", &self.development)
            .finish()
    }
}

impl Keyring {
    /// From `CONVEYOR_SECRET_KEY` (base64 of 32 bytes; none: the development key) and
    /// `CONVEYOR_SECRET_KEY_PREVIOUS` (older keys, comma-separated, to open what they sealed).
    pub fn new(current: Option<&str>, previous: &[String]) -> Result<Self, SealError> {
        let (current, development) = match current.filter(|k| !k.trim().is_empty()) {
            Some(k) => (SealingKey::parse("CONVEYOR_SECRET_KEY", k)?, false),
            None => (SealingKey::new(&DEVELOPMENT_KEY), true),
        };
        let mut previous = previous
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| SealingKey::parse("CONVEYOR_SECRET_KEY_PREVIOUS", k))
            .collect::<Result<Vec<_>, _>>()?;
        // What the development key sealed (a tool run without the deployment's key, a
        // database from a laptop) always opens, and is sealed again properly at start-up:
        // the key is public, so opening with it reveals nothing that was protected.
        if !development {
            previous.push(SealingKey::new(&DEVELOPMENT_KEY));
        }
        Ok(Self {
            current,
            previous,
            development,
        })
    }

    /// The built-in development key alone (tests, tools).
    pub fn development() -> Self {
        Self::new(None, &[]).expect("the development key is valid")
    }

    /// Whether values are sealed with the key built into the binary (which protects nothing).
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Whether values sealed by the key of this id open here.
    pub fn opens(&self, id: &str) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|k| k.id == id)
    }

    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: AAD,
                },
            )
            .expect("sealing cannot fail for a short value");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode(out))
    }

    /// The secret a stored value holds (a value stored before sealing is returned as it is).
    pub fn open(&self, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, b64) = rest.split_once(':').ok_or(SealError::Corrupt)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let raw = STANDARD.decode(b64).map_err(|_| SealError::Corrupt)?;
        if raw.len() < 24 {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = raw.split_at(24);
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: AAD,
                },
            )
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| SealError::Corrupt)
    }

    /// Whether a stored value should be sealed again: stored in clear, or sealed with a key
    /// other than the current one.
    pub fn is_stale(&self, stored: &str) -> bool {
        match stored.strip_prefix(PREFIX) {
            None => true,
            Some(rest) => !rest.starts_with(&format!("{}:", self.current.id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn sealed_values_open_with_their_key_and_hide_the_secret() {
        let ring = Keyring::new(Some(&key(1)), &[]).unwrap();
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sealed = ring.seal(secret);
        assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
        assert!(!sealed.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert_ne!(sealed, ring.seal(secret), "a fresh nonce each time");
        assert_eq!(ring.open(&sealed).unwrap(), secret);
        assert!(!ring.is_stale(&sealed));
        // Stored before sealing: opens as it is, and is stale.
        assert_eq!(ring.open(secret).unwrap(), secret);
        assert!(ring.is_stale(secret));
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let old = Keyring::new(Some(&key(1)), &[]).unwrap();
        let sealed_old = old.seal("whsec_old");
        let rotated = Keyring::new(Some(&key(2)), &[key(1)]).unwrap();
        assert_eq!(rotated.open(&sealed_old).unwrap(), "whsec_old");
        assert!(rotated.is_stale(&sealed_old));
        let resealed = rotated.seal("whsec_old");
        assert!(!rotated.is_stale(&resealed));
        // What the development key sealed always opens.
        let dev = Keyring::development().seal("whsec_dev");
        assert_eq!(rotated.open(&dev).unwrap(), "whsec_dev");
        assert!(rotated.is_stale(&dev));
        // Without the old key, its values do not open, and say why.
        let forgot = Keyring::new(Some(&key(2)), &[]).unwrap();
        assert!(matches!(
            forgot.open(&sealed_old),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn an_altered_value_or_a_bad_key_is_refused() {
        let ring = Keyring::new(Some(&key(3)), &[]).unwrap();
        let sealed = ring.seal("whsec_x");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            ring.open(&String::from_utf8(tampered).unwrap()),
            Err(SealError::Corrupt)
        );
        assert!(Keyring::new(Some("too short"), &[]).is_err());
        assert!(Keyring::new(Some(&key(3)), &["nope".into()]).is_err());
        assert!(Keyring::new(None, &[]).unwrap().is_development());
        assert!(!format!("{ring:?}").contains(&key(3)));
    }
}
