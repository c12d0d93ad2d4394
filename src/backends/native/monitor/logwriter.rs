//! The container's CRI log file, written the way containerd's CRI plugin writes it
//! (`pkg/cri/io/logger.go`, native-runtime.md §3.4): output is cut into lines; a line is written
//! with `F` once its newline arrives (a `\r\n` ending loses the `\r`), a line longer than
//! [`MAX_LINE`] is written in `P` pieces of that size, and what is left without a newline when
//! the stream ends is written as `P`. Each line is stamped when it is written.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use jiff::Timestamp;

use crate::backends::crilog::{push_line, MAX_LINE};

/// The container's output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Cuts one stream into log lines: what is left of the current line waits for its newline.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds output; `emit(partial, text)` is called for every line (or `P` piece) completed.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(bool, &[u8])) {
        while !data.is_empty() {
            let (piece, newline) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            data = &data[piece.len() + usize::from(newline)..];
            self.pending.extend_from_slice(piece);
            while self.pending.len() > MAX_LINE {
                emit(true, &self.pending[..MAX_LINE]);
                self.pending.drain(..MAX_LINE);
            }
            if newline {
                if self.pending.last() == Some(&b'\r') {
                    self.pending.pop();
                }
                emit(false, &self.pending);
                self.pending.clear();
            }
        }
    }

    /// The stream ended: what is left is a partial line.
    pub fn finish(&mut self, mut emit: impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(true, &self.pending);
            self.pending.clear();
        }
    }
}

/// The CRI log file of one container (or none: output is discarded).
#[derive(Debug)]
pub struct LogWriter {
    path: Option<PathBuf>,
    file: Option<File>,
    split: [LineSplitter; 2],
    buf: Vec<u8>,
}

fn open(path: &std::path::Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)
}

impl LogWriter {
    /// Opens (creates) the log file, as containerd does when it creates the container.
    pub fn open(path: Option<PathBuf>) -> std::io::Result<Self> {
        let file = path.as_deref().map(open).transpose()?;
        Ok(Self {
            path,
            file,
            split: Default::default(),
            buf: Vec::new(),
        })
    }

    /// CRI ReopenContainerLog: the kubelet renamed the file; later lines go to a new one.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(path) = &self.path {
            let f = open(path)?;
            self.file = Some(f);
        }
        Ok(())
    }

    /// Writes the lines `data` completes.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: Timestamp) -> std::io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let buf = &mut self.buf;
        self.split[stream as usize].feed(data, |partial, text| {
            push_line(buf, now, stream.as_str(), partial, text)
        });
        self.flush()
    }

    /// The stream ended: its unfinished line is written as `P`.
    pub fn finish(&mut self, stream: Stream, now: Timestamp) -> std::io::Result<()> {
        let buf = &mut self.buf;
        self.split[stream as usize].finish(|partial, text| push_line(buf, now, stream.as_str(), partial, text));
        self.flush()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = match &mut self.file {
            Some(f) => f.write_all(&self.buf),
            None => Ok(()),
        };
        // A failed write drops those lines (like containerd); the next ones are tried again.
        self.buf.clear();
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]], finish: bool) -> Vec<(bool, Vec<u8>)> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |p, t| out.push((p, t.to_vec())));
        }
        if finish {
            s.finish(|p, t| out.push((p, t.to_vec())));
        }
        out
    }

    fn f(t: &str) -> (bool, Vec<u8>) {
        (false, t.as_bytes().to_vec())
    }
    fn p(t: &str) -> (bool, Vec<u8>) {
        (true, t.as_bytes().to_vec())
    }

    #[test]
    fn lines_wait_for_their_newline_across_reads() {
        assert_eq!(
            lines(&[b"hel", b"lo\nwor", b"ld\n"], false),
            vec![f("hello"), f("world")]
        );
        assert_eq!(lines(&[b"a\n\nb\n"], false), vec![f("a"), f(""), f("b")]);
        assert_eq!(lines(&[b"no newline"], false), vec![]);
        assert_eq!(lines(&[b"no newline"], true), vec![p("no newline")]);
        assert_eq!(lines(&[b"x\n"], true), vec![f("x")], "nothing left at the end");
    }

    #[test]
    fn crlf_endings_lose_the_cr() {
        assert_eq!(
            lines(&[b"tty line\r\n", b"cr\rinside\n"], false),
            vec![f("tty line"), f("cr\rinside")]
        );
        assert_eq!(lines(&[b"split\r", b"\n"], false), vec![f("split")]);
    }

    #[test]
    fn long_lines_are_cut_into_max_line_pieces() {
        let exact = vec![b'x'; MAX_LINE];
        let mut data = exact.clone();
        data.push(b'\n');
        assert_eq!(
            lines(&[&data], false),
            vec![(false, exact.clone())],
            "exactly MAX_LINE is one F line"
        );

        let mut long = vec![b'y'; 2 * MAX_LINE + 3];
        long.push(b'\n');
        let out = lines(&[&long[..100], &long[100..]], false);
        let shape: Vec<(bool, usize)> = out.iter().map(|(p, t)| (*p, t.len())).collect();
        assert_eq!(shape, vec![(true, MAX_LINE), (true, MAX_LINE), (false, 3)]);
    }

    #[test]
    fn writer_stamps_lines_and_reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod/c/0.log");
        let mut w = LogWriter::open(Some(path.clone())).unwrap();
        let ts: Timestamp = "2024-01-02T03:04:05.5Z".parse().unwrap();
        w.write(Stream::Stdout, b"one\ntw", ts).unwrap();
        w.write(Stream::Stderr, b"err\n", ts).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "2024-01-02T03:04:05.5Z stdout F one\n2024-01-02T03:04:05.5Z stderr F err\n"
        );
        let rotated = dir.path().join("pod/c/0.log.20240102-030405");
        std::fs::rename(&path, &rotated).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"o\n", ts).unwrap();
        w.write(Stream::Stdout, b"tail", ts).unwrap();
        w.finish(Stream::Stdout, ts).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "2024-01-02T03:04:05.5Z stdout F two\n2024-01-02T03:04:05.5Z stdout P tail\n"
        );
        assert_eq!(std::fs::read_to_string(&rotated).unwrap().lines().count(), 2);
    }

    #[test]
    fn no_path_discards() {
        let mut w = LogWriter::open(None).unwrap();
        w.write(Stream::Stdout, b"x\n", Timestamp::UNIX_EPOCH).unwrap();
        w.reopen().unwrap();
        w.finish(Stream::Stdout, Timestamp::UNIX_EPOCH).unwrap();
    }
}
