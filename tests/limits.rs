//! The abuse limits end to end, against the real binaries: an undecodable request body is
//! `InvalidArgument`, an over-size one `ResourceExhausted` (tonic's own answers would be
//! `Internal` and `OutOfRange`), and a caller over its write limit is told to retry later
//! while every other caller goes on.

use std::time::Duration;

use mesh::harness::Infra;
use mesh_e2e::{Mesh, authorized, count, home_officer, officer, registration, registry_alone};
use mesh_kit::grpc::MAX_REQUEST_BYTES;
use mesh_proto::registry as pb;
use prost::bytes::{Buf, BufMut};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// Puts bytes on the wire as they are and reads answers as bytes: what no generated client
/// would send.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Sends `body` as the request message of the RPC at `path`.
async fn send_raw(channel: Channel, path: &'static str, body: Vec<u8>, token: &str) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    match grpc
        .unary(authorized(body, token), PathAndQuery::from_static(path), RawCodec)
        .await
    {
        Ok(_) => Status::ok("answered"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn undecodable_and_over_size_requests_are_refused_with_the_codes_that_say_so() {
    let mut mesh = Mesh::start(&["registry", "checkin"]).await.expect("mesh starts");
    let token = mesh.token(&home_officer());
    let calls = [
        ("registry", "/mesh.registry.v1.RegistryService/RegisterSupervisee"),
        ("checkin", "/mesh.checkin.v1.CheckinService/RecordCheckin"),
    ];
    for (service, path) in calls {
        let channel = mesh.channel(service, 0);
        // A varint that never ends, and field 1 as a string of invalid UTF-8.
        for garbage in [vec![0xff, 0xff, 0xff], vec![0x0a, 0x02, 0xff, 0xfe]] {
            let status = send_raw(channel.clone(), path, garbage.clone(), &token).await;
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{path} {garbage:?}: {status:?}"
            );
            assert!(
                status.message().starts_with("request body could not be decoded"),
                "{path}: {}",
                status.message()
            );
        }
        let status = send_raw(channel.clone(), path, vec![0; MAX_REQUEST_BYTES + 1], &token).await;
        assert_eq!(status.code(), Code::ResourceExhausted, "{path}: {status:?}");
        assert_eq!(
            status.message(),
            format!("request larger than the limit of {MAX_REQUEST_BYTES} bytes")
        );
    }
    // The name of a registration's first field is where decoding stopped.
    let status = send_raw(
        mesh.channel("registry", 0),
        calls[0].1,
        vec![0x0a, 0x02, 0xff, 0xfe],
        &token,
    )
    .await;
    assert!(
        status.message().contains("RegisterSuperviseeRequest.name"),
        "{}",
        status.message()
    );
    assert_eq!(
        count(&mesh, "registry", "SELECT count(*) FROM supervisees").await,
        0
    );
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn a_caller_over_its_write_limit_is_told_to_retry_and_no_one_else_is() {
    let mut mesh = registry_alone(
        Infra::from_env(),
        &[("MESH_WRITE_RATE_PER_SEC", "1"), ("MESH_WRITE_BURST", "3")],
    )
    .await;
    let busy = mesh.token(&home_officer());
    let register = async |token: &str, n: u16| {
        mesh.registry()
            .register_supervisee(authorized(registration(n), token))
            .await
            .map(|_| ())
            .map_err(|status| (status.code(), status.message().to_owned()))
    };
    for n in 1..=3 {
        register(&busy, n).await.expect("within the burst");
    }
    let (code, message) = register(&busy, 4).await.expect_err("over the limit");
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("retry later"), "{message}");
    assert_eq!(
        count(&mesh, "registry", "SELECT count(*) FROM supervisees").await,
        3
    );

    // Another officer of the same township has a bucket of its own; reads are not limited;
    // the mesh's own services are not limited at all.
    register(&mesh.token(&officer("officer-2", "620702001")), 5)
        .await
        .expect("another caller writes");
    let listed = mesh
        .registry()
        .list_supervisees(authorized(
            pb::ListSuperviseesRequest {
                township_code: "620702001".into(),
                ..Default::default()
            },
            &busy,
        ))
        .await
        .expect("a read while over the write limit");
    assert_eq!(listed.into_inner().supervisees.len(), 4);
    let system = mesh.secrets.system_token("risk-alert");
    for n in 6..=10 {
        register(&system, n).await.expect("a mesh service is not limited");
    }

    // The bucket refills at the configured rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    register(&busy, 11).await.expect("retried later");
    mesh.stop_all().await.expect("graceful stop");
}
