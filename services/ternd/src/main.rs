//! `ternd`: every tern service in one process, on embedded backends.

const ABOUT: &str = "The whole tern pipeline in one process, on embedded storage.";

#[tokio::main]
async fn main() {
    let code = ternd::main_with(
        "ternd",
        ABOUT,
        ternd::config::Binary::Ternd,
        |config| async move {
            let backends = ternd::open_embedded(&config)?;
            Ok((config, backends))
        },
    )
    .await;
    std::process::exit(code);
}
