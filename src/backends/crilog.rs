//! The CRI container log line, as containerd writes it and the kubelet parses it
//! (`<RFC3339Nano> <stdout|stderr> <F|P> <text>\n`, kubelet-behavior.md §1.14): shared by the
//! backends that write container logs themselves (the simulator, the native monitor).

use std::io::Write;

use jiff::Timestamp;

/// containerd's `max_container_log_line_size`: longer lines are split into `P` fragments of
/// this many bytes.
pub const MAX_LINE: usize = 16 * 1024;

/// Appends one log line: `partial` gives the `P` tag (no newline in the output yet), else `F`.
/// The timestamp is RFC 3339 with trailing zeros of the fraction trimmed (Go's RFC3339Nano).
pub fn push_line(out: &mut Vec<u8>, ts: Timestamp, stream: &str, partial: bool, text: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{ts} {stream} {} ", if partial { "P" } else { "F" });
    out.extend_from_slice(text);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_lines() {
        let ts: Timestamp = "2016-10-06T00:17:09.669794202Z".parse().unwrap();
        let mut out = Vec::new();
        push_line(&mut out, ts, "stdout", false, b"hello");
        push_line(&mut out, ts, "stderr", true, b"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2016-10-06T00:17:09.669794202Z stdout F hello\n2016-10-06T00:17:09.669794202Z stderr P \n"
        );
    }
}
