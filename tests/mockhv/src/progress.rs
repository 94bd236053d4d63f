//! Progress lines for long steps, shared by xtask and the test harness it runs: on stderr (a
//! command's report on stdout stays its own), stamped with the seconds since xtask started, so
//! a person sees what is running instead of silence, on one clock across both processes.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The variable xtask passes its start in (milliseconds since the Unix epoch) to the harness.
pub const STARTED_ENV: &str = "XTASK_STARTED_MS";

/// A progress line: `[  12.3s] what`.
pub fn progress(what: std::fmt::Arguments<'_>) {
    eprintln!("[{:>6.1}s] {what}", clock_starts().elapsed().as_secs_f64());
}

/// When xtask started: [`STARTED_ENV`] if the process was given it (the harness, run by
/// xtask), else this process's first call (xtask itself).
pub fn clock_starts() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(|| {
        let now = Instant::now();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        std::env::var(STARTED_ENV)
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis)
            .and_then(|started| since_epoch.checked_sub(started))
            .and_then(|ago| now.checked_sub(ago))
            .unwrap_or(now)
    })
}

/// The value of [`STARTED_ENV`] for a process this one starts: its own clock's start.
pub fn started_env_value() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch
        .saturating_sub(clock_starts().elapsed())
        .as_millis()
        .to_string()
}
