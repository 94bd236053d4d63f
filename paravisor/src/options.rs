//! The paravisor's command-line options (`pv.*` words), parsed once at boot.
#![forbid(unsafe_code)]

use crate::proxy::relay::{RelayError, RelayTable};
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
    /// `pv.relay=VTL0:HOST,...` and `pv.devices=ID,...`: what the proxy relays to the host
    /// (see `proxy::relay`). Empty by default.
    pub relay: RelayTable,
    /// `pv.regpage=off`: never map the x64 VTL register page, move VTL0's IP by
    /// SetVpRegisters as on a host without it (default `on`: used where the host offers it).
    pub register_page: bool,
}

/// Every `pv.*` key the paravisor reads; any other `pv.*` word is refused (a misspelt option
/// would otherwise be silently ignored). Words without the `pv.` prefix are the loader's.
pub const KEYS: [&str; 6] = [
    "pv.log",
    "pv.relay",
    "pv.devices",
    "pv.test",
    "pv.bench",
    "pv.regpage",
];

/// What [`BadOption::expected`] says of a `pv.*` key that is not in [`KEYS`].
pub const UNKNOWN_KEY: &str =
    "one of the options pv.log, pv.relay, pv.devices, pv.test, pv.bench, pv.regpage";

/// An option the paravisor does not understand (an unknown `pv.*` key, or a value it cannot
/// parse): refused, never guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadOption<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub expected: &'static str,
}

impl core::fmt::Display for BadOption<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.expected == UNKNOWN_KEY {
            write!(f, "unknown option {}: expected {}", self.key, self.expected)
        } else {
            write!(
                f,
                "bad option {}={:?}: expected {}",
                self.key, self.value, self.expected
            )
        }
    }
}

impl Options {
    pub fn parse(line: &str) -> Result<Options, BadOption<'_>> {
        for word in line.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            if key.starts_with("pv.") && !KEYS.contains(&key) {
                return Err(BadOption {
                    key,
                    value,
                    expected: UNKNOWN_KEY,
                });
            }
        }
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
        let register_page = match cmdline::get(line, "pv.regpage") {
            None | Some("on") => true,
            Some("off") => false,
            Some(value) => {
                return Err(BadOption {
                    key: "pv.regpage",
                    value,
                    expected: "on or off",
                })
            }
        };
        let relay_error = |key, value, e: RelayError| BadOption {
            key,
            value,
            expected: match (key, e) {
                (_, RelayError::TooMany) => "at most 16 entries",
                (_, RelayError::Duplicate) => "each VTL0 id once",
                ("pv.relay", _) => "VTL0 connection id:host connection id pairs, comma-separated",
                _ => "device ids, comma-separated",
            },
        };
        let mut relay = RelayTable::EMPTY;
        if let Some(value) = cmdline::get(line, "pv.relay") {
            relay = relay
                .with_connections(value)
                .map_err(|e| relay_error("pv.relay", value, e))?;
        }
        if let Some(value) = cmdline::get(line, "pv.devices") {
            relay = relay
                .with_devices(value)
                .map_err(|e| relay_error("pv.devices", value, e))?;
        }
        Ok(Options {
            test_failure,
            bench_hypercalls,
            log_level,
            relay,
            register_page,
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
        assert!(o.register_page);
        assert!(!Options::parse("pv.regpage=off").unwrap().register_page);
        assert!(Options::parse("pv.regpage=on").unwrap().register_page);
        assert_eq!(
            Options::parse("pv.regpage=no").unwrap_err().key,
            "pv.regpage"
        );
        let e = Options::parse("pv.test=explode").unwrap_err();
        assert_eq!((e.key, e.value), ("pv.test", "explode"));
        assert_eq!(Options::parse("pv.log=loud").unwrap_err().key, "pv.log");
        assert_eq!(
            Options::parse("pv.bench=2000").unwrap().bench_hypercalls,
            2000
        );
        assert_eq!(Options::parse("pv.bench=-1").unwrap_err().key, "pv.bench");
        let o = Options::parse("pv.relay=0x20:1,0x21:4 pv.devices=0x30").unwrap();
        assert_eq!(o.relay.connections(), &[(0x20, 1), (0x21, 4)]);
        assert_eq!(o.relay.devices(), &[0x30]);
        assert_eq!(Options::parse("").unwrap().relay, RelayTable::EMPTY);
        let e = Options::parse("pv.relay=0x20").unwrap_err();
        assert_eq!((e.key, e.value), ("pv.relay", "0x20"));
        assert_eq!(
            Options::parse("pv.devices=x").unwrap_err().key,
            "pv.devices"
        );
        assert_eq!(
            Options::parse("pv.relay=1:2,1:3").unwrap_err().expected,
            "each VTL0 id once"
        );
        // A misspelt key is refused by name, with the valid ones; the loader's words are not
        // the paravisor's to judge.
        let e = Options::parse("console=ttyS0 pv.logs=debug").unwrap_err();
        assert_eq!(
            (e.key, e.value, e.expected),
            ("pv.logs", "debug", UNKNOWN_KEY)
        );
        assert_eq!(
            e.to_string(),
            "unknown option pv.logs: expected one of the options pv.log, pv.relay, pv.devices, \
             pv.test, pv.bench, pv.regpage"
        );
        assert_eq!(Options::parse("pv.verbose").unwrap_err().key, "pv.verbose");
        assert!(Options::parse("console=ttyS0 quiet pvx.log=1").is_ok());
        assert_eq!(
            Options::parse("pv.log=loud").unwrap_err().to_string(),
            "bad option pv.log=\"loud\": expected off, error, warn, info, debug or trace"
        );
        for key in KEYS {
            assert!(UNKNOWN_KEY.contains(key), "{key} is in the message");
        }
    }
}
