//! Random bytes as a client's WebSocket stream into keel's server side: tungstenite's framing
//! (server role, as keel runs it) and keel's channel decoder (`src/streaming/websocket/codec.rs`,
//! compiled in directly like the SPDY codec for `spdy_frames`), for every codec, with and
//! without v5's close signal, plus the resize JSON stream. The first input byte picks the codec
//! and, with its top bit, whether the rest is raw stream bytes or a list of messages to frame
//! (masked, as a client must) so the decoder is reached quickly.
//!
//! Checked: no panic; an undecodable message ends the connection as the server does; every
//! decoded data message re-encodes to the same channel and bytes. The sessions around the
//! decoder (back-pressure, close handling) are exercised with random input by the unit test
//! `random_client_bytes_neither_panic_nor_hang`.

#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::Message;

#[allow(dead_code)]
#[path = "../../src/streaming/websocket/codec.rs"]
mod codec;

/// What codec.rs takes from keel: the terminal size (`genericruntime::streams::TermSize`).
mod genericruntime {
    pub mod streams {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct TermSize {
            pub width: u16,
            pub height: u16,
        }
    }
}

use codec::{decode, encode, Codec, Inbound, ResizeDecoder};

/// The resize channel.
const RESIZE: u8 = 4;

/// The client's bytes to read; what the server writes (pongs, close replies) is discarded.
struct Pipe<'a> {
    input: &'a [u8],
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let bytes = if sel & 0x80 != 0 {
        frame_messages(rest)
    } else {
        rest.to_vec()
    };
    let codec = if sel & 1 == 0 { Codec::Binary } else { Codec::Base64 };
    let v5 = codec == Codec::Binary && sel & 2 != 0;
    // Smaller than keel's 32 MiB so oversize handling is reachable with small inputs.
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let mut ws = WebSocket::from_raw_socket(Pipe { input: &bytes }, Role::Server, Some(config));
    let mut sizes = ResizeDecoder::default();
    loop {
        let payload = match ws.read() {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Text(t)) => t.into(),
            Ok(_) => continue,
            // EOF, a framing error or an oversize message: the server's read loop ends.
            Err(_) => break,
        };
        match decode(codec, v5, payload) {
            Ok(Inbound::Data { channel: RESIZE, data }) => {
                // After an error the server stops taking resizes; start over to keep exploring.
                if sizes.push(&data).is_err() {
                    sizes = ResizeDecoder::default();
                }
            }
            Ok(Inbound::Data { channel, data }) => {
                // Base64 channel characters above 0x7f become two UTF-8 bytes in Go as here,
                // so only channels whose character is ASCII round-trip.
                if codec == Codec::Binary || b'0'.wrapping_add(channel) < 0x80 {
                    let again = decode(codec, false, encode(codec, channel, &data).into_data());
                    assert!(
                        matches!(&again, Ok(Inbound::Data { channel: c, data: d }) if *c == channel && *d == data),
                        "round trip of channel {channel}: {again:?}"
                    );
                }
            }
            Ok(Inbound::Close { .. } | Inbound::Skip(_)) => {}
            // A malformed close signal drops the connection.
            Err(_) => break,
        }
    }
});

/// `[len, kind, payload…]*` into masked client frames: `kind` picks binary, text, ping or close.
fn frame_messages(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [len, kind, rest @ ..] = input {
        let n = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        out.push(0x80 | [0x2, 0x1, 0x9, 0x8][usize::from(kind & 3)]);
        if n < 126 {
            out.push(0x80 | n as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        input = tail;
    }
    out
}
