//! The mesh's protobuf contracts as Rust types: gRPC clients/servers of the five services and
//! the payloads of every Kafka event. Generated at build time from `proto/mesh/**.proto`.

#![allow(clippy::all, missing_docs)]

pub mod codec;

pub mod mesh {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("mesh.common.v1");
        }
    }
    pub mod registry {
        pub mod v1 {
            tonic::include_proto!("mesh.registry.v1");
        }
    }
    pub mod checkin {
        pub mod v1 {
            tonic::include_proto!("mesh.checkin.v1");
        }
    }
    pub mod handover {
        pub mod v1 {
            tonic::include_proto!("mesh.handover.v1");

            /// Hides every field: they are the person's national ID, phone and address.
            impl std::fmt::Debug for ReportInPersonal {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("ReportInPersonal(..)")
                }
            }
        }
    }
    pub mod placement {
        pub mod v1 {
            tonic::include_proto!("mesh.placement.v1");
        }
    }
    pub mod alert {
        pub mod v1 {
            tonic::include_proto!("mesh.alert.v1");
        }
    }
    pub mod ops {
        pub mod v1 {
            tonic::include_proto!("mesh.ops.v1");
        }
    }
}

/// The webhook contract again, generated with serde impls that are the proto3 JSON mapping
/// (`pbjson`): a webhook body is `json::alert::WebhookNotification` serialized, and a
/// receiver parses it with the same type. Wire-identical to [`alert`] and [`common`], so a
/// message converts between the two through its binary encoding; well-known types are
/// `pbjson_types` here.
pub mod json {
    pub mod mesh {
        pub mod common {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/json/mesh.common.v1.rs"));
                include!(concat!(env!("OUT_DIR"), "/json/mesh.common.v1.serde.rs"));
            }
        }
        pub mod alert {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/json/mesh.alert.v1.rs"));
                include!(concat!(env!("OUT_DIR"), "/json/mesh.alert.v1.serde.rs"));
            }
        }
    }

    pub use mesh::alert::v1 as alert;
    pub use mesh::common::v1 as common;
}

pub use mesh::alert::v1 as alert;
pub use mesh::checkin::v1 as checkin;
pub use mesh::common::v1 as common;
pub use mesh::handover::v1 as handover;
pub use mesh::ops::v1 as ops;
pub use mesh::placement::v1 as placement;
pub use mesh::registry::v1 as registry;

/// Encoded `FileDescriptorSet` of all mesh protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));
