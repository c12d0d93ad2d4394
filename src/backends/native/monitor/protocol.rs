//! The monitor socket's frames (documented in the module docs of [`super`]): pure encoding and
//! decoding, shared by the monitor's poll loop and keel's async client.

use bytes::Bytes;

use super::ExitRecord;

/// Bytes before a frame's payload: kind, then the payload length (`u32` BE).
pub const HEADER_LEN: usize = 5;
/// The largest payload accepted; output is sent in chunks far below it.
pub const MAX_PAYLOAD: usize = 1 << 20;

pub const ATTACH: u8 = 0x01;
pub const WAIT: u8 = 0x02;
pub const REOPEN_LOG: u8 = 0x03;
pub const STDIN: u8 = 0x04;
pub const STDIN_CLOSE: u8 = 0x05;
pub const RESIZE: u8 = 0x06;
pub const STDOUT: u8 = 0x81;
pub const STDERR: u8 = 0x82;
pub const EXIT: u8 = 0x83;
pub const OK: u8 = 0x84;
pub const ERROR: u8 = 0x85;

const EXIT_LEN: usize = 4 + 8 + 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("frame payload of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("frame {kind:#04x} has a bad payload of {len} bytes")]
    BadPayload { kind: u8, len: usize },
    #[error("unexpected frame {0:#04x}")]
    Unexpected(u8),
}

/// One frame, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Attach { stdin: bool, stdout: bool, stderr: bool },
    Wait,
    ReopenLog,
    Stdin(Bytes),
    StdinClose,
    Resize { width: u16, height: u16 },
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(ExitRecord),
    Ok,
    Error(String),
}

/// Appends a frame header.
pub fn put_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    // Callers keep payloads under MAX_PAYLOAD, far below u32::MAX.
    out.extend_from_slice(&(len.min(u32::MAX as usize) as u32).to_be_bytes());
}

/// Appends a data frame (STDIN, STDOUT or STDERR) without building a [`Frame`].
pub fn put_data(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD) {
        put_header(out, kind, chunk.len());
        out.extend_from_slice(chunk);
    }
}

impl Frame {
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Attach { .. } => ATTACH,
            Frame::Wait => WAIT,
            Frame::ReopenLog => REOPEN_LOG,
            Frame::Stdin(_) => STDIN,
            Frame::StdinClose => STDIN_CLOSE,
            Frame::Resize { .. } => RESIZE,
            Frame::Stdout(_) => STDOUT,
            Frame::Stderr(_) => STDERR,
            Frame::Exit(_) => EXIT,
            Frame::Ok => OK,
            Frame::Error(_) => ERROR,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let kind = self.kind();
        match self {
            Frame::Attach { stdin, stdout, stderr } => {
                put_header(out, kind, 1);
                out.push(u8::from(*stdin) | u8::from(*stdout) << 1 | u8::from(*stderr) << 2);
            }
            Frame::Wait | Frame::ReopenLog | Frame::StdinClose | Frame::Ok => put_header(out, kind, 0),
            Frame::Stdin(d) | Frame::Stdout(d) | Frame::Stderr(d) => put_data(out, kind, d),
            Frame::Resize { width, height } => {
                put_header(out, kind, 4);
                out.extend_from_slice(&width.to_be_bytes());
                out.extend_from_slice(&height.to_be_bytes());
            }
            Frame::Exit(r) => {
                put_header(out, kind, EXIT_LEN);
                out.extend_from_slice(&r.exit_code.to_be_bytes());
                out.extend_from_slice(&r.finished_at_ns.to_be_bytes());
                out.push(u8::from(r.oom_killed));
            }
            Frame::Error(msg) => {
                let msg = &msg.as_bytes()[..msg.len().min(MAX_PAYLOAD)];
                put_header(out, kind, msg.len());
                out.extend_from_slice(msg);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes the first frame of `buf`: `Ok(None)` while it is incomplete, else the frame and
    /// the number of bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let kind = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        let Some(p) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let bad = || ProtocolError::BadPayload { kind, len };
        let empty = |f: Frame| if p.is_empty() { Ok(f) } else { Err(bad()) };
        let frame = match kind {
            ATTACH => match p {
                [b] if *b < 8 => Frame::Attach {
                    stdin: b & 1 != 0,
                    stdout: b & 2 != 0,
                    stderr: b & 4 != 0,
                },
                _ => return Err(bad()),
            },
            WAIT => empty(Frame::Wait)?,
            REOPEN_LOG => empty(Frame::ReopenLog)?,
            STDIN_CLOSE => empty(Frame::StdinClose)?,
            OK => empty(Frame::Ok)?,
            STDIN => Frame::Stdin(Bytes::copy_from_slice(p)),
            STDOUT => Frame::Stdout(Bytes::copy_from_slice(p)),
            STDERR => Frame::Stderr(Bytes::copy_from_slice(p)),
            RESIZE => match p {
                [w0, w1, h0, h1] => Frame::Resize {
                    width: u16::from_be_bytes([*w0, *w1]),
                    height: u16::from_be_bytes([*h0, *h1]),
                },
                _ => return Err(bad()),
            },
            EXIT => {
                if p.len() != EXIT_LEN {
                    return Err(bad());
                }
                let mut code = [0u8; 4];
                code.copy_from_slice(&p[..4]);
                let mut at = [0u8; 8];
                at.copy_from_slice(&p[4..12]);
                Frame::Exit(ExitRecord {
                    exit_code: i32::from_be_bytes(code),
                    finished_at_ns: i64::from_be_bytes(at),
                    oom_killed: match p[12] {
                        0 => false,
                        1 => true,
                        _ => return Err(bad()),
                    },
                })
            }
            ERROR => Frame::Error(String::from_utf8_lossy(p).into_owned()),
            other => return Err(ProtocolError::UnknownKind(other)),
        };
        Ok(Some((frame, HEADER_LEN + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(frame: Frame, bytes: &[u8]) {
        assert_eq!(frame.to_bytes(), bytes, "encoding {frame:?}");
        assert_eq!(Frame::decode(bytes), Ok(Some((frame, bytes.len()))));
    }

    #[test]
    fn golden_bytes() {
        golden(
            Frame::Attach {
                stdin: true,
                stdout: true,
                stderr: false,
            },
            &[0x01, 0, 0, 0, 1, 0b011],
        );
        golden(
            Frame::Attach {
                stdin: false,
                stdout: false,
                stderr: true,
            },
            &[0x01, 0, 0, 0, 1, 0b100],
        );
        golden(Frame::Wait, &[0x02, 0, 0, 0, 0]);
        golden(Frame::ReopenLog, &[0x03, 0, 0, 0, 0]);
        golden(
            Frame::Stdin(Bytes::from_static(b"hi\n")),
            &[0x04, 0, 0, 0, 3, b'h', b'i', b'\n'],
        );
        golden(Frame::StdinClose, &[0x05, 0, 0, 0, 0]);
        golden(
            Frame::Resize { width: 120, height: 40 },
            &[0x06, 0, 0, 0, 4, 0, 120, 0, 40],
        );
        golden(
            Frame::Stdout(Bytes::from_static(b"out")),
            &[0x81, 0, 0, 0, 3, b'o', b'u', b't'],
        );
        golden(Frame::Stderr(Bytes::from_static(b"e")), &[0x82, 0, 0, 0, 1, b'e']);
        golden(
            Frame::Exit(ExitRecord {
                exit_code: 137,
                finished_at_ns: 0x0102_0304_0506_0708,
                oom_killed: true,
            }),
            &[0x83, 0, 0, 0, 13, 0, 0, 0, 137, 1, 2, 3, 4, 5, 6, 7, 8, 1],
        );
        golden(
            Frame::Exit(ExitRecord {
                exit_code: -1,
                finished_at_ns: 1,
                oom_killed: false,
            }),
            &[0x83, 0, 0, 0, 13, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        );
        golden(Frame::Ok, &[0x84, 0, 0, 0, 0]);
        golden(Frame::Error("no".into()), &[0x85, 0, 0, 0, 2, b'n', b'o']);
    }

    #[test]
    fn incomplete_frames_wait_for_more() {
        let bytes = Frame::Stdout(Bytes::from_static(b"hello")).to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        // Two frames back to back: the first is decoded with its length.
        let mut two = bytes.clone();
        Frame::Wait.encode(&mut two);
        let (f, n) = Frame::decode(&two).unwrap().unwrap();
        assert_eq!(f, Frame::Stdout(Bytes::from_static(b"hello")));
        assert_eq!(Frame::decode(&two[n..]), Ok(Some((Frame::Wait, 5))));
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            Frame::decode(&[0x7f, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownKind(0x7f))
        );
        assert_eq!(
            Frame::decode(&[0x81, 0x00, 0x10, 0, 1]),
            Err(ProtocolError::TooLarge(0x0010_0001))
        );
        assert_eq!(
            Frame::decode(&[0x02, 0, 0, 0, 1, 0]),
            Err(ProtocolError::BadPayload { kind: 0x02, len: 1 })
        );
        assert_eq!(
            Frame::decode(&[0x06, 0, 0, 0, 2, 0, 1]),
            Err(ProtocolError::BadPayload { kind: 0x06, len: 2 })
        );
        assert_eq!(
            Frame::decode(&[0x01, 0, 0, 0, 1, 8]),
            Err(ProtocolError::BadPayload { kind: 0x01, len: 1 })
        );
    }

    #[test]
    fn big_data_is_split_into_frames_under_the_limit() {
        let data = vec![7u8; MAX_PAYLOAD + 10];
        let mut out = Vec::new();
        put_data(&mut out, STDOUT, &data);
        let (f1, n1) = Frame::decode(&out).unwrap().unwrap();
        let (f2, n2) = Frame::decode(&out[n1..]).unwrap().unwrap();
        assert_eq!(n1 + n2, out.len());
        match (f1, f2) {
            (Frame::Stdout(a), Frame::Stdout(b)) => {
                assert_eq!((a.len(), b.len()), (MAX_PAYLOAD, 10));
            }
            other => panic!("{other:?}"),
        }
    }
}
