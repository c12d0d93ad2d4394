//! Container log files in the CRI format containerd writes:
//! `<RFC3339Nano> <stdout|stderr> <F|P> <text>\n` (kubelet-behavior.md §1.14).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use jiff::Timestamp;

use super::script::Stream;
use crate::backends::crilog;

pub use crate::backends::crilog::MAX_LINE;

/// Renders `data` written to `stream` at `ts` as CRI log lines: every complete line is `F`,
/// a trailing fragment without newline (and every 16 KiB piece of a long line) is `P`.
pub fn format_lines(ts: Timestamp, stream: Stream, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 48);
    let mut rest = data;
    while !rest.is_empty() {
        let (line, complete, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if line.is_empty() {
            crilog::push_line(&mut out, ts, stream.as_str(), false, b"");
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            crilog::push_line(&mut out, ts, stream.as_str(), !(last && complete), chunk);
        }
        rest = next;
    }
    out
}

/// Appends bytes to a log file, creating it and its directories.
pub fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = open_append(path)?;
    f.write_all(bytes)
}

/// Creates the log file (and its directories) if missing: what containerd's (re)open does.
pub fn ensure(path: &Path) -> std::io::Result<()> {
    open_append(path).map(|_| ())
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Timestamp of the last line of a log file, if it has one (used after a restart to write only
/// what the container produced while keel was down).
pub fn last_timestamp(path: &Path) -> Option<Timestamp> {
    const TAIL: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().rev().find(|l| !l.is_empty())?;
    line.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        "2016-10-06T00:17:09.669794202Z".parse().unwrap()
    }

    #[test]
    fn lines_full_and_partial() {
        let s = |d: &[u8], st| String::from_utf8(format_lines(ts(), st, d)).unwrap();
        assert_eq!(
            s(b"hello world\n", Stream::Stdout),
            "2016-10-06T00:17:09.669794202Z stdout F hello world\n"
        );
        assert_eq!(
            s(b"a\nb", Stream::Stderr),
            "2016-10-06T00:17:09.669794202Z stderr F a\n2016-10-06T00:17:09.669794202Z stderr P b\n"
        );
        assert_eq!(s(b"\n", Stream::Stdout), "2016-10-06T00:17:09.669794202Z stdout F \n");
        let long = vec![b'x'; MAX_LINE + 5];
        let mut data = long.clone();
        data.push(b'\n');
        let out = s(&data, Stream::Stdout);
        let tags: Vec<&str> = out.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, vec!["P", "F"]);
    }

    #[test]
    fn timestamps_trim_trailing_zeros_like_rfc3339nano() {
        let t: Timestamp = "2024-01-02T03:04:05.120Z".parse().unwrap();
        let line = String::from_utf8(format_lines(t, Stream::Stdout, b"x\n")).unwrap();
        assert!(line.starts_with("2024-01-02T03:04:05.12Z stdout F x"), "{line}");
    }

    #[test]
    fn append_creates_dirs_and_last_timestamp_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ns_pod_uid/c/0.log");
        assert_eq!(last_timestamp(&p), None);
        ensure(&p).unwrap();
        assert_eq!(last_timestamp(&p), None);
        append(&p, &format_lines(ts(), Stream::Stdout, b"one\ntwo\n")).unwrap();
        assert_eq!(last_timestamp(&p), Some(ts()));
    }
}
