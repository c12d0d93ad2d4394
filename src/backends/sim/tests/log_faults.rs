//! A container log the simulator cannot write: its warning is rate-limited.

use std::io::Write;

use super::*;

/// The fmt subscriber's output, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Lines about `path`'s failed writes: (warnings, all of them). Every line must carry a
    /// count, a power of two at warn level and any other number at debug level.
    fn failures(&self, path: &str) -> (usize, usize) {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("writing container log failed") && l.contains(path))
            .collect();
        for l in &lines {
            let count: u64 = l
                .rsplit(" count=")
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("no count: {l}"));
            assert_eq!(l.contains("WARN"), count.is_power_of_two(), "{l}");
        }
        (lines.iter().filter(|l| l.contains("WARN")).count(), lines.len())
    }
}

/// A container printing every 200 ms into a log that cannot be written warns once, then at
/// the 2nd, 4th, 8th... failure (debug in between), not every 200 ms; once a write works
/// again, the next failure warns at once.
#[tokio::test(start_paused = true)]
async fn an_unwritable_log_warns_rate_limited() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (rt, dir) = rt(cfg_with_image(), Clock::real());
    let pod = run_pod(&rt, &dir, "unwritable-log").await;
    let id = start(&rt, &pod, "c", "while true; do echo tick; sleep 0.2; done").await;
    let path = status(&rt, &id).await.log_path;
    // A directory where the log file was: every append fails, whoever runs the test.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (warnings, failures) = out.failures(&path);
    // About 100 failed writes; warnings at 1, 2, 4, ..., 64 (the process-wide table may have
    // started afresh once meanwhile, when other tests filled it).
    assert!(failures >= 64, "{failures} failures logged");
    assert!(
        warnings <= 2 * (failures.ilog2() as usize + 1),
        "{warnings} warnings for {failures} failures"
    );

    // Writable again: lines reach the log and the count starts over.
    std::fs::remove_dir(&path).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(read_log(&path).iter().any(|l| l.2 == "tick"));
    let seen = out.0.lock().unwrap().len();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()[seen..]).into_owned();
    let first = text
        .lines()
        .find(|l| l.contains("writing container log failed") && l.contains(&path))
        .unwrap_or_default();
    assert!(
        first.contains("WARN") && first.ends_with(" count=1"),
        "after a recovery: {text}"
    );
    stop(&rt, &id, 0).await;
}
