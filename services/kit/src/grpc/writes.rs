//! Which RPCs are writes, for the per-caller write limit: every method of the mesh's
//! services (read from the embedded descriptor set, so a new RPC is classified the day it
//! is added) except those named for reading — `Get…`, `List…`, `Stream…`, `Match…`. A new
//! read RPC must keep to these verbs or it is limited as a write, the safe side.

use std::{collections::HashSet, sync::OnceLock};

use prost::Message;
use prost_types::FileDescriptorSet;

/// Method-name prefixes of the RPCs that change nothing.
const READ_VERBS: [&str; 4] = ["Get", "List", "Stream", "Match"];

/// The gRPC paths (`/package.Service/Method`) of the write RPCs.
#[derive(Debug, Default)]
pub struct Writes(HashSet<String>);

impl Writes {
    /// The writes of every mesh service (`mesh_proto::FILE_DESCRIPTOR_SET`).
    pub fn mesh() -> &'static Writes {
        static WRITES: OnceLock<Writes> = OnceLock::new();
        WRITES.get_or_init(|| Self::from_descriptors(mesh_proto::FILE_DESCRIPTOR_SET))
    }

    /// The writes of the services in an encoded `FileDescriptorSet` (none if it does not
    /// decode: the set is embedded at build time, so that cannot happen unnoticed — the
    /// tests below read it).
    pub fn from_descriptors(encoded: &[u8]) -> Self {
        let set = FileDescriptorSet::decode(encoded).unwrap_or_default();
        let paths = set
            .file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service
                        .method
                        .iter()
                        .filter(|method| !READ_VERBS.iter().any(|verb| method.name().starts_with(verb)))
                        .map(move |method| {
                            format!("/{}.{}/{}", file.package(), service.name(), method.name())
                        })
                })
            })
            .collect();
        Self(paths)
    }

    /// Whether the RPC at `path` (an HTTP/2 request's path) is a write.
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writes_are_the_rpcs_that_change_something() {
        let writes = Writes::mesh();
        let mut paths: Vec<&str> = writes.0.iter().map(String::as_str).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/mesh.alert.v1.AlertService/AcknowledgeAlert",
                "/mesh.alert.v1.AlertService/RegisterEndpoint",
                "/mesh.alert.v1.AlertService/ResolveAlert",
                "/mesh.checkin.v1.CheckinService/RecordCheckin",
                "/mesh.checkin.v1.CheckinService/SetPermittedArea",
                "/mesh.checkin.v1.CheckinService/SyncOfflineBatch",
                "/mesh.handover.v1.HandoverService/AcknowledgeNotice",
                "/mesh.handover.v1.HandoverService/AmendReleaseNotice",
                "/mesh.handover.v1.HandoverService/CancelReleaseNotice",
                "/mesh.handover.v1.HandoverService/ConfirmRelease",
                "/mesh.handover.v1.HandoverService/RecordGateCollection",
                "/mesh.handover.v1.HandoverService/RecordReportIn",
                "/mesh.handover.v1.HandoverService/SubmitReleaseNotice",
                "/mesh.placement.v1.PlacementService/AcceptPlacement",
                "/mesh.placement.v1.PlacementService/CloseOpening",
                "/mesh.placement.v1.PlacementService/CreateBase",
                "/mesh.placement.v1.PlacementService/CreateOpening",
                "/mesh.placement.v1.PlacementService/DeclinePlacement",
                "/mesh.placement.v1.PlacementService/EndPlacement",
                "/mesh.placement.v1.PlacementService/ProposePlacement",
                "/mesh.placement.v1.PlacementService/StartPlacement",
                "/mesh.placement.v1.PlacementService/UpdateBase",
                "/mesh.placement.v1.PlacementService/UpdateCandidateProfile",
                "/mesh.registry.v1.RegistryService/ChangeLevel",
                "/mesh.registry.v1.RegistryService/ChangeStatus",
                "/mesh.registry.v1.RegistryService/RegisterSupervisee",
                "/mesh.registry.v1.RegistryService/TransferSupervisee",
            ]
        );
        assert!(!writes.contains("/mesh.registry.v1.RegistryService/ListSupervisees"));
        assert!(!writes.contains("/grpc.health.v1.Health/Check"));
    }
}
