//! Standard base64 (RFC 4648 §4, with padding), as Engine.IO uses for binary
//! packets over HTTP long-polling.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the padded base64 encoding of `input` to `out`.
///
/// ```
/// let mut s = String::from("b");
/// signalbox::base64::encode_into(&[1, 2, 3, 4], &mut s);
/// assert_eq!(s, "bAQIDBA==");
/// ```
pub fn encode_into(input: &[u8], out: &mut String) {
    out.reserve(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
}

/// Appends the URL-safe, unpadded base64 encoding of `input` (RFC 4648 §5)
/// to `out`, for tokens and identifiers.
///
/// ```
/// let mut s = String::new();
/// signalbox::base64::encode_url_into(&[0xfb, 0xff], &mut s);
/// assert_eq!(s, "-_8");
/// ```
pub fn encode_url_into(input: &[u8], out: &mut String) {
    let start = out.len();
    encode_into(input, out);
    let encoded: String = out[start..]
        .chars()
        .filter(|&c| c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    out.truncate(start);
    out.push_str(&encoded);
}

/// Decodes URL-safe base64 without padding.
///
/// ```
/// assert_eq!(signalbox::base64::decode_url("-_8").unwrap(), vec![0xfb, 0xff]);
/// assert!(signalbox::base64::decode_url("+/8").is_err());
/// ```
pub fn decode_url(input: &str) -> Result<Vec<u8>, InvalidBase64> {
    if input.contains(['+', '/', '=']) {
        return Err(InvalidBase64);
    }
    decode(&input.replace('-', "+").replace('_', "/"))
}

/// Decodes standard base64. Padding is optional; whitespace and any other
/// character outside the alphabet is an error.
///
/// ```
/// assert_eq!(signalbox::base64::decode("AQIDBA==").unwrap(), vec![1, 2, 3, 4]);
/// assert!(signalbox::base64::decode("A?==").is_err());
/// ```
pub fn decode(input: &str) -> Result<Vec<u8>, InvalidBase64> {
    let bytes = input.as_bytes();
    let trimmed = match bytes {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => bytes,
    };
    if trimmed.len() % 4 == 1 || (trimmed.len() != bytes.len() && bytes.len() % 4 != 0) {
        return Err(InvalidBase64);
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(sextet(c)?) << (18 - 6 * i);
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..chunk.len() - 1]);
    }
    Ok(out)
}

fn sextet(c: u8) -> Result<u8, InvalidBase64> {
    match c {
        b'A'..=b'Z' => Ok(c - b'A'),
        b'a'..=b'z' => Ok(c - b'a' + 26),
        b'0'..=b'9' => Ok(c - b'0' + 52),
        b'+' => Ok(62),
        b'/' => Ok(63),
        _ => Err(InvalidBase64),
    }
}

/// The input was not valid base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBase64;

impl std::fmt::Display for InvalidBase64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid base64")
    }
}

impl std::error::Error for InvalidBase64 {}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(input: &[u8]) -> String {
        let mut s = String::new();
        encode_into(input, &mut s);
        s
    }

    #[test]
    fn rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            assert_eq!(decode(&encode(&all[..len])).unwrap(), &all[..len]);
        }
    }

    #[test]
    fn accepts_missing_padding() {
        assert_eq!(decode("Zg").unwrap(), b"f");
        assert_eq!(decode("Zm8").unwrap(), b"fo");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["Z", "Zg=", "Z===", "Zm9v\n", "Zm 9v", "Zg==Zg==", "é"] {
            assert_eq!(decode(bad), Err(InvalidBase64), "{bad:?}");
        }
    }
}
