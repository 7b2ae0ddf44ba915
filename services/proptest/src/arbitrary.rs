//! Arbitrary messages of any type of the mesh's contracts, from the embedded descriptor
//! set: every field set or unset, with values a validator must survive — empty, blank,
//! over-long and NUL-carrying text, UUIDs, real and unknown jurisdiction codes, valid and
//! invalid national IDs, unknown enum numbers, out-of-range times and coordinates, NaN —
//! and the same beside a valid message ([`near`]), so that one bad field at a time reaches
//! the checks that run after the first ones pass.

use std::sync::OnceLock;

use chrono::NaiveDate;
use mesh_kit::national_id::synthesize;
use proptest::{collection::vec, prelude::*, sample::select};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use uuid::Uuid;

/// How deep nested messages are generated; deeper ones stay unset.
const MAX_DEPTH: usize = 4;

/// The mesh's message types, by full name.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(mesh_proto::FILE_DESCRIPTOR_SET).expect("the embedded descriptor set decodes")
    })
}

/// The descriptor of the message type `full_name` (`mesh.registry.v1.ChangeLevelRequest`).
///
/// # Panics
/// If the contracts have no such type: a test naming it wrongly.
pub fn descriptor(full_name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("no message type {full_name} in the mesh's contracts"))
}

/// Any `T` (the type named `full_name`).
pub fn any_message<T: Message + Default + std::fmt::Debug + 'static>(full_name: &str) -> BoxedStrategy<T> {
    message(descriptor(full_name), 0)
        .prop_map(|message| convert(&message))
        .boxed()
}

/// `valid` with some of its fields (at any depth) replaced, cleared or made arbitrary.
pub fn near<T: Message + Default + std::fmt::Debug + 'static>(
    full_name: &str,
    valid: &T,
) -> BoxedStrategy<T> {
    let base = DynamicMessage::decode(descriptor(full_name), valid.encode_to_vec().as_slice())
        .expect("a message decodes as its own type");
    near_message(&base, 0)
        .prop_map(|message| convert(&message))
        .boxed()
}

/// Requests of the type `full_name`: arbitrary ones and ones near `valid`.
pub fn requests<T: Message + Default + Clone + std::fmt::Debug + 'static>(
    full_name: &str,
    valid: &T,
) -> BoxedStrategy<T> {
    prop_oneof![any_message::<T>(full_name), near(full_name, valid)].boxed()
}

/// Payloads of events of the type `full_name`: valid encodings of arbitrary ones and of
/// ones near `valid`, and bytes that may not decode at all.
pub fn payloads<T: Message + Default + std::fmt::Debug + 'static>(
    full_name: &str,
    valid: &T,
) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => message(descriptor(full_name), 0).prop_map(|message| message.encode_to_vec()),
        2 => near(full_name, valid).prop_map(|message| message.encode_to_vec()),
        1 => vec(any::<u8>(), 0..48),
    ]
    .boxed()
}

/// The dynamic message re-read as its generated type (the same bytes).
fn convert<T: Message + Default>(message: &DynamicMessage) -> T {
    T::decode(message.encode_to_vec().as_slice()).expect("a message of the type's own descriptor decodes")
}

fn message(desc: MessageDescriptor, depth: usize) -> BoxedStrategy<DynamicMessage> {
    let fields: Vec<FieldDescriptor> = desc.fields().collect();
    let values: Vec<BoxedStrategy<Option<Value>>> = fields
        .iter()
        .map(|field| prop::option::weighted(0.7, field_value(field, depth)).boxed())
        .collect();
    values
        .prop_map(move |values| {
            let mut message = DynamicMessage::new(desc.clone());
            for (field, value) in fields.iter().zip(values) {
                if let Some(value) = value {
                    message.set_field(field, value);
                }
            }
            message
        })
        .boxed()
}

/// What to do with one field of a message near a valid one.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Clear,
    Set(Value),
}

fn near_message(base: &DynamicMessage, depth: usize) -> BoxedStrategy<DynamicMessage> {
    let fields: Vec<FieldDescriptor> = base.descriptor().fields().collect();
    let edits: Vec<BoxedStrategy<Edit>> = fields.iter().map(|field| edit(base, field, depth)).collect();
    let base = base.clone();
    edits
        .prop_map(move |edits| {
            let mut message = base.clone();
            for (field, edit) in fields.iter().zip(edits) {
                match edit {
                    Edit::Keep => {}
                    Edit::Clear => message.clear_field(field),
                    Edit::Set(value) => message.set_field(field, value),
                }
            }
            message
        })
        .boxed()
}

fn edit(base: &DynamicMessage, field: &FieldDescriptor, depth: usize) -> BoxedStrategy<Edit> {
    let arbitrary = field_value(field, depth).prop_map(Edit::Set);
    let present = base.has_field(field);
    let value = base.get_field(field).into_owned();
    // A nested message or a list of them is edited inside too: one bad item of a batch.
    let inside = match (&value, depth < MAX_DEPTH && present) {
        (Value::Message(nested), true) => Some(
            near_message(nested, depth + 1)
                .prop_map(|m| Edit::Set(Value::Message(m)))
                .boxed(),
        ),
        (Value::List(items), true) if items.iter().all(|item| matches!(item, Value::Message(_))) => {
            let each: Vec<BoxedStrategy<Value>> = items
                .iter()
                .filter_map(|item| match item {
                    Value::Message(nested) => {
                        Some(near_message(nested, depth + 1).prop_map(Value::Message).boxed())
                    }
                    _ => None,
                })
                .collect();
            Some(each.prop_map(|items| Edit::Set(Value::List(items))).boxed())
        }
        _ => None,
    };
    match inside {
        Some(inside) => {
            prop_oneof![4 => Just(Edit::Keep), 2 => inside, 1 => arbitrary, 1 => Just(Edit::Clear)].boxed()
        }
        None => prop_oneof![6 => Just(Edit::Keep), 1 => arbitrary, 1 => Just(Edit::Clear)].boxed(),
    }
}

fn field_value(field: &FieldDescriptor, depth: usize) -> BoxedStrategy<Value> {
    let single = single_value(&field.kind(), depth);
    if field.is_map() {
        // The contracts have no maps; an empty one is what an old sender would send.
        Just(Value::Map(Default::default())).boxed()
    } else if field.is_list() {
        vec(single, 0..4).prop_map(Value::List).boxed()
    } else {
        single
    }
}

fn single_value(kind: &Kind, depth: usize) -> BoxedStrategy<Value> {
    match kind {
        Kind::String => text().prop_map(Value::String).boxed(),
        Kind::Bytes => vec(any::<u8>(), 0..40)
            .prop_map(|bytes| Value::Bytes(bytes.into()))
            .boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => int32().prop_map(Value::I32).boxed(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => int64().prop_map(Value::I64).boxed(),
        Kind::Uint32 | Kind::Fixed32 => prop_oneof![0..600_u32, any::<u32>()].prop_map(Value::U32).boxed(),
        Kind::Uint64 | Kind::Fixed64 => prop_oneof![0..1000_u64, any::<u64>()]
            .prop_map(Value::U64)
            .boxed(),
        Kind::Double => double().prop_map(Value::F64).boxed(),
        Kind::Float => double().prop_map(|value| Value::F32(value as f32)).boxed(),
        Kind::Enum(values) => {
            let known: Vec<i32> = values.values().map(|value| value.number()).collect();
            prop_oneof![3 => select(known), 1 => int32()]
                .prop_map(Value::EnumNumber)
                .boxed()
        }
        Kind::Message(nested) if depth < MAX_DEPTH => message(nested.clone(), depth + 1)
            .prop_map(Value::Message)
            .boxed(),
        Kind::Message(nested) => Just(Value::Message(DynamicMessage::new(nested.clone()))).boxed(),
    }
}

/// Codes of the demo jurisdictions, and ones the directory does not hold.
const CODES: [&str; 8] = [
    "620702001",
    "620702",
    "620721001",
    "620721",
    "620702999",
    "999999",
    "62070200",
    "620702001 ",
];

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just(" \t".to_owned()),
        Just("nul\u{0}byte".to_owned()),
        "[a-z0-9_ -]{1,16}",
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        select(&CODES[..]).prop_map(str::to_owned),
        "\\+?[0-9]{1,22}",
        national_id(),
        "https?://[a-z]{1,12}\\.[a-z]{2,3}(:[0-9]{1,5})?(/[a-z]{0,8})?",
        ".{0,24}",
        "[a-z甲乙丙]{200,1100}",
    ]
    .boxed()
}

/// A national ID number: valid (its check character computed), or one character off.
fn national_id() -> BoxedStrategy<String> {
    (1940..2012_i32, 1..13_u32, 1..29_u32, any::<u16>(), any::<bool>())
        .prop_map(|(year, month, day, n, broken)| {
            let birth = NaiveDate::from_ymd_opt(year, month, day).unwrap_or_default();
            let id = synthesize("620702", birth, n);
            if broken { format!("{}X", &id[..17]) } else { id }
        })
        .boxed()
}

fn int32() -> BoxedStrategy<i32> {
    prop_oneof![
        -3..12_i32,
        1990..2040_i32,
        any::<i32>(),
        Just(i32::MAX),
        Just(i32::MIN)
    ]
    .boxed()
}

/// Small numbers, Unix seconds around now, and anything.
fn int64() -> BoxedStrategy<i64> {
    prop_oneof![
        -3..12_i64,
        1_600_000_000..2_000_000_000_i64,
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN)
    ]
    .boxed()
}

/// Coordinates and radii in and out of range, and what is not a number at all.
fn double() -> BoxedStrategy<f64> {
    prop_oneof![
        -200.0..200.0_f64,
        0.0..1.0_f64,
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(1e300),
    ]
    .boxed()
}
