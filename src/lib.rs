//! nanodist: train a tiny GPT with data-parallel worker threads.
//! (The tour of one step is written once the pieces exist.)

pub mod collective;
pub mod config;
pub mod data;
pub mod error;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod rng;

pub use error::Error;
