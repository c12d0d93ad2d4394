//! Random bytes as a client's WebSocket stream into keel's server side: tungstenite's framing
//! plus keel's channel decoding, for exec/attach (every subprotocol), port-forward channels and
//! the SPDY tunnel adapter. The first byte picks the session and, with its top bit, whether the
//! rest is raw stream bytes or a list of messages to frame (masked, as a client must) so the
//! channel decoder is reached quickly. A session that neither finishes nor fails is a bug: the
//! clock is paused, so only a real hang reaches the one-minute limit.

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::genericruntime::streams::{BoxedIo, ProcessIo};
use keel::streaming::remotecommand::{DialFn, Kind, Outcome, RunFn, StreamOptions};
use keel::streaming::websocket::{
    decode, port_forward_session, remotecommand_session, tunnel_session, Codec, ResizeDecoder,
    PORT_FORWARD_PROTOCOLS, REMOTE_COMMAND_PROTOCOLS,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Longer than any linger in the server (2 s): reaching it means the session hung.
const HANG: Duration = Duration::from_secs(60);

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    rt.block_on(one(sel, rest));
});

async fn one(sel: u8, input: &[u8]) {
    // The pure decoders first, on the whole input.
    for (codec, v5) in [(Codec::Binary, false), (Codec::Binary, true), (Codec::Base64, false)] {
        let _ = decode(codec, v5, Bytes::copy_from_slice(input));
    }
    let _ = ResizeDecoder::default().push(input);

    let bytes = if sel & 0x80 != 0 { frame_messages(input) } else { input.to_vec() };
    let (client, server) = tokio::io::duplex(64 * 1024);
    let protocol_index = usize::from((sel >> 2) & 7);
    let session = async move {
        match sel & 3 {
            0 | 1 => {
                let protocol = REMOTE_COMMAND_PROTOCOLS[protocol_index % REMOTE_COMMAND_PROTOCOLS.len()];
                let tty = sel & 0x20 != 0;
                let opts = StreamOptions {
                    stdin: true,
                    stdout: true,
                    stderr: sel & 0x40 != 0,
                    tty,
                };
                remotecommand_session(server, protocol, opts, Kind::Exec, echo_process()).await
            }
            2 => {
                let protocol = PORT_FORWARD_PROTOCOLS[protocol_index % PORT_FORWARD_PROTOCOLS.len()];
                port_forward_session(server, protocol, vec![80, 443, 8080], echo_dialer()).await
            }
            _ => tunnel_session(server, echo).await,
        }
    };
    let client = async move {
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async move {
            let _ = wr.write_all(&bytes).await;
            let _ = wr.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
        };
        tokio::join!(write, read);
    };
    if tokio::time::timeout(HANG, async { tokio::join!(session, client) }).await.is_err() {
        panic!("websocket session hung");
    }
}

/// `[len, kind, payload…]*` into masked client frames: `kind` picks binary, text, ping or close.
fn frame_messages(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [len, kind, rest @ ..] = input {
        let n = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        let opcode = match kind & 3 {
            0 => 0x2,
            1 => 0x1,
            2 => 0x9,
            _ => 0x8,
        };
        out.push(0x80 | opcode);
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

/// Echoes stdin to stdout (and stderr) until EOF, draining resizes; exits 7.
fn echo_process() -> RunFn {
    Box::new(|mut io: ProcessIo| {
        Box::pin(async move {
            if let Some(mut resize) = io.resize.take() {
                tokio::spawn(async move { while resize.recv().await.is_some() {} });
            }
            if let Some(mut stdin) = io.stdin.take() {
                while let Some(chunk) = stdin.recv().await {
                    if let Some(out) = &io.stdout {
                        let _ = out.send(chunk.clone()).await;
                    }
                    if let Some(err) = &io.stderr {
                        let _ = err.send(chunk).await;
                    }
                }
            }
            Outcome::Exited(7)
        })
    })
}

/// Every port echoes until EOF; port 443 refuses.
fn echo_dialer() -> DialFn {
    Arc::new(|port: u16| {
        Box::pin(async move {
            if port == 443 {
                return Err(keel::genericruntime::seam::RuntimeError::new(
                    "PortForward",
                    keel::genericruntime::seam::Code::Unavailable,
                    "connection refused",
                ));
            }
            let (ours, pod) = tokio::io::duplex(4096);
            tokio::spawn(echo(pod));
            Ok(Box::new(ours) as BoxedIo)
        })
    })
}

async fn echo(io: DuplexStream) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let _ = tokio::io::copy(&mut rd, &mut wr).await;
    let _ = wr.shutdown().await;
}
