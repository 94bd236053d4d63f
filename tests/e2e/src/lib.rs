//! End-to-end suites live in tests/; this library is empty.
