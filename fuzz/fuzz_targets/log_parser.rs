//! Fuzzes the container log line parsers (CRI and Docker JSON), the timestamp parser and
//! formatter, the output writer with options taken from the input, the tail-offset search and
//! the `/containerLogs` query decoder: none may panic, and their results must be consistent.
#![no_main]

use std::io::Cursor;

use keel::genericruntime::logs::{
    find_tail_line_start_index, format_timestamp, parse_rfc3339, LogFormat, LogOptions, LogWriter, StreamSelect,
    Written,
};
use keel::streaming::logs::{parse_query, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, body) = data.split_first().map(|(f, b)| (*f, b)).unwrap_or((0, data));
    let opts = LogOptions {
        tail: -1,
        bytes: if flags & 1 != 0 { i64::from(flags >> 2) } else { -1 },
        since: None,
        follow: false,
        timestamp: flags & 2 != 0,
        stream: match flags % 3 {
            0 => StreamSelect::All,
            1 => StreamSelect::Stdout,
            _ => StreamSelect::Stderr,
        },
    };
    let mut writer = LogWriter::new(&opts);
    let mut written: i64 = 0;
    let format = body.split_inclusive(|&b| b == b'\n').next().and_then(|l| LogFormat::detect(l).ok());
    for line in body.split_inclusive(|&b| b == b'\n') {
        for f in [LogFormat::Cri, LogFormat::DockerJson] {
            if let Ok(msg) = f.parse(line) {
                let text = format_timestamp(msg.timestamp, msg.offset);
                let (t, o) = parse_rfc3339(text.as_bytes()).expect("formatted timestamps parse back");
                assert_eq!((t, o), (msg.timestamp, msg.offset));
            }
        }
        if let Some(f) = format {
            if let Ok(msg) = f.parse(line) {
                if let Ok(Written::Chunk { chunk, .. }) = writer.write(&msg) {
                    written += chunk.data.len() as i64;
                }
            }
        }
    }
    if opts.bytes >= 0 {
        assert!(written <= opts.bytes, "limitBytes exceeded");
    }
    let n = i64::from(flags) - 128;
    let start = find_tail_line_start_index(&mut Cursor::new(body), n).expect("in-memory reads do not fail");
    assert!(start as usize <= body.len());
    if let Ok(q) = std::str::from_utf8(body) {
        if let Ok(o) = parse_query(q) {
            let _ = validate(&o);
        }
    }
});
