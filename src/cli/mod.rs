//! Clients of the status API for the command line (`ringmesh logs`, `ringmesh kill`).

pub mod procs;
