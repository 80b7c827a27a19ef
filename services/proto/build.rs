//! Compiles `schemas/proto` with protox (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../schemas/proto";
    let files = [
        "tern/client.proto",
        "tern/records.proto",
        "tern/api.proto",
        "tern/archive.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let descriptors = protox::compile(files, [root])?;
    // The descriptors themselves, for tests that enumerate every RPC and
    // every client frame (so a new one cannot go untested).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tern_descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
