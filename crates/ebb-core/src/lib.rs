#![doc = include_str!("../README.md")]

pub mod budget;
mod error;
pub mod maintenance;
pub mod os;
pub mod presence;
pub mod sync;

pub use budget::{BudgetExceeded, BudgetStats, ConsumerStats, MemoryBudget, Reservation};
pub use error::{Error, Result};
