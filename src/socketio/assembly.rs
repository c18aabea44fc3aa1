//! Binary attachments: a packet that announces N of them is complete when
//! the N binary messages after it arrived. No I/O.

use std::fmt;

use super::packet::{self, Packet};
use crate::engineio::Data;

/// A binary packet waiting for its attachments.
pub(crate) struct Partial {
    pub(crate) packet: Packet,
    pub(crate) needed: usize,
    pub(crate) attachments: Vec<Vec<u8>>,
    pub(crate) bytes: usize,
}

/// Why a message broke the protocol; the session is closed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssemblyError {
    /// A text message the packet codec refused, with its reason.
    Decode(packet::DecodeError),
    /// A text packet while a binary one awaits its attachments.
    TextWhileAwaiting,
    /// A binary message no packet announced.
    UnexpectedBinary,
    /// Attachments past `max_attachment_bytes`.
    TooLarge,
}

impl fmt::Display for AssemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssemblyError::Decode(error) => error.fmt(f),
            AssemblyError::TextWhileAwaiting => {
                f.write_str("text packet while awaiting attachments")
            }
            AssemblyError::UnexpectedBinary => {
                f.write_str("binary message without a packet awaiting it")
            }
            AssemblyError::TooLarge => f.write_str("attachments too large"),
        }
    }
}

/// A complete packet and its attachments.
pub(crate) type Assembled = (Packet, Vec<Vec<u8>>);

/// Takes one Engine.IO message of a session: a packet is complete when it
/// needs no attachments or its last one arrived; until then it waits in
/// `partial`.
pub(crate) fn assemble(
    partial: &mut Option<Box<Partial>>,
    data: Data,
    max_attachment_bytes: usize,
) -> Result<Option<Assembled>, AssemblyError> {
    match data {
        Data::Text(text) => {
            if partial.is_some() {
                return Err(AssemblyError::TextWhileAwaiting);
            }
            let packet = packet::decode(&text).map_err(AssemblyError::Decode)?;
            let needed = match &packet {
                Packet::Event { attachments, .. } | Packet::Ack { attachments, .. } => *attachments,
                _ => 0,
            };
            if needed == 0 {
                return Ok(Some((packet, Vec::new())));
            }
            *partial = Some(Box::new(Partial {
                packet,
                needed,
                attachments: Vec::with_capacity(needed),
                bytes: 0,
            }));
            Ok(None)
        }
        Data::Binary(bytes) => {
            let waiting = partial.as_mut().ok_or(AssemblyError::UnexpectedBinary)?;
            if waiting.bytes + bytes.len() > max_attachment_bytes {
                return Err(AssemblyError::TooLarge);
            }
            waiting.bytes += bytes.len();
            waiting.attachments.push(bytes);
            if waiting.attachments.len() < waiting.needed {
                return Ok(None);
            }
            Ok(partial.take().map(|done| (done.packet, done.attachments)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Data {
        Data::Text(s.to_owned())
    }

    #[test]
    fn a_binary_event_completes_with_its_last_attachment() {
        let mut partial = None;
        let header = r#"52-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert!(matches!(assemble(&mut partial, text(header), 10), Ok(None)));
        let first = assemble(&mut partial, Data::Binary(vec![1, 2]), 10);
        assert!(matches!(first, Ok(None)));
        let Ok(Some((Packet::Event { event, .. }, attachments))) =
            assemble(&mut partial, Data::Binary(vec![3]), 10)
        else {
            panic!("the event is not complete");
        };
        assert_eq!(
            (event.as_str(), attachments),
            ("m", vec![vec![1, 2], vec![3]])
        );
        assert!(partial.is_none());
        assert!(matches!(
            assemble(&mut partial, text(r#"2["plain"]"#), 10),
            Ok(Some((Packet::Event { attachments: 0, .. }, _)))
        ));
    }

    #[test]
    fn reassembly_refuses_what_breaks_the_protocol() {
        let header = r#"51-["m",{"_placeholder":true,"num":0}]"#;
        let mut partial = None;
        let stray = assemble(&mut partial, Data::Binary(vec![0]), 10);
        assert_eq!(stray.err(), Some(AssemblyError::UnexpectedBinary));
        assert!(matches!(assemble(&mut partial, text(header), 10), Ok(None)));
        let early = assemble(&mut partial, text(r#"2["x"]"#), 10);
        assert_eq!(early.err(), Some(AssemblyError::TextWhileAwaiting));
        let big = assemble(&mut partial, Data::Binary(vec![0; 11]), 10);
        assert_eq!(big.err(), Some(AssemblyError::TooLarge));
        let mut partial = None;
        let garbage = assemble(&mut partial, text("9"), 10);
        assert!(matches!(garbage, Err(AssemblyError::Decode(_))));
    }
}
