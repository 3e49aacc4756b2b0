//! MPI: the link between processes (and hosts), for `cargo build --features mpi`.
//!
//! `mpirun -n R nanodist ...` starts R processes; MPI numbers them 0..R (ranks) and carries
//! messages between them, over shared memory on one host and the network between hosts.
//! This file gives nanodist's collectives two things on top of it:
//!
//! ```text
//!   MpiEndpoint   a Wire (wire.rs) over MPI point-to-point messages: the schedules of
//!                 ring.rs / tree.rs / naive.rs run on it as they run on threads
//!                   send(to, &[T])   copy into a buffer, MPI_Isend (returns at once)
//!                   recv(from, ..)   MPI_Mprobe for the size, MPI_Mrecv into a buffer
//!                   step_done()      MPI_Waitall on this step's sends
//!   MpiLink       a CrossProcess (hierarchy.rs): thread 0's all-reduce across processes,
//!                   CrossAlgorithm::Mpi   MPI_Allreduce (the MPI library's own algorithm)
//!                   CrossAlgorithm::Ring  ring.rs's schedule, executed on an MpiEndpoint
//!   Mpi           the process's MPI: init (only under mpirun), rank, size, and the
//!                 start-up exchanges (broadcast rank 0's bytes, gather a number from all)
//! ```
//!
//! Threads: MPI is initialised with `MPI_THREAD_SERIALIZED`. Only one thread per process
//! calls MPI at a time: the main thread before and after the run, and during it thread 0
//! (or its communication thread, one at a time) through the [`CrossLink`]'s lock.
//!
//! Failures: MPI's default error handler ends the job on an error, and `mpirun` ends the
//! whole job when one process dies, naming it; a collective therefore never returns an
//! error here, and no process waits forever for a dead peer.
//!
//! Rust note: messages travel as bytes (`MPI_BYTE`), so one endpoint carries every
//! [`Element`] type, as the threads' channels do. Reading a `&[f32]` as bytes and bytes
//! back as `&[f32]` is `unsafe`; `plain` restricts it to the four built-in number types,
//! whose every byte is data (no padding, no pointers), where it is sound.

use std::any::TypeId;
use std::ffi::{c_int, c_void};
use std::mem::{size_of, MaybeUninit};
use std::time::{Duration, Instant};

use ::mpi::datatype::Equivalence;
use ::mpi::environment::Universe;
use ::mpi::ffi;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator, CommunicatorCollectives, Root, Source};
use ::mpi::Threading;

use super::element::{Element, Elems};
use super::error::CommError;
use super::hierarchy::{CrossAlgorithm, CrossLink, CrossProcess};
use super::schedule::{self, Schedule};
use super::{ring, wire::Wire};

/// The MPI tag of nanodist's point-to-point messages (MPI's collectives use their own
/// channels, so the tag only has to be the same on both sides).
const TAG: c_int = 27;

/// How long a waiting rank spins on `MPI_Test` before it starts to nap between tests.
const SPIN: Duration = Duration::from_micros(50);
/// The nap between tests after that.
const NAP: Duration = Duration::from_micros(20);

/// Waits until `done()`, testing it in a spin for [`SPIN`], then with naps of [`NAP`].
///
/// MPI's own blocking calls (`MPI_Wait`, `MPI_Allreduce`) spin until they finish: on a
/// machine with more busy processes than cores, a spinning rank holds a core that the rank
/// it waits for needs, and both slow down. nanodist's threads wait by spinning briefly and
/// then sleeping (`sync.rs`); its MPI ranks do the same by starting each operation
/// non-blocking (`MPI_Isend`, `MPI_Iallreduce`, `MPI_Improbe`) and testing it here. Each
/// test also moves MPI's transfers along (Open MPI progresses inside its calls).
fn wait_until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(NAP);
        }
    }
}

/// Waits for one MPI request (see [`wait_until`]).
fn wait_for(mut request: ffi::MPI_Request) {
    wait_until(|| {
        let mut flag: c_int = 0;
        // SAFETY: `request` came from an MPI_I* call and is tested until it completes
        // (MPI_Test then frees it and sets it to MPI_REQUEST_NULL).
        unsafe { ffi::MPI_Test(&mut request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
        flag != 0
    });
}

/// The MPI datatype of `T`, one of the built-in number types.
///
/// # Panics
/// For any other type.
fn datatype_of<T: 'static>() -> ffi::MPI_Datatype {
    let t = TypeId::of::<T>();
    let usize_is_u64 = size_of::<usize>() == 8;
    // SAFETY: reads MPI's predefined datatype handles, which MPI_Init set up (an `Mpi` or
    // `MpiLink` exists only after it) and nothing writes afterwards.
    unsafe {
        if t == TypeId::of::<f32>() {
            ffi::RSMPI_FLOAT
        } else if t == TypeId::of::<f64>() {
            ffi::RSMPI_DOUBLE
        } else if t == TypeId::of::<i64>() {
            ffi::RSMPI_INT64_T
        } else if t == TypeId::of::<usize>() && usize_is_u64 {
            ffi::RSMPI_UINT64_T
        } else {
            panic!("MPI carries f32, f64, i64 and usize only")
        }
    }
}

/// Whether `T` is one of the built-in number types that may be read as bytes.
fn plain<T: 'static>() -> bool {
    [
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
        TypeId::of::<i64>(),
        TypeId::of::<usize>(),
    ]
    .contains(&TypeId::of::<T>())
}

/// Whether this process was started by `mpirun` (Open MPI, MPICH and the PMI launchers set
/// these variables), so that `MPI_Init` joins a job rather than making a job of one.
pub fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// This process's MPI: alive from [`init`] until it is dropped (`MPI_Finalize`).
pub struct Mpi {
    _universe: Universe,
    rank: usize,
    size: usize,
}

/// Initialises MPI when the process runs under `mpirun`; `Ok(None)` otherwise.
///
/// # Errors
/// One line when MPI cannot give the thread support nanodist needs.
pub fn init() -> Result<Option<Mpi>, String> {
    if !launched_by_mpirun() {
        return Ok(None);
    }
    let Some((universe, threading)) = ::mpi::initialize_with_threading(Threading::Serialized)
    else {
        return Err("MPI was initialised twice in one process".into());
    };
    if !matches!(threading, Threading::Serialized | Threading::Multiple) {
        return Err(format!(
            "this MPI library offers threads only {threading:?}, nanodist needs MPI_THREAD_SERIALIZED: use an MPI built with thread support (Open MPI is)"
        ));
    }
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    Ok(Some(Mpi {
        _universe: universe,
        rank,
        size,
    }))
}

impl Mpi {
    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes in the job.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The name of this process's host.
    pub fn host(&self) -> String {
        ::mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
    }

    /// The link thread 0 of this process uses in a run, summing with `algorithm`.
    pub fn link(&self, algorithm: CrossAlgorithm) -> CrossLink {
        CrossLink::new(Box::new(MpiLink::new(algorithm)))
    }

    /// Rank 0's `bytes` on every rank (every rank calls it; the others' `bytes` are
    /// replaced). The length goes first, so the others can make room.
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let world = SimpleCommunicator::world();
        let root = world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        // MPI counts in c_int: send large payloads in pieces of at most 1 GiB.
        for piece in bytes.chunks_mut(1 << 30) {
            root.broadcast_into(piece);
        }
    }

    /// Every rank's `x`, in rank order, on every rank.
    pub fn all_gather(&self, x: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size];
        SimpleCommunicator::world().all_gather_into(&x, &mut all[..]);
        all
    }

    /// Waits until every rank has called `barrier`.
    pub fn barrier(&self) {
        barrier();
    }

    /// Ends the whole job at once with `code` (`MPI_Abort`), from any rank.
    pub fn abort(&self, code: i32) -> ! {
        use ::mpi::traits::Communicator as _;
        SimpleCommunicator::world().abort(code)
    }
}

/// One process's end of MPI point-to-point messages in `MPI_COMM_WORLD`, as a [`Wire`].
///
/// ```text
///   send:  data --copy--> buffer --MPI_Isend--> (in flight until step_done)
///   recv:  MPI_Mprobe (size) --> inbox --MPI_Mrecv--> use_it(&inbox as &[T])
/// ```
pub struct MpiEndpoint {
    rank: usize,
    size: usize,
    /// Sends in flight: each request and the buffer MPI reads until it completes.
    in_flight: Vec<(ffi::MPI_Request, Vec<u64>)>,
    /// Buffers of completed sends, for the next ones (a collective allocates nothing).
    spare: Vec<Vec<u64>>,
    /// Where messages arrive; `u64`s, so that any element type is aligned in it.
    inbox: Vec<u64>,
}

// SAFETY: the raw MPI handles in `in_flight` are plain identifiers owned by this endpoint;
// MPI is initialised with MPI_THREAD_SERIALIZED, which allows any thread to call MPI as
// long as calls do not overlap, and `&mut self` on every method gives exactly that.
unsafe impl Send for MpiEndpoint {}

impl MpiEndpoint {
    /// This process's endpoint in `MPI_COMM_WORLD` (MPI must be initialised: [`init`]).
    pub fn world() -> Self {
        let world = SimpleCommunicator::world();
        MpiEndpoint {
            rank: world.rank() as usize,
            size: world.size() as usize,
            in_flight: Vec::new(),
            spare: Vec::new(),
            inbox: Vec::new(),
        }
    }

    /// Completes every send in flight.
    fn complete_sends(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let mut requests: Vec<ffi::MPI_Request> = self.in_flight.iter().map(|r| r.0).collect();
        wait_until(|| {
            let mut flag: c_int = 0;
            // SAFETY: each request came from MPI_Isend and is tested until all complete;
            // their buffers live in `in_flight` until after that.
            unsafe {
                ffi::MPI_Testall(
                    requests.len() as c_int,
                    requests.as_mut_ptr(),
                    &mut flag,
                    ffi::RSMPI_STATUSES_IGNORE,
                )
            };
            flag != 0
        });
        self.spare.extend(self.in_flight.drain(..).map(|r| r.1));
    }
}

impl Wire for MpiEndpoint {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send<T: Element>(&mut self, to: usize, data: &[T]) -> Result<(), CommError> {
        assert!(plain::<T>(), "MPI carries f32, f64, i64 and usize only");
        let bytes = std::mem::size_of_val(data);
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(bytes.div_ceil(8), 0);
        // SAFETY: T is a built-in number type (checked above), so its `bytes` bytes are all
        // initialised data; `buf` holds at least `bytes` bytes and does not overlap `data`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr().cast::<u8>(),
                buf.as_mut_ptr().cast(),
                bytes,
            );
        }
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: `buf` stays alive and unmoved on the heap (it moves into `in_flight` as a
        // Vec, its allocation does not move) until complete_sends waits for this request.
        let request = unsafe {
            ffi::MPI_Isend(
                buf.as_ptr().cast::<c_void>(),
                bytes as c_int,
                ffi::RSMPI_UINT8_T,
                to as c_int,
                TAG,
                ffi::RSMPI_COMM_WORLD,
                request.as_mut_ptr(),
            );
            request.assume_init()
        };
        self.in_flight.push((request, buf));
        Ok(())
    }

    fn recv<T: Element>(
        &mut self,
        from: usize,
        use_it: impl FnOnce(&[T]),
    ) -> Result<(), CommError> {
        assert!(plain::<T>(), "MPI carries f32, f64, i64 and usize only");
        let world = SimpleCommunicator::world();
        let peer = world.process_at_rank(from as c_int);
        let mut arrived = None;
        wait_until(|| {
            arrived = peer.immediate_matched_probe_with_tag(TAG);
            arrived.is_some()
        });
        let (message, status) = arrived.expect("the wait ends when a message has arrived");
        let bytes = status.count(u8::equivalent_datatype()) as usize;
        assert_eq!(
            bytes % size_of::<T>(),
            0,
            "rank {from} sent rank {} a message of another element type: all ranks must call the same collectives",
            self.rank
        );
        self.inbox.resize(bytes.div_ceil(8), 0);
        // SAFETY: the inbox holds at least `bytes` initialised bytes, borrowed mutably once.
        let raw =
            unsafe { std::slice::from_raw_parts_mut(self.inbox.as_mut_ptr().cast::<u8>(), bytes) };
        message.matched_receive_into(raw);
        // SAFETY: the inbox is 8-aligned (u64s), so aligned for every plain T; its first
        // `bytes` bytes were just written, and every bit pattern is a valid plain number.
        let data = unsafe {
            std::slice::from_raw_parts(self.inbox.as_ptr().cast::<T>(), bytes / size_of::<T>())
        };
        use_it(data);
        Ok(())
    }

    fn step_done(&mut self) -> Result<(), CommError> {
        self.complete_sends();
        Ok(())
    }
}

impl Drop for MpiEndpoint {
    /// MPI may still read a buffer in flight: wait for it before freeing it.
    fn drop(&mut self) {
        self.complete_sends();
    }
}

/// Thread 0's all-reduce across processes, over MPI.
pub struct MpiLink {
    ep: MpiEndpoint,
    algorithm: CrossAlgorithm,
    /// Ring schedules by length (training uses a handful of bucket sizes).
    schedules: Vec<(usize, Schedule)>,
}

impl MpiLink {
    /// A link summing with `algorithm` (MPI must be initialised: [`init`]).
    pub fn new(algorithm: CrossAlgorithm) -> Self {
        MpiLink {
            ep: MpiEndpoint::world(),
            algorithm,
            schedules: Vec::new(),
        }
    }

    /// `MPI_Allreduce` with `MPI_SUM` (integers wrap, as [`Element::add`] does), started
    /// as `MPI_Iallreduce` and waited for as nanodist waits ([`wait_until`]).
    fn native<T: Element>(buf: &mut [T]) {
        let datatype = datatype_of::<T>();
        let send = buf.to_vec();
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: `send` and `buf` hold `buf.len()` elements of `datatype` each and stay
        // alive and untouched until the request completes (wait_for, below).
        let request = unsafe {
            ffi::MPI_Iallreduce(
                send.as_ptr().cast::<c_void>(),
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len() as c_int,
                datatype,
                ffi::RSMPI_SUM,
                ffi::RSMPI_COMM_WORLD,
                request.as_mut_ptr(),
            );
            request.assume_init()
        };
        wait_for(request);
    }

    /// nanodist's ring, the code the threads run, on MPI messages.
    fn ring<T: Element>(&mut self, buf: &mut [T]) -> Result<(), CommError> {
        let n = self.ep.size;
        let i = match self.schedules.iter().position(|(len, _)| *len == buf.len()) {
            Some(i) => i,
            None => {
                if self.schedules.len() == 16 {
                    self.schedules.remove(0);
                }
                self.schedules
                    .push((buf.len(), ring::schedule(n, buf.len())));
                self.schedules.len() - 1
            }
        };
        schedule::execute(&mut self.ep, &self.schedules[i].1, buf)
    }
}

impl CrossProcess for MpiLink {
    fn process(&self) -> usize {
        self.ep.rank
    }

    fn processes(&self) -> usize {
        self.ep.size
    }

    fn all_reduce(&mut self, buf: Elems<'_>) -> Result<(), CommError> {
        if self.ep.size == 1 {
            return Ok(());
        }
        match (self.algorithm, buf) {
            (_, Elems::Other) => panic!("MPI carries f32, f64, i64 and usize only"),
            (CrossAlgorithm::Mpi, Elems::F32(b)) => Self::native(b),
            (CrossAlgorithm::Mpi, Elems::F64(b)) => Self::native(b),
            (CrossAlgorithm::Mpi, Elems::I64(b)) => Self::native(b),
            (CrossAlgorithm::Mpi, Elems::Usize(b)) => Self::native(b),
            (CrossAlgorithm::Ring, Elems::F32(b)) => self.ring(b)?,
            (CrossAlgorithm::Ring, Elems::F64(b)) => self.ring(b)?,
            (CrossAlgorithm::Ring, Elems::I64(b)) => self.ring(b)?,
            (CrossAlgorithm::Ring, Elems::Usize(b)) => self.ring(b)?,
        }
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), CommError> {
        barrier();
        Ok(())
    }

    fn name(&self) -> String {
        match self.algorithm {
            CrossAlgorithm::Mpi => "MPI_Allreduce".into(),
            CrossAlgorithm::Ring => "ring over MPI_Isend/MPI_Mrecv".into(),
        }
    }
}

/// `MPI_Barrier`, started as `MPI_Ibarrier` and waited for as nanodist waits.
fn barrier() {
    let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
    // SAFETY: MPI is initialised (an `Mpi` or `MpiLink` exists); the request is waited for.
    let request = unsafe {
        ffi::MPI_Ibarrier(ffi::RSMPI_COMM_WORLD, request.as_mut_ptr());
        request.assume_init()
    };
    wait_for(request);
}
