//! What `nanodist train` needs to know when it runs as rank 0 of an `mpirun` job: a leaf
//! file, so that `main.rs` (which trains) and `mpirun.rs` (which starts the ranks) both use it
//! and neither uses the other's insides.
//!
//! ```text
//!   main.rs    run_train_in(args, Option<&mut dyn Job>)   None: threads only
//!   mpirun.rs  Rank0: Job  -> share(run) broadcasts it to the other ranks, returns the link
//! ```

use std::path::Path;
use std::process::ExitCode;

use nanodist::collective::CrossLink;
use nanodist::config::TrainConfig;
use nanodist::data::Corpus;
use nanodist::train::TrainState;
use nanodist::Error;

use crate::cli::TrainArgs;

/// The other processes of an `mpirun` job, as rank 0's run sees them.
pub trait Job {
    /// R: processes in the job.
    fn processes(&self) -> usize;
    /// Sends rank 0's prepared run to the other ranks (`None`: preparing it failed, and
    /// they stop), and returns the link this process's run uses.
    fn share(&mut self, run: Option<(&TrainConfig, &Corpus, &TrainState)>) -> CrossLink;
    /// The run directory is `dir`: named in the line printed if mpirun stops the job.
    fn run_dir(&mut self, dir: &Path);
}

/// `nanodist train` (main.rs's `run_train_in`), as `mpirun.rs` calls it on rank 0.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub type RunTrain = fn(TrainArgs, Option<&mut dyn Job>) -> Result<ExitCode, Error>;
