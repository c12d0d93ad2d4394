//! SPDY/3 frames as moby/spdystream reads and writes them (kubelet-api-protocols.md §3.6.1):
//! an incremental decoder over a `BytesMut` and an encoder. Header blocks stay compressed here;
//! `headers` owns the zlib contexts, which must see every block of a direction in order.
//!
//! This file depends only on `bytes` and `thiserror` so the fuzz crate can include it directly.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The SPDY version on the wire (the upgrade token says "SPDY/3.1", the framing is SPDY/3).
pub const VERSION: u16 = 3;
/// Largest frame payload: the 24-bit length field's maximum (16 MiB − 1), so a peer can never
/// make the decoder buffer more than one such frame plus its 8-byte header.
pub const MAX_FRAME_LEN: usize = 0xFF_FFFF;
/// Bytes before a frame's payload.
pub const HEADER_LEN: usize = 8;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// RST_STREAM status codes (the ones keel sends).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    /// What Go sends when it closes a connection or rejects a port-forward stream.
    pub const CANCEL: u32 = 5;
}

/// One SPDY/3 frame. `block` fields are compressed header blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        assoc_id: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value) per entry.
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

/// A frame that spdystream would refuse: each is fatal to the connection, as in Go.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("unknown control frame type {0}")]
    UnknownType(u16),
    #[error("{kind} frame: invalid length {len}")]
    Length { kind: &'static str, len: usize },
    #[error("{kind} frame: stream id 0")]
    ZeroStreamId { kind: &'static str },
    #[error("{kind} frame: invalid flags {flags:#04x}")]
    Flags { kind: &'static str, flags: u8 },
    #[error("RST_STREAM with status 0")]
    ZeroRstStatus,
    #[error("PING with id 0")]
    ZeroPingId,
    #[error("{kind} frame: payload of {len} bytes exceeds the maximum frame length")]
    TooLarge { kind: &'static str, len: usize },
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed (nothing is
/// consumed then), `Ok(Some(frame))` with the frame's bytes removed from `buf`.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    let control = word & 0x8000_0000 != 0;
    let (version, kind) = ((word >> 16) as u16 & 0x7fff, word as u16);
    // Check what the header alone can tell before waiting for a payload that may never come.
    if control {
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        if !(TYPE_SYN_STREAM..=TYPE_WINDOW_UPDATE).contains(&kind) || kind == 5 {
            return Err(FrameError::UnknownType(kind));
        }
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let mut p = buf.split_to(len).freeze();
    if !control {
        return Ok(Some(Frame::Data {
            stream_id: word & STREAM_ID_MASK,
            flags,
            data: p,
        }));
    }
    let frame = match kind {
        TYPE_SYN_STREAM => {
            need_at_least("SYN_STREAM", len, 10)?;
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            let assoc_id = p.get_u32() & STREAM_ID_MASK;
            let priority = p.get_u8() >> 5;
            let slot = p.get_u8();
            nonzero_id("SYN_STREAM", stream_id)?;
            Frame::SynStream {
                stream_id,
                assoc_id,
                priority,
                slot,
                flags,
                block: p,
            }
        }
        TYPE_SYN_REPLY => {
            need_at_least("SYN_REPLY", len, 4)?;
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            nonzero_id("SYN_REPLY", stream_id)?;
            Frame::SynReply {
                stream_id,
                flags,
                block: p,
            }
        }
        TYPE_RST_STREAM => {
            need_exactly("RST_STREAM", len, 8)?;
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            let status = p.get_u32();
            nonzero_id("RST_STREAM", stream_id)?;
            if status == 0 {
                return Err(FrameError::ZeroRstStatus);
            }
            Frame::RstStream { stream_id, status }
        }
        TYPE_SETTINGS => {
            need_at_least("SETTINGS", len, 4)?;
            let count = p.get_u32() as usize;
            if count.checked_mul(8) != Some(len - 4) {
                return Err(FrameError::Length { kind: "SETTINGS", len });
            }
            let entries = (0..count)
                .map(|_| {
                    let w = p.get_u32();
                    ((w >> 24) as u8, w & 0x00ff_ffff, p.get_u32())
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            need_exactly("PING", len, 4)?;
            no_flags("PING", flags)?;
            let id = p.get_u32();
            if id == 0 {
                return Err(FrameError::ZeroPingId);
            }
            Frame::Ping { id }
        }
        TYPE_GOAWAY => {
            need_exactly("GOAWAY", len, 8)?;
            no_flags("GOAWAY", flags)?;
            Frame::GoAway {
                last_good_stream_id: p.get_u32() & STREAM_ID_MASK,
                status: p.get_u32(),
            }
        }
        TYPE_HEADERS => {
            need_at_least("HEADERS", len, 4)?;
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            nonzero_id("HEADERS", stream_id)?;
            Frame::Headers {
                stream_id,
                flags,
                block: p,
            }
        }
        TYPE_WINDOW_UPDATE => {
            need_exactly("WINDOW_UPDATE", len, 8)?;
            no_flags("WINDOW_UPDATE", flags)?;
            Frame::WindowUpdate {
                stream_id: p.get_u32() & STREAM_ID_MASK,
                delta: p.get_u32() & STREAM_ID_MASK,
            }
        }
        // Unreachable: the type range was checked above; kept as an error rather than a panic.
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(Some(frame))
}

fn need_at_least(kind: &'static str, len: usize, min: usize) -> Result<(), FrameError> {
    if len < min {
        return Err(FrameError::Length { kind, len });
    }
    Ok(())
}

fn need_exactly(kind: &'static str, len: usize, want: usize) -> Result<(), FrameError> {
    if len != want {
        return Err(FrameError::Length { kind, len });
    }
    Ok(())
}

fn nonzero_id(kind: &'static str, id: u32) -> Result<(), FrameError> {
    if id == 0 {
        return Err(FrameError::ZeroStreamId { kind });
    }
    Ok(())
}

fn no_flags(kind: &'static str, flags: u8) -> Result<(), FrameError> {
    if flags != 0 {
        return Err(FrameError::Flags { kind, flags });
    }
    Ok(())
}

impl Frame {
    /// Appends the frame's bytes to `out`. Fails only when the payload does not fit the 24-bit
    /// length (callers split DATA into chunks of at most `MAX_FRAME_LEN`).
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            Frame::Data { stream_id, flags, data } => {
                check_len("DATA", data.len())?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                put_flags_len(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                assoc_id,
                priority,
                slot,
                flags,
                block,
            } => {
                let len = check_len("SYN_STREAM", 10 + block.len())?;
                control(out, TYPE_SYN_STREAM, *flags, len);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(assoc_id & STREAM_ID_MASK);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(*slot);
                out.put_slice(block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                block,
            } => {
                let len = check_len("SYN_REPLY", 4 + block.len())?;
                control(out, TYPE_SYN_REPLY, *flags, len);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_slice(block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                let len = check_len("SETTINGS", 4 + 8 * entries.len())?;
                control(out, TYPE_SETTINGS, *flags, len);
                out.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    out.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                    out.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control(out, TYPE_PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::Headers {
                stream_id,
                flags,
                block,
            } => {
                let len = check_len("HEADERS", 4 + block.len())?;
                control(out, TYPE_HEADERS, *flags, len);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_slice(block);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(delta & STREAM_ID_MASK);
            }
        }
        Ok(())
    }

    /// The frame's bytes (tests and small frames).
    pub fn to_bytes(&self) -> Result<Bytes, FrameError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

fn check_len(kind: &'static str, len: usize) -> Result<usize, FrameError> {
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { kind, len });
    }
    Ok(len)
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u32(0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind));
    put_flags_len(out, flags, len);
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    // `len` is at most MAX_FRAME_LEN (checked by callers), so it fits the 24 bits.
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> BytesMut {
        BytesMut::from(&hex::decode(s.replace(' ', "")).unwrap()[..])
    }

    fn one(s: &str) -> Frame {
        let mut b = hex(s);
        let f = decode(&mut b).unwrap().unwrap();
        assert!(b.is_empty(), "frame {s} left bytes");
        // Every captured frame re-encodes to the same bytes.
        assert_eq!(f.to_bytes().unwrap(), hex(s).freeze());
        f
    }

    #[test]
    fn captured_client_frames() {
        let f =
            one("80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff");
        let Frame::SynStream {
            stream_id,
            assoc_id,
            flags,
            block,
            ..
        } = f
        else {
            panic!("not a SYN_STREAM: {f:?}")
        };
        assert_eq!((stream_id, assoc_id, flags), (1, 0, 0));
        assert_eq!(
            block,
            hex("78f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff").freeze()
        );
        assert_eq!(
            one("000000030000000570696e670a"),
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"ping\n")
            }
        );
        assert_eq!(
            one("0000000301000000"),
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::new()
            }
        );
        assert_eq!(
            one("80030003000000080000000300000005"),
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL
            }
        );
        assert_eq!(
            one("80030007000000080000000000000000"),
            Frame::GoAway {
                last_good_stream_id: 0,
                status: 0
            }
        );
    }

    #[test]
    fn captured_server_frames() {
        assert_eq!(
            one("800300020000000c00000003026100000000ffff"),
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                block: hex("026100000000ffff").freeze()
            }
        );
        assert_eq!(
            one("80030007000000080000000700000000"),
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0
            }
        );
        let f = one("00000005000000096f75743a70696e670a");
        assert!(matches!(f, Frame::Data { stream_id: 5, data, .. } if &data[..] == b"out:ping\n"));
    }

    #[test]
    fn other_control_frames_round_trip() {
        for f in [
            Frame::Ping { id: 1 },
            Frame::Settings {
                flags: 1,
                entries: vec![(1, 4, 100), (0, 7, 65536)],
            },
            Frame::WindowUpdate {
                stream_id: 5,
                delta: 1000,
            },
            Frame::Headers {
                stream_id: 9,
                flags: FLAG_FIN,
                block: Bytes::from_static(b"x"),
            },
            Frame::SynStream {
                stream_id: 11,
                assoc_id: 0,
                priority: 7,
                slot: 0,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                block: Bytes::new(),
            },
        ] {
            let mut b = BytesMut::from(&f.to_bytes().unwrap()[..]);
            assert_eq!(decode(&mut b).unwrap().unwrap(), f);
        }
        assert_eq!(
            Frame::Ping { id: 1 }.to_bytes().unwrap(),
            hex("800300060000000400000001").freeze()
        );
    }

    #[test]
    fn partial_input_needs_more_and_consumes_nothing() {
        let full = hex("80030002000000140000000178f9e3c6a7c26260606000000000ffff");
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut b), Ok(None), "cut at {cut}");
            assert_eq!(b.len(), cut);
        }
        // Two frames back to back come out one at a time.
        let mut b = hex("0000000301000000 800300060000000400000001");
        assert!(matches!(decode(&mut b), Ok(Some(Frame::Data { .. }))));
        assert_eq!(decode(&mut b), Ok(Some(Frame::Ping { id: 1 })));
        assert_eq!(decode(&mut b), Ok(None));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: &[(&str, FrameError)] = &[
            ("80020001 00000000", FrameError::Version(2)),
            ("8003000a 00000000", FrameError::UnknownType(10)),
            ("80030005 00000000", FrameError::UnknownType(5)),
            ("80030000 00000000", FrameError::UnknownType(0)),
            (
                "80030001 00000004 00000001",
                FrameError::Length {
                    kind: "SYN_STREAM",
                    len: 4,
                },
            ),
            (
                "80030001 0000000a 00000000 00000000 0000",
                FrameError::ZeroStreamId { kind: "SYN_STREAM" },
            ),
            ("80030003 00000008 00000001 00000000", FrameError::ZeroRstStatus),
            (
                "80030006 01000004 00000001",
                FrameError::Flags { kind: "PING", flags: 1 },
            ),
            ("80030006 00000004 00000000", FrameError::ZeroPingId),
            (
                "80030007 0000000c 00000001 00000000 00000000",
                FrameError::Length {
                    kind: "GOAWAY",
                    len: 12,
                },
            ),
            (
                "80030004 00000008 00000002 00000000",
                FrameError::Length {
                    kind: "SETTINGS",
                    len: 8,
                },
            ),
            (
                "80030009 00000004 00000001",
                FrameError::Length {
                    kind: "WINDOW_UPDATE",
                    len: 4,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(decode(&mut hex(input)).as_ref(), Err(want), "{input}");
        }
        // A huge SETTINGS count must not overflow or allocate.
        assert!(decode(&mut hex("80030004 00000004 ffffffff")).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5000 {
            let len = rng.random_range(0..256);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && bytes.len() >= 8 {
                // Mostly-valid headers: control bit, version 3, a known type, a small length.
                bytes[0] = 0x80;
                bytes[1] = 3;
                bytes[2] = 0;
                bytes[3] = rng.random_range(0..12);
                bytes[5] = 0;
                bytes[6] = 0;
            }
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(f)) = decode(&mut buf) {
                // Whatever decodes re-encodes and decodes to the same frame.
                let again = decode(&mut BytesMut::from(&f.to_bytes().unwrap()[..]))
                    .unwrap()
                    .unwrap();
                assert_eq!(again, f);
            }
        }
    }

    #[test]
    fn oversize_payloads_are_refused_on_encode() {
        let big = Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from(vec![0u8; MAX_FRAME_LEN + 1]),
        };
        assert!(matches!(
            big.encode(&mut BytesMut::new()),
            Err(FrameError::TooLarge { .. })
        ));
        // The largest length the field can say decodes once the bytes are there.
        let mut b = BytesMut::from(&[0u8, 0, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert_eq!(decode(&mut b), Ok(None));
        b.resize(HEADER_LEN + MAX_FRAME_LEN, 0);
        assert!(matches!(decode(&mut b), Ok(Some(Frame::Data { data, .. })) if data.len() == MAX_FRAME_LEN));
    }
}
