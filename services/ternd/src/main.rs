//! `ternd`: every tern service in one process, on embedded backends.

#[tokio::main]
async fn main() {
    let code = ternd::main_with("ternd", |config| async move {
        let backends = ternd::open_embedded(&config)?;
        Ok((config, backends))
    })
    .await;
    std::process::exit(code);
}
