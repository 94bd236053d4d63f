//! The paravisor's command-line options (`pv.*` words), parsed once at boot.

use boot::cmdline;

/// A deliberate failure, for testing that failures are reported as failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestFailure {
    /// `pv.test=panic`: a Rust panic.
    Panic,
    /// `pv.test=fault`: a CPU exception (a load from an unmapped address).
    Fault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub test_failure: Option<TestFailure>,
    /// `pv.bench=N`: after bring-up, the boot VP issues N more GetVpRegisters (for
    /// `cargo xtask bench`, which times runs with different N).
    pub bench_hypercalls: u32,
    pub log_level: log::LevelFilter,
}

/// An option with a value the paravisor does not understand: refused, never guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadOption<'a> {
    pub key: &'static str,
    pub value: &'a str,
    pub expected: &'static str,
}

impl Options {
    pub fn parse(line: &str) -> Result<Options, BadOption<'_>> {
        let test_failure = match cmdline::get(line, "pv.test") {
            None => None,
            Some("panic") => Some(TestFailure::Panic),
            Some("fault") => Some(TestFailure::Fault),
            Some(value) => {
                return Err(BadOption {
                    key: "pv.test",
                    value,
                    expected: "panic or fault",
                })
            }
        };
        let bench_hypercalls = match cmdline::get(line, "pv.bench") {
            None => 0,
            Some(value) => value.parse().map_err(|_| BadOption {
                key: "pv.bench",
                value,
                expected: "a number of hypercalls",
            })?,
        };
        let log_level = match cmdline::get(line, "pv.log") {
            None => log::LevelFilter::Info,
            Some(value) => value.parse().map_err(|_| BadOption {
                key: "pv.log",
                value,
                expected: "off, error, warn, info, debug or trace",
            })?,
        };
        Ok(Options {
            test_failure,
            bench_hypercalls,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let o = Options::parse("console=x pv.test=fault pv.log=debug").unwrap();
        assert_eq!(o.test_failure, Some(TestFailure::Fault));
        assert_eq!(o.log_level, log::LevelFilter::Debug);
        let o = Options::parse("").unwrap();
        assert_eq!(o.test_failure, None);
        assert_eq!(o.log_level, log::LevelFilter::Info);
        let e = Options::parse("pv.test=explode").unwrap_err();
        assert_eq!((e.key, e.value), ("pv.test", "explode"));
        assert_eq!(Options::parse("pv.log=loud").unwrap_err().key, "pv.log");
        assert_eq!(
            Options::parse("pv.bench=2000").unwrap().bench_hypercalls,
            2000
        );
        assert_eq!(Options::parse("pv.bench=-1").unwrap_err().key, "pv.bench");
    }
}
