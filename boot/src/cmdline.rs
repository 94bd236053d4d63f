//! Kernel command line options: whitespace-separated `key=value` words.
//!
//! The firmware reads its own options (`pv.*`) with [`get`]; unknown words are ignored because
//! loaders add their own.

/// The value of the first `key=value` word, or `Some("")` for a bare `key`.
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|word| {
        let (k, v) = word.split_once('=').unwrap_or((word, ""));
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::get;

    #[test]
    fn finds_values() {
        let c = "console=ttyS0 pv.test=panic  pv.quiet";
        assert_eq!(get(c, "pv.test"), Some("panic"));
        assert_eq!(get(c, "pv.quiet"), Some(""));
        assert_eq!(get(c, "pv.vps"), None);
        assert_eq!(get("", "pv.test"), None);
        assert_eq!(get("pv.test=a=b", "pv.test"), Some("a=b"));
    }
}
