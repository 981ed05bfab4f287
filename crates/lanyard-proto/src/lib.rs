//! Generated protobuf messages and tonic clients/servers of the Lanyard API, and the encoded
//! file descriptor set the servers publish through gRPC reflection.

#![allow(clippy::all, missing_docs)]

/// `lanyard.tenancy.v1`
pub mod tenancy {
    pub mod v1 {
        tonic::include_proto!("lanyard.tenancy.v1");
    }
}

/// `lanyard.invitation.v1`
pub mod invitation {
    pub mod v1 {
        tonic::include_proto!("lanyard.invitation.v1");
    }
}

/// `lanyard.token.v1`
pub mod token {
    pub mod v1 {
        tonic::include_proto!("lanyard.token.v1");
    }
}

/// `lanyard.authz.v1`
pub mod authz {
    pub mod v1 {
        tonic::include_proto!("lanyard.authz.v1");
    }
}

/// The file descriptor set of every Lanyard package, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lanyard_descriptor.bin"));
