//! Compiles `proto/` with a pure-Rust protobuf compiler (protox), so no system
//! `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/vitals/v1/events.proto",
        "proto/vitals/v1/state.proto",
        "proto/vitals/v1/outputs.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
