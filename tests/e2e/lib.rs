//! End-to-end scenarios live in this package's tests; see `tests/e2e/*.rs`.
