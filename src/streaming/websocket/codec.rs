//! The channel framing of the Kubernetes WebSocket protocols (kubelet-api-protocols.md §3.7,
//! §3.8): one channel byte before the payload in binary protocols, `'0'+channel` and standard
//! base64 in text for the base64 ones, and v5's `[255, channel]` close signal. Also the resize
//! channel's stream of JSON terminal sizes.

use crate::genericruntime::streams::TermSize;
use base64::Engine as _;
use bytes::Bytes;

// tungstenite's message, through the parent module: the fuzz crate, which compiles this file on
// its own, supplies it from plain `tungstenite` (keel only depends on tokio-tungstenite).
use super::Message;

/// v5's close signal: `[STREAM_CLOSE, channel]` half-closes `channel` (KEP-4006 `StreamClose`).
pub const STREAM_CLOSE: u8 = 255;

/// Largest resize JSON kept while waiting for the rest of a value: a terminal size is ~30
/// bytes, so more than this is a client sending garbage.
const MAX_RESIZE_BUFFER: usize = 4096;

/// A client message or resize value that cannot be decoded. (This file depends on nothing else
/// of the websocket module, so the fuzz crate compiles it on its own.)
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("close signal of {len} bytes (must be 2)")]
    BadCloseSignal { len: usize },
    #[error("decoding a terminal size")]
    Resize {
        #[source]
        source: serde_json::Error,
    },
    #[error("terminal size field {value} is not a 16-bit number")]
    ResizeValue { value: String },
    #[error("{len} bytes of resize data without a complete value")]
    ResizeTooLong { len: usize },
}

/// How a negotiated protocol frames its channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages, the first byte is the channel.
    Binary,
    /// Text messages, the first character is `'0'+channel`, the rest standard base64.
    Base64,
}

/// A decoded client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Payload for `channel` (may be empty).
    Data { channel: u8, data: Bytes },
    /// v5 half-close of `channel`.
    Close { channel: u8 },
    /// Nothing to deliver (an empty message, or undecodable base64: Go logs and drops it).
    Skip(&'static str),
}

/// Encodes `data` for `channel`: a binary message for binary protocols, a text one for base64.
pub fn encode(codec: Codec, channel: u8, data: &[u8]) -> Message {
    match codec {
        Codec::Binary => {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
        Codec::Base64 => {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            // Go writes `string('0'+num)`: channels 0–4 (and port-forward's small channel
            // numbers) stay ASCII; `char::from` keeps larger ones valid UTF-8 as Go's rune does.
            text.push(char::from(b'0'.wrapping_add(channel)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::Text(text.into())
        }
    }
}

/// Decodes one client message's payload. `v5` enables the close signal (binary v5 only: in the
/// other protocols byte 255 is just an unknown channel). Text and binary frames are treated alike,
/// as Go's `websocket.Message.Receive` into `[]byte` does; the codec comes from the protocol.
pub fn decode(codec: Codec, v5: bool, payload: Bytes) -> Result<Inbound, CodecError> {
    let Some(&first) = payload.first() else {
        return Ok(Inbound::Skip("empty message"));
    };
    match codec {
        Codec::Binary if v5 && first == STREAM_CLOSE => {
            if payload.len() != 2 {
                return Err(CodecError::BadCloseSignal { len: payload.len() });
            }
            Ok(Inbound::Close { channel: payload[1] })
        }
        Codec::Binary => Ok(Inbound::Data {
            channel: first,
            data: payload.slice(1..),
        }),
        Codec::Base64 => {
            let channel = first.wrapping_sub(b'0');
            // Go's decoder skips CR and LF inside the input; the base64 crate does not.
            let body: Vec<u8> = payload[1..]
                .iter()
                .copied()
                .filter(|b| *b != b'\r' && *b != b'\n')
                .collect();
            match base64::engine::general_purpose::STANDARD.decode(&body) {
                Ok(data) => Ok(Inbound::Data {
                    channel,
                    data: data.into(),
                }),
                Err(_) => Ok(Inbound::Skip("invalid base64")),
            }
        }
    }
}

/// Turns the resize channel's bytes into terminal sizes. The client writes a stream of JSON
/// objects (`{"Width":80,"Height":24}`) that may be split or joined across messages, as Go's
/// `json.Decoder` on the stream accepts.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    /// Adds bytes and returns the sizes completed by them. An error means the stream is
    /// unusable (Go stops reading resizes then).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TermSize>, CodecError> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<serde_json::Value>();
        loop {
            match values.next() {
                None => {
                    consumed = values.byte_offset();
                    break;
                }
                Some(Ok(v)) => {
                    consumed = values.byte_offset();
                    sizes.push(term_size(&v)?);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(CodecError::Resize { source: e }),
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > MAX_RESIZE_BUFFER {
            return Err(CodecError::ResizeTooLong { len: self.buf.len() });
        }
        Ok(sizes)
    }
}

/// Go decodes into `TerminalSize{Width, Height uint16}`: keys match case-insensitively, unknown
/// keys are ignored, missing ones stay 0, `null` leaves the zero value, anything else fails.
fn term_size(v: &serde_json::Value) -> Result<TermSize, CodecError> {
    let mut size = TermSize::default();
    let obj = match v {
        serde_json::Value::Null => return Ok(size),
        serde_json::Value::Object(o) => o,
        other => {
            return Err(CodecError::ResizeValue {
                value: other.to_string(),
            })
        }
    };
    for (k, val) in obj {
        let field = if k.eq_ignore_ascii_case("width") {
            &mut size.width
        } else if k.eq_ignore_ascii_case("height") {
            &mut size.height
        } else {
            continue;
        };
        if val.is_null() {
            continue;
        }
        *field = val
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| CodecError::ResizeValue { value: val.to_string() })?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(m: Message) -> Vec<u8> {
        match m {
            Message::Binary(b) => b.to_vec(),
            other => panic!("not binary: {other:?}"),
        }
    }

    fn text(m: Message) -> String {
        match m {
            Message::Text(t) => t.to_string(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn binary_framing_matches_the_capture() {
        // websocket-capture.txt, v4.channel.k8s.io: `01` (connected), `01 "out:ping!"`.
        assert_eq!(bin(encode(Codec::Binary, 1, b"")), [1]);
        assert_eq!(bin(encode(Codec::Binary, 1, b"out:ping!")), b"\x01out:ping!");
        assert_eq!(
            decode(Codec::Binary, false, Bytes::from_static(b"\x00ping!")).unwrap(),
            Inbound::Data {
                channel: 0,
                data: Bytes::from_static(b"ping!")
            }
        );
    }

    #[test]
    fn base64_framing_matches_the_capture() {
        // v4.base64.channel.k8s.io: client `0cGluZyE=`, server `1`, `1b3V0OnBpbmch`.
        assert_eq!(text(encode(Codec::Base64, 1, b"")), "1");
        assert_eq!(text(encode(Codec::Base64, 1, b"out:ping!")), "1b3V0OnBpbmch");
        assert_eq!(
            decode(Codec::Base64, false, Bytes::from_static(b"0cGluZyE=")).unwrap(),
            Inbound::Data {
                channel: 0,
                data: Bytes::from_static(b"ping!")
            }
        );
        let round = text(encode(Codec::Base64, 3, &[0, 255, 10, 13]));
        assert_eq!(
            decode(Codec::Base64, false, Bytes::from(round.into_bytes())).unwrap(),
            Inbound::Data {
                channel: 3,
                data: Bytes::from_static(&[0, 255, 10, 13])
            }
        );
        // Go's decoder skips line breaks.
        assert_eq!(
            decode(Codec::Base64, false, Bytes::from_static(b"0cGlu\r\nZyE=")).unwrap(),
            Inbound::Data {
                channel: 0,
                data: Bytes::from_static(b"ping!")
            }
        );
    }

    #[test]
    fn invalid_base64_and_empty_messages_are_skipped() {
        assert!(matches!(
            decode(Codec::Base64, false, Bytes::from_static(b"0***")).unwrap(),
            Inbound::Skip(_)
        ));
        assert!(matches!(
            decode(Codec::Base64, false, Bytes::from_static(b"0cGluZyE")).unwrap(),
            Inbound::Skip(_)
        ));
        assert!(matches!(
            decode(Codec::Binary, true, Bytes::new()).unwrap(),
            Inbound::Skip(_)
        ));
        // A lone channel character is an empty payload, not an error.
        assert_eq!(
            decode(Codec::Base64, false, Bytes::from_static(b"0")).unwrap(),
            Inbound::Data {
                channel: 0,
                data: Bytes::new()
            }
        );
    }

    #[test]
    fn close_signal_is_v5_binary_only() {
        assert_eq!(
            decode(Codec::Binary, true, Bytes::from_static(&[255, 0])).unwrap(),
            Inbound::Close { channel: 0 }
        );
        for bad in [&[255][..], &[255, 0, 0][..]] {
            assert!(matches!(
                decode(Codec::Binary, true, Bytes::copy_from_slice(bad)),
                Err(CodecError::BadCloseSignal { .. })
            ));
        }
        // Pre-v5: 255 is an (unknown) channel number.
        assert_eq!(
            decode(Codec::Binary, false, Bytes::from_static(&[255, 0])).unwrap(),
            Inbound::Data {
                channel: 255,
                data: Bytes::from_static(&[0])
            }
        );
    }

    #[test]
    fn resize_stream_across_messages() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(br#"{"Width":80,"#).unwrap(), []);
        assert_eq!(
            d.push(br#""Height":24}{"width":100,"height":30,"x":1} null"#).unwrap(),
            [
                TermSize { width: 80, height: 24 },
                TermSize { width: 100, height: 30 },
                TermSize::default()
            ]
        );
        assert!(d.push(br#"{"Width":70000}"#).is_err());
        assert!(ResizeDecoder::default().push(b"[1]").is_err());
        assert!(ResizeDecoder::default().push(b"}").is_err());
        let mut unterminated = br#"{"Width":""#.to_vec();
        unterminated.resize(MAX_RESIZE_BUFFER + 16, b'a');
        assert!(matches!(
            ResizeDecoder::default().push(&unterminated),
            Err(CodecError::ResizeTooLong { .. })
        ));
    }
}
