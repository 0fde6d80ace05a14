//! The vocabulary every medvault crate shares and that depends on nothing: the injected
//! clock, UTC time formatting, the named limits on everything input can grow, and hex.

pub mod clock;
pub mod hex;
pub mod limits;
pub mod time;

pub use clock::{Clock, ManualClock, SystemClock};
