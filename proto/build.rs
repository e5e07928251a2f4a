//! Compiles the .proto files with protox (pure Rust, no protoc) and generates tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "gitfleet/v1/types.proto",
        "gitfleet/v1/link.proto",
        "gitfleet/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
