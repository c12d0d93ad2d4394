//! A minimal SPDY *client* for the unit tests, built from the codec: it plays client-go's part
//! (odd stream ids, its own header compression context) over an in-memory pipe.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use super::frame::{self, Frame, FLAG_FIN};
use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};

pub struct TestClient {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    buf: BytesMut,
    compressor: HeaderCompressor,
    decompressor: HeaderDecompressor,
    next_id: u32,
    next_ping: u32,
}

/// Everything the server sent, by stream.
#[derive(Debug, Default)]
pub struct Transcript {
    pub data: BTreeMap<u32, Vec<u8>>,
    pub fin: Vec<u32>,
    pub reset: Vec<(u32, u32)>,
    pub replies: Vec<u32>,
    pub pings: Vec<u32>,
    pub goaway: Option<u32>,
    /// Every frame in order, for ordering checks.
    pub frames: Vec<Frame>,
}

impl Transcript {
    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or_default()).into_owned()
    }

    /// Index of the FIN of stream `id` in `frames`.
    pub fn fin_at(&self, id: u32) -> Option<usize> {
        self.frames.iter().position(
            |f| matches!(f, Frame::Data { stream_id, flags, .. } if *stream_id == id && flags & FLAG_FIN != 0),
        )
    }

    pub fn record(&mut self, f: Frame) {
        match &f {
            Frame::Data { stream_id, flags, data } => {
                self.data.entry(*stream_id).or_default().extend_from_slice(data);
                if flags & FLAG_FIN != 0 {
                    self.fin.push(*stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => self.reset.push((*stream_id, *status)),
            Frame::SynReply { stream_id, .. } => self.replies.push(*stream_id),
            Frame::Ping { id } => self.pings.push(*id),
            Frame::GoAway {
                last_good_stream_id, ..
            } => self.goaway = Some(*last_good_stream_id),
            _ => {}
        }
        self.frames.push(f);
    }
}

impl TestClient {
    pub fn new(io: DuplexStream) -> Self {
        let (rd, wr) = tokio::io::split(io);
        Self {
            rd,
            wr,
            buf: BytesMut::new(),
            compressor: HeaderCompressor::new().unwrap(),
            decompressor: HeaderDecompressor::new(),
            next_id: 1,
            next_ping: 1,
        }
    }

    pub async fn send(&mut self, f: Frame) {
        let b = f.to_bytes().unwrap();
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        // The server may already have closed; tests check that through what they read.
        let _ = self.wr.write_all(b).await;
        let _ = self.wr.flush().await;
    }

    pub async fn send_syn_stream(&mut self, id: u32, headers: &[(&str, &str)], flags: u8) {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.push(n, v);
        }
        let block = self.compressor.compress(&h).unwrap();
        self.send(Frame::SynStream {
            stream_id: id,
            assoc_id: 0,
            priority: 0,
            slot: 0,
            flags,
            block: block.into(),
        })
        .await;
    }

    /// Opens the next stream (FIN when `fin`), without waiting for the reply.
    pub async fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        self.send_syn_stream(id, headers, if fin { FLAG_FIN } else { 0 }).await;
        id
    }

    /// Opens a stream and waits for its SYN_REPLY, as client-go does before the next one.
    /// Other frames that arrive meanwhile are recorded in `t`.
    pub async fn open_and_wait(&mut self, headers: &[(&str, &str)], t: &mut Transcript) -> u32 {
        let id = self.open(headers, false).await;
        loop {
            match self.next().await {
                Some(Frame::SynReply { stream_id, .. }) if stream_id == id => {
                    t.replies.push(id);
                    return id;
                }
                Some(f) => t.record(f),
                None => panic!("connection closed before the reply to stream {id}"),
            }
        }
    }

    pub async fn data(&mut self, id: u32, b: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id: id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: Bytes::copy_from_slice(b),
        })
        .await;
    }

    pub async fn ping(&mut self) -> u32 {
        let id = self.next_ping;
        self.next_ping += 2;
        self.send(Frame::Ping { id }).await;
        id
    }

    /// The next frame from the server (header blocks checked to inflate), `None` at EOF.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf).unwrap() {
                if let Frame::SynReply { block, .. } = &f {
                    assert!(self.decompressor.decompress(block).unwrap().is_empty());
                }
                return Some(f);
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the server closes, recording everything into `t`.
    pub async fn drain(&mut self, t: &mut Transcript) {
        while let Some(f) = self.next().await {
            t.record(f);
        }
    }
}
