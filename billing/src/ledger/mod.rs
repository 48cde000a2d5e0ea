//! The ledger's paths to the database: payments written in group commits (writer.rs), point reads batched on the
//! shared read connections (point_reads.rs), and the per-pod transaction log of committed payments (txlog.rs).

pub mod point_reads;
pub mod txlog;
pub mod writer;
