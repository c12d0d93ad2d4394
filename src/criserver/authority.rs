//! CRI clients built before Kubernetes 1.26 (the kubelet up to 1.25, crictl up to 1.25) dial
//! the socket with grpc-go's default `:authority`, the socket path itself (`/run/x.sock`;
//! fixed upstream by kubernetes#112597, which sends `localhost`). The HTTP/2 library under tonic
//! rejects such a request as malformed (`RST_STREAM` PROTOCOL_ERROR, hyperium/h2#487), so every
//! call would fail.
//!
//! Each accepted connection is therefore relayed: bytes from the server pass unchanged; from the
//! client, every header block is decoded (HPACK keeps per-connection state, so all of them are),
//! an `:authority` that is not a valid authority becomes `localhost`, and the block is encoded
//! again for the server. Every other frame passes unchanged.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tracing::debug;

/// The client connection preface (`PRI * HTTP/2.0…`).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's initial value).
const MAX_FRAME: usize = 16_384;
/// Buffer of the in-process pipe to the gRPC server.
const PIPE_BYTES: usize = 64 * 1024;

/// Errors of a relayed connection (logged at debug: the client sees the connection close).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP/2 frame: {0}")]
    Frame(&'static str),
    #[error("decoding a header block: {0:?}")]
    Hpack(loona_hpack::decoder::DecoderError),
}

/// Relays `client` through the rewriter; the returned stream is what the gRPC server serves.
pub fn relay<S>(client: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        let (client_rd, mut client_wr) = tokio::io::split(client);
        let (mut server_rd, server_wr) = tokio::io::split(ours);
        let up = rewrite(BufReader::new(client_rd), server_wr);
        let down = async {
            let r = tokio::io::copy(&mut server_rd, &mut client_wr).await;
            let _ = client_wr.shutdown().await;
            r
        };
        let (up, down) = tokio::join!(up, down);
        if let Err(e) = up {
            debug!(error = %e, "CRI connection from the client ended");
        }
        if let Err(e) = down {
            debug!(error = %e, "CRI connection to the client ended");
        }
    });
    theirs
}

/// A header block being collected (HEADERS, then CONTINUATION until END_HEADERS).
struct Pending {
    stream: [u8; 4],
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// Copies client → server, re-encoding header blocks; at the end, closes the server side.
async fn rewrite<R, W>(mut rd: R, mut wr: W) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let r = rewrite_frames(&mut rd, &mut wr).await;
    let _ = wr.shutdown().await;
    r
}

async fn rewrite_frames<R, W>(rd: &mut R, wr: &mut W) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE_LEN];
    if read_or_eof(rd, &mut preface).await? {
        return Ok(());
    }
    wr.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    let mut pending: Option<Pending> = None;
    loop {
        let mut head = [0u8; FRAME_HEADER_LEN];
        if read_or_eof(rd, &mut head).await? {
            return Ok(());
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = [head[5], head[6], head[7], head[8]];
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await?;
        match kind {
            HEADERS => {
                if pending.is_some() {
                    return Err(Error::Frame("HEADERS inside a header block"));
                }
                let mut body = payload.as_slice();
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    let (&p, rest) = body.split_first().ok_or(Error::Frame("HEADERS padding"))?;
                    pad = usize::from(p);
                    body = rest;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let (p, rest) = body.split_at_checked(5).ok_or(Error::Frame("HEADERS priority"))?;
                    priority = Some([p[0], p[1], p[2], p[3], p[4]]);
                    body = rest;
                }
                let fragment = body
                    .get(..body.len().checked_sub(pad).ok_or(Error::Frame("HEADERS padding"))?)
                    .ok_or(Error::Frame("HEADERS padding"))?;
                pending = Some(Pending {
                    stream,
                    flags,
                    priority,
                    block: fragment.to_vec(),
                });
            }
            CONTINUATION => {
                let p = pending.as_mut().ok_or(Error::Frame("CONTINUATION without HEADERS"))?;
                if p.stream != stream {
                    return Err(Error::Frame("CONTINUATION on another stream"));
                }
                p.block.extend_from_slice(&payload);
            }
            _ => {
                if pending.is_some() {
                    return Err(Error::Frame("frame inside a header block"));
                }
                wr.write_all(&head).await?;
                wr.write_all(&payload).await?;
                continue;
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some(p) = pending.take() {
                let block = reencode(&mut decoder, &mut encoder, &p.block)?;
                write_header_block(wr, &p, &block).await?;
            }
        }
    }
}

/// Reads exactly `buf`; `true` at a clean EOF before the first byte.
async fn read_or_eof<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut [u8]) -> Result<bool, Error> {
    let mut got = 0;
    while got < buf.len() {
        let n = rd.read(&mut buf[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(true)
            } else {
                Err(Error::Frame("connection closed inside a frame"))
            };
        }
        got += n;
    }
    Ok(false)
}

/// The block with an invalid `:authority` replaced by `localhost`, encoded for the server.
fn reencode(
    decoder: &mut loona_hpack::Decoder<'_>,
    encoder: &mut loona_hpack::Encoder<'_>,
    block: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut headers = decoder.decode(block).map_err(Error::Hpack)?;
    for (name, value) in &mut headers {
        if name.as_slice() == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
            *value = b"localhost".to_vec();
        }
    }
    Ok(encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))))
}

/// One HEADERS frame (END_STREAM and priority as the client sent them) and CONTINUATION frames
/// for the rest.
async fn write_header_block<W: AsyncWrite + Unpin>(wr: &mut W, p: &Pending, block: &[u8]) -> Result<(), Error> {
    let prio_len = if p.priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(MAX_FRAME - prio_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = p.flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + prio_len + first.len());
    push_header(&mut frame, prio_len + first.len(), HEADERS, flags, p.stream);
    if let Some(prio) = &p.priority {
        frame.extend_from_slice(prio);
    }
    frame.extend_from_slice(first);
    wr.write_all(&frame).await?;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        frame.clear();
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        push_header(&mut frame, chunk.len(), CONTINUATION, flags, p.stream);
        frame.extend_from_slice(chunk);
        wr.write_all(&frame).await?;
    }
    Ok(())
}

fn push_header(frame: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: [u8; 4]) {
    // `len` ≤ MAX_FRAME, so three bytes hold it.
    frame.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    frame.extend_from_slice(&stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        push_header(&mut f, payload.len(), kind, flags, stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Splits the rewritten bytes into frames: (type, flags, stream, payload).
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    async fn run(input: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        rewrite_frames(&mut input.as_slice(), &mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn socket_path_authority_becomes_localhost_and_other_frames_pass() {
        let mut client = loona_hpack::Encoder::new();
        let req = |authority: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", b"/runtime.v1.RuntimeService/Version"),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
            ]
        };
        let block1 = client.encode(req(b"/run/keel/cri.sock"));
        // The second request reuses the client's dynamic table (the path as an index).
        let block2 = client.encode(req(b"/run/keel/cri.sock"));
        let block3 = client.encode(req(b"localhost:1234"));
        let (a, b) = block2.split_at(block2.len() / 2);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, END_HEADERS, 1, &block1));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        // Padded, with priority, split across a CONTINUATION.
        let mut padded = vec![2u8];
        padded.extend_from_slice(&[0, 0, 0, 0, 16]);
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        input.extend(frame(HEADERS, END_HEADERS, 5, &block3));
        let out = run(input).await;
        assert_eq!(&out[..24], PREFACE);
        let fs = frames(&out[24..]);
        let kinds: Vec<(u8, u8, u32)> = fs.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            vec![
                (0x4, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (0x0, END_STREAM, 1),
                (HEADERS, END_HEADERS | END_STREAM | PRIORITY, 3),
                (HEADERS, END_HEADERS, 5),
            ]
        );
        assert_eq!(fs[2].3, b"\0\0\0\0\0");
        assert_eq!(&fs[3].3[..5], &[0, 0, 0, 0, 16]);
        let mut server = loona_hpack::Decoder::new();
        let authority = |block: &[u8], server: &mut loona_hpack::Decoder| {
            let h = server.decode(block).unwrap();
            assert_eq!(h.len(), 5);
            h.into_iter().find(|(n, _)| n == b":authority").unwrap().1
        };
        assert_eq!(authority(&fs[1].3, &mut server), b"localhost");
        assert_eq!(authority(&fs[3].3[5..], &mut server), b"localhost");
        assert_eq!(authority(&fs[4].3, &mut server), b"localhost:1234");
    }

    #[tokio::test]
    async fn garbage_ends_the_connection_with_an_error() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b"x"));
        let mut out = Vec::new();
        assert!(rewrite_frames(&mut input.as_slice(), &mut out).await.is_err());
        let mut out = Vec::new();
        assert!(rewrite_frames(&mut &b""[..], &mut out).await.is_ok());
    }
}
