//! Signed tokens: a user name and an expiry, signed with HMAC-SHA256 under
//! a server secret. Compact and URL-safe:
//! `<base64url(user)>.<expiry unix seconds>.<base64url(signature)>`.
//!
//! ```
//! use signalbox::auth::{mint, verify};
//! let token = mint(b"secret", "flat-12", 2_000_000_000);
//! assert_eq!(verify(b"secret", &token, 1_900_000_000).unwrap(), "flat-12");
//! assert!(verify(b"other", &token, 1_900_000_000).is_err());
//! ```

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::base64;

type HmacSha256 = Hmac<Sha256>;

/// The name inside an admin token (`signalbox token --admin`): not a
/// user name (none has `*`), so no client can register with it, and no
/// user's token opens the installer's pages.
pub const ADMIN: &str = "*admin";

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not of the token's shape.
    Malformed,
    /// The signature does not match: forged, altered, or another secret.
    BadSignature,
    /// Past its expiry.
    Expired,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::BadSignature => "invalid token signature",
            TokenError::Expired => "token expired",
        })
    }
}

impl std::error::Error for TokenError {}

fn mac(secret: &[u8], signed: &str) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(signed.as_bytes());
    mac
}

/// A token for `user`, valid until `expiry` (unix seconds).
pub fn mint(secret: &[u8], user: &str, expiry: u64) -> String {
    let mut token = String::new();
    base64::encode_url_into(user.as_bytes(), &mut token);
    token.push('.');
    token.push_str(&expiry.to_string());
    let signature = mac(secret, &token).finalize().into_bytes();
    token.push('.');
    base64::encode_url_into(&signature, &mut token);
    token
}

/// Checks a token at `now` (unix seconds); returns its user. The signature
/// is compared in constant time, and checked before anything it signs is
/// believed.
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<String, TokenError> {
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (user, expiry) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = base64::decode_url(signature).map_err(|_| TokenError::Malformed)?;
    mac(secret, signed)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    if now >= expiry {
        return Err(TokenError::Expired);
    }
    let user = base64::decode_url(user).map_err(|_| TokenError::Malformed)?;
    String::from_utf8(user).map_err(|_| TokenError::Malformed)
}

/// Why a secret file could not be used.
#[derive(Debug)]
pub enum SecretError {
    /// The file could not be read.
    Unreadable {
        /// The secret file's path, as it was given.
        path: std::path::PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    Empty {
        /// The secret file's path, as it was given.
        path: std::path::PathBuf,
    },
    /// A secret that must be text (it is also written in another program's
    /// configuration) is not UTF-8.
    NotText {
        /// The secret file's path, as it was given.
        path: std::path::PathBuf,
    },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Unreadable { path, error } => {
                write!(f, "cannot read the secret {}: {error}", path.display())
            }
            SecretError::Empty { path } => write!(f, "the secret file {} is empty", path.display()),
            SecretError::NotText { path } => write!(
                f,
                "the secret file {} is not text: this secret is also written in the TURN \
                 server's configuration, so it must be; make one with \
                 `openssl rand -hex 32 > {}`",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// Reads a secret file: its bytes without surrounding ASCII whitespace
/// (a trailing newline, typically), which must not be empty. Any bytes
/// will do, text or not: `head -c 32 /dev/urandom > secret` is a fine key.
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, SecretError> {
    let bytes = std::fs::read(path).map_err(|error| SecretError::Unreadable {
        path: path.to_owned(),
        error,
    })?;
    let secret = bytes.trim_ascii();
    if secret.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(secret.to_vec())
}

/// Reads a secret file that must be text, such as the secret shared with
/// coturn, whose configuration holds it as text too.
pub fn read_text_secret(path: &std::path::Path) -> Result<String, SecretError> {
    String::from_utf8(read_secret(path)?).map_err(|_| SecretError::NotText {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a building's secret";

    #[test]
    fn round_trip_and_shape() {
        let token = mint(SECRET, "door.north@gate-1", 1_700_000_000);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{token}"
        );
        assert_eq!(
            verify(SECRET, &token, 1_600_000_000).unwrap(),
            "door.north@gate-1"
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = mint(SECRET, "alice", 1_000);
        assert_eq!(verify(SECRET, &token, 999).as_deref(), Ok("alice"));
        assert_eq!(verify(SECRET, &token, 1_000), Err(TokenError::Expired));
        assert_eq!(verify(SECRET, &token, 5_000), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let token = mint(SECRET, "alice", 2_000_000_000);
        let (user, rest) = token.split_once('.').unwrap();
        let mut other = String::new();
        base64::encode_url_into(b"concierge", &mut other);
        // Another name, a later expiry, a flipped signature bit, another secret.
        let renamed = format!("{other}.{rest}");
        let (_, signature) = rest.split_once('.').unwrap();
        let extended = format!("{user}.3000000000.{signature}");
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [&renamed, &extended, &flipped] {
            assert_eq!(
                verify(SECRET, bad, 0),
                Err(TokenError::BadSignature),
                "{bad}"
            );
        }
        assert_eq!(
            verify(b"another secret", &token, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn secret_files_may_hold_any_bytes() {
        let dir = std::env::temp_dir().join(format!("signalbox-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("binary");
        let random: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(97) ^ 0xa5).collect();
        std::fs::write(&binary, &random).unwrap();
        let key = read_secret(&binary).unwrap();
        assert_eq!(key, random.trim_ascii());
        let token = mint(&key, "alice", 2_000_000_000);
        assert_eq!(verify(&key, &token, 0).as_deref(), Ok("alice"));
        let message = read_text_secret(&binary).unwrap_err().to_string();
        assert!(
            message.contains("must be") && message.contains("openssl rand"),
            "{message}"
        );

        let text = dir.join("text");
        std::fs::write(&text, "  s3cret\n").unwrap();
        assert_eq!(read_secret(&text).unwrap(), b"s3cret");
        assert_eq!(read_text_secret(&text).unwrap(), "s3cret");
        let empty = dir.join("empty");
        std::fs::write(&empty, " \n").unwrap();
        assert!(matches!(
            read_secret(&empty),
            Err(SecretError::Empty { .. })
        ));
        assert!(matches!(
            read_secret(&dir.join("missing")),
            Err(SecretError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "abc", "a.b", "a.1.", "a.1.!!!", "....", "a.b.c.d"] {
            assert!(verify(SECRET, bad, 0).is_err(), "{bad}");
        }
        // A correctly signed but non-numeric expiry cannot be minted; a
        // signature over garbage still fails on the signature first.
        assert_eq!(
            verify(SECRET, "YQ.x.AAAA", 0),
            Err(TokenError::BadSignature)
        );
    }
}
