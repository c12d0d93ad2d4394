//! Feeds arbitrary bytes to the SPDY frame decoder as a connection's inbound stream, and every
//! header block it yields to one header decompressor (as a session does); the raw bytes also go
//! to the uncompressed header block parser. Nothing may panic, loop forever or grow unbounded.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[path = "../../src/streaming/spdy/frame.rs"]
#[allow(dead_code)]
mod frame;
#[path = "../../src/streaming/spdy/headers.rs"]
#[allow(dead_code)]
mod headers;

use frame::Frame;

fuzz_target!(|data: &[u8]| {
    let _ = headers::Headers::from_raw(data);
    // Split the input at a data-chosen point so partial frames are exercised too.
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut buf = BytesMut::from(&data[..cut]);
    let mut rest = &data[cut..];
    let mut decompressor = headers::HeaderDecompressor::new();
    loop {
        match frame::decode(&mut buf) {
            Ok(Some(f)) => {
                let block = match &f {
                    Frame::SynStream { block, .. } | Frame::SynReply { block, .. } | Frame::Headers { block, .. } => {
                        Some(block.clone())
                    }
                    _ => None,
                };
                if let Some(block) = block {
                    if decompressor.decompress(&block).is_err() {
                        // A session drops the connection here: the zlib stream is broken.
                        return;
                    }
                }
                let bytes = f.to_bytes().expect("a decoded frame re-encodes");
                let again = frame::decode(&mut BytesMut::from(&bytes[..]))
                    .expect("re-encoded frame decodes")
                    .expect("re-encoded frame is complete");
                assert_eq!(again, f);
            }
            Ok(None) if rest.is_empty() => return,
            Ok(None) => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            Err(_) => return,
        }
    }
});
