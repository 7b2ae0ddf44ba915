//! Compiles every `.proto` under this directory with `protox` (pure Rust, so no system
//! `protoc` is needed) and generates prost messages plus tonic clients and servers; then a
//! second, JSON-capable generation of the webhook contract (`mesh.alert.v1` and the
//! `mesh.common.v1` it uses) whose serde impls are the proto3 JSON mapping (`pbjson`).

use std::path::{Path, PathBuf};

use prost::Message;

/// Packages whose messages get proto3-JSON serde impls: what a webhook body carries.
const JSON_PACKAGES: [&str; 2] = ["mesh.alert.v1", "mesh.common.v1"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root.join("mesh"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", root.join("mesh").display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set is embedded for gRPC server reflection.
    std::fs::write(out_dir.join("mesh_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Personal fields: its `Debug` (in `src/lib.rs`) shows none of them.
        .skip_debug([".mesh.handover.v1.ReportInPersonal"])
        // Undecodable requests are the caller's fault: `InvalidArgument`, not `Internal`.
        .codec_path("crate::codec::MeshCodec")
        .compile_fds(descriptors.clone())?;
    json_generation(descriptors, &out_dir.join("json"))
}

/// The webhook body must be the proto3 JSON mapping of `WebhookNotification`. pbjson's
/// serde impls need the well-known types to be `pbjson_types` (prost_types has no serde), so
/// switching the main generation would change `Timestamp` for every service; instead the
/// two packages a body uses are generated a second time, wire-identical to the first, into
/// `json/`, and a body is transcoded through the binary encoding.
fn json_generation(
    mut descriptors: prost_types::FileDescriptorSet,
    out_dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out_dir)?;
    descriptors
        .file
        // Timestamp stays in: prost resolves field types through the set, even extern ones.
        .retain(|file| JSON_PACKAGES.contains(&file.package()) || file.package() == "google.protobuf");
    let encoded = descriptors.encode_to_vec();
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .out_dir(out_dir)
        .extern_path(".google.protobuf.Timestamp", "::pbjson_types::Timestamp")
        .compile_fds(descriptors)?;
    let prefixes: Vec<String> = JSON_PACKAGES
        .iter()
        .map(|package| format!(".{package}"))
        .collect();
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .out_dir(out_dir)
        // A receiver built on this type keeps working when the contract grows a field.
        .ignore_unknown_fields()
        .build(&prefixes)?;
    Ok(())
}

fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
