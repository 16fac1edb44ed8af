//! Test support for keyturn: the local AWS emulator, and seeding it through the real SDK.

pub mod emulator;
pub mod seed;

pub use emulator::*;
