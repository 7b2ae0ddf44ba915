//! The gRPC codec of every generated server and client: prost's encoding, with a message
//! that does not decode reported as `InvalidArgument` (the sender's bytes are at fault)
//! instead of prost's `Internal`, naming what prost could tell (the field where decoding
//! stopped, when it got that far).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};

/// `tonic_prost::ProstCodec` with [`MeshDecoder`]; the generated code names it through
/// `codec_path` (proto/build.rs).
#[derive(Debug, Clone)]
pub struct MeshCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for MeshCodec<T, U> {
    fn default() -> Self {
        Self {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for MeshCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MeshDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MeshDecoder(PhantomData)
    }
}

/// Decodes `U`; bytes that are not a `U` are `InvalidArgument`.
#[derive(Debug, Clone, Default)]
pub struct MeshDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for MeshDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| undecodable(&error))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The status of a message that does not decode. Servers see requests here, so the text
/// speaks of the request body; prost's own text says where decoding stopped.
pub fn undecodable(error: &prost::DecodeError) -> Status {
    Status::invalid_argument(format!("request body could not be decoded ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_error_is_invalid_argument_naming_the_field() {
        // Field 1 (township_code) as a length-delimited string of bad UTF-8.
        let error =
            crate::common::Jurisdiction::decode(&[0x0a, 0x02, 0xff, 0xfe][..]).expect_err("bad UTF-8");
        let status = undecodable(&error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("request body could not be decoded"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("Jurisdiction.township_code"),
            "{}",
            status.message()
        );
    }
}
