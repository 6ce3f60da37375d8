//! Codec throughput: a ~200-byte cluster-adapter message and a 64 KiB Buffer
//! message, decoded, field-read and encoded, in advanced (and json) mode.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use node_ipc::{encode_frame_into, fields, json, v8, DecodeOptions, FrameDecoder, Mode, Value};

fn adapter_message() -> Value {
    Value::object([
        ("type", Value::from(3)),
        (
            "data",
            Value::object([
                (
                    "packet",
                    Value::object([
                        ("type", Value::from(2)),
                        (
                            "data",
                            Value::Array(vec![
                                Value::from("bcast"),
                                Value::object([
                                    ("from", Value::from(1)),
                                    ("payload", Value::from("hello from worker one!")),
                                    ("bin", Value::buffer(vec![0u8, 1, 2, 255])),
                                ]),
                            ]),
                        ),
                    ]),
                ),
                (
                    "opts",
                    Value::object([
                        ("rooms", Value::Array(vec![])),
                        ("except", Value::Array(vec![])),
                        ("flags", Value::object::<&str, _>([])),
                    ]),
                ),
            ]),
        ),
        ("uid", Value::from("ce022a03e5d1c3a3")),
        ("nsp", Value::from("/")),
        ("source", Value::from("_sio_adapter")),
    ])
}

fn buffer_message() -> Value {
    Value::object([
        ("type", Value::from("sticky:connection")),
        ("data", Value::buffer((0..65536u32).map(|i| i as u8).collect::<Vec<_>>())),
    ])
}

fn bench_message(c: &mut Criterion, name: &str, msg: &Value) {
    let payload = Bytes::from(v8::encode(msg).unwrap());
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    let opts = DecodeOptions::default();
    g.bench_function("v8 decode", |b| b.iter(|| v8::decode_bytes(black_box(&payload), &opts).unwrap()));
    g.bench_function("v8 field read", |b| {
        b.iter(|| {
            let f = fields::read_fields_v8(black_box(&payload)).unwrap();
            black_box(f.source.is_some_and(|s| s.eq_str("_sio_adapter")))
        })
    });
    let mut out = Vec::with_capacity(payload.len() + 16);
    g.bench_function("v8 encode frame", |b| {
        b.iter(|| {
            out.clear();
            encode_frame_into(black_box(msg), Mode::Advanced, 15, &mut out).unwrap();
            black_box(out.len())
        })
    });
    let mut framed = Vec::new();
    encode_frame_into(msg, Mode::Advanced, 15, &mut framed).unwrap();
    let frames: Vec<u8> = framed.iter().copied().cycle().take(framed.len() * 16).collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("frame split x16", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new(Mode::Advanced, 1 << 24);
            d.extend(black_box(&frames));
            let mut n = 0;
            while let Some(f) = d.next_frame().unwrap() {
                n += f.len();
            }
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(1));
    let line = json::encode(msg).unwrap();
    g.bench_function("json decode", |b| b.iter(|| json::decode(black_box(&line)).unwrap()));
    g.bench_function("json field read", |b| {
        b.iter(|| black_box(fields::read_fields_json(black_box(&line)).unwrap().uid.is_some()))
    });
    g.bench_function("json encode", |b| {
        b.iter(|| {
            out.clear();
            json::encode_into(black_box(msg), &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let adapter = adapter_message();
    eprintln!("adapter message: {} bytes (advanced payload)", v8::encode(&adapter).unwrap().len());
    bench_message(c, "adapter-200B", &adapter);
    bench_message(c, "buffer-64KiB", &buffer_message());
}

criterion_group!(codec, benches);
criterion_main!(codec);
