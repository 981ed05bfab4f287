//! Compiles the example's own proto with protox (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/example/projects/v1/projects.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
