//! Generated code for Clarion's two protobuf contracts: `events` (what is in the
//! log) and `api` (what producers call over gRPC). Conversions to domain types
//! live with the domain (events) and the gateway (api).

/// The event log contract (`schemas/events/v1`).
pub mod events {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/clarion.events.v1.rs"));
}

/// The gRPC command API (`proto/clarion/v1`).
#[cfg(feature = "grpc")]
pub mod api {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/clarion.v1.rs"));

    /// Encoded `FileDescriptorSet` for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/clarion_v1_descriptor.bin"));
}
