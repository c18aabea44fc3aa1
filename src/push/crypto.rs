//! Web Push's cryptography: RFC 8291 message encryption (aes128gcm, RFC 8188) and RFC 8292 VAPID, with ring.

use std::fmt;

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, ECDH_P256, EphemeralPrivateKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::base64;

/// The record size `encrypt` writes: one record holds any message a push
/// service must take.
const RECORD_SIZE: u32 = 4096;

/// The longest plaintext `encrypt` takes: push services must accept a
/// 4096-byte body (RFC 8291 section 4), which is 86 bytes of header, the
/// 0x02 delimiter and the 16-byte tag around the message.
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_LEN - 1 - TAG_LEN;

/// salt (16) | rs (4) | idlen (1) | keyid (65).
const HEADER_LEN: usize = 16 + 4 + 1 + POINT_LEN;
const POINT_LEN: usize = 65;
const TAG_LEN: usize = 16;

/// Why a push could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A key (the subscription's, or the VAPID key being read) is unusable;
    /// the text says which and why.
    BadKey(&'static str),
    /// The operation itself failed: no randomness, or a message too long.
    Failed(&'static str),
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::BadKey(why) | CryptoError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CryptoError {}

/// Encrypts `plaintext` for a subscription: `ua_public` is the
/// subscription's `keys.p256dh` (65-byte uncompressed P-256 point),
/// `auth_secret` its `keys.auth` (16 bytes). A fresh ephemeral ECDH key and
/// a random 16-byte salt each call; one record (rs = 4096), padding
/// delimiter 0x02 as RFC 8188 says for the last record. Returns the whole
/// body (the aes128gcm header: salt | rs (u32 BE) | idlen=65 | keyid=the
/// application server's ephemeral public key, then the ciphertext).
pub fn encrypt(
    ua_public: &[u8],
    auth_secret: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    check_subscription(ua_public, auth_secret)?;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(CryptoError::Failed(
            "the push message is over 3993 bytes, more than push services must take",
        ));
    }
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    rng.fill(&mut salt)
        .map_err(|_| CryptoError::Failed("no randomness for a push message's salt"))?;
    let private = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| CryptoError::Failed("no randomness for a push message's key"))?;
    let public = private
        .compute_public_key()
        .map_err(|_| CryptoError::Failed("cannot compute a push message's public key"))?;
    let peer = agreement::UnparsedPublicKey::new(&ECDH_P256, ua_public);
    agreement::agree_ephemeral(private, &peer, |secret| {
        encrypt_with(
            secret,
            public.as_ref(),
            ua_public,
            auth_secret,
            &salt,
            RECORD_SIZE,
            plaintext,
        )
    })
    .map_err(|_| CryptoError::BadKey("the subscription's p256dh is not a point on P-256"))?
}

/// The deterministic part, from the ECDH shared secret on (ring cannot
/// import an ECDH private key, so the RFC 8291 test vector is checked from
/// here): IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info\0" ||
/// ua_public || as_public, 32); PRK/CEK/NONCE per RFC 8188 with the salt;
/// AES-128-GCM.
pub fn encrypt_with(
    ecdh_secret: &[u8],
    as_public: &[u8],
    ua_public: &[u8],
    auth_secret: &[u8],
    salt: &[u8; 16],
    record_size: u32,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    check_subscription(ua_public, auth_secret)?;
    if !is_uncompressed_point(as_public) {
        return Err(CryptoError::BadKey(
            "the application server's key is not a 65-byte uncompressed P-256 point",
        ));
    }
    if ecdh_secret.len() != 32 {
        return Err(CryptoError::BadKey("the ECDH secret is not 32 bytes"));
    }
    // A single record: the message, its delimiter and the tag (RFC 8188
    // section 2: rs is at least 18).
    let record_len = plaintext.len() + 1 + TAG_LEN;
    if record_size < 18 || record_len as u64 > u64::from(record_size) {
        return Err(CryptoError::Failed(
            "the push message does not fit in one record",
        ));
    }
    let keys = derive(ecdh_secret, as_public, ua_public, auth_secret, salt);

    let mut body = Vec::with_capacity(HEADER_LEN + record_len);
    body.extend_from_slice(salt);
    body.extend_from_slice(&record_size.to_be_bytes());
    body.push(POINT_LEN as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(plaintext);
    body.push(0x02);
    let key = UnboundKey::new(&AES_128_GCM, &keys.cek)
        .map_err(|_| CryptoError::Failed("cannot make the content encryption key"))?;
    let tag = LessSafeKey::new(key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(keys.nonce),
            Aad::empty(),
            &mut body[HEADER_LEN..],
        )
        .map_err(|_| CryptoError::Failed("cannot encrypt the push message"))?;
    body.extend_from_slice(tag.as_ref());
    Ok(body)
}

fn check_subscription(ua_public: &[u8], auth_secret: &[u8]) -> Result<(), CryptoError> {
    if !is_uncompressed_point(ua_public) {
        return Err(CryptoError::BadKey(
            "the subscription's p256dh is not a 65-byte uncompressed P-256 point",
        ));
    }
    if auth_secret.len() != 16 {
        return Err(CryptoError::BadKey(
            "the subscription's auth is not 16 bytes",
        ));
    }
    Ok(())
}

fn is_uncompressed_point(key: &[u8]) -> bool {
    key.len() == POINT_LEN && key[0] == 0x04
}

/// The key schedule of RFC 8291 section 3.4 and RFC 8188 section 2.2,
/// kept apart so that its intermediate values can be checked.
struct Keys {
    #[cfg_attr(not(test), expect(dead_code, reason = "only the tests read it"))]
    prk_key: [u8; 32],
    #[cfg_attr(not(test), expect(dead_code, reason = "only the tests read it"))]
    ikm: [u8; 32],
    #[cfg_attr(not(test), expect(dead_code, reason = "only the tests read it"))]
    prk: [u8; 32],
    cek: [u8; 16],
    nonce: [u8; 12],
}

fn derive(
    ecdh_secret: &[u8],
    as_public: &[u8],
    ua_public: &[u8],
    auth_secret: &[u8],
    salt: &[u8; 16],
) -> Keys {
    // Every output is at most one SHA-256 block, so HKDF-Expand is a single
    // HMAC over info || 0x01; written out, the PRKs are visible to tests.
    let prk_key = hmac_sha256(auth_secret, &[ecdh_secret]);
    let ikm = hmac_sha256(&prk_key, &[b"WebPush: info\0", ua_public, as_public, &[1]]);
    let prk = hmac_sha256(salt, &[&ikm]);
    let cek = hmac_sha256(&prk, &[b"Content-Encoding: aes128gcm\0\x01"]);
    let nonce = hmac_sha256(&prk, &[b"Content-Encoding: nonce\0\x01"]);
    let mut keys = Keys {
        prk_key,
        ikm,
        prk,
        cek: [0; 16],
        nonce: [0; 12],
    };
    keys.cek.copy_from_slice(&cek[..16]);
    keys.nonce.copy_from_slice(&nonce[..12]);
    keys
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut context = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.sign().as_ref());
    out
}

/// A VAPID key pair (ECDSA P-256).
pub struct VapidKey {
    pair: EcdsaKeyPair,
    /// Kept for `to_pem`: ring cannot export a key it has parsed.
    pkcs8: Vec<u8>,
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_key_base64url())
            .finish_non_exhaustive()
    }
}

/// A PKCS#8 (RFC 5208) v1 P-256 key with its public key (RFC 5915), up to
/// the 32-byte private scalar: the bytes ring, node and openssl all write.
const PKCS8_P256_PREFIX: &[u8] = &[
    0x30, 0x81, 0x87, // PrivateKeyInfo, 135 bytes
    0x02, 0x01, 0x00, // version 0
    0x30, 0x13, // AlgorithmIdentifier
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
    0x04, 0x6d, // privateKey OCTET STRING, 109 bytes
    0x30, 0x6b, // ECPrivateKey, 107 bytes
    0x02, 0x01, 0x01, // version 1
    0x04, 0x20, // privateKey, 32 bytes
];
/// Between the private scalar and the 65-byte public point.
const PKCS8_P256_MIDDLE: &[u8] = &[
    0xa1, 0x44, // [1] publicKey, 68 bytes
    0x03, 0x42, 0x00, // BIT STRING, 66 bytes, no unused bits
];
/// `SEQUENCE { id-ecPublicKey, prime256v1 }`, to wrap an RFC 5915 key.
const P256_ALGORITHM: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

impl VapidKey {
    /// A new random key.
    pub fn generate() -> Result<VapidKey, CryptoError> {
        let rng = SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| CryptoError::Failed("no randomness to make a VAPID key"))?;
        VapidKey::from_pkcs8(document.as_ref().to_vec())
    }

    /// Reads a key from text: either a PKCS#8 PEM ("-----BEGIN PRIVATE
    /// KEY-----", as `openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256` writes and as `to_pem` writes), or the two
    /// base64url lines the `web-push` npm tool prints, as `public=<base64url
    /// 65 bytes>` and `private=<base64url 32 bytes>` lines (order free,
    /// blank lines and `#` comments ignored). Errors say what is wrong.
    ///
    /// Also read: an RFC 5915 "-----BEGIN EC PRIVATE KEY-----" PEM (what
    /// `openssl ecparam -genkey` writes), and `web-push
    /// generate-vapid-keys` output as printed, `Public Key:` and `Private
    /// Key:` headings over the values, or its `--json` form.
    pub fn from_text(text: &str) -> Result<VapidKey, CryptoError> {
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            Err(CryptoError::BadKey("the VAPID key text is empty"))
        } else if text.contains("-----BEGIN ") {
            VapidKey::from_pem(text)
        } else if text.starts_with('{') {
            VapidKey::from_json(text)
        } else {
            VapidKey::from_lines(text)
        }
    }

    /// The key as PKCS#8 PEM, the form `from_text` reads back (for
    /// `--state-dir` and `signalbox vapid-key`).
    pub fn to_pem(&self) -> String {
        let mut body = String::new();
        base64::encode_into(&self.pkcs8, &mut body);
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 64);
        pem.push_str(PEM_BEGIN);
        for (i, c) in body.chars().enumerate() {
            if i % 64 == 0 {
                pem.push('\n');
            }
            pem.push(c);
        }
        pem.push('\n');
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    /// The 65-byte uncompressed public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key in base64url without padding: the
    /// `applicationServerKey` browsers need.
    pub fn public_key_base64url(&self) -> String {
        let mut out = String::new();
        base64::encode_url_into(self.public_key(), &mut out);
        out
    }

    /// The `Authorization` header value for a push to an endpoint whose
    /// origin is `audience` (e.g. `https://push.example.net`): `vapid
    /// t=<JWT>, k=<public key base64url>`, the JWT ES256 with header
    /// {"typ":"JWT","alg":"ES256"} and claims {"aud": audience, "exp":
    /// expires (unix seconds), "sub": subject} (RFC 8292 section 2 and 3).
    pub fn authorization(
        &self,
        audience: &str,
        subject: &str,
        expires: u64,
    ) -> Result<String, CryptoError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            exp: u64,
            sub: &'a str,
        }
        let claims = serde_json::to_vec(&Claims {
            aud: audience,
            exp: expires,
            sub: subject,
        })
        .map_err(|_| CryptoError::Failed("cannot encode the VAPID claims"))?;
        let mut token = String::new();
        base64::encode_url_into(br#"{"typ":"JWT","alg":"ES256"}"#, &mut token);
        token.push('.');
        base64::encode_url_into(&claims, &mut token);
        // FIXED: JWS wants r || s (RFC 7518 section 3.4), not DER.
        let signature = self
            .pair
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|_| CryptoError::Failed("cannot sign the VAPID token"))?;
        token.push('.');
        base64::encode_url_into(signature.as_ref(), &mut token);
        Ok(format!(
            "vapid t={token}, k={}",
            self.public_key_base64url()
        ))
    }

    fn from_pkcs8(der: Vec<u8>) -> Result<VapidKey, CryptoError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(|rejected| {
                    CryptoError::BadKey(match rejected.to_string().as_str() {
                        "WrongAlgorithm" => "the PEM key is not a P-256 EC key",
                        "InconsistentComponents" => {
                            "the PEM key's public key does not belong to its private key"
                        }
                        "InvalidComponent" => "the PEM key's private key is not valid for P-256",
                        "VersionNotSupported" => "the PEM key's version is not supported",
                        _ => {
                            "the PEM key is not a P-256 private key with its public key included \
                             (as openssl writes it)"
                        }
                    })
                })?;
        Ok(VapidKey { pair, pkcs8: der })
    }

    fn from_pem(text: &str) -> Result<VapidKey, CryptoError> {
        let mut lines = text.lines().map(str::trim);
        // Other blocks (openssl ecparam's "EC PARAMETERS", a certificate) are
        // skipped; the key is the first private key block.
        let sec1 = loop {
            let Some(line) = lines.next() else {
                return Err(CryptoError::BadKey(
                    "the PEM text has no -----BEGIN PRIVATE KEY----- block",
                ));
            };
            match line {
                PEM_BEGIN => break false,
                "-----BEGIN EC PRIVATE KEY-----" => break true,
                "-----BEGIN ENCRYPTED PRIVATE KEY-----" => {
                    return Err(CryptoError::BadKey(
                        "the PEM key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
                    ));
                }
                _ => {}
            }
        };
        let end = if sec1 {
            "-----END EC PRIVATE KEY-----"
        } else {
            PEM_END
        };
        let mut body = String::new();
        loop {
            let Some(line) = lines.next() else {
                return Err(CryptoError::BadKey("the PEM key has no END line"));
            };
            if line == end {
                break;
            }
            if line.starts_with("Proc-Type:") {
                return Err(CryptoError::BadKey(
                    "the PEM key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
                ));
            }
            body.push_str(line);
        }
        let der = base64::decode(&body)
            .map_err(|_| CryptoError::BadKey("the PEM key is not valid base64"))?;
        if der.is_empty() {
            return Err(CryptoError::BadKey("the PEM key is empty"));
        }
        let pkcs8 = if sec1 { wrap_sec1(&der) } else { der };
        VapidKey::from_pkcs8(pkcs8)
    }

    fn from_json(text: &str) -> Result<VapidKey, CryptoError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Pair {
            public_key: String,
            private_key: String,
        }
        let pair: Pair = serde_json::from_str(text).map_err(|_| {
            CryptoError::BadKey(r#"the JSON key is not {"publicKey": "…", "privateKey": "…"}"#)
        })?;
        VapidKey::from_raw(&pair.public_key, &pair.private_key)
    }

    fn from_lines(text: &str) -> Result<VapidKey, CryptoError> {
        #[derive(Clone, Copy)]
        enum Field {
            Public,
            Private,
        }
        let mut public = None;
        let mut private = None;
        // `web-push generate-vapid-keys` prints "Public Key:" with the value
        // on the line below.
        let mut heading = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.bytes().all(|b| b == b'=') {
                continue;
            }
            let (field, value) = match heading.take() {
                Some(field) => (field, line),
                None => {
                    let Some((name, value)) = line.split_once(['=', ':']) else {
                        return Err(CryptoError::BadKey(
                            "a line of the VAPID key is neither public=… nor private=…",
                        ));
                    };
                    let name: String = name
                        .chars()
                        .filter(|c| !matches!(c, ' ' | '_' | '-'))
                        .flat_map(char::to_lowercase)
                        .collect();
                    let field = match name.as_str() {
                        "public" | "publickey" => Field::Public,
                        "private" | "privatekey" => Field::Private,
                        _ => {
                            return Err(CryptoError::BadKey(
                                "a line of the VAPID key is neither public=… nor private=…",
                            ));
                        }
                    };
                    let value = value.trim();
                    if value.is_empty() {
                        heading = Some(field);
                        continue;
                    }
                    (field, value)
                }
            };
            let (slot, twice) = match field {
                Field::Public => (&mut public, "public= is given twice"),
                Field::Private => (&mut private, "private= is given twice"),
            };
            if slot.replace(value).is_some() {
                return Err(CryptoError::BadKey(twice));
            }
        }
        if heading.is_some() {
            return Err(CryptoError::BadKey("a line of the VAPID key has no value"));
        }
        match (public, private) {
            (Some(public), Some(private)) => VapidKey::from_raw(public, private),
            (None, _) => Err(CryptoError::BadKey("the VAPID key has no public= line")),
            (_, None) => Err(CryptoError::BadKey("the VAPID key has no private= line")),
        }
    }

    fn from_raw(public: &str, private: &str) -> Result<VapidKey, CryptoError> {
        let public =
            decode_base64url(public).ok_or(CryptoError::BadKey("public= is not base64url"))?;
        let private =
            decode_base64url(private).ok_or(CryptoError::BadKey("private= is not base64url"))?;
        if !is_uncompressed_point(&public) {
            return Err(CryptoError::BadKey(
                "public= is not a 65-byte uncompressed P-256 point",
            ));
        }
        if private.len() != 32 {
            return Err(CryptoError::BadKey("private= is not 32 bytes"));
        }
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &private,
            &public,
            &SystemRandom::new(),
        )
        .map_err(|rejected| {
            CryptoError::BadKey(match rejected.to_string().as_str() {
                "InconsistentComponents" => "public= is not the public key of private=",
                _ => "private= is not a valid P-256 private key",
            })
        })?;
        let mut pkcs8 = Vec::with_capacity(138);
        pkcs8.extend_from_slice(PKCS8_P256_PREFIX);
        pkcs8.extend_from_slice(&private);
        pkcs8.extend_from_slice(PKCS8_P256_MIDDLE);
        pkcs8.extend_from_slice(&public);
        Ok(VapidKey { pair, pkcs8 })
    }
}

/// Base64url, tolerating the padding some tools add.
fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    base64::decode_url(text.trim_end_matches('=')).ok()
}

/// Wraps an RFC 5915 `ECPrivateKey` as a PKCS#8 v1 P-256 key; ring checks
/// what is inside (and that its curve, when named, is P-256).
fn wrap_sec1(sec1: &[u8]) -> Vec<u8> {
    let mut info = vec![0x02, 0x01, 0x00];
    info.extend_from_slice(P256_ALGORITHM);
    der_push(&mut info, 0x04, sec1);
    let mut out = Vec::with_capacity(info.len() + 4);
    der_push(&mut out, 0x30, &info);
    out
}

fn der_push(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use serde_json::json;

    fn b64(s: &str) -> Vec<u8> {
        base64::decode_url(s).unwrap()
    }

    fn url(bytes: &[u8]) -> String {
        let mut s = String::new();
        base64::encode_url_into(bytes, &mut s);
        s
    }

    // RFC 8291 section 5 and Appendix A.
    const RFC_UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const RFC_AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const RFC_AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const RFC_SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const RFC_ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const RFC_PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const RFC_BODY: &str = concat!(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml",
        "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT",
        "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
    );

    fn rfc_salt() -> [u8; 16] {
        b64(RFC_SALT).try_into().unwrap()
    }

    #[test]
    fn rfc8291_intermediate_values() {
        let keys = derive(
            &b64(RFC_ECDH_SECRET),
            &b64(RFC_AS_PUBLIC),
            &b64(RFC_UA_PUBLIC),
            &b64(RFC_AUTH),
            &rfc_salt(),
        );
        assert_eq!(
            url(&keys.prk_key),
            "Snr3JMxaHVDXHWJn5wdC52WjpCtd2EIEGBykDcZW32k"
        );
        assert_eq!(
            url(&keys.ikm),
            "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg"
        );
        assert_eq!(
            url(&keys.prk),
            "09_eUZGrsvxChDCGRCdkLiDXrReGOEVeSCdCcPBSJSc"
        );
        assert_eq!(url(&keys.cek), "oIhVW04MRdy2XN9CiKLxTg");
        assert_eq!(url(&keys.nonce), "4h_95klXJ5E_qnoN");
    }

    #[test]
    fn rfc8291_message_body() {
        let body = encrypt_with(
            &b64(RFC_ECDH_SECRET),
            &b64(RFC_AS_PUBLIC),
            &b64(RFC_UA_PUBLIC),
            &b64(RFC_AUTH),
            &rfc_salt(),
            4096,
            RFC_PLAINTEXT.as_bytes(),
        )
        .unwrap();
        assert_eq!(url(&body), RFC_BODY);
    }

    /// The user agent's side of RFC 8291: from the ECDH secret it computed
    /// with the header's key, back to the plaintext.
    fn open(ecdh_secret: &[u8], ua_public: &[u8], auth: &[u8], body: &[u8]) -> Option<Vec<u8>> {
        let salt: [u8; 16] = body.get(..16)?.try_into().ok()?;
        let rs = u32::from_be_bytes(body.get(16..20)?.try_into().ok()?);
        if *body.get(20)? != 65 || rs < 18 {
            return None;
        }
        let as_public = body.get(21..86)?;
        let mut record = body.get(86..)?.to_vec();
        if record.len() > rs as usize {
            return None;
        }
        let keys = derive(ecdh_secret, as_public, ua_public, auth, &salt);
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &keys.cek).ok()?);
        let padded = key
            .open_in_place(
                Nonce::assume_unique_for_key(keys.nonce),
                Aad::empty(),
                &mut record,
            )
            .ok()?;
        let end = padded.iter().rposition(|&b| b != 0)?;
        (padded[end] == 0x02).then(|| padded[..end].to_vec())
    }

    /// A subscription's key pair, the body `encrypt` made for it, and the
    /// ECDH secret the receiver computes from the body's key.
    fn encrypt_for_a_fresh_subscription(plaintext: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let rng = SystemRandom::new();
        let ua_private = EphemeralPrivateKey::generate(&ECDH_P256, &rng).unwrap();
        let ua_public = ua_private.compute_public_key().unwrap().as_ref().to_vec();
        let mut auth = [0u8; 16];
        rng.fill(&mut auth).unwrap();
        let body = encrypt(&ua_public, &auth, plaintext).unwrap();
        let sender = agreement::UnparsedPublicKey::new(&ECDH_P256, body[21..86].to_vec());
        let secret = agreement::agree_ephemeral(ua_private, &sender, <[u8]>::to_vec).unwrap();
        (ua_public, auth.to_vec(), body, secret)
    }

    #[test]
    fn encrypt_round_trips() {
        let plaintext = br#"{"type":"incoming_call","from":"door","call":"c1"}"#;
        let (ua_public, auth, body, secret) = encrypt_for_a_fresh_subscription(plaintext);
        assert_eq!(&body[16..21], &[0, 0, 0x10, 0, 65]);
        assert_eq!(body.len(), HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
        assert_eq!(open(&secret, &ua_public, &auth, &body).unwrap(), plaintext);

        let (ua_public, auth, body, secret) = encrypt_for_a_fresh_subscription(b"");
        assert_eq!(open(&secret, &ua_public, &auth, &body).unwrap(), b"");

        let longest = vec![b'x'; MAX_PLAINTEXT];
        let (ua_public, auth, body, secret) = encrypt_for_a_fresh_subscription(&longest);
        assert_eq!(body.len(), 4096);
        assert_eq!(open(&secret, &ua_public, &auth, &body).unwrap(), longest);
    }

    #[test]
    fn a_tampered_byte_fails_to_decrypt() {
        let (ua_public, auth, body, secret) = encrypt_for_a_fresh_subscription(b"hello");
        assert!(open(&secret, &ua_public, &auth, &body).is_some());
        for i in 0..body.len() {
            // rs is not authenticated; a receiver only checks the record fits.
            if (16..20).contains(&i) {
                continue;
            }
            let mut tampered = body.clone();
            tampered[i] ^= 0x01;
            assert!(
                open(&secret, &ua_public, &auth, &tampered).is_none(),
                "byte {i}"
            );
        }
        assert!(open(&secret, &ua_public, &[0; 16], &body).is_none());
        assert!(open(&secret, &ua_public, &auth, &body[..body.len() - 1]).is_none());
    }

    #[test]
    fn each_message_gets_a_fresh_key_and_salt() {
        let ua_public = b64(RFC_UA_PUBLIC);
        let auth = b64(RFC_AUTH);
        let first = encrypt(&ua_public, &auth, b"ping").unwrap();
        let second = encrypt(&ua_public, &auth, b"ping").unwrap();
        assert_ne!(first[..16], second[..16]);
        assert_ne!(first[21..86], second[21..86]);
    }

    #[test]
    fn encrypt_rejects_bad_subscriptions() {
        let ua_public = b64(RFC_UA_PUBLIC);
        let auth = b64(RFC_AUTH);
        let bad_key = |key: &[u8]| matches!(encrypt(key, &auth, b"x"), Err(CryptoError::BadKey(_)));
        assert!(bad_key(&ua_public[..64]));
        assert!(bad_key(&[]));
        let mut compressed = ua_public.clone();
        compressed[0] = 0x02;
        assert!(bad_key(&compressed));
        let mut off_curve = vec![0x04; 1];
        off_curve.extend_from_slice(&[1; 64]);
        assert_eq!(
            encrypt(&off_curve, &auth, b"x"),
            Err(CryptoError::BadKey(
                "the subscription's p256dh is not a point on P-256"
            ))
        );
        assert!(matches!(
            encrypt(&ua_public, &auth[..15], b"x"),
            Err(CryptoError::BadKey(_))
        ));
        assert!(matches!(
            encrypt(&ua_public, &auth, &vec![0; MAX_PLAINTEXT + 1]),
            Err(CryptoError::Failed(_))
        ));
    }

    #[test]
    fn encrypt_with_rejects_what_does_not_fit() {
        let run = |secret: &[u8], record_size: u32, plaintext: &[u8]| {
            encrypt_with(
                secret,
                &b64(RFC_AS_PUBLIC),
                &b64(RFC_UA_PUBLIC),
                &b64(RFC_AUTH),
                &rfc_salt(),
                record_size,
                plaintext,
            )
        };
        let secret = b64(RFC_ECDH_SECRET);
        assert!(run(&secret, 18, b"x").is_ok());
        assert!(matches!(
            run(&secret, 18, b"xy"),
            Err(CryptoError::Failed(_))
        ));
        assert!(matches!(run(&secret, 17, b""), Err(CryptoError::Failed(_))));
        assert!(matches!(run(&secret, 0, b""), Err(CryptoError::Failed(_))));
        assert!(matches!(
            run(&secret[..31], 4096, b""),
            Err(CryptoError::BadKey(_))
        ));
        let as_short = encrypt_with(
            &secret,
            &b64(RFC_AS_PUBLIC)[..64],
            &b64(RFC_UA_PUBLIC),
            &b64(RFC_AUTH),
            &rfc_salt(),
            4096,
            b"",
        );
        assert!(matches!(as_short, Err(CryptoError::BadKey(_))));
    }

    #[test]
    fn vapid_authorization_verifies() {
        let key = VapidKey::generate().unwrap();
        let header = key
            .authorization(
                "https://push.example.net",
                "mailto:ops@example.net",
                1_700_000_000,
            )
            .unwrap();
        let (t, k) = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(k, key.public_key_base64url());
        assert_eq!(b64(k), key.public_key());
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let jwt_header: serde_json::Value = serde_json::from_slice(&b64(parts[0])).unwrap();
        assert_eq!(jwt_header, json!({"typ": "JWT", "alg": "ES256"}));
        let claims: serde_json::Value = serde_json::from_slice(&b64(parts[1])).unwrap();
        assert_eq!(
            claims,
            json!({"aud": "https://push.example.net", "exp": 1_700_000_000u64, "sub": "mailto:ops@example.net"})
        );
        let signature = b64(parts[2]);
        assert_eq!(signature.len(), 64);
        let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key());
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(signed.as_bytes(), &signature).unwrap();
        assert!(verifier.verify(b"other.claims", &signature).is_err());
    }

    #[test]
    fn pem_round_trips() {
        let key = VapidKey::generate().unwrap();
        assert_eq!(key.public_key().len(), 65);
        assert_eq!(key.public_key()[0], 0x04);
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("\n-----END PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|line| line.len() <= 64));
        let again = VapidKey::from_text(&pem).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.to_pem(), pem);
        // Keys differ each time.
        assert_ne!(VapidKey::generate().unwrap().public_key(), key.public_key());
        assert!(format!("{key:?}").contains(&key.public_key_base64url()));
    }

    // A test-only pair from node's crypto.generateKeyPairSync('ec',
    // {namedCurve: 'P-256'}): its JWK d, 0x04 || x || y, and its PKCS#8 PEM.
    const NODE_PRIVATE: &str = "wmSUXLThRHR_2W0QKZWekafBwKPQeGb2-Pur_IAwdIo";
    const NODE_PUBLIC: &str =
        "BH1SVXS6MHO6nLZ7g2b4XaeBSHs4X9382E2-ocBwNagovsWINwHHBTI_jj-tf_oAtHcKdejUAeFSihiaSq8IYiU";
    const NODE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwmSUXLThRHR/2W0Q
KZWekafBwKPQeGb2+Pur/IAwdIqhRANCAAR9UlV0ujBzupy2e4Nm+F2ngUh7OF/d
/NhNvqHAcDWoKL7FiDcBxwUyP44/rX/6ALR3CnXo1AHhUooYmkqvCGIl
-----END PRIVATE KEY-----
";

    #[test]
    fn reads_public_and_private_lines() {
        let text = format!(
            "# made with web-push generate-vapid-keys\n\nprivate={NODE_PRIVATE}\n\n  public = {NODE_PUBLIC}  \n"
        );
        let key = VapidKey::from_text(&text).unwrap();
        assert_eq!(key.public_key_base64url(), NODE_PUBLIC);
        // The PKCS#8 built for it is byte for byte what node writes, and
        // ring reads it back to the same key.
        assert_eq!(key.to_pem(), NODE_PEM);
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.pkcs8,
            &SystemRandom::new(),
        )
        .unwrap();
        assert_eq!(pair.public_key().as_ref(), key.public_key());
        assert_eq!(
            VapidKey::from_text(&key.to_pem()).unwrap().public_key(),
            key.public_key()
        );
        assert_eq!(
            VapidKey::from_text(NODE_PEM).unwrap().public_key(),
            key.public_key()
        );
        // A raw key signs as well as a PEM one.
        let header = key
            .authorization("https://a.example", "mailto:a@example", 1)
            .unwrap();
        let t = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split(", k=")
            .next()
            .unwrap();
        let (signed, signature) = t.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key())
            .verify(signed.as_bytes(), &b64(signature))
            .unwrap();
    }

    #[test]
    fn reads_web_push_tool_output() {
        let printed = format!(
            "\n=======================================\n\nPublic Key:\n{NODE_PUBLIC}\n\nPrivate Key:\n{NODE_PRIVATE}\n\n=======================================\n"
        );
        let key = VapidKey::from_text(&printed).unwrap();
        assert_eq!(key.public_key_base64url(), NODE_PUBLIC);
        let json = format!(r#"{{"publicKey":"{NODE_PUBLIC}","privateKey":"{NODE_PRIVATE}"}}"#);
        let key = VapidKey::from_text(&json).unwrap();
        assert_eq!(key.public_key_base64url(), NODE_PUBLIC);
    }

    #[test]
    fn reads_openssl_keys() {
        // openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256
        let genpkey = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghuRHV6cFRZTH6dBN
aayDHGcmrOh15GMY1+PEF1CsEP2hRANCAAThIqazkrpnr1knjEuqJqJ5RaAMAQl6
wLFcvl04zInnbqMmzpB5q4odFC2TWuIo6K0iNvAw1ZSbDLCabC53vxD6
-----END PRIVATE KEY-----
";
        let key = VapidKey::from_text(genpkey).unwrap();
        assert_eq!(
            key.public_key_base64url(),
            "BOEiprOSumevWSeMS6omonlFoAwBCXrAsVy-XTjMieduoybOkHmrih0ULZNa4ijorSI28DDVlJsMsJpsLne_EPo"
        );
        assert_eq!(key.to_pem(), genpkey);

        // openssl ecparam -genkey -name prime256v1, parameters block and all.
        let ecparam = "-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEILhuVWJwnZxfDSvXLc3wFfDE495PfikbLgRLHhywhb14oAoGCCqGSM49
AwEHoUQDQgAEBzk7UciYJmiepbBDYZLZdw5WsQraA2eDcFJsUTud38KGscmeoUa2
Auc3FTy+8Z4YYuUi4ileioG5eaMHENWcNw==
-----END EC PRIVATE KEY-----
";
        let key = VapidKey::from_text(ecparam).unwrap();
        assert_eq!(
            key.public_key_base64url(),
            "BAc5O1HImCZonqWwQ2GS2XcOVrEK2gNng3BSbFE7nd_ChrHJnqFGtgLnNxU8vvGeGGLlIuIpXoqBuXmjBxDVnDc"
        );
        let again = VapidKey::from_text(&key.to_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn rejects_bad_keys() {
        let public = NODE_PUBLIC;
        let private = NODE_PRIVATE;
        let other = VapidKey::generate().unwrap().public_key_base64url();
        let mut off_curve = vec![0x04];
        off_curve.extend_from_slice(&[1; 64]);
        let off_curve = url(&off_curve);
        let p384 = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBKStRy92ubV8EexuQd
+9c4NKRMEkDRVLA1tsS5XP4jKYlaEPi9ARbbK1H2o+xRHNChZANiAAQnZkPBfYDM
kh5jpbJOrQ7zwKsrPRHmwiHZymuN8uUujuC5KhFwuLvJUMcMWZnhtyJe28ZcSZjy
IwFvCSmXK6vVA/5pv5pQjifQCgRGQqYu+p42Jn/xAtZAqRClloaxf64=
-----END PRIVATE KEY-----";
        let cases = [
            (String::new(), "the VAPID key text is empty"),
            ("  \n\n ".into(), "the VAPID key text is empty"),
            ("garbage".into(), "a line of the VAPID key is neither public=… nor private=…"),
            ("subject=mailto:a@b".into(), "a line of the VAPID key is neither public=… nor private=…"),
            (format!("public={public}"), "the VAPID key has no private= line"),
            (format!("private={private}"), "the VAPID key has no public= line"),
            (format!("public={public}\npublic={public}\nprivate={private}"), "public= is given twice"),
            (format!("public={public}\nprivate="), "a line of the VAPID key has no value"),
            (format!("public={public}\nprivate={}", &private[..42]), "private= is not 32 bytes"),
            (format!("public={public}\nprivate={private}AAAA"), "private= is not 32 bytes"),
            (format!("public={public}\nprivate=not+base64/"), "private= is not base64url"),
            (
                format!("public={}\nprivate={private}", &public[..86]),
                "public= is not a 65-byte uncompressed P-256 point",
            ),
            (format!("public=!!\nprivate={private}"), "public= is not base64url"),
            (format!("public={other}\nprivate={private}"), "public= is not the public key of private="),
            (format!("public={off_curve}\nprivate={private}"), "public= is not the public key of private="),
            (
                format!("public={public}\nprivate={}", url(&[0; 32])),
                "private= is not a valid P-256 private key",
            ),
            (
                format!("public={public}\nprivate={}", url(&[0xff; 32])),
                "private= is not a valid P-256 private key",
            ),
            ("{\"publicKey\": 1}".into(), r#"the JSON key is not {"publicKey": "…", "privateKey": "…"}"#),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----".into(), "the PEM text has no -----BEGIN PRIVATE KEY----- block"),
            ("-----BEGIN PRIVATE KEY-----\nMIGHAgEA".into(), "the PEM key has no END line"),
            ("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----".into(), "the PEM key is empty"),
            ("-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----".into(), "the PEM key is not valid base64"),
            (
                "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZSBnYXJiYWdl\n-----END PRIVATE KEY-----".into(),
                "the PEM key is not a P-256 private key with its public key included (as openssl writes it)",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----".into(),
                "the PEM key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END EC PRIVATE KEY-----".into(),
                "the PEM key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
            ),
            (p384.into(), "the PEM key is not a P-256 EC key"),
        ];
        for (text, why) in cases {
            assert_eq!(
                VapidKey::from_text(&text).map(|_| ()),
                Err(CryptoError::BadKey(why)),
                "{text:?}"
            );
        }

        // A PKCS#8 whose public key is another key's.
        let mut mismatched = VapidKey::from_text(NODE_PEM).unwrap().pkcs8;
        let len = mismatched.len();
        mismatched[len - 65..].copy_from_slice(&b64(&other));
        assert_eq!(
            VapidKey::from_pkcs8(mismatched).map(|_| ()),
            Err(CryptoError::BadKey(
                "the PEM key's public key does not belong to its private key"
            ))
        );

        // Every truncation and every one-byte change of a good key is an
        // error or a valid key, never a panic.
        let der = VapidKey::from_text(NODE_PEM).unwrap().pkcs8;
        for n in 0..der.len() {
            let mut body = String::new();
            base64::encode_into(&der[..n], &mut body);
            let pem = format!("{PEM_BEGIN}\n{body}\n{PEM_END}\n");
            assert!(VapidKey::from_text(&pem).is_err(), "{n}");
            let mut changed = der.clone();
            changed[n] ^= 0x80;
            let _ = VapidKey::from_pkcs8(changed);
        }
        let sec1 = &der[29..];
        for n in 0..sec1.len() {
            let mut body = String::new();
            base64::encode_into(&sec1[..n], &mut body);
            let pem =
                format!("-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n");
            assert!(VapidKey::from_text(&pem).is_err(), "{n}");
        }
    }

    #[test]
    fn sec1_wrapping_matches_pkcs8() {
        // The ECPrivateKey inside node's PKCS#8, wrapped again, is the same
        // key (without [0] parameters the bytes are the same too).
        let der = VapidKey::from_text(NODE_PEM).unwrap().pkcs8;
        assert_eq!(der.len(), 138);
        assert_eq!(wrap_sec1(&der[29..]), der);
        assert_eq!(P256_ALGORITHM, &PKCS8_P256_PREFIX[6..27]);
        let mut long = Vec::new();
        der_push(&mut long, 0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
