// Generates Rust for the gRPC API and the event schemas. protoc comes from the
// protoc-bin-vendored crate so a fresh machine needs no system protobuf install.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let events = [
        "schemas/events/v1/envelope.proto",
        "schemas/events/v1/notification.proto",
        "schemas/events/v1/config.proto",
        "schemas/events/v1/preferences.proto",
        "schemas/events/v1/devices.proto",
        "schemas/events/v1/inbox.proto",
        "schemas/events/v1/scheduling.proto",
        "schemas/events/v1/export.proto",
        "schemas/events/v1/compliance.proto",
    ]
    .map(|p| root.join(p));
    // (Processors read the envelope field by field, `Event::decode`; the
    // generated `EventEnvelope` is the reference its tests compare with.)
    // Push options are boxed: inline, they doubled the size of every
    // `Payload` value (312 → 664 bytes), which every processor moves.
    prost_build::Config::new()
        .boxed(".clarion.events.v1.DispatchRequested.push")
        .compile_protos(&events, &[root.join("schemas/events")])?;

    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("schemas/events").display()
        );
        return Ok(());
    }
    let api = root.join("proto/clarion/v1/clarion.proto");
    tonic_build::configure()
        .file_descriptor_set_path(out.join("clarion_v1_descriptor.bin"))
        .compile_protos(&[api], &[root.join("proto")])?;

    println!(
        "cargo:rerun-if-changed={}",
        root.join("schemas/events").display()
    );
    println!("cargo:rerun-if-changed={}", root.join("proto").display());
    Ok(())
}
